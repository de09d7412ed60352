#include "core/repeat_limiter.h"

#include <algorithm>
#include <bit>

namespace fh {

RepeatLimiter::RepeatLimiter(std::size_t burst, Clock::duration window)
    : burst_(std::max<std::size_t>(burst, 1)), window_(window) {}

void RepeatLimiter::drop_older_than_window(std::size_t k, Clock::time_point now) {
    const auto held_begin = times_.begin() + static_cast<std::ptrdiff_t>(k * burst_);
    const auto held_end = held_begin + keys_[k].count;
    const auto oldest_kept =
        std::find_if(held_begin, held_end, [&](Clock::time_point t) { return now - t < window_; });
    std::move(oldest_kept, held_end, held_begin);
    keys_[k].count -= static_cast<std::uint32_t>(oldest_kept - held_begin);
}

void RepeatLimiter::reindex() {
    slots_.clear();
    if (keys_.empty()) {
        slots_.shrink_to_fit();
        return;
    }
    slots_.resize(std::max<std::size_t>(64, std::bit_ceil(keys_.size() * 2)), 0);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t k = 0; k < keys_.size(); ++k) {
        std::size_t i = keys_[k].hash & mask;
        while (slots_[i] != 0) i = (i + 1) & mask;
        slots_[i] = static_cast<std::uint32_t>(k + 1);
    }
}

std::size_t RepeatLimiter::find_or_add(std::uint64_t hash) {
    // The free slot the search stops at is where a new key goes, unless the
    // table must grow first (then reindex() places every key).
    std::size_t free_slot = 0;
    if (!slots_.empty()) {
        const std::size_t mask = slots_.size() - 1;
        std::size_t i = hash & mask;
        for (; slots_[i] != 0; i = (i + 1) & mask)
            if (keys_[slots_[i] - 1].hash == hash) return slots_[i] - 1;
        free_slot = i;
    }
    keys_.push_back(Key{hash, 0});
    times_.resize(keys_.size() * burst_);
    if (keys_.size() * 2 > slots_.size())
        reindex();
    else
        slots_[free_slot] = static_cast<std::uint32_t>(keys_.size());
    return keys_.size() - 1;
}

bool RepeatLimiter::admit(const std::string& key, Clock::time_point now) {
    const std::size_t k = find_or_add(std::hash<std::string>{}(key));
    drop_older_than_window(k, now);
    if (keys_[k].count < burst_) {
        times_[k * burst_ + keys_[k].count++] = now;
        return true;
    }
    ++suppressed_.lines;
    ++suppressed_.by_key[key];
    return false;
}

RepeatLimiter::Suppressed RepeatLimiter::take_suppressed(Clock::time_point now) {
    // Keeps the keys with a time in the last window, in place and in order.
    std::size_t kept = 0;
    for (std::size_t k = 0; k < keys_.size(); ++k) {
        drop_older_than_window(k, now);
        if (keys_[k].count == 0) continue;
        if (kept != k) {
            keys_[kept] = keys_[k];
            std::copy_n(times_.begin() + static_cast<std::ptrdiff_t>(k * burst_), keys_[k].count,
                        times_.begin() + static_cast<std::ptrdiff_t>(kept * burst_));
        }
        ++kept;
    }
    if (kept != keys_.size()) {
        keys_.resize(kept);
        times_.resize(kept * burst_);
        // Given back once the burst is over (a crash loop's thousands of
        // keys would otherwise hold their arrays for good).
        if (keys_.capacity() > 2 * std::max<std::size_t>(kept, 32)) {
            keys_.shrink_to_fit();
            times_.shrink_to_fit();
        }
        reindex();
    }
    Suppressed out = std::move(suppressed_);
    suppressed_ = {};
    return out;
}

} // namespace fh
