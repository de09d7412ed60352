// 64-bit FNV-1a, for hashes that must be small and cheap, not proof against
// an adversary: the planner's slave-copy keys, the engine's plan-ahead input
// hashes, the mount tracker's flat indexes (which check every entry a hash
// finds) and the mountinfo fuzzer's seed. The first two trust the hash: two
// mountpoints of one namespace, or two plan inputs, colliding in 64 bits is
// not guarded against (odds ~1e-12 at thousands of keys).
#pragma once

#include <cstdint>
#include <string_view>

namespace fh {

inline constexpr std::uint64_t kFnv1aOffsetBasis = 14695981039346656037ULL;
inline constexpr std::uint64_t kFnv1aPrime = 1099511628211ULL;

// Returns `h` with the 64-bit word `x` folded in at once (one xor and one
// multiply, where FNV-1a proper takes the eight bytes one by one): enough to
// tell ids and counts apart, at an eighth of the cost.
constexpr std::uint64_t fnv1a_mix(std::uint64_t h, std::uint64_t x) { return (h ^ x) * kFnv1aPrime; }

// Returns the FNV-1a hash of `bytes`, continuing from `h`.
constexpr std::uint64_t fnv1a(std::string_view bytes, std::uint64_t h = kFnv1aOffsetBasis) {
    for (const char c : bytes) h = (h ^ static_cast<unsigned char>(c)) * kFnv1aPrime;
    return h;
}

}  // namespace fh
