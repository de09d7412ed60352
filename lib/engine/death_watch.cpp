#include "engine/death_watch.h"

#include <poll.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "engine/liveness.h"
#include "engine/sys.h"

namespace fh {

namespace {

// How long after a walk the connections it found without a server are read
// again from fusectl: the window between an exiting server's files being
// closed and its connection being aborted is microseconds long.
constexpr std::uint64_t kUnservedRecheckMs = 100;

std::int64_t micros(Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); }

std::string device_text(dev_t d) { return std::to_string(::major(d)) + ":" + std::to_string(::minor(d)); }

// Returns the connection's first source mountpoint for the logs, "-" when it has none.
std::string first_source(const FuseConnectionInfo& c) { return c.sources.empty() ? "-" : c.sources.front(); }

// Returns true when `pidfd`'s process has exited (the fd polls readable).
bool has_exited(int pidfd) {
    struct pollfd p {pidfd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

} // namespace

std::string death_line_key(const std::string& source) { return "death " + source; }

struct DeathWatch::Watch {
    uv_poll_t poll{};
    sys::UniqueFd pidfd;
    DeathWatch* owner = nullptr;
    int pid = 0;
};

struct DeathWatch::Scan {
    uv_work_t work{};
    DeathWatch* owner = nullptr;  // null once the watch is closed: the result is dropped
    // Input, copied for the thread pool.
    std::string proc_root;
    int self_pid = 0;
    std::set<dev_t> wanted;
    std::set<dev_t> fresh;     // of `wanted`, those no walk has looked for yet
    std::set<int> known_pids;  // looked at last only when `fresh` is not all found among the others
    bool second_pass = false;  // the known processes had to be looked at too
    // Output.
    ServerScan result;
    // Per server of a wanted connection: its pidfd, or the errno of
    // pidfd_open (ESRCH also when the pid no longer holds the files: reused).
    std::map<int, sys::UniqueFd> pidfds;
    std::map<int, int> pidfd_errors;
    Clock::duration took{};
};

DeathWatch::DeathWatch(uv_loop_t* loop, DeathWatchSettings settings, DeathObserver on_death, ScanObserver on_scan,
                       UnwatchedDeathObserver on_unwatched_death)
    : loop_(loop),
      settings_(std::move(settings)),
      on_death_(std::move(on_death)),
      on_scan_(std::move(on_scan)),
      on_unwatched_death_(std::move(on_unwatched_death)) {}

DeathWatch::~DeathWatch() { close(); }

void DeathWatch::close() {
    if (closed_) return;
    closed_ = true;
    if (scan_) scan_->owner = nullptr;  // freed by its after-work callback
    scan_ = nullptr;
    while (!watches_.empty()) unwatch(watches_.begin()->first);
    servers_.clear();
    if (recheck_timer_) {
        uv_timer_stop(recheck_timer_);
        recheck_timer_->data = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(recheck_timer_),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        recheck_timer_ = nullptr;
    }
    recheck_.clear();
}

std::size_t DeathWatch::connections_watched() const {
    const std::set<dev_t> served = served_connections();
    return static_cast<std::size_t>(
        std::count_if(served.begin(), served.end(), [this](dev_t c) { return connections_.count(c) > 0; }));
}

std::set<dev_t> DeathWatch::served_connections() const {
    std::set<dev_t> served;
    for (const auto& [pid, s] : servers_) served.insert(s.connections.begin(), s.connections.end());
    return served;
}

void DeathWatch::report_unserved_deaths(const std::set<dev_t>& candidates, const char* when,
                                        const std::function<void(dev_t, const FuseConnectionInfo&)>& on_alive) {
    // Dead connections have no server: only those without one are read.
    const std::set<dev_t> served = served_connections();
    std::vector<dev_t> died_unwatched;
    for (dev_t dev : candidates) {
        const auto it = connections_.find(dev);
        if (it == connections_.end() || served.count(dev) || it->second.liveness == Liveness::Dead) continue;
        const FuseConnectionInfo& info = *it->second.info;
        if (!read_fusectl(settings_.fusectl_dir, dev).aborted) {
            on_alive(dev, info);  // served where we cannot see, or not dead yet
            continue;
        }
        // Alive when the engine last looked, dead now, and no server left to
        // watch: nothing else would tell (a kill changes no mount).
        it->second.liveness = Liveness::Dead;  // told once
        if (!settings_.death_line_limiter ||
            settings_.death_line_limiter->admit(death_line_key(first_source(info)), Clock::now()))
            spdlog::info("FUSE connection {} (source {}) died {}; checking its targets now", device_text(dev),
                         first_source(info), when);
        died_unwatched.push_back(dev);
    }
    // After every on_alive call: the observer may start a reconcile.
    if (!died_unwatched.empty() && on_unwatched_death_) on_unwatched_death_(died_unwatched);
}

void DeathWatch::set_connections(const std::vector<FuseConnectionInfo>& connections) {
    set_connections(std::make_shared<const std::vector<FuseConnectionInfo>>(connections));
}

void DeathWatch::set_connections(std::shared_ptr<const std::vector<FuseConnectionInfo>> connections) {
    if (closed_) return;
    connections_.clear();
    connections_list_ = connections ? std::move(connections) : std::make_shared<const std::vector<FuseConnectionInfo>>();
    std::set<dev_t> wanted;
    for (const auto& c : *connections_list_) {
        connections_[c.device] = TrackedConnection{&c, c.liveness};
        wanted.insert(c.device);
    }
    // A device number is handed to the next superblock once its last mount
    // is gone: a number that left the set is walked for again if it returns.
    for (auto it = scanned_.begin(); it != scanned_.end();) it = wanted.count(*it) ? std::next(it) : scanned_.erase(it);
    for (auto it = unserved_told_.begin(); it != unserved_told_.end();)
        it = wanted.count(*it) ? std::next(it) : unserved_told_.erase(it);
    const std::set<int> keep = servers_to_watch(servers_, wanted);
    for (auto it = servers_.begin(); it != servers_.end();) {
        const int pid = it->first;
        ++it;
        if (!keep.count(pid)) {
            spdlog::debug("no longer watching pid {}: it serves no FUSE connection tracked now", pid);
            unwatch(pid);
        }
    }
    const std::set<dev_t> fresh = connections_to_scan(wanted, scanned_);
    if (fresh.empty()) return;
    // A walk in flight that looks for all of them will do (a heal makes
    // several reconciles in a row, each reporting the new superblock).
    if (scan_ && std::includes(scan_->wanted.begin(), scan_->wanted.end(), fresh.begin(), fresh.end())) return;
    start_scan();
}

void DeathWatch::start_scan(bool full) {
    if (closed_) return;
    if (scan_) {
        rescan_ = true;  // when this one ends
        rescan_full_ = rescan_full_ || full;
        return;
    }
    auto* scan = new Scan;
    scan->work.data = scan;
    scan->owner = this;
    scan->proc_root = settings_.proc_root;
    scan->self_pid = settings_.self_pid;
    for (const auto& [dev, info] : connections_) scan->wanted.insert(dev);
    scan->fresh = connections_to_scan(scan->wanted, scanned_);
    if (!full) scan->known_pids = known_pids_;
    const int rc = uv_queue_work(
        loop_, &scan->work,
        [](uv_work_t* w) {
            // On the thread pool: the walk, then a pidfd for each server of
            // a wanted connection, opened after the walk and checked against
            // it (the pid may have been reused in between).
            auto* s = static_cast<Scan*>(w->data);
            const auto t0 = Clock::now();
            // A restarted FUSE daemon is a new process: looking at those
            // first spares reading every fd of every process (~10 us per fd
            // on a small VM, see docs/PERFORMANCE.md) on most walks.
            s->result = scan_fuse_servers(s->proc_root, s->self_pid,
                                          [s](int pid) { return !s->known_pids.count(pid); });
            if (!s->known_pids.empty()) {
                std::set<dev_t> found;
                for (const auto& [pid, server] : s->result.servers)
                    found.insert(server.connections.begin(), server.connections.end());
                if (!std::includes(found.begin(), found.end(), s->fresh.begin(), s->fresh.end())) {
                    s->second_pass = true;
                    s->result.merge(scan_fuse_servers(s->proc_root, s->self_pid,
                                                      [s](int pid) { return s->known_pids.count(pid) > 0; }));
                }
            }
            for (int pid : servers_to_watch(s->result.servers, s->wanted)) {
                auto fd = sys::pidfd_open(pid);
                if (fd && !still_serves(s->proc_root, s->result.servers.at(pid))) fd = Error{"pidfd_open", {}, ESRCH, {}};
                if (fd) s->pidfds[pid] = std::move(*fd);
                else s->pidfd_errors[pid] = fd.error().err;
            }
            s->took = Clock::now() - t0;
        },
        [](uv_work_t* w, int) {
            std::unique_ptr<Scan> s(static_cast<Scan*>(w->data));
            if (s->owner) s->owner->finish_scan(*s);
        });
    if (rc != 0) {
        spdlog::warn("failed to start a walk of {} for FUSE servers, ignoring: {}", settings_.proc_root,
                     uv_strerror(rc));
        delete scan;
        return;
    }
    scan_ = scan;
}

void DeathWatch::finish_scan(Scan& scan) {
    scan_ = nullptr;
    ++scans_;
    const auto now = Clock::now();
    spdlog::debug("walked {} for FUSE servers: {} of {} processes looked at ({}), {} fds, {} /dev/fuse files ({} "
                  "naming their connection), {} servers, {} processes unreadable, {} us",
                  scan.proc_root, scan.result.processes, scan.result.pids.size(),
                  scan.known_pids.empty() ? "all" : scan.second_pass ? "new ones, then the others" : "new ones",
                  scan.result.fds, scan.result.evidence.dev_fuse_files, scan.result.evidence.with_connection,
                  scan.result.servers.size(), scan.result.unreadable, micros(scan.took));
    for (dev_t d : scan.wanted) scanned_.insert(d);
    known_pids_ = std::move(scan.result.pids);
    std::vector<int> gone;  // exited between the walk and pidfd_open
    for (const auto& [pid, err] : scan.pidfd_errors) {
        if (watches_.count(pid)) continue;  // watched already: its pidfd tells
        if (err == ESRCH) {
            servers_[pid] = scan.result.servers.at(pid);
            gone.push_back(pid);
            continue;
        }
        // EMFILE, ENOMEM...: not a death; the fusectl checks of each
        // reconcile cover its connections.
        spdlog::warn("failed to watch FUSE server pid {}, ignoring: pidfd_open: {}", pid, std::strerror(err));
    }
    for (auto& [pid, fd] : scan.pidfds) {
        const FuseServer& server = scan.result.servers.at(pid);
        if (watches_.count(pid)) {
            // The same process (its pidfd has not fired). What it holds only
            // grows while it lives: a walk that meets it while it exits may
            // see its files half closed.
            FuseServer& known = servers_[pid];
            known.comm = server.comm;
            known.connections.insert(server.connections.begin(), server.connections.end());
            known.fds.insert(server.fds.begin(), server.fds.end());
            continue;
        }
        servers_[pid] = server;
        watch(server, fd.release());
        spdlog::info("watching FUSE server {} (pid {}) of connection{} {}", server.comm, pid,
                     server.connections.size() > 1 ? "s" : "", [&] {
                         std::string out;
                         for (dev_t c : server.connections) out += (out.empty() ? "" : ",") + device_text(c);
                         return out;
                     }());
    }
    // A watched process the walk no longer saw as a server has exited (its
    // pidfd is about to fire), is exiting (its files are closed before its
    // pidfd polls readable, and the kernel aborts the connection only after
    // that), or closed its /dev/fuse files and lives on. It stays watched,
    // with what it held: its exit is checked against fusectl like any other.
    for (const auto& [pid, w] : watches_)
        if (!scan.pidfds.count(pid) && !scan.pidfd_errors.count(pid) && has_exited(w->pidfd.get()))
            gone.push_back(pid);
    if (on_scan_) on_scan_(scan.result, std::chrono::duration_cast<std::chrono::microseconds>(scan.took));
    for (int pid : gone) handle_exit(pid, now, false);
    if (closed_) return;
    // Connections nobody visible serves (a daemon in a process we may not
    // inspect, a file in flight over a socket) rely on the fusectl checks of
    // each reconcile, as without the feature. One found dead died between
    // the reconcile that saw it alive and this walk (e.g. right after the
    // daemon started, or right after its own start).
    report_unserved_deaths(scan.wanted, "before its server could be watched",
                           [this](dev_t dev, const FuseConnectionInfo& info) {
                               if (!unserved_told_.insert(dev).second) return;
                               recheck_.insert(dev);
                               spdlog::info("no process serving FUSE connection {} (source {}) was found in {}: its "
                                            "death is detected on mount events and the safety reconcile",
                                            device_text(dev),
                                            first_source(info),
                                            settings_.proc_root);
                           });
    if (closed_) return;
    if (!recheck_.empty()) {
        if (!recheck_timer_) {
            recheck_timer_ = new uv_timer_t;
            uv_timer_init(loop_, recheck_timer_);
            recheck_timer_->data = this;
        }
        uv_timer_start(
            recheck_timer_,
            [](uv_timer_t* t) {
                if (auto* self = static_cast<DeathWatch*>(t->data)) self->recheck_unserved();
            },
            kUnservedRecheckMs, 0);
    }
    if (rescan_) {
        const bool full = rescan_full_;
        rescan_ = rescan_full_ = false;
        start_scan(full);
    }
}

void DeathWatch::recheck_unserved() {
    if (closed_) return;
    // Read once: those still alive are left to the reconciles.
    const std::set<dev_t> due = std::exchange(recheck_, {});
    report_unserved_deaths(due, "while the walk for its server ran", [](dev_t, const FuseConnectionInfo&) {});
}

void DeathWatch::watch(const FuseServer& server, int pidfd) {
    auto* w = new Watch;
    w->pidfd.reset(pidfd);
    w->owner = this;
    w->pid = server.pid;
    w->poll.data = w;
    if (const int rc = uv_poll_init(loop_, &w->poll, pidfd); rc != 0) {
        spdlog::warn("failed to watch FUSE server pid {}, ignoring: uv_poll_init: {}", server.pid, uv_strerror(rc));
        delete w;
        return;
    }
    uv_poll_start(&w->poll, UV_READABLE, [](uv_poll_t* h, int status, int) {
        // The first thing done on the wake-up: its time is the outage start.
        const auto woke = Clock::now();
        auto* w = static_cast<Watch*>(h->data);
        if (status < 0)
            spdlog::debug("poll of the pidfd of pid {} failed ({}); checking its connections", w->pid,
                          uv_strerror(status));
        w->owner->on_exit(w->pid, woke);
    });
    watches_[server.pid] = w;
}

void DeathWatch::unwatch(int pid) {
    servers_.erase(pid);
    const auto it = watches_.find(pid);
    if (it == watches_.end()) return;
    Watch* w = it->second;
    watches_.erase(it);
    uv_poll_stop(&w->poll);
    // The pidfd is closed with the Watch, after libuv is done with it.
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
}

void DeathWatch::on_exit(int pid, Clock::time_point woke) { handle_exit(pid, woke, true); }

void DeathWatch::handle_exit(int pid, Clock::time_point woke, bool may_rescan) {
    const auto it = servers_.find(pid);
    if (it == servers_.end()) {
        unwatch(pid);
        return;
    }
    // fusectl decides for every connection the process held, orphaned or
    // not: the map may be stale (another holder we know of may have closed
    // its file, or be exiting too). Reported before anything else is done
    // (the unwatch below included): each syscall here adds to the detection
    // latency.
    const FuseServer& server = it->second;
    const std::vector<dev_t> orphaned = connections_orphaned_by(servers_, pid);
    bool rescan = false;
    for (dev_t dev : server.connections) {
        const auto conn = connections_.find(dev);
        if (conn == connections_.end()) continue;
        if (conn->second.liveness == Liveness::Dead) {
            // Its outage began earlier: reported already, or the engine saw
            // it dead (e.g. [heal] abort_hung_after aborted it, then its
            // supervisor killed the hung daemon).
            spdlog::debug("FUSE server {} (pid {}) exited; connection {} was dead already", server.comm, pid,
                          device_text(dev));
            continue;
        }
        const std::optional<bool> aborted = fusectl_aborted(settings_.fusectl_dir, dev);
        if (!aborted) {
            // Its superblock is gone with its last mount (a clean unmount
            // before the exit): nothing is left to break.
            spdlog::debug("FUSE server {} (pid {}) exited; connection {} is gone with its mounts", server.comm, pid,
                          device_text(dev));
            continue;
        }
        if (!*aborted) {
            if (std::find(orphaned.begin(), orphaned.end(), dev) == orphaned.end()) continue;  // others serve it
            spdlog::info("FUSE server {} (pid {}) exited but connection {} is alive: another process holds its "
                         "/dev/fuse file{}",
                         server.comm, pid, device_text(dev), may_rescan ? "; looking for it" : "");
            rescan = may_rescan;
            continue;
        }
        conn->second.liveness = Liveness::Dead;  // one report per death, whichever holder exits last
        ServerDeath d;
        d.connection = dev;
        d.pid = pid;
        d.comm = server.comm;
        d.fstype = conn->second.info->fstype;
        d.sources = conn->second.info->sources;
        d.targets = conn->second.info->targets;
        d.woke = woke;
        const auto now = Clock::now();
        d.outage_start = std::chrono::system_clock::now() -
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(now - woke);
        d.detection_latency_us = micros(now - woke);
        if (on_death_) on_death_(d);
    }
    unwatch(pid);
    if (rescan) start_scan(true);
}

} // namespace fh
