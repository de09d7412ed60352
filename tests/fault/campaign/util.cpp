// Small helpers of the campaign: results, log tailing and parsing, /proc.
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>
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
    std::string out;
    bool in_digits = false;
    for (char c : s) {
        if (std::isdigit(static_cast<unsigned char>(c))) {
            if (!in_digits) out += '#';
            in_digits = true;
        } else {
            out += c;
            in_digits = false;
        }
    }
    return out;
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
