// Rate limit of repeated log lines, pure (the caller passes the time).
//
// A line is known by a key (e.g. "broken <target>"): at most `burst` lines
// of one key are let through in any `window`; the others are counted, and
// take_suppressed() hands the counts over for one summary line. A FUSE
// daemon in a crash loop makes every one of its targets broken and healed
// again at each crash: without a limit, a few hundred targets crash-looping
// together write thousands of lines a second, and journald's own rate limit
// (10,000 lines per 30 s per service by default) then drops every line of
// the service, the useful ones with them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace fh {

class RepeatLimiter {
public:
    using Clock = std::chrono::steady_clock;

    // `burst` >= 1 lines per key in any `window` (> 0).
    RepeatLimiter(std::size_t burst, Clock::duration window);

    // Returns true when the line of `key` at `now` is to be written, false
    // when it is one too many (it is counted). `now` never goes back.
    bool admit(const std::string& key, Clock::time_point now);

    struct Suppressed {
        std::uint64_t lines = 0;                     // in all
        std::map<std::string, std::uint64_t> by_key;  // lines per key, sorted by key
        bool empty() const { return lines == 0; }
    };
    // Returns the lines held back since the last call, and forgets them
    // and the keys with no line in the last window (so memory holds only
    // the keys of the last window).
    Suppressed take_suppressed(Clock::time_point now);

    std::size_t burst() const { return burst_; }
    Clock::duration window() const { return window_; }

private:
    // Drops the times at least a window before `now` (they are oldest first).
    void drop_older_than_window(std::vector<Clock::time_point>& times, Clock::time_point now) const;

    std::size_t burst_;
    Clock::duration window_;
    // Per key, the times of its lines in the last window, oldest first: at
    // most `burst` of them, so a vector (erasing its front moves <= burst
    // items). A std::deque allocated a 512-byte block per key: ~2.4 MiB for
    // the 4,000 keys of 2,000 targets broken and healed (scale_bench heap).
    // Keyed by the key's 64-bit hash, not a copy of it: a key names a target
    // path (~120 bytes), and a copy per key kept ~1 MiB for up to two
    // windows after such a burst. Two keys of one hash would share a limit;
    // among the ~10^4 keys of a node the odds are ~3e-12 (birthday bound,
    // n^2 / 2^65).
    std::unordered_map<std::uint64_t, std::vector<Clock::time_point>> admitted_;
    Suppressed suppressed_;
};

} // namespace fh
