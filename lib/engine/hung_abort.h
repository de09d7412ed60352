// [heal] abort_hung_after: aborts FUSE connections whose daemon is hung, so
// that the daemon's restart can be healed like a death (a hung connection
// is never healed: its mounts are unresponsive, not dead, and a hung daemon
// stuck in the kernel may not even die of a kill -9).
//
// A loop timer samples fusectl's <id>/waiting of every tracked connection
// (one small file read each; nothing touches the FUSE filesystem); the
// decision is core/hung_abort.h's judge_hang; the abort writes to
// <id>/abort. Off (no timer) when the threshold is 0 or without fusectl.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hung_abort.h"
#include "engine/engine.h"

namespace fh {

// One hung connection aborted (or an abort that failed).
struct HungAbort {
    dev_t connection = 0;
    std::uint64_t waiting = 0;                // requests pending, as last sampled
    std::chrono::microseconds stuck_for{0};   // since the count was last 0 or went down
    std::chrono::microseconds threshold{0};   // abort_hung_after
    std::string fstype;
    std::vector<std::string> sources;
    std::vector<std::string> targets;
    Status result;                            // the write to <id>/abort
};

class HungAborter {
public:
    // Called on the loop thread for each abort made or failed.
    using AbortObserver = std::function<void(const HungAbort&)>;
    // Asks for a reconcile, whose probes tell whether the mounts answer.
    using ProbeRequest = std::function<void()>;

    HungAborter(uv_loop_t* loop, std::string fusectl_dir, AbortObserver on_abort, ProbeRequest request_probe);
    ~HungAborter();
    HungAborter(const HungAborter&) = delete;
    HungAborter& operator=(const HungAborter&) = delete;

    // Sets abort_hung_after (0: off) and (re)starts or stops the sampling
    // timer (every threshold / 10, between 100 ms and 1 s).
    void set_threshold(std::chrono::microseconds threshold);

    // Step (loop thread): the engine's FUSE superblocks after a reconcile,
    // with their liveness (Unresponsive: a probe timed out).
    void set_connections(const std::vector<FuseConnectionInfo>& connections);
    // The same, kept as the engine's shared list (no copy of it).
    void set_connections(std::shared_ptr<const std::vector<FuseConnectionInfo>> connections);

    // Step (loop thread): samples every tracked connection at `now` and
    // acts on the verdicts.
    void sample(Clock::time_point now);

    // Stops the timer; the loop must run once more to finish closing.
    void close();

    // Returns the sampling period for a threshold.
    static std::chrono::milliseconds period_for(std::chrono::microseconds threshold);

private:
    uv_timer_t timer_{};
    std::string fusectl_dir_;
    AbortObserver on_abort_;
    ProbeRequest request_probe_;
    std::chrono::microseconds threshold_{0};
    std::shared_ptr<const std::vector<FuseConnectionInfo>> connections_list_;  // what connections_ points into
    std::map<dev_t, const FuseConnectionInfo*> connections_;
    std::map<dev_t, HangTrack> tracks_;
    bool closed_ = false;
};

} // namespace fh
