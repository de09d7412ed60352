// What the phases share: the daemon's config, the heal-line bookkeeping.
#include "common.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "heal_fixture.h"

namespace fh::campaign {

std::string daemon_toml(const std::string& extra) {
    // FH_CAMPAIGN_EXTRA_TOML: config lines added to every daemon's file, for
    // a diagnosis (e.g. "[heal]\nrestart_grace = \"0s\"").
    const char* more = std::getenv("FH_CAMPAIGN_EXTRA_TOML");
    return more && *more ? extra + "\n" + more + "\n" : extra;
}

std::vector<std::string> daemon_args() {
    // FH_CAMPAIGN_LOG_LEVEL=debug for a diagnosis; info is what a node runs.
    const char* level = std::getenv("FH_CAMPAIGN_LOG_LEVEL");
    return {"--log-level", level && *level ? level : "info"};
}

void start_daemon(Daemon& daemon, Node& node, const std::string& extra_toml) {
    daemon.start(daemon_toml(extra_toml), daemon_args());
    if (!daemon.wait_for_log("ready: watching", 10000ms))
        throw std::runtime_error("fuse-healerd did not start: " + daemon.log());
    for (const TargetInfo& t : node.targets())
        if (!daemon_learned(node.sandbox(), t.path, 10000ms))
            throw std::runtime_error("fuse-healerd did not learn the origin of " + t.path + ": " + daemon.log());
}

void LogWatch::take(const std::vector<std::string>& lines) {
    for (const std::string& l : lines) {
        ++lines_;
        if (auto h = parse_healed_line(l)) {
            healed[h->target]++;
            if (h->since_event_us >= max_since_event_us) slowest_heal = l;
            max_since_event_us = std::max(max_since_event_us, h->since_event_us);
            continue;
        }
        if (l.find(" mount broken: ") != std::string::npos) {
            if (auto t = log_field(l, "broken: target")) broken[*t]++;
            continue;
        }
        if (l.find("FUSE server died:") != std::string::npos) {
            ++server_died;
            continue;
        }
        if (l.find(" heal event lines not logged: ") != std::string::npos ||
            l.find(" FUSE death lines not logged: ") != std::string::npos) {
            ++rate_limit_summaries;
            continue;
        }
        // Everything else at warning level or above is worth a look.
        if (l.find(" warning ") != std::string::npos || l.find(" error ") != std::string::npos ||
            l.find(" critical ") != std::string::npos)
            other[normalize_log_line(l)]++;
    }
}

void LogWatch::clear() {
    healed.clear();
    broken.clear();
    other.clear();
    server_died = 0;
    rate_limit_summaries = 0;
}

std::string LogWatch::other_text(std::size_t max) const {
    std::vector<std::pair<int, std::string>> v;
    for (const auto& [k, n] : other) v.emplace_back(n, k);
    std::sort(v.rbegin(), v.rend());
    std::string out;
    for (std::size_t i = 0; i < v.size() && i < max; ++i)
        out += "\n    " + std::to_string(v[i].first) + " x " + v[i].second;
    return out;
}

void check_heal_lines(PhaseResult& r, const std::string& when, Node& node, const std::set<std::size_t>& crashed,
                      const std::map<std::string, int>& healed, bool allow_unlogged) {
    for (std::size_t di = 0; di < node.datasets().size(); ++di) {
        Dataset& d = node.dataset(di);
        for (std::size_t t : d.targets) {
            const std::string& p = node.targets()[t].path;
            auto it = healed.find(p);
            const int n = it == healed.end() ? 0 : it->second;
            if (crashed.count(di)) {
                r.heals += n;
                if (n > 1) r.fail(when + ": " + p + " healed " + std::to_string(n) + " times");
                if (n == 0 && !allow_unlogged) r.fail(when + ": no \"mount healed\" line for " + p);
            } else if (n != 0) {
                r.fail(when + ": " + p + " (its FUSE daemon did not crash) healed " + std::to_string(n) + " times");
            }
        }
    }
}

bool wait_heal_lines(LogTail& tail, LogWatch& watch, Node& node, const std::set<std::size_t>& crashed,
                     std::chrono::milliseconds timeout) {
    auto all = [&] {
        for (std::size_t di : crashed)
            for (std::size_t t : node.dataset(di).targets)
                if (!watch.healed.count(node.targets()[t].path)) return false;
        return true;
    };
    return wait_until(
        [&] {
            watch.take(tail.next_lines());
            return all();
        },
        timeout, 2ms);
}

void record_bad(PhaseResult& r, const std::string& when, const std::vector<std::string>& bad) {
    r.bad_states += static_cast<std::int64_t>(bad.size());
    for (std::size_t i = 0; i < bad.size() && i < 5; ++i) r.fail(when + ": bad state: " + bad[i]);
    if (bad.size() > 5) r.fail(when + ": ... and " + std::to_string(bad.size() - 5) + " more bad states");
}

void check_everything(PhaseResult& r, const std::string& when, Node& node) {
    for (const std::string& p : node.check_mounts(&r.leaked_mounts)) r.fail(when + ": " + p);
    for (auto& d : node.datasets()) record_bad(r, when, node.judge_readers(*d));
    record_bad(r, when, node.take_host_bad_states());
}

void keep_logs(const Options& o, Sandbox& sb, const std::string& tag) {
    if (o.keep_logs.empty()) return;
    make_dirs(o.keep_logs);
    DIR* dir = opendir(sb.runtime().c_str());
    if (!dir) return;
    while (dirent* e = readdir(dir)) {
        const std::string n = e->d_name;
        if (n.rfind("fuse-healerd-", 0) != 0 || n.size() < 4 || n.substr(n.size() - 4) != ".log") continue;
        if (auto text = read_file(sb.runtime() + "/" + n)) write_file(o.keep_logs + "/" + tag + "-" + n, *text);
    }
    closedir(dir);
}

std::string tail_text(const std::string& s, std::size_t n) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::optional<std::string> control_request(const std::string& socket_path, const std::string& request,
                                           std::chrono::milliseconds timeout, std::int64_t* latency_us) {
    const auto t0 = monotonic_usec();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket_path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return std::nullopt;
    }
    std::string line = request + "\n";
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        ::close(fd);
        return std::nullopt;
    }
    std::string got;
    const auto deadline = Clock::now() + timeout;
    while (got.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
        char buf[65536];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    if (latency_us) *latency_us = monotonic_usec() - t0;
    if (got.find('\n') == std::string::npos) return std::nullopt;
    return got;
}

namespace {

// The number after "key": in `s` from `from` on, or -1.
std::int64_t json_number(const std::string& s, const std::string& key, std::size_t from = 0,
                         std::size_t to = std::string::npos) {
    const std::string k = "\"" + key + "\":";
    auto p = s.find(k, from);
    if (p == std::string::npos || p >= to) return -1;
    return std::atoll(s.c_str() + p + k.size());
}

// The string after "key":" in `s` from `from` on (no escapes: the
// campaign's paths and states have none).
std::string json_string(const std::string& s, const std::string& key, std::size_t from, std::size_t to) {
    const std::string k = "\"" + key + "\":\"";
    auto p = s.find(k, from);
    if (p == std::string::npos || p >= to) return "";
    p += k.size();
    return s.substr(p, s.find('"', p) - p);
}

}  // namespace

std::optional<StatusView> daemon_status(const std::string& socket_path) {
    auto s = control_request(socket_path, "{\"command\":\"status\"}", 2000ms);
    if (!s || s->find("\"ok\":true") == std::string::npos) return std::nullopt;
    StatusView v;
    const auto list = s->find("\"targets\":[");
    v.targets = json_number(*s, "targets");
    v.broken = json_number(*s, "broken");
    v.heals = json_number(*s, "heals", 0, list);
    v.reconciles = json_number(*s, "reconciles");
    const std::string marker = "{\"target\":\"";
    for (auto p = s->find(marker, list); p != std::string::npos && list != std::string::npos;) {
        const auto next = s->find(marker, p + 1);
        const std::string path = json_string(*s, "target", p, next);
        StatusView::Target t;
        t.state = json_string(*s, "state", p, next);
        t.heals = json_number(*s, "heals", p, next);
        v.by_target[path] = t;
        p = next;
    }
    return v;
}

}  // namespace fh::campaign
