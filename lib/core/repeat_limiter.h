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
    // Keys held, densely: key k's hash is keys_[k].hash and its times are
    // times_[k * burst_ .. + keys_[k].count), oldest first (at most
    // `burst` in a window, so erasing the oldest moves <= burst items).
    struct Key {
        std::uint64_t hash = 0;
        std::uint32_t count = 0;
    };
    // Returns the index of `hash` in keys_, added (with no time) if absent.
    std::size_t find_or_add(std::uint64_t hash);
    // Makes slots_ anew for keys_: a power of two of at least twice as many
    // slots (at least 64), or none when there is no key.
    void reindex();
    // Drops key k's times at least a window before `now`.
    void drop_older_than_window(std::size_t k, Clock::time_point now);

    std::size_t burst_;
    Clock::duration window_;
    // Flat arrays, not a node per key: the heal worker that calls admit()
    // also makes and frees a step's many small objects, and a node made
    // among them, kept for a window, pins its page after malloc_trim:
    // with std::unordered_map<hash, std::vector> the 4,000 keys of 2,000
    // targets broken and healed (scale_bench) kept ~0.8 MiB more resident
    // after the heal cycles than their ~0.25 MiB. These few arrays grow by
    // doubling (past 64 KiB each is its own mmap, given back when freed).
    // Keyed by the key's 64-bit hash, not a copy of it: a key names a target
    // path (~120 bytes), and a copy per key kept ~1 MiB for up to two
    // windows after such a burst. Two keys of one hash would share a limit;
    // among the ~10^4 keys of a node the odds are ~3e-12 (birthday bound,
    // n^2 / 2^65).
    std::vector<Key> keys_;
    std::vector<Clock::time_point> times_;
    // Open addressing, linear probing: 1 + an index of keys_, 0 = free;
    // at most half full.
    std::vector<std::uint32_t> slots_;
    Suppressed suppressed_;
};

} // namespace fh
