#include "bench_util.h"
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

namespace fh::bench {

namespace {

const char* g_progress_name = "bench";

// The integration harness's reader (the benches link it anyway).
std::optional<std::string> slurp(const std::string& path) { return fh::test::read_file(path); }

// Calls fn(tid_dir) for each thread of pid.
template <typename Fn>
void for_each_thread(pid_t pid, Fn fn) {
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = opendir(dir.c_str());
    if (!d) return;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        fn(dir + "/" + e->d_name);
    }
    closedir(d);
}

}  // namespace

void fail(const std::string& m) { throw BenchError(m); }
void fail_errno(const std::string& m) { fail(m + ": " + std::strerror(errno)); }

void set_progress_name(const char* name) { g_progress_name = name; }

void progress(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "[%s] ", g_progress_name);
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    va_end(ap);
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

long parse_long(const std::string& flag, const std::string& v, long min, void (*usage)(const std::string& why)) {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || !end || *end || errno || n < min) usage(flag + " wants an integer >= " + std::to_string(min));
    return n;
}

std::int64_t realtime_usec() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

double process_cpu_seconds(pid_t pid) {
    auto s = slurp("/proc/" + std::to_string(pid) + "/stat");
    if (!s) return -1;
    auto paren = s->rfind(')');
    if (paren == std::string::npos) return -1;
    std::istringstream in(s->substr(paren + 2));
    std::string f;
    unsigned long long utime = 0, stime = 0;
    // Fields after the comm: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
    for (int field = 3; field <= 15 && in >> f; field++) {
        if (field == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
        if (field == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::int64_t process_cpu_ns(pid_t pid) {
    clockid_t clk;
    if (clock_getcpuclockid(pid, &clk) != 0) return -1;
    timespec ts{};
    if (clock_gettime(clk, &ts) != 0) return -1;
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::uint64_t live_threads_cpu_ns(pid_t pid) {
    std::uint64_t sum = 0;
    for_each_thread(pid, [&](const std::string& t) {
        if (auto s = slurp(t + "/schedstat")) sum += std::strtoull(s->c_str(), nullptr, 10);
    });
    return sum;
}

bool any_thread_running(pid_t pid) {
    bool running = false;
    for_each_thread(pid, [&](const std::string& t) {
        if (running) return;
        auto s = slurp(t + "/stat");
        if (!s) return;
        auto paren = s->rfind(')');
        if (paren != std::string::npos && paren + 2 < s->size() && (*s)[paren + 2] == 'R') running = true;
    });
    return running;
}

void wait_quiet(pid_t pid, std::chrono::milliseconds window, std::chrono::seconds timeout) {
    using Clock = std::chrono::steady_clock;
    auto deadline = Clock::now() + timeout;
    std::uint64_t last = live_threads_cpu_ns(pid);
    auto stable_since = Clock::now();
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::uint64_t cur = live_threads_cpu_ns(pid);
        auto now = Clock::now();
        if (cur != last || any_thread_running(pid)) {
            last = cur;
            stable_since = now;
        } else if (now - stable_since >= window) {
            return;
        }
        if (now >= deadline) fail("fuse-healerd did not go quiet within " + std::to_string(timeout.count()) + " s");
    }
}

Memory process_memory(pid_t pid) {
    Memory m;
    auto s = slurp("/proc/" + std::to_string(pid) + "/status");
    if (!s) return m;
    std::istringstream in(*s);
    std::string line;
    while (std::getline(in, line)) {
        if (starts_with(line, "VmRSS:")) m.rss_kib = std::atol(line.c_str() + 6);
        if (starts_with(line, "VmHWM:")) m.hwm_kib = std::atol(line.c_str() + 6);
        if (starts_with(line, "RssAnon:")) m.anon_kib = std::atol(line.c_str() + 8);
    }
    return m;
}

std::string loadavg() {
    auto s = slurp("/proc/loadavg").value_or("? ? ?");
    std::istringstream in(s);
    std::string a, b, c;
    in >> a >> b >> c;
    return a + " " + b + " " + c;
}

MachineCpu machine_cpu() {
    MachineCpu m;
    auto s = slurp("/proc/stat");
    if (!s || !starts_with(*s, "cpu ")) return m;
    std::istringstream in(s->substr(4, s->find('\n') - 4));
    unsigned long long v[10] = {};
    for (int i = 0; i < 10 && in >> v[i]; i++) {
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest
    // time is already counted in user and nice.
    for (int i = 0; i < 8; i++) m.total += v[i];
    m.busy = m.total - v[3] - v[4];
    return m;
}

double busy_percent(const MachineCpu& a, const MachineCpu& b) {
    if (b.total <= a.total) return NAN;
    return 100.0 * static_cast<double>(b.busy - a.busy) / static_cast<double>(b.total - a.total);
}

std::string machine_description() {
    std::string kernel = slurp("/proc/sys/kernel/osrelease").value_or("?");
    while (!kernel.empty() && kernel.back() == '\n') kernel.pop_back();
    std::string cpu = "?";
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (starts_with(line, "model name")) {
            cpu = line.substr(line.find(':') + 2);
            break;
        }
    return "Linux " + kernel + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs (" + cpu + ")";
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    if (rank < 1) rank = 1;
    if (rank > v.size()) rank = v.size();
    return v[rank - 1];
}

double max_of(const std::vector<double>& v) { return v.empty() ? NAN : *std::max_element(v.begin(), v.end()); }
double min_of(const std::vector<double>& v) { return v.empty() ? NAN : *std::min_element(v.begin(), v.end()); }

std::vector<LogLine> LogTail::read_new() {
    std::vector<LogLine> out;
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    char buf[65536];
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, offset_);
        if (n <= 0) break;
        offset_ += n;
        partial_.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    size_t start = 0;
    for (;;) {
        size_t nl = partial_.find('\n', start);
        if (nl == std::string::npos) break;
        out.push_back(parse(partial_.substr(start, nl - start)));
        start = nl + 1;
    }
    partial_.erase(0, start);
    return out;
}

LogLine LogTail::parse(const std::string& line) {
    LogLine l;
    int Y, M, D, h, m, s, us;
    char rest_probe = 0;
    if (std::sscanf(line.c_str(), "%d-%d-%dT%d:%d:%d.%6d%c", &Y, &M, &D, &h, &m, &s, &us, &rest_probe) == 8) {
        tm t{};
        t.tm_year = Y - 1900;
        t.tm_mon = M - 1;
        t.tm_mday = D;
        t.tm_hour = h;
        t.tm_min = m;
        t.tm_sec = s;
        l.realtime_us = static_cast<std::int64_t>(timegm(&t)) * 1000000 + us;
        auto sp1 = line.find(' ');
        auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
        if (sp2 != std::string::npos) {
            l.level = line.substr(sp1 + 1, sp2 - sp1 - 1);
            l.text = line.substr(sp2 + 1);
            return l;
        }
    }
    l.realtime_us = 0;
    l.text = line;
    return l;
}

std::string field(const std::string& text, const std::string& key) {
    std::string k = " " + key + "=";
    auto p = text.find(k);
    if (p == std::string::npos) return "";
    p += k.size();
    auto e = text.find(' ', p);
    return text.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

}  // namespace fh::bench
