// 64-bit FNV-1a, for keys that must be small and stable across runs of one
// daemon (not against an adversary: nothing here is fed to it to collide):
// the planner's slave-copy keys and the engine's plan-ahead input hashes.
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
