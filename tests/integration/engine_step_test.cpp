// The engine's step function driven one step at a time, in-process, against
// real mounts: what the daemon's loop does on each event, without the loop.
#include "heal_fixture.h"

#include <map>
#include <mutex>
#include <thread>

#include <sys/mount.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "engine/event_loop.h"
#include "engine/mount_query.h"
#include "engine/mount_tracker.h"

namespace fh::test {
namespace {

// The parameters: whether heals are armed while a source is down (the
// statmount source check) or every step reads the whole table first; and
// where the host table comes from (mount tracking by fanotify, or a read of
// /proc/self/mountinfo per step).
struct StepVariant {
    bool armed;
    bool tracked;
};

class EngineStep : public IntegrationTest, public ::testing::WithParamInterface<StepVariant> {
protected:
    void SetUp() override {
        IntegrationTest::SetUp();
        if (IsSkipped()) return;
        spdlog::set_level(spdlog::level::debug);  // shown by ctest only when a test fails
        features = detect_kernel_features({}, "/sys/fs/fuse/connections", false);
        if (armed() && !features.statmount) GTEST_SKIP() << "statmount is not usable on this kernel";
        if (GetParam().tracked && !features.fanotify_mount) GTEST_SKIP() << "no fanotify mount events on this kernel";
        EngineSettings settings;
        // The daemon's wiring with fusectl in use (plan_ahead), when the
        // fixture wants heals planned ahead.
        settings.plan_ahead = restart_grace().count() > 0;
        config.restart_grace = restart_grace();
        if (armed())
            settings.source_lookup = {
                [this](const std::string& path) { return identify_mount_at_path(path, features.openat2); },
                statmount_entry};
        config.match.root_dir = sb.kubelet();
        config.state_dir = sb.state();
        config.probe_timeout = std::chrono::milliseconds(500);
        if (GetParam().tracked) {
            // The daemon's wiring, without its loop: each step's table()
            // applies whatever the kernel queued since the last one.
            auto t = MountTracker::open(make_relevance_rules(config.match, {}));
            ASSERT_TRUE(t) << t.error().message();
            tracker = std::move(*t);
            settings.host_table = [this] { return tracker->table(); };
        }
        if (hooks_table_reads()) {
            // Runs before_table_read (once) where a step reads the host's
            // table: after the heals armed earlier have fired, before the
            // step's full read and plan.
            auto read = settings.host_table;  // the tracker's; none: /proc/self/mountinfo, whole
            settings.host_table = [this, read]() -> Result<std::shared_ptr<const MountTable>> {
                if (auto hook = std::exchange(before_table_read, nullptr)) hook();
                if (read) return read();
                auto t = read_mountinfo("/proc/self/mountinfo");
                if (!t) return t.error();
                return std::make_shared<const MountTable>(std::move(*t));
            };
        }
        strategy = *resolve_strategy(config.strategy, features);
        prober = std::make_unique<LivenessProber>(features, config.probe_timeout, [] {});
        executor = std::make_unique<Executor>(features, config.match.root_dir);
        store = std::make_unique<StateStore>(config.state_dir);
        engine = std::make_unique<Engine>(config, strategy, *prober, *executor, *store,
                                          [this](const HealEvent& e) { events.push_back(e); }, VolumeLookup{},
                                          std::move(settings));
    }

    bool armed() const { return GetParam().armed; }
    // [heal] restart_grace: 0 (nothing planned ahead of a death)
    // but in the fixture that tests it.
    virtual std::chrono::milliseconds restart_grace() const { return std::chrono::milliseconds(0); }
    // Whether the fixture wants before_table_read called.
    virtual bool hooks_table_reads() const { return false; }
    std::function<void()> before_table_read;

    // Binds `sub` of `fuse` (generation 1; "" for its root) read-only into
    // pod-1, starts a private container there reading `file`, takes the
    // steps through the death of `fuse` (the step that sees it and the walk
    // after it), and restarts it as generation 2 holding every request for
    // `held` (fh_testfs --gate) until `let_go` exists. Returns the target.
    std::string outage_then_held_restart(FuseDaemon& fuse, Container& ctr, const std::string& sub,
                                         const std::string& file, const std::string& held,
                                         const std::string& let_go) {
        fuse.start(1);
        const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
        csi_bind(fuse.source(), sub, vol, true);
        ctr.start(vol, ContainerPropagation::Private, file);
        const auto first = read_file(fuse.source() + "/" + (sub.empty() ? "" : sub + "/") + file);
        EXPECT_TRUE(first && container_reads(ctr, *first, 1000ms));
        engine->reconcile(Clock::now());
        fuse.kill9();
        engine->reconcile(Clock::now());  // the death
        engine->reconcile(Clock::now());  // the walk after it
        fuse.set_extra_args({"--gate", held + "=" + let_go});
        fuse.supervisor_restart(2);
        return vol;
    }
    // Lets the held requests go and returns the summary of the step after
    // the back-off (100 ms after one failure).
    ReconcileSummary let_go_and_step(const std::string& let_go) {
        write_file(let_go, "");
        std::this_thread::sleep_for(250ms);
        return engine->reconcile(Clock::now());
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
    std::unique_ptr<MountTracker> tracker;
    std::unique_ptr<Engine> engine;
    std::vector<HealEvent> events;
};

TEST_P(EngineStep, BindsOfADirectoryTheDeadConnectionInvalidatedAreHealed) {
    // A lookup through a dead connection fails (ENOTCONN), the kernel drops
    // the dentry, and from then on every bind of that directory, the pod's
    // and the container's copy, shows its root as "/sub//deleted". A crash
    // loop of squashfuse left containers on a dead superblock this way (the
    // heal's own probe of the new source, dead again, did the lookup).
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.set_extra_args({"--timeout", "0"});  // every lookup goes to the daemon
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "sub", vol, true);
    Container ctr{sb};
    ctr.start(vol, ContainerPropagation::Private, "inner");
    engine->reconcile(Clock::now());

    fuse.kill9();
    struct stat st {};
    EXPECT_NE(::stat((fuse.source() + "/sub").c_str(), &st), 0);
    // The precondition, in both namespaces: the kernel marks the root.
    auto host = topmost_at(vol);
    ASSERT_TRUE(host);
    ASSERT_EQ(host->root, "/sub//deleted") << host->raw;
    bool marked_in_container = false;
    for (const MountLine& m : ctr.mounts())
        if (m.mountpoint == "/data") marked_in_container = m.root == "/sub//deleted";
    ASSERT_TRUE(marked_in_container);

    engine->reconcile(Clock::now());
    fuse.supervisor_restart(2);
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.healed, 1);
    EXPECT_EQ(s.failures, 0);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, HealEvent::Kind::Healed);
    EXPECT_EQ(events.back().namespaces_healed, 1);
    EXPECT_EQ(read_file(vol + "/inner"), "inner 2\n");
    EXPECT_TRUE(container_reads(ctr, "inner 2\n", 1000ms));
}

TEST_P(EngineStep, ContainerCopiesAreCountedForTheirOwnPods) {
    // Two pods bind the same dataset; each has a container (rprivate, so
    // only a heal in its namespace reaches it) in a cgroup named as kubelet
    // names the pod's. The copies cannot be told apart by the mount table
    // (same superblock, same root): each must still be counted for its own
    // pod's target, not both for the first.
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string uid1 = "11111111-1111-4111-8111-111111111111";
    const std::string uid2 = "22222222-2222-4222-8222-222222222222";
    const std::string vol1 = sb.make_pod_volume(uid1, "pvc-1"), vol2 = sb.make_pod_volume(uid2, "pvc-1");
    csi_bind(fuse.source(), "", vol1, true);
    csi_bind(fuse.source(), "", vol2, true);
    PodCgroup pod1{uid1}, pod2{uid2};
    Container ctr1{sb}, ctr2{sb};  // destroyed before their cgroups
    ctr1.start(vol1, ContainerPropagation::Private, "generation");
    pod1.add(ctr1.pid());
    ctr2.start(vol2, ContainerPropagation::Private, "generation");
    pod2.add(ctr2.pid());

    engine->reconcile(Clock::now());
    fuse.kill9();
    engine->reconcile(Clock::now());
    fuse.supervisor_restart(2);
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.healed, 2);
    EXPECT_EQ(s.failures, 0);
    std::map<std::string, int> copies;
    for (const HealEvent& e : events)
        if (e.kind == HealEvent::Kind::Healed) copies[e.ctx.target] = e.namespaces_healed;
    EXPECT_EQ(copies, (std::map<std::string, int>{{vol1, 1}, {vol2, 1}}));
    EXPECT_TRUE(container_reads(ctr1, "2\n", 1000ms));
    EXPECT_TRUE(container_reads(ctr2, "2\n", 1000ms));
}

// Heals armed while the source is down prepare their container copies
// while the probe of the new source travels (Executor::Gate), and move none
// before it answers: a new source that does not answer gets no copy and no
// host mount, and the failure is told as for any probe; once it answers,
// the step after the back-off heals both.
TEST_P(EngineStep, NothingIsMovedOntoANewSourceThatDoesNotAnswerItsProbe) {
    const std::string let_go = sb.runtime() + "/root-getattr-may-go";
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    Container ctr{sb};
    // Generation 2 holds the probe's getattr of its root (and nothing
    // else).
    const std::string vol = outage_then_held_restart(fuse, ctr, "", "generation", "/", let_go);
    const auto stale_copy = ctr.mountinfo();
    const auto stale_host = topmost_at(vol);
    ASSERT_TRUE(stale_host);
    events.clear();
    auto refused = engine->reconcile(Clock::now());
    EXPECT_EQ(refused.healed, 0);
    EXPECT_EQ(refused.actions, 0) << "a mount action ran before the new source answered";
    EXPECT_EQ(ctr.mountinfo(), stale_copy);
    EXPECT_TRUE(container_broken(ctr));
    ASSERT_TRUE(topmost_at(vol));
    EXPECT_EQ(topmost_at(vol)->id, stale_host->id);
    bool told = false;
    std::string seen;
    for (const HealEvent& e : events) {
        seen += std::string(to_string(e.kind)) + " " + e.ctx.target + ": " + e.reason + "\n";
        if (e.kind == HealEvent::Kind::HealFailed && e.ctx.target == vol)
            told = e.reason.find("the new source does not serve " + fuse.source()) != std::string::npos;
    }
    // (Without armed heals the step's liveness check of every FUSE mount
    // may find the new source unresponsive first: then no heal is planned,
    // and nothing is told of the target, which stays broken.)
    if (armed()) {
        EXPECT_TRUE(told) << "no heal-failed event naming the unanswered probe; events:\n" << seen;
    }
    EXPECT_EQ(::access((let_go + ".held").c_str(), F_OK), 0) << "the probe never reached the new FUSE daemon";

    auto healed = let_go_and_step(let_go);
    EXPECT_EQ(healed.healed, 1);
    EXPECT_EQ(healed.failures, 0);
    EXPECT_TRUE(container_reads(ctr, "2\n", 1000ms));
    EXPECT_EQ(read_file(vol + "/generation"), "2\n");
    EXPECT_EQ(count_mounts_at("/data", ctr.mountinfo_path()), 1);
}

// Only copies of the new source's root are prepared before its probe
// answers: reaching a subdirectory takes a lookup, which a hung FUSE daemon
// would never answer, and a namespace worker blocked in it would stall the
// heal past any probe timeout. Here the new daemon holds the lookup of the
// subPath directory: the step ends within the probe timeout with nothing
// moved, and heals once the lookup is answered.
TEST_P(EngineStep, AHeldLookupOfASubPathDirectoryDoesNotStallTheStep) {
    const std::string let_go = sb.runtime() + "/sub-lookup-may-go";
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    Container ctr{sb};
    outage_then_held_restart(fuse, ctr, "sub", "inner", "/sub", let_go);
    const auto stale_copy = ctr.mountinfo();
    const auto started = Clock::now();
    auto refused = engine->reconcile(Clock::now());
    EXPECT_LT(Clock::now() - started, 5s) << "the step waited on the lookup the new FUSE daemon holds";
    EXPECT_EQ(refused.healed, 0);
    EXPECT_EQ(refused.actions, 0);
    EXPECT_EQ(ctr.mountinfo(), stale_copy);
    EXPECT_EQ(::access((let_go + ".held").c_str(), F_OK), 0) << "nothing looked the directory up";

    auto healed = let_go_and_step(let_go);
    EXPECT_EQ(healed.healed, 1);
    EXPECT_TRUE(container_reads(ctr, "inner 2\n", 1000ms));
    EXPECT_EQ(count_mounts_at("/data", ctr.mountinfo_path()), 1);
}

// The namespace cache: the first step walks /proc for the containers
// holding the targets' superblocks, so the step that sees a death arms from
// it and walks no more. A container started after that walk is not in it;
// the walk that must come before the host mount is healed finds it, so its
// copy is healed first and keeps its propagation (a slave copy healed after
// the host mount would have lost its dead master and turned private).
class NamespaceCacheStep : public EngineStep {
protected:
    // Starts the source, a pod volume and a container on it, and takes the
    // first two steps (the cache's walk, then nothing).
    void start_pod() {
        fuse.start(1);
        vol = sb.make_pod_volume("pod-1", "pvc-1");
        csi_bind(fuse.source(), "", vol, true);
        early.start(vol, ContainerPropagation::Slave, "generation");
        EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 1);  // the cache's first walk
        EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 0);  // still fresh
    }
    // The step that sees the death: armed from the cache, no walk, and it
    // asks for the next step at once.
    void die() {
        fuse.kill9();
        auto outage = engine->reconcile(Clock::now());
        EXPECT_EQ(outage.namespace_walks, 0) << "the step that saw the death walked /proc instead of using the cache";
        EXPECT_EQ(kinds(), std::vector<HealEvent::Kind>{HealEvent::Kind::Broken});
        auto retry = engine->next_retry();
        ASSERT_TRUE(retry.has_value()) << "no step asked for to walk /proc after the death";
        EXPECT_LE(*retry, Clock::now());
    }
    // Both containers read the new generation, each through a slave of the
    // new source's peer group.
    void expect_both_healed_as_slaves(int generation = 2) {
        const std::string content = std::to_string(generation) + "\n";
        EXPECT_EQ(read_file(vol + "/generation"), content);
        const int group = topmost_at(fuse.source())->shared_group();
        ASSERT_NE(group, 0) << "the source is not shared: the test cannot tell a slave copy";
        for (Container* c : {&early, &late}) {
            EXPECT_TRUE(container_reads(*c, content, 1000ms)) << (c == &early ? "early: " : "late: ") << c->last()->state;
            auto data = topmost_at("/data", c->mountinfo_path());
            ASSERT_TRUE(data);
            EXPECT_EQ(data->master_group(), group) << (c == &late ? "late: " : "early: ") << data->raw;
        }
        EXPECT_EQ(engine->reconcile(Clock::now()).actions, 0);
    }

    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    std::string vol;
    Container early{sb}, late{sb};
};

TEST_P(NamespaceCacheStep, SourceBackBeforeTheWalkHealsTheLateContainerBeforeTheHost) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");
    die();
    fuse.supervisor_restart(2);  // back before the step that would walk
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    EXPECT_EQ(heal.actions, 3);  // two container copies and the host target
    // The walk before the host mount, then the cache's refresh for the new
    // superblock.
    EXPECT_EQ(heal.namespace_walks, 2);
    expect_both_healed_as_slaves();
}

// The safety scan's walk at the end of the step that sees the death (the
// cache is older than its interval) counts as the walk after the death, so
// the host mount is healed at once when the source is back: the heals armed
// in that step must carry what the walk found, here a container started
// after the cache's walk. (Armed from the cache before that walk, they
// healed the host mount ahead of the late copy, which emptied the dead peer
// group and left the copy private, healed so after the next walk. Found by
// the crash-loop campaign, where the missed copies were ones healed after a
// step's walk.)
TEST_P(NamespaceCacheStep, TheSafetyWalkInTheStepOfTheDeathArmsTheLateContainerToo) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");  // not in the cache
    config.safety_scan_interval = std::chrono::milliseconds(50);
    engine->set_config(config, strategy);
    std::this_thread::sleep_for(60ms);  // the cache is older than the interval
    fuse.kill9();
    auto outage = engine->reconcile(Clock::now());
    EXPECT_EQ(outage.namespace_walks, 1);  // the safety scan's
    EXPECT_EQ(kinds(), std::vector<HealEvent::Kind>{HealEvent::Kind::Broken});
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    if (armed()) {
        EXPECT_EQ(heal.armed_actions, 3) << "the armed heals did not carry both copies and the host mount";
    }
    expect_both_healed_as_slaves();
}

// A container started during the outage after the walk that lets the host
// mount be healed: only the walk after the heal finds its slave copy. Its
// master, the dead peer group, must still exist then (the healer keeps a
// clone of the stale host mount, a member of the group, until that walk),
// so it is healed as the slave it is. (Without the clone the host heal
// emptied the group, and the kernel had turned the copy private before
// that walk saw it.)
TEST_P(NamespaceCacheStep, AContainerStartedAfterTheWalkIsHealedAsTheSlaveItIs) {
    start_pod();
    die();
    EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 1);  // what next_retry() asked for
    late.start(vol, ContainerPropagation::Slave, "generation");    // after that walk: nothing knows it
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    expect_both_healed_as_slaves();
}

TEST_P(NamespaceCacheStep, TheStepAfterTheDeathWalksAndArmsTheLateContainerToo) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");
    die();
    auto walk = engine->reconcile(Clock::now());  // what next_retry() asked for
    EXPECT_EQ(walk.namespace_walks, 1);
    EXPECT_EQ(walk.actions, 0);
    EXPECT_FALSE(engine->next_retry().has_value());
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    EXPECT_EQ(heal.actions, 3);
    EXPECT_EQ(heal.armed_actions, armed() ? 3 : 0);  // the late container was armed too
    expect_both_healed_as_slaves();
}

TEST_P(NamespaceCacheStep, ADeadLayerUncoveredInTheStepOfTheWalkIsLookedForInContainersToo) {
    // Strategy "stack", second crash: host and container each hold
    // [generation 1, generation 2], both dead. The source is back before the
    // walk after the death, so one step sheds the top layers (the
    // container's from the cache, then the walk, then the host's) and
    // uncovers generation 1's superblock, which that walk did not look for
    // and which no container is cached as holding any more. Found by
    // HealEdge.StackStrategyKeepsAtMostOneDeadLayerOverCrashCycles in CI:
    // the host was healed on top and the containers were left on the dead
    // layer, with no target on that superblock left to look for them.
    engine->set_config(config, Strategy::Stack);
    start_pod();
    fuse.kill9();
    engine->reconcile(Clock::now());
    engine->reconcile(Clock::now());  // the walk after the death
    fuse.supervisor_restart(2);
    ASSERT_EQ(engine->reconcile(Clock::now()).healed, 1);
    ASSERT_TRUE(container_reads(early, "2\n", 1000ms));
    auto data = topmost_at("/data", early.mountinfo_path());
    ASSERT_TRUE(data);
    EXPECT_EQ(data->master_group(), topmost_at(fuse.source())->shared_group()) << data->raw;
    EXPECT_EQ(engine->reconcile(Clock::now()).actions, 0);

    fuse.kill9();
    auto outage = engine->reconcile(Clock::now());
    EXPECT_EQ(outage.namespace_walks, 0);
    fuse.supervisor_restart(3);  // back before the step that would walk
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    EXPECT_EQ(read_file(vol + "/generation"), "3\n");
    EXPECT_TRUE(container_reads(early, "3\n", 1000ms)) << early.last()->state;
    // One dead layer under the live one, as on the host. (Not a slave any
    // more: the stacked layer's master group died with its source, so the
    // layer left under it is private; see docs/RELIABILITY.md.)
    const auto stack = stack_at("/data", early.mountinfo_path());
    ASSERT_EQ(stack.size(), 2u);
    EXPECT_EQ(stack.back().first, fuse.mount().device);
    EXPECT_EQ(engine->reconcile(Clock::now()).actions, 0);
}

TEST_P(NamespaceCacheStep, IsWalkedAgainOnlyAfterTheSafetyScanInterval) {
    // 1 s: the two steps right after the walk take milliseconds, even
    // under a sanitizer, so they come well within it.
    config.safety_scan_interval = std::chrono::seconds(1);
    engine->set_config(config, strategy);
    start_pod();
    std::this_thread::sleep_for(1100ms);
    EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 1);
    // Safety scans off: the cache is walked again only for a new superblock.
    config.safety_scan_interval = std::chrono::seconds(0);
    engine->set_config(config, strategy);
    std::this_thread::sleep_for(1100ms);
    EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 0);
}

// Heals planned ahead of a death (EngineSettings::plan_ahead, [heal]
// restart_grace): while everything is healthy the engine plans the heals of
// each source's copies in containers; when fusectl says the source's
// connection died, the next step arms them and, for the grace, only waits
// for the source, so that a supervisor's restart is served at its mount event instead of after a full
// step (scale_bench: first copy p50 12-15 ms -> ~1.4 ms after the mount).
class PlannedAheadStep : public NamespaceCacheStep {
protected:
    std::chrono::milliseconds restart_grace() const override { return std::chrono::milliseconds(60000); }
    // The step that sees the death: it arms the planned heals, reports
    // nothing yet, walks nothing, and asks for a step at the end of the grace.
    void die_and_wait(std::size_t planned_copies) {
        const auto planned = engine->planned_ahead();
        ASSERT_EQ(planned.size(), 1u) << "nothing planned ahead for the one source";
        EXPECT_EQ(planned.begin()->second, planned_copies);
        fuse.kill9();
        const auto before = Clock::now();
        auto wait = engine->reconcile(Clock::now());
        EXPECT_EQ(wait.actions, 0);
        EXPECT_EQ(wait.namespace_walks, 0);
        EXPECT_TRUE(events.empty()) << "the waiting step reported the death";
        auto retry = engine->next_retry();
        ASSERT_TRUE(retry.has_value()) << "no step asked for at the end of the wait";
        EXPECT_GT(*retry, before);
        EXPECT_LE(*retry, Clock::now() + restart_grace());
        EXPECT_TRUE(engine->planned_ahead().empty()) << "the planned heals were not taken for the death";
    }
};

TEST_P(PlannedAheadStep, ASourceBackWithinTheGraceIsHealedFromThePlannedHeals) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");  // not in the cache: the walk finds it
    die_and_wait(1);
    EXPECT_TRUE(container_broken(early));  // the planned heal has not run: nothing is back yet
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.armed_actions, 1) << "the early container's copy was not healed from the planned heal";
    EXPECT_EQ(heal.actions, 3);  // and the late container's copy, then the host target, after the walk
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    // The full step after the planned heal reported the outage, then the
    // heal, counting both containers' copies.
    EXPECT_EQ(kinds(), (std::vector<HealEvent::Kind>{HealEvent::Kind::Broken, HealEvent::Kind::Healed}));
    if (!events.empty()) {
        EXPECT_EQ(events.back().namespaces_healed, 2);
    }
    expect_both_healed_as_slaves();
    // Planned again, for the new superblock, with both containers' copies.
    const auto planned = engine->planned_ahead();
    ASSERT_EQ(planned.size(), 1u);
    struct stat st {};
    ASSERT_EQ(stat(vol.c_str(), &st), 0);
    EXPECT_EQ(planned.begin()->first, st.st_dev);
    EXPECT_EQ(planned.begin()->second, 2u);
}

// Planned again only when what the plan depends on changed: not at every
// step, nor at a walk that finds the same containers; at a walk that finds
// one more.
TEST_P(PlannedAheadStep, IsPlannedAgainOnlyWhenItsTargetsOrContainersChange) {
    start_pod();
    EXPECT_EQ(engine->planned_ahead().begin()->second, 1u);
    EXPECT_EQ(engine->reconcile(Clock::now()).planned_ahead, 0);
    // Each step below walks /proc: the safety scan's interval has passed.
    config.safety_scan_interval = std::chrono::milliseconds(50);
    engine->set_config(config, strategy);  // drops what was planned: the rules may have changed
    auto walk_after_interval = [&] {
        std::this_thread::sleep_for(60ms);
        return engine->reconcile(Clock::now());
    };
    auto walk = walk_after_interval();
    EXPECT_EQ(walk.namespace_walks, 1);
    EXPECT_EQ(walk.planned_ahead, 1);
    auto same = walk_after_interval();
    EXPECT_EQ(same.namespace_walks, 1);
    EXPECT_EQ(same.planned_ahead, 0) << "the same containers were planned for again";
    late.start(vol, ContainerPropagation::Slave, "generation");
    auto more = walk_after_interval();
    EXPECT_EQ(more.namespace_walks, 1);
    EXPECT_EQ(more.planned_ahead, 1);
    EXPECT_EQ(engine->planned_ahead().begin()->second, 2u);
}

// A crash loop: the copy in a container the cache knows is healed from the
// armed heals onto generation 2, which dies before the step's walk lets the
// host mount be healed; the host mount is then healed onto generation 3. No
// host mount holds generation 2, so only that heal can hand the copy on to
// be healed again, as the slave it was made. Found by the fault campaign's
// 0.1 s crash loop: the copies stayed on the dead superblock, turned private
// (their master died with generation 2's source), and no step looked again.
class CrashLoopStep : public NamespaceCacheStep {
protected:
    bool hooks_table_reads() const override { return true; }
    // Takes the step that heals: generation 2 dies and 3 is mounted when
    // the step reads the table, after the early copy's armed heal.
    ReconcileSummary heal_while_the_source_dies_again() {
        fuse.supervisor_restart(2);
        before_table_read = [&] {
            EXPECT_TRUE(container_reads(early, "2\n", 1000ms)) << "the armed heal did not run first";
            second = fuse.mount().device;
            fuse.supervisor_restart(3);
        };
        auto heal = engine->reconcile(Clock::now());
        EXPECT_FALSE(second.empty()) << "the step did not read the host's table";
        EXPECT_EQ(heal.healed, 1);
        EXPECT_EQ(heal.failures, 0);
        // The early copy twice (onto 2, then 3), the late copy and the host mount.
        EXPECT_EQ(heal.actions, 4);
        expect_both_healed_as_slaves(3);
        return heal;
    }
    std::string second;  // generation 2's superblock, "major:minor"
};

TEST_P(CrashLoopStep, CopiesHealedOntoASourceThatDiesBeforeTheHostMountAreHealedAgain) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");  // not in the cache: the walk finds it
    die();
    EXPECT_EQ(heal_while_the_source_dies_again().armed_actions, 1);  // the early copy; the host waits for the walk
}

// As above, and generation 3 dies too, right after the host mount was
// healed onto it: the copy left on generation 2 cannot be healed in that
// step, and is healed from generation 4, steps later, as the slave it was
// made (found by the campaign: the copies were forgotten after one try).
TEST_P(CrashLoopStep, CopiesStrandedWhileTheSourceIsDeadAgainAreHealedFromTheNextOne) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");
    die();
    fuse.supervisor_restart(2);
    before_table_read = [&] {
        second = fuse.mount().device;
        fuse.supervisor_restart(3);
        before_table_read = [&] { fuse.kill9(); };  // at the read after the host mount's heal
    };
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_FALSE(container_reads(early, "2\n", 100ms)) << "generation 2 is dead: the test did not kill it";
    while (engine->next_retry() && *engine->next_retry() <= Clock::now()) engine->reconcile(Clock::now());
    fuse.supervisor_restart(4);
    auto again = engine->reconcile(Clock::now());
    EXPECT_EQ(again.failures, 0);
    EXPECT_EQ(again.healed, 1);
    expect_both_healed_as_slaves(4);
}

// The same with heals planned ahead of the death ([heal] restart_grace),
// where the campaign found it: their copies go before any step has walked.
class PlannedAheadCrashLoopStep : public CrashLoopStep {
protected:
    std::chrono::milliseconds restart_grace() const override { return std::chrono::milliseconds(60000); }
};

TEST_P(PlannedAheadCrashLoopStep, CopiesHealedOntoASourceThatDiesBeforeTheHostMountAreHealedAgain) {
    start_pod();
    late.start(vol, ContainerPropagation::Slave, "generation");
    ASSERT_EQ(engine->planned_ahead().size(), 1u);
    fuse.kill9();
    EXPECT_EQ(engine->reconcile(Clock::now()).actions, 0);  // arms the planned heals and waits
    EXPECT_EQ(heal_while_the_source_dies_again().armed_actions, 1);
}

// A container that exits after its copy's heal was planned: the planned
// action finds its process gone, which is the table moving (nothing to
// heal there), not a failed heal that would hold the target back.
TEST_P(PlannedAheadStep, AContainerGoneSinceThePlanFailsNoHeal) {
    fuse.start(1);
    vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    early.start(vol, ContainerPropagation::Slave, "generation");
    late.start(vol, ContainerPropagation::Slave, "generation");
    EXPECT_EQ(engine->reconcile(Clock::now()).namespace_walks, 1);
    late.stop();
    die_and_wait(2);
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.failures, 0);
    EXPECT_EQ(heal.healed, 1);
    for (const HealEvent& e : events) EXPECT_NE(e.kind, HealEvent::Kind::HealFailed) << e.reason;
    EXPECT_TRUE(container_reads(early, "2\n", 1000ms));
    EXPECT_EQ(read_file(vol + "/generation"), "2\n");
}

// No source within the grace: the step after it plans in full, as without
// planned heals (the death reported, heals armed from a fresh plan).
class PlannedAheadShortGraceStep : public PlannedAheadStep {
protected:
    std::chrono::milliseconds restart_grace() const override { return std::chrono::milliseconds(100); }
};

TEST_P(PlannedAheadShortGraceStep, NoSourceWithinTheGraceThenAFullStep) {
    start_pod();
    die_and_wait(1);
    std::this_thread::sleep_until(*engine->next_retry());
    auto outage = engine->reconcile(Clock::now());
    EXPECT_EQ(outage.actions, 0);
    EXPECT_EQ(kinds(), std::vector<HealEvent::Kind>{HealEvent::Kind::Broken});
    while (engine->next_retry() && *engine->next_retry() <= Clock::now()) engine->reconcile(Clock::now());  // the walk
    fuse.supervisor_restart(2);
    auto heal = engine->reconcile(Clock::now());
    EXPECT_EQ(heal.healed, 1);
    EXPECT_EQ(heal.failures, 0);
    EXPECT_EQ(heal.armed_actions, 2);  // the container copy and the host target, armed by the full plan
    EXPECT_TRUE(container_reads(early, "2\n", 1000ms));
}

TEST_P(EngineStep, LearnsThenReportsThenHealsOneStepAtATime) {
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
    EXPECT_EQ(engine->target_states(), std::vector<TargetState>{TargetState::Healthy});

    // Step 2, the FUSE daemon died: reported broken, nothing mounted.
    fuse.kill9();
    const int mounts = count_mounts_under(sb.root());
    auto s2 = engine->reconcile(Clock::now());
    EXPECT_EQ(s2.actions, 0);
    EXPECT_EQ(kinds(), std::vector<HealEvent::Kind>{HealEvent::Kind::Broken});
    EXPECT_EQ(engine->status()[0].state, TargetState::Broken);
    EXPECT_EQ(engine->target_states(), std::vector<TargetState>{TargetState::Broken});
    EXPECT_NE(engine->status()[0].reason.find("still holds the dead filesystem"), std::string::npos)
        << engine->status()[0].reason;
    EXPECT_EQ(count_mounts_under(sb.root()), mounts);
    // Step 2b, asked for at once (next_retry), as the daemon's loop does: the
    // walk of /proc after the death, before any host mount may be healed.
    ASSERT_TRUE(engine->next_retry().has_value());
    auto s2b = engine->reconcile(Clock::now());
    EXPECT_EQ(s2b.namespace_walks, 1);
    EXPECT_EQ(s2b.actions, 0);
    EXPECT_FALSE(engine->next_retry().has_value());

    // Step 3, the source is back: the container copy, then the host mount.
    fuse.supervisor_restart(2);
    auto s3 = engine->reconcile(Clock::now());
    EXPECT_EQ(s3.actions, 2);
    // Armed: both actions ran before the table was read.
    EXPECT_EQ(s3.armed_actions, armed() ? 2 : 0);
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
    EXPECT_EQ(engine->status()[0].reason, "");

    // Step 4: idempotent.
    auto s4 = engine->reconcile(Clock::now());
    EXPECT_EQ(s4.actions, 0);
    EXPECT_EQ(events.size(), 2u);
}

// A source that comes back without the target's subdirectory is not healed;
// the failure backs off instead of spinning.
TEST_P(EngineStep, SourceWithoutTheSubdirectoryIsNotHealedAndBacksOff) {
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

// A heal that failed backs off; when its source is gone again before the
// retry, the step after the retry time finds nothing to retry, and no more
// retries are asked for. (The fault campaign's crash loops found the daemon
// reconciling every millisecond, for ever, after a FUSE daemon died in the
// middle of the heals from it and stayed dead: next_retry() kept returning
// the passed retry time of the failed heal.)
TEST_P(EngineStep, FailedHealWhoseSourceIsGoneAsksForNoMoreRetries) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.set_extra_args({"--tree", "only-in-gen1/x=1"});
    fuse.start(1);
    const std::string sub = sb.pod_subpath_path("pod-1", "pvc-1", "app", 0);
    csi_bind(fuse.source(), "only-in-gen1", sub, true);
    engine->reconcile(Clock::now());
    fuse.kill9();
    fuse.set_extra_args({});
    fuse.supervisor_restart(2);
    engine->reconcile(Clock::now());
    ASSERT_FALSE(events.empty());
    ASSERT_EQ(events.back().kind, HealEvent::Kind::HealFailed);
    auto retry = engine->next_retry();
    ASSERT_TRUE(retry.has_value());
    // The source dies again and its supervisor unmounts it: no heal can be
    // planned until it is back, whatever the backoff says.
    fuse.kill9();
    ASSERT_EQ(lazy_umount(fuse.source()), 0);
    std::this_thread::sleep_until(*retry + 1ms);
    const std::size_t n = events.size();
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.actions, 0);
    EXPECT_EQ(events.size(), n);
    EXPECT_EQ(engine->next_retry(), std::nullopt) << "a retry asked for with nothing to retry: the daemon's retry "
                                                     "timer would fire at once, for ever";
    // Back, with the directory: the next event's step heals it.
    fuse.set_extra_args({"--tree", "only-in-gen1/x=3"});
    fuse.start(3);
    auto healed = engine->reconcile(Clock::now());
    EXPECT_EQ(healed.healed, 1);
    EXPECT_EQ(read_file(sub + "/x"), "3");
}

// Armed heals are re-checked like any other: a pod deleted during the outage
// (its volume unmounted after the heals were armed) does not get its mount
// back, and the other pod is healed in the same step.
TEST_P(EngineStep, PodDeletedAfterArmingIsNotMountedAgain) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string gone = sb.make_pod_volume("pod-gone", "pvc-1");
    const std::string kept = sb.make_pod_volume("pod-kept", "pvc-1");
    csi_bind(fuse.source(), "", gone, true);
    csi_bind(fuse.source(), "", kept, true);
    engine->reconcile(Clock::now());
    fuse.kill9();
    engine->reconcile(Clock::now());  // broken; heals armed (when armed())
    ASSERT_EQ(::umount2(gone.c_str(), MNT_DETACH), 0) << errno_name(errno);
    fuse.supervisor_restart(2);
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.healed, 1);
    EXPECT_EQ(s.failures, 0);
    EXPECT_EQ(read_file(kept + "/generation"), "2\n");
    EXPECT_EQ(count_mounts_at(gone), 0);
    EXPECT_EQ(engine->status().size(), 1u);
}

// A source back with another filesystem type is not taken: the armed heals
// do not fire, and the full plan says why.
TEST_P(EngineStep, SourceBackAsAnotherFstypeIsNotHealed) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    engine->reconcile(Clock::now());
    fuse.kill9();
    engine->reconcile(Clock::now());
    ASSERT_EQ(::umount2(fuse.source().c_str(), MNT_DETACH), 0) << errno_name(errno);
    FuseDaemon other{sb, fuse.source(), FuseKind::BindFs};  // fstype "fuse", not "fuse.fh_testfs"
    other.start(2);
    auto s = engine->reconcile(Clock::now());
    EXPECT_EQ(s.actions, 0);
    EXPECT_EQ(s.armed_actions, 0);
    ASSERT_EQ(engine->status().size(), 1u);
    EXPECT_EQ(engine->status()[0].state, TargetState::Broken);
    EXPECT_EQ(read_errno(vol), ENOTCONN);
}

// Returns the name of a StepVariant, e.g. "ArmedHealsTracked".
std::string step_variant_name(const ::testing::TestParamInfo<StepVariant>& i) {
    return std::string(i.param.armed ? "ArmedHeals" : "FullRead") + (i.param.tracked ? "Tracked" : "Mountinfo");
}

INSTANTIATE_TEST_SUITE_P(SourceCheck, EngineStep,
                         ::testing::Values(StepVariant{false, false}, StepVariant{true, false},
                                           StepVariant{false, true}, StepVariant{true, true}),
                         step_variant_name);
INSTANTIATE_TEST_SUITE_P(SourceCheck, NamespaceCacheStep,
                         ::testing::Values(StepVariant{false, false}, StepVariant{true, false},
                                           StepVariant{false, true}, StepVariant{true, true}),
                         step_variant_name);
// Heals are planned ahead only with the source check (statmount).
INSTANTIATE_TEST_SUITE_P(SourceCheck, PlannedAheadStep, ::testing::Values(StepVariant{true, false}, StepVariant{true, true}),
                         step_variant_name);
INSTANTIATE_TEST_SUITE_P(SourceCheck, PlannedAheadShortGraceStep,
                         ::testing::Values(StepVariant{true, false}, StepVariant{true, true}), step_variant_name);
// Armed heals, planned ahead or not, need the source check.
INSTANTIATE_TEST_SUITE_P(SourceCheck, CrashLoopStep, ::testing::Values(StepVariant{true, false}, StepVariant{true, true}),
                         step_variant_name);
INSTANTIATE_TEST_SUITE_P(SourceCheck, PlannedAheadCrashLoopStep,
                         ::testing::Values(StepVariant{true, false}, StepVariant{true, true}), step_variant_name);

// Binds `fuse` (generation 1) read-only at `vol`, kills it and restarts it
// as generation 2 the way a supervisor does, and fills `a` with the heal
// the planner would make: replace the stale mount at `vol` with a clone of
// the new source. (ASSERTs: call it through ASSERT_NO_FATAL_FAILURE.)
void plan_replace_after_restart(FuseDaemon& fuse, const std::string& vol, HealAction& a) {
    fuse.start(1);
    csi_bind(fuse.source(), "", vol, true);
    fuse.kill9();
    fuse.supervisor_restart(2);
    auto table = read_mountinfo(kSelfMountinfo);
    ASSERT_TRUE(table) << table.error().message();
    const MountEntry* stale = table->topmost_at(vol);
    const MountEntry* source = table->topmost_at(fuse.source());
    ASSERT_TRUE(stale && source);
    a.kind = ActionKind::Replace;
    a.target = a.mountpoint = vol;
    a.expected_mount_id = stale->mount_id;
    a.expected_device = stale->device;
    a.clone_path = fuse.source();
    a.flags.read_only = true;
    a.source_device = source->device;
}

// The executor attaches a clone only when it comes from the superblock the
// heal was planned with: a source that died and was lazily unmounted between
// planning and acting leaves the empty directory under it at the path.
TEST_F(IntegrationTest, ExecutorRefusesACloneOfAnotherFilesystem) {
    Sandbox sb;
    const KernelFeatures features = detect_kernel_features({}, "/sys/fs/fuse/connections", false);
    if (!features.move_mount_beneath) GTEST_SKIP() << "needs MOVE_MOUNT_BENEATH";
    Executor executor(features, sb.kubelet());
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    HealAction a;
    ASSERT_NO_FATAL_FAILURE(plan_replace_after_restart(fuse, vol, a));

    // The source died again and was unmounted: the path is an empty directory.
    fuse.kill9();
    ASSERT_EQ(::umount2(fuse.source().c_str(), MNT_DETACH), 0) << errno_name(errno);
    const int mounts = count_mounts_under(sb.root());
    Status refused = executor.execute(a);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().err, ESTALE) << refused.error().message();
    EXPECT_NE(refused.error().message().find("no longer the live filesystem"), std::string::npos)
        << refused.error().message();
    EXPECT_EQ(count_mounts_under(sb.root()), mounts);
    EXPECT_EQ(read_errno(vol), ENOTCONN);

    // Back again: a new superblock, so the old plan is still refused; a plan
    // made with the new one heals.
    fuse.start(3);
    auto table = read_mountinfo(kSelfMountinfo);
    ASSERT_TRUE(table);
    const MountEntry* now = table->topmost_at(fuse.source());
    ASSERT_TRUE(now);
    if (now->device != a.source_device) {
        EXPECT_FALSE(executor.execute(a));
    }
    a.source_device = now->device;
    Status healed = executor.execute(a);
    ASSERT_TRUE(healed) << healed.error().message();
    EXPECT_EQ(read_file(vol + "/generation"), "3\n");
}

// The executor acts only on the mount it was planned for: something mounted
// on the target after the plan is left alone (ESTALE), and the plan made
// again heals. The mount id at the target is read with statx (Linux 5.8+)
// or, with statx_mnt_id disabled, from the fd's fdinfo: both must see it.
TEST_F(IntegrationTest, ExecutorRefusesATargetWhoseTopmostMountChanged) {
    for (const std::set<std::string>& disabled : {std::set<std::string>{}, std::set<std::string>{"statx_mnt_id"}}) {
        SCOPED_TRACE(disabled.empty() ? "statx" : "fdinfo");
        Sandbox sb;
        const KernelFeatures features = detect_kernel_features(disabled, "/sys/fs/fuse/connections", false);
        if (!features.move_mount_beneath) GTEST_SKIP() << "needs MOVE_MOUNT_BENEATH";
        EXPECT_EQ(features.statx_mnt_id, disabled.empty());
        Executor executor(features, sb.kubelet());
        FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
        const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
        HealAction a;
        ASSERT_NO_FATAL_FAILURE(plan_replace_after_restart(fuse, vol, a));

        // Someone mounted on the target since the plan.
        ASSERT_EQ(::mount("tmpfs", vol.c_str(), "tmpfs", 0, nullptr), 0) << errno_name(errno);
        const int mounts = count_mounts_under(sb.root());
        Status refused = executor.execute(a);
        ASSERT_FALSE(refused);
        EXPECT_EQ(refused.error().err, ESTALE) << refused.error().message();
        EXPECT_NE(refused.error().message().find("is no longer the topmost mount there"), std::string::npos)
            << refused.error().message();
        EXPECT_EQ(count_mounts_under(sb.root()), mounts);

        // Gone again: the plan's mount is on top, and the heal goes ahead.
        ASSERT_EQ(::umount2(vol.c_str(), MNT_DETACH), 0) << errno_name(errno);
        Status healed = executor.execute(a);
        ASSERT_TRUE(healed) << healed.error().message();
        EXPECT_EQ(read_file(vol + "/generation"), "2\n");
    }
}

// The heal of one copy in a container, planned from the container's table:
// replace the mount at /data (expected on `expected_device`) with a clone of
// `fuse`'s source as it is now. (ASSERTs: call through ASSERT_NO_FATAL_FAILURE.)
void plan_copy_heal(Container& c, const std::string& vol, FuseDaemon& fuse, dev_t expected_device, HealAction& a) {
    auto table = read_mountinfo(c.mountinfo_path());
    ASSERT_TRUE(table) << table.error().message();
    const MountEntry* copy = table->topmost_at("/data");
    ASSERT_TRUE(copy);
    auto host = read_mountinfo(kSelfMountinfo);
    ASSERT_TRUE(host) << host.error().message();
    const MountEntry* source = host->topmost_at(fuse.source());
    ASSERT_TRUE(source);
    struct stat ns {};
    ASSERT_EQ(::stat(("/proc/" + std::to_string(c.pid()) + "/ns/mnt").c_str(), &ns), 0) << errno_name(errno);
    a = HealAction{};
    a.kind = ActionKind::Replace;
    a.target = vol;
    a.ns_pid = c.pid();
    a.ns_inode = ns.st_ino;
    a.mountpoint = "/data";
    a.expected_mount_id = copy->mount_id;
    a.expected_device = expected_device;
    a.clone_path = fuse.source();
    a.source_device = source->device;
    a.flags.read_only = true;
    a.propagation = PropagationMode::Private;
}

// Binds the root of `fuse` (generation 1) read-only into pods pod-a and
// pod-b, at `vol_a` and `vol_b`, and starts a private container on each,
// reading it. (ASSERTs: call through ASSERT_NO_FATAL_FAILURE.)
void two_pods_with_containers(Sandbox& sb, FuseDaemon& fuse, std::string& vol_a, std::string& vol_b, Container& ca,
                              Container& cb) {
    vol_a = sb.make_pod_volume("pod-a", "pvc-1");
    vol_b = sb.make_pod_volume("pod-b", "pvc-1");
    csi_bind(fuse.source(), "", vol_a, true);
    csi_bind(fuse.source(), "", vol_b, true);
    ca.start(vol_a, ContainerPropagation::Private, "generation");
    cb.start(vol_b, ContainerPropagation::Private, "generation");
    ASSERT_TRUE(container_reads(ca, gen(1)));
    ASSERT_TRUE(container_reads(cb, gen(1)));
}

// Returns the device number of the topmost mount at `path` in the test's
// namespace (0 when nothing is mounted there).
dev_t device_at(const std::string& path) {
    auto host = read_mountinfo(kSelfMountinfo);
    EXPECT_TRUE(host) << host.error().message();
    const MountEntry* m = host ? host->topmost_at(path) : nullptr;
    return m ? m->device : 0;
}

// In containers, fusectl is read once per dead superblock per batch (the
// executor pins the superblock meanwhile), so each copy's own check must
// hold alone: the mount at its target must be the planned one, on the
// planned dead superblock. A plan made while the connection was alive is
// refused; in one batch, a copy planned on another dead superblock is
// refused and the other copy healed. Both ways of reading the mount id.
TEST_F(IntegrationTest, ExecutorInContainersChecksEachCopysMountAndSuperblock) {
    for (const std::set<std::string>& disabled : {std::set<std::string>{}, std::set<std::string>{"statx_mnt_id"}}) {
        SCOPED_TRACE(disabled.empty() ? "statx" : "fdinfo");
        Sandbox sb;
        const KernelFeatures features = detect_kernel_features(disabled, "/sys/fs/fuse/connections", false);
        if (!features.move_mount_beneath || !features.fusectl) GTEST_SKIP() << "needs MOVE_MOUNT_BENEATH and fusectl";
        Executor executor(features, sb.kubelet());
        FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"}, other{sb, sb.runtime() + "/ds/other"};
        fuse.start(1);
        other.start(1);
        std::string vol_a, vol_b;
        Container ca(sb), cb(sb);
        ASSERT_NO_FATAL_FAILURE(two_pods_with_containers(sb, fuse, vol_a, vol_b, ca, cb));
        const dev_t fuse_dev = device_at(fuse.source()), other_dev = device_at(other.source());
        ASSERT_NE(fuse_dev, 0u);
        ASSERT_NE(other_dev, 0u);

        // Planned while the connection is alive: refused, nothing touched.
        HealAction a, b;
        ASSERT_NO_FATAL_FAILURE(plan_copy_heal(ca, vol_a, fuse, fuse_dev, a));
        ASSERT_NO_FATAL_FAILURE(plan_copy_heal(cb, vol_b, fuse, fuse_dev, b));
        const auto before_a = ca.mountinfo(), before_b = cb.mountinfo();
        auto alive = executor.execute_in_namespaces({&a, &b});
        ASSERT_EQ(alive.size(), 2u);
        for (const auto& o : alive) {
            ASSERT_FALSE(o.status);
            EXPECT_EQ(o.status.error().err, ESTALE) << o.status.error().message();
            EXPECT_NE(o.status.error().message().find("no longer the dead one"), std::string::npos)
                << o.status.error().message();
        }
        EXPECT_EQ(ca.mountinfo(), before_a);
        EXPECT_EQ(cb.mountinfo(), before_b);

        // Both dead; b's plan names the other dead superblock (its mount id
        // is right): b is refused, a in the same batch is healed.
        fuse.kill9();
        other.kill9();
        fuse.supervisor_restart(2);
        ASSERT_NO_FATAL_FAILURE(plan_copy_heal(ca, vol_a, fuse, fuse_dev, a));
        ASSERT_NO_FATAL_FAILURE(plan_copy_heal(cb, vol_b, fuse, other_dev, b));
        const auto stale_b = cb.mountinfo();
        auto mixed = executor.execute_in_namespaces({&a, &b});
        ASSERT_EQ(mixed.size(), 2u);
        EXPECT_TRUE(mixed[0].status) << mixed[0].status.error().message();
        ASSERT_FALSE(mixed[1].status);
        EXPECT_EQ(mixed[1].status.error().err, ESTALE) << mixed[1].status.error().message();
        EXPECT_NE(mixed[1].status.error().message().find("no longer on the dead filesystem"), std::string::npos)
            << mixed[1].status.error().message();
        EXPECT_TRUE(container_reads(ca, gen(2)));
        EXPECT_EQ(cb.mountinfo(), stale_b);
        EXPECT_TRUE(container_broken(cb));

        // Planned right, b is healed too, one mount at /data.
        ASSERT_NO_FATAL_FAILURE(plan_copy_heal(cb, vol_b, fuse, fuse_dev, b));
        auto right = executor.execute_in_namespaces({&b});
        ASSERT_EQ(right.size(), 1u);
        EXPECT_TRUE(right[0].status) << right[0].status.error().message();
        EXPECT_TRUE(container_reads(cb, gen(2)));
        EXPECT_EQ(count_mounts_at("/data", cb.mountinfo_path()), 1);
        EXPECT_EQ(count_mounts_at("/data", ca.mountinfo_path()), 1);
    }
}

// The gate of execute_in_namespaces: each copy asks it once, from inside
// its container's namespace, after its checks and before any change. A
// refusal leaves every copy as it was and is the copy's status; a gate that
// lets them go heals them.
TEST_F(IntegrationTest, ExecutorInContainersAsksTheGateBeforeItsFirstChange) {
    Sandbox sb;
    const KernelFeatures features = detect_kernel_features({}, "/sys/fs/fuse/connections", false);
    if (!features.move_mount_beneath) GTEST_SKIP() << "needs MOVE_MOUNT_BENEATH";
    Executor executor(features, sb.kubelet());
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    std::string vol_a, vol_b;
    Container ca(sb), cb(sb);
    ASSERT_NO_FATAL_FAILURE(two_pods_with_containers(sb, fuse, vol_a, vol_b, ca, cb));
    const dev_t dead_dev = device_at(fuse.source());
    ASSERT_NE(dead_dev, 0u);
    fuse.kill9();
    fuse.supervisor_restart(2);
    HealAction a, b;
    ASSERT_NO_FATAL_FAILURE(plan_copy_heal(ca, vol_a, fuse, dead_dev, a));
    ASSERT_NO_FATAL_FAILURE(plan_copy_heal(cb, vol_b, fuse, dead_dev, b));

    // Which namespace each call came from (its inode), per action: through
    // the host's /proc, which a container need not have.
    std::mutex mu;
    std::map<const HealAction*, std::vector<ino_t>> asked_in;
    const int proc = ::open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(proc, 0) << errno_name(errno);
    auto note = [&](const HealAction& x) {
        struct stat ns {};
        EXPECT_EQ(::fstatat(proc, "thread-self/ns/mnt", &ns, 0), 0) << errno_name(errno);
        std::lock_guard<std::mutex> l(mu);
        asked_in[&x].push_back(ns.st_ino);
    };
    const auto stale_a = ca.mountinfo(), stale_b = cb.mountinfo();
    auto refused = executor.execute_in_namespaces({&a, &b}, [&](const HealAction& x) -> Status {
        note(x);
        return Error{"probe", x.clone_path, ETIMEDOUT, "the FUSE daemon did not answer"};
    });
    ASSERT_EQ(refused.size(), 2u);
    for (const auto& o : refused) {
        EXPECT_TRUE(o.refused_at_gate);
        ASSERT_FALSE(o.status);
        EXPECT_EQ(o.status.error().err, ETIMEDOUT) << o.status.error().message();
    }
    EXPECT_EQ(asked_in[&a], std::vector<ino_t>{a.ns_inode});
    EXPECT_EQ(asked_in[&b], std::vector<ino_t>{b.ns_inode});
    EXPECT_EQ(ca.mountinfo(), stale_a);
    EXPECT_EQ(cb.mountinfo(), stale_b);
    EXPECT_TRUE(container_broken(ca));
    EXPECT_TRUE(container_broken(cb));

    asked_in.clear();
    auto healed = executor.execute_in_namespaces({&a, &b}, [&](const HealAction& x) -> Status {
        note(x);
        return {};
    });
    ASSERT_EQ(healed.size(), 2u);
    for (const auto& o : healed) {
        EXPECT_FALSE(o.refused_at_gate);
        EXPECT_TRUE(o.status) << o.status.error().message();
    }
    EXPECT_EQ(asked_in[&a], std::vector<ino_t>{a.ns_inode});
    EXPECT_EQ(asked_in[&b], std::vector<ino_t>{b.ns_inode});
    EXPECT_TRUE(container_reads(ca, gen(2)));
    EXPECT_TRUE(container_reads(cb, gen(2)));
    EXPECT_EQ(count_mounts_at("/data", ca.mountinfo_path()), 1);
    EXPECT_EQ(count_mounts_at("/data", cb.mountinfo_path()), 1);
    ::close(proc);
}

// A pinned dead superblock keeps its device number after its last mount
// is detached, so copies of it looked for by number cannot be confused
// with a new filesystem that got the number (anonymous device numbers are
// handed out lowest-free-first and reused at once).
TEST_F(IntegrationTest, PinnedDeadSuperblockKeepsItsDeviceNumber) {
    Sandbox sb;
    const KernelFeatures features = detect_kernel_features({}, "/sys/fs/fuse/connections", false);
    Executor executor(features, sb.kubelet());
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    fuse.kill9();
    auto table = read_mountinfo(kSelfMountinfo);
    ASSERT_TRUE(table) << table.error().message();
    const MountEntry* stale = table->topmost_at(vol);
    ASSERT_TRUE(stale);
    const dev_t dead = stale->device;
    HealAction a;
    a.target = a.mountpoint = vol;
    a.expected_device = dead;

    // Refused: a device that is not the one at the path, a path outside
    // the kubelet root.
    HealAction other = a;
    other.expected_device = dead + 1;
    auto wrong = executor.pin_superblock(other);
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error().err, ESTALE);
    HealAction outside = a;
    outside.mountpoint = fuse.source();
    auto refused = executor.pin_superblock(outside);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().err, EPERM);

    auto pin = executor.pin_superblock(a);
    ASSERT_TRUE(pin) << pin.error().message();
    // Every mount of the dead superblock goes (the heal detaches the stale
    // top; the supervisor lazily unmounts the source).
    ASSERT_EQ(::umount2(vol.c_str(), MNT_DETACH), 0) << errno_name(errno);
    ASSERT_EQ(::umount2(fuse.source().c_str(), MNT_DETACH), 0) << errno_name(errno);
    auto held = sys::fd_device(pin->get(), vol);
    ASSERT_TRUE(held) << held.error().message();
    EXPECT_EQ(*held, dead);
    // New filesystems get other numbers while the pin is held.
    for (int generation = 2; generation <= 4; ++generation) {
        fuse.start(generation);
        table = read_mountinfo(kSelfMountinfo);
        ASSERT_TRUE(table);
        const MountEntry* fresh = table->topmost_at(fuse.source());
        ASSERT_TRUE(fresh);
        EXPECT_NE(fresh->device, dead) << "generation " << generation;
        fuse.kill9();
        ASSERT_EQ(::umount2(fuse.source().c_str(), MNT_DETACH), 0) << errno_name(errno);
    }
}

// mount_at_path (and its statx step, identify_mount_at_path) answers what mountinfo says, for a live FUSE mount, a path
// inside it, a dead one and a hung one (without ever waiting on the daemon).
TEST_F(IntegrationTest, MountQueryAgreesWithMountinfo) {
    if (!statmount_is_usable()) GTEST_SKIP() << "statmount is not usable on this kernel";
    Sandbox sb;
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    auto check = [&](const std::string& path) {
        SCOPED_TRACE(path);
        auto table = read_mountinfo(kSelfMountinfo);
        ASSERT_TRUE(table) << table.error().message();
        const MountEntry* want = table->topmost_at(path);
        ASSERT_NE(want, nullptr);
        auto got = mount_at_path(path, true);
        ASSERT_TRUE(got) << got.error().message();
        EXPECT_EQ(got->mount_id, want->mount_id);
        EXPECT_EQ(got->parent_id, want->parent_id);
        EXPECT_EQ(got->device, want->device);
        EXPECT_EQ(got->root, want->root);
        EXPECT_EQ(got->mountpoint, want->mountpoint);
        EXPECT_EQ(got->fstype, want->fstype);
        EXPECT_EQ(got->source, want->source);
        EXPECT_EQ(got->flags, want->flags);
        EXPECT_EQ(got->propagation.shared_group, want->propagation.shared_group);
        EXPECT_EQ(got->propagation.master_group, want->propagation.master_group);
        // The lock-free first step agrees: the same mount, and something is
        // mounted at `path` exactly when mountinfo's topmost mount is there.
        auto id = identify_mount_at_path(path, true);
        ASSERT_TRUE(id) << id.error().message();
        EXPECT_EQ(id->device, want->device);
        EXPECT_EQ(id->is_mount_root, want->mountpoint == path);
        auto again = statmount_entry(id->unique_mount_id);
        ASSERT_TRUE(again) << again.error().message();
        EXPECT_EQ(again->mount_id, want->mount_id);
    };
    check(fuse.source());
    check(vol);
    EXPECT_EQ(mount_at_path(vol, true)->fstype, "fuse.fh_testfs");
    // A directory that is not a mountpoint resolves to the mount holding it.
    auto inside = mount_at_path(sb.kubelet() + "/pods", true);
    ASSERT_TRUE(inside) << inside.error().message();
    EXPECT_NE(inside->mountpoint, sb.kubelet() + "/pods");
    auto inside_id = identify_mount_at_path(sb.kubelet() + "/pods", true);
    ASSERT_TRUE(inside_id) << inside_id.error().message();
    EXPECT_FALSE(inside_id->is_mount_root);
    EXPECT_EQ(inside_id->device, inside->device);
    // Hung (SIGSTOP) and dead daemons: answered from kernel structures.
    fuse.stop();
    check(vol);
    fuse.cont();
    fuse.kill9();
    check(vol);
    check(fuse.source());
    // A symlink in the path is refused, not followed.
    ASSERT_EQ(::symlink(fuse.source().c_str(), sb.path("link").c_str()), 0);
    auto link = mount_at_path(sb.path("link"), true);
    ASSERT_FALSE(link);
    EXPECT_EQ(link.error().err, ELOOP);
    auto link_id = identify_mount_at_path(sb.path("link"), false);  // the per-component walk refuses it too
    ASSERT_FALSE(link_id);
    EXPECT_EQ(link_id.error().err, ELOOP);
}

} // namespace
} // namespace fh::test
