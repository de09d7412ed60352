// The engine's step function driven one step at a time, in-process, against
// real mounts: what the daemon's loop does on each event, without the loop.
#include "heal_fixture.h"

#include "engine/engine.h"
#include "engine/event_loop.h"

namespace fh::test {
namespace {

class EngineStep : public IntegrationTest {
protected:
    void SetUp() override {
        IntegrationTest::SetUp();
        if (IsSkipped()) return;
        features = detect_kernel_features({}, "/sys/fs/fuse/connections", false);
        config.match.root_dir = sb.kubelet();
        config.state_dir = sb.state();
        config.probe_timeout = std::chrono::milliseconds(500);
        strategy = *resolve_strategy(config.strategy, features);
        prober = std::make_unique<LivenessProber>(features, config.probe_timeout, [] {});
        executor = std::make_unique<Executor>(features, config.match.root_dir);
        store = std::make_unique<StateStore>(config.state_dir);
        engine = std::make_unique<Engine>(config, strategy, *prober, *executor, *store,
                                          [this](const HealEvent& e) { events.push_back(e); });
    }

    std::vector<HealEvent::Kind> kinds() const {
        std::vector<HealEvent::Kind> k;
        for (const auto& e : events) k.push_back(e.kind);
        return k;
    }

    Sandbox sb;
    Config config;
    KernelFeatures features;
    Strategy strategy = Strategy::Replace;
    std::unique_ptr<LivenessProber> prober;
    std::unique_ptr<Executor> executor;
    std::unique_ptr<StateStore> store;
    std::unique_ptr<Engine> engine;
    std::vector<HealEvent> events;
};

TEST_F(EngineStep, LearnsThenReportsThenHealsOneStepAtATime) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    Container ctr{sb};
    ctr.start(vol, ContainerPropagation::Private, "generation");

    // Step 1, healthy: nothing to do, the origin is learned and saved.
    auto s1 = engine->reconcile(Clock::now());
    EXPECT_EQ(s1.targets, 1);
    EXPECT_EQ(s1.actions, 0);
    EXPECT_TRUE(events.empty());
    ASSERT_EQ(engine->origins().count(vol), 1u);
    EXPECT_EQ(engine->origins().at(vol).source_path, fuse.source());
    EXPECT_TRUE(daemon_learned(sb, vol, 0ms));
    ASSERT_EQ(engine->status().size(), 1u);
    EXPECT_EQ(engine->status()[0].state, TargetState::Healthy);

    // Step 2, the FUSE daemon died: reported broken, nothing mounted.
    fuse.kill9();
    const int mounts = count_mounts_under(sb.root());
    auto s2 = engine->reconcile(Clock::now());
    EXPECT_EQ(s2.actions, 0);
    EXPECT_EQ(kinds(), std::vector<HealEvent::Kind>{HealEvent::Kind::Broken});
    EXPECT_EQ(engine->status()[0].state, TargetState::Broken);
    EXPECT_EQ(count_mounts_under(sb.root()), mounts);

    // Step 3, the source is back: the container copy, then the host mount.
    fuse.supervisor_restart(2);
    auto s3 = engine->reconcile(Clock::now());
    EXPECT_EQ(s3.actions, 2);
    EXPECT_EQ(s3.healed, 1);
    EXPECT_EQ(s3.failures, 0);
    ASSERT_EQ(kinds(), (std::vector<HealEvent::Kind>{HealEvent::Kind::Broken, HealEvent::Kind::Healed}));
    const HealEvent& healed = events.back();
    EXPECT_EQ(healed.ctx.target, vol);
    EXPECT_EQ(healed.ctx.pod_uid, "pod-1");
    EXPECT_EQ(healed.ctx.volume, "pvc-1");
    EXPECT_EQ(healed.source, fuse.source());
    EXPECT_EQ(healed.fstype, "fuse.fh_testfs");
    EXPECT_EQ(healed.namespaces_healed, 1);
    EXPECT_GT(healed.outage_us, 0);
    EXPECT_GT(healed.heal_us, 0);
    EXPECT_EQ(read_file(vol + "/generation"), "2\n");
    EXPECT_TRUE(container_reads(ctr, "2\n", 1000ms));
    EXPECT_EQ(engine->status()[0].heals, 1);

    // Step 4: idempotent.
    auto s4 = engine->reconcile(Clock::now());
    EXPECT_EQ(s4.actions, 0);
    EXPECT_EQ(events.size(), 2u);
}

// A source that comes back without the target's subdirectory is not healed;
// the failure backs off instead of spinning.
TEST_F(EngineStep, SourceWithoutTheSubdirectoryIsNotHealedAndBacksOff) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.set_extra_args({"--tree", "only-in-gen1/x=1"});
    fuse.start(1);
    const std::string sub = sb.pod_subpath_path("pod-1", "pvc-1", "app", 0);
    csi_bind(fuse.source(), "only-in-gen1", sub, true);
    engine->reconcile(Clock::now());
    fuse.kill9();
    fuse.set_extra_args({});
    fuse.supervisor_restart(2);
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.healed, 0);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, HealEvent::Kind::HealFailed);
    EXPECT_NE(events.back().reason.find("only-in-gen1"), std::string::npos) << events.back().reason;
    EXPECT_NE(events.back().reason.find("No such file"), std::string::npos) << events.back().reason;
    auto retry = engine->next_retry();
    ASSERT_TRUE(retry.has_value());
    EXPECT_GT(*retry, Clock::now());
    // Another event before the backoff expires does not try again.
    const std::size_t n = events.size();
    engine->reconcile(Clock::now());
    EXPECT_EQ(events.size(), n);
    EXPECT_EQ(read_errno(sub), ENOTCONN);
}

} // namespace
} // namespace fh::test
