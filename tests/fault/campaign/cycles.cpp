// Phase "cycles": kill -9 of one FUSE daemon and its restart by a
// supervisor, round robin over fh_testfs, squashfuse and bindfs, with every
// check after every cycle.
#include <iostream>

#include "common.h"

namespace fh::campaign {

std::vector<PhaseResult> run_cycles(const Options& o, Rng& rng) {
    std::vector<PhaseResult> results(3);
    const auto t_start = Clock::now();
    Sandbox sb;
    Node node(sb, NodeOptions{o.targets, o.reader_interval_us, o.fast_reader_interval_us, true});
    node.build();
    for (std::size_t i = 0; i < 3; ++i) {
        results[i].phase = "crash-and-restart cycles, " + node.dataset(i).name + " (" +
                           std::to_string(node.dataset(i).targets.size()) + " targets)";
    }
    Daemon daemon(sb);
    start_daemon(daemon, node);
    LogTail tail(daemon.log_path());
    LogWatch watch;
    watch.take(tail.next_lines());
    watch.clear();
    node.start_host_reader(o.host_reader_interval_us);
    // Heals per target, from fuse-healerctl status: exact, where the log
    // holds at most 5 lines of one event per target a minute (and each
    // target here crashes every 3 cycles).
    std::map<std::string, std::int64_t> heals;
    {
        auto st = daemon_status(daemon.control_socket());
        if (!st) throw std::runtime_error("fuse-healerd does not answer on its control socket");
        for (const auto& [t, v] : st->by_target) heals[t] = v.heals;
    }

    std::int64_t total_failures = 0;
    int summaries = 0;  // the daemon's once-a-minute lines on repeats it did not log
    for (int c = 0; c < o.cycles; ++c) {
        const std::size_t di = static_cast<std::size_t>(c % 3);
        Dataset& d = node.dataset(di);
        PhaseResult& r = results[di];
        const std::string when = "cycle " + std::to_string(c + 1) + " (" + d.name + " generation " +
                                 std::to_string(d.generation + 1) + ")";
        const std::int64_t failures_before = r.failures;
        ++r.cycles;
        // The supervisor's pause: none in a quarter of the cycles (the
        // source is back before the death is even noticed), else 1-100 ms.
        const auto pause = rng.uniform(0, 3) == 0 ? 0 : rng.uniform(1, 100);
        node.crash(d);
        std::this_thread::sleep_for(std::chrono::milliseconds(pause));
        std::int64_t back = 0;
        try {
            back = node.restart(d);
        } catch (const std::exception& e) {
            r.fail(when + ": the FUSE daemon did not come back: " + e.what());
            break;
        }
        std::string why;
        auto healed = node.wait_healed(d, d.generation, o.heal_timeout, &why);
        if (!healed) {
            r.fail(when + ": not healed within " + std::to_string(o.heal_timeout.count()) + " ms:" + why +
                   "\n  daemon log: " + tail_text(daemon.log()));
        } else {
            r.max_heal_delay_us = std::max(r.max_heal_delay_us, *healed - back);
            if (o.verbose)
                std::cerr << "campaign: " << when << ": healed " << fmt_us(*healed - back) << " after the restart"
                          << std::endl;
        }
        d.lo.store(d.generation);
        // Every target of the crashed dataset healed once, no other one.
        std::optional<StatusView> st;
        wait_until(
            [&] {
                st = daemon_status(daemon.control_socket());
                if (!st) return false;
                for (std::size_t t : d.targets) {
                    const std::string& p = node.targets()[t].path;
                    auto it = st->by_target.find(p);
                    if (it == st->by_target.end() || it->second.heals != heals[p] + 1 ||
                        it->second.state != "healthy")
                        return false;
                }
                return true;
            },
            3000ms, 5ms);
        if (!st) {
            r.fail(when + ": fuse-healerd does not answer on its control socket");
        } else {
            for (const TargetInfo& t : node.targets()) {
                auto it = st->by_target.find(t.path);
                if (it == st->by_target.end()) {
                    r.fail(when + ": fuse-healerd does not track " + t.path);
                    continue;
                }
                const std::int64_t n = it->second.heals - heals[t.path];
                heals[t.path] = it->second.heals;
                if (t.dataset == di) {
                    r.heals += n;
                    if (n != 1) r.fail(when + ": " + t.path + " healed " + std::to_string(n) + " times (status)");
                    if (it->second.state != "healthy")
                        r.fail(when + ": " + t.path + " is " + it->second.state + " after the heal");
                } else if (n != 0) {
                    r.fail(when + ": " + t.path + " (its FUSE daemon did not crash) healed " + std::to_string(n) +
                           " times");
                }
            }
        }
        watch.take(tail.next_lines());
        for (const auto& [t, n] : watch.healed)
            if (n > 1) r.fail(when + ": " + t + ": " + std::to_string(n) + " \"mount healed\" lines");
        r.max_since_event_us = std::max(r.max_since_event_us, watch.max_since_event_us);
        if (o.verbose) std::cerr << "campaign: " << when << ": slowest heal: " << watch.slowest_heal << std::endl;
        watch.max_since_event_us = 0;
        for (std::size_t t : d.targets) {
            const std::string& p = node.targets()[t].path;
            if (watch.broken[p] > 1) r.fail(when + ": " + p + " reported broken " + std::to_string(watch.broken[p]) + " times");
        }
        if (!watch.other.empty()) r.note(when + ": other warnings/errors:" + watch.other_text());
        summaries += watch.rate_limit_summaries;
        watch.clear();
        check_everything(r, when, node);
        if (auto code = daemon.poll_exit()) {
            ++r.daemon_crashes;
            r.fail(when + ": fuse-healerd exited with " + std::to_string(*code) + ": " + tail_text(daemon.log()));
            break;
        }
        total_failures += r.failures - failures_before;
        if (total_failures >= o.max_failures) {
            r.fail("stopping the phase after " + std::to_string(total_failures) + " failures");
            break;
        }
        if ((c + 1) % 50 == 0)
            std::cerr << "campaign: cycles: " << (c + 1) << "/" << o.cycles << " done, "
                      << node.host_reads() << " host reads" << std::endl;
    }
    node.stop_host_reader();
    check_everything(results[0], "end of the cycles", node);
    const int code = daemon.terminate();
    if (code != 0) results[0].fail("fuse-healerd exited with " + std::to_string(code) + " on SIGTERM");
    keep_logs(o, sb, "cycles");
    const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
    for (auto& r : results) r.seconds = secs / 3;
    results[0].note(std::to_string(node.host_reads()) + " host reads by the host reader thread; " +
                    std::to_string(summaries) +
                    " \"heal event lines not logged\" summaries (each target crashes every third cycle: its "
                    "heal lines are rate-limited; the heal counts come from fuse-healerctl status)");
    return results;
}

}  // namespace fh::campaign
