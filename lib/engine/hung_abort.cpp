#include "engine/hung_abort.h"

#include <algorithm>

#include "engine/liveness.h"

namespace fh {

HungAborter::HungAborter(uv_loop_t* loop, std::string fusectl_dir, AbortObserver on_abort, ProbeRequest request_probe)
    : fusectl_dir_(std::move(fusectl_dir)), on_abort_(std::move(on_abort)), request_probe_(std::move(request_probe)) {
    uv_timer_init(loop, &timer_);
    timer_.data = this;
}

HungAborter::~HungAborter() { close(); }

void HungAborter::close() {
    if (closed_) return;
    closed_ = true;
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

std::chrono::milliseconds HungAborter::period_for(std::chrono::microseconds threshold) {
    // Ten samples per threshold are plenty to see a count go down; more than
    // ten per second would only cost reads.
    const auto tenth = std::chrono::duration_cast<std::chrono::milliseconds>(threshold / 10);
    return std::clamp(tenth, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
}

void HungAborter::set_threshold(std::chrono::microseconds threshold) {
    if (closed_) return;
    threshold_ = threshold;
    uv_timer_stop(&timer_);
    tracks_.clear();
    if (threshold.count() <= 0) return;
    const auto every = static_cast<std::uint64_t>(period_for(threshold).count());
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<HungAborter*>(t->data)->sample(Clock::now()); }, every,
                   every);
}

void HungAborter::set_connections(const std::vector<FuseConnectionInfo>& connections) {
    set_connections(std::make_shared<const std::vector<FuseConnectionInfo>>(connections));
}

void HungAborter::set_connections(std::shared_ptr<const std::vector<FuseConnectionInfo>> connections) {
    connections_.clear();
    connections_list_ = connections ? std::move(connections) : std::make_shared<const std::vector<FuseConnectionInfo>>();
    for (const auto& c : *connections_list_) connections_[c.device] = &c;
    for (auto it = tracks_.begin(); it != tracks_.end();)
        it = connections_.count(it->first) ? std::next(it) : tracks_.erase(it);
}

void HungAborter::sample(Clock::time_point now) {
    if (closed_ || threshold_.count() <= 0) return;
    bool probe = false;
    for (const auto& [dev, info_ptr] : connections_) {
        const FuseConnectionInfo& info = *info_ptr;
        const FusectlReading r = read_fusectl(fusectl_dir_, dev);
        if (!r.present || r.aborted) {
            tracks_.erase(dev);
            continue;
        }
        const HangVerdict v =
            judge_hang(tracks_[dev], r.waiting, info.liveness == Liveness::Unresponsive, now, threshold_);
        tracks_[dev] = v.next;
        if (v.action == HangAction::Probe) probe = true;
        if (v.action != HangAction::Abort) continue;
        HungAbort a;
        a.connection = dev;
        a.waiting = r.waiting;
        a.stuck_for = v.stuck_for;
        a.threshold = threshold_;
        a.fstype = info.fstype;
        a.sources = info.sources;
        a.targets = info.targets;
        a.result = abort_fuse_connection(fusectl_dir_, dev);
        tracks_.erase(dev);
        if (on_abort_) on_abort_(a);
    }
    if (probe && request_probe_) request_probe_();
}

} // namespace fh
