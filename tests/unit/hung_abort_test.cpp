// Tests of core/hung_abort.h: when a hung FUSE connection is aborted
// ([heal] abort_hung_after), one fusectl sample at a time.
#include "core/hung_abort.h"

#include <gtest/gtest.h>

#include <vector>

namespace fh {
namespace {

using namespace std::chrono_literals;
using TimePoint = std::chrono::steady_clock::time_point;

const TimePoint t0 = TimePoint{} + 1000s;
constexpr std::chrono::microseconds kThreshold = 60s;

// Feeds samples (seconds after t0, waiting, unresponsive) in order and
// returns the actions, starting from a connection never seen.
struct Sample {
    int at_s;
    std::uint64_t waiting;
    bool unresponsive;
};
std::vector<HangAction> run(const std::vector<Sample>& samples, HangTrack* last = nullptr) {
    HangTrack track;
    std::vector<HangAction> out;
    for (const Sample& s : samples) {
        const HangVerdict v = judge_hang(track, s.waiting, s.unresponsive, t0 + std::chrono::seconds(s.at_s), kThreshold);
        track = v.next;
        out.push_back(v.action);
    }
    if (last) *last = track;
    return out;
}

using A = HangAction;

TEST(HungAbort, IdleConnectionsAreNeverStuck) {
    const HangVerdict v = judge_hang({}, 0, true, t0, kThreshold);
    EXPECT_EQ(v.action, A::None);
    EXPECT_FALSE(v.next.stuck);
    EXPECT_EQ(v.stuck_for, 0us);
    EXPECT_EQ(run({{0, 0, true}, {100, 0, true}, {200, 0, true}}), (std::vector<A>{A::None, A::None, A::None}));
}

TEST(HungAbort, StuckAndUnresponsiveForTheThresholdIsAborted) {
    HangTrack last;
    EXPECT_EQ(run({{0, 2, false}, {30, 2, true}, {59, 2, true}, {60, 2, true}}, &last),
              (std::vector<A>{A::None, A::None, A::None, A::Abort}));
    const HangVerdict v = judge_hang({true, 2, t0, {}}, 2, true, t0 + 61s, kThreshold);
    EXPECT_EQ(v.action, A::Abort);
    EXPECT_EQ(v.stuck_for, 61s);
    EXPECT_EQ(v.next.since, t0);
}

TEST(HungAbort, RequestsPilingUpDoNotRestartTheClock) {
    // Pods keep touching the hung mount, our probe adds one: the count only
    // grows, no request is answered.
    EXPECT_EQ(run({{0, 1, false}, {10, 3, false}, {20, 4, true}, {50, 9, true}, {60, 12, true}}),
              (std::vector<A>{A::None, A::None, A::None, A::None, A::Abort}));
}

TEST(HungAbort, AnAnsweredRequestRestartsTheClock) {
    // A slow daemon under load: the count goes down now and then.
    EXPECT_EQ(run({{0, 3, true}, {50, 2, true}, {100, 4, true}, {109, 4, true}, {110, 4, true}}),
              (std::vector<A>{A::None, A::None, A::None, A::None, A::Abort}))
        << "stuck from 50 s (the last decrease) to 110 s";
    EXPECT_EQ(run({{0, 3, true}, {59, 1, true}, {61, 1, true}}), (std::vector<A>{A::None, A::None, A::None}));
    // Back to 0 (idle) ends the streak.
    EXPECT_EQ(run({{0, 3, true}, {30, 0, true}, {40, 3, true}, {90, 3, true}, {100, 3, true}}),
              (std::vector<A>{A::None, A::None, A::None, A::None, A::Abort}));
}

TEST(HungAbort, AnsweringProbesMeansAliveAndAProbeIsAskedForAgainLater) {
    // A blocking lock request (FUSE_SETLKW) waits while the daemon answers
    // everything else: the count stays at 1, probes succeed.
    HangTrack last;
    EXPECT_EQ(run({{0, 1, false}, {60, 1, false}, {61, 1, false}, {119, 1, false}, {120, 1, false}, {121, 1, false}},
                  &last),
              (std::vector<A>{A::None, A::Probe, A::None, A::None, A::Probe, A::None}))
        << "a probe when the time has come, then again a threshold later";
    EXPECT_EQ(last.probed, t0 + 120s);
    // The daemon hangs later in the same streak: the next probe says so.
    EXPECT_EQ(judge_hang(last, 1, true, t0 + 122s, kThreshold).action, A::Abort);
}

TEST(HungAbort, ProbeFirstThenAbortOnceUnresponsive) {
    EXPECT_EQ(run({{0, 2, false}, {60, 2, false}, {61, 3, false}, {62, 3, true}}),
              (std::vector<A>{A::None, A::Probe, A::None, A::Abort}))
        << "the probe itself adds a waiting request; that does not restart the clock";
}

TEST(HungAbort, ZeroThresholdNeverActs) {
    const HangVerdict first = judge_hang({}, 5, true, t0, 0us);
    const HangVerdict v = judge_hang(first.next, 5, true, t0 + 3600s, 0us);
    EXPECT_EQ(v.action, A::None);
    EXPECT_EQ(v.stuck_for, 3600s);
}

TEST(HungAbort, ActionNames) {
    EXPECT_STREQ(to_string(A::None), "none");
    EXPECT_STREQ(to_string(A::Probe), "probe");
    EXPECT_STREQ(to_string(A::Abort), "abort");
}

} // namespace
} // namespace fh
