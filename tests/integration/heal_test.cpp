// fuse-healerd against real FUSE daemons, bind mounts and emulated
// containers: the core promises of the "replace" strategy.
#include "heal_fixture.h"

#include <sys/stat.h>

#include <variant>

#include <nlohmann/json.hpp>

#include "core/control_protocol.h"
#include "engine/ctl_client.h"

namespace fh::test {
namespace {

std::string gen_file(int n) { return std::to_string(n) + "\n"; }
std::string inner_file(int n) { return "inner " + std::to_string(n) + "\n"; }

// One dataset bound into a pod volume (read-only) and a pod subPath of its
// sub/ directory, with a HostToContainer (slave) and a private container on
// each, and fuse-healerd running.
class HealTest : public DaemonTest {
protected:
    void SetUp() override {
        DaemonTest::SetUp();
        if (IsSkipped()) return;
        source = sb.runtime() + "/ds1/fuse";
        fuse.start(1);
        volume = sb.make_pod_volume("pod-a", "pvc-1", "ds1");
        csi_bind(source, "", volume, true);
        subpath = sb.pod_subpath_path("pod-b", "pvc-1", "app", 0);
        csi_bind(source, "sub", subpath, true);
        vol_slave.start(volume, ContainerPropagation::Slave, "generation");
        vol_private.start(volume, ContainerPropagation::Private, "generation");
        sub_slave.start(subpath, ContainerPropagation::Slave, "inner");
        sub_private.start(subpath, ContainerPropagation::Private, "inner");
        for (Container* c : containers()) ASSERT_TRUE(container_reads(*c, c == &sub_slave || c == &sub_private ? inner_file(1) : gen_file(1)));
        daemon.start();
        ASSERT_TRUE(daemon.wait_for_log("ready")) << daemon.log();
        ASSERT_TRUE(daemon_learned(sb, volume) && daemon_learned(sb, subpath)) << daemon.log();
    }

    std::vector<Container*> containers() { return {&vol_slave, &vol_private, &sub_slave, &sub_private}; }

    // Kills the FUSE daemon, waits until every container sees the outage,
    // and restarts it as a supervisor does. Returns false on a timeout.
    void crash_and_restart(int next_generation) {
        fuse.kill9();
        for (Container* c : containers()) ASSERT_TRUE(container_broken(*c)) << c->log();
        fuse.supervisor_restart(next_generation);
    }

    void expect_all_read(int generation) {
        for (Container* c : containers()) {
            const bool sub = c == &sub_slave || c == &sub_private;
            EXPECT_TRUE(container_reads(*c, sub ? inner_file(generation) : gen_file(generation)))
                << "container " << c->pid() << " last state: " << (c->last() ? c->last()->state : "none")
                << "\n" << daemon.log();
        }
        EXPECT_TRUE(host_reads(volume + "/generation", gen_file(generation)));
        EXPECT_TRUE(host_reads(subpath + "/inner", inner_file(generation)));
    }

    Sandbox sb;
    std::string source, volume, subpath;
    FuseDaemon fuse{sb, sb.runtime() + "/ds1/fuse"};
    Container vol_slave{sb}, vol_private{sb}, sub_slave{sb}, sub_private{sb};
    Daemon daemon{sb};
};

// (a) + (b): after kill -9 and restart, every kind of container reads the new
// data again, and none ever saw an empty directory or foreign content.
TEST_F(HealTest, KillAndRestartHealsEveryContainerWithoutAnEmptyWindow) {
    crash_and_restart(2);
    expect_all_read(2);
    for (Container* c : {&vol_slave, &vol_private})
        EXPECT_EQ(bad_states(*c, {gen_file(1), gen_file(2)}), std::vector<std::string>{}) << c->pid();
    for (Container* c : {&sub_slave, &sub_private})
        EXPECT_EQ(bad_states(*c, {inner_file(1), inner_file(2)}), std::vector<std::string>{}) << c->pid();
    EXPECT_TRUE(daemon.wait_for_log("mount healed: target=" + volume));
    EXPECT_TRUE(daemon.wait_for_log("mount healed: target=" + subpath));
}

// (c): 20 crash cycles leave the mount counts unchanged on the host and in
// every container, nothing is ever mounted on the source path but the FUSE
// daemon's own mount, and every container copy keeps its propagation: a
// slave stays a slave (now of the new source's peer group), a private copy
// stays private.
TEST_F(HealTest, TwentyCrashCyclesLeaveMountCountsAndPropagationUnchanged) {
    const int host_before = count_mounts_under(sb.root());
    std::map<pid_t, int> before;
    for (Container* c : containers()) before[c->pid()] = static_cast<int>(c->mounts().size());
    for (int gen = 2; gen <= 21; ++gen) {
        crash_and_restart(gen);
        expect_all_read(gen);
        ASSERT_FALSE(HasFailure()) << "cycle " << gen;
        EXPECT_EQ(count_mounts_under(sb.root()), host_before) << "cycle " << gen;
        EXPECT_EQ(count_mounts_at(source), 1) << "cycle " << gen;
        for (Container* c : containers()) EXPECT_EQ(static_cast<int>(c->mounts().size()), before[c->pid()]);
        // Every mount of a pod path is the live superblock, in one layer.
        const std::string live = fuse.mount().device;
        for (const std::string& p : {volume, subpath}) {
            auto stack = stack_at(p);
            ASSERT_EQ(stack.size(), 1u) << p;
            EXPECT_EQ(stack[0].first, live) << p;
        }
        const int source_group = topmost_at(source)->shared_group();
        for (Container* c : {&vol_slave, &sub_slave}) {
            auto data = topmost_at("/data", c->mountinfo_path());
            ASSERT_TRUE(data);
            EXPECT_EQ(data->device, live);
            EXPECT_EQ(data->master_group(), source_group) << "cycle " << gen << ": " << data->raw;
            EXPECT_EQ(data->shared_group(), 0) << data->raw;
            EXPECT_TRUE(data->read_only()) << data->raw;
        }
        for (Container* c : {&vol_private, &sub_private}) {
            auto data = topmost_at("/data", c->mountinfo_path());
            ASSERT_TRUE(data);
            EXPECT_EQ(data->device, live);
            EXPECT_EQ(data->optional, "") << "cycle " << gen << ": " << data->raw;
            EXPECT_TRUE(data->read_only()) << data->raw;
        }
        ASSERT_FALSE(HasFailure()) << "cycle " << gen << "\n" << daemon.log();
    }
    for (Container* c : {&vol_slave, &vol_private}) {
        std::vector<std::string> allowed;
        for (int g = 1; g <= 21; ++g) allowed.push_back(gen_file(g));
        EXPECT_EQ(bad_states(*c, allowed), std::vector<std::string>{});
    }
}

// A FUSE daemon in a crash loop: every crash is healed, but each target's
// "mount broken" and "mount healed" lines stop after 5 in a minute; the rest
// are summed up in one line (here at the stop), and the metrics' heal count
// (fuse-healerctl status) has every heal.
TEST_F(HealTest, RepeatedHealLinesAreRateLimitedAndSummedUp) {
    for (int gen = 2; gen <= 8; ++gen) {
        crash_and_restart(gen);
        expect_all_read(gen);
        ASSERT_FALSE(HasFailure()) << "generation " << gen;
    }
    ASSERT_TRUE(daemon.wait_for_log("mount healed: target=" + subpath + " pod=pod-b"));
    auto count = [&](const std::string& needle) {
        const std::string log = daemon.log();
        int n = 0;
        for (auto p = log.find(needle); p != std::string::npos; p = log.find(needle, p + 1)) ++n;
        return n;
    };
    for (const std::string& t : {volume, subpath}) {
        EXPECT_EQ(count("mount broken: target=" + t + " "), 5) << t;
        EXPECT_EQ(count("mount healed: target=" + t + " "), 5) << t;
    }
    EXPECT_EQ(count("heal event lines not logged"), 0) << "summed up once a minute, or at the stop";
    // The 7 deaths of the one source: at most 5 lines ("FUSE server died"
    // through the pidfd, or "died before its server could be watched"). Not
    // every death has one (one first seen by a reconcile's fusectl check
    // has none), so the summary of those held back is not asserted here
    // (DeathWatch.UnwatchedDeathLinesAreLimitedPerSource counts it).
    const int death_lines = count("FUSE server died: ") + count("died before its server could be watched");
    EXPECT_GE(death_lines, 1);
    EXPECT_LE(death_lines, 5);
    EXPECT_EQ(count("FUSE death lines not logged"), 0) << "summed up once a minute, or at the stop";
    // A heal is counted (and its held-back line too) once its step ends,
    // after the containers already read the new data: wait for the status
    // to count every heal of both targets before the stop sums them up
    // (found by the TSan build: the stop came first, "healed=3").
    const auto heals_of = [&](const nlohmann::json& status, const std::string& target) -> long {
        if (!status.is_object() || !status.contains("targets")) return -1;
        for (const auto& t : status["targets"])
            if (t.value("target", "") == target) return t.value("heals", -1L);
        return -1;
    };
    EXPECT_TRUE(wait_until(
        [&] {
            auto answer = control_exchange(daemon.control_socket(),
                                           encode_control_request({ControlCommand::Status, ""}), 5s);
            if (!std::holds_alternative<std::string>(answer)) return false;
            const auto status = nlohmann::json::parse(std::get<std::string>(answer), nullptr, false);
            return heals_of(status, volume) == 7 && heals_of(status, subpath) == 7;
        },
        10000ms, 10ms))
        << "the status does not count 7 heals of each target";
    EXPECT_EQ(daemon.terminate(), 0);
    // 7 outages of 2 targets: 2 lines of each event held back per target.
    EXPECT_NE(daemon.log().find("heal event lines not logged: 8 repeats about 2 targets since the last such line "
                                "(more than 5 of one event for one target within 60 s: a FUSE daemon in a crash "
                                "loop?): broken=4 healed=4 target=" +
                                std::min(volume, subpath) + "," + std::max(volume, subpath) + ";"),
              std::string::npos)
        << daemon.log();
}

// (d): a subPath target heals with its own subdirectory, and the host
// targets keep their per-mount flags (read-only, nosuid, nodev as bound).
TEST_F(HealTest, SubpathHealsWithItsSubdirectoryAndFlags) {
    auto before = topmost_at(subpath);
    ASSERT_TRUE(before);
    crash_and_restart(2);
    expect_all_read(2);
    auto after = topmost_at(subpath);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->root, "/sub");
    EXPECT_EQ(after->device, fuse.mount().device);
    EXPECT_EQ(after->vfs_options, before->vfs_options);
    EXPECT_TRUE(after->read_only());
    // The directory listing is the subdirectory's, not the dataset root's.
    auto last = sub_private.last();
    ASSERT_TRUE(last);
    EXPECT_EQ(last->listing(), std::vector<std::string>{"inner"});
}

// The heal is driven by the mount event, not a period: with the safety scan
// off, the outage after the source is back lasts well under the old 5 s poll.
TEST_F(HealTest, HealsOnTheMountEventWithTheSafetyScanOff) {
    daemon.terminate();
    Daemon quiet{sb};
    quiet.start("[heal]\nsafety_scan_interval = \"0s\"\n");
    ASSERT_TRUE(quiet.wait_for_log("loaded 2 origins")) << quiet.log();
    fuse.kill9();
    ASSERT_TRUE(container_broken(vol_private));
    fuse.supervisor_restart(2);
    const auto back = monotonic_usec();
    ASSERT_TRUE(container_reads(vol_private, gen_file(2), 2000ms)) << quiet.log();
    const auto healed_at = vol_private.last()->usec;
    EXPECT_LT(healed_at - back, 1'000'000) << "healed " << (healed_at - back) << " us after the source returned";
}

} // namespace
} // namespace fh::test
