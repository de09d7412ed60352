#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef FH_TESTFS_PATH
#define FH_TESTFS_PATH ""
#endif
#ifndef FH_TEST_CONTAINER_PATH
#define FH_TEST_CONTAINER_PATH ""
#endif
#ifndef FH_DAEMON_PATH
#define FH_DAEMON_PATH ""
#endif
#ifndef FH_CTL_PATH
#define FH_CTL_PATH ""
#endif

namespace fh::test {

namespace {

bool g_in_private_namespace = false;
std::string g_skip_reason = "enter_private_mount_namespace() was not called";

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::runtime_error(what + ": " + std::strerror(errno) + " (" + errno_name(errno) + ")");
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' &&
            s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
            out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

int group_of(const std::string& optional, const std::string& tag) {
    std::istringstream in(optional);
    std::string f;
    while (in >> f)
        if (starts_with(f, tag)) return std::atoi(f.c_str() + tag.size());
    return 0;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

std::string toml_string(const std::string& s) { return "\"" + json_escape(s) + "\""; }

// waitpid with a deadline. Returns the status, or nullopt on timeout.
std::optional<int> wait_with_timeout(pid_t pid, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0 && errno != EINTR) return -1;
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(1ms);
    }
}

// SIGKILL and reap within `timeout`. Returns the wait status, or nullopt when
// the process did not go away: a thread blocked in a FUSE request that the
// daemon has already read waits uninterruptibly (even through SIGKILL) until
// the daemon answers, dies, or the connection is aborted.
std::optional<int> kill_and_reap(pid_t pid, std::chrono::milliseconds timeout) {
    kill(pid, SIGKILL);
    return wait_with_timeout(pid, timeout);
}

// Returns true when process `pid` has a handler installed for `sig`, or
// its main thread blocks it (to take it with sigwait(), as fh_testfs does):
// its SigCgt or SigBlk mask in /proc/PID/status. False when neither, or when
// the file cannot be read (the process is gone).
bool handles_signal(pid_t pid, int sig) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    unsigned long long masks = 0;
    for (std::string line; std::getline(in, line);)
        if (line.rfind("SigCgt:", 0) == 0 || line.rfind("SigBlk:", 0) == 0)
            masks |= std::strtoull(line.c_str() + 7, nullptr, 16);
    return (masks >> (sig - 1)) & 1;  // bit N-1 is signal N
}

constexpr auto kReapTimeout = 5000ms;     // for processes that should die at once
constexpr auto kDestroyTimeout = 500ms;   // in destructors, before leaving it to the Sandbox

void require_private_namespace(const char* who) {
    if (!g_in_private_namespace)
        throw std::runtime_error(std::string(who) +
                                 ": refusing to mount outside a private mount namespace "
                                 "(enter_private_mount_namespace() did not succeed): " +
                                 g_skip_reason);
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
    return s;
}

std::string tail_of(const std::string& text, size_t n = 2000) {
    return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

}  // namespace

// ---- process-wide setup ---------------------------------------------------

bool enter_private_mount_namespace(std::string* why) {
    auto fail = [&](const std::string& m) {
        if (why) *why = m;
        g_skip_reason = m;
        return false;
    };
    if (g_in_private_namespace) return true;
    if (geteuid() != 0) return fail("integration tests need root (to mount FUSE and make mount namespaces)");
    struct stat st{};
    if (stat("/dev/fuse", &st) != 0 || !S_ISCHR(st.st_mode))
        return fail("integration tests need /dev/fuse (a character device): " + std::string(std::strerror(errno)));
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return fail("/dev/fuse is not accessible: " + std::string(std::strerror(errno)));
    if (unshare(CLONE_NEWNS) != 0)
        return fail("unshare(CLONE_NEWNS) failed: " + std::string(std::strerror(errno)));
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail("making / rprivate failed: " + std::string(std::strerror(errno)));
    bool have_fusectl = false;
    for (const auto& m : read_mount_lines())
        if (m.fstype == "fusectl" && m.mountpoint == "/sys/fs/fuse/connections") have_fusectl = true;
    if (!have_fusectl) (void)mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
    g_in_private_namespace = true;
    g_skip_reason.clear();
    if (why) why->clear();
    return true;
}

const std::string& namespace_skip_reason() { return g_skip_reason; }
void set_namespace_skip_reason(std::string why) { g_skip_reason = std::move(why); }

std::string testfs_path() { return FH_TESTFS_PATH; }
std::string test_container_path() { return FH_TEST_CONTAINER_PATH; }
std::string daemon_path() { return FH_DAEMON_PATH; }
std::string ctl_path() { return FH_CTL_PATH; }

// ---- mountinfo helpers ------------------------------------------------------

bool MountLine::read_only() const {
    std::istringstream in(vfs_options);
    std::string o;
    while (std::getline(in, o, ','))
        if (o == "ro") return true;
    return false;
}
int MountLine::shared_group() const { return group_of(optional, "shared:"); }
int MountLine::master_group() const { return group_of(optional, "master:"); }

std::optional<MountLine> parse_mount_line(const std::string& line) {
    std::istringstream in(line);
    MountLine m;
    m.raw = line;
    std::string root, mp;
    if (!(in >> m.id >> m.parent >> m.device >> root >> mp >> m.vfs_options)) return std::nullopt;
    std::string f;
    std::string optional;
    for (;;) {
        if (!(in >> f)) return std::nullopt;
        if (f == "-") break;
        optional += (optional.empty() ? "" : " ") + f;
    }
    std::string fstype, source;
    if (!(in >> fstype >> source)) return std::nullopt;
    std::string fs_options;
    in >> fs_options;  // may be absent
    m.root = unescape_mountinfo(root);
    m.mountpoint = unescape_mountinfo(mp);
    m.optional = optional;
    m.fstype = unescape_mountinfo(fstype);
    m.source = unescape_mountinfo(source);
    m.fs_options = fs_options;
    return m;
}

std::vector<std::string> read_mountinfo_lines(const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) lines.push_back(line);
    return lines;
}

std::vector<MountLine> read_mount_lines(const std::string& path) {
    std::vector<MountLine> out;
    for (const auto& l : read_mountinfo_lines(path))
        if (auto m = parse_mount_line(l)) out.push_back(std::move(*m));
    return out;
}

int count_mounts_under(const std::string& prefix, const std::string& mountinfo) {
    std::string p = prefix;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    int n = 0;
    for (const auto& m : read_mount_lines(mountinfo))
        if (m.mountpoint == p || starts_with(m.mountpoint, p == "/" ? "/" : p + "/")) n++;
    return n;
}

int count_mounts_at(const std::string& path, const std::string& mountinfo) {
    int n = 0;
    for (const auto& m : read_mount_lines(mountinfo))
        if (m.mountpoint == path) n++;
    return n;
}

std::vector<std::pair<std::string, std::string>> stack_at(const std::string& path, const std::string& mountinfo) {
    // Bottom first: order the same-path mounts by parent chain.
    std::vector<MountLine> at;
    for (auto& m : read_mount_lines(mountinfo))
        if (m.mountpoint == path) at.push_back(std::move(m));
    std::vector<MountLine> ordered;
    std::vector<bool> used(at.size(), false);
    // The bottom is the one whose parent is not another mount at this path.
    auto is_at = [&](int id) {
        return std::any_of(at.begin(), at.end(), [&](const MountLine& m) { return m.id == id; });
    };
    int current = -1;
    for (size_t i = 0; i < at.size(); i++)
        if (!is_at(at[i].parent)) {
            ordered.push_back(at[i]);
            used[i] = true;
            current = at[i].id;
            break;
        }
    while (current >= 0) {
        int next = -1;
        for (size_t i = 0; i < at.size(); i++)
            if (!used[i] && at[i].parent == current) {
                ordered.push_back(at[i]);
                used[i] = true;
                next = at[i].id;
                break;
            }
        current = next;
    }
    for (size_t i = 0; i < at.size(); i++)  // anything odd: append in file order
        if (!used[i]) ordered.push_back(at[i]);
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& m : ordered) out.emplace_back(m.device, m.fstype);
    return out;
}

std::optional<MountLine> topmost_at(const std::string& path, const std::string& mountinfo) {
    std::vector<MountLine> at;
    for (auto& m : read_mount_lines(mountinfo))
        if (m.mountpoint == path) at.push_back(std::move(m));
    for (const auto& m : at) {
        bool covered = std::any_of(at.begin(), at.end(), [&](const MountLine& o) { return o.parent == m.id; });
        if (!covered) return m;
    }
    return std::nullopt;
}

// ---- fusectl ---------------------------------------------------------------------

std::string fusectl_dir(const std::string& device) {
    unsigned major = 0, minor = 0;
    if (std::sscanf(device.c_str(), "%u:%u", &major, &minor) != 2) return "";
    // fusectl names a connection by the kernel's dev_t: (major << 20) | minor.
    return "/sys/fs/fuse/connections/" + std::to_string((major << 20) | minor);
}

int fusectl_abort(const std::string& device) {
    std::string dir = fusectl_dir(device);
    if (dir.empty()) return EINVAL;
    int fd = open((dir + "/abort").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = write(fd, "1", 1) == 1 ? 0 : errno;
    close(fd);
    return e;
}

int fusectl_waiting(const std::string& device) {
    std::string dir = fusectl_dir(device);
    if (dir.empty()) return -1;
    auto s = read_file(dir + "/waiting");
    if (!s) return -1;
    return std::atoi(s->c_str());
}

// ---- file helpers -------------------------------------------------------------

std::optional<std::string> read_file(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string s;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            errno = e;
            return std::nullopt;
        }
        if (n == 0) break;
        s.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    return s;
}

void write_file(const std::string& path, const std::string& contents) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("open " + path);
    const char* p = contents.data();
    size_t left = contents.size();
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            errno = e;
            throw_errno("write " + path);
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
    if (close(fd) != 0) throw_errno("close " + path);
}

void make_dirs(const std::string& path) {
    std::string cur;
    std::istringstream in(path);
    std::string part;
    if (!path.empty() && path[0] == '/') cur = "";
    while (std::getline(in, part, '/')) {
        if (part.empty()) continue;
        cur += "/" + part;
        if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir " + cur);
    }
}

int read_errno(const std::string& path) {
    if (read_file(path)) return 0;
    return errno;
}

std::string errno_name(int err) {
    if (err == 0) return "0";
    const char* n = strerrorname_np(err);
    return n ? n : "E" + std::to_string(err);
}

std::string describe_process(pid_t pid) {
    std::string out;
    std::string base = "/proc/" + std::to_string(pid);
    auto cmd = read_file(base + "/cmdline");
    if (!cmd) return "pid " + std::to_string(pid) + ": gone\n";
    std::replace(cmd->begin(), cmd->end(), '\0', ' ');
    out += "pid " + std::to_string(pid) + ": " + *cmd + "\n";
    DIR* d = opendir((base + "/task").c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string t = base + "/task/" + e->d_name;
        std::string state = "?";
        if (auto st = read_file(t + "/stat")) {
            auto paren = st->rfind(')');
            if (paren != std::string::npos && paren + 2 < st->size()) state = st->substr(paren + 2, 1);
        }
        std::string wchan = read_file(t + "/wchan").value_or("?");
        std::string stack = read_file(t + "/stack").value_or("");
        std::replace(stack.begin(), stack.end(), '\n', ' ');
        out += "  tid " + std::string(e->d_name) + " " + state + " " + wchan + " [" + stack + "]\n";
    }
    closedir(d);
    return out;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
                std::chrono::microseconds poll) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        if (cond()) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(poll);
    }
}

std::int64_t monotonic_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// ---- processes --------------------------------------------------------------------

namespace {

// Forks and execs argv with the given fds as 0/1/2 (-1: /dev/null). The child
// dies with this process (PR_SET_PDEATHSIG), so a crashed test leaves no FUSE
// daemon holding its namespace alive.
pid_t spawn_fds(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd) {
    if (argv.empty() || argv[0].empty()) throw std::runtime_error("spawn: empty command");
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) throw_errno("pipe2");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(report[0]);
        close(report[1]);
        throw_errno("fork");
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) signal(s, SIG_DFL);
        int devnull = open("/dev/null", O_RDWR);
        int fds[3] = {in_fd >= 0 ? in_fd : devnull, out_fd >= 0 ? out_fd : devnull, err_fd >= 0 ? err_fd : devnull};
        // Move the sources out of 0..2 first so dup2 order cannot clobber them.
        for (int& f : fds)
            if (f >= 0 && f < 3) f = fcntl(f, F_DUPFD_CLOEXEC, 3);
        for (int i = 0; i < 3; i++) dup2(fds[i], i);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execvp(args[0], args.data());
        int e = errno;
        (void)!write(report[1], &e, sizeof e);
        _exit(127);
    }
    close(report[1]);
    int e = 0;
    ssize_t n;
    do {
        n = read(report[0], &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == sizeof e) {
        int status;
        waitpid(pid, &status, 0);
        errno = e;
        throw_errno("exec " + argv[0]);
    }
    return pid;
}

int open_log(const std::string& path) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("open " + path);
    return fd;
}

}  // namespace

pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path) {
    int fd = open_log(log_path);
    pid_t pid;
    try {
        pid = spawn_fds(argv, -1, fd, fd);
    } catch (...) {
        close(fd);
        throw;
    }
    close(fd);
    return pid;
}

int exit_code_of(int status) {
    if (status < 0) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

std::string sanitizer_report(const std::string& text) {
    // The first line of every report: "==PID==ERROR: AddressSanitizer: ...",
    // "==PID==ERROR: LeakSanitizer: ...", "WARNING: ThreadSanitizer: ...",
    // "file:line:col: runtime error: ..." (UBSan), and the runtimes' own
    // failures ("AddressSanitizer: CHECK failed", "...:DEADLYSIGNAL").
    std::size_t at = std::string::npos;
    for (const char* marker : {"Sanitizer", ": runtime error: "}) at = std::min(at, text.find(marker));
    if (at == std::string::npos) return "";
    std::size_t begin = text.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    std::size_t end = begin;
    for (int lines = 0; lines < 60 && end != std::string::npos; lines++) end = text.find('\n', end + 1);
    return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// Runs argv to completion; throws with the log tail on a non-zero exit.
static void run_checked(const std::vector<std::string>& argv, const std::string& log_path) {
    pid_t pid = spawn(argv, log_path);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (exit_code_of(status) != 0)
        throw std::runtime_error(join(argv) + " failed with " + std::to_string(exit_code_of(status)) + ": " +
                                 tail_of(read_file(log_path).value_or("")));
}

// ---- Sandbox ------------------------------------------------------------------------

Sandbox::Sandbox() {
    require_private_namespace("Sandbox");
    char tmpl[] = "/tmp/fh-sandbox-XXXXXX";
    if (!mkdtemp(tmpl)) throw_errno("mkdtemp /tmp/fh-sandbox-XXXXXX");
    root_ = tmpl;
    if (mount("fh-sandbox", root_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
        int e = errno;
        rmdir(root_.c_str());
        errno = e;
        throw_errno("mount tmpfs on " + root_);
    }
    mounted_ = true;
    if (mount(nullptr, root_.c_str(), nullptr, MS_SHARED, nullptr) != 0) throw_errno("make " + root_ + " shared");
    // kubelet/pods: a running kubelet has created it (a test of a node
    // whose kubelet has not started removes it).
    for (const char* d : {"kubelet/pods", "runtime", "state"}) make_dirs(root_ + "/" + d);
}

Sandbox::~Sandbox() {
    // Kill everything first, then abort the FUSE connections mounted here: a
    // process stuck in a request to a stopped daemon cannot exit before that.
    for (pid_t pid : children_) kill(pid, SIGKILL);
    if (mounted_) abort_fuse_connections();
    for (pid_t pid : children_)
        if (!wait_with_timeout(pid, kReapTimeout))
            std::fprintf(stderr, "fh::test::Sandbox: child %d did not exit after SIGKILL\n", static_cast<int>(pid));
    children_.clear();
    // Before the tmpfs and the logs on it go: a report of a sanitized child
    // (fuse-healerd killed by the test afterwards, a tool) fails the test.
    // The logs are runtime/'s files; its directories may be FUSE mounts
    // (dead or hung): only readdir of the tmpfs, no descent, no stat.
    if (mounted_) {
        std::error_code ec;
        for (std::filesystem::directory_iterator it(runtime(), ec), end; !ec && it != end; it.increment(ec)) {
            if (!it->is_regular_file(ec)) continue;  // d_type from readdir: no stat
            std::string report = sanitizer_report(read_file(it->path()).value_or(""));
            if (!report.empty()) ADD_FAILURE() << "sanitizer report in " << it->path().string() << ":\n" << report;
        }
    }
    if (mounted_) umount2(root_.c_str(), MNT_DETACH);
    if (!root_.empty()) rmdir(root_.c_str());
}

int Sandbox::abort_fuse_connections() {
    int n = 0;
    std::set<std::string> devices;
    for (const auto& m : read_mount_lines())
        if ((m.fstype == "fuse" || starts_with(m.fstype, "fuse.")) && starts_with(m.mountpoint, root_ + "/"))
            devices.insert(m.device);
    for (const auto& d : devices)
        if (fusectl_abort(d) == 0) n++;
    return n;
}

std::string Sandbox::pod_volume_path(const std::string& uid, const std::string& vol) const {
    return kubelet() + "/pods/" + uid + "/volumes/kubernetes.io~csi/" + vol + "/mount";
}

std::string Sandbox::pod_subpath_path(const std::string& uid, const std::string& vol, const std::string& ctr,
                                      int n) const {
    return kubelet() + "/pods/" + uid + "/volume-subpaths/" + vol + "/" + ctr + "/" + std::to_string(n);
}

std::string Sandbox::make_pod_volume(const std::string& uid, const std::string& vol,
                                     const std::string& volume_handle, const std::string& driver) {
    std::string mount_dir = pod_volume_path(uid, vol);
    make_dirs(mount_dir);
    std::string dir = mount_dir.substr(0, mount_dir.size() - std::string("/mount").size());
    std::string handle = volume_handle.empty() ? vol : volume_handle;
    write_file(dir + "/vol_data.json",
               "{\"driverName\":\"" + json_escape(driver) + "\",\"volumeHandle\":\"" + json_escape(handle) +
                   "\",\"specVolID\":\"" + json_escape(vol) + "\",\"podUID\":\"" + json_escape(uid) +
                   "\",\"volumeLifecycleMode\":\"Persistent\"}");
    return mount_dir;
}

std::string Sandbox::unique(const std::string& name) { return name + "-" + std::to_string(++counter_); }

void csi_bind(const std::string& source_path, const std::string& source_subdir, const std::string& target_path,
              bool read_only) {
    require_private_namespace("csi_bind");
    make_dirs(target_path);
    std::string src = source_subdir.empty() ? source_path : source_path + "/" + source_subdir;
    if (mount(src.c_str(), target_path.c_str(), nullptr, MS_BIND, nullptr) != 0)
        throw_errno("mount --bind " + src + " " + target_path);
    if (read_only &&
        mount("none", target_path.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
        throw_errno("mount -o remount,bind,ro " + target_path);
}

int lazy_umount(const std::string& path) {
    if (umount2(path.c_str(), MNT_DETACH) != 0) return errno;
    return 0;
}

// ---- FuseDaemon ------------------------------------------------------------------------

const char* to_string(FuseKind k) {
    switch (k) {
    case FuseKind::TestFs: return "fh_testfs";
    case FuseKind::BindFs: return "bindfs";
    case FuseKind::SquashFuse: return "squashfuse";
    }
    return "?";
}

void write_generation_tree(const std::string& dir, int generation) {
    std::string g = std::to_string(generation);
    make_dirs(dir + "/data");
    make_dirs(dir + "/sub");
    write_file(dir + "/generation", g + "\n");
    write_file(dir + "/data/hello", "hello from generation " + g + "\n");
    write_file(dir + "/sub/inner", "inner " + g + "\n");
}

FuseDaemon::FuseDaemon(Sandbox& sb, std::string source_path, FuseKind kind)
    : sb_(sb), source_(std::move(source_path)), kind_(kind) {
    log_path_ = sb_.runtime() + "/" + sb_.unique(std::string(to_string(kind_)) + ".log");
}

FuseDaemon::~FuseDaemon() {
    if (pid_ > 0) reap(SIGKILL);
}

void FuseDaemon::reap(int sig) {
    if (pid_ <= 0) return;
    if (sig != SIGKILL) {
        kill(pid_, sig);
        kill(pid_, SIGCONT);
    }
    bool reaped = (sig != SIGKILL && wait_with_timeout(pid_, kReapTimeout)) || kill_and_reap(pid_, kReapTimeout);
    if (reaped) sb_.untrack(pid_);  // else the Sandbox retries
    else std::fprintf(stderr, "fh::test::FuseDaemon: pid %d did not exit after SIGKILL\n", static_cast<int>(pid_));
    pid_ = -1;
}

std::vector<std::string> FuseDaemon::command(int generation) {
    std::string g = std::to_string(generation);
    std::vector<std::string> cmd;
    switch (kind_) {
    case FuseKind::TestFs:
        if (testfs_path().empty()) throw std::runtime_error("fh_testfs was not built (FH_TESTFS_PATH is empty)");
        cmd = {testfs_path(), source_, "--generation", g, "-f"};
        break;
    case FuseKind::BindFs: {
        std::string backing = sb_.runtime() + "/" + sb_.unique("bindfs-gen" + g);
        write_generation_tree(backing, generation);
        cmd = {"bindfs", "-f", "-r"};
        cmd.insert(cmd.end(), extra_args_.begin(), extra_args_.end());
        cmd.push_back(backing);
        cmd.push_back(source_);
        return cmd;
    }
    case FuseKind::SquashFuse: {
        std::string dir = sb_.runtime() + "/" + sb_.unique("squash-gen" + g);
        write_generation_tree(dir, generation);
        std::string image = dir + ".sqfs";
        run_checked({"mksquashfs", dir, image, "-noappend", "-quiet", "-no-progress"}, log_path_);
        cmd = {"squashfuse", "-f"};
        cmd.insert(cmd.end(), extra_args_.begin(), extra_args_.end());
        cmd.push_back(image);
        cmd.push_back(source_);
        return cmd;
    }
    }
    cmd.insert(cmd.end(), extra_args_.begin(), extra_args_.end());
    return cmd;
}

void FuseDaemon::start(int generation) {
    require_private_namespace("FuseDaemon::start");
    if (pid_ > 0) throw std::runtime_error("FuseDaemon::start: already running at " + source_);
    make_dirs(source_);
    std::set<int> before;
    for (const auto& m : read_mount_lines())
        if (m.mountpoint == source_) before.insert(m.id);
    std::vector<std::string> cmd = command(generation);
    pid_ = spawn(cmd, log_path_);
    sb_.track(pid_);
    generation_ = generation;

    // Throws when the FUSE daemon has exited already (`when`: at which step).
    const auto fail_if_exited = [&](const char* when) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) != pid_) return;
        sb_.untrack(pid_);
        pid_ = -1;
        throw std::runtime_error(join(cmd) + " exited with " + std::to_string(exit_code_of(status)) + " " + when +
                                 ": " + tail_of(log()));
    };
    auto deadline = Clock::now() + 5000ms;
    for (;;) {
        fail_if_exited("before mounting");
        std::optional<MountLine> found;
        for (auto& m : read_mount_lines()) {
            if (m.mountpoint != source_ || before.count(m.id)) continue;
            bool type_ok = kind_ == FuseKind::TestFs ? m.fstype == "fuse.fh_testfs"
                                                     : (m.fstype == "fuse" || starts_with(m.fstype, "fuse."));
            if (type_ok) found = std::move(m);
        }
        if (found) {
            mount_ = *found;
            fstype_ = found->fstype;
            break;
        }
        if (Clock::now() >= deadline) {
            reap(SIGKILL);
            throw std::runtime_error(join(cmd) + ": no new FUSE mount at " + source_ + " after 5 s: " +
                                     tail_of(log()));
        }
        std::this_thread::sleep_for(1ms);
    }
    // libfuse's fuse_main() mounts first and installs its SIGTERM handler
    // (the one that unmounts on the way out) after that: a SIGTERM in
    // between kills the daemon with its mount left behind, stale, which
    // terminate() promises not to do. Seen in 34 of 200 SIGTERMs sent as
    // soon as the mount showed (fh_testfs before it blocked the signal from
    // its start; bindfs and squashfuse still run fuse_main's handlers), and
    // as a lost detach event in MountTrackerTest under ThreadSanitizer.
    deadline = Clock::now() + 5000ms;
    while (!handles_signal(pid_, SIGTERM)) {
        fail_if_exited("right after mounting");
        if (Clock::now() >= deadline) {
            reap(SIGKILL);
            throw std::runtime_error(join(cmd) + ": no SIGTERM handler 5 s after mounting at " + source_ + ": " +
                                     tail_of(log()));
        }
        std::this_thread::sleep_for(1ms);
    }
}

void FuseDaemon::kill9() {
    if (pid_ > 0) reap(SIGKILL);
}

int FuseDaemon::terminate() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    kill(pid_, SIGCONT);
    auto st = wait_with_timeout(pid_, kReapTimeout);
    if (!st) st = kill_and_reap(pid_, kReapTimeout);
    if (st) sb_.untrack(pid_);
    pid_ = -1;
    return st ? exit_code_of(*st) : -1;
}

void FuseDaemon::stop() {
    if (pid_ <= 0) throw std::runtime_error("FuseDaemon::stop: not running");
    if (kill(pid_, SIGSTOP) != 0) throw_errno("kill SIGSTOP");
    int status = 0;
    // WUNTRACED reports once every thread has stopped.
    while (waitpid(pid_, &status, WUNTRACED) < 0 && errno == EINTR) {
    }
}

void FuseDaemon::cont() {
    if (pid_ <= 0) throw std::runtime_error("FuseDaemon::cont: not running");
    if (kill(pid_, SIGCONT) != 0) throw_errno("kill SIGCONT");
    int status = 0;
    while (waitpid(pid_, &status, WCONTINUED) < 0 && errno == EINTR) {
    }
}

void FuseDaemon::supervisor_restart(int generation) {
    kill9();
    int e = lazy_umount(source_);
    if (e != 0 && e != EINVAL)  // EINVAL: nothing mounted there any more
        throw std::runtime_error("umount -l " + source_ + ": " + std::strerror(e));
    start(generation);
}

std::string FuseDaemon::log() const { return read_file(log_path_).value_or(""); }

// ---- PodCgroup ------------------------------------------------------------------

PodCgroup::PodCgroup(const std::string& pod_uid) {
    for (const MountLine& m : read_mount_lines("/proc/self/mountinfo"))
        if (m.fstype == "cgroup2") {
            root_ = m.mountpoint;
            break;
        }
    if (root_.empty()) throw std::runtime_error("PodCgroup: no cgroup2 mount in /proc/self/mountinfo");
    static int counter = 0;
    top_ = root_ + "/fh-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    pod_ = top_ + "/kubepods/pod" + pod_uid;
    if (::mkdir(top_.c_str(), 0755) != 0) throw_errno("mkdir " + top_);
    if (::mkdir((top_ + "/kubepods").c_str(), 0755) != 0 || ::mkdir(pod_.c_str(), 0755) != 0) {
        const int err = errno;
        ::rmdir((top_ + "/kubepods").c_str());
        ::rmdir(top_.c_str());
        errno = err;
        throw_errno("mkdir " + pod_);
    }
}

void PodCgroup::add(pid_t pid) const {
    const std::string procs = pod_ + "/cgroup.procs";
    std::ofstream out(procs);
    out << pid << std::flush;
    if (!out) throw std::runtime_error("PodCgroup: could not move pid " + std::to_string(pid) + " into " + procs);
}

PodCgroup::~PodCgroup() {
    // A process still in it (or exiting: rmdir says EBUSY until it is
    // reaped) goes back to the root; retried for up to 2 s.
    for (int attempt = 0; attempt < 200; ++attempt) {
        std::ifstream in(pod_ + "/cgroup.procs");
        std::string pid;
        while (std::getline(in, pid)) {
            std::ofstream back(root_ + "/cgroup.procs");
            back << pid << std::flush;
        }
        if (::rmdir(pod_.c_str()) == 0 || errno == ENOENT) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::rmdir((top_ + "/kubepods").c_str());
    if (::rmdir(top_.c_str()) != 0 && errno != ENOENT)
        ADD_FAILURE() << "PodCgroup: could not remove " << top_ << ": " << std::strerror(errno);
}

// ---- Container ---------------------------------------------------------------------------

std::string ContainerEvent::kind() const {
    auto sp = state.find(' ');
    return state.substr(0, sp);
}

std::string ContainerEvent::error() const {
    if (kind() != "error") return "";
    auto sp = state.find(' ');
    return sp == std::string::npos ? "" : state.substr(sp + 1);
}

static std::string unescape_state(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\' || i + 1 >= s.size()) {
            out += s[i];
            continue;
        }
        char c = s[++i];
        if (c == 'n') out += '\n';
        else if (c == 't') out += '\t';
        else if (c == 'x' && i + 2 < s.size()) {
            out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
            i += 2;
        } else out += c;
    }
    return out;
}

std::optional<std::string> ContainerEvent::contents() const {
    if (kind() != "ok") return std::nullopt;
    auto p = state.find(" file=");
    if (p == std::string::npos) return std::nullopt;
    return unescape_state(state.substr(p + 6));
}

std::vector<std::string> ContainerEvent::listing() const {
    std::vector<std::string> out;
    if (kind() != "ok") return out;
    auto p = state.find(" ls=");
    if (p == std::string::npos) return out;
    auto end = state.find(" file=", p);
    std::string names = state.substr(p + 4, end == std::string::npos ? std::string::npos : end - p - 4);
    std::istringstream in(names);
    std::string n;
    while (std::getline(in, n, ','))
        if (!n.empty()) out.push_back(unescape_state(n));
    return out;
}

Container::Container(Sandbox& sb) : sb_(sb) {}

Container::~Container() {
    if (pid_ > 0 && kill_and_reap(pid_, kDestroyTimeout)) sb_.untrack(pid_);
    if (out_fd_ >= 0) close(out_fd_);
    if (in_fd_ >= 0) close(in_fd_);
}

void Container::start(const std::string& volume_path, ContainerPropagation propagation, const std::string& file,
                      int interval_us) {
    require_private_namespace("Container::start");
    if (pid_ > 0) throw std::runtime_error("Container::start: already running");
    if (test_container_path().empty()) throw std::runtime_error("fh_test_container was not built");
    log_path_ = sb_.runtime() + "/" + sb_.unique("container") + ".log";
    std::string root_dir = sb_.runtime() + "/" + sb_.unique("container-root");
    std::vector<std::string> cmd = {test_container_path(),
                                    "--volume",
                                    volume_path,
                                    "--propagation",
                                    propagation == ContainerPropagation::Slave ? "slave" : "private",
                                    "--interval-us",
                                    std::to_string(interval_us),
                                    "--root-dir",
                                    root_dir};
    if (!file.empty()) {
        cmd.push_back("--file");
        cmd.push_back(file);
    }
    int in_pipe[2], out_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        close(in_pipe[0]);
        close(in_pipe[1]);
        throw_errno("pipe2");
    }
    int err_fd = open_log(log_path_);
    try {
        pid_ = spawn_fds(cmd, in_pipe[0], out_pipe[1], err_fd);
    } catch (...) {
        for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_fd}) close(fd);
        throw;
    }
    sb_.track(pid_);
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_fd);
    in_fd_ = in_pipe[1];
    out_fd_ = out_pipe[0];
    fcntl(out_fd_, F_SETFL, fcntl(out_fd_, F_GETFL) | O_NONBLOCK);
    events_.clear();
    buf_.clear();

    // Wait for "ready".
    auto deadline = Clock::now() + 5000ms;
    for (;;) {
        auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            if (line == "ready") break;
            continue;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        bool eof = false;
        if (left > 0) {
            pollfd p{out_fd_, POLLIN, 0};
            if (poll(&p, 1, static_cast<int>(left)) > 0) {
                char tmp[4096];
                ssize_t n = read(out_fd_, tmp, sizeof tmp);
                if (n > 0) buf_.append(tmp, static_cast<size_t>(n));
                else if (n == 0) eof = true;
            }
        }
        if (eof || left <= 0) {
            auto status = kill_and_reap(pid_, kReapTimeout);
            if (status) sb_.untrack(pid_);
            pid_ = -1;
            throw std::runtime_error(join(cmd) + (eof ? " exited (" + std::to_string(exit_code_of(status.value_or(-1))) + ")"
                                                      : " did not print ready in 5 s") +
                                     ": " + tail_of(log()));
        }
    }
    read_available(0);
}

bool Container::read_available(int timeout_ms) {
    if (out_fd_ < 0) return false;
    bool got = false;
    pollfd p{out_fd_, POLLIN, 0};
    // Lines may already be buffered (start() reads past "ready"): parse those
    // whether or not more data arrives.
    bool readable = buf_.find('\n') == std::string::npos ? poll(&p, 1, timeout_ms) > 0 : true;
    while (readable) {
        char tmp[4096];
        ssize_t n = read(out_fd_, tmp, sizeof tmp);
        if (n > 0) {
            buf_.append(tmp, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;  // EAGAIN or EOF
    }
    for (;;) {
        auto nl = buf_.find('\n');
        if (nl == std::string::npos) break;
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        auto sp = line.find(' ');
        if (sp == std::string::npos) continue;
        ContainerEvent e;
        try {
            e.usec = std::stoll(line.substr(0, sp));
        } catch (...) {
            continue;
        }
        e.state = line.substr(sp + 1);
        events_.push_back(std::move(e));
        got = true;
    }
    return got;
}

const std::vector<ContainerEvent>& Container::events() {
    read_available(0);
    return events_;
}

std::optional<ContainerEvent> Container::last() {
    read_available(0);
    if (events_.empty()) return std::nullopt;
    return events_.back();
}

std::optional<ContainerEvent> Container::wait_for_state(const std::function<bool(const ContainerEvent&)>& pred,
                                                        std::chrono::milliseconds timeout) {
    read_available(0);
    size_t checked = events_.empty() ? 0 : events_.size() - 1;
    auto deadline = Clock::now() + timeout;
    for (;;) {
        for (; checked < events_.size(); checked++)
            if (pred(events_[checked])) return events_[checked];
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            return std::nullopt;
        }
        read_available(static_cast<int>(std::min<long long>(left, 50)));
    }
}

std::vector<std::string> Container::state_sequence() {
    read_available(0);
    std::vector<std::string> out;
    for (const auto& e : events_) out.push_back(e.state);
    return out;
}

std::string Container::log() const { return read_file(log_path_).value_or(""); }

int Container::stop(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    read_available(0);
    if (in_fd_ >= 0) {
        close(in_fd_);
        in_fd_ = -1;
    }
    auto st = wait_with_timeout(pid_, timeout);
    if (!st) st = kill_and_reap(pid_, timeout);
    if (!st) return -1;  // stuck in a FUSE request: still running(), stop() again later
    sb_.untrack(pid_);
    pid_ = -1;
    read_available(0);
    return *st;
}

// ---- Daemon --------------------------------------------------------------------------------

Daemon::Daemon(Sandbox& sb, std::string binary) : sb_(sb), binary_(std::move(binary)) {
    // Numbered per process, not per sandbox, so that Sandbox::unique()'s
    // sequence of names stays what tests have always seen.
    static int daemons = 0;
    control_socket_ = sb_.root() + "/control-" + std::to_string(++daemons) + ".sock";
}

Daemon::~Daemon() {
    if (pid_ > 0 && kill_and_reap(pid_, kDestroyTimeout)) sb_.untrack(pid_);
}

void DaemonTest::SetUp() {
    IntegrationTest::SetUp();
    if (IsSkipped()) return;
    std::string why;
    if (!Daemon::available(&why)) GTEST_SKIP() << why;
}

bool Daemon::available(std::string* why, const std::string& binary) {
    std::string reason;
    if (binary.empty()) reason = "fuse-healerd is not part of this build (no fuse-healerd target)";
    else if (access(binary.c_str(), X_OK) != 0)
        reason = "fuse-healerd binary " + binary + " is not built: " + std::strerror(errno);
    if (why) *why = reason;
    return reason.empty();
}

std::string Daemon::config_text(const std::string& extra_toml) const {
    std::string t;
    t += "# written by the integration-test harness\n";
    t += "[kubelet]\nroot_dir = " + toml_string(sb_.kubelet()) + "\n\n";
    t += "[state]\ndir = " + toml_string(sb_.state()) + "\n\n";
    t += "[log]\nlevel = \"debug\"\n\n";
    // No metrics listener unless a test asks for one: the default address
    // (127.0.0.1:9766) is shared by every daemon of a parallel test run.
    if (extra_toml.find("[metrics]") == std::string::npos) t += "[metrics]\nlisten = \"\"\n\n";
    // Never the default /run/fuse-healer/control.sock: /run is the
    // machine's, shared by every test and checkout running at the same time.
    if (extra_toml.find("[control]") == std::string::npos)
        t += "[control]\nsocket = " + toml_string(control_socket_) + "\n\n";
    t += extra_toml;
    if (!t.empty() && t.back() != '\n') t += "\n";
    return t;
}

void Daemon::start(const std::string& extra_toml, const std::vector<std::string>& extra_args) {
    require_private_namespace("Daemon::start");
    if (pid_ > 0) throw std::runtime_error("Daemon::start: already running");
    std::string why;
    if (!available(&why, binary_)) throw std::runtime_error(why);
    std::string name = sb_.unique("fuse-healerd");
    config_path_ = sb_.runtime() + "/" + name + ".toml";
    log_path_ = sb_.runtime() + "/" + name + ".log";
    write_file(config_path_, config_text(extra_toml));
    std::vector<std::string> cmd = {binary_, "--config", config_path_};
    cmd.insert(cmd.end(), extra_args.begin(), extra_args.end());
    pid_ = spawn(cmd, log_path_);
    sb_.track(pid_);
}

void Daemon::kill9() {
    if (pid_ <= 0) return;
    if (kill_and_reap(pid_, kReapTimeout)) sb_.untrack(pid_);  // else the Sandbox retries
    pid_ = -1;
}

int Daemon::terminate(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    auto st = wait_with_timeout(pid_, timeout);
    if (!st) st = kill_and_reap(pid_, kReapTimeout);
    if (st) sb_.untrack(pid_);  // else the Sandbox retries
    pid_ = -1;
    return st ? exit_code_of(*st) : -1;
}

std::optional<int> Daemon::poll_exit() {
    if (pid_ <= 0) return std::nullopt;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
    sb_.untrack(pid_);
    pid_ = -1;
    return exit_code_of(status);
}

std::string Daemon::log() const { return log_path_.empty() ? "" : read_file(log_path_).value_or(""); }

bool Daemon::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout, std::size_t from) const {
    return wait_until(
        [&] {
            std::string l = log();
            return l.size() > from && l.find(needle, from) != std::string::npos;
        },
        timeout, 5ms);
}

}  // namespace fh::test
