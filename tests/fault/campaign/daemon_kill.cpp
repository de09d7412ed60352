// Phase "daemonkill": fuse-healerd SIGKILLed at a random point while it
// heals the three datasets' targets, restarted like systemd restarts it
// (Restart=always, RestartSec=1s: here after 0-1 s). It must converge: every
// target healed, none healed twice (the log lines of both lives and the
// stack depth), no stray mount.
#include <signal.h>

#include <algorithm>
#include <iostream>
#include <sstream>

#include "common.h"

namespace fh::campaign {

namespace {

// Kills all three FUSE daemons and restarts them in a random order; returns
// the monotonic time just before the first restart.
std::int64_t crash_and_restart_all(Node& node, Rng& rng, std::int64_t pause_ms) {
    for (auto& d : node.datasets()) node.crash(*d);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    std::vector<std::size_t> order{0, 1, 2};
    std::shuffle(order.begin(), order.end(), rng.engine());
    const std::int64_t t0 = monotonic_usec();
    for (std::size_t i : order) node.restart(node.dataset(i));
    return t0;
}

}  // namespace

PhaseResult run_daemon_kills(const Options& o, Rng& rng) {
    PhaseResult r;
    r.phase = "fuse-healerd SIGKILLed during heals, restarted after 0-1 s";
    const auto t_start = Clock::now();
    Sandbox sb;
    Node node(sb, NodeOptions{o.targets, o.reader_interval_us, o.fast_reader_interval_us, true});
    node.build();
    Daemon daemon(sb);
    start_daemon(daemon, node);
    node.start_host_reader(o.host_reader_interval_us);
    const std::set<std::size_t> all{0, 1, 2};

    // How long the restarts and the heals take without a kill: the kills
    // fall anywhere in 1.5 times that.
    std::int64_t window_us = 0;
    {
        LogTail tail(daemon.log_path());
        tail.next_lines();
        const std::int64_t t0 = crash_and_restart_all(node, rng, 20);
        for (auto& d : node.datasets()) {
            std::string why;
            auto healed = node.wait_healed(*d, d->generation, o.heal_timeout, &why);
            if (!healed) throw std::runtime_error("calibration: " + d->name + " not healed:" + why);
            window_us = std::max(window_us, *healed - t0);
            d->lo.store(d->generation);
        }
        LogWatch watch;
        wait_heal_lines(tail, watch, node, all, 3000ms);
        check_heal_lines(r, "calibration", node, all, watch.healed);
        check_everything(r, "calibration", node);
        r.note("calibration: the three restarts and every heal take " + fmt_us(window_us));
    }

    int before_any = 0, mid = 0, after_all = 0;
    std::int64_t unlogged = 0;
    std::int64_t max_converge_us = 0;
    for (int k = 1; k <= o.daemon_kills; ++k) {
        const std::string when = "kill " + std::to_string(k);
        const std::int64_t failures_before = r.failures;
        ++r.cycles;
        LogTail first_life(daemon.log_path());
        first_life.next_lines();
        const pid_t pid = daemon.pid();
        const auto pause = rng.uniform(0, 30);
        // Where the kill falls: in one kill out of ten at a random time in
        // the window of the restarts and heals (mostly before the first
        // heal), in one out of ten after the last heal line, else right
        // after the k-th "mount healed" line, k uniform among the targets:
        // in the middle of the heals, wherever the daemon then is (a
        // container copy, the next target's probe, a syscall).
        const int n = static_cast<int>(node.targets().size());
        const int mode = static_cast<int>(rng.uniform(0, 9));
        const int after_heals = mode == 0 ? -1 : mode == 1 ? n : static_cast<int>(rng.uniform(1, n - 1));
        const auto kill_after = std::chrono::microseconds(rng.uniform(0, window_us));
        // The kill comes from a thread of its own while this one restarts
        // the FUSE daemons (and so starts the heals); the daemon is reaped
        // only after the join, so `pid` cannot have been reused.
        const auto go = Clock::now() + std::chrono::milliseconds(pause);
        LogTail watch_heals(daemon.log_path());
        watch_heals.next_lines();  // this life's lines so far: not this round's
        std::thread killer([pid, go, kill_after, after_heals, t = std::move(watch_heals)]() mutable {
            if (after_heals < 0) {
                std::this_thread::sleep_until(go + kill_after);
            } else {
                int healed = 0;
                const auto deadline = Clock::now() + 10s;
                while (healed < after_heals && Clock::now() < deadline) {
                    for (const auto& l : t.next_lines())
                        if (l.find(" mount healed: ") != std::string::npos) ++healed;
                    if (healed < after_heals) std::this_thread::sleep_for(100us);
                }
            }
            ::kill(pid, SIGKILL);
        });
        std::int64_t t0 = 0;
        try {
            t0 = crash_and_restart_all(node, rng, pause);
        } catch (...) {
            killer.join();
            throw;
        }
        killer.join();
        daemon.kill9();
        LogWatch first;
        first.take(first_life.next_lines());
        const int by_first = static_cast<int>(first.healed.size());
        if (by_first == 0) ++before_any;
        else if (by_first == static_cast<int>(node.targets().size())) ++after_all;
        else ++mid;

        // The supervisor's restart.
        std::this_thread::sleep_for(std::chrono::milliseconds(rng.uniform(0, 1000)));
        daemon.start(daemon_toml(), daemon_args());
        LogTail second_life(daemon.log_path());
        LogWatch second;
        for (auto& d : node.datasets()) {
            std::string why;
            auto healed = node.wait_healed(*d, d->generation, o.heal_timeout, &why);
            if (!healed) {
                r.fail(when + ": " + d->name + " not healed after the restart of fuse-healerd:" + why +
                       "\n  first life: " + tail_text(read_file(first_life.path()).value_or(""), 2000) +
                       "\n  second life: " + tail_text(daemon.log(), 2000));
            } else {
                max_converge_us = std::max(max_converge_us, *healed - t0);
            }
            d->lo.store(d->generation);
        }
        // Heal lines of both lives: every target once; none when the kill
        // fell between a heal and its line.
        wait_until(
            [&] {
                second.take(second_life.next_lines());
                for (const auto& t : node.targets())
                    if (!first.healed.count(t.path) && !second.healed.count(t.path)) return false;
                return true;
            },
            3000ms, 2ms);
        std::map<std::string, int> healed = first.healed;
        for (const auto& [t, n] : second.healed) healed[t] += n;
        for (const auto& t : node.targets())
            if (!healed.count(t.path)) {
                ++unlogged;
                if (o.verbose) {
                    std::cerr << "campaign: " << when << ": no heal line for " << t.path << "; its lines:\n";
                    for (const std::string& life : {first_life.path(), second_life.path()}) {
                        std::cerr << "  in " << life << ":\n";
                        std::istringstream in(read_file(life).value_or(""));
                        std::string l;
                        while (std::getline(in, l))
                            if (l.find(t.path) != std::string::npos) std::cerr << "    " << l << "\n";
                    }
                }
            }
        check_heal_lines(r, when, node, all, healed, /*allow_unlogged=*/true);
        r.max_since_event_us = std::max({r.max_since_event_us, first.max_since_event_us, second.max_since_event_us});
        // Converged: the new life tracks every target, none broken.
        bool converged = wait_until(
            [&] {
                auto s = control_request(daemon.control_socket(), "{\"command\":\"status\"}", 2000ms);
                return s && s->find("\"broken\":0,") != std::string::npos &&
                       s->find("\"targets\":" + std::to_string(node.targets().size()) + ",") != std::string::npos;
            },
            5000ms, 20ms);
        if (!converged) {
            auto s = control_request(daemon.control_socket(), "{\"command\":\"status\"}", 2000ms);
            r.fail(when + ": fuse-healerctl status does not show " + std::to_string(node.targets().size()) +
                   " targets, 0 broken: " + tail_text(s.value_or("no answer"), 600));
        }
        check_everything(r, when, node);
        if (auto code = daemon.poll_exit()) {
            ++r.daemon_crashes;
            r.fail(when + ": fuse-healerd exited with " + std::to_string(*code) + ": " + tail_text(daemon.log()));
            break;
        }
        if (r.failures - failures_before > 0 && r.failures >= o.max_failures) {
            r.fail("stopping the phase after " + std::to_string(r.failures) + " failures");
            break;
        }
        if (k % 10 == 0) std::cerr << "campaign: daemonkill: " << k << "/" << o.daemon_kills << std::endl;
    }
    r.max_heal_delay_us = max_converge_us;
    r.note("kills: " + std::to_string(before_any) + " before the first heal, " + std::to_string(mid) +
           " between heals, " + std::to_string(after_all) + " after the last; " + std::to_string(unlogged) +
           " heals done but not logged (killed between the heal and its line); max heal delay counts from the "
           "first FUSE restart and includes the supervisor's 0-1 s pause");
    node.stop_host_reader();
    check_everything(r, "end", node);
    if (int code = daemon.terminate(); code != 0) r.fail("fuse-healerd exited with " + std::to_string(code) + " on SIGTERM");
    keep_logs(o, sb, "daemonkill");
    r.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    return r;
}

}  // namespace fh::campaign
