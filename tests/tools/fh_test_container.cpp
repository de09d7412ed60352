// fh_test_container: emulates a container that holds a pod volume.
//
// Usage:
//   fh_test_container --volume HOSTPATH --propagation slave|private
//                     [--file RELPATH] [--interval-us N] [--root-dir DIR]
//
// It enters a new mount namespace (everything made a slave first, so nothing
// propagates back), builds a root like a container runtime does (a tmpfs with
// /data = rbind of HOSTPATH made rslave or rprivate, then pivot_root and a
// lazy unmount of the old root), prints "ready" and probes /data every
// interval: open+readdir /data, then read /data/RELPATH when --file is given.
// Each time the observed state changes it prints one line:
//
//   <CLOCK_MONOTONIC microseconds> <state>
//
// where <state> is one of
//   ok ls=NAME,NAME,... [file=CONTENTS]   readdir (and the read) succeeded
//   empty                                 readdir succeeded with no entries
//   error ERRNAME                         e.g. "error ENOTCONN"
// Names are sorted; in names and contents '\\', '\n', '\t', ',' (names only)
// and other non-printable bytes are escaped as \\ \n \t \x2c \xNN, so a state
// is one line. "file=" is always last: everything after it is the contents.
//
// It exits 0 on SIGTERM or when stdin reaches EOF (it polls stdin every
// interval). A probe blocked in a hung FUSE request does not stop that: the
// probe runs on its own thread.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::string m = "fh_test_container: " + what + "\n";
    (void)!write(2, m.data(), m.size());
    _exit(1);
}

[[noreturn]] void fail_errno(const std::string& what) {
    fail(what + ": " + std::strerror(errno));
}

[[noreturn]] void usage() {
    fail("usage: fh_test_container --volume HOSTPATH --propagation slave|private "
         "[--file RELPATH] [--interval-us N] [--root-dir DIR]");
}

void write_all(int fd, const std::string& s) {
    const char* p = s.data();
    size_t left = s.size();
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // nobody is listening any more; keep going quietly
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

long long monotonic_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000LL + ts.tv_nsec / 1000;
}

std::string errno_name(int e) {
    const char* n = strerrorname_np(e);
    return n ? n : "E" + std::to_string(e);
}

std::string escape(const std::string& s, bool escape_comma) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == ',' && escape_comma) out += "\\x2c";
        else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// Returns the state of /data (and /data/<file>) as one line, without newline.
std::string probe(const std::string& file) {
    DIR* d = opendir("/data");
    if (!d) return "error " + errno_name(errno);
    std::vector<std::string> names;
    for (;;) {
        errno = 0;
        dirent* e = readdir(d);
        if (!e) {
            if (errno != 0) {
                int err = errno;
                closedir(d);
                return "error " + errno_name(err);
            }
            break;
        }
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
    if (names.empty()) return "empty";
    std::sort(names.begin(), names.end());
    std::string state = "ok ls=";
    for (size_t i = 0; i < names.size(); i++) {
        if (i) state += ",";
        state += escape(names[i], true);
    }
    if (!file.empty()) {
        std::string path = "/data/" + file;
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return "error " + errno_name(errno);
        std::string contents;
        char buf[4096];
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR) continue;
                int err = errno;
                close(fd);
                return "error " + errno_name(err);
            }
            if (n == 0) break;
            contents.append(buf, static_cast<size_t>(n));
            if (contents.size() > 65536) break;
        }
        close(fd);
        state += " file=" + escape(contents, false);
    }
    return state;
}

void prober(const std::string& file, long interval_us) {
    std::string last;
    bool first = true;
    for (;;) {
        std::string state = probe(file);
        if (first || state != last) {
            write_all(1, std::to_string(monotonic_usec()) + " " + state + "\n");
            last = state;
            first = false;
        }
        timespec ts{interval_us / 1000000, (interval_us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

void on_sigterm(int) { _exit(0); }

void make_container_root(const std::string& volume, bool slave, const std::string& root_dir) {
    if (unshare(CLONE_NEWNS) != 0) fail_errno("unshare(CLONE_NEWNS)");
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) fail_errno("make / rslave");

    std::string r;
    if (root_dir.empty()) {
        char tmpl[] = "/tmp/fh-container-XXXXXX";
        if (!mkdtemp(tmpl)) fail_errno("mkdtemp /tmp/fh-container-XXXXXX");
        r = tmpl;
    } else {
        if (mkdir(root_dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("mkdir " + root_dir);
        char* real = realpath(root_dir.c_str(), nullptr);
        if (!real) fail_errno("realpath " + root_dir);
        r = real;
        free(real);
    }
    const bool made_r = root_dir.empty();

    if (mount("fh-container-root", r.c_str(), "tmpfs", 0, "mode=0755") != 0) fail_errno("mount tmpfs on " + r);
    const std::string data = r + "/data";
    const std::string oldroot = r + "/oldroot";
    if (mkdir(data.c_str(), 0755) != 0) fail_errno("mkdir " + data);
    if (mkdir(oldroot.c_str(), 0755) != 0) fail_errno("mkdir " + oldroot);
    if (mount(volume.c_str(), data.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
        fail_errno("rbind " + volume + " on " + data);
    if (mount(nullptr, data.c_str(), nullptr, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), nullptr) != 0)
        fail_errno(std::string("make ") + data + (slave ? " rslave" : " rprivate"));
    if (syscall(SYS_pivot_root, r.c_str(), oldroot.c_str()) != 0) fail_errno("pivot_root " + r);
    if (chdir("/") != 0) fail_errno("chdir /");
    // After pivot_root the new root is no longer mounted on R's dentry, so the
    // directory we created on the host's /tmp can be removed now.
    if (made_r) (void)rmdir(("/oldroot" + r).c_str());
    if (umount2("/oldroot", MNT_DETACH) != 0) fail_errno("umount2 /oldroot");
    if (rmdir("/oldroot") != 0) fail_errno("rmdir /oldroot");
}

}  // namespace

// cppcheck-suppress constParameter ; main's signature is the standard's
int main(int argc, char* argv[]) {
    std::string volume, propagation, file, root_dir;
    long interval_us = 1000;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage();
            return argv[++i];
        };
        if (a == "--volume") volume = value();
        else if (a == "--propagation") propagation = value();
        else if (a == "--file") file = value();
        else if (a == "--root-dir") root_dir = value();
        else if (a == "--interval-us") {
            std::string v = value();
            char* end = nullptr;
            interval_us = std::strtol(v.c_str(), &end, 10);
            if (!end || *end || interval_us <= 0) usage();
        } else usage();
    }
    if (volume.empty() || (propagation != "slave" && propagation != "private")) usage();
    while (!file.empty() && file.front() == '/') file.erase(file.begin());

    struct sigaction sa{};
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, nullptr) != 0) fail_errno("sigaction(SIGTERM)");
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) fail_errno("signal(SIGPIPE)");

    make_container_root(volume, propagation == "slave", root_dir);
    write_all(1, "ready\n");

    // The prober never takes SIGTERM: the main thread does, and _exits.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    std::thread t(prober, file, interval_us);
    t.detach();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);

    const int timeout_ms = static_cast<int>(std::max(1L, interval_us / 1000));
    for (;;) {
        pollfd p{0, POLLIN, 0};
        int n = poll(&p, 1, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            _exit(1);
        }
        if (n == 0) continue;
        if (p.revents & POLLNVAL) _exit(0);  // no stdin at all: treat as EOF
        char buf[256];
        ssize_t r = read(0, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) _exit(0);
    }
}
