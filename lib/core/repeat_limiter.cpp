#include "core/repeat_limiter.h"

#include <algorithm>

namespace fh {

RepeatLimiter::RepeatLimiter(std::size_t burst, Clock::duration window)
    : burst_(std::max<std::size_t>(burst, 1)), window_(window) {}

bool RepeatLimiter::admit(const std::string& key, Clock::time_point now) {
    std::deque<Clock::time_point>& times = admitted_[key];
    while (!times.empty() && now - times.front() >= window_) times.pop_front();
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
        std::deque<Clock::time_point>& times = it->second;
        while (!times.empty() && now - times.front() >= window_) times.pop_front();
        it = times.empty() ? admitted_.erase(it) : std::next(it);
    }
    Suppressed out = std::move(suppressed_);
    suppressed_ = {};
    return out;
}

} // namespace fh
