// The fault campaign's driver (fh_fault_campaign): a node in miniature built
// with the integration harness (tests/integration/harness.h) inside a private
// mount namespace, and the four fault phases run against it:
//
//   cycles     kill -9 and supervisor restarts of the FUSE daemons, round robin
//              over fh_testfs, squashfuse and bindfs
//   crashloop  every FUSE daemon in a crash loop, restarted after a fixed delay
//   daemonkill fuse-healerd SIGKILLed at random points of its heals
//   hang       a SIGSTOPped FUSE daemon with thousands of requests pending
//
// Each phase builds its own Node (so that a failure in one cannot spoil the
// next) and returns a PhaseResult; main.cpp prints them as a table.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace fh::campaign {

using namespace fh::test;
using namespace std::chrono_literals;

// ---- options and results ---------------------------------------------------

struct CrashLoopSpec {
    double restart_after_s = 0.1;  // how long the supervisor waits before a restart
    int crashes = 20;              // crashes per FUSE daemon
};

struct Options {
    std::uint64_t seed = 0;
    int targets = 50;                 // targets over the three datasets
    int cycles = 90;                  // crash-and-restart cycles in all (round robin over the kinds)
    std::vector<CrashLoopSpec> crash_loops{{0.1, 20}};
    int daemon_kills = 10;
    int hang_seconds = 10;
    int hang_requests = 2000;         // requests left pending on the stopped FUSE daemon
    int reader_interval_us = 5000;    // container readers (one per dataset probes at fast_reader_interval_us)
    int fast_reader_interval_us = 1000;
    int host_reader_interval_us = 10000;  // one host thread reading every target, between rounds
    std::chrono::milliseconds heal_timeout = 15000ms;  // a target not healed by then is a failure
    int max_failures = 5;             // a phase stops after this many failures
    std::vector<std::string> phases{"cycles", "crashloop", "daemonkill", "hang"};
    bool verbose = false;
    std::string keep_logs;            // a directory that receives fuse-healerd's logs of every phase
};

// One row of the results table.
struct PhaseResult {
    std::string phase;                   // "cycles fh_testfs", "crash loop 0.1 s", ...
    std::int64_t cycles = 0;             // crash-and-restart cycles (or kills, hang rounds)
    std::int64_t heals = 0;              // target heals observed (one per target per cycle)
    std::int64_t failures = 0;           // checks that failed (details in `problems`)
    std::int64_t max_heal_delay_us = 0;  // source back (mount seen by the driver) -> last target reads new data
    std::int64_t max_since_event_us = 0; // the daemon's own since_event_us, max over the heals
    std::int64_t leaked_mounts = 0;      // mounts more or fewer than at the start, summed over checks
    std::int64_t bad_states = 0;         // reads that saw an empty directory, ENOENT or wrong data
    std::int64_t daemon_crashes = 0;     // fuse-healerd exits nobody asked for
    std::vector<std::string> notes;      // measurements (CPU, log lines, watchdog gaps, ...)
    std::vector<std::string> problems;   // every failure, with its context
    double seconds = 0;

    void fail(const std::string& what);
    void note(const std::string& what);
};

// ---- small helpers ------------------------------------------------------------

// A deterministic random source; the seed is printed so that a run can be
// repeated.
class Rng {
public:
    explicit Rng(std::uint64_t seed) : gen_(seed) {}
    // Uniform in [lo, hi].
    std::int64_t uniform(std::int64_t lo, std::int64_t hi) {
        return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen_);
    }
    double uniform_real(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen_); }
    std::mt19937_64& engine() { return gen_; }

private:
    std::mt19937_64 gen_;
};

// Reads a growing log file from where the last call stopped (a daemon's log
// reaches megabytes over a long run; reading it whole per cycle would not do).
class LogTail {
public:
    LogTail() = default;
    explicit LogTail(std::string path) : path_(std::move(path)) {}
    // Returns the complete lines appended since the last call.
    std::vector<std::string> next_lines();
    const std::string& path() const { return path_; }

private:
    std::string path_;
    std::uint64_t offset_ = 0;
    std::string partial_;
};

// Fields of a "mount healed: target=... since_event_us=N" line.
struct HealedLine {
    std::string target;
    std::int64_t since_event_us = 0;
    std::int64_t heal_us = 0;
};
std::optional<HealedLine> parse_healed_line(const std::string& line);
// Returns the value of "key=VALUE" (up to the next space) in a log line.
std::optional<std::string> log_field(const std::string& line, const std::string& key);
// Returns a log line without its timestamp, the numbers after '=' or ':'
// replaced by '#': repeats of one message (about one target) compare equal.
std::string normalize_log_line(const std::string& line);

// Returns whether a log line is at level info or above (not debug or trace):
// what a node logs.
bool at_info_or_above(const std::string& line);

// CPU time (user + system) of a process so far, in seconds; nullopt when gone.
std::optional<double> process_cpu_seconds(pid_t pid);
// What a process spends its CPU on: each thread's CPU time over `span`
// (with its name and wchan), then `eu-stack -p` (or gdb) when installed.
std::string diagnose_cpu(pid_t pid, std::chrono::milliseconds span);
// "Threads:" of /proc/<pid>/status, or -1.
int process_threads(pid_t pid);

std::string fmt_us(std::int64_t us);  // "12.3 ms"

// ---- the node -----------------------------------------------------------------

// The files a target serves, by the root of the dataset it is bound from.
struct RootView {
    std::string root;                 // "/", "/data" or "/sub"
    std::string file;                 // read by readers: "generation", "hello", "inner"
    std::vector<std::string> listing; // what a directory listing must show
    std::string contents(int generation) const;
    // The generation whose contents `s` is, or nullopt (wrong data).
    std::optional<int> generation_of(const std::string& s) const;
};
const RootView& root_view(const std::string& root);

enum class TargetKind { Staging, Volume, Subpath };
const char* to_string(TargetKind k);

struct TargetInfo {
    std::string path;
    std::string root;  // root inside the dataset ("/", "/data", "/sub")
    TargetKind kind = TargetKind::Volume;
    std::size_t dataset = 0;
};

// An emulated container holding one target, its probe always running.
struct Reader {
    std::unique_ptr<Container> container;
    std::size_t target = 0;
    ContainerPropagation propagation = ContainerPropagation::Private;
    std::size_t seen = 0;        // events already judged
    int last_generation = 0;     // the newest generation it has read
    int mounts_at_start = 0;     // its mount count once set up
};

struct Dataset {
    std::string name;            // "fh_testfs", "squashfuse", "bindfs"
    FuseKind kind = FuseKind::TestFs;
    std::string source;          // where the FUSE daemon mounts
    std::string staging;         // the CSI staging mount (a target too)
    std::unique_ptr<FuseDaemon> fuse;
    int generation = 1;
    std::vector<std::size_t> targets;
    std::vector<Reader> readers;
    // Generations a read may return now: [lo, hi] (the host reader thread).
    std::atomic<int> lo{1}, hi{1};
};

struct NodeOptions {
    int targets = 50;
    int reader_interval_us = 5000;
    int fast_reader_interval_us = 1000;
    bool readers = true;
};

// Three datasets (one per FUSE implementation) at <sandbox>/runtime/<name>/fuse,
// each with a CSI staging mount under <kubelet>/plugins and pod targets bound
// from it: volumes of the dataset root and of its data/ directory, and
// subPaths of its sub/ directory (the targets are spread evenly; 50 make
// 17 + 17 + 16). Per dataset five containers read continuously: a
// HostToContainer (slave) and a private one on a root volume, a private one
// on a data/ volume, a private and a slave one on a subPath.
class Node {
public:
    Node(Sandbox& sb, NodeOptions options);
    ~Node();

    // Starts the FUSE daemons (generation 1), binds the targets, starts the
    // containers and waits until they read. Throws on failure.
    void build();

    Sandbox& sandbox() { return sb_; }
    std::vector<std::unique_ptr<Dataset>>& datasets() { return datasets_; }
    Dataset& dataset(std::size_t i) { return *datasets_[i]; }
    const std::vector<TargetInfo>& targets() const { return targets_; }

    // Restarts a dataset's FUSE daemon as a supervisor does (umount -l the
    // stale source, start the next generation); returns the monotonic time
    // at which its new mount was seen. Throws when it does not come up.
    std::int64_t restart(Dataset& d);
    // kill -9 of the dataset's FUSE daemon (the mount stays, stale).
    void crash(Dataset& d);

    // Waits until every target of `d` reads generation `gen` on the host and
    // every reader of `d` has read it. Returns the monotonic time at which
    // the last one did, or nullopt on timeout (`why` says which did not).
    std::optional<std::int64_t> wait_healed(Dataset& d, int gen, std::chrono::milliseconds timeout,
                                            std::string* why);

    // Returns the mount problems now: counts under the sandbox, the kubelet
    // root and in every container differing from the start, stacks deeper
    // than one or not of the live superblock, a wrong root, a slave copy
    // that is no longer a slave of its source, a private one that is not
    // private. Only datasets whose daemon runs are checked for liveness.
    // Adds to *leaked the number of mounts more or fewer.
    std::vector<std::string> check_mounts(std::int64_t* leaked);

    // Judges the readers' events since the last call: anything but data of
    // an allowed generation (in order, never going back) or ENOTCONN /
    // ECONNABORTED is a bad state. Returns them.
    std::vector<std::string> judge_readers(Dataset& d);

    // A thread that reads every target on the host in a loop and records
    // what no reader may see (empty, ENOENT, wrong data).
    void start_host_reader(int interval_us);
    void stop_host_reader();
    std::vector<std::string> take_host_bad_states();
    std::uint64_t host_reads() const { return host_reads_.load(); }

    int kubelet_mounts_at_start() const { return kubelet_mounts_; }

private:
    void host_reader_main(int interval_us);

    Sandbox& sb_;
    NodeOptions options_;
    std::vector<std::unique_ptr<Dataset>> datasets_;
    std::vector<TargetInfo> targets_;
    int sandbox_mounts_ = 0;
    int kubelet_mounts_ = 0;

    std::thread host_reader_;
    std::atomic<bool> host_reader_stop_{false};
    std::atomic<std::uint64_t> host_reads_{0};
    std::mutex host_bad_mu_;
    std::vector<std::string> host_bad_;
};

// ---- phases -------------------------------------------------------------------

std::vector<PhaseResult> run_cycles(const Options& o, Rng& rng);
std::vector<PhaseResult> run_crash_loops(const Options& o, Rng& rng);
PhaseResult run_daemon_kills(const Options& o, Rng& rng);
PhaseResult run_hang(const Options& o, Rng& rng);

// The config every phase's fuse-healerd runs with (on top of the harness's).
std::string daemon_toml(const std::string& extra = "");
// fuse-healerd's arguments in every phase: info, the level of production.
std::vector<std::string> daemon_args();

// The blocker child: `fh_fault_campaign --block THREADS PATH...` starts
// THREADS threads that each statx(AT_STATX_FORCE_SYNC) one of the PATHs (a
// FUSE GETATTR each); it prints "started N" and exits once all returned.
int run_blocker(int argc, char** argv);

}  // namespace fh::campaign
