// Phase "crashloop": every FUSE daemon in a crash loop (it lives 0-300 ms,
// dies by kill -9, its supervisor restarts it after a fixed delay), then
// left dead: fuse-healerd must not spin (its CPU time is measured) nor
// flood its log (its lines are counted, and the most repeated message).
#include <algorithm>
#include <cmath>
#include <iostream>

#include "common.h"

namespace fh::campaign {

namespace {

// CPU share of the daemon above which it is spinning: a busy loop is a whole
// core (100 %); an idle daemon is at 0.
constexpr double kIdleCpuLimit = 0.05;
// Log lines an idle daemon may write in an idle window (none expected).
constexpr int kIdleLinesLimit = 2;
// Reconciles an idle daemon may run in an idle window (3-10 s): the events of
// the sources' unmounts, the last failed heals' retries (each finds nothing
// to do) and the safety timer (30 s) give a few; a busy loop, hundreds.
constexpr int kIdleReconcilesLimit = 6;
// Log lines per crash and per target of the crashed daemon: a crash is worth
// "mount broken" and "mount healed" per target, a failed heal attempt and
// its retry at most; one "FUSE server died" per crash. More is a flood.
constexpr double kLinesPerCrashPerTargetLimit = 5.0;
// The most lines of one message (one event of one target, numbers aside) in
// any minute. One line per event is what an operator wants until the same
// target repeats itself: journald's own rate limit (10,000 lines per 30 s
// per service by default) otherwise drops every line of the service, the
// useful ones too, once a few hundred targets crash-loop together.
constexpr int kRepeatsPerMinuteLimit = 10;

// Arrival times of each message (normalized), to find the most repeated
// one in any minute.
struct Repeats {
    std::map<std::string, std::vector<std::int64_t>> times;
    std::map<std::int64_t, int> per_second;
    std::int64_t lines = 0;
    LogWatch watch;

    void take(const std::vector<std::string>& lines_read) {
        const std::int64_t now = monotonic_usec();
        watch.take(lines_read);
        for (const auto& l : lines_read) {
            if (!at_info_or_above(l)) continue;
            ++lines;
            times[normalize_log_line(l)].push_back(now);
            per_second[now / 1000000]++;
        }
    }
    // The largest number of one message within 60 s, and that message.
    std::pair<int, std::string> worst_minute() const {
        std::pair<int, std::string> worst{0, ""};
        for (const auto& [msg, ts] : times) {
            std::size_t lo = 0;
            for (std::size_t hi = 0; hi < ts.size(); ++hi) {
                while (ts[hi] - ts[lo] >= 60000000) ++lo;
                if (static_cast<int>(hi - lo + 1) > worst.first) worst = {static_cast<int>(hi - lo + 1), msg};
            }
        }
        return worst;
    }
    int peak_per_second() const {
        int peak = 0;
        for (const auto& [s, n] : per_second) peak = std::max(peak, n);
        return peak;
    }
};

struct Window {
    double cpu_share = 0;
    std::int64_t lines = 0;
    std::int64_t reconciles = -1;  // reconciles fuse-healerd ran in the window (its status), -1 unknown
    std::map<std::string, int> repeats;
};

// The "reconciles" counter of fuse-healerctl status, or -1.
std::int64_t reconciles_of(Daemon& daemon) {
    auto s = control_request(daemon.control_socket(), "{\"command\":\"status\"}", 2000ms);
    if (!s) return -1;
    auto p = s->find("\"reconciles\":");
    return p == std::string::npos ? -1 : std::atoll(s->c_str() + p + 13);
}

// Measures the daemon over `span`: its CPU share and the lines it logs.
Window idle_window(Daemon& daemon, LogTail& tail, std::chrono::milliseconds span) {
    Window w;
    tail.next_lines();
    const auto r0 = reconciles_of(daemon);
    const auto c0 = process_cpu_seconds(daemon.pid()).value_or(0);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(span);
    const auto c1 = process_cpu_seconds(daemon.pid()).value_or(0);
    const auto r1 = reconciles_of(daemon);
    if (r0 >= 0 && r1 >= 0) w.reconciles = r1 - r0;
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    w.cpu_share = (c1 - c0) / wall;
    for (const auto& l : tail.next_lines()) {
        if (!at_info_or_above(l)) continue;
        ++w.lines;
        w.repeats[normalize_log_line(l)]++;
    }
    return w;
}

std::string top_repeats(const std::map<std::string, int>& repeats, std::size_t n) {
    std::vector<std::pair<int, std::string>> v;
    for (const auto& [k, c] : repeats) v.emplace_back(c, k);
    std::sort(v.rbegin(), v.rend());
    std::string out;
    for (std::size_t i = 0; i < v.size() && i < n; ++i) {
        std::string line = v[i].second;
        if (line.size() > 160) line = line.substr(0, 160) + "...";
        out += "\n    " + std::to_string(v[i].first) + " x " + line;
    }
    return out;
}

std::string pct(double share) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %%", share * 100);
    return buf;
}

PhaseResult run_one(const Options& o, Rng& rng, const CrashLoopSpec& spec) {
    PhaseResult r;
    char title[128];
    std::snprintf(title, sizeof title, "crash loop, restart after %g s (3 FUSE daemons x %d crashes)",
                  spec.restart_after_s, spec.crashes);
    r.phase = title;
    const auto t_start = Clock::now();
    Sandbox sb;
    Node node(sb, NodeOptions{o.targets, o.reader_interval_us, o.fast_reader_interval_us, true});
    node.build();
    Daemon daemon(sb);
    start_daemon(daemon, node);
    LogTail tail(daemon.log_path());
    tail.next_lines();
    node.start_host_reader(o.host_reader_interval_us);

    const auto restart_after = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(spec.restart_after_s));
    struct State {
        bool up = true;
        int crashes = 0;
        Clock::time_point next;
    };
    std::vector<State> st(3);
    // Half the lives end within 30 ms of the mount, while fuse-healerd is
    // still healing from it (a heal of 17 targets and their containers
    // takes 20-60 ms here); so does the last one of each daemon, which
    // stays dead.
    auto lifetime = [&](bool last = false) {
        return std::chrono::milliseconds(last || rng.uniform(0, 1) == 0 ? rng.uniform(0, 30) : rng.uniform(30, 300));
    };
    for (auto& s : st) s.next = Clock::now() + lifetime();
    Repeats repeats;
    const pid_t pid = daemon.pid();
    const double c0 = process_cpu_seconds(pid).value_or(0);
    const auto t0 = Clock::now();
    for (;;) {
        std::size_t pick = 3;
        for (std::size_t i = 0; i < 3; ++i) {
            if (st[i].crashes >= spec.crashes && !st[i].up) continue;  // done: stays dead
            if (pick == 3 || st[i].next < st[pick].next) pick = i;
        }
        if (pick == 3) break;  // every daemon has crashed N times and stays dead
        std::this_thread::sleep_until(st[pick].next);
        Dataset& d = node.dataset(pick);
        if (st[pick].up) {
            node.crash(d);
            st[pick].up = false;
            ++st[pick].crashes;
            ++r.cycles;
            st[pick].next = Clock::now() + restart_after;
        } else {
            try {
                node.restart(d);
            } catch (const std::exception& e) {
                r.fail(d.name + ": the FUSE daemon did not come back: " + e.what());
                break;
            }
            st[pick].up = true;
            st[pick].next = Clock::now() + lifetime(st[pick].crashes + 1 == spec.crashes);
            if (st[pick].crashes + 1 == spec.crashes) {
                // The last life ends in the middle of the heals it starts:
                // right after the first target is healed from it, so that
                // the others' heals fail (their new source is dead again)
                // and the dataset then stays down.
                const std::string from = " source=" + d.source + " ";
                wait_until(
                    [&] {
                        const auto lines = tail.next_lines();
                        repeats.take(lines);
                        for (const auto& l : lines)
                            if (l.find("mount healed: ") != std::string::npos && l.find(from) != std::string::npos)
                                return true;
                        return false;
                    },
                    2000ms, 200us);
                st[pick].next = Clock::now();
            }
        }
        repeats.take(tail.next_lines());
        if (auto code = daemon.poll_exit()) {
            ++r.daemon_crashes;
            r.fail("fuse-healerd exited with " + std::to_string(*code) + ": " + tail_text(daemon.log()));
            return r;
        }
    }
    std::this_thread::sleep_for(200ms);  // the last death's lines
    repeats.take(tail.next_lines());
    const std::int64_t loop_lines = repeats.lines;
    const double c1 = process_cpu_seconds(pid).value_or(0);
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const double share = (c1 - c0) / wall;
    const auto worst = repeats.worst_minute();
    const double per_target = static_cast<double>(loop_lines) / static_cast<double>(r.cycles) /
                              (static_cast<double>(node.targets().size()) / 3.0);
    r.note("loop: " + std::to_string(r.cycles) + " crashes in " + std::to_string(static_cast<int>(wall)) +
           " s, fuse-healerd CPU " + pct(share) + " of one core, " + std::to_string(loop_lines) + " log lines (" +
           std::to_string(per_target).substr(0, 4) + " per crash per target), at most " +
           std::to_string(repeats.peak_per_second()) + " in a second; most repeated in a minute: " +
           std::to_string(worst.first) + " x " + worst.second.substr(0, 200));
    if (per_target > kLinesPerCrashPerTargetLimit)
        r.fail("log flood: " + std::to_string(per_target) + " lines per crash per target (limit " +
               std::to_string(kLinesPerCrashPerTargetLimit) + ")");
    if (worst.first > kRepeatsPerMinuteLimit)
        r.fail("log flood: one message " + std::to_string(worst.first) + " times within a minute (limit " +
               std::to_string(kRepeatsPerMinuteLimit) + "): " + worst.second.substr(0, 300));

    // Left dead, twice: the dead superblocks still mounted at the sources,
    // then the sources unmounted (the supervisor's umount -l, no restart).
    const auto span = std::chrono::milliseconds(
        static_cast<long long>(std::clamp(spec.restart_after_s, 3.0, 10.0) * 1000));
    Window dead = idle_window(daemon, tail, span);
    for (auto& d : node.datasets()) lazy_umount(d->source);
    Window gone = idle_window(daemon, tail, span);
    for (auto [name, w] : {std::pair{"dead sources still mounted", &dead}, std::pair{"sources unmounted", &gone}}) {
        r.note(std::string("idle ") + std::to_string(span.count() / 1000) + " s, " + name + ": CPU " +
               pct(w->cpu_share) + ", " + std::to_string(w->lines) + " log lines, " +
               std::to_string(w->reconciles) + " reconciles" + top_repeats(w->repeats, 3));
        // Nothing changes while everything is down: a reconcile or two (a
        // late event, the safety timer) at most.
        if (w->reconciles > kIdleReconcilesLimit)
            r.fail(std::string("busy: ") + std::to_string(w->reconciles) + " reconciles while idle (" + name + ")");
        if (w->cpu_share > kIdleCpuLimit)
            r.fail(std::string("busy: CPU ") + pct(w->cpu_share) + " while idle (" + name + "); " +
                   diagnose_cpu(daemon.pid(), 1000ms));
        if (w->lines > kIdleLinesLimit)
            r.fail(std::string("log lines while idle (") + name + "): " + std::to_string(w->lines) +
                   top_repeats(w->repeats, 3));
    }

    // Back for good: everything heals, nothing is left over.
    const auto back0 = monotonic_usec();
    for (auto& d : node.datasets()) node.restart(*d);
    for (auto& d : node.datasets()) {
        std::string why;
        auto healed = node.wait_healed(*d, d->generation, o.heal_timeout, &why);
        if (!healed) r.fail(d->name + ": not healed after the crash loop:" + why + "\n  " + tail_text(daemon.log()));
        else r.max_heal_delay_us = std::max(r.max_heal_delay_us, *healed - back0);
        d->lo.store(d->generation);
    }
    LogWatch watch;
    watch.take(tail.next_lines());
    // Every heal since the start (the log holds 5 a minute per target).
    wait_until(
        [&] {
            auto st = daemon_status(daemon.control_socket());
            return st && st->broken == 0 && st->targets == static_cast<std::int64_t>(node.targets().size());
        },
        3000ms, 10ms);
    if (auto st = daemon_status(daemon.control_socket())) {
        r.heals = st->heals;
        if (st->broken != 0) r.fail("fuse-healerctl status says " + std::to_string(st->broken) + " targets broken");
    } else {
        r.fail("fuse-healerd does not answer on its control socket");
    }
    r.max_since_event_us = std::max(repeats.watch.max_since_event_us, watch.max_since_event_us);
    node.stop_host_reader();
    check_everything(r, "after the crash loop", node);
    if (auto code = daemon.poll_exit()) {
        ++r.daemon_crashes;
        r.fail("fuse-healerd exited with " + std::to_string(*code));
    } else if (int code = daemon.terminate(); code != 0) {
        r.fail("fuse-healerd exited with " + std::to_string(code) + " on SIGTERM");
    }
    char tag[64];
    std::snprintf(tag, sizeof tag, "crashloop-%gs", spec.restart_after_s);
    keep_logs(o, sb, tag);
    r.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    return r;
}

}  // namespace

std::vector<PhaseResult> run_crash_loops(const Options& o, Rng& rng) {
    std::vector<PhaseResult> out;
    for (const auto& spec : o.crash_loops) out.push_back(run_one(o, rng, spec));
    return out;
}

}  // namespace fh::campaign
