// detection_bench: how soon fuse-healerd logs a FUSE daemon's death, and
// what the walk of /proc that maps connections to their servers costs.
//
//   detection_bench [--cycles 50] [--warmup 2] [--walk-processes 0,1000,4000]
//                   [--walk-fds 16] [--walk-repeats 5] [--daemon PATH] [--keep-logs DIR]
//
// Must run as root. Everything happens inside a private mount namespace that
// this process creates (fh::test::enter_private_mount_namespace), in a tmpfs
// sandbox; nothing reaches the machine's mount table.
//
// Detection: fh_testfs sources at <sandbox>/runtime/ds<i>/fuse, one pod
// volume bound from each (one source per 5 kills: the daemon logs at most 5
// deaths of one source a minute), fuse-healerd with --log-level info and
// safety_scan_interval = "0s" (the pidfd is the only way it can learn of the
// death). A cycle:
//   1. wait until the daemon logs "watching FUSE server fh_testfs (pid P)";
//   2. t0 = CLOCK_REALTIME, then kill(P, SIGKILL);
//   3. wait for "FUSE server died: ... pid=P" and read from that line:
//        - its log timestamp (spdlog takes it when the line is logged):
//          kill -> log = timestamp - t0;
//        - outage_start (the wall clock when the loop woke up on the pidfd):
//          kill -> wake-up = outage_start - t0;
//        - detection_latency_us (the daemon's own measure, wake-up -> log);
//   4. restart the source the way a supervisor does (umount -l, mount again)
//      and wait until the volume reads the new generation.
// --warmup cycles are run first and not counted. FH_BENCH_LOG_LEVEL=debug runs
// the daemon at that level (default info).
//
// Walk: for each N in --walk-processes, N idle processes holding --walk-fds
// open files each are started (forked children, killed afterwards), and the
// walk of /proc that the death watch runs on libuv's thread pool
// (scan_fuse_servers) is timed --walk-repeats times; the median is reported
// with the number of processes and fds it read. Then one more process is
// started and the walk the death watch makes after a FUSE daemon's restart
// is timed: only the processes the first walk did not list are looked at.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <memory>
#include <vector>

#include "bench_util.h"
#include "engine/server_scan.h"
#include "harness.h"

namespace ft = fh::test;
using namespace std::chrono_literals;

namespace {

struct Options {
    int cycles = 50;
    int warmup = 2;
    std::vector<int> walk_processes = {0, 1000, 4000};
    int walk_fds = 16;
    int walk_repeats = 5;
    std::string daemon;
    std::string keep_logs;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "detection_bench: %s\n"
                 "usage: detection_bench [--cycles 50] [--warmup 2] [--walk-processes 0,1000,4000] [--walk-fds 16]\n"
                 "                       [--walk-repeats 5] [--daemon PATH] [--keep-logs DIR]\n",
                 why.c_str());
    std::exit(64);
}

long parse_long(const std::string& flag, const std::string& v, long min) {
    return fh::bench::parse_long(flag, v, min, usage);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") usage("help");
        if (i + 1 >= argc) usage(a + " needs a value");
        const std::string v = argv[++i];
        if (a == "--cycles") o.cycles = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--warmup") o.warmup = static_cast<int>(parse_long(a, v, 0));
        else if (a == "--walk-fds") o.walk_fds = static_cast<int>(parse_long(a, v, 0));
        else if (a == "--walk-repeats") o.walk_repeats = static_cast<int>(parse_long(a, v, 1));
        else if (a == "--daemon") o.daemon = v;
        else if (a == "--keep-logs") o.keep_logs = v;
        else if (a == "--walk-processes") {
            o.walk_processes.clear();
            std::istringstream in(v);
            for (std::string part; std::getline(in, part, ',');)
                o.walk_processes.push_back(static_cast<int>(parse_long(a, part, 0)));
        } else usage("unknown option " + a);
    }
    return o;
}

std::int64_t realtime_usec() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// Returns the microseconds since the epoch of a daemon log line's leading
// local timestamp ("2026-11-26T11:49:17.638682 warning ..."), or -1.
std::int64_t log_line_usec(const std::string& line) {
    std::tm tm{};
    const char* rest = strptime(line.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest || *rest != '.') return -1;
    tm.tm_isdst = -1;
    const std::time_t secs = std::mktime(&tm);
    return static_cast<std::int64_t>(secs) * 1000000 + std::strtoll(rest + 1, nullptr, 10);
}

// Returns the microseconds since the epoch of "outage_start=<UTC>Z" in a
// "FUSE server died" line, or -1.
std::int64_t outage_start_usec(const std::string& line) {
    const auto at = line.find("outage_start=");
    if (at == std::string::npos) return -1;
    std::tm tm{};
    const char* rest = strptime(line.c_str() + at + 13, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest || *rest != '.') return -1;
    const std::time_t secs = timegm(&tm);
    return static_cast<std::int64_t>(secs) * 1000000 + std::strtoll(rest + 1, nullptr, 10);
}

std::int64_t field_value(const std::string& line, const std::string& key) {
    const auto at = line.find(" " + key + "=");
    return at == std::string::npos ? -1 : std::strtoll(line.c_str() + at + key.size() + 2, nullptr, 10);
}

// The last line of `text` containing `needle` (from `from` on), or "".
std::string last_line_with(const std::string& text, const std::string& needle, std::size_t from = 0) {
    const auto at = text.rfind(needle);
    if (at == std::string::npos || at < from) return "";
    const auto begin = text.rfind('\n', at);
    const auto end = text.find('\n', at);
    return text.substr(begin == std::string::npos ? 0 : begin + 1,
                       (end == std::string::npos ? text.size() : end) - (begin == std::string::npos ? 0 : begin + 1));
}

struct Stats {
    std::vector<double> v;
    double pct(double p) {
        if (v.empty()) return 0;
        std::sort(v.begin(), v.end());
        const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size())));
        return v[i];
    }
};

void print_stats(const char* what, Stats s) {
    std::printf("  %-34s p50 %8.1f  p90 %8.1f  p99 %8.1f  max %8.1f  (us, n=%zu)\n", what, s.pct(50), s.pct(90),
                s.pct(99), s.pct(100), s.v.size());
}

// The daemon logs at most kDeathLinesPerSource deaths of one source a
// minute (a crash loop's lines are summed up): the kills rotate over enough
// sources that none dies more often than that within the run.
constexpr int kDeathLinesPerSource = 5;

void run_detection(const Options& o) {
    ft::Sandbox sb;
    const int kills = o.warmup + o.cycles;
    const int sources = (kills + kDeathLinesPerSource - 1) / kDeathLinesPerSource;
    std::vector<std::unique_ptr<ft::FuseDaemon>> fuse;
    std::vector<std::string> vols;
    for (int i = 0; i < sources; ++i) {
        fuse.push_back(std::make_unique<ft::FuseDaemon>(sb, sb.runtime() + "/ds" + std::to_string(i) + "/fuse"));
        fuse.back()->start(1);
        vols.push_back(sb.make_pod_volume("pod-" + std::to_string(i), "pvc-1"));
        ft::csi_bind(fuse.back()->source(), "", vols.back(), true);
    }
    ft::Daemon d{sb, o.daemon.empty() ? ft::daemon_path() : o.daemon};
    d.start("[heal]\nsafety_scan_interval = \"0s\"\n", {"--log-level", std::getenv("FH_BENCH_LOG_LEVEL") ? std::getenv("FH_BENCH_LOG_LEVEL") : "info"});
    if (!d.wait_for_log("ready: watching", 10s)) throw std::runtime_error("fuse-healerd did not start:\n" + d.log());
    if (d.log().find("death detection=pidfd") == std::string::npos)
        throw std::runtime_error("fuse-healerd does not use the pidfd death watch here:\n" + d.log());
    Stats kill_to_log, kill_to_wake, wake_to_log;
    for (int cycle = 0; cycle < kills; ++cycle) {
        ft::FuseDaemon& f = *fuse[cycle % sources];
        const std::string& vol = vols[cycle % sources];
        const pid_t pid = f.pid();
        const std::string watching = "watching FUSE server fh_testfs (pid " + std::to_string(pid) + ")";
        if (!d.wait_for_log(watching, 10s)) throw std::runtime_error("not watched: " + watching + "\n" + d.log());
        // Let the reconcile and the walk of the last restart settle.
        std::this_thread::sleep_for(50ms);
        const std::size_t mark = d.log().size();
        const std::string died = "FUSE server died: connection=" + f.mount().device + " pid=" + std::to_string(pid) + " ";
        const std::int64_t t0 = realtime_usec();
        f.kill9();
        if (!d.wait_for_log(died, 10s, mark))
            throw std::runtime_error("no death logged for pid " + std::to_string(pid) + ":\n" + d.log().substr(mark > 4000 ? mark - 4000 : 0));
        const std::string line = last_line_with(d.log(), died, mark);
        if (cycle >= o.warmup) {
            kill_to_log.v.push_back(static_cast<double>(log_line_usec(line) - t0));
            kill_to_wake.v.push_back(static_cast<double>(outage_start_usec(line) - t0));
            wake_to_log.v.push_back(static_cast<double>(field_value(line, "detection_latency_us")));
        }
        const int generation = f.generation() + 1;
        f.supervisor_restart(generation);
        if (!ft::wait_until([&] { return ft::read_file(vol + "/generation") == std::to_string(generation) + "\n"; }, 10s))
            throw std::runtime_error("not healed after the restart:\n" + d.log());
    }
    std::printf("detection latency, kill -9 of a FUSE daemon -> \"FUSE server died\" logged (%d cycles, %d warm-up, "
                "over %d sources):\n",
                o.cycles, o.warmup, sources);
    print_stats("kill -> log line (log timestamp)", kill_to_log);
    print_stats("kill -> loop wake-up (outage_start)", kill_to_wake);
    print_stats("wake-up -> log (detection_latency_us)", wake_to_log);
    if (!o.keep_logs.empty()) ft::write_file(o.keep_logs + "/detection_bench-fuse-healerd.log", d.log());
    d.terminate();
}

// N idle children holding `fds` open files each; killed on destruction.
class Crowd {
public:
    Crowd(int n, int fds) {
        for (int i = 0; i < n; ++i) {
            const pid_t pid = ::fork();
            if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
            if (pid == 0) {
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (int k = 0; k < fds; ++k) ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // held, never exec
                for (;;) ::pause();
            }
            pids_.push_back(pid);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200 + n / 10));  // let them open their files
    }
    ~Crowd() {
        for (pid_t p : pids_) ::kill(p, SIGKILL);
        for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
    }

private:
    std::vector<pid_t> pids_;
};

void run_walk(const Options& o) {
    std::printf("walk of /proc for FUSE servers (scan_fuse_servers, median of %d):\n", o.walk_repeats);
    for (int n : o.walk_processes) {
        Crowd crowd(n, o.walk_fds);
        std::vector<double> took;
        fh::ServerScan last;
        for (int r = 0; r < o.walk_repeats; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            last = fh::scan_fuse_servers("/proc", ::getpid());
            took.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(took.begin(), took.end());
        std::printf("  +%5d idle processes (%2d extra fds each): %6d processes, %7d fds read, %8.0f us\n", n,
                    o.walk_fds, last.processes, last.fds, took[took.size() / 2]);
        // What the death watch does after a FUSE daemon restarted: the
        // processes listed by the last walk are skipped, the new ones looked at.
        const std::set<int> known = last.pids;
        Crowd newcomer(1, o.walk_fds);
        std::vector<double> quick;
        fh::ServerScan fresh;
        for (int r = 0; r < o.walk_repeats; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            fresh = fh::scan_fuse_servers("/proc", ::getpid(), [&](int pid) { return !known.count(pid); });
            quick.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(quick.begin(), quick.end());
        std::printf("  %*s new processes only (after a restart): %6d processes, %7d fds read, %8.0f us\n", 26, "",
                    fresh.processes, fresh.fds, quick[quick.size() / 2]);
    }
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    if (::geteuid() != 0) {
        std::fprintf(stderr, "detection_bench: must run as root\n");
        return 77;
    }
    std::string why;
    if (!ft::enter_private_mount_namespace(&why)) {
        std::fprintf(stderr, "detection_bench: %s\n", why.c_str());
        return 1;
    }
    try {
        run_detection(o);
        run_walk(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "detection_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
