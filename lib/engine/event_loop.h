// The daemon's event loop (libuv). Callbacks only gather input and call a
// step function; all heal work runs on one heal worker thread through
// Engine::reconcile, so the loop never waits on a FUSE filesystem.
//
// Event sources: mount events (by fanotify through the MountTracker, which
// names each changed mount so that unrelated ones are dropped on the loop;
// or, on older kernels, the libmount kernel monitor of /proc/self/mountinfo,
// a mount or unmount anywhere in our namespace), inotify on the pods tree, a safety
// reconcile timer, a retry timer for backed-off heals, the systemd watchdog
// timer, SIGTERM/SIGINT (exit), SIGHUP (reload the config) and the control
// socket (fuse-healerctl; see engine/control_server.h).
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/fuse_servers.h"
#include "core/repeat_limiter.h"
#include "engine/control_server.h"
#include "engine/death_watch.h"
#include "engine/engine.h"
#include "engine/hung_abort.h"
#include "engine/kernel_features.h"
#include "engine/metrics_server.h"
#include "engine/mount_tracker.h"
#include "engine/pod_index.h"

struct libmnt_monitor;

namespace fh {

struct DaemonOptions {
    std::string config_path;          // the file to (re)load on SIGHUP
    bool config_path_is_default = true;
    std::optional<LogLevel> log_level_override;  // --log-level wins over the file
    std::set<std::string> disabled_features;
    std::string fusectl_dir = "/sys/fs/fuse/connections";
};

// Returns the strategy to use: `replace` when asked for or when `auto` and
// the kernel has MOVE_MOUNT_BENEATH, else `stack`; an Error when `replace`
// is asked for on a kernel without it.
Result<Strategy> resolve_strategy(StrategySetting s, const KernelFeatures& f);

class Daemon {
public:
    Daemon(Config config, DaemonOptions options);
    ~Daemon();

    // Arms every event source, tells systemd READY=1, runs until SIGTERM or
    // SIGINT. Returns the process exit code (0 on a clean stop).
    int run();

private:
    // Step functions: called by the libuv callbacks.
    void on_mount_event();
    // The tracker's fds are ready: apply its events; reconcile when one is
    // relevant.
    void on_tracked_mount_events();
    // Polls the tracker's mountinfo fd while it wants it (young FUSE mounts
    // that may be remounted), not otherwise.
    void sync_mountinfo_poll();
    // The tracker's observer (loop or heal worker thread): counts an event.
    void on_tracked_event(const TrackedEvent& event);
    // Opens the mount tracker when the kernel has fanotify mount events;
    // logs and leaves tracker_ null (the mountinfo fallback) otherwise.
    void open_mount_tracker();
    // Returns "fanotify" or "mountinfo": the mount tracking in use.
    const char* mount_tracking() const { return tracker_ ? "fanotify" : "mountinfo"; }
    void on_pods_event();
    void on_safety_timer();
    void on_reconcile_done();
    void on_reload();
    void on_stop(int signum);
    // The death watch's and the hung aborter's reports (loop thread).
    void on_server_death(const ServerDeath& death);
    void on_server_scan(const ServerScan& scan, std::chrono::microseconds took);
    void on_hung_abort(const HungAbort& abort);
    // Starts the death watch and the hung aborter where the kernel allows.
    void start_death_watch();
    // Returns the death detection in use: "pidfd" (the death watch), else
    // the prober's "fusectl" or "statx".
    const char* detection() const;
    // Returns why the daemon runs degraded, one text per reason (empty
    // when it does not): the pod index's missing watches, the state file
    // that cannot be saved. Loop thread.
    std::vector<std::string> degradations() const;
    // Sets fuse_healer_degraded from the pod index and the engine. Loop thread.
    void update_degraded_metrics();

    // Asks the heal worker for a reconcile. Returns the sequence number of
    // the reconcile that will serve this request (reconciles are numbered
    // from 1 in the order they start).
    std::uint64_t request_reconcile(Clock::time_point trigger);
    void arm_retry_timer();
    // Control socket requests (on the loop thread).
    void on_control_request(const ControlRequest& request, const ControlServer::Reply& reply);
    void start_heal_request(const std::string& target, const ControlServer::Reply& reply);
    // Answers the heal requests whose reconcile has finished, and those
    // whose timeout has passed; re-arms the timeout timer.
    void answer_heal_requests();
    void start_control_server();
    void worker_main();
    void notify_status();
    // Asks the heal worker to malloc_trim once it has been idle for
    // kTrimDelay from now (any thread; takes mu_).
    void schedule_trim();
    // Schedules a trim when the heap's free bytes grew by
    // kTrimAfterFreeGrowthBytes since the last one (loop thread).
    void schedule_trim_if_heap_grew();
    // The engine's HealObserver (on the heal worker thread): feeds the event
    // into the metrics and logs it, unless it is one repeat too many (see
    // heal_log_limiter_).
    void on_heal_event(const HealEvent& event);
    // Logs one line summing up the heal-event lines the limiter held back
    // since the last call, if any, and one for the death lines (loop
    // thread: its timer, and the stop).
    void log_suppressed_heal_events();
    // Starts, moves or stops the metrics HTTP server and textfile writer to
    // match `wanted` (at start and on reload); failures are logged, not fatal.
    void apply_metrics_config(const MetricsConfig& wanted);

    Config config_;
    DaemonOptions options_;
    KernelFeatures features_;
    Strategy strategy_ = Strategy::Replace;

    uv_loop_t loop_{};
    uv_poll_t mount_poll_{};           // libmount monitor (mountinfo tracking)
    uv_poll_t fanotify_poll_{};        // tracker: mount events
    uv_poll_t mountinfo_poll_{};       // tracker: mountinfo POLLPRI (remounts)
    bool mountinfo_polling_ = false;
    uv_poll_t pods_poll_{};
    uv_timer_t safety_timer_{};
    uv_timer_t retry_timer_{};
    uv_timer_t watchdog_timer_{};
    uv_signal_t sigterm_{}, sigint_{}, sighup_{};
    uv_async_t worker_done_{};
    uv_async_t wakeup_{};  // a late probe result or anything else asking for a reconcile
    uv_timer_t heal_reply_timer_{};  // the earliest timeout of a pending heal request
    uv_timer_t heal_log_timer_{};    // log_suppressed_heal_events() once a window
    libmnt_monitor* monitor_ = nullptr;

    std::unique_ptr<LivenessProber> prober_;
    std::unique_ptr<Executor> executor_;
    std::unique_ptr<StateStore> store_;
    std::unique_ptr<PodIndex> pods_;
    // Null on the mountinfo fallback. Shared by the loop (update) and the
    // heal worker (table, through EngineSettings::host_table).
    std::unique_ptr<MountTracker> tracker_;
    std::unique_ptr<Engine> engine_;
    std::unique_ptr<ControlServer> control_;
    std::unique_ptr<DeathWatch> death_watch_;   // null when off (no pidfd, no fusectl, or disabled)
    std::unique_ptr<HungAborter> hung_aborter_; // null without fusectl
    // What walks of /proc said of /dev/fuse fdinfo (features_.fuse_fdinfo
    // follows it once known). Loop thread only.
    FdinfoSupport fdinfo_support_ = FdinfoSupport::Unknown;
    std::uint64_t pods_overflows_ = 0;          // PodIndex::overflows() already counted; loop thread only
    std::size_t connections_tracked_ = 0;       // FUSE superblocks of the last reconcile; loop thread only
    std::uint64_t connections_version_ = 0;     // Engine::connections_version() of those; loop thread only

    // Heal requests waiting for their reconcile (loop thread only).
    struct PendingHeal {
        std::string target;
        ControlServer::Reply reply;
        std::uint64_t reconcile = 0;  // answered once this reconcile has finished
        Clock::time_point deadline;
    };
    std::vector<PendingHeal> pending_heals_;

    // Shared with the heal worker.
    std::mutex mu_;
    std::condition_variable cv_;
    bool pending_ = false;
    Clock::time_point pending_trigger_{};
    std::optional<Config> pending_config_;
    bool stopping_ = false;
    bool worker_busy_ = false;
    std::optional<Clock::time_point> next_retry_;
    ReconcileSummary last_summary_{};
    std::thread worker_;
    std::uint64_t reconciles_started_ = 0;   // also the number of the running one
    std::uint64_t reconciles_finished_ = 0;  // also the number of the last finished one
    Clock::time_point reconcile_started_at_{};
    // Freed memory is given back (malloc_trim) once the heal worker has been
    // idle for kTrimDelay after the last work that freed much of it: a
    // reconcile, or a large control answer (schedule_trim()).
    Clock::time_point trim_after_{};
    bool trim_due_ = false;
    static constexpr std::chrono::seconds kTrimDelay{1};
    // A status answer this long (~200 targets) schedules a trim.
    static constexpr std::size_t kTrimAfterAnswerBytes = std::size_t{64} * 1024;
    // Mount events alone (no reconcile) schedule one when the heap's free
    // bytes grew this much since the last trim: 100 unrelated mount events/s
    // for 30 s left ~3 MiB more resident (scale_bench churn phase).
    static constexpr std::size_t kTrimAfterFreeGrowthBytes = std::size_t{1024} * 1024;
    static constexpr int kHeapCheckEvery = 64;  // mount events
    std::size_t free_after_trim_ = 0;           // mallinfo2 fordblks after the last trim (mu_)
    int events_since_heap_check_ = 0;           // loop thread
    int healed_total_ = 0;

    // Heal-event lines ("mount broken", "mount healed", ...): at most
    // kHealLogBurst of one kind for one target in any kHealLogWindow; a FUSE
    // daemon in a crash loop would otherwise write two lines per target per
    // crash (see core/repeat_limiter.h). Fed by the heal worker, emptied by
    // the loop's timer.
    static constexpr std::size_t kHealLogBurst = 5;
    static constexpr std::chrono::seconds kHealLogWindow{60};
    std::mutex heal_log_mu_;
    RepeatLimiter heal_log_limiter_{kHealLogBurst, kHealLogWindow};  // under heal_log_mu_
    // Lines about FUSE deaths ("FUSE server died", and the death watch's
    // "died before its server could be watched"): the same limit, per
    // source (death_line_key), for the same reason: a crash loop is one
    // such line per crash. Loop thread only (both are logged there).
    RepeatLimiter death_log_limiter_{kHealLogBurst, kHealLogWindow};

    // Fed by the heal worker (heal events, reconciles, target states) and
    // the loop (mount events); rendered by the server's and the textfile
    // writer's own threads. Declared before them: they refer to it.
    HealerMetrics metrics_;
    std::unique_ptr<MetricsServer> metrics_server_;      // null when [metrics] listen is "" or failed
    std::unique_ptr<MetricsTextfile> metrics_textfile_;  // null when [metrics] textfile is ""; loop thread only
    int exit_code_ = 0;
    // Counted by the loop, and by the heal worker when it applies queued
    // events itself (MountTracker::table).
    std::atomic<std::uint64_t> mount_events_{0};
    std::atomic<std::uint64_t> unrelated_mount_events_{0};
};

} // namespace fh
