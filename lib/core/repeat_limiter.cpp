#include "core/repeat_limiter.h"

#include <algorithm>

namespace fh {

RepeatLimiter::RepeatLimiter(std::size_t burst, Clock::duration window)
    : burst_(std::max<std::size_t>(burst, 1)), window_(window) {}

void RepeatLimiter::drop_older_than_window(std::vector<Clock::time_point>& times, Clock::time_point now) const {
    const auto first_kept =
        std::find_if(times.begin(), times.end(), [&](Clock::time_point t) { return now - t < window_; });
    times.erase(times.begin(), first_kept);
}

bool RepeatLimiter::admit(const std::string& key, Clock::time_point now) {
    std::vector<Clock::time_point>& times = admitted_[std::hash<std::string>{}(key)];
    drop_older_than_window(times, now);
    if (times.size() < burst_) {
        times.push_back(now);
        return true;
    }
    ++suppressed_.lines;
    ++suppressed_.by_key[key];
    return false;
}

RepeatLimiter::Suppressed RepeatLimiter::take_suppressed(Clock::time_point now) {
    for (auto it = admitted_.begin(); it != admitted_.end();) {
        std::vector<Clock::time_point>& times = it->second;
        drop_older_than_window(times, now);
        it = times.empty() ? admitted_.erase(it) : std::next(it);
    }
    Suppressed out = std::move(suppressed_);
    suppressed_ = {};
    return out;
}

} // namespace fh
