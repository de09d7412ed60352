// Tests of HungAborter (engine/hung_abort.h) on a fake fusectl directory,
// one sample at a time: the decision is core/hung_abort.h's (unit tests);
// these check what is read, written and reported. A real stopped FUSE
// daemon is an integration test (tests/integration/death_watch_test.cpp).
#include "engine/hung_abort.h"

#include <sys/sysmacros.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <filesystem>
#include <string>
#include <vector>

#include "core/fuse_servers.h"

namespace fh {
namespace {

using testing_support::slurp;
using testing_support::spit;
using testing_support::TempDir;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class HungAborterTest : public ::testing::Test {
protected:
    void SetUp() override { uv_loop_init(&loop_); }
    void TearDown() override {
        aborter_.reset();
        uv_run(&loop_, UV_RUN_DEFAULT);
        uv_loop_close(&loop_);
    }
    // A connection <id> with `waiting` requests and an (empty) abort file.
    void set(std::uint32_t id, const std::string& waiting, bool aborted = false) {
        fs::create_directories(ctl_ / std::to_string(id));
        spit(ctl_ / (std::to_string(id) + "/max_background"), aborted ? "4294967295\n" : "12\n");
        spit(ctl_ / (std::to_string(id) + "/waiting"), waiting + "\n");
        if (!fs::exists(ctl_ / (std::to_string(id) + "/abort"))) spit(ctl_ / (std::to_string(id) + "/abort"), "");
    }
    std::string abort_file(std::uint32_t id) { return slurp(ctl_ / (std::to_string(id) + "/abort")); }
    HungAborter& make(std::chrono::microseconds threshold) {
        aborter_ = std::make_unique<HungAborter>(
            &loop_, ctl_.path(), [this](const HungAbort& a) { aborts_.push_back(a); }, [this] { ++probes_; });
        aborter_->set_threshold(threshold);
        return *aborter_;
    }
    static FuseConnectionInfo conn(std::uint32_t id, Liveness l) {
        FuseConnectionInfo c;
        c.device = connection_device(id);
        c.fstype = "fuse.s3fs";
        c.sources = {"/runtime/s3/fuse"};
        c.targets = {"/k/pods/a/v"};
        c.liveness = l;
        return c;
    }

    uv_loop_t loop_{};
    TempDir ctl_;
    std::unique_ptr<HungAborter> aborter_;
    std::vector<HungAbort> aborts_;
    int probes_ = 0;
    const Clock::time_point t0_ = Clock::now();
};

TEST_F(HungAborterTest, StuckThenProbedThenAborted) {
    set(40, "2");
    set(41, "0");  // idle: never
    HungAborter& h = make(60s);
    h.set_connections({conn(40, Liveness::Alive), conn(41, Liveness::Alive)});
    h.sample(t0_);
    h.sample(t0_ + 30s);
    EXPECT_EQ(probes_, 0);
    h.sample(t0_ + 60s);
    EXPECT_EQ(probes_, 1) << "time has come, no probe said unresponsive yet: a reconcile is asked for";
    EXPECT_TRUE(aborts_.empty());
    set(40, "3");  // the probe's own request
    h.set_connections({conn(40, Liveness::Unresponsive), conn(41, Liveness::Alive)});
    h.sample(t0_ + 61s);
    ASSERT_EQ(aborts_.size(), 1u);
    const HungAbort& a = aborts_[0];
    EXPECT_EQ(a.connection, connection_device(40));
    EXPECT_EQ(a.waiting, 3u);
    EXPECT_EQ(a.stuck_for, 61s);
    EXPECT_EQ(a.threshold, 60s);
    EXPECT_EQ(a.sources, (std::vector<std::string>{"/runtime/s3/fuse"}));
    EXPECT_TRUE(a.result.ok()) << a.result.error().message();
    EXPECT_EQ(abort_file(40), "1");
    EXPECT_EQ(abort_file(41), "");
    // Aborted now: nothing more.
    set(40, "0", true);
    h.sample(t0_ + 200s);
    EXPECT_EQ(aborts_.size(), 1u);
}

TEST_F(HungAborterTest, AnAnsweredRequestOrAnIdleConnectionIsLeftAlone) {
    set(42, "5");
    HungAborter& h = make(10s);
    h.set_connections({conn(42, Liveness::Unresponsive)});
    h.sample(t0_);
    set(42, "4");  // one answered
    h.sample(t0_ + 9s);
    h.sample(t0_ + 15s);
    EXPECT_TRUE(aborts_.empty()) << "stuck only since 9 s";
    h.sample(t0_ + 19s);
    EXPECT_EQ(aborts_.size(), 1u);
}

TEST_F(HungAborterTest, OffWhenTheThresholdIsZeroAndFailuresAreReported) {
    set(43, "1");
    HungAborter& h = make(0s);
    h.set_connections({conn(43, Liveness::Unresponsive)});
    h.sample(t0_);
    h.sample(t0_ + 3600s);
    EXPECT_TRUE(aborts_.empty());
    EXPECT_EQ(probes_, 0);
    // On: an abort that cannot be written is reported with its error.
    h.set_threshold(1s);
    fs::remove(ctl_ / "43/abort");
    h.sample(t0_ + 3601s);
    h.sample(t0_ + 3602s);
    ASSERT_EQ(aborts_.size(), 1u);
    EXPECT_FALSE(aborts_[0].result.ok());
    EXPECT_EQ(aborts_[0].result.error().err, ENOENT);
}

TEST(HungAborterPeriod, TenthOfTheThresholdBetween100msAnd1s) {
    EXPECT_EQ(HungAborter::period_for(1s), 100ms);
    EXPECT_EQ(HungAborter::period_for(5s), 500ms);
    EXPECT_EQ(HungAborter::period_for(5min), 1000ms);
    EXPECT_EQ(HungAborter::period_for(100ms), 100ms);
}

} // namespace
} // namespace fh
