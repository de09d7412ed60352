#include "core/repeat_limiter.h"

#include <gtest/gtest.h>

namespace fh {
namespace {

using namespace std::chrono_literals;
using Clock = RepeatLimiter::Clock;

TEST(RepeatLimiter, LetsABurstThroughPerKeyThenCounts) {
    RepeatLimiter l(3, 60s);
    const Clock::time_point t0{};
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(l.admit("broken /a", t0 + i * 1s)) << i;
    EXPECT_FALSE(l.admit("broken /a", t0 + 3s));
    EXPECT_FALSE(l.admit("broken /a", t0 + 4s));
    // Another key has a burst of its own.
    EXPECT_TRUE(l.admit("healed /a", t0 + 4s));
    EXPECT_TRUE(l.admit("broken /b", t0 + 4s));
    auto s = l.take_suppressed(t0 + 5s);
    EXPECT_EQ(s.lines, 2u);
    EXPECT_EQ(s.by_key, (std::map<std::string, std::uint64_t>{{"broken /a", 2}}));
    // Taken once: the next summary starts from zero.
    EXPECT_TRUE(l.take_suppressed(t0 + 6s).empty());
}

TEST(RepeatLimiter, TheWindowSlides) {
    RepeatLimiter l(2, 10s);
    const Clock::time_point t0{};
    EXPECT_TRUE(l.admit("k", t0));
    EXPECT_TRUE(l.admit("k", t0 + 4s));
    EXPECT_FALSE(l.admit("k", t0 + 9s));
    // t0's line leaves the window at t0 + 10 s: one more goes through, the
    // next must wait for t0 + 4 s's to leave too.
    EXPECT_TRUE(l.admit("k", t0 + 10s));
    EXPECT_FALSE(l.admit("k", t0 + 13s));
    EXPECT_TRUE(l.admit("k", t0 + 14s));
    EXPECT_EQ(l.take_suppressed(t0 + 14s).lines, 2u);
}

TEST(RepeatLimiter, ForgetsQuietKeys) {
    RepeatLimiter l(1, 10s);
    const Clock::time_point t0{};
    EXPECT_TRUE(l.admit("k", t0));
    EXPECT_FALSE(l.admit("k", t0 + 1s));
    EXPECT_EQ(l.take_suppressed(t0 + 30s).lines, 1u);
    // Quiet for longer than the window: a burst again.
    EXPECT_TRUE(l.admit("k", t0 + 31s));
}

// Keys are held by their hash: 4,000 target-like keys that differ only in a
// few characters (as two targets of one pod do) still each get a burst of
// their own.
TEST(RepeatLimiter, ThousandsOfSimilarKeysKeepTheirOwnBursts) {
    RepeatLimiter l(2, 60s);
    const Clock::time_point t0{};
    auto key = [](int i) {
        return std::string(i % 2 ? "healed" : "broken") + " /var/lib/kubelet/pods/" + std::to_string(i / 2) +
               "/volumes/kubernetes.io~csi/pv-" + std::to_string(i % 7) + "/mount";
    };
    for (int round = 0; round < 2; ++round)
        for (int i = 0; i < 4000; ++i) ASSERT_TRUE(l.admit(key(i), t0 + round * 1s)) << key(i);
    for (int i = 0; i < 4000; ++i) ASSERT_FALSE(l.admit(key(i), t0 + 2s)) << key(i);
    const auto s = l.take_suppressed(t0 + 3s);
    EXPECT_EQ(s.lines, 4000u);
    EXPECT_EQ(s.by_key.size(), 4000u);
    EXPECT_EQ(s.by_key.count(key(3999)), 1u);
}

// take_suppressed() forgets the quiet keys and keeps the others' times:
// after it each key still has exactly what its last window left it.
TEST(RepeatLimiter, KeysKeptAcrossAForgetKeepTheirTimes) {
    RepeatLimiter l(2, 10s);
    const Clock::time_point t0{};
    auto key = [](int i) { return "broken /pods/" + std::to_string(i); };
    for (int i = 0; i < 1000; ++i) ASSERT_TRUE(l.admit(key(i), t0));
    for (int i = 0; i < 1000; i += 2) ASSERT_TRUE(l.admit(key(i), t0 + 8s));
    EXPECT_TRUE(l.take_suppressed(t0 + 12s).empty());
    // Even keys hold their t0 + 8 s line: one more goes through. Odd keys
    // were forgotten: a whole burst again.
    for (int i = 0; i < 1000; ++i) {
        ASSERT_TRUE(l.admit(key(i), t0 + 13s)) << i;
        ASSERT_EQ(l.admit(key(i), t0 + 13s), i % 2 == 1) << i;
        ASSERT_FALSE(l.admit(key(i), t0 + 13s)) << i;
    }
    EXPECT_EQ(l.take_suppressed(t0 + 14s).lines, 1500u);
    // All quiet for a window: nothing is held, and keys start over.
    EXPECT_TRUE(l.take_suppressed(t0 + 30s).empty());
    EXPECT_TRUE(l.admit(key(7), t0 + 30s));
    EXPECT_TRUE(l.admit(key(7), t0 + 30s));
    EXPECT_FALSE(l.admit(key(7), t0 + 30s));
}

TEST(RepeatLimiter, ABurstOfZeroMeansOne) {
    RepeatLimiter l(0, 10s);
    EXPECT_EQ(l.burst(), 1u);
    EXPECT_TRUE(l.admit("k", Clock::time_point{}));
    EXPECT_FALSE(l.admit("k", Clock::time_point{}));
}

} // namespace
} // namespace fh
