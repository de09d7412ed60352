// Helpers shared by the benchmarks in bench/: errors, progress lines, the
// daemon's CPU and memory from /proc, percentiles, and an incremental reader
// of fuse-healerd's stderr log. Benchmarks only; nothing here is part of the
// daemon.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fh::bench {

// ---- errors and progress ----------------------------------------------------

struct BenchError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& m);
// Throws BenchError("m: strerror(errno)").
[[noreturn]] void fail_errno(const std::string& m);

// Progress lines go to stderr as "[<name>] text"; the name is set once by main().
void set_progress_name(const char* name);
void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

bool starts_with(const std::string& s, const std::string& prefix);

// Returns `v` as an integer >= `min`; otherwise calls `usage` (which exits)
// with "<flag> wants an integer >= <min>".
long parse_long(const std::string& flag, const std::string& v, long min, void (*usage)(const std::string& why));

// ---- clocks and /proc ---------------------------------------------------------

// Returns CLOCK_REALTIME in microseconds (comparable with the daemon's log timestamps).
std::int64_t realtime_usec();

// Returns utime+stime of a process (all its threads, exited ones included)
// in seconds, with the clock tick's resolution (10 ms); -1 when unreadable.
double process_cpu_seconds(pid_t pid);

// Returns the process's CPU time in nanoseconds from its CPU-time clock
// (clock_getcpuclockid: every thread, exited ones included, ns resolution);
// -1 when the process is gone.
std::int64_t process_cpu_ns(pid_t pid);

// Returns the sum of the live threads' on-CPU nanoseconds (schedstat).
std::uint64_t live_threads_cpu_ns(pid_t pid);

// Returns true when any thread of `pid` is running or runnable (state R).
bool any_thread_running(pid_t pid);

// Waits until the daemon has used no CPU for `window` and none of its threads
// is runnable (a runnable thread that other load keeps off the CPU is not
// quiet). Throws when it does not go quiet within `timeout`.
void wait_quiet(pid_t pid, std::chrono::milliseconds window = std::chrono::milliseconds(50),
                std::chrono::seconds timeout = std::chrono::seconds(60));

// Memory of a process from /proc/<pid>/status, in KiB (-1 when unreadable):
// VmRSS (= RssAnon + RssFile + RssShmem), its peak VmHWM, and RssAnon (the
// heap and stacks; RssFile is mostly the shared libraries' pages).
struct Memory {
    long rss_kib = -1;
    long hwm_kib = -1;
    long anon_kib = -1;
};
Memory process_memory(pid_t pid);

// Returns "1-min 5-min 15-min" from /proc/loadavg.
std::string loadavg();

// The whole machine's CPU time from /proc/stat, in clock ticks: every CPU's
// busy time (all but idle and iowait) and its total.
struct MachineCpu {
    unsigned long long busy = 0;
    unsigned long long total = 0;
};
MachineCpu machine_cpu();
// Returns the share of the machine's CPUs that were busy between `a` and
// `b`, in percent of all CPUs (100 = every CPU busy); NAN when no time passed.
double busy_percent(const MachineCpu& a, const MachineCpu& b);
// Returns e.g. "Linux 6.18.44, 2 CPUs (AMD EPYC ...)".
std::string machine_description();

// ---- statistics -----------------------------------------------------------------

// Nearest-rank percentile (p in 0..100); NAN when empty.
double percentile(std::vector<double> v, double p);
double max_of(const std::vector<double>& v);
double min_of(const std::vector<double>& v);

// ---- the daemon's log ------------------------------------------------------------

// One line of fuse-healerd's stderr log ("2025-01-02T03:04:05.123456 info text").
struct LogLine {
    std::int64_t realtime_us = 0;  // the line's timestamp (the daemon must run with TZ=UTC); 0 when unparsable
    std::string level;
    std::string text;  // after the level
};

// Reads a log file incrementally (it grows to megabytes at 1000 targets).
class LogTail {
public:
    explicit LogTail(std::string path) : path_(std::move(path)) {}
    // Returns the complete lines added since the last call.
    std::vector<LogLine> read_new();
    static LogLine parse(const std::string& line);

private:
    std::string path_;
    off_t offset_ = 0;
    std::string partial_;
};

// Returns the value of ` key=` in a log line's text, up to the next space, or "".
std::string field(const std::string& text, const std::string& key);

}  // namespace fh::bench
