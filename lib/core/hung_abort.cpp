#include "core/hung_abort.h"

namespace fh {

const char* to_string(HangAction a) {
    switch (a) {
    case HangAction::None: return "none";
    case HangAction::Probe: return "probe";
    case HangAction::Abort: return "abort";
    }
    return "none";
}

HangVerdict judge_hang(const HangTrack& prev, std::uint64_t waiting, bool unresponsive,
                       std::chrono::steady_clock::time_point now, std::chrono::microseconds threshold) {
    HangVerdict v;
    if (waiting == 0) return v;  // nothing pending: not stuck
    if (!prev.stuck || waiting < prev.waiting) {
        // First sample with requests pending, or one was answered: the
        // clock starts (again) now.
        v.next = HangTrack{true, waiting, now, {}};
        return v;
    }
    v.next = prev;
    v.next.waiting = waiting;
    v.stuck_for = std::chrono::duration_cast<std::chrono::microseconds>(now - prev.since);
    if (threshold.count() <= 0 || v.stuck_for < threshold) return v;
    if (unresponsive) {
        v.action = HangAction::Abort;
    } else if (prev.probed == std::chrono::steady_clock::time_point{} || now - prev.probed >= threshold) {
        v.action = HangAction::Probe;
        v.next.probed = now;
    }
    return v;
}

} // namespace fh
