// heal_bench: how fast fuse-healerd heals, and what it costs when idle.
//
//   heal_bench [--targets 1,100,1000] [--cycles 20] [--warmup 1] [--idle-seconds 60]
//              [--idle-targets N] [--containers 10] [--probe-interval-us 100000]
//              [--cycle-timeout 300] [--daemon PATH] [--keep-logs DIR]
//
// Must run as root. Everything happens inside a private mount namespace that
// this process creates (fh::test::enter_private_mount_namespace), in a tmpfs
// sandbox; nothing reaches the machine's mount table, and the namespace dies
// with the process.
//
// For each N in --targets, with a fresh sandbox and a fresh fuse-healerd:
//
//   * one fh_testfs source at <sandbox>/runtime/source, N pod volumes bound
//     read-only from it (csi_bind, like a CSI NodePublishVolume), and
//     C = min(N, --containers) emulated containers, container k holding the
//     volumes i with i % C == k at /v<i> after pivot_root; even containers
//     hold rslave copies (HostToContainer), odd ones rprivate copies;
//   * fuse-healerd with root_dir = <sandbox>/kubelet, state in the sandbox,
//     --log-level info, every other setting at its default (strategy auto,
//     safety reconcile every 30 s);
//   * idle CPU (only for N == --idle-targets, default the largest N): the
//     daemon's utime+stime over --idle-seconds with all targets healthy and
//     no mount event;
//   * --warmup + --cycles heal cycles. A cycle:
//       1. kill -9 the source's fh_testfs, umount -l the source, and wait
//          until the daemon has logged "mount broken" for all N targets;
//       2. start the next generation of fh_testfs at a staging path on a
//          private tmpfs, wait for its mount, and wait until the daemon is
//          quiet (its reconcile for that mount event is over);
//       3. arm the containers (each starts probing its volumes);
//       4. mount(staging, source, MS_MOVE): the new source appears at the
//          source path, a single mount event; t0 = CLOCK_MONOTONIC right
//          after the syscall returns;
//       5. each container reads /v<i>/generation of every volume not yet
//          seen healthy, on every mount event of its own namespace (POLLPRI
//          on its /proc/self/mountinfo) and at least every
//          --probe-interval-us, and records CLOCK_MONOTONIC the first time a
//          volume reads the new generation;
//       6. heal latency = max over all N volumes of that time - t0. Also
//          recorded: the daemon's "mount healed" log lines (the host side:
//          log timestamp and since_event_us per target), the daemon's CPU
//          time for the cycle.
//     After the cycles: every host target and every container copy must read
//     the last generation with exactly one mount at its path, and the mount
//     counts (host namespace, every container namespace) must equal those
//     before the first cycle (no stacking).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/mountinfo.h"
#include "core/state_codec.h"
#include "bench_util.h"
#include "harness.h"

namespace ft = fh::test;
using namespace fh::bench;
using namespace std::chrono_literals;

namespace {

// ---- options ---------------------------------------------------------------

struct Options {
    std::vector<int> targets = {1, 100, 1000};
    int cycles = 20;
    int warmup = 1;
    int idle_seconds = 60;
    int idle_targets = -1;  // -1: the largest of `targets`
    int containers = 10;
    long probe_interval_us = 100000;
    int cycle_timeout_s = 300;
    std::string daemon;
    std::string keep_logs;
    std::string daemon_log_level = "info";  // debug shows the heal's steps with their times
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "heal_bench: %s\n"
                 "usage: heal_bench [--targets 1,100,1000] [--cycles 20] [--warmup 1] [--idle-seconds 60]\n"
                 "                  [--idle-targets N] [--containers 10] [--probe-interval-us 100000]\n"
                 "                  [--cycle-timeout 300] [--daemon PATH] [--keep-logs DIR]\n"
                 "                  [--daemon-log-level info]\n",
                 why.c_str());
    std::exit(64);
}

long parse_long(const std::string& flag, const std::string& v, long min) {
    return fh::bench::parse_long(flag, v, min, usage);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        std::string v;
        if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
            v = a.substr(eq + 1);
            a.resize(eq);
        } else if (a == "--help" || a == "-h") {
            std::printf("heal_bench: heal latency and idle CPU of fuse-healerd (see docs/PERFORMANCE.md)\n");
            std::printf("usage: heal_bench [--targets 1,100,1000] [--cycles 20] [--warmup 1] [--idle-seconds 60]\n"
                        "                  [--idle-targets N] [--containers 10] [--probe-interval-us 100000]\n"
                        "                  [--cycle-timeout 300] [--daemon PATH] [--keep-logs DIR]\n"
                        "                  [--daemon-log-level info]\n");
            std::exit(0);
        } else {
            static const char* known[] = {"--targets", "--cycles", "--warmup", "--idle-seconds", "--idle-targets",
                                          "--containers", "--probe-interval-us", "--cycle-timeout", "--daemon",
                                          "--keep-logs", "--daemon-log-level"};
            if (std::find(std::begin(known), std::end(known), a) == std::end(known)) usage("unknown option " + a);
            if (i + 1 >= argc) usage(a + " needs a value");
            v = argv[++i];
        }
        if (a == "--targets") {
            o.targets.clear();
            std::istringstream in(v);
            std::string part;
            while (std::getline(in, part, ',')) o.targets.push_back(static_cast<int>(parse_long(a, part, 1)));
            if (o.targets.empty()) usage("--targets is empty");
        } else if (a == "--cycles") o.cycles = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--warmup") o.warmup = static_cast<int>(parse_long(a, v, 0));
        else if (a == "--idle-seconds") o.idle_seconds = static_cast<int>(parse_long(a, v, 0));
        else if (a == "--idle-targets") o.idle_targets = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--containers") o.containers = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--probe-interval-us") o.probe_interval_us = parse_long(a, v, 100);
        else if (a == "--cycle-timeout") o.cycle_timeout_s = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--daemon") o.daemon = v;
        else if (a == "--keep-logs") o.keep_logs = v;
        else if (a == "--daemon-log-level") o.daemon_log_level = v;
        else usage("unknown option " + a);
    }
    if (o.idle_targets < 0) o.idle_targets = *std::max_element(o.targets.begin(), o.targets.end());
    return o;
}

// ---- small helpers -----------------------------------------------------------

int count_lines(const std::string& path) { return static_cast<int>(ft::read_mountinfo_lines(path).size()); }

// ---- emulated containers -------------------------------------------------------

// The child side. Never returns. Protocol on the pipes, one line each:
//   child -> parent: "ready" once set up;
//   parent -> child: "arm G"  -> child: "armed", then probes until every
//                     volume read generation G, then "done G <sweeps> <wakeups> <t_0> <t_1> ..."
//                     (CLOCK_MONOTONIC usec per volume, in the order given);
//                     a "stop" line while probing ends the probing early
//                     (unseen volumes report 0);
//   parent -> child: "quit" (or EOF) -> exit.
[[noreturn]] void container_child(const std::vector<std::string>& volumes, const std::vector<int>& indexes, bool slave,
                                  const std::string& root, int cmd_fd, int res_fd, long interval_us) {
    auto die = [&](const std::string& what) {
        std::string m = "heal_bench container: " + what + ": " + std::strerror(errno) + "\n";
        (void)!write(2, m.data(), m.size());
        _exit(1);
    };
    auto say = [&](const std::string& s) {
        const char* p = s.data();
        size_t left = s.size();
        while (left > 0) {
            ssize_t n = write(res_fd, p, left);
            if (n < 0) {
                if (errno == EINTR) continue;
                _exit(1);
            }
            p += n;
            left -= static_cast<size_t>(n);
        }
    };
    if (unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS)");
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) die("make / rslave");
    // Opened in the new namespace: POLLPRI on it reports every change of
    // this namespace's mount table (works after pivot_root too).
    int mi = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (mi < 0) die("open /proc/self/mountinfo");
    if (mount("fh-bench-container", root.c_str(), "tmpfs", 0, "mode=0755") != 0) die("mount tmpfs on " + root);
    std::vector<std::string> files;
    for (size_t k = 0; k < volumes.size(); k++) {
        std::string dir = root + "/v" + std::to_string(indexes[k]);
        if (mkdir(dir.c_str(), 0755) != 0) die("mkdir " + dir);
        if (mount(volumes[k].c_str(), dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
            die("rbind " + volumes[k] + " on " + dir);
        if (mount(nullptr, dir.c_str(), nullptr, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), nullptr) != 0)
            die("make " + dir + (slave ? " rslave" : " rprivate"));
        files.push_back("/v" + std::to_string(indexes[k]) + "/generation");
    }
    const std::string oldroot = root + "/oldroot";
    if (mkdir(oldroot.c_str(), 0755) != 0) die("mkdir " + oldroot);
    if (syscall(SYS_pivot_root, root.c_str(), oldroot.c_str()) != 0) die("pivot_root " + root);
    if (chdir("/") != 0) die("chdir /");
    if (umount2("/oldroot", MNT_DETACH) != 0) die("umount2 /oldroot");
    if (rmdir("/oldroot") != 0) die("rmdir /oldroot");
    say("ready\n");

    std::string inbuf;
    auto next_command = [&](bool block) -> std::optional<std::string> {
        for (;;) {
            auto nl = inbuf.find('\n');
            if (nl != std::string::npos) {
                std::string line = inbuf.substr(0, nl);
                inbuf.erase(0, nl + 1);
                return line;
            }
            if (!block) {
                pollfd p{cmd_fd, POLLIN, 0};
                if (poll(&p, 1, 0) <= 0) return std::nullopt;
            }
            char b[256];
            ssize_t n = read(cmd_fd, b, sizeof b);
            if (n == 0) _exit(0);
            if (n < 0) {
                if (errno == EINTR) continue;
                _exit(1);
            }
            inbuf.append(b, static_cast<size_t>(n));
        }
    };
    auto drain_mount_events = [&] {
        pollfd p{mi, POLLPRI, 0};
        while (poll(&p, 1, 0) > 0 && (p.revents & (POLLPRI | POLLERR))) {
        }
    };

    for (;;) {
        std::string cmd = *next_command(true);
        if (cmd == "quit") _exit(0);
        if (!starts_with(cmd, "arm ")) continue;
        const std::string expected = cmd.substr(4) + "\n";
        std::vector<std::int64_t> seen(files.size(), 0);
        std::vector<size_t> pending(files.size());
        std::iota(pending.begin(), pending.end(), 0);
        long sweeps = 0, wakeups = 0, timer_hits = 0;
        bool by_timer = false;  // the current sweep was not preceded by a mount event
        drain_mount_events();
        say("armed\n");
        auto sweep = [&] {
            ++sweeps;
            char b[64];
            for (size_t j = 0; j < pending.size();) {
                size_t k = pending[j];
                int fd = open(files[k].c_str(), O_RDONLY | O_CLOEXEC);
                bool ok = false;
                if (fd >= 0) {
                    ssize_t n = read(fd, b, sizeof b);
                    ok = n == static_cast<ssize_t>(expected.size()) && std::memcmp(b, expected.data(), n) == 0;
                    close(fd);
                }
                if (ok) {
                    timespec ts{};
                    clock_gettime(CLOCK_MONOTONIC, &ts);
                    seen[k] = static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
                    if (by_timer) ++timer_hits;
                    pending[j] = pending.back();
                    pending.pop_back();
                } else {
                    j++;
                }
            }
        };
        sweep();
        bool stopped = false;
        while (!pending.empty() && !stopped) {
            pollfd p[2] = {{mi, POLLPRI, 0}, {cmd_fd, POLLIN, 0}};
            timespec to{interval_us / 1000000, (interval_us % 1000000) * 1000};
            int n = ppoll(p, 2, &to, nullptr);
            if (n < 0 && errno != EINTR) die("ppoll");
            by_timer = !(n > 0 && (p[0].revents & (POLLPRI | POLLERR)));
            if (!by_timer) ++wakeups;
            if (n > 0 && (p[1].revents & (POLLIN | POLLHUP))) {
                while (auto c = next_command(false)) {
                    if (*c == "stop") stopped = true;
                    if (*c == "quit") _exit(0);
                }
            }
            sweep();
        }
        std::string out = "done " + cmd.substr(4) + " " + std::to_string(sweeps) + " " + std::to_string(wakeups) +
                          " " + std::to_string(timer_hits);
        for (auto t : seen) out += " " + std::to_string(t);
        say(out + "\n");
    }
}

class BenchContainer {
public:
    BenchContainer(ft::Sandbox& sb, int number, bool slave) : sb_(sb), number_(number), slave_(slave) {}
    ~BenchContainer() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            sb_.untrack(pid_);
        }
        if (cmd_fd_ >= 0) close(cmd_fd_);
        if (res_fd_ >= 0) close(res_fd_);
    }

    void add_volume(int index, const std::string& host_path) {
        indexes_.push_back(index);
        volumes_.push_back(host_path);
    }
    const std::vector<int>& indexes() const { return indexes_; }
    bool slave() const { return slave_; }
    pid_t pid() const { return pid_; }
    int res_fd() const { return res_fd_; }

    void start(long interval_us) {
        std::string root = sb_.runtime() + "/" + sb_.unique("bench-container-root");
        ft::make_dirs(root);
        int cmd[2], res[2];
        if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(res, O_CLOEXEC) != 0) fail_errno("pipe2");
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) fail_errno("fork");
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            // Keep only our two pipe ends (and 0..2): other containers' pipes
            // must not stay open here.
            int c = fcntl(cmd[0], F_DUPFD_CLOEXEC, 1000);
            int r = fcntl(res[1], F_DUPFD_CLOEXEC, 1000);
            int lo = std::min(c, r), hi = std::max(c, r);
            syscall(SYS_close_range, 3u, static_cast<unsigned>(lo - 1), 0u);
            if (hi - lo > 1) syscall(SYS_close_range, static_cast<unsigned>(lo + 1), static_cast<unsigned>(hi - 1), 0u);
            syscall(SYS_close_range, static_cast<unsigned>(hi + 1), ~0u, 0u);
            container_child(volumes_, indexes_, slave_, root, c, r, interval_us);
        }
        pid_ = pid;
        sb_.track(pid_);
        close(cmd[0]);
        close(res[1]);
        cmd_fd_ = cmd[1];
        res_fd_ = res[0];
        auto line = read_line(10s);
        if (!line || *line != "ready")
            fail("container " + std::to_string(number_) + " did not get ready (see stderr above)");
    }

    void send(const std::string& line) {
        std::string s = line + "\n";
        if (write(cmd_fd_, s.data(), s.size()) != static_cast<ssize_t>(s.size())) fail_errno("write to container");
    }

    // Returns the next line, or nullopt on timeout/EOF.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
        auto deadline = ft::Clock::now() + timeout;
        for (;;) {
            if (auto l = take_line()) return l;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - ft::Clock::now()).count();
            if (left <= 0) return std::nullopt;
            pollfd p{res_fd_, POLLIN, 0};
            int n = poll(&p, 1, static_cast<int>(left));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return std::nullopt;
            if (!fill()) return take_line();
        }
    }
    // Reads what is available; false on EOF.
    bool fill() {
        char b[65536];
        ssize_t n = read(res_fd_, b, sizeof b);
        if (n > 0) buf_.append(b, static_cast<size_t>(n));
        return n != 0;
    }
    std::optional<std::string> take_line() {
        auto nl = buf_.find('\n');
        if (nl == std::string::npos) return std::nullopt;
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
    }

    void quit() {
        if (pid_ <= 0) return;
        send("quit");
        int status = 0;
        auto deadline = ft::Clock::now() + std::chrono::seconds(5);  // not 5s: cppcheck 2.10 aborts on it
        while (waitpid(pid_, &status, WNOHANG) == 0) {
            if (ft::Clock::now() >= deadline) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(1ms);
        }
        sb_.untrack(pid_);
        pid_ = -1;
    }

    std::string mountinfo_path() const { return "/proc/" + std::to_string(pid_) + "/mountinfo"; }

private:
    ft::Sandbox& sb_;
    int number_;
    bool slave_;
    std::vector<int> indexes_;
    std::vector<std::string> volumes_;
    pid_t pid_ = -1;
    int cmd_fd_ = -1;
    int res_fd_ = -1;
    std::string buf_;
};

// ---- one run: N targets ------------------------------------------------------

struct CycleResult {
    int generation = 0;
    bool warmup = false;
    double all_ms = 0;          // t0 -> last container volume read the new generation
    double first_ms = 0;        // t0 -> first container volume read it
    double host_ms = 0;         // t0 -> last "mount healed" log line (daemon's host heal, log timestamp)
    double event_ms = 0;        // t0 -> the daemon's trigger (log time - since_event_us, earliest)
    double since_event_max_ms = 0;  // the daemon's own number for its last target
    double first_start_ms = 0;      // the daemon's event -> its first heal action (min start_after_event_us)
    double first_probe_ms = 0;      // the daemon's event -> its probe of the new source (min probe_after_event_us > 0)
    double daemon_cpu_s = 0;    // the daemon's utime+stime from t0 to the end of the cycle
    std::int64_t move_syscall_us = 0;  // how long mount(MS_MOVE) took
    long sweeps = 0, wakeups = 0;
    long timer_hits = 0;        // volumes first seen by a timer sweep, not right after a mount event
    double containers_cpu_s = 0;  // the emulated containers' CPU (their probing) during the cycle
    int ns_healed = 0;          // sum of namespaces_healed over the healed lines
    std::vector<double> per_target_ms;   // container view, one per target
    std::vector<double> since_event_ms;  // daemon view, one per target
};

struct RunResult {
    int targets = 0;
    int containers = 0;
    std::vector<CycleResult> cycles;
    int host_mounts_before = 0, host_mounts_after = 0;
    int ctr_mounts_before = 0, ctr_mounts_after = 0;
    int mountinfo_lines = 0;
    double mountinfo_parse_ms = 0;  // fh::read_mountinfo of the host table with N targets, mean
    double setup_s = 0;
    double run_s = 0;               // wall time of the whole run for this N
    std::string load_start, load_end;  // /proc/loadavg (1, 5, 15 min) at the start and end of the run
    double daemon_ready_s = 0;      // daemon start -> ready and origins learned
    int heal_failures = 0;          // "failed to heal" lines
    bool idle_measured = false;
    double idle_cpu_s = 0;
    double idle_wall_s = 0;
    double idle_max_1s = 0;
    int idle_busy_seconds = 0;      // 1-s intervals in which the daemon used CPU
    std::vector<double> idle_per_second;
};

class Run {
public:
    Run(const Options& o, int n) : o_(o), n_(n), c_(std::min(n, o.containers)) {}

    RunResult go() {
        RunResult r;
        r.targets = n_;
        r.containers = c_;
        auto t_setup = ft::Clock::now();
        r.load_start = loadavg();
        ft::Sandbox sb;
        progress("N=%d: sandbox %s, %d container(s)", n_, sb.root().c_str(), c_);

        // The staging area: a private tmpfs (a mount whose parent is shared
        // cannot be moved).
        const std::string staging_area = sb.path("staging");
        ft::make_dirs(staging_area);
        if (mount("fh-bench-staging", staging_area.c_str(), "tmpfs", 0, "mode=0755") != 0)
            fail_errno("mount tmpfs on " + staging_area);
        if (mount(nullptr, staging_area.c_str(), nullptr, MS_PRIVATE, nullptr) != 0)
            fail_errno("make " + staging_area + " private");
        const std::string staging = staging_area + "/fs";
        const std::string source = sb.runtime() + "/source";
        ft::make_dirs(source);

        ft::FuseDaemon fs(sb, staging);
        int gen = 1;
        fs.start(gen);
        move_source(staging, source);

        std::vector<std::string> targets;
        for (int i = 0; i < n_; i++) {
            char uid[32], handle[32];
            std::snprintf(uid, sizeof uid, "pod-%04d", i);
            std::snprintf(handle, sizeof handle, "vol-%04d", i);
            std::string t = sb.make_pod_volume(uid, "pv", handle);
            ft::csi_bind(source, "", t, true);
            targets.push_back(t);
        }

        std::vector<std::unique_ptr<BenchContainer>> ctrs;
        for (int k = 0; k < c_; k++) ctrs.push_back(std::make_unique<BenchContainer>(sb, k, k % 2 == 0));
        for (int i = 0; i < n_; i++) ctrs[i % c_]->add_volume(i, targets[i]);
        for (auto& c : ctrs) c->start(o_.probe_interval_us);
        r.setup_s = seconds_since(t_setup);

        // What every action of the daemon re-reads: the host table.
        {
            r.mountinfo_lines = count_lines(ft::kSelfMountinfo);
            const int reps = 20;
            auto t = ft::Clock::now();
            for (int i = 0; i < reps; i++) {
                auto table = fh::read_mountinfo(ft::kSelfMountinfo);
                if (!table) fail("read_mountinfo: " + table.error().message());
            }
            r.mountinfo_parse_ms = seconds_since(t) * 1000.0 / reps;
        }

        // The daemon. TZ=UTC so that its log timestamps parse with timegm.
        setenv("TZ", "UTC", 1);
        ft::Daemon d(sb, o_.daemon.empty() ? ft::daemon_path() : o_.daemon);
        auto t_daemon = ft::Clock::now();
        d.start("", {"--log-level", o_.daemon_log_level});
        LogTail log(d.log_path());
        if (!d.wait_for_log("ready: watching", 30s)) fail("fuse-healerd did not get ready:\n" + tail(d.log()));
        wait_origins(sb, d);
        wait_quiet(d.pid());
        r.daemon_ready_s = seconds_since(t_daemon);
        progress("N=%d: setup %.1f s, daemon ready with %d origins in %.2f s", n_, r.setup_s, n_, r.daemon_ready_s);
        scan_log(log, d);

        if (n_ == o_.idle_targets && o_.idle_seconds > 0) measure_idle(d, log, r);

        r.host_mounts_before = count_lines(ft::kSelfMountinfo);
        for (const auto& c : ctrs) r.ctr_mounts_before += count_lines(c->mountinfo_path());

        const int total = o_.warmup + o_.cycles;
        for (int i = 0; i < total; i++) {
            ++gen;
            CycleResult cr = cycle(sb, fs, d, log, ctrs, staging, source, gen);
            cr.warmup = i < o_.warmup;
            progress("N=%d cycle %d/%d%s: all healthy in containers %.2f ms (first %.2f), host %.2f ms, "
                     "move syscall %lld us, daemon event at %+.3f ms, daemon CPU %.2f s, containers CPU %.2f s, %ld sweeps/%ld wakeups/%ld seen by timer",
                     n_, i + 1, total, cr.warmup ? " (warm-up)" : "", cr.all_ms, cr.first_ms, cr.host_ms,
                     static_cast<long long>(cr.move_syscall_us), cr.event_ms, cr.daemon_cpu_s, cr.containers_cpu_s, cr.sweeps, cr.wakeups, cr.timer_hits);
            r.cycles.push_back(std::move(cr));
        }
        r.heal_failures = heal_failures_;

        // Final checks: every path healthy, one mount each, counts unchanged.
        for (const auto& t : targets) {
            auto s = ft::read_file(t + "/generation");
            if (!s || *s != std::to_string(gen) + "\n")
                fail("host target " + t + " does not read generation " + std::to_string(gen) + ": " +
                     (s ? *s : ft::errno_name(errno)));
            if (int m = ft::count_mounts_at(t); m != 1)
                fail("host target " + t + " has " + std::to_string(m) + " mounts (stacking)");
        }
        for (auto& c : ctrs) {
            auto lines = ft::read_mount_lines(c->mountinfo_path());
            for (int i : c->indexes()) {
                std::string mp = "/v" + std::to_string(i);
                int m = static_cast<int>(std::count_if(lines.begin(), lines.end(),
                                                       [&](const ft::MountLine& l) { return l.mountpoint == mp; }));
                if (m != 1)
                    fail("container pid " + std::to_string(c->pid()) + " has " + std::to_string(m) + " mounts at " + mp);
            }
        }
        r.host_mounts_after = count_lines(ft::kSelfMountinfo);
        for (const auto& c : ctrs) r.ctr_mounts_after += count_lines(c->mountinfo_path());
        if (r.host_mounts_after != r.host_mounts_before || r.ctr_mounts_after != r.ctr_mounts_before)
            fail("mount counts changed: host " + std::to_string(r.host_mounts_before) + " -> " +
                 std::to_string(r.host_mounts_after) + ", containers " + std::to_string(r.ctr_mounts_before) +
                 " -> " + std::to_string(r.ctr_mounts_after));

        for (auto& c : ctrs) c->quit();
        int rc = d.terminate();
        if (rc != 0) fail("fuse-healerd exited with " + std::to_string(rc) + " on SIGTERM:\n" + tail(d.log()));
        keep_log(d);
        fs.kill9();
        r.run_s = seconds_since(t_setup);
        r.load_end = loadavg();
        return r;
    }

private:
    static double seconds_since(ft::Clock::time_point t) {
        return std::chrono::duration<double>(ft::Clock::now() - t).count();
    }
    static std::string tail(const std::string& s, size_t n = 4000) {
        return s.size() <= n ? s : "..." + s.substr(s.size() - n);
    }

    void keep_log(const ft::Daemon& d) {
        if (o_.keep_logs.empty()) return;
        ft::make_dirs(o_.keep_logs);
        std::string dst = o_.keep_logs + "/fuse-healerd-" + std::to_string(n_) + ".log";
        std::ifstream in(d.log_path(), std::ios::binary);
        std::ofstream out(dst, std::ios::binary | std::ios::trunc);
        out << in.rdbuf();
    }

    // Moves the staging mount to the source path; returns CLOCK_MONOTONIC
    // and CLOCK_REALTIME right after the syscall returned, and how long the
    // syscall took. The move wakes fuse-healerd, which on a busy machine
    // could preempt us between the return and the clock read and make t0
    // late: around the syscall this thread runs SCHED_FIFO, which no normal
    // task preempts (when the kernel refuses it, the bench says so once).
    struct MoveTimes {
        std::int64_t mono = 0, realtime = 0, syscall_us = 0;
    };
    static MoveTimes move_source(const std::string& from, const std::string& to) {
        static bool warned = false;
        sched_param fifo{};
        fifo.sched_priority = 1;
        const bool rt = sched_setscheduler(0, SCHED_FIFO, &fifo) == 0;
        if (!rt && !warned) {
            progress("note: SCHED_FIFO refused (%s): t0 may be late when the machine is busy", std::strerror(errno));
            warned = true;
        }
        MoveTimes t;
        const std::int64_t before = ft::monotonic_usec();
        const int rc = mount(from.c_str(), to.c_str(), nullptr, MS_MOVE, nullptr);
        const int err = errno;
        t.mono = ft::monotonic_usec();
        t.realtime = realtime_usec();
        t.syscall_us = t.mono - before;
        if (rt) {
            sched_param other{};
            sched_setscheduler(0, SCHED_OTHER, &other);
        }
        if (rc != 0) {
            errno = err;
            fail_errno("mount --move " + from + " " + to);
        }
        return t;
    }

    // Waits until the daemon's state file holds an origin for every target.
    void wait_origins(ft::Sandbox& sb, ft::Daemon& d) {
        const std::string path = sb.state() + "/origins.json";
        size_t have = 0;
        bool ok = ft::wait_until(
            [&] {
                if (d.poll_exit()) fail("fuse-healerd exited during start-up:\n" + tail(d.log()));
                auto text = ft::read_file(path);
                if (!text) return false;
                auto decoded = fh::decode_origins(*text);
                if (!decoded) return false;
                have = decoded->size();
                return have >= static_cast<size_t>(n_);
            },
            60s, 10ms);
        if (!ok)
            fail("fuse-healerd learned " + std::to_string(have) + " of " + std::to_string(n_) + " origins in 60 s:\n" +
                 tail(d.log()));
    }

    // Reads new log lines; counts broken/healed/failures into the cycle state.
    void scan_log(LogTail& log, ft::Daemon& d) {
        for (auto& l : log.read_new()) {
            if (starts_with(l.text, "mount broken:")) ++broken_;
            else if (starts_with(l.text, "mount healed:")) healed_.push_back(std::move(l));
            else if (starts_with(l.text, "failed to heal")) {
                ++heal_failures_;
                if (heal_failure_samples_.size() < 5) heal_failure_samples_.push_back(l.text);
            } else if (l.level == "error" || l.level == "critical") {
                if (heal_failure_samples_.size() < 5) heal_failure_samples_.push_back(l.text);
            }
        }
        if (auto rc = d.poll_exit()) fail("fuse-healerd exited with " + std::to_string(*rc) + ":\n" + tail(d.log()));
    }

    void measure_idle(ft::Daemon& d, LogTail& log, RunResult& r) {
        progress("N=%d: measuring idle CPU for %d s (no mount events; the safety reconcile runs every 30 s)", n_,
                 o_.idle_seconds);
        const pid_t pid = d.pid();
        const int lines_before = count_lines(ft::kSelfMountinfo);
        auto t0 = ft::Clock::now();
        double c0 = process_cpu_seconds(pid), prev = c0;
        for (int s = 1; s <= o_.idle_seconds; s++) {
            std::this_thread::sleep_until(t0 + std::chrono::seconds(s));
            double c = process_cpu_seconds(pid);
            r.idle_per_second.push_back(c - prev);
            prev = c;
        }
        r.idle_wall_s = seconds_since(t0);
        r.idle_cpu_s = prev - c0;
        r.idle_max_1s = max_of(r.idle_per_second);
        r.idle_busy_seconds =
            static_cast<int>(std::count_if(r.idle_per_second.begin(), r.idle_per_second.end(), [](double x) { return x > 0; }));
        r.idle_measured = true;
        scan_log(log, d);
        if (count_lines(ft::kSelfMountinfo) != lines_before) fail("the mount table changed during the idle measurement");
        progress("N=%d: idle: %.2f s CPU in %.1f s (%.3f%% of one core); busiest second %.2f s", n_, r.idle_cpu_s,
                 r.idle_wall_s, 100.0 * r.idle_cpu_s / r.idle_wall_s, r.idle_max_1s);
    }

    CycleResult cycle(ft::Sandbox& sb, ft::FuseDaemon& fs, ft::Daemon& d, LogTail& log,
                      std::vector<std::unique_ptr<BenchContainer>>& ctrs, const std::string& staging,
                      const std::string& source, int gen) {
        (void)sb;
        CycleResult cr;
        cr.generation = gen;
        const auto timeout = std::chrono::seconds(o_.cycle_timeout_s);

        // 1. The outage.
        scan_log(log, d);
        broken_ = 0;
        healed_.clear();
        fs.kill9();
        if (int e = ft::lazy_umount(source); e != 0) fail("umount -l " + source + ": " + ft::errno_name(e));
        auto deadline = ft::Clock::now() + timeout;
        while (broken_ < n_) {
            if (ft::Clock::now() >= deadline)
                fail("generation " + std::to_string(gen) + ": fuse-healerd logged " + std::to_string(broken_) + " of " +
                     std::to_string(n_) + " \"mount broken\" lines:\n" + tail(d.log()));
            std::this_thread::sleep_for(2ms);
            scan_log(log, d);
        }

        // 2. The next generation, at the staging path.
        fs.start(gen);
        wait_quiet(d.pid());
        scan_log(log, d);
        if (!healed_.empty()) fail("fuse-healerd healed before the new source was at its path");

        // 3. Arm the containers.
        for (auto& c : ctrs) c->send("arm " + std::to_string(gen));
        for (auto& c : ctrs) {
            auto l = c->read_line(10s);
            if (!l || *l != "armed") fail("container did not arm: " + l.value_or("(timeout)"));
        }

        // 4. The new source appears.
        const double cpu0 = process_cpu_seconds(d.pid());
        double ctr_cpu0 = 0;
        for (const auto& c : ctrs) ctr_cpu0 += process_cpu_seconds(c->pid());
        const MoveTimes moved = move_source(staging, source);
        const std::int64_t t0 = moved.mono, t0_rt = moved.realtime;
        cr.move_syscall_us = moved.syscall_us;

        // 5. Wait for every container and for N healed lines.
        std::vector<std::int64_t> seen(n_, 0);
        size_t done = 0;
        std::vector<bool> is_done(ctrs.size(), false);
        deadline = ft::Clock::now() + timeout;
        while (done < ctrs.size()) {
            std::vector<pollfd> p;
            for (const auto& c : ctrs) p.push_back({c->res_fd(), POLLIN, 0});
            int n = poll(p.data(), p.size(), 50);
            if (n < 0 && errno != EINTR) fail_errno("poll");
            for (size_t k = 0; k < ctrs.size(); k++) {
                if (is_done[k] || !(p[k].revents & (POLLIN | POLLHUP))) continue;
                if (!ctrs[k]->fill()) fail("container " + std::to_string(k) + " exited");
                if (auto l = ctrs[k]->take_line()) {
                    std::istringstream in(*l);
                    std::string word;
                    int g = 0;
                    long sweeps = 0, wakeups = 0, timer_hits = 0;
                    in >> word >> g >> sweeps >> wakeups >> timer_hits;
                    if (word != "done" || g != gen) fail("container " + std::to_string(k) + " said: " + *l);
                    cr.sweeps += sweeps;
                    cr.wakeups += wakeups;
                    cr.timer_hits += timer_hits;
                    for (int i : ctrs[k]->indexes()) in >> seen[i];
                    is_done[k] = true;
                    ++done;
                }
            }
            scan_log(log, d);
            if (ft::Clock::now() >= deadline) {
                for (auto& c : ctrs) c->send("stop");
                int unseen = 0;
                std::string which;
                for (size_t k = 0; k < ctrs.size(); k++)
                    if (!is_done[k]) {
                        auto l = ctrs[k]->read_line(2s);
                        std::istringstream in(l.value_or(""));
                        std::string w;
                        long g, s1, s2, s3;
                        in >> w >> g >> s1 >> s2 >> s3;
                        for (int i : ctrs[k]->indexes()) {
                            std::int64_t t = 0;
                            in >> t;
                            if (t == 0) {
                                ++unseen;
                                if (which.size() < 600) which += " v" + std::to_string(i);
                            }
                        }
                    }
                fail("generation " + std::to_string(gen) + ": after " + std::to_string(o_.cycle_timeout_s) + " s, " +
                     std::to_string(unseen) + " container volume(s) still do not read the new generation:" + which +
                     "; fuse-healerd logged " + std::to_string(healed_.size()) + " of " + std::to_string(n_) +
                     " \"mount healed\" lines, " + std::to_string(heal_failures_) + " heal failures so far:\n" +
                     tail(d.log()));
            }
        }
        while (static_cast<int>(healed_.size()) < n_) {
            if (ft::Clock::now() >= deadline)
                fail("generation " + std::to_string(gen) + ": every container reads it, but fuse-healerd logged only " +
                     std::to_string(healed_.size()) + " of " + std::to_string(n_) + " \"mount healed\" lines:\n" +
                     tail(d.log()));
            std::this_thread::sleep_for(1ms);
            scan_log(log, d);
        }
        wait_quiet(d.pid());
        cr.daemon_cpu_s = process_cpu_seconds(d.pid()) - cpu0;
        for (const auto& c : ctrs) cr.containers_cpu_s += process_cpu_seconds(c->pid());
        cr.containers_cpu_s -= ctr_cpu0;
        scan_log(log, d);
        if (static_cast<int>(healed_.size()) != n_)
            fail("generation " + std::to_string(gen) + ": " + std::to_string(healed_.size()) + " healed lines for " +
                 std::to_string(n_) + " targets");

        // 6. The numbers.
        std::int64_t first = INT64_MAX, last = 0;
        for (auto t : seen) {
            if (t <= 0) fail("a volume was never seen healthy");
            first = std::min(first, t);
            last = std::max(last, t);
            cr.per_target_ms.push_back(static_cast<double>(t - t0) / 1000.0);
        }
        cr.all_ms = static_cast<double>(last - t0) / 1000.0;
        cr.first_ms = static_cast<double>(first - t0) / 1000.0;
        std::int64_t host_last = 0, trigger_rt = INT64_MAX, since_max = 0, first_start = INT64_MAX,
                     first_probe = INT64_MAX;
        for (const auto& l : healed_) {
            first_start = std::min<std::int64_t>(first_start, std::atoll(field(l.text, "start_after_event_us").c_str()));
            // 0 for the targets whose source another target's heal probed.
            if (std::int64_t p = std::atoll(field(l.text, "probe_after_event_us").c_str()); p > 0)
                first_probe = std::min(first_probe, p);
            std::int64_t since = std::atoll(field(l.text, "since_event_us").c_str());
            host_last = std::max(host_last, l.realtime_us);
            trigger_rt = std::min(trigger_rt, l.realtime_us - since);
            since_max = std::max(since_max, since);
            cr.since_event_ms.push_back(static_cast<double>(since) / 1000.0);
            cr.ns_healed += std::atoi(field(l.text, "namespaces_healed").c_str());
        }
        cr.host_ms = static_cast<double>(host_last - t0_rt) / 1000.0;
        cr.event_ms = static_cast<double>(trigger_rt - t0_rt) / 1000.0;
        cr.since_event_max_ms = static_cast<double>(since_max) / 1000.0;
        cr.first_start_ms = static_cast<double>(first_start) / 1000.0;
        cr.first_probe_ms = first_probe == INT64_MAX ? NAN : static_cast<double>(first_probe) / 1000.0;
        if (cr.ns_healed != n_)
            progress("note: generation %d: namespaces_healed adds up to %d for %d targets", gen, cr.ns_healed, n_);
        return cr;
    }

    const Options& o_;
    int n_;
    int c_;
    int broken_ = 0;
    std::vector<LogLine> healed_;
    int heal_failures_ = 0;
    std::vector<std::string> heal_failure_samples_;
};

// ---- report ------------------------------------------------------------------

void report(const Options& o, const std::vector<RunResult>& runs, const std::string& machine) {
    auto measured = [](const RunResult& r, auto get) {
        std::vector<double> v;
        for (const auto& c : r.cycles)
            if (!c.warmup) v.push_back(get(c));
        return v;
    };
    std::printf("\nfuse-healerd heal benchmark (%s)\n", machine.c_str());
    std::printf("cycles per N: %d measured (+%d warm-up, not counted); percentiles are nearest-rank\n\n", o.cycles,
                o.warmup);
    std::printf("Heal latency per cycle, ms: from the new source's mount (MS_MOVE) returning to every target reading\n"
                "the new generation inside the container namespaces (max over targets); \"host\": to the daemon's\n"
                "last \"mount healed\" log line (its host mounts, healed after their container copies):\n\n");
    std::printf("| targets | containers | cycles | p50 ms | p99 ms | max ms | host p50 ms | host max ms | "
                "daemon CPU s/cycle (p50) | probe CPU s/cycle (p50) |\n");
    std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (const auto& r : runs) {
        auto all = measured(r, [](const CycleResult& c) { return c.all_ms; });
        auto host = measured(r, [](const CycleResult& c) { return c.host_ms; });
        auto cpu = measured(r, [](const CycleResult& c) { return c.daemon_cpu_s; });
        auto pcpu = measured(r, [](const CycleResult& c) { return c.containers_cpu_s; });
        std::printf("| %d | %d | %zu | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r.targets, r.containers,
                    all.size(), percentile(all, 50), percentile(all, 99), max_of(all), percentile(host, 50),
                    max_of(host), percentile(cpu, 50), percentile(pcpu, 50));
    }
    std::printf("\nPer target, every target of every measured cycle, ms: container view (first read of the new\n"
                "generation in the container), the daemon's since_event_us (its mount event -> that target's\n"
                "host mount healed), the delay from the move to the daemon's event (log time - since_event_us),\n"
                "and per cycle the delay from that event to the heal's first step, the probe of the new source\n"
                "(probe_after_event_us), and to its first mount action (start_after_event_us):\n\n");
    std::printf("| targets | samples | container p50 | container p99 | container max | since_event p50 | "
                "since_event p99 | since_event max | event delay p50 | event delay min | probe start p50 | "
                "probe start max | first action p50 | first action max | move syscall max us | seen by fallback timer |\n");
    std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (const auto& r : runs) {
        std::vector<double> per, since;
        long timer_hits = 0;
        for (const auto& c : r.cycles)
            if (!c.warmup) {
                per.insert(per.end(), c.per_target_ms.begin(), c.per_target_ms.end());
                since.insert(since.end(), c.since_event_ms.begin(), c.since_event_ms.end());
                timer_hits += c.timer_hits;
            }
        auto ev = measured(r, [](const CycleResult& c) { return c.event_ms; });
        auto sc = measured(r, [](const CycleResult& c) { return static_cast<double>(c.move_syscall_us); });
        auto st = measured(r, [](const CycleResult& c) { return c.first_start_ms; });
        auto pr = measured(r, [](const CycleResult& c) { return c.first_probe_ms; });
        std::printf("| %d | %zu | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | "
                    "%.0f | %ld |\n",
                    r.targets, per.size(), percentile(per, 50), percentile(per, 99), max_of(per),
                    percentile(since, 50), percentile(since, 99), max_of(since), percentile(ev, 50),
                    ev.empty() ? NAN : *std::min_element(ev.begin(), ev.end()), percentile(pr, 50), max_of(pr),
                    percentile(st, 50), max_of(st), max_of(sc), timer_hits);
    }
    std::printf("\nSetup, mount counts (before the first cycle / after the last) and load:\n\n");
    std::printf("| targets | setup s | daemon ready s | run s | host mountinfo lines | read_mountinfo ms | host mounts | "
                "container mounts | heal failures | loadavg start | loadavg end |\n");
    std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|--|\n");
    for (const auto& r : runs)
        std::printf("| %d | %.1f | %.2f | %.0f | %d | %.2f | %d / %d | %d / %d | %d | %s | %s |\n", r.targets,
                    r.setup_s, r.daemon_ready_s, r.run_s, r.mountinfo_lines, r.mountinfo_parse_ms,
                    r.host_mounts_before, r.host_mounts_after, r.ctr_mounts_before, r.ctr_mounts_after,
                    r.heal_failures, r.load_start.c_str(), r.load_end.c_str());
    for (const auto& r : runs) {
        if (!r.idle_measured) continue;
        std::printf("\nIdle CPU with %d healthy targets (%d containers), no mount events, %.1f s:\n", r.targets,
                    r.containers, r.idle_wall_s);
        std::printf("  fuse-healerd utime+stime: %.2f s = %.3f%% of one core; busiest 1-s interval %.2f s; "
                    "%d of %zu seconds with any CPU (clock tick %ld Hz)\n",
                    r.idle_cpu_s, 100.0 * r.idle_cpu_s / r.idle_wall_s, r.idle_max_1s, r.idle_busy_seconds,
                    r.idle_per_second.size(), sysconf(_SC_CLK_TCK));
        std::string per;
        for (size_t i = 0; i < r.idle_per_second.size(); i++)
            if (r.idle_per_second[i] > 0)
                per += " " + std::to_string(i + 1) + "s:" +
                       std::to_string(static_cast<int>(std::lround(r.idle_per_second[i] * 1000))) + "ms";
        std::printf("  CPU by second (non-zero only):%s\n", per.empty() ? " none" : per.c_str());
    }
    (void)std::fflush(stdout);  // nothing to do if stdout is gone
}


}  // namespace

int main(int argc, char** argv) {
    set_progress_name("heal_bench");
    Options o = parse_options(argc, argv);
    if (geteuid() != 0) {
        std::fprintf(stderr,
                     "heal_bench: must run as root: it mounts FUSE filesystems and creates mount namespaces "
                     "(everything stays inside a private mount namespace of its own)\n");
        return 77;
    }
    const std::string daemon = o.daemon.empty() ? ft::daemon_path() : o.daemon;
    std::string why;
    if (!ft::Daemon::available(&why, daemon)) {
        std::fprintf(stderr, "heal_bench: %s\n", why.c_str());
        return 1;
    }
    if (ft::testfs_path().empty()) {
        std::fprintf(stderr, "heal_bench: fh_testfs was not built\n");
        return 1;
    }
    // The machine's own table, for the record (we never touch it).
    const int machine_mounts_before = count_lines("/proc/1/mountinfo");
    if (!ft::enter_private_mount_namespace(&why)) {
        std::fprintf(stderr, "heal_bench: cannot enter a private mount namespace: %s\n", why.c_str());
        return 1;
    }
    const std::string machine = machine_description();
    progress("%s; daemon %s", machine.c_str(), daemon.c_str());
    if (auto la = ft::read_file("/proc/loadavg")) progress("load average at start: %s", la->substr(0, la->find('\n')).c_str());

    std::vector<RunResult> runs;
    int rc = 0;
    auto t_all = ft::Clock::now();
    try {
        for (int n : o.targets) runs.push_back(Run(o, n).go());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\nheal_bench: FAILED: %s\n", e.what());
        rc = 1;
    }
    report(o, runs, machine);
    const int machine_mounts_after = count_lines("/proc/1/mountinfo");
    std::printf("\nmachine mount table (/proc/1/mountinfo): %d mounts before, %d after; total run time %.0f s\n",
                machine_mounts_before, machine_mounts_after,
                std::chrono::duration<double>(ft::Clock::now() - t_all).count());
    if (auto la = ft::read_file("/proc/loadavg")) progress("load average at end: %s", la->substr(0, la->find('\n')).c_str());
    return rc;
}
