// Phase "hang": the fh_testfs daemon SIGSTOPped (it reads no request any
// more) with thousands of requests pending on its connection, from blocker
// processes and the containers' probes. Meanwhile fuse-healerd must keep
// answering on its control socket (a status every 100 ms from this driver,
// fuse-healerctl status every second, a heal request of a hung target), keep
// pinging its watchdog (a fake NOTIFY_SOCKET with WATCHDOG_USEC), and heal
// another dataset whose FUSE daemon crashes during the hang.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include "common.h"

namespace fh::campaign {

namespace {

// The watchdog interval given to the daemon: it pings every half of it.
constexpr std::int64_t kWatchdogUsec = 1000000;

// A datagram socket standing in for systemd's notify socket; a thread
// timestamps every message as it arrives.
class NotifyListener {
public:
    explicit NotifyListener(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            throw std::runtime_error("bind " + path);
        thread_ = std::thread([this] {
            while (!stop_) {
                pollfd p{fd_, POLLIN, 0};
                if (::poll(&p, 1, 50) <= 0) continue;
                char buf[4096];
                ssize_t n;
                while ((n = ::recv(fd_, buf, sizeof buf, 0)) > 0) {
                    std::lock_guard<std::mutex> lock(mu_);
                    messages_.emplace_back(monotonic_usec(), std::string(buf, static_cast<std::size_t>(n)));
                }
            }
        });
    }
    ~NotifyListener() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
    }
    // Arrival times of the messages containing `what`.
    std::vector<std::int64_t> times_of(const std::string& what) {
        std::lock_guard<std::mutex> lock(mu_);
        std::vector<std::int64_t> out;
        for (const auto& [t, m] : messages_)
            if (m.find(what) != std::string::npos) out.push_back(t);
        return out;
    }

private:
    int fd_ = -1;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mu_;
    std::vector<std::pair<std::int64_t, std::string>> messages_;
};

// waitpid with a deadline: the exit code (as exit_code_of), or nullopt.
std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return exit_code_of(status);
        if (r < 0 && errno != EINTR) return -1;
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(2ms);
    }
}

std::string self_exe() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
    return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

PhaseResult run_hang(const Options& o, Rng& rng) {
    (void)rng;
    PhaseResult r;
    r.phase = "hung FUSE daemon (" + std::to_string(o.hang_requests) + " blocked lookups, " +
              std::to_string(o.hang_seconds) + " s)";
    const auto t_start = Clock::now();
    Sandbox sb;
    Node node(sb, NodeOptions{o.targets, o.reader_interval_us, o.fast_reader_interval_us, true});
    node.build();
    NotifyListener notify(sb.path("notify.sock"));
    Daemon daemon(sb);
    ::setenv("NOTIFY_SOCKET", sb.path("notify.sock").c_str(), 1);
    ::setenv("WATCHDOG_USEC", std::to_string(kWatchdogUsec).c_str(), 1);
    try {
        // A reconcile every second during the hang, as many as it gets.
        start_daemon(daemon, node, "[heal]\nsafety_scan_interval = \"1s\"\n");
    } catch (...) {
        ::unsetenv("NOTIFY_SOCKET");
        ::unsetenv("WATCHDOG_USEC");
        throw;
    }
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    if (!wait_until([&] { return !notify.times_of("READY=1").empty(); }, 5000ms)) r.fail("no READY=1");
    LogTail tail(daemon.log_path());
    tail.next_lines();

    Dataset& hung = node.dataset(0);  // fh_testfs
    Dataset& other = node.dataset(1);
    const std::string dev = hung.fuse->mount().device;
    LogWatch seen;  // every line of the hang
    // Another dataset's FUSE daemon crashes and comes back during the hang:
    // its targets must be healed all the same.
    auto crash_other = [&](const std::string& when) {
        node.crash(other);
        std::this_thread::sleep_for(20ms);
        const auto back = node.restart(other);
        std::string why;
        auto healed = node.wait_healed(other, other.generation, o.heal_timeout, &why);
        if (!healed) r.fail(other.name + " not healed during the hang:" + why + "\n  " + tail_text(daemon.log()));
        else {
            r.max_heal_delay_us = std::max(r.max_heal_delay_us, *healed - back);
            ++r.cycles;
        }
        other.lo.store(other.generation);
        LogWatch w;
        wait_heal_lines(tail, w, node, {1}, 3000ms);
        for (const auto& [line, n] : w.other) seen.other[line] += n;
        check_heal_lines(r, "heal during the hang", node, {1}, w.healed);
        r.max_since_event_us = std::max(r.max_since_event_us, w.max_since_event_us);
        r.note(other.name + " crashed and restarted during the hang (" + when + "): every target reads the new data " +
               fmt_us(healed.value_or(back) - back) + " after the restart (the daemon: since_event_us up to " +
               std::to_string(w.max_since_event_us) + ")");
    };
    const auto t_hang = monotonic_usec();
    hung.fuse->stop();
    // 1.5 s in: the first reconcile after the stop (the safety scan, every
    // second here) has started a probe of the hung mounts and waits for it
    // (probe_timeout, 2 s): a heal asked for now waits for that reconcile.
    std::this_thread::sleep_for(1500ms);
    crash_other("1.5 s after the stop, while the first probe of the hung mounts waits for its timeout");

    // The blockers: up to 1000 threads per process.
    std::vector<std::string> dirs;
    for (std::size_t t : hung.targets) dirs.push_back(node.targets()[t].path);
    std::vector<pid_t> blockers;
    const std::string exe = self_exe();
    for (int left = o.hang_requests; left > 0; left -= 1000) {
        std::vector<std::string> argv{exe, "--block", std::to_string(std::min(left, 1000))};
        argv.insert(argv.end(), dirs.begin(), dirs.end());
        pid_t pid = spawn(argv, sb.runtime() + "/" + sb.unique("blocker") + ".log");
        sb.track(pid);
        blockers.push_back(pid);
    }
    int max_waiting = 0;
    wait_until(
        [&] {
            max_waiting = std::max(max_waiting, fusectl_waiting(dev));
            return max_waiting >= o.hang_requests;
        },
        30000ms, 10ms);
    r.note("requests waiting on the stopped connection: " + std::to_string(max_waiting) + " (fusectl waiting)");
    if (max_waiting < o.hang_requests / 2)
        r.fail("only " + std::to_string(max_waiting) + " requests pending, wanted " + std::to_string(o.hang_requests));

    // The hang itself.
    const auto hang_end = Clock::now() + std::chrono::seconds(o.hang_seconds);
    const auto other_crash_at = Clock::now() + std::chrono::seconds(o.hang_seconds) / 3;
    const auto heal_request_at = Clock::now() + std::chrono::seconds(o.hang_seconds) / 2;
    bool other_done = false;
    pid_t heal_ctl = -1;
    std::int64_t heal_ctl_started = 0;
    std::int64_t status_count = 0, status_max_us = 0, ctl_count = 0, ctl_max_us = 0;
    int max_threads = 0;
    auto next_ctl = Clock::now();
    const std::string hung_target = dirs.size() > 1 ? dirs[1] : dirs[0];
    while (Clock::now() < hang_end) {
        std::int64_t lat = 0;
        auto s = control_request(daemon.control_socket(), "{\"command\":\"status\"}", 2000ms, &lat);
        ++status_count;
        status_max_us = std::max(status_max_us, lat);
        if (!s || s->find("\"ok\":true") == std::string::npos)
            r.fail("status on the control socket: " + (s ? tail_text(*s, 300) : "no answer within 2 s"));
        if (Clock::now() >= next_ctl && !ctl_path().empty()) {
            next_ctl = Clock::now() + 1s;
            const auto t0 = monotonic_usec();
            pid_t p = spawn({ctl_path(), "--socket", daemon.control_socket(), "status"},
                            sb.runtime() + "/ctl-status.log");
            sb.track(p);
            auto code = wait_exit(p, 5000ms);
            if (!code) {
                ::kill(p, SIGKILL);
                wait_exit(p, 5000ms);
            }
            sb.untrack(p);
            ++ctl_count;
            ctl_max_us = std::max(ctl_max_us, monotonic_usec() - t0);
            if (code != 0)
                r.fail("fuse-healerctl status: " + (code ? "exit " + std::to_string(*code) : "no exit in 5 s"));
        }
        if (!other_done && Clock::now() >= other_crash_at) {
            other_done = true;
            crash_other("later, with " + std::to_string(max_waiting) + " requests pending");
        }
        if (heal_ctl < 0 && Clock::now() >= heal_request_at && !ctl_path().empty()) {
            heal_ctl_started = monotonic_usec();
            heal_ctl = spawn({ctl_path(), "--socket", daemon.control_socket(), "heal", hung_target},
                             sb.runtime() + "/ctl-heal.log");
            sb.track(heal_ctl);
        }
        if (heal_ctl > 0 && heal_ctl_started > 0) {
            if (auto code = wait_exit(heal_ctl, 0ms)) {
                sb.untrack(heal_ctl);
                r.note("fuse-healerctl heal " + hung_target + " (hung) answered in " +
                       fmt_us(monotonic_usec() - heal_ctl_started) + ", exit " + std::to_string(*code) + ": " +
                       tail_text(read_file(sb.runtime() + "/ctl-heal.log").value_or(""), 300));
                heal_ctl_started = 0;
            }
        }
        max_threads = std::max(max_threads, process_threads(daemon.pid()));
        max_waiting = std::max(max_waiting, fusectl_waiting(dev));
        if (auto code = daemon.poll_exit()) {
            ++r.daemon_crashes;
            r.fail("fuse-healerd exited with " + std::to_string(*code) + " during the hang: " + tail_text(daemon.log()));
            break;
        }
        std::this_thread::sleep_for(100ms);
    }
    if (heal_ctl > 0 && heal_ctl_started > 0) {
        // Answers within the daemon's 10 s heal timeout.
        auto code = wait_exit(heal_ctl, 15000ms);
        if (!code) {
            r.fail("fuse-healerctl heal of the hung target did not answer in " +
                   fmt_us(monotonic_usec() - heal_ctl_started));
            ::kill(heal_ctl, SIGKILL);
            wait_exit(heal_ctl, 5000ms);
        } else {
            r.note("fuse-healerctl heal " + hung_target + " (hung) answered in " +
                   fmt_us(monotonic_usec() - heal_ctl_started) + ", exit " + std::to_string(*code) + ": " +
                   tail_text(read_file(sb.runtime() + "/ctl-heal.log").value_or(""), 300));
        }
        sb.untrack(heal_ctl);
    }
    const auto t_hang_end = monotonic_usec();
    r.note("control socket: " + std::to_string(status_count) + " status requests, slowest " + fmt_us(status_max_us) +
           "; fuse-healerctl status: " + std::to_string(ctl_count) + " runs, slowest " + fmt_us(ctl_max_us) +
           "; fuse-healerd threads at most " + std::to_string(max_threads) + "; requests waiting at most " +
           std::to_string(max_waiting));

    // The watchdog kept pinging through the hang.
    auto pings = notify.times_of("WATCHDOG=1");
    std::int64_t max_gap = 0, last = t_hang, count = 0;
    for (auto t : pings) {
        if (t < t_hang || t > t_hang_end) continue;
        max_gap = std::max(max_gap, t - last);
        last = t;
        ++count;
    }
    max_gap = std::max(max_gap, t_hang_end - last);
    r.note("watchdog: " + std::to_string(count) + " WATCHDOG=1 during the hang (WATCHDOG_USEC=" +
           std::to_string(kWatchdogUsec) + ", pings due every " + fmt_us(kWatchdogUsec / 2) + "), longest gap " +
           fmt_us(max_gap));
    if (max_gap >= kWatchdogUsec) r.fail("watchdog: no WATCHDOG=1 for " + fmt_us(max_gap) + " during the hang");

    // What the daemon said about the hung mounts.
    seen.take(tail.next_lines());
    int unresponsive = 0;
    for (const auto& [line, n] : seen.other)
        if (line.find("mount unresponsive: ") != std::string::npos) unresponsive += n;
    r.note("\"mount unresponsive\" lines: " + std::to_string(unresponsive) + " for " +
           std::to_string(hung.targets.size()) + " hung targets");
    if (unresponsive == 0) r.fail("no \"mount unresponsive\" line for the hung targets");

    // The daemon wakes up: every request is answered, the blockers exit, the
    // data is read again without a heal.
    hung.fuse->cont();
    for (pid_t b : blockers) {
        auto code = wait_exit(b, 30000ms);
        if (!code) r.fail("blocker " + std::to_string(b) + " still blocked 30 s after SIGCONT");
        else sb.untrack(b);
    }
    std::string why;
    if (!node.wait_healed(hung, hung.generation, o.heal_timeout, &why))
        r.fail("the hung dataset does not read again after SIGCONT:" + why);
    bool clean = wait_until(
        [&] {
            auto s = control_request(daemon.control_socket(), "{\"command\":\"status\"}", 2000ms);
            return s && s->find("\"broken\":0,") != std::string::npos;
        },
        10000ms, 50ms);
    if (!clean) r.fail("fuse-healerd still reports broken targets after SIGCONT");
    check_everything(r, "after the hang", node);
    const auto t0 = Clock::now();
    if (int code = daemon.terminate(); code != 0) r.fail("fuse-healerd exited with " + std::to_string(code) + " on SIGTERM");
    r.note("SIGTERM to exit: " + fmt_us(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
    keep_logs(o, sb, "hang");
    r.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    return r;
}

}  // namespace fh::campaign
