#include "engine/event_loop.h"

#include <libmount/libmount.h>
#include <malloc.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/duration.h"
#include "core/listen_address.h"
#include "engine/logging.h"
#include "engine/mount_query.h"

namespace fh {

namespace {

template <typename Handle>
Daemon* self(Handle* h) {
    return static_cast<Daemon*>(h->data);
}

std::uint64_t to_ms(std::chrono::microseconds d) { return static_cast<std::uint64_t>(d.count() / 1000); }

// How long a heal request on the control socket waits for its reconcile.
// Longer means the heal worker is stuck (e.g. on a hung FUSE filesystem):
// the client is told so instead of waiting with it.
constexpr auto kHealReplyTimeout = std::chrono::seconds(10);

// Returns true for the states counted as broken in summaries (STATUS=,
// fuse-healerctl status): not serving data now.
bool counts_as_broken(TargetState s) {
    return s == TargetState::Broken || s == TargetState::Healing || s == TargetState::Unresponsive;
}

// Returns a target's status as the control protocol reports it.
ControlTarget to_control_target(const TargetStatus& s) {
    return ControlTarget{s.ctx.target, s.ctx.pod_uid, s.ctx.volume,       s.ctx.driver,
                         s.ctx.volume_handle, to_string(s.kind), s.fstype, to_string(s.state),
                         s.reason,     s.heals,       s.last_outage_us};
}

// Returns the status of `target` in `snapshot`, or nullptr.
const TargetStatus* find_target(const std::vector<TargetStatus>& snapshot, const std::string& target) {
    const auto it = std::find_if(snapshot.begin(), snapshot.end(),
                                 [&](const TargetStatus& t) { return t.ctx.target == target; });
    return it == snapshot.end() ? nullptr : &*it;
}

} // namespace

Result<Strategy> resolve_strategy(StrategySetting s, const KernelFeatures& f) {
    switch (s) {
    case StrategySetting::Auto: return f.move_mount_beneath ? Strategy::Replace : Strategy::Stack;
    case StrategySetting::Stack: return Strategy::Stack;
    case StrategySetting::Replace:
        if (!f.move_mount_beneath)
            return Error{"strategy replace", {}, ENOSYS,
                         "this kernel lacks move_mount MOVE_MOUNT_BENEATH (Linux 6.5) or open_tree; "
                         "use strategy = \"auto\" or \"stack\""};
        return Strategy::Replace;
    }
    return Strategy::Stack;
}

Daemon::Daemon(Config config, DaemonOptions options) : config_(std::move(config)), options_(std::move(options)) {}

Daemon::~Daemon() {
    if (monitor_) mnt_unref_monitor(monitor_);
}

std::uint64_t Daemon::request_reconcile(Clock::time_point trigger) {
    std::lock_guard<std::mutex> lock(mu_);
    // Coalesced requests keep the latest event: a heal is caused by the last
    // mount event before it (the source coming back), not by the unmount
    // that preceded it, so heal latency is measured from that one.
    if (!pending_ || trigger > pending_trigger_) pending_trigger_ = trigger;
    pending_ = true;
    cv_.notify_all();
    // A reconcile already running may have read the table before the
    // event; the next one to start reads it after.
    return reconciles_started_ + 1;
}

void Daemon::worker_main() {
    std::unique_lock<std::mutex> lock(mu_);
    const auto work = [&] { return stopping_ || pending_ || pending_config_; };
    for (;;) {
        if (trim_due_) {
            // Idle for kTrimDelay after a reconcile (or a large control
            // answer): hand the memory the steps freed (table snapshots,
            // plans, namespace views, status texts) back to
            // the kernel, which glibc would keep. Only then, because it
            // locks each arena while it walks the arena's free chunks
            // (1.6-21 ms at 10,000 mounts on a loaded 2-CPU VM), and the
            // loop thread's allocations would wait for it: a burst of
            // events (a death, a restart, the heal) is over first.
            if (!cv_.wait_until(lock, trim_after_ + kTrimDelay, work)) {
                // schedule_trim() may have moved the moment meanwhile.
                if (Clock::now() < trim_after_ + kTrimDelay) continue;
                trim_due_ = false;
                lock.unlock();
                const auto t0 = Clock::now();
                const int released = ::malloc_trim(0);
                const struct mallinfo2 heap = ::mallinfo2();
                spdlog::trace("malloc_trim: {} ({} us); heap in use {} KiB, free {} KiB, mmapped {} KiB",
                              released ? "memory released" : "nothing to release",
                              std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count(),
                              heap.uordblks / 1024, heap.fordblks / 1024, heap.hblkhd / 1024);
                lock.lock();
                free_after_trim_ = heap.fordblks;
                continue;
            }
        } else {
            // Woken by a trim scheduled from the loop thread too (a large
            // status answer, heap growth from mount events alone): waiting
            // for work only, such a trim waited for the next reconcile,
            // which on a quiet node is the safety scan's (scale_bench: a
            // status call before the churn left 0.6 MiB resident through
            // the 30 s of churn and after).
            cv_.wait(lock, [&] { return work() || trim_due_; });
            if (!work()) continue;  // only a trim: it waits for its moment above
        }
        if (stopping_) return;
        if (pending_config_) {
            Config c = std::move(*pending_config_);
            pending_config_.reset();
            auto strategy = resolve_strategy(c.strategy, features_);
            lock.unlock();
            engine_->set_config(c, strategy ? *strategy : engine_->strategy());
            lock.lock();
            pending_ = true;
            pending_trigger_ = Clock::now();
            continue;
        }
        const auto trigger = pending_trigger_;
        pending_ = false;
        worker_busy_ = true;
        const std::uint64_t number = ++reconciles_started_;
        reconcile_started_at_ = Clock::now();
        lock.unlock();
        ReconcileSummary sum = engine_->reconcile(trigger);
        // Mounts at or over the sources it knows now are relevant from here on.
        if (tracker_) tracker_->set_source_paths(engine_->source_paths());
        auto retry = engine_->next_retry();
        // Counted here, not in on_reconcile_done: uv_async_send coalesces.
        metrics_.record_reconcile(sum.armed_actions);
        metrics_.set_targets(engine_->target_states());
        lock.lock();
        worker_busy_ = false;
        last_summary_ = sum;
        reconciles_finished_ = number;
        // Counted here, not in on_reconcile_done: uv_async_send coalesces,
        // so two quick reconciles may wake the loop once.
        healed_total_ += sum.healed;
        next_retry_ = retry;
        cv_.notify_all();
        uv_async_send(&worker_done_);
        trim_due_ = true;
        trim_after_ = Clock::now();
    }
}

void Daemon::schedule_trim() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_due_ = true;
    trim_after_ = Clock::now();
    cv_.notify_all();
}

void Daemon::on_mount_event() {
    const auto now = Clock::now();
    // Drain the monitor; one reconcile covers every change read here.
    const char* filename = nullptr;
    int type = 0;
    while (mnt_monitor_next_change(monitor_, &filename, &type) == 0) {
    }
    // The monitor does not say what changed: every wake-up is relevant.
    ++mount_events_;
    metrics_.record_mount_event(true);
    request_reconcile(now);
}

void Daemon::on_tracked_mount_events() {
    const auto now = Clock::now();
    // One read() and one statmount() per event; an unrelated event ends
    // here, without a reconcile (see core/mount_relevance.h).
    const MountTracker::UpdateSummary s = tracker_->update();
    if (s.relevant > 0 || s.overflow) request_reconcile(now);
    sync_mountinfo_poll();
    events_since_heap_check_ += s.events;
    if (events_since_heap_check_ >= kHeapCheckEvery) {
        events_since_heap_check_ = 0;
        schedule_trim_if_heap_grew();
    }
}

void Daemon::schedule_trim_if_heap_grew() {
    // mallinfo2 locks each arena and walks its free lists (its cost grows
    // with fragmentation and was not measured separately; it may also wait
    // for a trim running on the heal worker, as any malloc on this thread
    // would), hence only every kHeapCheckEvery events. Its free bytes
    // include pages already given back, so growth since the last trim is
    // what says there is more to give.
    const std::size_t free_bytes = ::mallinfo2().fordblks;
    std::size_t after_trim = 0;
    {
        std::lock_guard<std::mutex> lock(mu_);
        after_trim = free_after_trim_;
    }
    if (free_bytes > after_trim + kTrimAfterFreeGrowthBytes) schedule_trim();
}

void Daemon::sync_mountinfo_poll() {
    if (!tracker_) return;
    const bool want = tracker_->wants_mountinfo_poll();
    if (want == mountinfo_polling_) return;
    if (want)
        uv_poll_start(&mountinfo_poll_, UV_PRIORITIZED,
                      [](uv_poll_t* h, int, int) { self(h)->on_tracked_mount_events(); });
    else
        uv_poll_stop(&mountinfo_poll_);
    mountinfo_polling_ = want;
}

void Daemon::on_tracked_event(const TrackedEvent& event) {
    if (std::string_view(event.kind) == "overflow") metrics_.record_queue_overflow(EventQueue::Fanotify);
    ++mount_events_;
    if (!event.relevant) ++unrelated_mount_events_;
    metrics_.record_mount_event(event.relevant);
}

void Daemon::open_mount_tracker() {
    if (!features_.fanotify_mount) return;
    const auto t0 = Clock::now();
    auto tracker = MountTracker::open(make_relevance_rules(config_.match, {}),
                                      [this](const TrackedEvent& e) { on_tracked_event(e); });
    if (!tracker) {
        spdlog::warn("failed to set up mount tracking by fanotify, ignoring: {}; every mount event re-reads "
                     "/proc/self/mountinfo instead",
                     tracker.error().message());
        return;
    }
    tracker_ = std::move(*tracker);
    spdlog::debug("mount tracking by fanotify: {} mounts listed in {} us", tracker_->size(),
                  std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
}

void Daemon::on_pods_event() {
    if (!pods_) return;
    const std::uint64_t renamed = pods_->dirs_renamed();
    pods_->handle_events();
    for (; pods_overflows_ < pods_->overflows(); ++pods_overflows_) metrics_.record_queue_overflow(EventQueue::Inotify);
    update_degraded_metrics();
    // A directory renamed in the pods tree carries its mounts to another
    // path without a mount event: the tracker lists the table again before
    // the next reconcile (the mountinfo fallback reads it then anyway).
    if (tracker_ && pods_->dirs_renamed() != renamed) {
        spdlog::debug("a directory was renamed in {}/pods: the mount table is listed again at the next reconcile",
                      config_.match.root_dir);
        tracker_->request_resync();
    }
}

void Daemon::on_safety_timer() {
    spdlog::debug("safety reconcile");
    if (pods_ && (pods_->degraded() || pods_->watches() == 0)) {
        pods_->rescan();
        update_degraded_metrics();
    }
    // What fanotify does not report (flag changes of older mounts,
    // propagation changes, deleted roots) is picked up here: the reconcile's
    // table() lists the whole table again first.
    if (tracker_) tracker_->request_resync();
    request_reconcile(Clock::now());
}

void Daemon::arm_retry_timer() {
    std::optional<Clock::time_point> retry;
    {
        std::lock_guard<std::mutex> lock(mu_);
        retry = next_retry_;
    }
    uv_timer_stop(&retry_timer_);
    if (!retry) return;
    auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*retry - Clock::now()).count();
    uv_timer_start(&retry_timer_, [](uv_timer_t* t) { self(t)->request_reconcile(Clock::now()); },
                   static_cast<std::uint64_t>(std::max<long long>(delay, 0)) + 1, 0);
}

void Daemon::on_reconcile_done() {
    if ((death_watch_ || hung_aborter_) && engine_->connections_version() != connections_version_) {
        // Copied only when they changed: with thousands of targets the copy
        // would cost every reconcile's wake-up of the loop.
        connections_version_ = engine_->connections_version();
        const auto connections = engine_->shared_connections();
        connections_tracked_ = connections->size();
        if (death_watch_) {
            death_watch_->set_connections(connections);
            metrics_.set_servers_watched(static_cast<int>(death_watch_->servers_watched()));
        }
        if (hung_aborter_) hung_aborter_->set_connections(connections);
    }
    arm_retry_timer();
    update_degraded_metrics();
    sync_mountinfo_poll();  // the reconcile's table() may have applied FUSE attaches
    answer_heal_requests();
    notify_status();
    if (metrics_textfile_) metrics_textfile_->request_write();
}

void Daemon::notify_status() {
    int broken = 0, tracked = 0;
    for (const TargetState state : engine_->target_states()) {
        ++tracked;
        if (counts_as_broken(state)) ++broken;
    }
    int healed = 0;
    {
        std::lock_guard<std::mutex> lock(mu_);
        healed = healed_total_;
    }
    if (pods_->waiting_for_pods_dir()) {
        sd_notifyf(0, "STATUS=waiting for %s/pods (kubelet not started?); %d targets, %d healed since start",
                   config_.match.root_dir.c_str(), tracked, healed);
        return;
    }
    std::string degraded;
    for (const auto& d : degradations()) degraded += "; DEGRADED: " + d;
    sd_notifyf(0, "STATUS=%d targets, %d broken, %d healed since start (strategy %s, detection %s)%s", tracked,
               broken, healed, to_string(engine_->strategy()), detection(), degraded.c_str());
}

std::vector<std::string> Daemon::degradations() const {
    std::vector<std::string> out;
    if (pods_)
        if (std::string why = pods_->degraded_reason(); !why.empty()) out.push_back("pod index: " + why);
    if (engine_)
        if (std::string why = engine_->state_problem(); !why.empty()) out.push_back("state: " + why);
    return out;
}

void Daemon::update_degraded_metrics() {
    if (pods_) metrics_.set_degraded(Degradation::InotifyWatchLimit, pods_->degraded());
    if (engine_) metrics_.set_degraded(Degradation::StateNotSaved, !engine_->state_problem().empty());
}

void Daemon::start_control_server() {
    uv_timer_init(&loop_, &heal_reply_timer_);
    heal_reply_timer_.data = this;
    if (config_.control_socket.empty()) {
        spdlog::info("control socket turned off ([control] socket = \"\")");
        return;
    }
    auto server = std::make_unique<ControlServer>(
        &loop_, [this](const ControlRequest& request, const ControlServer::Reply& reply) {
            on_control_request(request, reply);
        });
    if (Status st = server->listen(config_.control_socket); !st) {
        spdlog::error("failed to set up the control socket, ignoring (fuse-healerctl cannot reach this daemon): {}",
                      st.error().message());
        return;
    }
    control_ = std::move(server);
    spdlog::info("control socket: {}", config_.control_socket);
}

void Daemon::on_control_request(const ControlRequest& request, const ControlServer::Reply& reply) {
    if (request.command == ControlCommand::Heal) {
        start_heal_request(request.target, reply);
        return;
    }
    // A snapshot and counters only: nothing here waits on the heal worker
    // or touches a FUSE filesystem, so a hung one cannot delay the answer.
    const std::vector<TargetStatus> snapshot = engine_->status();
    ControlDaemonSummary summary;
    summary.version = FUSE_HEALER_VERSION;
    summary.pid = ::getpid();
    summary.strategy = to_string(engine_->strategy());
    summary.detection = detection();
    summary.kernel_features = features_.describe();
    summary.targets = static_cast<int>(snapshot.size());
    summary.broken = static_cast<int>(
        std::count_if(snapshot.begin(), snapshot.end(), [](const TargetStatus& t) { return counts_as_broken(t.state); }));
    summary.mount_events = mount_events_;
    summary.unrelated_mount_events = unrelated_mount_events_;
    summary.mount_tracking = mount_tracking();
    summary.degraded = degradations();
    {
        std::lock_guard<std::mutex> lock(mu_);
        summary.heals = healed_total_;
        summary.reconciles = reconciles_finished_;
        if (worker_busy_)
            summary.reconcile_running_us =
                std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - reconcile_started_at_).count();
    }
    std::vector<ControlTarget> targets;
    targets.reserve(snapshot.size());
    for (const auto& t : snapshot) targets.push_back(to_control_target(t));
    std::string answer = encode_status_response(summary, targets);
    // Building a status of 2,000 targets takes ~2 MiB of heap that glibc
    // keeps after it is freed (measured with heaptrack in scale_bench);
    // give it back once the answer is written and the daemon idle.
    if (answer.size() >= kTrimAfterAnswerBytes) schedule_trim();
    reply.send(answer);
}

void Daemon::start_heal_request(const std::string& target, const ControlServer::Reply& reply) {
    if (find_target(engine_->status(), target) == nullptr) {
        reply.send(encode_error_response({ControlErrorCode::UnknownTarget,
                                          target + " is not a target fuse-healerd tracks "
                                                   "(fuse-healerctl status lists them)"}));
        return;
    }
    const auto now = Clock::now();
    const std::uint64_t reconcile = request_reconcile(now);
    spdlog::info("heal of {} asked for on the control socket (pid {}): waiting for reconcile {}", target,
                 reply.peer_pid(), reconcile);
    pending_heals_.push_back(PendingHeal{target, reply, reconcile, now + kHealReplyTimeout});
    answer_heal_requests();
}

void Daemon::answer_heal_requests() {
    std::uint64_t finished = 0;
    {
        std::lock_guard<std::mutex> lock(mu_);
        finished = reconciles_finished_;
    }
    const auto now = Clock::now();
    std::optional<std::vector<TargetStatus>> snapshot;
    std::optional<Clock::time_point> earliest;
    for (auto it = pending_heals_.begin(); it != pending_heals_.end();) {
        if (it->reconcile <= finished) {
            if (!snapshot) snapshot = engine_->status();
            if (const TargetStatus* t = find_target(*snapshot, it->target)) {
                it->reply.send(encode_heal_response(to_control_target(*t)));
            } else {
                it->reply.send(encode_error_response(
                    {ControlErrorCode::UnknownTarget, it->target + " is no longer tracked after the reconcile (its "
                                                                   "mount is gone)"}));
            }
        } else if (now >= it->deadline) {
            spdlog::warn("heal of {} asked for on the control socket: reconcile {} not finished after {} s, "
                         "answering with a timeout",
                         it->target, it->reconcile, kHealReplyTimeout.count());
            it->reply.send(encode_error_response(
                {ControlErrorCode::Timeout,
                 "the reconcile did not finish within " + std::to_string(kHealReplyTimeout.count()) +
                     " s: the heal worker is busy, perhaps blocked on a hung FUSE filesystem; it still runs, see "
                     "fuse-healerctl status and the journal"}));
        } else {
            earliest = earliest ? std::min(*earliest, it->deadline) : it->deadline;
            ++it;
            continue;
        }
        it = pending_heals_.erase(it);
    }
    uv_timer_stop(&heal_reply_timer_);
    if (!earliest) return;
    const auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*earliest - now).count();
    uv_timer_start(&heal_reply_timer_, [](uv_timer_t* t) { self(t)->answer_heal_requests(); },
                   static_cast<std::uint64_t>(std::max<long long>(delay, 0)) + 1, 0);
}

void Daemon::on_heal_event(const HealEvent& event) {
    record_heal_event(metrics_, event);  // every event counts, logged or not
    bool log = false;
    {
        std::lock_guard<std::mutex> lock(heal_log_mu_);
        log = heal_log_limiter_.admit(std::string(to_string(event.kind)) + " " + event.ctx.target, Clock::now());
    }
    if (log) log_heal_event(event);
}

void Daemon::log_suppressed_heal_events() {
    if (RepeatLimiter::Suppressed deaths = death_log_limiter_.take_suppressed(Clock::now()); !deaths.empty()) {
        // Keys are "death <source>" (death_line_key).
        std::string sources;
        std::size_t named = 0;
        for (const auto& [key, n] : deaths.by_key) {
            if (named++ == 3) {
                sources += ",...";
                break;
            }
            sources += (sources.empty() ? "" : ",") + escape_control_cell(key.substr(key.find(' ') + 1));
        }
        spdlog::warn("FUSE death lines not logged: {} repeats about {} sources since the last such line (more than {} "
                     "deaths of one source's connections within {} s: a FUSE daemon in a crash loop?) source={}; "
                     "fuse_healer_server_deaths_total counts every death a watched server's exit told",
                     deaths.lines, deaths.by_key.size(), kHealLogBurst, kHealLogWindow.count(), sources);
    }
    RepeatLimiter::Suppressed s;
    {
        std::lock_guard<std::mutex> lock(heal_log_mu_);
        s = heal_log_limiter_.take_suppressed(Clock::now());
    }
    if (s.empty()) return;
    // Keys are "<event> <target>" (on_heal_event).
    std::map<std::string, std::uint64_t> by_event;
    std::set<std::string> targets;
    for (const auto& [key, n] : s.by_key) {
        const auto sp = key.find(' ');
        by_event[key.substr(0, sp)] += n;
        targets.insert(key.substr(sp + 1));
    }
    std::string events, some;
    for (const auto& [event, n] : by_event) events += " " + event + "=" + std::to_string(n);
    std::size_t named = 0;
    for (const auto& t : targets) {  // the first three, as in "FUSE server died"
        if (named++ == 3) {
            some += ",...";
            break;
        }
        some += (some.empty() ? "" : ",") + escape_control_cell(t);  // one word, as in the heal lines
    }
    spdlog::warn("heal event lines not logged: {} repeats about {} targets since the last such line (more than {} of "
                 "one event for one target within {} s: a FUSE daemon in a crash loop?):{} target={}; the metrics "
                 "count every event",
                 s.lines, targets.size(), kHealLogBurst, kHealLogWindow.count(), events, some);
}

void Daemon::apply_metrics_config(const MetricsConfig& wanted) {
    std::optional<ListenAddress> address;
    if (!wanted.listen.empty()) {
        Result<ListenAddress> parsed = parse_listen_address(wanted.listen);  // validated when loaded
        if (parsed) address = *parsed;
    }
    // A server that failed to start is retried on every reload.
    if (!(metrics_server_ && address && metrics_server_->address() == *address)) {
        if (metrics_server_) {
            spdlog::info("stopped serving metrics on {}", metrics_server_->address().to_string());
            metrics_server_.reset();  // first: the new address may overlap the old one
        }
        if (address) {
            Result<std::unique_ptr<MetricsServer>> server = MetricsServer::start(*address, metrics_);
            if (server) {
                metrics_server_ = std::move(*server);
                spdlog::info("serving metrics on http://{}/metrics", address->to_string());
            } else {
                spdlog::error("failed to serve metrics, ignoring: {}", server.error().message());
            }
        }
    }
    const std::string current = metrics_textfile_ ? metrics_textfile_->path() : "";
    if (wanted.textfile == current) return;
    if (metrics_textfile_) {
        metrics_textfile_.reset();
        // Never rewritten again, the old file would be reported frozen by
        // node_exporter for ever.
        if (::unlink(current.c_str()) != 0 && errno != ENOENT)
            spdlog::warn("failed to remove the old metrics textfile, ignoring: {}",
                         errno_error("unlink", current).message());
        spdlog::info("stopped writing metrics to {}", current);
    }
    if (!wanted.textfile.empty()) {
        // First written after the next reconcile (one follows every start
        // and reload), with the targets' states filled in.
        metrics_textfile_ = std::make_unique<MetricsTextfile>(wanted.textfile, metrics_);
        spdlog::info("writing metrics to {} after each reconcile (at most once per second)", wanted.textfile);
    }
}

void Daemon::on_reload() {
    sd_notify(0, "RELOADING=1");
    auto loaded = load_config(options_.config_path, options_.config_path_is_default);
    if (auto* err = std::get_if<ConfigError>(&loaded)) {
        log_config_error("failed to reload the config, keeping the old one", *err);
        sd_notify(0, "READY=1");
        return;
    }
    Config c = std::get<Config>(loaded);
    if (auto s = resolve_strategy(c.strategy, features_); !s) {
        spdlog::error("failed to reload the config, keeping the old one: {}", s.error().message());
        sd_notify(0, "READY=1");
        return;
    }
    if (options_.log_level_override) c.log_level = *options_.log_level_override;
    set_log_level(c.log_level);
    // The index object stays (the heal worker looks volumes up in it); only
    // its root changes. Its inotify fd stays the same, so the poll stays.
    if (c.match.root_dir != config_.match.root_dir) pods_->set_root_dir(c.match.root_dir);
    if (tracker_) tracker_->set_match(c.match);
    if (c.control_socket != config_.control_socket) {
        spdlog::warn("[control] socket changed from \"{}\" to \"{}\": takes effect at the next start, not on a reload",
                     config_.control_socket, c.control_socket);
        c.control_socket = config_.control_socket;  // config_ keeps saying what is in effect
    }
    uv_timer_stop(&safety_timer_);
    if (c.safety_scan_interval.count() > 0)
        uv_timer_start(&safety_timer_, [](uv_timer_t* t) { self(t)->on_safety_timer(); },
                       to_ms(c.safety_scan_interval), to_ms(c.safety_scan_interval));
    metrics_.set_build_info(FUSE_HEALER_VERSION, to_string(*resolve_strategy(c.strategy, features_)),
                            detection());
    if (hung_aborter_ && c.abort_hung_after != config_.abort_hung_after)
        hung_aborter_->set_threshold(c.abort_hung_after);
    apply_metrics_config(c.metrics);
    config_ = c;
    {
        std::lock_guard<std::mutex> lock(mu_);
        pending_config_ = c;
        cv_.notify_all();
    }
    spdlog::info("config reloaded from {}", c.loaded_from.empty() ? "built-in defaults" : c.loaded_from);
    sd_notify(0, "READY=1");
}

const char* Daemon::detection() const {
    return death_watch_ && features_.fuse_fdinfo ? "pidfd" : prober_->method();
}

void Daemon::start_death_watch() {
    if (features_.fusectl) {
        hung_aborter_ = std::make_unique<HungAborter>(
            &loop_, features_.fusectl_dir, [this](const HungAbort& a) { on_hung_abort(a); },
            [this] { request_reconcile(Clock::now()); });
        hung_aborter_->set_threshold(config_.abort_hung_after);
    } else if (config_.abort_hung_after.count() > 0) {
        spdlog::warn("[heal] abort_hung_after is ignored: aborting a connection needs fusectl, which is not in use");
    }
    // The watch confirms each death with fusectl's marker. It also runs on a
    // release older than 6.16 (fuse_fdinfo=no at start) where pidfds work:
    // its first walk that sees /dev/fuse files tells whether this kernel
    // carries the fdinfo line anyway (a backport), see on_server_scan.
    if (!features_.pidfd || !features_.fusectl || features_.disabled.count(kFeatureFuseFdinfo)) return;
    DeathWatchSettings settings;
    settings.fusectl_dir = features_.fusectl_dir;
    settings.self_pid = static_cast<int>(::getpid());
    settings.death_line_limiter = &death_log_limiter_;
    death_watch_ = std::make_unique<DeathWatch>(
        &loop_, std::move(settings), [this](const ServerDeath& d) { on_server_death(d); },
        [this](const ServerScan& scan, std::chrono::microseconds took) { on_server_scan(scan, took); },
        [this](const std::vector<dev_t>&) { request_reconcile(Clock::now()); });
}

void Daemon::on_server_death(const ServerDeath& death) {
    if (death_log_limiter_.admit(death_line_key(death.sources.empty() ? "-" : death.sources.front()), Clock::now()))
        log_server_death(death);
    metrics_.record_server_death(static_cast<double>(death.detection_latency_us) / 1e6);
    // The engine marks the targets broken as usual, and arms their heals.
    request_reconcile(death.woke);
}

void Daemon::on_server_scan(const ServerScan& scan, std::chrono::microseconds took) {
    metrics_.set_servers_watched(static_cast<int>(death_watch_->servers_watched()));
    if (scan.unreadable > 0)
        spdlog::debug("walk of /proc for FUSE servers: {} processes could not be inspected (no CAP_SYS_PTRACE?)",
                      scan.unreadable);
    const FdinfoSupport was = fdinfo_support_;
    fdinfo_support_ = judge_fdinfo_support(was, scan.evidence, connections_tracked_);
    if (fdinfo_support_ == was) return;
    if (fdinfo_support_ == FdinfoSupport::Yes && !features_.fuse_fdinfo) {
        features_.fuse_fdinfo = true;
        spdlog::info("/dev/fuse fdinfo names its connection on this kernel ({}, a release older than 6.16): death "
                     "detection is now pidfd (walk of /proc: {} us)",
                     features_.kernel_release, took.count());
    } else if (fdinfo_support_ == FdinfoSupport::No) {
        features_.fuse_fdinfo = false;
        // Nothing to watch without the line: no more walks.
        death_watch_->close();
        spdlog::info("/dev/fuse fdinfo does not name its connection on this kernel ({}; {} /dev/fuse files seen): "
                     "death detection stays with {} on mount events and the safety reconcile",
                     features_.kernel_release, scan.evidence.dev_fuse_files, prober_->method());
    } else {
        return;
    }
    metrics_.set_build_info(FUSE_HEALER_VERSION, to_string(engine_->strategy()), detection());
    notify_status();
}

void Daemon::on_hung_abort(const HungAbort& abort) {
    log_hung_abort(abort);
    if (!abort.result) return;
    metrics_.record_hung_abort();
    // The connection reads as dead now: its targets wait for a new source.
    request_reconcile(Clock::now());
}

void Daemon::on_stop(int signum) {
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sd_notify(0, "STOPPING=1");
    uv_stop(&loop_);
}

int Daemon::run() {
    features_ = detect_kernel_features(options_.disabled_features, options_.fusectl_dir, true);
    auto strategy = resolve_strategy(config_.strategy, features_);
    if (!strategy) {
        spdlog::error("{}", strategy.error().message());
        return 78;
    }
    strategy_ = *strategy;
    if (uv_loop_init(&loop_) != 0) {
        spdlog::error("failed to initialise the event loop");
        return 1;
    }
    uv_async_init(&loop_, &wakeup_, [](uv_async_t* a) { self(a)->request_reconcile(Clock::now()); });
    wakeup_.data = this;
    prober_ = std::make_unique<LivenessProber>(features_, config_.probe_timeout, [this] { uv_async_send(&wakeup_); });
    executor_ = std::make_unique<Executor>(features_, config_.match.root_dir);
    store_ = std::make_unique<StateStore>(config_.state_dir);
    pods_ = std::make_unique<PodIndex>(config_.match.root_dir);
    pods_->rescan();
    EngineSettings settings{"/proc/self/mountinfo", "/proc", features_.open_tree, {}};
    // Heals planned ahead of a death wait [heal] restart_grace for a
    // supervisor's restart; only fusectl tells the engine of the death.
    settings.plan_ahead = features_.fusectl;
    if (features_.statmount)
        settings.source_lookup = {[openat2 = features_.openat2](const std::string& path) {
                                       return identify_mount_at_path(path, openat2);
                                   },
                                   statmount_entry};
    open_mount_tracker();
    if (tracker_) {
        settings.host_table = [t = tracker_.get()] { return t->table(); };
        executor_->set_own_mount_hook([t = tracker_.get()](std::uint64_t id) { t->note_own_mount(id); });
    }
    engine_ = std::make_unique<Engine>(
        config_, strategy_, *prober_, *executor_, *store_, [this](const HealEvent& e) { on_heal_event(e); },
        [this](const std::string& target) { return pods_->lookup(target); }, std::move(settings));
    start_death_watch();
    update_degraded_metrics();
    if (!features_.fusectl && !features_.disabled.count(kFeatureFusectl))
        spdlog::warn("fusectl is not available ({}): death detection falls back to statx probes of the mounts "
                     "(probe_timeout tells a hung FUSE daemon from a dead one), and [heal] abort_hung_after cannot "
                     "abort a connection",
                     features_.fusectl_problem);
    if (config_.namespaces && !features_.open_tree)
        spdlog::warn("copies inside containers' mount namespaces cannot be healed on this kernel (no open_tree, "
                     "Linux < 5.2): only HostToContainer copies are reached, through propagation");
    spdlog::info("fuse-healer {} starting: root_dir={} strategy={} death detection={} source check={} "
                 "mount tracking={} kernel: {}",
                 FUSE_HEALER_VERSION, config_.match.root_dir, to_string(strategy_), detection(),
                 !features_.statmount ? std::string("mountinfo (the whole table read per event)")
                 : engine_->plans_ahead()
                     ? "statmount (heals armed while a source is down, and planned ahead of a death: restart_grace=" +
                           format_duration(config_.restart_grace) + ")"
                     : std::string("statmount (heals armed while a source is down)"),
                 tracker_ ? "fanotify (" + std::to_string(tracker_->size()) + " mounts tracked, unrelated events dropped)"
                          : std::string("mountinfo (the whole table read per event)"),
                 features_.describe());

    if (tracker_) {
        // Mount events by fanotify, each naming its mount; mountinfo's
        // POLLPRI for the remounts fanotify does not report, while FUSE
        // mounts attached in the last 2 s may be remounted.
        uv_poll_init(&loop_, &fanotify_poll_, tracker_->fanotify_fd());
        fanotify_poll_.data = this;
        uv_poll_start(&fanotify_poll_, UV_READABLE,
                      [](uv_poll_t* h, int, int) { self(h)->on_tracked_mount_events(); });
        uv_poll_init(&loop_, &mountinfo_poll_, tracker_->mountinfo_fd());
        mountinfo_poll_.data = this;
        sync_mountinfo_poll();
    } else {
        // Mount events: libmount's kernel monitor wakes on POLLPRI of
        // /proc/self/mountinfo, ~30 us after any mount or unmount.
        monitor_ = mnt_new_monitor();
        int mfd = -1;
        if (!monitor_ || mnt_monitor_enable_kernel(monitor_, 1) != 0 || (mfd = mnt_monitor_get_fd(monitor_)) < 0) {
            spdlog::error("failed to set up the mount table monitor");
            return 1;
        }
        uv_poll_init(&loop_, &mount_poll_, mfd);
        mount_poll_.data = this;
        uv_poll_start(&mount_poll_, UV_READABLE, [](uv_poll_t* h, int, int) { self(h)->on_mount_event(); });
    }

    if (pods_->fd() >= 0) {
        uv_poll_init(&loop_, &pods_poll_, pods_->fd());
        pods_poll_.data = this;
        uv_poll_start(&pods_poll_, UV_READABLE, [](uv_poll_t* h, int, int) { self(h)->on_pods_event(); });
    }

    uv_timer_init(&loop_, &safety_timer_);
    safety_timer_.data = this;
    if (config_.safety_scan_interval.count() > 0)
        uv_timer_start(&safety_timer_, [](uv_timer_t* t) { self(t)->on_safety_timer(); },
                       to_ms(config_.safety_scan_interval), to_ms(config_.safety_scan_interval));
    uv_timer_init(&loop_, &retry_timer_);
    retry_timer_.data = this;

    uv_timer_init(&loop_, &heal_log_timer_);
    heal_log_timer_.data = this;
    const auto summary_every = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(kHealLogWindow).count());
    uv_timer_start(&heal_log_timer_, [](uv_timer_t* t) { self(t)->log_suppressed_heal_events(); }, summary_every,
                   summary_every);

    uv_timer_init(&loop_, &watchdog_timer_);
    watchdog_timer_.data = this;
    std::uint64_t watchdog_usec = 0;
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
        // Ping at half the interval, from the loop itself: a stalled loop
        // stops the pings and systemd restarts us.
        std::uint64_t every = std::max<std::uint64_t>(watchdog_usec / 2000, 1);
        uv_timer_start(&watchdog_timer_, [](uv_timer_t*) { sd_notify(0, "WATCHDOG=1"); }, every, every);
    }

    // A control client that leaves before reading its answer must not kill
    // the daemon with SIGPIPE; no other writer here relies on the signal.
    if (std::signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        spdlog::warn("failed to ignore SIGPIPE, ignoring: {}", Error{"signal", {}, errno, {}}.message());
    }
    start_control_server();

    uv_async_init(&loop_, &worker_done_, [](uv_async_t* a) { self(a)->on_reconcile_done(); });
    worker_done_.data = this;
    for (auto [h, sig] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP}}) {
        uv_signal_init(&loop_, h);
        h->data = this;
        if (sig == SIGHUP)
            uv_signal_start(h, [](uv_signal_t* s, int) { self(s)->on_reload(); }, sig);
        else
            uv_signal_start(h, [](uv_signal_t* s, int signum) { self(s)->on_stop(signum); }, sig);
    }

    metrics_.set_start_time(
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
    metrics_.set_build_info(FUSE_HEALER_VERSION, to_string(strategy_), detection());
    apply_metrics_config(config_.metrics);

    worker_ = std::thread([this] { worker_main(); });
    request_reconcile(Clock::now());
    // Logged before READY=1: systemd makes the unit active (and logs
    // "Started") only once it has READY=1, so in the journal this entry
    // always comes first (tests/system/nspawn-test.sh checks it).
    spdlog::info("ready: watching the mount table{}", pods_->fd() >= 0 ? " and the pods tree" : "");
    sd_notify(0, "READY=1");

    uv_run(&loop_, UV_RUN_DEFAULT);

    log_suppressed_heal_events();  // the last window's, before "stopped"
    // Scrapes end with the loop; the textfile keeps its last contents.
    metrics_server_.reset();
    metrics_textfile_.reset();
    // No more requests. Heal requests still waiting are dropped: their
    // clients see the connection close. Closing now also removes the
    // socket file, even if we leave through _Exit below.
    pending_heals_.clear();
    if (control_) control_->close();
    if (death_watch_) death_watch_->close();
    if (hung_aborter_) hung_aborter_->close();

    {
        std::unique_lock<std::mutex> lock(mu_);
        stopping_ = true;
        cv_.notify_all();
        // A reconcile in progress finishes its current action; one stuck on
        // a hung FUSE filesystem must not hold up the stop (systemd expects
        // us gone promptly), so give it a second and then leave without it.
        if (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return !worker_busy_; })) {
            spdlog::warn("heal worker still busy after 1 s, exiting without waiting for it");
            spdlog::default_logger()->flush();
            std::_Exit(exit_code_);
        }
    }
    worker_.join();
    // The prober's late-result callback targets the loop: drop it before
    // the loop goes away.
    engine_.reset();
    prober_.reset();
    // Close every handle so the loop can be closed cleanly.
    uv_walk(&loop_, [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    control_.reset();
    death_watch_.reset();
    hung_aborter_.reset();
    uv_loop_close(&loop_);
    tracker_.reset();  // after its poll handles are closed
    spdlog::info("stopped");
    return exit_code_;
}

} // namespace fh
