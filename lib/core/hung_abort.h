// When to abort a hung FUSE connection ([heal] abort_hung_after). Pure: the
// sampling of fusectl and the abort itself are engine/hung_abort.h.
//
// fusectl's <id>/waiting counts the requests the daemon has not answered
// yet. A hung daemon answers none: the count never goes down, and every
// process that touches the mount (a pod, our own statx probe) adds one. A
// live daemon answers: the count goes down now and then. So "stuck" is
// measured from the last time the count went DOWN (or was 0); it going up
// does not restart the clock, or pods piling onto a hung mount would keep it
// from ever being aborted. A count that stays up while the daemon is alive
// (a blocking lock request, FUSE_SETLKW, waits as long as the lock is held)
// is told apart by a probe: a connection is aborted only when its mounts are
// also reported unresponsive (a statx probe timed out).
#pragma once

#include <chrono>
#include <cstdint>

namespace fh {

// What is remembered of one connection between samples.
struct HangTrack {
    bool stuck = false;                             // waiting > 0 and not gone down since `since`
    std::uint64_t waiting = 0;                      // the last sample
    std::chrono::steady_clock::time_point since{};  // when it was last 0 or went down
    std::chrono::steady_clock::time_point probed{}; // when a probe was last asked for in this streak, {} if none
    bool operator==(const HangTrack&) const = default;
};

enum class HangAction {
    None,   // nothing to do
    Probe,  // stuck long enough but not reported unresponsive: start a probe (a reconcile)
    Abort,  // stuck long enough and unresponsive: abort the connection
};
// Returns "none", "probe" or "abort".
const char* to_string(HangAction a);

struct HangVerdict {
    HangTrack next;                       // remember this until the next sample
    HangAction action = HangAction::None;
    std::chrono::microseconds stuck_for{0};  // now - since while stuck, else 0
};

// Returns what to do with a connection whose fusectl `waiting` now reads
// `waiting`, given what was remembered (`prev`, default-constructed for a
// connection not seen before), whether its mounts are reported unresponsive
// (a probe of them timed out and has not returned), and the threshold
// (abort_hung_after, > 0). Abort once the count has been > 0 without going
// down for at least `threshold` and the mounts are unresponsive; Probe when
// the time has come but no probe says so (again every `threshold`, for a
// daemon that answered a probe and hangs later in the same streak).
HangVerdict judge_hang(const HangTrack& prev, std::uint64_t waiting, bool unresponsive,
                       std::chrono::steady_clock::time_point now, std::chrono::microseconds threshold);

} // namespace fh
