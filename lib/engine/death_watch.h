// The death watch: FUSE servers' exits seen the moment they happen.
//
// A walk of /proc (engine/server_scan.h) maps each FUSE connection the engine
// tracks to the processes holding its /dev/fuse files; each of them is
// watched with a pidfd on the libuv loop (a pidfd polls readable once its
// process has exited, i.e. after every thread is gone and its files are
// closed: a connection whose last file was closed is aborted by then). When
// a watched process exits, fusectl's marker tells for each connection it
// held whether the connection died with it (max_background reads 4294967295;
// asked even where the map knows other holders, since the map may be stale),
// and the outage start is reported at once, once per connection, on the loop
// thread, before any mount event or timer: a kill -9 does not change the
// mount table. A connection alive after its last known holder exited is
// walked for again (its file went to a process not seen yet).
//
// A server killed while the walk runs may be met with its files already
// closed but its connection not yet aborted (the kernel releases the files
// of an exiting process before it runs the release that aborts the
// connection): such a connection is read again from fusectl 100 ms after
// the walk, once, and reported dead then.
//
// The walk runs on libuv's thread pool, never on the loop, and only when
// the engine reports a FUSE superblock it has not walked for (a source mounted
// again, at start) or a connection outlived its last known server (its file
// was passed to a process we had not seen). Connections without a visible
// server are covered by the fusectl checks of every reconcile, as on kernels
// without the feature.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/repeat_limiter.h"
#include "engine/engine.h"
#include "engine/server_scan.h"

namespace fh {

// One connection that lost its last server: the start of an outage.
struct ServerDeath {
    dev_t connection = 0;                // the superblock's device (fusectl dir connection_id())
    int pid = 0;                         // the server that exited last
    std::string comm;                    // its command name, as /proc/<pid>/comm read at the walk
    std::string fstype;                  // of the connection's mounts, as the engine last saw them
    std::vector<std::string> sources;    // its source mountpoints
    std::vector<std::string> targets;    // targets whose topmost mount it is
    // When the loop woke on the pidfd: the outage start as this daemon
    // knows it (the process died a few microseconds before, unmeasurable).
    Clock::time_point woke{};
    std::chrono::system_clock::time_point outage_start{};  // the same instant, wall clock
    // From `woke` to the report (the fusectl read and this event's making);
    // the time from the process's death to the wake-up is not measurable
    // here (bench/detection_bench measures kill -9 to log).
    std::int64_t detection_latency_us = 0;
};

struct DeathWatchSettings {
    std::string proc_root = "/proc";
    std::string fusectl_dir;  // where fusectl is mounted (the death is confirmed there)
    int self_pid = 0;         // skipped by the walk
    // When set (loop thread only), each line about a death without a
    // watched server is written only if admitted with the key
    // death_line_key(source): the daemon shares the limiter with its
    // "FUSE server died" lines, so a crash loop writes a few lines per
    // source per window, whichever way each death was seen.
    RepeatLimiter* death_line_limiter = nullptr;
};

// Returns the key of the death lines about the connection of `source` (its
// first source mountpoint) in DeathWatchSettings::death_line_limiter.
std::string death_line_key(const std::string& source);

class DeathWatch {
public:
    // Called on the loop thread for each connection whose last server died.
    using DeathObserver = std::function<void(const ServerDeath&)>;
    // Called on the loop thread after each walk, with how long it took.
    using ScanObserver = std::function<void(const ServerScan&, std::chrono::microseconds took)>;

    // Called on the loop thread after a walk that found tracked connections
    // dead (fusectl) that the engine last saw alive and no process to
    // watch: their servers died before they could be watched.
    using UnwatchedDeathObserver = std::function<void(const std::vector<dev_t>& connections)>;

    DeathWatch(uv_loop_t* loop, DeathWatchSettings settings, DeathObserver on_death, ScanObserver on_scan = {},
               UnwatchedDeathObserver on_unwatched_death = {});
    // Closes the handles (see close()); on the loop thread.
    ~DeathWatch();
    DeathWatch(const DeathWatch&) = delete;
    DeathWatch& operator=(const DeathWatch&) = delete;

    // Step (loop thread): the engine's FUSE superblocks after a reconcile.
    // Starts a walk when one of them has not been walked for; stops
    // watching servers of connections no longer tracked.
    void set_connections(const std::vector<FuseConnectionInfo>& connections);
    // The same, kept as the engine's shared list (no copy of it).
    void set_connections(std::shared_ptr<const std::vector<FuseConnectionInfo>> connections);

    // Step (loop thread): the pidfd of `pid` polled readable at `woke`.
    // Reports the deaths it confirms (see the class comment).
    void on_exit(int pid, Clock::time_point woke);

    // Stops every watch and ignores the result of a walk in flight; the
    // loop must run once more to finish closing. Idempotent.
    void close();

    // Returns the number of processes watched.
    std::size_t servers_watched() const { return watches_.size(); }
    // Returns the number of tracked connections with at least one watched server.
    std::size_t connections_watched() const;
    // Returns true while a walk runs.
    bool scanning() const { return scan_ != nullptr; }
    // Returns the walks finished so far.
    std::uint64_t scans() const { return scans_; }

private:
    struct Watch;  // a pidfd and its uv_poll_t
    struct Scan;   // a walk on the thread pool, and its result

    // Starts a walk (or another one once the walk in flight ends). A walk
    // looks at the processes that appeared since the last one first, and at
    // the others only when some connection it looks for is still without a
    // server; `full` looks at every process at once (a connection alive
    // after its last known server exited: an old process may hold it now).
    void start_scan(bool full = false);
    // on_exit; `may_rescan` is false for the exits a walk itself found
    // (the walk just looked: walking again at once would find no more, and
    // a process it cannot watch would make walks follow each other).
    void handle_exit(int pid, Clock::time_point woke, bool may_rescan);
    void finish_scan(Scan& scan);
    // Reads fusectl again for the connections the last walk found without
    // a server (on the loop thread, kUnservedRecheck after that walk):
    // reports those that died in the meantime, as finish_scan does.
    void recheck_unserved();
    // Returns the connections (tracked or not) some watched server holds.
    std::set<dev_t> served_connections() const;
    // Reads fusectl for each of `candidates` that is tracked, not known dead
    // and held by no watched server: marks each one aborted dead and logs
    // that it died `when`, calls `on_alive` for the others, then reports the
    // dead ones to on_unwatched_death_ (one call). Used by finish_scan and
    // recheck_unserved.
    void report_unserved_deaths(const std::set<dev_t>& candidates, const char* when,
                                const std::function<void(dev_t, const FuseConnectionInfo&)>& on_alive);
    // Starts polling `pidfd` for `server`'s exit.
    void watch(const FuseServer& server, int pidfd);
    void unwatch(int pid);

    uv_loop_t* loop_;
    DeathWatchSettings settings_;
    DeathObserver on_death_;
    ScanObserver on_scan_;
    UnwatchedDeathObserver on_unwatched_death_;
    // A connection of the engine's list, and its liveness as this watch
    // knows it (Dead once its death was reported).
    struct TrackedConnection {
        const FuseConnectionInfo* info = nullptr;  // in connections_list_
        Liveness liveness = Liveness::Unknown;
    };
    std::shared_ptr<const std::vector<FuseConnectionInfo>> connections_list_;  // the engine's
    std::map<dev_t, TrackedConnection> connections_;  // by device
    std::set<dev_t> scanned_;       // tracked connections a walk has looked for
    std::set<dev_t> unserved_told_; // connections logged as having no visible server
    std::set<dev_t> recheck_;       // of those, the ones recheck_unserved() reads fusectl for
    uv_timer_t* recheck_timer_ = nullptr;  // heap: freed by its close callback, after the watch
    ServerMap servers_;             // the watched servers, by pid
    std::map<int, Watch*> watches_; // by pid
    Scan* scan_ = nullptr;          // the walk in flight
    bool rescan_ = false;           // walk again when the one in flight ends
    bool rescan_full_ = false;      // that walk looks at every process
    std::set<int> known_pids_;      // the processes listed by the last walk
    bool closed_ = false;
    std::uint64_t scans_ = 0;
};

} // namespace fh
