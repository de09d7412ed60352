// scale_bench: fuse-healerd on one node at scale.
//
//   scale_bench [--pods 1000] [--targets-per-pod 2] [--sources 10] [--mounts 10000 | --filler N]
//               [--events 100] [--idle-seconds 60] [--cycles 20] [--warmup 1]
//               [--supervisor-cycles 20] [--detect-timeout-ms 2000] [--churn-rate 100]
//               [--churn-seconds 30] [--probe-interval-us 100000] [--cycle-timeout 120]
//               [--settle-seconds 3] [--daemon PATH] [--daemon-args "ARGS"] [--keep-logs DIR]
//
// Must run as root. Everything happens inside a private mount namespace that
// this process creates (fh::test::enter_private_mount_namespace), in a tmpfs
// sandbox; nothing reaches the machine's mount table, and every child dies
// with the process (PR_SET_PDEATHSIG), so the namespace and every mount in it
// go away on any exit: normal, error, Ctrl-C (SIGINT/SIGTERM/SIGHUP unwind
// and clean up; a second signal exits at once) or SIGKILL.
//
// The node (defaults):
//   * 10 FUSE sources: fh_testfs at <sandbox>/runtime/src-K, each run by a
//     supervisor that restarts it like a container entrypoint does: kill -9
//     (when still running), umount -l of the stale mount, start again at the
//     same path;
//   * 1,000 pods with 2 CSI volumes each: 2,000 targets
//     <sandbox>/kubelet/pods/pod-NNNN/volumes/kubernetes.io~csi/pv-J/mount,
//     each a read-only bind of source (2*pod + J) % 10, so 200 per source;
//   * one container per pod: a process in its own mount namespace holding
//     only that pod's volumes (rbind of each target at /vJ, then rslave for
//     even pods (HostToContainer) or rprivate for odd ones, then pivot_root
//     to a small tmpfs and umount -l of the old root, as runc does). Each
//     container namespace holds 3 mounts, not a copy of the host table, so
//     1,000 namespaces cost little memory. The containers do nothing but
//     sleep; the bench probes their view through /proc/<pid>/root/vJ, woken
//     by POLLPRI on each container's /proc/<pid>/mountinfo;
//   * filler mounts outside the kubelet root (<sandbox>/filler: pairs of a
//     tmpfs and a bind of it, like containerd's shm mounts) until the
//     bench's table (the one fuse-healerd sees) has --mounts lines;
//   * fuse-healerd from the build, with root_dir = <sandbox>/kubelet, state
//     and control socket in the sandbox, [metrics] listen = "",
//     --log-level info, and --daemon-args appended.
//
// Then, in order (a count of 0 skips a phase):
//   1. unrelated mount events: --events times a mount or umount of a tmpfs
//      at <sandbox>/events/e, each waited out (the daemon quiet again), the
//      daemon's CPU (its CPU-time clock: every thread, ns) divided by the
//      number of events;
//   2. idle: the daemon's CPU over --idle-seconds, VmRSS and VmHWM;
//   3. heal cycles with detection (--warmup + --cycles, the sources in turn):
//      kill -9 of the source's FUSE daemon; the time until the daemon logs
//      the outage start for that source (see outage_start_of(); not
//      detected within --detect-timeout-ms is reported as such); then
//      umount -l; wait until every target of the source is logged broken and
//      the daemon is quiet; start the next generation at the source path.
//      t0 = the moment the new mount appeared (see MountWatcher). Heal
//      latency: t0 -> each container copy of the source's targets reads the
//      new generation (first and all), plus the daemon's own heal fields;
//   4. supervisor cycles (--supervisor-cycles): kill -9, umount -l and start
//      again at once, as an entrypoint loop does: the heal then includes the
//      daemon's handling of the outage (the umount -l is its first news of
//      it today);
//   5. churn: --churn-rate mount+umount pairs per second of a tmpfs at
//      <sandbox>/events/c for --churn-seconds; the daemon's CPU share.
//   After the cycles: every host target and container copy reads its
//   source's last generation with exactly one mount at its path, and the
//   mount counts equal those before the cycles (nothing stacked).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "core/state_codec.h"
#include "harness.h"

namespace ft = fh::test;
using namespace fh::bench;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// ---- options ---------------------------------------------------------------

struct Options {
    int pods = 1000;
    int targets_per_pod = 2;
    int sources = 10;
    int mounts = 10000;  // lines of the table fuse-healerd sees, reached with filler mounts
    int filler = -1;     // explicit number of filler mounts (overrides --mounts)
    int events = 100;
    int idle_seconds = 60;
    int cycles = 20;
    int warmup = 1;
    int supervisor_cycles = 20;
    int detect_timeout_ms = 2000;
    int churn_rate = 100;
    int churn_seconds = 30;
    long probe_interval_us = 100000;
    int cycle_timeout_s = 120;
    int settle_seconds = 3;  // the last RSS sample, this long after the last phase
    std::string daemon;
    std::vector<std::string> daemon_args;
    std::string daemon_args_text;
    std::string keep_logs;
};

const char* kUsage =
    "usage: scale_bench [--pods 1000] [--targets-per-pod 2] [--sources 10] [--mounts 10000 | --filler N]\n"
    "                   [--events 100] [--idle-seconds 60] [--cycles 20] [--warmup 1]\n"
    "                   [--supervisor-cycles 20] [--detect-timeout-ms 2000] [--churn-rate 100]\n"
    "                   [--churn-seconds 30] [--probe-interval-us 100000] [--cycle-timeout 120]\n"
    "                   [--settle-seconds 3] [--daemon PATH] [--daemon-args \"ARGS\"] [--keep-logs DIR]\n"
    "A count of 0 skips its phase (--events, --idle-seconds, --cycles, --supervisor-cycles, --churn-seconds).\n"
    "Quick run: scale_bench --pods 100 --filler 1000 --cycles 3 --supervisor-cycles 3 --events 20 \\\n"
    "                       --idle-seconds 5 --churn-seconds 5\n";

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr, "scale_bench: %s\n%s", why.c_str(), kUsage);
    std::exit(64);
}

long parse_long(const std::string& flag, const std::string& v, long min) {
    return fh::bench::parse_long(flag, v, min, usage);
}

Options parse_options(int argc, char** argv) {
    Options o;
    static const char* known[] = {"--pods",           "--targets-per-pod", "--sources",          "--mounts",
                                  "--filler",         "--events",          "--idle-seconds",     "--cycles",
                                  "--warmup",         "--supervisor-cycles", "--detect-timeout-ms", "--churn-rate",
                                  "--churn-seconds",  "--probe-interval-us", "--cycle-timeout",  "--settle-seconds",
                                  "--daemon",         "--daemon-args",     "--keep-logs"};
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        std::string v;
        if (a == "--help" || a == "-h") {
            std::printf("scale_bench: fuse-healerd at 1,000 pods and 10,000 mounts (see docs/PERFORMANCE.md)\n%s",
                        kUsage);
            std::exit(0);
        }
        if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
            v = a.substr(eq + 1);
            a.resize(eq);
        } else {
            if (std::find(std::begin(known), std::end(known), a) == std::end(known)) usage("unknown option " + a);
            if (i + 1 >= argc) usage(a + " needs a value");
            v = argv[++i];
        }
        auto num = [&](long min) { return static_cast<int>(parse_long(a, v, min)); };
        if (a == "--pods") o.pods = num(1);
        else if (a == "--targets-per-pod") o.targets_per_pod = num(1);
        else if (a == "--sources") o.sources = num(1);
        else if (a == "--mounts") o.mounts = num(0);
        else if (a == "--filler") o.filler = num(0);
        else if (a == "--events") o.events = num(0);
        else if (a == "--idle-seconds") o.idle_seconds = num(0);
        else if (a == "--cycles") o.cycles = num(0);
        else if (a == "--warmup") o.warmup = num(0);
        else if (a == "--supervisor-cycles") o.supervisor_cycles = num(0);
        else if (a == "--detect-timeout-ms") o.detect_timeout_ms = num(1);
        else if (a == "--churn-rate") o.churn_rate = num(1);
        else if (a == "--churn-seconds") o.churn_seconds = num(0);
        else if (a == "--probe-interval-us") o.probe_interval_us = parse_long(a, v, 1000);
        else if (a == "--cycle-timeout") o.cycle_timeout_s = num(1);
        else if (a == "--settle-seconds") o.settle_seconds = num(0);
        else if (a == "--daemon") o.daemon = v;
        else if (a == "--daemon-args") {
            o.daemon_args_text = v;
            std::istringstream in(v);
            std::string w;
            while (in >> w) o.daemon_args.push_back(w);
        } else if (a == "--keep-logs") o.keep_logs = v;
        else usage("unknown option " + a);
    }
    if (o.pods * o.targets_per_pod < o.sources) usage("fewer targets than sources");
    return o;
}

// ---- signals: Ctrl-C unwinds (destructors clean up), a second one leaves ----

std::atomic<int> g_signal{0};

void on_signal(int sig) {
    // The namespace, its mounts and every child (PR_SET_PDEATHSIG) go with
    // the process, so leaving at once is safe; it only skips the sandbox's
    // rmdir.
    if (g_signal.exchange(sig) != 0) _exit(128 + sig);
}

void check_interrupt() {
    if (int s = g_signal.load()) fail(std::string("interrupted by ") + strsignal(s));
}

void nap(std::chrono::microseconds d) {
    std::this_thread::sleep_for(d);
    check_interrupt();
}

// ---- small helpers ------------------------------------------------------------

constexpr unsigned kStatxMntIdUnique = 0x4000;  // STATX_MNT_ID_UNIQUE (6.8), newer than Debian 12's headers

// Returns the id of the mount at `path` (the unique 64-bit id where the
// kernel has it, else the reusable one); never sends a FUSE request
// (AT_STATX_DONT_SYNC: a FUSE root answers from its inode).
std::optional<std::uint64_t> mount_id(const std::string& path) {
    struct statx sx {};
    if (statx(AT_FDCWD, path.c_str(), AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, kStatxMntIdUnique | STATX_MNT_ID, &sx) !=
        0)
        return std::nullopt;
    if (!(sx.stx_mask & (kStatxMntIdUnique | STATX_MNT_ID))) return std::nullopt;
    return sx.stx_mnt_id;
}

int count_lines(const std::string& path) { return static_cast<int>(ft::read_mountinfo_lines(path).size()); }

double ms(std::int64_t us) { return static_cast<double>(us) / 1000.0; }
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt(const char* f, double v) {
    if (std::isnan(v)) return "-";
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

std::string tail(const std::string& s, size_t n = 4000) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

// ---- the outage-start log line ----------------------------------------------

// The one place that knows how fuse-healerd says "this source's FUSE daemon
// is dead". Returns how `l` says so for the source at `source_path` whose
// daemon had PID `fuse_pid`, or nullopt when it does not.
//
// Today (main before pidfd death detection) the first word of an outage is
// one "mount broken: target=... source=<source path> ..." line per target,
// logged at the first reconcile after the death: the next mount event (here
// the supervisor's umount -l) or the safety reconcile (every 30 s).
//
// Death detection by pidfd (issue 4, section 1) logs the outage start at once,
// with the serving command's name and PID:
// "FUSE server died: connection=N pid=N comm=X ... detection_latency_us=N".
// Any line with one of the words of death_words() that names the PID (pid=N,
// pid N, [N], (N)) or the source path counts.
const std::regex& death_words() {
    static const std::regex re(R"(\b(outage|died|dead|death|exited|gone)\b)", std::regex::icase);
    return re;
}

struct OutageStart {
    // cppcheck-suppress unusedStructMember ; false positive: read through std::optional (o->how)
    std::string how;                   // the line's text up to its first ':'
    double daemon_latency_ms = NAN;    // the line's own detection_latency_us, when it has one
};

std::optional<OutageStart> outage_start_of(const LogLine& l, const std::string& source_path, pid_t fuse_pid) {
    if (starts_with(l.text, "mount broken:")) {
        if (field(l.text, "source") == source_path) return OutageStart{"mount broken"};
        return std::nullopt;
    }
    // "... exited but connection N is alive: another process holds ..." is no outage.
    if (!std::regex_search(l.text, death_words()) || l.text.find(" is alive") != std::string::npos) return std::nullopt;
    const std::string pid = std::to_string(fuse_pid);
    const std::regex names_pid("(pid[= ]" + pid + R"(\b|\[)" + pid + R"(\]|\()" + pid + R"(\)))");
    const bool names_source = l.text.find(source_path + " ") != std::string::npos ||
                              l.text.find("=" + source_path) != std::string::npos ||
                              (l.text.size() >= source_path.size() &&
                               l.text.compare(l.text.size() - source_path.size(), source_path.size(), source_path) == 0);
    if (!std::regex_search(l.text, names_pid) && !names_source) return std::nullopt;
    OutageStart o{l.text.substr(0, l.text.find(':'))};
    if (std::string v = field(l.text, "detection_latency_us"); !v.empty()) o.daemon_latency_ms = std::atof(v.c_str()) / 1000.0;
    return o;
}

// ---- the daemon's start-up line: which mechanisms it uses ----------------------

// Returns the value of "key=" in the "fuse-healer ... starting: ..." line; a
// value runs to the next " word=" / " two words=" or " kernel:" ("" when absent).
std::string startup_value(const std::string& line, const std::string& key) {
    auto p = line.find(" " + key + "=");
    if (p == std::string::npos) return "";
    p += key.size() + 2;
    static const std::regex next(R"( [a-z_]+( [a-z_]+)?=| kernel:)");
    std::smatch m;
    std::string rest = line.substr(p);
    if (std::regex_search(rest, m, next)) return rest.substr(0, m.position(0));
    return rest;
}

// ---- supervised FUSE sources ----------------------------------------------------

// One FUSE source: fh_testfs serving generation N at a fixed path, started,
// killed and restarted as a container entrypoint's supervisor does. Unlike
// the harness FuseDaemon it never reads the mount table (10,000 lines) to
// see its mount: it watches the mount id at its path.
class Source {
public:
    Source(ft::Sandbox& sb, int index, std::string path) : sb_(sb), index_(index), path_(std::move(path)) {
        log_path_ = sb_.runtime() + "/fh_testfs-src-" + std::to_string(index_) + ".log";
        ft::make_dirs(path_);
    }
    ~Source() { kill9(); }
    Source(const Source&) = delete;
    Source& operator=(const Source&) = delete;

    // Starts generation `gen` (mount at the path); returns at once.
    void start(int gen) {
        if (pid_ > 0) fail("source " + path_ + " already running");
        pid_ = ft::spawn({ft::testfs_path(), path_, "--generation", std::to_string(gen), "-f"}, log_path_);
        sb_.track(pid_);
        gen_ = gen;
    }
    // Waits until a mount other than `old_id` is at the path (polls every ms).
    void wait_mounted(std::optional<std::uint64_t> old_id, std::chrono::seconds timeout = 10s) {
        auto deadline = Clock::now() + timeout;
        for (;;) {
            auto id = mount_id(path_);
            if (id && id != old_id) return;
            int status = 0;
            if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
                sb_.untrack(pid_);
                pid_ = -1;
                fail("fh_testfs at " + path_ + " exited before mounting: " + tail(ft::read_file(log_path_).value_or("")));
            }
            if (Clock::now() >= deadline) fail("fh_testfs did not mount " + path_);
            nap(1ms);
        }
    }
    // kill -9 and reap; the mount stays, stale (its connection aborted).
    void kill9() {
        if (pid_ <= 0) return;
        kill(pid_, SIGKILL);
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        sb_.untrack(pid_);
        pid_ = -1;
    }
    // umount -l of whatever is at the path (EINVAL: nothing mounted there).
    void umount_stale() {
        if (int e = ft::lazy_umount(path_); e != 0 && e != EINVAL)
            fail("umount -l " + path_ + ": " + ft::errno_name(e));
    }

    int index() const { return index_; }
    pid_t pid() const { return pid_; }
    int generation() const { return gen_; }
    const std::string& path() const { return path_; }

private:
    ft::Sandbox& sb_;
    int index_;
    std::string path_;
    std::string log_path_;
    pid_t pid_ = -1;
    int gen_ = 0;
};

// ---- t0: when the new source mount appears ---------------------------------------

// fh_testfs mounts inside libfuse, so the bench cannot time its mount()
// syscall; instead a thread at SCHED_FIFO waits on POLLPRI of the bench's
// /proc/self/mountinfo (the kernel wakes it from inside the mount syscall,
// together with fuse-healerd's own watch) and, on each wake, checks the
// mount id at the source path (statx, a few µs). t0 is CLOCK_MONOTONIC at
// the wake that first sees a new mount there: at most a few µs after the
// mount was attached, and no later than the mount() returning plus the
// wake-up latency (SCHED_FIFO: no normal task delays it).
class MountWatcher {
public:
    struct Seen {
        std::int64_t mono_us = 0;
        std::int64_t realtime_us = 0;
        bool fifo = false;
        // When a stat of a file in the new mount returned: the new FUSE
        // daemon has answered INIT and a LOOKUP. No copy can read before
        // that, whatever heals it.
        std::int64_t answered_mono_us = 0;
        dev_t device = 0;  // the new mount's superblock
    };

    ~MountWatcher() { stop(); }

    // Starts watching for a mount other than `old_id` at `path`; returns
    // once the watch is in place.
    void arm(const std::string& path, std::optional<std::uint64_t> old_id) {
        stop();
        stop_ = false;
        armed_ = false;
        device_ = 0;
        result_.reset();
        thread_ = std::thread([this, path, old_id] { run(path, old_id); });
        while (!armed_.load()) std::this_thread::sleep_for(50us);
        if (!error_.empty()) fail(error_);
    }
    // Waits for the mount; nullopt on timeout.
    std::optional<Seen> wait(std::chrono::milliseconds timeout) {
        auto deadline = Clock::now() + timeout;
        while (!done_.load() && Clock::now() < deadline) nap(200us);
        stop();
        return result_;
    }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    // The new mount's device number as soon as the watcher has seen it (at
    // t0, before its stat waits for the new FUSE daemon), 0 before; safe
    // to call from any thread.
    dev_t device() const { return device_.load(); }

private:
    void run(const std::string& path, std::optional<std::uint64_t> old_id) {
        done_ = false;
        sched_param p{};
        p.sched_priority = 1;
        const bool fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0;
        int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            error_ = std::string("open /proc/self/mountinfo: ") + std::strerror(errno);
            armed_ = true;
            return;
        }
        armed_ = true;
        while (!stop_.load()) {
            pollfd pf{fd, POLLPRI, 0};
            int n = poll(&pf, 1, 20);
            if (n <= 0 || !(pf.revents & (POLLPRI | POLLERR))) continue;
            Seen s{ft::monotonic_usec(), realtime_usec(), fifo};
            auto id = mount_id(path);
            if (id && id != old_id) {
                // AT_STATX_DONT_SYNC asks the new FUSE daemon nothing.
                struct statx sx {};
                if (statx(AT_FDCWD, path.c_str(), AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, 0, &sx) == 0) {
                    s.device = makedev(sx.stx_dev_major, sx.stx_dev_minor);
                    device_ = s.device;
                }
                struct stat st{};
                (void)!stat((path + "/generation").c_str(), &st);
                s.answered_mono_us = ft::monotonic_usec();
                result_ = s;
                break;
            }
        }
        close(fd);
        done_ = true;
    }

    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> armed_{false};
    std::atomic<bool> done_{false};
    std::atomic<dev_t> device_{0};
    std::string error_;
    std::optional<Seen> result_;
};

// ---- containers ---------------------------------------------------------------------

// The child side of a container. Never returns: sets up the namespace,
// writes "ok <index>\n" (or "fail <index> <why>\n") to ready_fd, then sleeps
// until hold_fd reaches EOF (the bench closed it or died) or it is killed.
[[noreturn]] void container_main(int index, const std::vector<std::string>& volumes, bool slave,
                                 const std::string& root, int ready_fd, int hold_fd) {
    auto say = [&](const std::string& s) { (void)!write(ready_fd, s.data(), s.size()); };
    auto die = [&](const std::string& what) {
        say("fail " + std::to_string(index) + " " + what + ": " + std::strerror(errno) + "\n");
        _exit(1);
    };
    char name[16];
    std::snprintf(name, sizeof name, "fh-ctr-%d", index);
    prctl(PR_SET_NAME, name);
    if (unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS)");
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) die("make / rslave");
    if (mount("fh-scale-container", root.c_str(), "tmpfs", 0, "mode=0755,size=64k") != 0) die("mount tmpfs on " + root);
    for (size_t j = 0; j < volumes.size(); j++) {
        std::string dir = root + "/v" + std::to_string(j);
        if (mkdir(dir.c_str(), 0755) != 0) die("mkdir " + dir);
        if (mount(volumes[j].c_str(), dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
            die("rbind " + volumes[j] + " on " + dir);
        if (mount(nullptr, dir.c_str(), nullptr, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), nullptr) != 0)
            die("make " + dir + (slave ? " rslave" : " rprivate"));
    }
    const std::string oldroot = root + "/oldroot";
    if (mkdir(oldroot.c_str(), 0755) != 0) die("mkdir " + oldroot);
    if (syscall(SYS_pivot_root, root.c_str(), oldroot.c_str()) != 0) die("pivot_root " + root);
    if (chdir("/") != 0) die("chdir /");
    if (umount2("/oldroot", MNT_DETACH) != 0) die("umount2 /oldroot");
    if (rmdir("/oldroot") != 0) die("rmdir /oldroot");
    say("ok " + std::to_string(index) + "\n");
    char b[16];
    for (;;) {
        ssize_t n = read(hold_fd, b, sizeof b);
        if (n == 0 || (n < 0 && errno != EINTR)) _exit(0);
    }
}

struct Container {
    pid_t pid = -1;
    int pod = 0;
    bool slave = false;
    std::vector<int> targets;  // target index of /v0, /v1, ...
    int mountinfo_fd = -1;     // the container namespace's /proc/<pid>/mountinfo, for POLLPRI
};

// All containers: forked from the bench before it starts any thread.
class Containers {
public:
    explicit Containers(ft::Sandbox& sb) : sb_(sb) {}
    ~Containers() { stop(); }

    // Starts one container per pod; volumes[p] are pod p's target paths and
    // target_ids[p] their indexes.
    void start(const std::vector<std::vector<std::string>>& volumes, const std::vector<std::vector<int>>& target_ids) {
        int ready[2], hold[2];
        if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0) fail_errno("pipe2");
        hold_fd_ = hold[1];
        const std::string roots = sb_.runtime() + "/containers";
        ft::make_dirs(roots);
        const pid_t parent = getpid();
        // The answers; at most kInFlight containers set up at a time: a
        // thousand unshare()s at once pile up on the kernel's namespace lock
        // and push the load average to ~80 for a minute, skewing what follows.
        constexpr size_t kInFlight = 8;
        std::string buf;
        size_t ok = 0;
        auto collect = [&](size_t until) {
            auto deadline = Clock::now() + std::chrono::seconds(60);
            while (ok < until) {
                check_interrupt();
                pollfd pf{ready[0], POLLIN, 0};
                if (poll(&pf, 1, 100) <= 0) {
                    if (Clock::now() >= deadline) fail("a container did not get ready in 60 s");
                    continue;
                }
                char b[4096];
                ssize_t n = read(ready[0], b, sizeof b);
                if (n <= 0) fail("the containers' ready pipe closed early");
                buf.append(b, static_cast<size_t>(n));
                for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
                    std::string line = buf.substr(0, nl);
                    buf.erase(0, nl + 1);
                    if (starts_with(line, "ok ")) ok++;
                    else fail("container: " + line);
                }
            }
        };
        for (size_t p = 0; p < volumes.size(); p++) {
            check_interrupt();
            if (p >= kInFlight) collect(p - kInFlight + 1);
            const std::string root = roots + "/" + std::to_string(p);
            ft::make_dirs(root);
            const bool slave = p % 2 == 0;
            pid_t pid = fork();
            if (pid < 0) fail_errno("fork");
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent) _exit(1);
                for (int s : {SIGINT, SIGTERM, SIGHUP}) (void)signal(s, SIG_DFL);  // the defaults; cannot fail for these
                // Only our two pipe ends (and 0..2) stay open.
                int r = fcntl(ready[1], F_DUPFD_CLOEXEC, 100);
                int h = fcntl(hold[0], F_DUPFD_CLOEXEC, 100);
                dup2(r, 3);
                dup2(h, 4);
                syscall(SYS_close_range, 5u, ~0u, 0u);
                container_main(static_cast<int>(p), volumes[p], slave, root, 3, 4);
            }
            sb_.track(pid);
            Container c;
            c.pid = pid;
            c.pod = static_cast<int>(p);
            c.slave = slave;
            c.targets = target_ids[p];
            list_.push_back(c);
        }
        close(ready[1]);
        close(hold[0]);
        collect(list_.size());
        close(ready[0]);
        for (auto& c : list_) {
            c.mountinfo_fd = open(("/proc/" + std::to_string(c.pid) + "/mountinfo").c_str(), O_RDONLY | O_CLOEXEC);
            if (c.mountinfo_fd < 0) fail_errno("open /proc/" + std::to_string(c.pid) + "/mountinfo");
        }
    }

    // Ends every container and reaps them, a few at a time: a thousand
    // namespaces torn down at once pile up on the kernel's namespace lock
    // (the load average jumps to ~80). The hold pipe's EOF ends any left.
    void stop() {
        constexpr size_t kBatch = 8;
        for (size_t i = 0; i < list_.size(); i += kBatch) {
            const size_t end = std::min(list_.size(), i + kBatch);
            for (size_t k = i; k < end; k++) {
                Container& c = list_[k];
                if (c.mountinfo_fd >= 0) close(c.mountinfo_fd);
                c.mountinfo_fd = -1;
                if (c.pid > 0) kill(c.pid, SIGKILL);
            }
            for (size_t k = i; k < end; k++) {
                Container& c = list_[k];
                if (c.pid <= 0) continue;
                int status = 0;
                while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
                }
                sb_.untrack(c.pid);
                c.pid = -1;
            }
        }
        if (hold_fd_ >= 0) {
            close(hold_fd_);
            hold_fd_ = -1;
        }
    }

    std::vector<Container>& list() { return list_; }

    // Sum over the containers' processes of Pss (KiB) from smaps_rollup.
    long total_pss_kib() const {
        long sum = 0;
        for (const auto& c : list_) {
            auto s = ft::read_file("/proc/" + std::to_string(c.pid) + "/smaps_rollup");
            if (!s) continue;
            auto p = s->find("\nPss:");
            if (p != std::string::npos) sum += std::atol(s->c_str() + p + 5);
        }
        return sum;
    }

private:
    ft::Sandbox& sb_;
    std::vector<Container> list_;
    int hold_fd_ = -1;
};

// ---- probing the containers' view ---------------------------------------------------

// Reads /proc/<pid>/root/vJ/generation of a set of container copies until
// each reads the expected generation, on every mount event of that
// container's namespace (POLLPRI on its mountinfo, through epoll) and at
// least every --probe-interval-us; records when each first did.
//
// Alongside, on a thread of its own with its own epoll (a mountinfo fd's
// POLLPRI state is per open file, so it has its own fds too), the mount
// view: when each copy's /proc/<pid>/root/vJ is first on the new source's
// superblock, by statx(AT_STATX_DONT_SYNC), which asks the FUSE daemon
// nothing. The reads take FUSE requests (lookup, open, read, release), one
// copy after another on one thread: when copies are healed faster than the
// new FUSE daemon answers that reader, the read times measure the reader.
//
// A copy is stamped when one of these threads sees it, so both must already
// be waiting when the daemon heals the first one: the cycle starts run() on
// a thread of its own before it starts the new source (see Run::cycle).
class CopyProber {
public:
    struct Copy {
        int container;       // index in Containers::list()
        std::string path;    // /proc/<pid>/root/vJ/generation
        std::string mount;   // /proc/<pid>/root/vJ
    };
    struct Result {
        std::vector<std::int64_t> seen_mono_us;      // per copy, 0 when never
        std::vector<std::int64_t> switched_mono_us;  // per copy: on the new superblock; 0 when never
        long sweeps = 0;
        long by_timer = 0;           // copies first seen by a timer sweep
        long switched_by_timer = 0;  // copies first seen switched by a timer sweep (or the last one)
    };

    explicit CopyProber(std::vector<Container>& ctrs) : ctrs_(ctrs) {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        switch_ep_ = epoll_create1(EPOLL_CLOEXEC);
        if (ep_ < 0 || switch_ep_ < 0) fail_errno("epoll_create1");
        for (size_t k = 0; k < ctrs_.size(); k++) {
            epoll_event ev{};
            ev.events = EPOLLPRI;
            ev.data.u64 = k;
            if (epoll_ctl(ep_, EPOLL_CTL_ADD, ctrs_[k].mountinfo_fd, &ev) != 0)
                fail_errno("epoll_ctl ADD container mountinfo");
            const std::string mi = "/proc/" + std::to_string(ctrs_[k].pid) + "/mountinfo";
            const int fd = open(mi.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) fail_errno("open " + mi);
            switch_fds_.push_back(fd);
            if (epoll_ctl(switch_ep_, EPOLL_CTL_ADD, fd, &ev) != 0) fail_errno("epoll_ctl ADD container mountinfo");
        }
    }
    ~CopyProber() {
        if (ep_ >= 0) close(ep_);
        if (switch_ep_ >= 0) close(switch_ep_);
        for (int fd : switch_fds_) close(fd);
    }

    // Consumes pending mount events (so that old ones do not count).
    void drain() {
        epoll_event evs[256];
        while (epoll_wait(ep_, evs, 256, 0) > 0) {
        }
        while (epoll_wait(switch_ep_, evs, 256, 0) > 0) {
        }
    }

    // Probes `copies` until all read `expected`, `deadline` or `cancel`;
    // calls `on_tick` between rounds (log scanning). The mount view waits
    // for the device `new_device` returns at each copy (0: not known yet,
    // no copy is on it).
    Result run(const std::vector<Copy>& copies, const std::string& expected,
               const std::function<dev_t()>& new_device, Clock::time_point deadline, long interval_us,
               const std::atomic<bool>& cancel, const std::function<void()>& on_tick) {
        Result r;
        r.seen_mono_us.assign(copies.size(), 0);
        r.switched_mono_us.assign(copies.size(), 0);
        std::atomic<bool> stop{false};
        std::thread switches([&] { watch_switches(copies, new_device, deadline, interval_us, stop, r); });
        std::map<int, std::vector<size_t>> pending;  // container -> copies not yet seen
        size_t left = copies.size();
        for (size_t i = 0; i < copies.size(); i++) pending[copies[i].container].push_back(i);
        auto reads_expected = [&](size_t i) {
            char b[64];
            int fd = open(copies[i].path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) return false;
            ssize_t n = read(fd, b, sizeof b);
            close(fd);
            return n == static_cast<ssize_t>(expected.size()) && std::memcmp(b, expected.data(), n) == 0;
        };
        auto sweep = [&](std::vector<size_t>& list, bool by_timer) {
            left -= take_done(list, reads_expected, r.seen_mono_us, by_timer, r.by_timer);
        };
        auto sweep_all = [&](bool by_timer) {
            r.sweeps++;
            for (auto& [k, list] : pending) sweep(list, by_timer);
        };
        // No sweep up front: the caller drained the namespaces' events
        // before the source came back, so a copy that changes from now on
        // raises its namespace's event, even one that changed before this
        // call (epoll keeps it ready until it is read). A first sweep of
        // 200 copies through /proc/<pid>/root costs milliseconds, and a copy
        // healed while it ran would be seen only at the next event or
        // sweep: the first copy's time measured that sweep, not the heal.
        // The timer sweeps stay as a net (counted in by_timer).
        auto last_full = Clock::now();
        epoll_event evs[256];
        while (left > 0) {
            check_interrupt();
            int n = epoll_wait(ep_, evs, 256, 5);
            if (n < 0 && errno != EINTR) fail_errno("epoll_wait");
            for (int i = 0; i < n; i++) {
                auto it = pending.find(static_cast<int>(evs[i].data.u64));
                if (it != pending.end()) sweep(it->second, false);
            }
            if (Clock::now() - last_full >= std::chrono::microseconds(interval_us)) {
                sweep_all(true);
                last_full = Clock::now();
            }
            if (on_tick) on_tick();
            if (left > 0 && (Clock::now() >= deadline || cancel.load())) break;
        }
        // A copy that reads the new generation is on the new superblock:
        // the watcher has seen it by now, or sees it in its last sweep.
        stop = true;
        switches.join();
        return r;
    }

private:
    // Removes from `list` (indexes of copies) those `done` says are done,
    // stamping each in `times` (monotonic µs) and counting it in `timer_count`
    // when found `by_timer`. Returns how many it removed.
    template <class Done>
    static size_t take_done(std::vector<size_t>& list, Done done, std::vector<std::int64_t>& times, bool by_timer,
                            long& timer_count) {
        size_t removed = 0;
        for (size_t j = 0; j < list.size();) {
            if (!done(list[j])) {
                j++;
                continue;
            }
            times[list[j]] = ft::monotonic_usec();
            if (by_timer) timer_count++;
            list[j] = list.back();
            list.pop_back();
            removed++;
        }
        return removed;
    }

    // The mount view (see the class comment); ends when every copy is on
    // `new_device`, at `deadline`, or at `stop` after a last sweep.
    void watch_switches(const std::vector<Copy>& copies, const std::function<dev_t()>& new_device,
                        Clock::time_point deadline, long interval_us, const std::atomic<bool>& stop, Result& r) {
        std::map<int, std::vector<size_t>> pending;  // container -> copies not yet switched
        size_t left = copies.size();
        for (size_t i = 0; i < copies.size(); i++) pending[copies[i].container].push_back(i);
        auto on_new_device = [&](size_t i) {
            const dev_t want = new_device();
            struct statx sx {};
            return want != 0 &&
                   statx(AT_FDCWD, copies[i].mount.c_str(), AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, 0, &sx) == 0 &&
                   makedev(sx.stx_dev_major, sx.stx_dev_minor) == want;
        };
        auto sweep = [&](std::vector<size_t>& list, bool by_timer) {
            left -= take_done(list, on_new_device, r.switched_mono_us, by_timer, r.switched_by_timer);
        };
        auto last_full = Clock::now();
        epoll_event evs[256];
        while (left > 0) {
            const bool last = stop.load() || Clock::now() >= deadline;
            if (last) {
                for (auto& [k, list] : pending) sweep(list, true);
                break;
            }
            int n = epoll_wait(switch_ep_, evs, 256, 5);
            for (int i = 0; i < n; i++) {
                auto it = pending.find(static_cast<int>(evs[i].data.u64));
                if (it != pending.end()) sweep(it->second, false);
            }
            if (Clock::now() - last_full >= std::chrono::microseconds(interval_us)) {
                for (auto& [k, list] : pending) sweep(list, true);
                last_full = Clock::now();
            }
        }
    }

    std::vector<Container>& ctrs_;
    int ep_ = -1;
    int switch_ep_ = -1;
    std::vector<int> switch_fds_;  // a second /proc/<pid>/mountinfo per container, for switch_ep_
};

// ---- results -----------------------------------------------------------------------------

struct HealCycle {
    int source = 0;
    int generation = 0;
    bool warmup = false;
    bool supervisor = false;        // kill -9, umount -l and restart at once
    double detect_ms = NAN;         // kill -9 -> outage-start line (NAN: not within the timeout)
    std::string detect_how;         // which line said so
    double detect_daemon_ms = NAN;  // that line's own detection_latency_us, if any
    double broken_all_ms = NAN;     // umount -l -> the last target of the source logged broken
    double spawn_to_mount_ms = NAN; // fh_testfs started -> its mount appeared (t0)
    double answer_ms = NAN;         // t0 -> the new mount answers a stat (its daemon's INIT and a LOOKUP)
    double first_ms = NAN;          // t0 -> first container copy reads the new generation
    double all_ms = NAN;            // t0 -> every container copy does
    double first_switch_ms = NAN;   // t0 -> first container copy on the new superblock (mount view, no read)
    // The new source answers the bench's stat -> that first copy: the
    // daemon's own part of the first copy (its probe waits for the same
    // FUSE daemon's first answer), without the FUSE daemon's start.
    double answer_to_first_switch_ms = NAN;
    double all_switch_ms = NAN;     // t0 -> every container copy is
    double host_ms = NAN;           // t0 -> the daemon's last "mount healed" line of the source (log time)
    double event_delay_ms = NAN;    // t0 -> the daemon's trigger (log time - since_event_us, earliest)
    double probe_after_event_ms = NAN;  // min probe_after_event_us > 0
    double start_after_event_ms = NAN;  // min start_after_event_us
    double since_event_max_ms = NAN;
    double daemon_cpu_ms = 0;       // the daemon's CPU from the restart to quiet after the heal
    int healed = 0;
    int ns_healed = 0;
    long by_timer = 0;
    long switched_by_timer = 0;
    bool fifo = false;
    std::string load;
    double machine_busy_pct = NAN;  // both CPUs, during the cycle
};

// How busy the machine was during a phase (2 CPUs shared with other work):
// the load averages at its start and end, and the share of all CPUs busy
// (/proc/stat; the daemon and the bench included).
struct Phase {
    std::string load_start, load_end;
    MachineCpu cpu_start, cpu_end;

    void begin() {
        load_start = loadavg();
        cpu_start = machine_cpu();
    }
    void end() {
        load_end = loadavg();
        cpu_end = machine_cpu();
    }
    std::string describe() const {
        return load_start + " → " + load_end + "; CPUs " + fmt("%.0f", busy_percent(cpu_start, cpu_end)) + "% busy";
    }
};

struct Results {
    std::string machine;
    std::string startup_line;
    std::map<std::string, std::string> mechanisms;  // from the start-up line and `fuse-healerctl status`
    int table_lines = 0;           // the bench (= daemon) namespace's mountinfo lines after setup
    int filler = 0;
    int containers = 0;
    int container_mounts = 0;      // all container namespaces together
    long containers_pss_kib = 0;
    double setup_s = 0;
    double daemon_ready_s = 0;
    double read_mountinfo_ms = NAN; // the bench's own parse of the table, for scale
    Memory mem_ready, mem_after_events, mem_after_idle, mem_after_cycles, mem_end, mem_settled;
    int settle_seconds = 0;

    // 1. unrelated mount events
    int events = 0;
    double event_cpu_ms = NAN;      // per event
    double event_busy_p50_ms = NAN; // event -> daemon quiet again, minus the quiet window
    double event_busy_max_ms = NAN;
    std::int64_t event_daemon_events = -1, event_daemon_reconciles = -1;
    Phase events_phase;

    // 2. idle
    double idle_wall_s = 0;
    double idle_cpu_ms = NAN;
    std::vector<double> idle_per_second_ms;
    Phase idle_phase;

    // 3/4. cycles
    std::vector<HealCycle> cycles;
    std::string detect_sample;  // the first line taken for an outage start
    Phase cycles_phase, supervisor_phase;

    // 5. churn
    double churn_wall_s = 0;
    double churn_cpu_ms = NAN;
    long churn_pairs = 0;
    double churn_tail_ms = NAN;  // after the last pair until the daemon is quiet
    std::int64_t churn_daemon_events = -1, churn_daemon_reconciles = -1;
    Phase churn_phase;

    int heal_failures = 0;
    std::vector<std::string> failure_samples;
    int host_mounts_before = 0, host_mounts_after = 0;
    int ctr_mounts_before = 0, ctr_mounts_after = 0;
    double run_s = 0;
};

// ---- the run -----------------------------------------------------------------------------

class Run {
public:
    Run(const Options& o, Results& r) : o_(o), r_(r) {}

    void go() {
        auto t_start = Clock::now();
        sb_ = std::make_unique<ft::Sandbox>();
        ft::Sandbox& sb = *sb_;
        progress("sandbox %s", sb.root().c_str());
        setup(sb);
        r_.setup_s = seconds_since(t_start);

        // The daemon. TZ=UTC so that its log timestamps parse with timegm.
        setenv("TZ", "UTC", 1);
        const std::string binary = o_.daemon.empty() ? ft::daemon_path() : o_.daemon;
        ft::Daemon d(sb, binary);
        // Info unless --daemon-args names a level: debug logging slows the
        // daemon down (a line per action).
        std::vector<std::string> args;
        if (std::none_of(o_.daemon_args.begin(), o_.daemon_args.end(),
                         [](const std::string& a) { return starts_with(a, "--log-level"); }))
            args = {"--log-level", "info"};
        args.insert(args.end(), o_.daemon_args.begin(), o_.daemon_args.end());
        auto t_daemon = Clock::now();
        d.start("", args);
        d_ = &d;
        log_ = std::make_unique<LogTail>(d.log_path());
        if (!d.wait_for_log("ready: watching", 60s)) fail("fuse-healerd did not get ready:\n" + tail(d.log()));
        wait_origins(sb, d);
        wait_quiet(d.pid(), 100ms, 120s);
        r_.daemon_ready_s = seconds_since(t_daemon);
        scan_log();
        read_mechanisms(d);
        r_.mem_ready = process_memory(d.pid());
        progress("daemon pid %d ready with %zu targets in %.2f s; RSS %ld KiB", d.pid(), targets_.size(),
                 r_.daemon_ready_s, r_.mem_ready.rss_kib);

        if (o_.events > 0) unrelated_events(d);
        r_.mem_after_events = process_memory(d.pid());
        if (o_.idle_seconds > 0) idle(d);
        r_.mem_after_idle = process_memory(d.pid());

        r_.host_mounts_before = count_lines(ft::kSelfMountinfo);
        r_.ctr_mounts_before = container_mounts();
        if (o_.warmup + o_.cycles > 0) {
            r_.cycles_phase.begin();
            for (int i = 0; i < o_.warmup + o_.cycles; i++) r_.cycles.push_back(cycle(d, i, i < o_.warmup, false));
            r_.cycles_phase.end();
        }
        if (o_.supervisor_cycles > 0) {
            r_.supervisor_phase.begin();
            for (int i = 0; i < o_.supervisor_cycles; i++)
                r_.cycles.push_back(cycle(d, o_.warmup + o_.cycles + i, false, true));
            r_.supervisor_phase.end();
        }
        if (o_.warmup + o_.cycles + o_.supervisor_cycles > 0) final_checks();
        r_.mem_after_cycles = process_memory(d.pid());

        if (o_.churn_seconds > 0) churn(d);
        r_.mem_end = process_memory(d.pid());
        // The daemon hands freed heap back (malloc_trim) once idle for 1 s
        // after its last step (engine/event_loop.h, kTrimDelay): the samples
        // above may fall before that, this one after. A longer wait shows
        // what stays: the heal-line rate limiter forgets a target's keys one
        // to two 60 s windows after its last line, and the 30 s safety
        // reconcile is followed by a trim.
        std::this_thread::sleep_for(std::chrono::seconds(o_.settle_seconds));
        r_.settle_seconds = o_.settle_seconds;
        r_.mem_settled = process_memory(d.pid());
        r_.heal_failures = heal_failures_;
        r_.failure_samples = failure_samples_;

        containers_->stop();
        int rc = d.terminate(30000ms);
        keep_log(d);
        d_ = nullptr;
        if (rc != 0) fail("fuse-healerd exited with " + std::to_string(rc) + " on SIGTERM:\n" + tail(d.log()));
        for (auto& s : sources_) s->kill9();
        r_.run_s = seconds_since(t_start);
    }

private:
    // ---- setup ----

    void setup(ft::Sandbox& sb) {
        const int n_targets = o_.pods * o_.targets_per_pod;
        progress("setup: %d sources, %d pods, %d targets", o_.sources, o_.pods, n_targets);
        for (int k = 0; k < o_.sources; k++) {
            auto s = std::make_unique<Source>(sb, k, sb.runtime() + "/src-" + std::to_string(k));
            auto old = mount_id(s->path());
            s->start(1);
            s->wait_mounted(old);
            sources_.push_back(std::move(s));
        }
        std::vector<std::vector<std::string>> pod_volumes(o_.pods);
        std::vector<std::vector<int>> pod_targets(o_.pods);
        for (int t = 0; t < n_targets; t++) {
            check_interrupt();
            const int pod = t / o_.targets_per_pod, j = t % o_.targets_per_pod;
            char uid[32], vol[32], handle[32];
            std::snprintf(uid, sizeof uid, "pod-%04d", pod);
            std::snprintf(vol, sizeof vol, "pv-%d", j);
            std::snprintf(handle, sizeof handle, "vol-%05d", t);
            Target tg;
            tg.source = t % o_.sources;
            tg.pod = pod;
            tg.slot = j;
            tg.path = sb.make_pod_volume(uid, vol, handle);
            ft::csi_bind(sources_[tg.source]->path(), "", tg.path, true);
            pod_volumes[pod].push_back(tg.path);
            pod_targets[pod].push_back(t);
            targets_.push_back(tg);
        }
        progress("setup: starting %d containers", o_.pods);
        containers_ = std::make_unique<Containers>(sb);
        containers_->start(pod_volumes, pod_targets);
        for (size_t k = 0; k < containers_->list().size(); k++) {
            const Container& c = containers_->list()[k];
            for (size_t j = 0; j < c.targets.size(); j++) {
                Target& tg = targets_[c.targets[j]];
                tg.container = static_cast<int>(k);
                tg.copy_path = "/proc/" + std::to_string(c.pid) + "/root/v" + std::to_string(j) + "/generation";
            }
        }
        r_.containers = static_cast<int>(containers_->list().size());

        // Filler: pairs of a tmpfs and a bind of it, outside the kubelet root.
        const std::string filler_root = sb.path("filler");
        ft::make_dirs(filler_root);
        if (mount("fh-filler", filler_root.c_str(), "tmpfs", 0, "mode=0755,size=1m") != 0)
            fail_errno("mount tmpfs on " + filler_root);
        const int have = count_lines(ft::kSelfMountinfo);
        const int filler = o_.filler >= 0 ? o_.filler : std::max(0, o_.mounts - have);
        progress("setup: %d filler mounts (table has %d lines)", filler, have);
        for (int i = 0; i < filler; i++) {
            if (i % 1000 == 0) check_interrupt();
            const int pair = i / 2;
            const std::string t = filler_root + "/t" + std::to_string(pair);
            if (i % 2 == 0) {
                if (mkdir(t.c_str(), 0755) != 0) fail_errno("mkdir " + t);
                if (mount("fh-filler", t.c_str(), "tmpfs", 0, "mode=0755,size=16k") != 0) fail_errno("mount tmpfs on " + t);
            } else {
                const std::string b = filler_root + "/b" + std::to_string(pair);
                if (mkdir(b.c_str(), 0755) != 0) fail_errno("mkdir " + b);
                if (mount(t.c_str(), b.c_str(), nullptr, MS_BIND, nullptr) != 0) fail_errno("bind " + t + " on " + b);
            }
        }
        r_.filler = filler;
        ft::make_dirs(sb.path("events/e"));
        ft::make_dirs(sb.path("events/c"));
        events_dir_ = sb.path("events");
        r_.table_lines = count_lines(ft::kSelfMountinfo);
        r_.container_mounts = container_mounts();
        r_.containers_pss_kib = containers_->total_pss_kib();
        {
            const int reps = 5;
            auto t = Clock::now();
            for (int i = 0; i < reps; i++) (void)ft::read_mountinfo_lines(ft::kSelfMountinfo);
            r_.read_mountinfo_ms = seconds_since(t) * 1000.0 / reps;
        }
        progress("setup: table %d lines, %d containers holding %d mounts (Pss of their processes %ld KiB)",
                 r_.table_lines, r_.containers, r_.container_mounts, r_.containers_pss_kib);
    }

    int container_mounts() const {
        int n = 0;
        for (const auto& c : containers_->list()) n += count_lines("/proc/" + std::to_string(c.pid) + "/mountinfo");
        return n;
    }

    void wait_origins(const ft::Sandbox& sb, ft::Daemon& d) {
        const std::string path = sb.state() + "/origins.json";
        size_t have = 0;
        auto deadline = Clock::now() + std::chrono::seconds(120);
        for (;;) {
            if (auto rc = d.poll_exit()) fail("fuse-healerd exited during start-up (" + std::to_string(*rc) + "):\n" + tail(d.log()));
            if (auto text = ft::read_file(path))
                if (auto decoded = fh::decode_origins(*text)) have = decoded->size();
            if (have >= targets_.size()) return;
            if (Clock::now() >= deadline)
                fail("fuse-healerd learned " + std::to_string(have) + " of " + std::to_string(targets_.size()) +
                     " origins in 120 s:\n" + tail(d.log()));
            nap(20ms);
        }
    }

    // ---- the daemon's log and status ----

    void scan_log() {
        for (auto& l : log_->read_new()) {
            if (starts_with(l.text, "fuse-healer ") && l.text.find(" starting: ") != std::string::npos)
                r_.startup_line = l.text;
            if (starts_with(l.text, "failed to heal")) {
                ++heal_failures_;
                if (failure_samples_.size() < 5) failure_samples_.push_back(l.text);
            } else if ((l.level == "error" || l.level == "critical") && failure_samples_.size() < 5) {
                failure_samples_.push_back(l.text);
            }
            if (collect_) lines_.push_back(std::move(l));
        }
        if (d_)
            if (auto rc = d_->poll_exit()) fail("fuse-healerd exited with " + std::to_string(*rc) + ":\n" + tail(d_->log()));
    }

    // Returns `fuse-healerctl status --json`'s "daemon" object (throws on failure).
    nlohmann::json ctl_status(const ft::Daemon& d) {
        const std::string ctl = ft::ctl_path();
        if (ctl.empty()) fail("fuse-healerctl was not built");
        const std::string out = d.log_path() + ".ctl";
        unlink(out.c_str());
        pid_t pid = ft::spawn({ctl, "--socket", d.control_socket(), "status", "--json"}, out);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        auto text = ft::read_file(out).value_or("");
        if (ft::exit_code_of(status) != 0) fail("fuse-healerctl status failed: " + text);
        auto j = nlohmann::json::parse(text.substr(0, text.find('\n')), nullptr, false);
        if (j.is_discarded() || !j.contains("daemon")) fail("fuse-healerctl status: not JSON: " + tail(text, 300));
        return j["daemon"];
    }

    static std::int64_t json_int(const nlohmann::json& j, const char* key) {
        return j.contains(key) && j[key].is_number() ? j[key].get<std::int64_t>() : -1;
    }

    void read_mechanisms(const ft::Daemon& d) {
        // The start-up line names the death detection and the way mount
        // events are turned into work; `status` repeats the detection and
        // the kernel features, plus whatever a newer daemon adds.
        for (const char* key : {"death detection", "mount tracking", "source check", "strategy"}) {
            std::string v = startup_value(r_.startup_line, key);
            if (!v.empty()) r_.mechanisms[std::string("log: ") + key] = v;
        }
        if (auto k = r_.startup_line.find(" kernel: "); k != std::string::npos)
            r_.mechanisms["log: kernel"] = r_.startup_line.substr(k + 9);
        auto j = ctl_status(d);
        for (auto it = j.begin(); it != j.end(); ++it)
            if (it.value().is_string() && it.key() != "version") r_.mechanisms["status: " + it.key()] = it.value().get<std::string>();
    }

    void keep_log(const ft::Daemon& d) {
        if (o_.keep_logs.empty()) return;
        ft::make_dirs(o_.keep_logs);
        std::ifstream in(d.log_path(), std::ios::binary);
        std::ofstream out(o_.keep_logs + "/fuse-healerd-scale.log", std::ios::binary | std::ios::trunc);
        out << in.rdbuf();
    }

    // ---- 1. unrelated mount events ----

    void unrelated_events(ft::Daemon& d) {
        progress("events: %d unrelated mount events (tmpfs mount/umount at %s/e), each waited out", o_.events,
                 events_dir_.c_str());
        r_.events_phase.begin();
        const std::string at = events_dir_ + "/e";
        auto before = ctl_status(d);
        wait_quiet(d.pid(), 100ms);
        const pid_t pid = d.pid();
        const std::int64_t cpu0 = process_cpu_ns(pid);
        std::vector<double> busy;
        const std::chrono::milliseconds window(20);  // not 20ms: cppcheck 2.10 aborts on it
        for (int i = 0; i < o_.events; i++) {
            check_interrupt();
            const std::int64_t t = ft::monotonic_usec();
            if (i % 2 == 0) {
                if (mount("fh-event", at.c_str(), "tmpfs", 0, "size=16k") != 0) fail_errno("mount tmpfs on " + at);
            } else if (umount2(at.c_str(), 0) != 0) {
                fail_errno("umount " + at);
            }
            wait_quiet(pid, window);
            busy.push_back(ms(ft::monotonic_usec() - t) - static_cast<double>(window.count()));
        }
        if (o_.events % 2 == 1) {  // leave nothing mounted; this umount is not counted
            if (umount2(at.c_str(), 0) != 0) fail_errno("umount " + at);
            wait_quiet(pid, window);
        }
        const std::int64_t cpu1 = process_cpu_ns(pid);
        const int counted = o_.events;
        auto after = ctl_status(d);
        r_.events = counted;
        r_.event_cpu_ms = static_cast<double>(cpu1 - cpu0) / 1e6 / (o_.events % 2 ? counted + 1 : counted);
        r_.event_busy_p50_ms = percentile(busy, 50);
        r_.event_busy_max_ms = max_of(busy);
        r_.event_daemon_events = json_int(after, "mount_events") - json_int(before, "mount_events");
        r_.event_daemon_reconciles = json_int(after, "reconciles") - json_int(before, "reconciles");
        r_.events_phase.end();
        scan_log();
        progress("events: %.3f ms CPU per event; daemon counted %lld mount events, %lld reconciles (status calls "
                 "included)",
                 r_.event_cpu_ms, static_cast<long long>(r_.event_daemon_events),
                 static_cast<long long>(r_.event_daemon_reconciles));
    }

    // ---- 2. idle ----

    void idle(ft::Daemon& d) {
        progress("idle: %d s, no mount events (the safety reconcile runs every 30 s by default)", o_.idle_seconds);
        r_.idle_phase.begin();
        const pid_t pid = d.pid();
        const int lines_before = count_lines(ft::kSelfMountinfo);
        auto t0 = Clock::now();
        std::int64_t c0 = process_cpu_ns(pid), prev = c0;
        for (int s = 1; s <= o_.idle_seconds; s++) {
            while (Clock::now() < t0 + std::chrono::seconds(s)) nap(50ms);
            std::int64_t c = process_cpu_ns(pid);
            r_.idle_per_second_ms.push_back(static_cast<double>(c - prev) / 1e6);
            prev = c;
        }
        r_.idle_wall_s = seconds_since(t0);
        r_.idle_cpu_ms = static_cast<double>(prev - c0) / 1e6;
        r_.idle_phase.end();
        scan_log();
        if (count_lines(ft::kSelfMountinfo) != lines_before) fail("the mount table changed during the idle measurement");
        progress("idle: %.1f ms CPU in %.1f s (%.3f%% of one core)", r_.idle_cpu_ms, r_.idle_wall_s,
                 r_.idle_cpu_ms / 10.0 / r_.idle_wall_s);
    }

    // ---- 3/4. heal cycles ----

    struct Target {
        int source = 0;
        int pod = 0;
        int slot = 0;
        std::string path;
        int container = -1;
        std::string copy_path;
    };

    HealCycle cycle(ft::Daemon& d, int number, bool warmup, bool supervisor) {
        HealCycle cr;
        cr.source = number % o_.sources;
        cr.warmup = warmup;
        cr.supervisor = supervisor;
        Source& src = *sources_[cr.source];
        const int gen = src.generation() + 1;
        cr.generation = gen;
        std::vector<CopyProber::Copy> copies;
        std::set<std::string> source_targets;
        for (size_t t = 0; t < targets_.size(); t++)
            if (targets_[t].source == cr.source) {
                copies.push_back({targets_[t].container, targets_[t].copy_path,
                                  targets_[t].copy_path.substr(0, targets_[t].copy_path.rfind('/'))});
                source_targets.insert(targets_[t].path);
            }
        const int n = static_cast<int>(copies.size());
        const auto timeout = std::chrono::seconds(o_.cycle_timeout_s);
        const pid_t pid = d.pid();
        if (!prober_) prober_ = std::make_unique<CopyProber>(containers_->list());

        scan_log();
        lines_.clear();
        collect_ = true;
        auto count = [&](const char* prefix) {
            int c = 0;
            for (const auto& l : lines_)
                if (starts_with(l.text, prefix) && field(l.text, "source") == src.path()) c++;
            return c;
        };

        pace_kills(cr.source);
        const std::int64_t cpu0 = process_cpu_ns(pid);
        const MachineCpu machine0 = machine_cpu();
        std::optional<std::uint64_t> old_id;
        // The outage.
        const pid_t fuse_pid = src.pid();
        const std::int64_t kill_rt = realtime_usec();
        src.kill9();
        if (!supervisor) {
            // Detection: kill -9 -> the outage-start line, nothing else happening.
            auto deadline = Clock::now() + std::chrono::milliseconds(o_.detect_timeout_ms);
            for (;;) {
                scan_log();
                for (const auto& l : lines_)
                    if (auto o = outage_start_of(l, src.path(), fuse_pid)) {
                        cr.detect_ms = ms(l.realtime_us - kill_rt);
                        cr.detect_how = o->how;
                        cr.detect_daemon_ms = o->daemon_latency_ms;
                        if (r_.detect_sample.empty()) r_.detect_sample = l.text;
                        break;
                    }
                if (!std::isnan(cr.detect_ms) || Clock::now() >= deadline) break;
                nap(500us);
            }
            const std::int64_t umount_rt = realtime_usec();
            src.umount_stale();
            old_id = mount_id(src.path());
            // Every target of the source logged broken, the daemon quiet.
            auto dl = Clock::now() + timeout;
            while (count("mount broken:") < n) {
                if (Clock::now() >= dl)
                    fail("source " + src.path() + ": fuse-healerd logged " + std::to_string(count("mount broken:")) +
                         " of " + std::to_string(n) + " \"mount broken\" lines:\n" + tail(d.log()));
                nap(1ms);
                scan_log();
            }
            std::int64_t last_broken = 0;
            for (const auto& l : lines_)
                if (starts_with(l.text, "mount broken:") && field(l.text, "source") == src.path())
                    last_broken = std::max(last_broken, l.realtime_us);
            cr.broken_all_ms = ms(last_broken - umount_rt);
            wait_quiet(pid, 50ms);
            scan_log();
        } else {
            src.umount_stale();
            old_id = mount_id(src.path());
        }

        // The source comes back. The copies are watched from before it
        // starts: run() stamps a copy when it sees it, and the watcher's
        // wait below returns only once the new FUSE daemon has answered its
        // stat, by when the daemon may have healed the first copies.
        prober_->drain();
        watcher_.arm(src.path(), old_id);
        const std::string expected = std::to_string(gen) + "\n";
        CopyProber::Result res;
        std::exception_ptr probe_error;
        std::atomic<bool> cancel_probe{false};
        std::thread probing([&] {
            try {
                res = prober_->run(copies, expected, [&] { return watcher_.device(); }, Clock::now() + timeout,
                                   o_.probe_interval_us, cancel_probe, [&] { scan_log(); });
            } catch (...) {
                probe_error = std::current_exception();
            }
        });
        // Joined on every way out; its errors are thrown here.
        struct JoinProbing {
            std::thread& t;
            std::atomic<bool>& cancel;
            ~JoinProbing() {
                if (!t.joinable()) return;
                cancel = true;
                t.join();
            }
        } join_probing{probing, cancel_probe};
        const std::int64_t spawn_mono = ft::monotonic_usec();
        src.start(gen);
        auto seen = watcher_.wait(10s);
        if (!seen) fail("the new mount of " + src.path() + " did not appear within 10 s");
        if (seen->device == 0) fail("statx of the new mount at " + src.path() + " failed");
        cr.fifo = seen->fifo;
        const std::int64_t t0 = seen->mono_us, t0_rt = seen->realtime_us;
        cr.spawn_to_mount_ms = ms(t0 - spawn_mono);
        probing.join();
        if (probe_error) std::rethrow_exception(probe_error);
        auto span = [](const std::vector<std::int64_t>& times, std::int64_t& first, std::int64_t& last) {
            first = INT64_MAX;
            last = 0;
            int unseen = 0;
            for (auto t : times) {
                if (t == 0) {
                    ++unseen;
                    continue;
                }
                first = std::min(first, t);
                last = std::max(last, t);
            }
            return unseen;
        };
        std::int64_t first = 0, last = 0, first_switch = 0, last_switch = 0;
        const int unseen = span(res.seen_mono_us, first, last);
        const int unswitched = span(res.switched_mono_us, first_switch, last_switch);
        if (unseen > 0)
            fail("source " + src.path() + " generation " + std::to_string(gen) + ": after " +
                 std::to_string(o_.cycle_timeout_s) + " s, " + std::to_string(unseen) +
                 " container copies do not read it; " + std::to_string(count("mount healed:")) + " of " +
                 std::to_string(n) + " healed lines, " + std::to_string(heal_failures_) + " heal failures:\n" +
                 tail(d.log()));
        cr.answer_ms = ms(seen->answered_mono_us - t0);
        if (unswitched > 0)
            fail("source " + src.path() + " generation " + std::to_string(gen) + ": every copy reads it, but " +
                 std::to_string(unswitched) + " were never seen on its superblock by statx");
        cr.first_ms = ms(first - t0);
        cr.all_ms = ms(last - t0);
        cr.first_switch_ms = ms(first_switch - t0);
        cr.answer_to_first_switch_ms = ms(first_switch - seen->answered_mono_us);
        cr.all_switch_ms = ms(last_switch - t0);
        cr.by_timer = res.by_timer;
        cr.switched_by_timer = res.switched_by_timer;
        // The daemon's side: every target healed on the host too.
        auto dl = Clock::now() + timeout;
        while (count("mount healed:") < n) {
            if (Clock::now() >= dl)
                fail("source " + src.path() + ": every container copy reads generation " + std::to_string(gen) +
                     " but fuse-healerd logged " + std::to_string(count("mount healed:")) + " of " +
                     std::to_string(n) + " healed lines:\n" + tail(d.log()));
            nap(1ms);
            scan_log();
        }
        wait_quiet(pid, 50ms);
        scan_log();
        cr.daemon_cpu_ms = static_cast<double>(process_cpu_ns(pid) - cpu0) / 1e6;
        std::int64_t host_last = 0, trigger_rt = INT64_MAX, since_max = 0, start_min = INT64_MAX, probe_min = INT64_MAX;
        for (const auto& l : lines_) {
            if (!starts_with(l.text, "mount healed:") || field(l.text, "source") != src.path()) continue;
            ++cr.healed;
            const std::int64_t since = std::atoll(field(l.text, "since_event_us").c_str());
            host_last = std::max(host_last, l.realtime_us);
            trigger_rt = std::min(trigger_rt, l.realtime_us - since);
            since_max = std::max(since_max, since);
            start_min = std::min<std::int64_t>(start_min, std::atoll(field(l.text, "start_after_event_us").c_str()));
            if (std::int64_t p = std::atoll(field(l.text, "probe_after_event_us").c_str()); p > 0)
                probe_min = std::min(probe_min, p);
            cr.ns_healed += std::atoi(field(l.text, "namespaces_healed").c_str());
        }
        cr.host_ms = ms(host_last - t0_rt);
        cr.event_delay_ms = ms(trigger_rt - t0_rt);
        cr.since_event_max_ms = ms(since_max);
        cr.start_after_event_ms = start_min == INT64_MAX ? NAN : ms(start_min);
        cr.probe_after_event_ms = probe_min == INT64_MAX ? NAN : ms(probe_min);
        collect_ = false;
        lines_.clear();
        cr.load = loadavg();
        cr.machine_busy_pct = busy_percent(machine0, machine_cpu());
        progress("cycle %d%s%s src-%d gen %d: detect %s; source answers %.2f ms, first %.2f ms, all %.2f ms (reads), "
                 "first %.2f ms, all %.2f ms (mount view), host %.2f ms; "
                 "daemon event %+.3f ms, probe %.3f ms, first action %.3f ms after it; %d healed, %d ns copies; "
                 "daemon CPU %.0f ms; load %s, CPUs %.0f%% busy",
                 number + 1, warmup ? " (warm-up)" : "", supervisor ? " (supervisor restart)" : "", cr.source, gen,
                 supervisor ? "n/a" : (std::isnan(cr.detect_ms) ? ("not within " + std::to_string(o_.detect_timeout_ms) + " ms").c_str()
                                                               : (fmt("%.3f ms", cr.detect_ms) + " (" + cr.detect_how + ")").c_str()),
                 cr.answer_ms, cr.first_ms, cr.all_ms, cr.first_switch_ms, cr.all_switch_ms, cr.host_ms,
                 cr.event_delay_ms, cr.probe_after_event_ms,
                 cr.start_after_event_ms, cr.healed, cr.ns_healed, cr.daemon_cpu_ms, cr.load.c_str(), cr.machine_busy_pct);
        return cr;
    }

    void final_checks() {
        progress("checking every target and container copy (one mount each, last generation)");
        std::map<std::string, int> at;
        for (const auto& m : ft::read_mount_lines()) at[m.mountpoint]++;
        for (const auto& t : targets_) {
            const std::string want = std::to_string(sources_[t.source]->generation()) + "\n";
            auto s = ft::read_file(t.path + "/generation");
            if (!s || *s != want)
                fail("host target " + t.path + " does not read generation " + want + ": " + (s ? *s : ft::errno_name(errno)));
            if (at[t.path] != 1) fail("host target " + t.path + " has " + std::to_string(at[t.path]) + " mounts");
            auto c = ft::read_file(t.copy_path);
            if (!c || *c != want)
                fail("container copy " + t.copy_path + " does not read generation " + want + ": " +
                     (c ? *c : ft::errno_name(errno)));
        }
        for (const auto& c : containers_->list()) {
            auto lines = ft::read_mount_lines("/proc/" + std::to_string(c.pid) + "/mountinfo");
            for (size_t j = 0; j < c.targets.size(); j++) {
                const std::string mp = "/v" + std::to_string(j);
                auto m = std::count_if(lines.begin(), lines.end(), [&](const ft::MountLine& l) { return l.mountpoint == mp; });
                if (m != 1) fail("container pid " + std::to_string(c.pid) + " has " + std::to_string(m) + " mounts at " + mp);
            }
        }
        r_.host_mounts_after = count_lines(ft::kSelfMountinfo);
        r_.ctr_mounts_after = container_mounts();
        if (r_.host_mounts_after != r_.host_mounts_before || r_.ctr_mounts_after != r_.ctr_mounts_before)
            fail("mount counts changed: host " + std::to_string(r_.host_mounts_before) + " -> " +
                 std::to_string(r_.host_mounts_after) + ", containers " + std::to_string(r_.ctr_mounts_before) +
                 " -> " + std::to_string(r_.ctr_mounts_after));
    }

    // ---- 5. churn ----

    void churn(ft::Daemon& d) {
        const long pairs = static_cast<long>(o_.churn_rate) * o_.churn_seconds;
        progress("churn: %d mount+umount pairs per second for %d s (%ld pairs) at %s/c", o_.churn_rate,
                 o_.churn_seconds, pairs, events_dir_.c_str());
        const std::string at = events_dir_ + "/c";
        auto before = ctl_status(d);
        wait_quiet(d.pid(), 100ms);
        r_.churn_phase.begin();
        const pid_t pid = d.pid();
        const auto period = std::chrono::nanoseconds(1000000000L / o_.churn_rate);
        const auto t0 = Clock::now();
        const std::int64_t c0 = process_cpu_ns(pid);
        auto next = t0;
        for (long i = 0; i < pairs; i++) {
            std::this_thread::sleep_until(next);
            if ((i & 63) == 0) check_interrupt();
            if (mount("fh-churn", at.c_str(), "tmpfs", 0, "size=16k") != 0) fail_errno("mount tmpfs on " + at);
            if (umount2(at.c_str(), 0) != 0) fail_errno("umount " + at);
            next += period;
        }
        const std::int64_t c1 = process_cpu_ns(pid);
        r_.churn_wall_s = seconds_since(t0);
        r_.churn_pairs = pairs;
        r_.churn_cpu_ms = static_cast<double>(c1 - c0) / 1e6;
        r_.churn_phase.end();
        const auto t_end = Clock::now();
        wait_quiet(pid, 50ms);
        r_.churn_tail_ms = seconds_since(t_end) * 1000.0 - 50.0;
        auto after = ctl_status(d);
        r_.churn_daemon_events = json_int(after, "mount_events") - json_int(before, "mount_events");
        r_.churn_daemon_reconciles = json_int(after, "reconciles") - json_int(before, "reconciles");
        scan_log();
        progress("churn: daemon CPU %.0f ms in %.1f s = %.1f%% of one core; %lld mount events seen, %lld reconciles",
                 r_.churn_cpu_ms, r_.churn_wall_s, r_.churn_cpu_ms / 10.0 / r_.churn_wall_s,
                 static_cast<long long>(r_.churn_daemon_events), static_cast<long long>(r_.churn_daemon_reconciles));
    }

    const Options& o_;
    Results& r_;
    // First, so that it goes last: the sources, containers and the daemon
    // keep a reference to it, and on an error it kills, reaps and unmounts
    // whatever they left.
    std::unique_ptr<ft::Sandbox> sb_;
    ft::Daemon* d_ = nullptr;
    std::unique_ptr<LogTail> log_;
    std::vector<std::unique_ptr<Source>> sources_;
    std::vector<Target> targets_;
    std::unique_ptr<Containers> containers_;
    std::unique_ptr<CopyProber> prober_;
    // When each source's FUSE daemon was killed, newest last (pace_kills).
    std::map<int, std::vector<Clock::time_point>> kills_;

    // Waits, outside any measurement, until source `source` may die again
    // with its lines logged: the daemon logs at most kDaemonLineBurst
    // "mount broken" (and "FUSE server died") lines per target (source) in
    // any kDaemonLineWindow and sums up the rest (Daemon::kHealLogBurst and
    // kHealLogWindow in engine/event_loop.h). The cycles wait for those
    // lines, so more than 5 cycles per source a minute (over ~50 cycles
    // with 10 sources) failed without this.
    void pace_kills(int source) {
        static constexpr std::size_t kDaemonLineBurst = 5;
        static constexpr auto kDaemonLineWindow = std::chrono::seconds(60);
        auto& times = kills_[source];
        if (times.size() >= kDaemonLineBurst) {
            // The burst's oldest kill must leave the window; 0.5 s spare for the
            // daemon's own clock reading the line later than this one.
            const auto free_at =
                times[times.size() - kDaemonLineBurst] + kDaemonLineWindow + std::chrono::milliseconds(500);
            if (const auto now = Clock::now(); now < free_at) {
                progress("pacing: %.1f s before source %d dies again (the daemon logs %zu lines per target a minute)",
                         std::chrono::duration<double>(free_at - now).count(), source, kDaemonLineBurst);
                std::this_thread::sleep_until(free_at);
            }
        }
        times.push_back(Clock::now());
    }
    MountWatcher watcher_;
    std::string events_dir_;
    bool collect_ = false;
    std::vector<LogLine> lines_;
    int heal_failures_ = 0;
    std::vector<std::string> failure_samples_;
};

// ---- report ------------------------------------------------------------------------------

std::string mib(long kib) { return kib < 0 ? "-" : fmt("%.1f", static_cast<double>(kib) / 1024.0); }

void report(const Options& o, const Results& r) {
    std::printf("\nfuse-healerd at scale (%s)\n\n", r.machine.c_str());
    std::printf("Node: %d pods, %d targets over %d FUSE sources (%d per source), %d containers (one mount namespace\n"
                "per pod holding only its volumes: %d mounts in all), %d filler mounts; the daemon's table: %d lines\n"
                "(the bench's own parse of it: %.1f ms). Setup %.1f s, daemon ready (all origins learned) in %.2f s.\n",
                o.pods, o.pods * o.targets_per_pod, o.sources, o.pods * o.targets_per_pod / o.sources, r.containers,
                r.container_mounts, r.filler, r.table_lines, r.read_mountinfo_ms, r.setup_s, r.daemon_ready_s);
    std::printf("Daemon arguments: %s\n\n", o.daemon_args_text.find("--log-level") == std::string::npos
                                                  ? ("--log-level info " + o.daemon_args_text).c_str()
                                                  : o.daemon_args_text.c_str());
    std::printf("What the daemon says it uses:\n\n| source | value |\n|--|--|\n");
    for (const auto& [k, v] : r.mechanisms) std::printf("| %s | %s |\n", k.c_str(), v.c_str());
    if (r.mechanisms.count("log: mount tracking") == 0 && r.mechanisms.count("status: mount_tracking") == 0)
        std::printf("| mount tracking | not stated by the daemon (main before fanotify: libmount's monitor of "
                    "/proc/self/mountinfo, the whole table re-read per event) |\n");

    auto of = [&](bool supervisor) {
        std::vector<const HealCycle*> v;
        for (const auto& c : r.cycles)
            if (!c.warmup && c.supervisor == supervisor) v.push_back(&c);
        return v;
    };
    auto col = [](const std::vector<const HealCycle*>& v, double HealCycle::*m) {
        std::vector<double> out;
        for (auto* c : v)
            if (!std::isnan(c->*m)) out.push_back(c->*m);
        return out;
    };
    const auto clean = of(false), sup = of(true);

    std::printf("\n## Summary\n\n| measure | goal | result | load averages (1/5/15 min) at start → end; share of both CPUs busy |\n|--|--|--|--|\n");
    if (r.events > 0)
        std::printf("| daemon CPU per unrelated mount event | <= 0.2 ms (fanotify path) | %s ms (%d events) | %s |\n",
                    fmt("%.3f", r.event_cpu_ms).c_str(), r.events, r.events_phase.describe().c_str());
    auto heal_row = [&](const char* what, const std::vector<const HealCycle*>& v, const Phase& ph) {
        if (v.empty()) return;
        auto first = col(v, &HealCycle::first_ms), all = col(v, &HealCycle::all_ms);
        std::printf("| %s: first copy healthy | <= 2 ms | p50 %s, p99 %s, max %s ms (%zu cycles) | %s |\n", what,
                    fmt("%.2f", percentile(first, 50)).c_str(), fmt("%.2f", percentile(first, 99)).c_str(),
                    fmt("%.2f", max_of(first)).c_str(), v.size(), ph.describe().c_str());
        std::printf("| %s: all %d copies healthy | <= 50 ms | p50 %s, p99 %s, max %s ms | |\n", what,
                    o.pods * o.targets_per_pod / o.sources, fmt("%.2f", percentile(all, 50)).c_str(),
                    fmt("%.2f", percentile(all, 99)).c_str(), fmt("%.2f", max_of(all)).c_str());
        auto first_switch = col(v, &HealCycle::first_switch_ms), all_switch = col(v, &HealCycle::all_switch_ms);
        std::printf("| %s, mount view (statx, no read): first copy on the new superblock | <= 2 ms | p50 %s, p99 %s, "
                    "max %s ms | |\n",
                    what, fmt("%.2f", percentile(first_switch, 50)).c_str(),
                    fmt("%.2f", percentile(first_switch, 99)).c_str(), fmt("%.2f", max_of(first_switch)).c_str());
        std::printf("| %s, mount view: all %d copies on it | <= 50 ms | p50 %s, p99 %s, max %s ms | |\n", what,
                    o.pods * o.targets_per_pod / o.sources, fmt("%.2f", percentile(all_switch, 50)).c_str(),
                    fmt("%.2f", percentile(all_switch, 99)).c_str(), fmt("%.2f", max_of(all_switch)).c_str());
    };
    heal_row("heal after the source is back (outage already logged)", clean, r.cycles_phase);
    heal_row("heal, supervisor restarts at once", sup, r.supervisor_phase);
    if (!clean.empty()) {
        auto det = col(clean, &HealCycle::detect_ms);
        const size_t missed = clean.size() - det.size();
        std::string res;
        if (det.empty())
            res = "not detected within " + std::to_string(o.detect_timeout_ms) + " ms in any of " +
                  std::to_string(clean.size()) + " cycles";
        else
            res = "p50 " + fmt("%.3f", percentile(det, 50)) + ", p99 " + fmt("%.3f", percentile(det, 99)) + ", max " +
                  fmt("%.3f", max_of(det)) + " ms (" + std::to_string(det.size()) + " of " + std::to_string(clean.size()) +
                  " cycles" + (missed ? "; " + std::to_string(missed) + " not detected within " +
                                            std::to_string(o.detect_timeout_ms) + " ms" : std::string()) + ")";
        std::map<std::string, int> how;
        for (auto* c : clean)
            if (!c->detect_how.empty()) how[c->detect_how]++;
        for (const auto& [h, k] : how) res += "; \"" + h + "\" x" + std::to_string(k);
        if (auto own = col(clean, &HealCycle::detect_daemon_ms); !own.empty())
            res += "; the daemon's own detection_latency_us: p50 " + fmt("%.3f", percentile(own, 50)) + ", p99 " +
                   fmt("%.3f", percentile(own, 99)) + " ms";
        std::printf("| detection: kill -9 -> outage logged | p99 <= 5 ms | %s | %s |\n", res.c_str(),
                    r.cycles_phase.describe().c_str());
    }
    if (!r.idle_per_second_ms.empty())
        std::printf("| idle CPU | - | %s ms in %.0f s = %s%% of one core | %s |\n",
                    fmt("%.1f", r.idle_cpu_ms).c_str(), r.idle_wall_s,
                    fmt("%.3f", r.idle_cpu_ms / 10.0 / r.idle_wall_s).c_str(), r.idle_phase.describe().c_str());
    std::printf("| RSS (VmRSS) | <= 16 MiB | %s MiB ready, %s after the events, %s after idle, %s after the heal cycles, "
                "%s at the end, %s settled (%d s later) | |\n",
                mib(r.mem_ready.rss_kib).c_str(), mib(r.mem_after_events.rss_kib).c_str(),
                mib(r.mem_after_idle.rss_kib).c_str(), mib(r.mem_after_cycles.rss_kib).c_str(),
                mib(r.mem_end.rss_kib).c_str(), mib(r.mem_settled.rss_kib).c_str(), r.settle_seconds);
    std::printf("| of which RssAnon (heap, stacks) | - | %s MiB ready, %s after the events, %s after idle, %s after the "
                "heal cycles, %s at the end, %s settled | |\n",
                mib(r.mem_ready.anon_kib).c_str(), mib(r.mem_after_events.anon_kib).c_str(),
                mib(r.mem_after_idle.anon_kib).c_str(), mib(r.mem_after_cycles.anon_kib).c_str(),
                mib(r.mem_end.anon_kib).c_str(), mib(r.mem_settled.anon_kib).c_str());
    std::printf("| peak RSS (VmHWM) | - | %s MiB | |\n", mib(r.mem_end.hwm_kib).c_str());
    if (r.churn_pairs > 0)
        std::printf("| CPU under %d mount+umount/s churn | < 5%% of one core | %s%% (%s ms in %.1f s) | %s |\n",
                    o.churn_rate, fmt("%.1f", r.churn_cpu_ms / 10.0 / r.churn_wall_s).c_str(),
                    fmt("%.0f", r.churn_cpu_ms).c_str(), r.churn_wall_s, r.churn_phase.describe().c_str());

    if (r.events > 0) {
        std::printf("\nUnrelated mount events: %d (mount, umount, ... of a tmpfs outside the kubelet root), each "
                    "waited out; the daemon counted %lld mount events and ran %lld reconciles in that time (two "
                    "`fuse-healerctl status` calls included). Event -> quiet again (minus the 20 ms quiet window): "
                    "p50 %s ms, max %s ms.\n",
                    r.events, static_cast<long long>(r.event_daemon_events),
                    static_cast<long long>(r.event_daemon_reconciles), fmt("%.1f", r.event_busy_p50_ms).c_str(),
                    fmt("%.1f", r.event_busy_max_ms).c_str());
    }
    if (r.churn_pairs > 0)
        std::printf("\nChurn: %ld pairs in %.1f s; the daemon counted %lld mount events and ran %lld reconciles "
                    "(coalesced); it was quiet again %s ms after the last pair.\n",
                    r.churn_pairs, r.churn_wall_s, static_cast<long long>(r.churn_daemon_events),
                    static_cast<long long>(r.churn_daemon_reconciles), fmt("%.0f", r.churn_tail_ms).c_str());
    if (!r.idle_per_second_ms.empty()) {
        std::string per;
        for (size_t i = 0; i < r.idle_per_second_ms.size(); i++)
            if (r.idle_per_second_ms[i] >= 0.05) per += " " + std::to_string(i + 1) + "s:" + fmt("%.1f", r.idle_per_second_ms[i]) + "ms";
        std::printf("\nIdle CPU by second (>= 0.05 ms only):%s\n", per.empty() ? " none" : per.c_str());
    }

    auto detail = [&](const char* title, const std::vector<const HealCycle*>& v) {
        if (v.empty()) return;
        std::printf("\n%s (%zu cycles, ms; p50 / p99 / max):\n\n", title, v.size());
        std::printf("| measure | p50 | p99 | max |\n|--|--:|--:|--:|\n");
        auto row = [&](const char* name, double HealCycle::*m, const char* f) {
            auto x = col(v, m);
            std::printf("| %s | %s | %s | %s |\n", name, fmt(f, percentile(x, 50)).c_str(), fmt(f, percentile(x, 99)).c_str(),
                        fmt(f, max_of(x)).c_str());
        };
        row("kill -9 -> outage-start line (detected cycles only)", &HealCycle::detect_ms, "%.3f");
        row("t0 -> the new source answers a stat (its FUSE daemon's start)", &HealCycle::answer_ms, "%.2f");
        row("t0 -> first container copy healthy", &HealCycle::first_ms, "%.2f");
        row("t0 -> all container copies healthy", &HealCycle::all_ms, "%.2f");
        row("t0 -> first container copy on the new superblock (mount view)", &HealCycle::first_switch_ms, "%.2f");
        row("the new source answers -> first copy on it (mount view)", &HealCycle::answer_to_first_switch_ms, "%.2f");
        row("t0 -> all container copies on it (mount view)", &HealCycle::all_switch_ms, "%.2f");
        row("t0 -> last host target healed (daemon log)", &HealCycle::host_ms, "%.2f");
        row("t0 -> the daemon's event (log time - since_event_us)", &HealCycle::event_delay_ms, "%.3f");
        row("event -> probe of the new source (probe_after_event_us)", &HealCycle::probe_after_event_ms, "%.3f");
        row("event -> first mount action (start_after_event_us)", &HealCycle::start_after_event_ms, "%.3f");
        row("event -> last target healed (since_event_us)", &HealCycle::since_event_max_ms, "%.2f");
        row("umount -l -> last target logged broken", &HealCycle::broken_all_ms, "%.2f");
        row("fh_testfs started -> its mount appeared", &HealCycle::spawn_to_mount_ms, "%.2f");
        row("daemon CPU per cycle", &HealCycle::daemon_cpu_ms, "%.0f");
        row("both CPUs busy during the cycle, %", &HealCycle::machine_busy_pct, "%.0f");
        long timer = 0, switch_timer = 0;
        int ns = 0, healed = 0;
        bool fifo = true;
        for (auto* c : v) {
            timer += c->by_timer;
            switch_timer += c->switched_by_timer;
            ns += c->ns_healed;
            healed += c->healed;
            fifo = fifo && c->fifo;
        }
        std::printf("\n%d healed lines with %d container copies healed in all; %ld copies first seen by a timer "
                    "sweep (mount view: %ld); t0 watcher at SCHED_FIFO: %s.\n",
                    healed, ns, timer, switch_timer, fifo ? "yes" : "no (t0 may be late under load)");
    };
    detail("Heal after the source is back, the outage logged first (kill -9, umount -l, all targets broken, then "
           "the new mount)",
           clean);
    detail("Heal with the supervisor restarting at once (kill -9, umount -l, start)", sup);
    if (!r.detect_sample.empty()) std::printf("\nOutage-start line taken (first cycle): %s\n", r.detect_sample.c_str());
    std::printf("\nMount counts before the cycles / after: host %d / %d, containers %d / %d. Heal failures logged: %d.\n",
                r.host_mounts_before, r.host_mounts_after, r.ctr_mounts_before, r.ctr_mounts_after, r.heal_failures);
    for (const auto& s : r.failure_samples) std::printf("  e.g. %s\n", s.c_str());
    std::printf("Containers' processes: Pss %s MiB in all (%d processes).\n", mib(r.containers_pss_kib).c_str(),
                r.containers);
    (void)std::fflush(stdout);  // nothing to do if stdout is gone
}

}  // namespace

int main(int argc, char** argv) {
    set_progress_name("scale_bench");
    Options o = parse_options(argc, argv);
    if (geteuid() != 0) {
        std::fprintf(stderr, "scale_bench: must run as root: it mounts FUSE filesystems and creates mount namespaces "
                             "(everything stays inside a private mount namespace of its own)\n");
        return 77;
    }
    const std::string daemon = o.daemon.empty() ? ft::daemon_path() : o.daemon;
    std::string why;
    if (!ft::Daemon::available(&why, daemon)) {
        std::fprintf(stderr, "scale_bench: %s\n", why.c_str());
        return 1;
    }
    if (ft::testfs_path().empty() || ft::ctl_path().empty()) {
        std::fprintf(stderr, "scale_bench: fh_testfs or fuse-healerctl was not built\n");
        return 1;
    }
    // Thousands of descriptors: one mountinfo per container.
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);

    const int machine_mounts_before = count_lines("/proc/1/mountinfo");
    if (!ft::enter_private_mount_namespace(&why)) {
        std::fprintf(stderr, "scale_bench: cannot enter a private mount namespace: %s\n", why.c_str());
        return 1;
    }
    Results r;
    r.machine = machine_description();
    progress("%s; daemon %s; load average %s", r.machine.c_str(), daemon.c_str(), loadavg().c_str());
    int rc = 0;
    try {
        Run(o, r).go();
    } catch (const std::exception& e) {
        // Children in our process group get a Ctrl-C too, so the daemon's
        // exit may be what the run tripped over: the signal is the reason.
        if (int s = g_signal.load()) {
            std::fprintf(stderr, "\nscale_bench: interrupted by %s (%s); partial results follow\n", strsignal(s), e.what());
            rc = 128 + s;
        } else {
            std::fprintf(stderr, "\nscale_bench: FAILED: %s\n", e.what());
            rc = 1;
        }
    }
    report(o, r);
    std::printf("\nmachine mount table (/proc/1/mountinfo): %d mounts before, %d after; total run time %.0f s\n",
                machine_mounts_before, count_lines("/proc/1/mountinfo"), r.run_s);
    progress("load average at end: %s", loadavg().c_str());
    return rc;
}
