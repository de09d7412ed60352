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
// Log lines per crash and per target of the crashed daemon: a crash is worth
// "mount broken" and "mount healed" per target, a failed heal attempt and
// its retry at most; one "FUSE server died" per crash. More is a flood.
constexpr double kLinesPerCrashPerTargetLimit = 5.0;

struct Window {
    double cpu_share = 0;
    std::int64_t lines = 0;
    std::map<std::string, int> repeats;
};

// Measures the daemon over `span`: its CPU share and the lines it logs.
Window idle_window(Daemon& daemon, LogTail& tail, std::chrono::milliseconds span) {
    Window w;
    tail.next_lines();
    const auto c0 = process_cpu_seconds(daemon.pid()).value_or(0);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(span);
    const auto c1 = process_cpu_seconds(daemon.pid()).value_or(0);
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    w.cpu_share = (c1 - c0) / wall;
    for (const auto& l : tail.next_lines()) {
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
    auto lifetime = [&] { return std::chrono::milliseconds(rng.uniform(0, 300)); };
    for (auto& s : st) s.next = Clock::now() + lifetime();
    std::map<std::string, int> repeats;
    std::int64_t loop_lines = 0;
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
            st[pick].next = Clock::now() + lifetime();
        }
        for (const auto& l : tail.next_lines()) {
            ++loop_lines;
            repeats[normalize_log_line(l)]++;
        }
        if (auto code = daemon.poll_exit()) {
            ++r.daemon_crashes;
            r.fail("fuse-healerd exited with " + std::to_string(*code) + ": " + tail_text(daemon.log()));
            return r;
        }
    }
    std::this_thread::sleep_for(200ms);  // the last death's lines
    for (const auto& l : tail.next_lines()) {
        ++loop_lines;
        repeats[normalize_log_line(l)]++;
    }
    const double c1 = process_cpu_seconds(pid).value_or(0);
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const double share = (c1 - c0) / wall;
    const double per_target = static_cast<double>(loop_lines) / static_cast<double>(r.cycles) /
                              (static_cast<double>(node.targets().size()) / 3.0);
    r.note("loop: " + std::to_string(r.cycles) + " crashes in " + std::to_string(static_cast<int>(wall)) +
           " s, fuse-healerd CPU " + pct(share) + " of one core, " + std::to_string(loop_lines) + " log lines (" +
           std::to_string(per_target).substr(0, 4) + " per crash per target); most repeated:" +
           top_repeats(repeats, 4));
    if (per_target > kLinesPerCrashPerTargetLimit)
        r.fail("log flood: " + std::to_string(per_target) + " lines per crash per target (limit " +
               std::to_string(kLinesPerCrashPerTargetLimit) + ")");

    // Left dead, twice: the dead superblocks still mounted at the sources,
    // then the sources unmounted (the supervisor's umount -l, no restart).
    const auto span = std::chrono::milliseconds(
        static_cast<long long>(std::clamp(spec.restart_after_s, 3.0, 10.0) * 1000));
    Window dead = idle_window(daemon, tail, span);
    for (auto& d : node.datasets()) lazy_umount(d->source);
    Window gone = idle_window(daemon, tail, span);
    for (auto [name, w] : {std::pair{"dead sources still mounted", &dead}, std::pair{"sources unmounted", &gone}}) {
        r.note(std::string("idle ") + std::to_string(span.count() / 1000) + " s, " + name + ": CPU " +
               pct(w->cpu_share) + ", " + std::to_string(w->lines) + " log lines" + top_repeats(w->repeats, 3));
        if (w->cpu_share > kIdleCpuLimit)
            r.fail(std::string("busy: CPU ") + pct(w->cpu_share) + " while idle (" + name + ")");
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
    std::set<std::size_t> all{0, 1, 2};
    wait_heal_lines(tail, watch, node, all, 3000ms);
    for (auto& [t, n] : watch.healed) r.heals += n;
    r.max_since_event_us = watch.max_since_event_us;
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
