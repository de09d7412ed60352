// Path attacks on the target side (issue 5, "Hostile input"), against real
// FUSE daemons and fuse-healerd. Whatever is done to the paths, the daemon
// acts only on the exact mount it tracks, at the exact path it tracks, and
// says why it refused; each test compares the whole mount table of the
// namespace before and after.
//
//   SymlinkSwappedIn...         a target's pod directory, or the directory
//                               holding its mount, replaced by a symlink to
//                               where the very same stale mount now is,
//                               between the heal's plan and its action (TOCTOU)
//   PlantedMounts...            a tmpfs, a bind of /etc and a FUSE mount of
//                               another daemon at volume paths, and a tmpfs
//                               over a stale target: none is touched
//   Names...                    targets whose names hold spaces, tabs,
//                               newlines, backslashes, a literal "\040", a
//                               " (deleted)" suffix, "..." and "..x": healed at
//                               their exact paths, one log line per event
//   VolDataCannotForgeLogLines  vol_data.json fields with newlines and ".."
//                               are logged escaped, never used as paths
// (Symlinks planted during an outage, before the heal is planned, are in
// tests/integration/heal_edge_test.cpp; ".." components in the state file in
// resource_fault_test.cpp; in mountinfo paths, in the unit tests.)
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

class PathAttack : public DaemonTest {};

enum class Swap { PodDir, VolumeDir };

// Pods a (volume), b (a subPath of the gated directory) and c (volume) bind
// one dataset. It dies and comes back; the heal does a and waits in its
// probe of the gated directory for b. Then the attacker renames c's pod
// directory (or the directory holding c's `mount`) out of the kubelet root,
// which carries c's stale mount along, and plants a symlink at the old name:
// c's path, walked with symlinks followed, reaches the very mount the heal
// planned for (same mount id), now outside the root. The gate opens: a and
// b are healed, c's mount (outside) is not, the refusal is logged, and the
// table changed by exactly the heals of a and b and the rename.
void symlink_swapped_in_during_the_heal(Swap swap, const std::vector<std::string>& daemon_args) {
    Sandbox sb;
    Dataset fuse(sb, kGatedTree);
    const std::string pod_a = publish_volume(sb, fuse.source(), "pod-a");
    const std::string pod_b = publish_subpath(sb, fuse.source(), "gate/gated", "pod-b");
    const std::string pod_c = publish_volume(sb, fuse.source(), "pod-c");
    Daemon d(sb);
    start_daemon(d, sb, {pod_a, pod_b, pod_c}, "[heal]\nprobe_timeout = \"20s\"\n" + prefixes_toml(sb), daemon_args);
    const std::string old_dev = fuse.mount().device;
    fuse.kill9();
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", pod_c), kHealTimeout)) << tail(d.log());

    Gate gate(sb, "/gate/gated");
    const std::size_t mark = d.log().size();
    const TableKeys before = table_keys();
    ASSERT_TRUE(restart_gated(fuse, gate, 2)) << tail(d.log().substr(mark));
    const std::string new_dev = fuse.mount().device;

    // The swap: rename out of the root (the mount goes along), symlink in.
    const std::string pod_dir = sb.kubelet() + "/pods/pod-c";
    const std::string vol_dir = pod_dir + "/volumes/kubernetes.io~csi/vol";
    const std::string moved_from = swap == Swap::PodDir ? pod_dir : vol_dir;
    const std::string moved_to = sb.path("elsewhere/c");
    make_dirs(sb.path("elsewhere"));
    ASSERT_EQ(rename(moved_from.c_str(), moved_to.c_str()), 0) << std::strerror(errno);
    ASSERT_EQ(symlink(moved_to.c_str(), moved_from.c_str()), 0) << std::strerror(errno);
    const std::string moved_mount = moved_to + pod_c.substr(moved_from.size());
    ASSERT_EQ(count_mounts_at(moved_mount), 1);
    ASSERT_EQ(count_mounts_at(pod_c), 0);
    ASSERT_TRUE(is_dead_errno(read_errno(pod_c + "/generation"))) << "the symlink does not lead to the stale mount";
    gate.open();

    EXPECT_TRUE(host_reads(pod_b + "/inner", "gated 2\n")) << tail(d.log().substr(mark));
    EXPECT_TRUE(host_reads(pod_a + "/generation", gen(2))) << tail(d.log().substr(mark));
    // Refused, and said so.
    EXPECT_TRUE(wait_until(
        [&] {
            return !lines_with(d.log().substr(mark), {event_for("failed to heal, will retry", pod_c), "symlink"})
                        .empty() ||
                   !lines_with(d.log().substr(mark), {event_for("failed to heal, will retry", pod_c),
                                                      "Too many levels of symbolic links"})
                        .empty();
        },
        kHealTimeout))
        << tail(d.log().substr(mark));
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(is_dead_errno(read_errno(moved_mount + "/generation"))) << "healed outside the kubelet root";
    EXPECT_TRUE(lines_with(d.log().substr(mark), {event_for("mount healed", pod_c)}).empty()) << tail(d.log());

    TableDiff want = expected_heal_diff(before, {fuse.source(), pod_a, pod_b}, old_dev, new_dev);
    want.removed.push_back(pod_c + " dev=" + old_dev + " root=/ type=fuse.fh_testfs");
    want.added.push_back(moved_mount + " dev=" + old_dev + " root=/ type=fuse.fh_testfs");
    std::sort(want.removed.begin(), want.removed.end());
    std::sort(want.added.begin(), want.added.end());
    const TableDiff got = table_diff(before, table_keys());
    EXPECT_EQ(got.removed, want.removed) << to_text(got);
    EXPECT_EQ(got.added, want.added) << to_text(got);
    // The daemon forgets the target that left the root.
    EXPECT_TRUE(wait_until([&] { return !state_has(sb, {pod_c}) && state_has(sb, {pod_a, pod_b}); }, kHealTimeout))
        << read_file(state_file(sb)).value_or("(none)");
}

}  // namespace

TEST_F(PathAttack, SymlinkSwappedInForThePodDirDuringTheHeal) {
    symlink_swapped_in_during_the_heal(Swap::PodDir, {});
}

TEST_F(PathAttack, SymlinkSwappedInForThePodDirDuringTheHealWithoutOpenat2) {
    symlink_swapped_in_during_the_heal(Swap::PodDir, {"--disable-kernel-feature", "openat2"});
}

TEST_F(PathAttack, SymlinkSwappedInForTheVolumeDirDuringTheHeal) {
    symlink_swapped_in_during_the_heal(Swap::VolumeDir, {});
}

TEST_F(PathAttack, SymlinkSwappedInForTheVolumeDirDuringTheHealWithoutOpenat2) {
    symlink_swapped_in_during_the_heal(Swap::VolumeDir, {"--disable-kernel-feature", "openat2"});
}

// Mounts planted under the kubelet root that are not a dataset's targets: a
// tmpfs and a bind of /etc at volume paths, a FUSE daemon of its own (same
// fstype as the dataset) mounted straight at a volume path, and, once the
// dataset is dead, a tmpfs over one of its stale targets. The dataset dies
// and comes back: its one real target is healed; none of the planted
// mounts, nor the covered stale target, is touched; the planted FUSE
// daemon, killed too, is not healed from the dataset's source (no origin is
// known for it) and the log says so.
TEST_F(PathAttack, PlantedMountsUnderTheKubeletRootAreNotTouched) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string real = publish_volume(sb, source, "pod-real");
    const std::string covered = publish_volume(sb, source, "pod-covered");
    const std::string tmpfs_at = sb.make_pod_volume("pod-tmpfs", "vol");
    ASSERT_EQ(mount("planted", tmpfs_at.c_str(), "tmpfs", 0, "size=64k"), 0) << std::strerror(errno);
    const std::string etc_at = sb.make_pod_volume("pod-etc", "vol");
    ASSERT_EQ(mount("/etc", etc_at.c_str(), nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);
    const std::string planted_fuse_at = sb.make_pod_volume("pod-fuse", "vol");
    FuseDaemon planted(sb, planted_fuse_at);
    planted.start(5);

    Daemon d(sb);
    start_daemon(d, sb, {real, covered});
    const std::string old_dev = fuse.mount().device;
    fuse.kill9();
    planted.kill9();
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", covered), kHealTimeout)) << tail(d.log());
    // Private first: a mount on a peer of the source would propagate onto
    // the source and every other peer.
    ASSERT_EQ(mount(nullptr, covered.c_str(), nullptr, MS_PRIVATE, nullptr), 0) << std::strerror(errno);
    ASSERT_EQ(mount("cover", covered.c_str(), "tmpfs", 0, "size=64k"), 0) << std::strerror(errno);
    write_file(covered + "/planted", "x\n");

    const std::size_t mark = d.log().size();
    const TableKeys before = table_keys();
    fuse.supervisor_restart(2);
    const std::string new_dev = fuse.mount().device;
    EXPECT_TRUE(host_reads(real + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("heal skipped", planted_fuse_at), kHealTimeout)) << tail(d.log());
    auto skipped = lines_with(d.log(), {event_for("heal skipped", planted_fuse_at)});
    ASSERT_FALSE(skipped.empty());
    EXPECT_NE(skipped[0].find("no origin known"), std::string::npos) << skipped[0];
    std::this_thread::sleep_for(300ms);

    const TableDiff want = expected_heal_diff(before, {source, real}, old_dev, new_dev);
    const TableDiff got = table_diff(before, table_keys());
    EXPECT_EQ(got.removed, want.removed) << to_text(got);
    EXPECT_EQ(got.added, want.added) << to_text(got);
    EXPECT_EQ(read_file(covered + "/planted"), "x\n");
    EXPECT_EQ(stack_at(covered).back().second, "tmpfs");
    const std::string after = d.log().substr(mark);
    for (const auto& t : {covered, tmpfs_at, etc_at, planted_fuse_at})
        EXPECT_TRUE(lines_with(after, {event_for("mount healed", t)}).empty()) << tail(after);
}

namespace {

// Pod and volume names a path may hold: mountinfo writes space, tab,
// newline and backslash as \040, \011, \012 and \134.
struct OddName {
    std::string uid;
    std::string vol;
};

const std::vector<OddName> kOddNames = {
    {"pod with spaces", "vol"},
    {"pod\twith\ttabs", "vol"},
    {"pod\nwith\nnewlines", "vol\nx"},
    {"pod\\with\\backslashes", "vol\\"},
    {"pod\\040literal", "vol"},      // a literal backslash-040, not a space
    {"...", ".. "},                  // dots are names too, only "." and ".." are not
    {"..x", "vol (deleted)"},
};

}  // namespace

// Targets under odd names: each is learned at its exact path (the state
// file holds the raw bytes), healed there, logged on one line per event with
// the name escaped, and listed by the control socket with its raw path. A
// volume target named "... (deleted)" (what /proc/mounts appends to an
// unlinked mountpoint; mountinfo does not) is a target like any other.
TEST_F(PathAttack, NamesWithSpacesNewlinesAndBackslashesAreHealedAtTheirExactPaths) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    std::vector<std::string> targets;
    for (const auto& n : kOddNames) {
        std::string t = sb.make_pod_volume(n.uid, n.vol);
        if (n.vol == "vol (deleted)") {
            // A volume published at the volume dir itself (no /mount).
            t = t.substr(0, t.size() - std::string("/mount").size());
        }
        csi_bind(source, "", t, true);
        targets.push_back(t);
    }
    const std::string sub = sb.pod_subpath_path("pod with spaces", "vol", "ctr\\x", 0);
    csi_bind(source, "sub", sub, true);
    targets.push_back(sub);
    bool escaped = false;
    for (const auto& l : read_mountinfo_lines())
        escaped = escaped || l.find("pod\\040with\\040spaces") != std::string::npos;
    ASSERT_TRUE(escaped) << "mountinfo does not escape as expected";

    Daemon d(sb);
    start_daemon(d, sb, targets);
    const std::string old_dev = fuse.mount().device;
    fuse.kill9();
    const TableKeys before = table_keys();
    const std::size_t mark = d.log().size();
    fuse.supervisor_restart(2);
    const std::string new_dev = fuse.mount().device;
    for (const auto& t : targets) {
        const std::string file = t == sub ? t + "/inner" : t + "/generation";
        EXPECT_TRUE(host_reads(file, t == sub ? inner(2) : gen(2))) << ::testing::PrintToString(t) << "\n"
                                                                     << tail(d.log().substr(mark));
        EXPECT_TRUE(d.wait_for_log(event_for("mount healed", t), kHealTimeout, mark))
            << ::testing::PrintToString(t) << "\n" << tail(d.log().substr(mark));
        EXPECT_EQ(lines_with(d.log().substr(mark), {event_for("mount healed", t)}).size(), 1u)
            << ::testing::PrintToString(t);
    }
    std::vector<std::string> mountpoints = targets;
    mountpoints.push_back(source);
    const TableDiff want = expected_heal_diff(before, mountpoints, old_dev, new_dev);
    const TableDiff got = table_diff(before, table_keys());
    EXPECT_EQ(got.removed, want.removed) << to_text(got);
    EXPECT_EQ(got.added, want.added) << to_text(got);

    // Every log line is one event: no raw newline or tab of a name split one.
    for (const auto& line : lines_with(d.log(), {""})) {
        if (line.empty()) continue;
        EXPECT_TRUE(line.size() > 4 && line[4] == '-' && line[10] == 'T') << "a line that is not a log line: "
                                                                          << ::testing::PrintToString(line);
    }
    // The control socket lists every raw path (once the reconcile that
    // healed them has finished).
    nlohmann::json status;
    const bool listed = wait_for_status(
        d,
        [&](const nlohmann::json& s) {
            for (const auto& t : targets)
                if (target_status(s, t).value("state", "") != "healthy") return false;
            return true;
        },
        &status, kHealTimeout, 20ms);
    EXPECT_TRUE(listed) << status.dump();
}

// vol_data.json is written by kubelet, but its fields come from the pod
// spec and the CSI driver: a volume handle with a newline and "..", and a
// driver name that looks like a log line. They are logged escaped inside
// their own line, and nothing is ever looked up at such a path.
TEST_F(PathAttack, VolDataCannotForgeLogLines) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string forged = "\n2025-01-01T00:00:00.000000 info mount healed: target=/forged pod=x";
    const std::string pod = sb.make_pod_volume("pod-a", "vol", "../../../../etc/shadow" + forged, "evil" + forged);
    csi_bind(source, "", pod, true);
    Daemon d(sb);
    start_daemon(d, sb, {pod});
    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    ASSERT_TRUE(d.wait_for_log(event_for("mount healed", pod), kHealTimeout)) << tail(d.log());
    auto healed = lines_with(d.log(), {event_for("mount healed", pod)});
    ASSERT_EQ(healed.size(), 1u);
    EXPECT_NE(healed[0].find("volume_handle=../../../../etc/shadow\\012"), std::string::npos) << healed[0];
    for (const auto& line : lines_with(d.log(), {"forged"}))
        EXPECT_NE(line.find("target=" + log_escaped(pod) + " "), std::string::npos)
            << "a forged line: " << ::testing::PrintToString(line);
    const auto status = status_json(d.control_socket());
    EXPECT_EQ(target_status(status, pod).value("volume_handle", ""), "../../../../etc/shadow" + forged)
        << status.dump();
}
