// A hash multimap in one flat array, for indexes held by the ten thousand:
// the mount tracker's by-mountpoint and by-mountinfo-id indexes. A
// std::unordered_multimap keeps each pair in a heap node of its own (next
// pointer, cached hash, malloc's header: 32-48 bytes a pair) and a bucket
// array besides; here a pair is one 16-byte slot, at most 3/4 of the slots
// used (~0.45 MiB less for both indexes at 10,000 mounts, docs/PERFORMANCE.md
// Session 16).
//
// The caller hashes its keys (core/fnv1a.h) and stores the hash, not the
// key: values under one hash may belong to different keys, so a lookup
// checks each value's own key (a value is typically a pointer to the record
// that holds it). Open addressing with linear probing; an erase shifts the
// slots after it back, so there are no tombstones and a probe ends at the
// first empty slot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fh {

// `Value` is a pointer or an integer, and a null pointer or 0 is never
// stored: it marks an empty slot.
template <class Value>
class FlatHashMultimap {
public:
    // Adds the pair (hash, value); a pair already there is added again.
    void insert(std::uint64_t hash, Value value) {
        if ((size_ + 1) * 4 > slots_.size() * 3) grow(slots_.empty() ? kMinSlots : slots_.size() * 2);
        place(Slot{hash, value});
        ++size_;
    }

    // Removes one (hash, value) pair. Returns whether there was one.
    bool erase(std::uint64_t hash, Value value) {
        if (slots_.empty()) return false;
        for (std::size_t i = home(hash);; i = next(i)) {
            if (is_empty(slots_[i])) return false;
            if (slots_[i].hash == hash && slots_[i].value == value) {
                remove_at(i);
                return true;
            }
        }
    }

    // Calls `f(value)` for each value stored under `hash`, in no order;
    // `f` returns false to stop. `f` must not change this map.
    template <class F>
    void for_each(std::uint64_t hash, F&& f) const {
        if (slots_.empty()) return;
        for (std::size_t i = home(hash); !is_empty(slots_[i]); i = next(i))
            if (slots_[i].hash == hash && !f(slots_[i].value)) return;
    }

    // Makes room for `n` pairs without growing again.
    void reserve(std::size_t n) {
        std::size_t want = kMinSlots;
        while (n * 4 > want * 3) want *= 2;
        if (want > slots_.size()) grow(want);
    }

    // Returns the number of pairs stored.
    std::size_t size() const { return size_; }
    // Returns the number of slots (a power of two, or 0 before the first insert).
    std::size_t capacity() const { return slots_.size(); }

private:
    struct Slot {
        std::uint64_t hash = 0;
        Value value{};
    };
    static constexpr std::size_t kMinSlots = 16;

    static bool is_empty(const Slot& s) { return !s.value; }

    // The home slot is the top bits of the hash times a 64-bit odd
    // constant (Fibonacci hashing): a multiply carries every bit of the hash
    // into the top ones, whatever the caller's hash left in its low bits.
    std::size_t home(std::uint64_t hash) const {
        return static_cast<std::size_t>((hash * 0x9E3779B97F4A7C15ULL) >> shift_);
    }
    std::size_t next(std::size_t i) const { return (i + 1) & (slots_.size() - 1); }

    void place(Slot s) {
        std::size_t i = home(s.hash);
        while (!is_empty(slots_[i])) i = next(i);
        slots_[i] = s;
    }

    void grow(std::size_t slots) {
        std::vector<Slot> old = std::move(slots_);
        slots_.assign(slots, Slot{});
        shift_ = 64;
        for (std::size_t n = slots; n > 1; n /= 2) --shift_;
        for (const Slot& s : old)
            if (!is_empty(s)) place(s);
    }

    // Empties slot `i`, then moves back each slot of the run after it that
    // may live there (its home is not strictly between the hole and it,
    // cyclically), so every probe still reaches its pair before an empty slot.
    void remove_at(std::size_t i) {
        std::size_t hole = i;
        for (std::size_t j = next(i); !is_empty(slots_[j]); j = next(j)) {
            const std::size_t h = home(slots_[j].hash);
            const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
            if (stays) continue;
            slots_[hole] = slots_[j];
            hole = j;
        }
        slots_[hole] = Slot{};
        --size_;
    }

    std::vector<Slot> slots_;
    std::size_t size_ = 0;
    unsigned shift_ = 64;
};

}  // namespace fh
