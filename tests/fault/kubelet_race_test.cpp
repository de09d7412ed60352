// Races with kubelet (issue 5, "Races with kubelet"), against real FUSE
// daemons and fuse-healerd:
//
//   TargetUnmountedAndRemovedWhileTheHealRuns  kubelet deletes a pod between
//                       the heal's plan and its action on that pod
//   PodCreatedWhileTheSourceIsDown...          a pod published from the dead
//                       source during the outage is healed when it returns
//   SourceBackWithAnotherFstype                not healed from a wrong source,
//                       and the log says why
//   SourceBackWithoutTheSubdirectory           a subPath target is not healed
//                       from a source that lacks its directory
//
// A heal is made to stop at a known point with fh_testfs --gate: the new
// source holds every request for one directory until the test lets it go,
// so the healer's probe of that directory (the first step of the heal of a
// subPath target cloned from it) waits there, after the heals planned
// before it and before those planned after it.
#include <gtest/gtest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "fault_fixture.h"

using namespace fh::test;

namespace {

class KubeletRace : public DaemonTest {};

}  // namespace

// Four pods bind one dataset: a (volume), b (a subPath of "gated"), c and d
// (volumes). The dataset dies and comes back with "gated" behind a gate:
// the heal does a, then waits in its probe of <source>/gated for b. Then
// kubelet deletes pod c (unmounts its target, removes the directories) and
// unmounts pod d's target (leaving the directory). The gate opens: b is
// healed, and nothing is mounted at c's or d's path, nor anywhere else; the
// mount table changed exactly by the heals of a and b.
TEST_F(KubeletRace, TargetUnmountedAndRemovedWhileTheHealRuns) {
    Sandbox sb;
    Dataset fuse(sb, kGatedTree);
    const std::string pod_a = publish_volume(sb, fuse.source(), "pod-a");
    const std::string pod_b = publish_subpath(sb, fuse.source(), "gate/gated", "pod-b");
    const std::string pod_c = publish_volume(sb, fuse.source(), "pod-c");
    const std::string pod_d = publish_volume(sb, fuse.source(), "pod-d");
    Container ca(sb);
    ASSERT_TRUE(start_reading(ca, pod_a, ContainerPropagation::Slave, "generation", gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {pod_a, pod_b, pod_c, pod_d}, "[heal]\nprobe_timeout = \"20s\"\n");
    const std::string old_dev = fuse.mount().device;
    fuse.kill9();
    ASSERT_TRUE(container_broken(ca));
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", pod_d), kHealTimeout)) << tail(d.log());

    Gate gate(sb, "/gate/gated");
    const std::size_t mark = d.log().size();
    const TableKeys before = table_keys();
    ASSERT_TRUE(restart_gated(fuse, gate, 2)) << "the heal never probed the gated directory:\n"
                                              << tail(d.log().substr(mark));
    const std::string new_dev = fuse.mount().device;
    // The heal stands in b's probe: a is done, c and d are planned.
    EXPECT_TRUE(host_reads(pod_a + "/generation", gen(2))) << tail(d.log().substr(mark));
    EXPECT_TRUE(is_dead_errno(read_errno(pod_c + "/generation")));

    // Kubelet deletes pod c and unmounts pod d's volume meanwhile.
    ASSERT_EQ(umount2(pod_c.c_str(), 0), 0) << std::strerror(errno);
    std::filesystem::remove_all(sb.kubelet() + "/pods/pod-c");
    ASSERT_EQ(umount2(pod_d.c_str(), 0), 0) << std::strerror(errno);
    gate.open();

    EXPECT_TRUE(host_reads(pod_b + "/inner", "gated 2\n")) << tail(d.log().substr(mark));
    EXPECT_TRUE(container_reads(ca, gen(2))) << ca.last()->state;
    // Let any (wrong) action on c or d happen before looking.
    std::this_thread::sleep_for(300ms);
    struct stat st{};
    EXPECT_NE(stat((sb.kubelet() + "/pods/pod-c").c_str(), &st), 0) << "the deleted pod's directory was recreated";
    EXPECT_EQ(count_mounts_under(sb.kubelet() + "/pods/pod-c"), 0);
    EXPECT_EQ(count_mounts_at(pod_d), 0) << "a target kubelet unmounted was mounted again";
    EXPECT_TRUE(std::filesystem::is_empty(pod_d));

    TableDiff want = expected_heal_diff(before, {fuse.source(), pod_a, pod_b}, old_dev, new_dev);
    for (const auto& t : {pod_c, pod_d}) want.removed.push_back(t + " dev=" + old_dev + " root=/ type=fuse.fh_testfs");
    std::sort(want.removed.begin(), want.removed.end());
    const TableDiff got = table_diff(before, table_keys());
    EXPECT_EQ(got.removed, want.removed) << to_text(got);
    EXPECT_EQ(got.added, want.added) << to_text(got);

    const std::string after = d.log().substr(mark);
    for (const auto& t : {pod_c, pod_d}) {
        EXPECT_TRUE(lines_with(after, {event_for("mount healed", t)}).empty()) << tail(after);
        EXPECT_TRUE(lines_with(after, {event_for("failed to heal, will retry", t)}).empty())
            << "a target kubelet removed is not a failed heal:\n" << joined(lines_with(after, {t}));
        EXPECT_FALSE(lines_with(after, {"target " + t + " ", "unmounted during its outage"}).empty())
            << "no line says why " << t << " was dropped:\n" << tail(after);
    }
    EXPECT_TRUE(bad_states(ca, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(ca.state_sequence());
}

namespace {

// A pod is published while its dataset's FUSE daemon is dead: the CSI bind
// of the source path binds the stale mount still there, so the new target
// is dead from its first moment and was never seen alive. Its origin is
// known from the table only until the supervisor lazily unmounts the stale
// source; then the target must still be healed when the source returns
// (`restart_healer`: by a healer started after that, from the saved state).
void pod_created_while_the_source_is_down(bool restart_healer) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod_old = publish_volume(sb, source, "pod-old");
    Daemon first(sb);
    start_daemon(first, sb, {pod_old});

    fuse.kill9();
    ASSERT_TRUE(first.wait_for_log(event_for("mount broken", pod_old), kHealTimeout)) << tail(first.log());
    const std::string pod_new = publish_volume(sb, source, "pod-new");
    ASSERT_TRUE(is_dead_errno(read_errno(pod_new + "/generation")));
    Container c(sb);
    c.start(pod_new, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_broken(c));
    ASSERT_TRUE(first.wait_for_log(event_for("mount broken", pod_new), kHealTimeout)) << tail(first.log());
    // The new target's origin is saved as soon as it is seen.
    EXPECT_TRUE(wait_until([&] { return state_has(sb, {pod_old, pod_new}); }, kHealTimeout))
        << read_file(state_file(sb)).value_or("(no state)");

    Daemon second(sb);
    Daemon* d = &first;
    if (restart_healer) {
        first.kill9();
        ASSERT_EQ(lazy_umount(source), 0);  // the stale source is gone from the table
        fuse.start(2);
        second.start();
        d = &second;
    } else {
        fuse.supervisor_restart(2);
    }
    EXPECT_TRUE(host_reads(pod_new + "/generation", gen(2))) << tail(d->log());
    EXPECT_TRUE(host_reads(pod_old + "/generation", gen(2))) << tail(d->log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state << "\n" << tail(d->log());
    EXPECT_TRUE(d->wait_for_log(event_for("mount healed", pod_new), kHealTimeout)) << tail(d->log());
    EXPECT_TRUE(lines_with(d->log(), {event_for("heal skipped", pod_new)}).empty()) << tail(d->log());
    const std::string live = fuse.mount().device;
    for (const auto& t : {pod_old, pod_new}) {
        EXPECT_EQ(stack_at(t), (std::vector<std::pair<std::string, std::string>>{{live, "fuse.fh_testfs"}})) << t;
    }
    EXPECT_TRUE(bad_states(c, {gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}

}  // namespace

TEST_F(KubeletRace, PodCreatedWhileTheSourceIsDownIsHealedWhenItReturns) {
    pod_created_while_the_source_is_down(false);
}

TEST_F(KubeletRace, PodCreatedWhileTheSourceIsDownIsHealedByARestartedHealer) {
    pod_created_while_the_source_is_down(true);
}

// The dataset's source path comes back holding something else first: a
// tmpfs, then a FUSE filesystem of another type (bindfs, fstype "fuse",
// serving generation 7). Neither is a source for the fuse.fh_testfs target:
// it stays dead, the log says why once per wrong source, and the container
// never sees their data. Then fh_testfs comes back and the target heals.
TEST_F(KubeletRace, SourceBackWithAnotherFstype) {
    if (access("/usr/bin/bindfs", X_OK) != 0) GTEST_SKIP() << "bindfs is not installed";
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod = publish_volume(sb, source, "pod-a");
    Container c(sb);
    ASSERT_TRUE(start_reading(c, pod, ContainerPropagation::Private, "generation", gen(1)));
    Daemon d(sb);
    start_daemon(d, sb, {pod});
    const std::string old_dev = fuse.mount().device;
    const auto dead_stack = std::vector<std::pair<std::string, std::string>>{{old_dev, "fuse.fh_testfs"}};

    fuse.kill9();
    ASSERT_EQ(lazy_umount(source), 0);
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", pod), kHealTimeout)) << tail(d.log());

    // A tmpfs at the source path.
    std::size_t mark = d.log().size();
    ASSERT_EQ(mount("not-fuse", source.c_str(), "tmpfs", 0, "size=64k"), 0) << std::strerror(errno);
    write_file(source + "/generation", gen(6));
    EXPECT_TRUE(d.wait_for_log(event_for("heal skipped", pod), kHealTimeout, mark)) << tail(d.log().substr(mark));
    auto skipped = lines_with(d.log().substr(mark), {event_for("heal skipped", pod)});
    ASSERT_FALSE(skipped.empty());
    EXPECT_NE(skipped[0].find("source " + source + " holds a tmpfs mount that is not a FUSE filesystem root"),
              std::string::npos)
        << skipped[0];
    ASSERT_EQ(umount2(source.c_str(), 0), 0);

    // bindfs at the source path.
    mark = d.log().size();
    FuseDaemon other(sb, source, FuseKind::BindFs);
    other.start(7);
    ASSERT_EQ(other.fstype(), "fuse");
    EXPECT_TRUE(d.wait_for_log(event_for("heal skipped", pod), kHealTimeout, mark)) << tail(d.log().substr(mark));
    skipped = lines_with(d.log().substr(mark), {event_for("heal skipped", pod)});
    ASSERT_FALSE(skipped.empty());
    EXPECT_NE(skipped[0].find("source " + source + " came back as fuse, expected fuse.fh_testfs"), std::string::npos)
        << skipped[0];
    // The status is published at the end of the step whose plan logged the
    // skip (after it arms the heals again): wait for it, do not race it.
    nlohmann::json status;
    wait_for_target_status(
        d, pod,
        [](const nlohmann::json& t) { return t.value("reason", "").find("came back as fuse") != std::string::npos; },
        &status, kHealTimeout, 10ms);
    EXPECT_EQ(status.value("state", ""), "broken") << status.dump();
    EXPECT_NE(status.value("reason", "").find("came back as fuse, expected fuse.fh_testfs"), std::string::npos)
        << status.dump();
    // Reconciles that change nothing do not say it again.
    ASSERT_NE(heal_request(d.control_socket(), pod), "(no answer)");
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(stack_at(pod), dead_stack) << "healed from the wrong filesystem";
    EXPECT_EQ(lines_with(d.log().substr(mark), {event_for("heal skipped", pod)}).size(), 1u)
        << joined(lines_with(d.log().substr(mark), {event_for("heal skipped", pod)}));
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount healed", pod)}).empty()) << tail(d.log());

    // The right filesystem comes back.
    ASSERT_EQ(other.terminate(), 0) << other.log();
    if (count_mounts_at(source) > 0) {
        ASSERT_EQ(lazy_umount(source), 0);
    }
    fuse.start(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state;
    EXPECT_TRUE(bad_states(c, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}

// The dataset comes back without the directory a subPath target binds: the
// volume target heals, the subPath target stays dead (never an empty
// directory), and the log names the missing directory. When a later
// generation has it again, the subPath target heals too.
TEST_F(KubeletRace, SourceBackWithoutTheSubdirectory) {
    Sandbox sb;
    const std::vector<std::string> with_extra = {"--tree", "extra/inner=extra {gen}\\n"};
    Dataset fuse(sb, with_extra);
    const std::string& source = fuse.source();
    const std::string pod = publish_volume(sb, source, "pod-a");
    const std::string sub = publish_subpath(sb, source, "extra", "pod-a");
    Container c(sb);
    ASSERT_TRUE(start_reading(c, sub, ContainerPropagation::Private, "inner", "extra 1\n"));
    Daemon d(sb);
    start_daemon(d, sb, {pod, sub});

    fuse.kill9();
    ASSERT_TRUE(container_broken(c));
    std::size_t mark = d.log().size();
    fuse.set_extra_args({});
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log().substr(mark));
    EXPECT_TRUE(d.wait_for_log(event_for("failed to heal, will retry", sub), kHealTimeout, mark))
        << tail(d.log().substr(mark));
    auto failed = lines_with(d.log().substr(mark), {event_for("failed to heal, will retry", sub)});
    ASSERT_FALSE(failed.empty());
    EXPECT_NE(failed[0].find("has no " + source + "/extra"), std::string::npos) << failed[0];
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(is_dead_errno(read_errno(sub + "/inner"))) << "healed from a source without its directory";
    EXPECT_EQ(count_mounts_at(sub), 1);

    mark = d.log().size();
    fuse.set_extra_args(with_extra);
    fuse.supervisor_restart(3);
    EXPECT_TRUE(host_reads(sub + "/inner", "extra 3\n", 10000ms)) << tail(d.log().substr(mark));
    EXPECT_TRUE(host_reads(pod + "/generation", gen(3))) << tail(d.log().substr(mark));
    EXPECT_TRUE(container_reads(c, "extra 3\n")) << c.last()->state;
    EXPECT_TRUE(bad_states(c, {"extra 1\n", "extra 3\n"}).empty()) << ::testing::PrintToString(c.state_sequence());
}
