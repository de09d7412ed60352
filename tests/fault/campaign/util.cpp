// Small helpers of the campaign: results, log tailing and parsing, /proc.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>
#include <sstream>

#include "campaign.h"

namespace fh::campaign {

void PhaseResult::fail(const std::string& what) {
    ++failures;
    problems.push_back(what);
    std::cerr << "campaign: FAIL [" << phase << "] " << what << std::endl;
}

void PhaseResult::note(const std::string& what) {
    notes.push_back(what);
    std::cerr << "campaign: [" << phase << "] " << what << std::endl;
}

std::vector<std::string> LogTail::next_lines() {
    std::vector<std::string> out;
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(offset_));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        offset_ += static_cast<std::uint64_t>(n);
        partial_.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    std::size_t start = 0;
    for (;;) {
        auto nl = partial_.find('\n', start);
        if (nl == std::string::npos) break;
        out.push_back(partial_.substr(start, nl - start));
        start = nl + 1;
    }
    partial_.erase(0, start);
    return out;
}

std::optional<std::string> log_field(const std::string& line, const std::string& key) {
    const std::string k = " " + key + "=";
    auto p = line.find(k);
    if (p == std::string::npos) return std::nullopt;
    p += k.size();
    auto e = line.find(' ', p);
    return line.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

std::optional<HealedLine> parse_healed_line(const std::string& line) {
    static const std::string marker = "mount healed: target=";
    auto p = line.find(marker);
    if (p == std::string::npos) return std::nullopt;
    HealedLine h;
    p += marker.size();
    h.target = line.substr(p, line.find(' ', p) - p);
    if (auto v = log_field(line, "since_event_us")) h.since_event_us = std::atoll(v->c_str());
    if (auto v = log_field(line, "heal_us")) h.heal_us = std::atoll(v->c_str());
    return h;
}

std::string normalize_log_line(const std::string& line) {
    // "2025-11-26T10:56:01.123456 info message": drop the first field.
    std::string s = line;
    auto sp = s.find(' ');
    if (sp != std::string::npos && sp > 0 && std::isdigit(static_cast<unsigned char>(s[0]))) s.erase(0, sp + 1);
    // Numbers of fields ("outage_us=123", "connection=0:52") vary between
    // repeats; names ("pod-12") do not.
    std::string out;
    bool in_number = false;
    for (char c : s) {
        const bool digit = std::isdigit(static_cast<unsigned char>(c));
        if (digit && (in_number || (!out.empty() && (out.back() == '=' || out.back() == ':')))) {
            if (!in_number) out += '#';
            in_number = true;
            continue;
        }
        in_number = false;
        out += c;
    }
    return out;
}

bool at_info_or_above(const std::string& line) {
    // "2025-11-26T10:56:01.123456 debug message"
    auto sp = line.find(' ');
    if (sp == std::string::npos) return true;
    return line.compare(sp + 1, 6, "debug ") != 0 && line.compare(sp + 1, 6, "trace ") != 0;
}

std::optional<double> process_cpu_seconds(pid_t pid) {
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return std::nullopt;
    auto paren = stat->rfind(')');
    if (paren == std::string::npos) return std::nullopt;
    std::istringstream in(stat->substr(paren + 2));
    // Fields from 3 (state) on: utime and stime are fields 14 and 15.
    std::string f;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && (in >> f); ++i) {
        if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
        if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

namespace {

// CPU ticks of each thread of pid.
std::map<std::string, unsigned long long> thread_ticks(pid_t pid) {
    std::map<std::string, unsigned long long> out;
    const std::string base = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = opendir(base.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        auto stat = read_file(base + "/" + e->d_name + "/stat");
        if (!stat) continue;
        auto paren = stat->rfind(')');
        std::istringstream in(stat->substr(paren + 2));
        std::string f;
        unsigned long long ticks = 0;
        for (int i = 3; i <= 15 && (in >> f); ++i)
            if (i == 14 || i == 15) ticks += std::strtoull(f.c_str(), nullptr, 10);
        out[e->d_name] = ticks;
    }
    closedir(d);
    return out;
}

std::string run_capture(const std::string& cmd, std::size_t max) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0 && out.size() < max) out.append(buf, n);
        ::pclose(p);
    }
    return out.substr(0, max);
}

}  // namespace

std::string diagnose_cpu(pid_t pid, std::chrono::milliseconds span) {
    auto a = thread_ticks(pid);
    std::this_thread::sleep_for(span);
    auto b = thread_ticks(pid);
    std::string out = "per-thread CPU over " + std::to_string(span.count()) + " ms:";
    const std::string base = "/proc/" + std::to_string(pid) + "/task/";
    for (const auto& [tid, ticks] : b) {
        const unsigned long long before = a.count(tid) ? a[tid] : 0;
        std::string comm = read_file(base + tid + "/comm").value_or("?\n");
        if (!comm.empty() && comm.back() == '\n') comm.pop_back();
        out += "\n  tid " + tid + " (" + comm + "): " + std::to_string(ticks - before) + " ticks, wchan " +
               read_file(base + tid + "/wchan").value_or("?");
    }
    const std::string p = std::to_string(pid);
    std::string stacks;
    if (::access("/usr/bin/eu-stack", X_OK) == 0) stacks = run_capture("eu-stack -p " + p + " 2>&1", 20000);
    else if (::access("/usr/bin/gdb", X_OK) == 0)
        stacks = run_capture("gdb -p " + p + " -batch -ex 'thread apply all bt' 2>&1", 20000);
    return out + "\nstacks:\n" + stacks;
}

int process_threads(pid_t pid) {
    auto st = read_file("/proc/" + std::to_string(pid) + "/status");
    if (!st) return -1;
    auto p = st->find("\nThreads:");
    if (p == std::string::npos) return -1;
    return std::atoi(st->c_str() + p + 9);
}

std::string fmt_us(std::int64_t us) {
    char buf[64];
    if (us >= 1000000) std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(us) / 1e6);
    else std::snprintf(buf, sizeof buf, "%.1f ms", static_cast<double>(us) / 1e3);
    return buf;
}

}  // namespace fh::campaign
