// Edge cases of fuse-healerd against real FUSE daemons, kubelet-like bind
// mounts and emulated containers (see harness.h). The basic scenarios (kill -9
// and restart, crash cycles, subPath) live in heal_test.cpp; these cover:
//
//   PodDeleted...        a target unmounted during the outage is not mounted again
//   ReadWrite...         read-write targets are skipped unless [heal] read_write
//   HungDaemon...        a SIGSTOPped FUSE daemon does not stall other heals
//   Symlink... / Renamed...  the daemon never acts through a symlink, nor
//                        outside the exact mount it planned for
//   DaemonKilled...      a SIGKILLed healer resumes from its state file
//   StackStrategy...     "stack": at most one dead layer, nothing on the source
//   BindFs / SquashFuse  foreign FUSE implementations
//   StaleCopy...         a stale copy outside the kubelet root vs the origin
//   UnrelatedMount...    a recycled device number never makes a live mount a target
//
// Each test runs in its own process and private mount namespace (main.cpp);
// the Sandbox removes every mount and process it made.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "heal_fixture.h"

using namespace fh::test;

namespace {

// FUSE mounts of a table: mountpoint -> devices, bottom of the stack first.
using FuseMap = std::map<std::string, std::vector<std::string>>;

FuseMap fuse_map(const std::string& mountinfo = kSelfMountinfo) {
    std::set<std::string> paths;
    for (const auto& m : fuse_mounts(mountinfo)) paths.insert(m.mountpoint);
    FuseMap out;
    for (const auto& p : paths)
        for (const auto& [dev, fstype] : stack_at(p, mountinfo))
            if (fstype == "fuse" || fstype.rfind("fuse.", 0) == 0) out[p].push_back(dev);
    return out;
}

std::string to_text(const FuseMap& m) {
    std::string s;
    for (const auto& [p, devs] : m) {
        s += "  " + p + ":";
        for (const auto& d : devs) s += " " + d;
        s += "\n";
    }
    return s;
}

// The stack at `path` (mountinfo of `table`), checked against the current
// source device: every layer that is not `live_device` is dead.
struct StackCheck {
    int layers = 0;
    int dead = 0;
    bool top_live = false;
};

StackCheck check_stack(const std::string& path, const std::string& live_device,
                       const std::string& table = kSelfMountinfo) {
    StackCheck c;
    auto stack = stack_at(path, table);
    c.layers = static_cast<int>(stack.size());
    for (const auto& [dev, fstype] : stack)
        if (dev != live_device) ++c.dead;
    c.top_live = !stack.empty() && stack.back().first == live_device;
    return c;
}

// The device of the topmost mount at `path` in a parsed table.
std::optional<std::string> topmost_device(const std::vector<MountLine>& table, const std::string& path) {
    for (const auto& m : table) {
        if (m.mountpoint != path) continue;
        bool covered = false;
        for (const auto& o : table) covered = covered || (o.mountpoint == path && o.parent == m.id);
        if (!covered) return m.device;
    }
    return std::nullopt;
}

// Samples this namespace's mount table on a thread, keeping every distinct
// table in order: a state that lasts well under a millisecond (a healed
// mount briefly gone again) shows up in the samples.
class MountSampler {
public:
    MountSampler() : thread_([this] { run(); }) {}
    ~MountSampler() { stop(); }
    MountSampler(const MountSampler&) = delete;
    MountSampler& operator=(const MountSampler&) = delete;

    // Stops sampling; returns the distinct tables seen, in order.
    const std::vector<std::vector<MountLine>>& stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
        return samples_;
    }

private:
    void run() {
        std::vector<std::string> last;
        while (!stop_) {
            auto lines = read_mountinfo_lines();
            if (lines != last) {
                std::vector<MountLine> parsed;
                for (const auto& l : lines)
                    if (auto m = parse_mount_line(l)) parsed.push_back(std::move(*m));
                samples_.push_back(std::move(parsed));
                last = std::move(lines);
            }
            std::this_thread::sleep_for(20us);
        }
    }

    std::atomic<bool> stop_{false};
    std::vector<std::vector<MountLine>> samples_;
    std::thread thread_;  // last: starts once the rest is initialised
};

// Returns a description of every sample in which `path`'s topmost mount was
// no longer `live_device` after an earlier sample had shown it healed.
std::vector<std::string> regressions(const std::vector<std::vector<MountLine>>& samples, const std::string& path,
                                     const std::string& live_device) {
    std::vector<std::string> out;
    bool healed = false;
    for (std::size_t i = 0; i < samples.size(); ++i) {
        auto top = topmost_device(samples[i], path);
        if (top && *top == live_device) healed = true;
        else if (healed) out.push_back("sample " + std::to_string(i) + ": topmost " + top.value_or("(none)"));
    }
    return out;
}

class HealEdge : public DaemonTest {};

}  // namespace

// ---- (e) a target unmounted during the outage ---------------------------------

// Kubelet deletes a pod while the FUSE daemon is down: it unmounts the pod's
// targets (a stale FUSE bind unmounts fine; the daemon is not asked) and
// removes their directories. When the source comes back, only the targets
// that are still mounted are healed: nothing reappears at the deleted paths,
// not even where kubelet has unmounted but not yet removed the directory.
TEST_F(HealEdge, PodDeletedDuringOutageIsNotMountedAgain) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();

    const std::string gone = sb.make_pod_volume("pod-gone", "vol");
    const std::string gone_sub = sb.pod_subpath_path("pod-gone", "vol", "app", 0);
    const std::string half = sb.make_pod_volume("pod-half", "vol");  // unmounted, dir left behind
    const std::string kept = sb.make_pod_volume("pod-kept", "vol");
    csi_bind(source, "", gone, true);
    csi_bind(source, "sub", gone_sub, true);
    csi_bind(source, "", half, true);
    csi_bind(source, "", kept, true);
    Container c(sb);
    c.start(kept, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(c, gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {gone, gone_sub, half, kept});

    fuse.kill9();
    ASSERT_TRUE(container_broken(c));
    // The pod's containers are gone; kubelet unmounts its volumes. The first
    // unmount is a mount event: the daemon sees the outage of the others.
    ASSERT_EQ(umount2(gone_sub.c_str(), 0), 0) << std::strerror(errno);
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", gone), kHealTimeout)) << tail(d.log());
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", kept), kHealTimeout)) << tail(d.log());
    ASSERT_EQ(umount2(gone.c_str(), 0), 0) << std::strerror(errno);
    ASSERT_EQ(umount2(half.c_str(), 0), 0) << std::strerror(errno);
    std::filesystem::remove_all(sb.kubelet() + "/pods/pod-gone");
    // The daemon forgets the deleted targets (and says so in its state).
    EXPECT_TRUE(wait_until(
        [&] {
            auto s = read_file(state_file(sb));
            return s && s->find(gone) == std::string::npos && s->find(half) == std::string::npos &&
                   s->find(kept) != std::string::npos;
        },
        kHealTimeout))
        << read_file(state_file(sb)).value_or("(no state)");

    const std::size_t log_mark = d.log().size();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(kept + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state;
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", kept), kHealTimeout, log_mark)) << tail(d.log());
    // Let any (wrong) heal of the deleted targets happen before looking.
    std::this_thread::sleep_for(300ms);

    struct stat st{};
    EXPECT_NE(stat((sb.kubelet() + "/pods/pod-gone").c_str(), &st), 0) << "the deleted pod dir was recreated";
    EXPECT_EQ(count_mounts_under(sb.kubelet() + "/pods/pod-gone"), 0);
    EXPECT_EQ(count_mounts_at(half), 0) << "a target unmounted by kubelet was mounted again";
    EXPECT_TRUE(std::filesystem::is_empty(half));
    const FuseMap expected = {{source, {fuse.mount().device}}, {kept, {fuse.mount().device}}};
    EXPECT_EQ(fuse_map(), expected) << "FUSE mounts now:\n" << to_text(fuse_map());
    const std::string after = d.log().substr(log_mark);
    for (const auto& t : {gone, gone_sub, half})
        EXPECT_TRUE(lines_with(after, {"target=" + t + " "}).empty())
            << "the daemon still acted on deleted target " << t << ":\n"
            << joined(lines_with(after, {"target=" + t + " "}));
    EXPECT_TRUE(bad_states(c, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}

// ---- (f) read-write targets ------------------------------------------------------

// A read-write bind (the source is mounted rw, the CSI publish is not
// read-only) is reported as skipped with the default read_write = false and
// stays dead, while a read-only target of the same dataset is healed. After
// the operator sets read_write = true (SIGHUP), it is healed from the
// remembered origin, keeping its read-write flag.
// The daemon starts before kubelet: <root_dir> does not exist. It says it
// waits, picks the pods tree up when it appears (vol_data.json included) and
// heals as usual.
TEST_F(HealEdge, RootDirCreatedAfterTheDaemonStarted) {
    Sandbox sb;
    std::filesystem::remove_all(sb.kubelet());
    Daemon d(sb);
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready: watching", kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(sb.kubelet() + "/pods does not exist yet", kHealTimeout)) << tail(d.log());

    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod = sb.make_pod_volume("pod-late", "vol", "handle-late");
    csi_bind(source, "", pod, true);
    ASSERT_TRUE(d.wait_for_log(sb.kubelet() + "/pods appeared", kHealTimeout)) << tail(d.log());
    ASSERT_TRUE(wait_until([&] { return state_has(sb, {pod}); }, kHealTimeout)) << tail(d.log());

    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    // The pod index found the volume's vol_data.json without a rescan timer.
    EXPECT_TRUE(d.wait_for_log("volume_handle=handle-late", kHealTimeout)) << tail(d.log());
}

TEST_F(HealEdge, ReadWriteTargetSkippedByDefaultAndHealedAfterReload) {
    Sandbox sb;
    Dataset fuse(sb, {"--rw-mount"});
    const std::string& source = fuse.source();
    ASSERT_FALSE(fuse.mount().read_only()) << fuse.mount().raw;

    const std::string rw = sb.make_pod_volume("pod-rw", "vol");
    const std::string ro = sb.make_pod_volume("pod-ro", "vol");
    csi_bind(source, "", rw, false);
    csi_bind(source, "", ro, true);
    ASSERT_FALSE(topmost_at(rw)->read_only()) << topmost_at(rw)->raw;
    ASSERT_TRUE(topmost_at(ro)->read_only()) << topmost_at(ro)->raw;
    const std::string old_device = fuse.mount().device;

    Daemon d(sb);
    start_daemon(d, sb, {rw, ro});
    fuse.supervisor_restart(2);

    EXPECT_TRUE(host_reads(ro + "/generation", gen(2))) << tail(d.log());
    ASSERT_TRUE(d.wait_for_log(event_for("heal skipped", rw), kHealTimeout)) << tail(d.log());
    auto skipped = lines_with(d.log(), {event_for("heal skipped", rw)});
    ASSERT_FALSE(skipped.empty());
    EXPECT_NE(skipped[0].find("reason=\"read-write target; set [heal] read_write = true to heal it\""),
              std::string::npos)
        << skipped[0];
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(errno_name(read_errno(rw + "/generation")), "ENOTCONN");
    EXPECT_EQ(stack_at(rw), (std::vector<std::pair<std::string, std::string>>{{old_device, "fuse.fh_testfs"}}));
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount healed", rw)}).empty()) << tail(d.log());
    EXPECT_EQ(lines_with(d.log(), {event_for("heal skipped", rw)}).size(), 1u)
        << "the skip is reported once:\n" << joined(lines_with(d.log(), {event_for("heal skipped", rw)}));

    // The operator allows read-write heals and reloads the config.
    const std::size_t mark = d.log().size();
    write_file(d.config_path(), d.config_text("[heal]\nread_write = true\n"));
    ASSERT_EQ(kill(d.pid(), SIGHUP), 0);
    ASSERT_TRUE(d.wait_for_log("config reloaded", kHealTimeout, mark)) << tail(d.log());
    EXPECT_TRUE(host_reads(rw + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", rw), kHealTimeout, mark)) << tail(d.log());
    auto top = topmost_at(rw);
    ASSERT_TRUE(top);
    EXPECT_EQ(top->device, fuse.mount().device);
    EXPECT_FALSE(top->read_only()) << "the healed mount lost its read-write flag: " << top->raw;
    EXPECT_EQ(count_mounts_at(rw), 1);
    EXPECT_EQ(count_mounts_at(source), 1);
}

// With read_write = true from the start, a read-write target and a slave
// container on it are healed like a read-only one, and stay read-write.
TEST_F(HealEdge, ReadWriteTargetHealedWithReadWriteTrue) {
    Sandbox sb;
    Dataset fuse(sb, {"--rw-mount"});
    const std::string& source = fuse.source();
    const std::string rw = sb.make_pod_volume("pod-rw", "vol");
    csi_bind(source, "", rw, false);
    Container c(sb);
    c.start(rw, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(c, gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {rw}, "[heal]\nread_write = true\n");
    fuse.kill9();
    ASSERT_TRUE(container_broken(c));
    fuse.supervisor_restart(2);

    EXPECT_TRUE(host_reads(rw + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state << "\n" << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", rw), kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(lines_with(d.log(), {"heal skipped"}).empty()) << tail(d.log());
    auto top = topmost_at(rw);
    ASSERT_TRUE(top);
    EXPECT_FALSE(top->read_only()) << top->raw;
    auto cm = c.mounts();
    ASSERT_EQ(cm.size(), 2u) << ::testing::PrintToString(c.mountinfo());
    EXPECT_EQ(cm[1].device, fuse.mount().device);
    EXPECT_FALSE(cm[1].read_only()) << cm[1].raw;
    EXPECT_TRUE(bad_states(c, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}

// ---- (g) a hung FUSE daemon ----------------------------------------------------------

namespace {

// Dataset A's daemon is SIGSTOPped while a container probes it, so requests
// pile up (fusectl "waiting" > 0) and any probe of A blocks. Dataset B then
// crashes and is restarted: its targets must heal promptly, and A's target
// is reported unresponsive (not broken, not touched).
void hung_daemon_does_not_stall_other_heals(const std::vector<std::string>& daemon_args,
                                            const std::string& detection) {
    Sandbox sb;
    FuseDaemon a(sb, sb.runtime() + "/ds-a/fuse");
    FuseDaemon b(sb, sb.runtime() + "/ds-b/fuse");
    a.start(1);
    b.start(1);
    const std::string pod_a = sb.make_pod_volume("pod-a", "vol-a");
    const std::string pod_b1 = sb.make_pod_volume("pod-b1", "vol-b");
    const std::string pod_b2 = sb.make_pod_volume("pod-b2", "vol-b");
    const std::string sub_b = sb.pod_subpath_path("pod-b2", "vol-b", "app", 0);
    csi_bind(a.source(), "", pod_a, true);
    csi_bind(b.source(), "", pod_b1, true);
    csi_bind(b.source(), "", pod_b2, true);
    csi_bind(b.source(), "sub", sub_b, true);
    Container ca(sb), cb(sb), cb_private(sb);
    ca.start(pod_a, ContainerPropagation::Slave, "generation");
    cb.start(pod_b1, ContainerPropagation::Slave, "generation");
    cb_private.start(pod_b2, ContainerPropagation::Private, "generation");
    for (Container* c : {&ca, &cb, &cb_private}) ASSERT_TRUE(container_reads(*c, gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {pod_a, pod_b1, pod_b2, sub_b}, "[heal]\nprobe_timeout = \"300ms\"\n", daemon_args);
    EXPECT_FALSE(lines_with(d.log(), {"death detection=" + detection}).empty()) << tail(d.log());

    const std::string dev_a = a.mount().device;
    Hang hang(a);
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(dev_a) > 0; }, 2000ms))
        << "the container's probe never blocked on the stopped daemon";
    // From here on, nothing in this test may touch A's files: it would hang.

    b.kill9();
    ASSERT_TRUE(container_broken(cb));
    const auto restarted = Clock::now();
    b.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod_b1 + "/generation", gen(2), 2000ms)) << tail(d.log());
    EXPECT_TRUE(host_reads(pod_b2 + "/generation", gen(2), 2000ms)) << tail(d.log());
    EXPECT_TRUE(host_reads(sub_b + "/inner", inner(2), 2000ms)) << tail(d.log());
    EXPECT_TRUE(container_reads(cb, gen(2), 2000ms)) << cb.last()->state << "\n" << tail(d.log());
    EXPECT_TRUE(container_reads(cb_private, gen(2), 2000ms)) << cb_private.last()->state << "\n" << tail(d.log());
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted);
    std::cout << "  [" << detection << "] B healed (hosts and containers) " << took.count()
              << " ms after its restart, with A hung\n";
    EXPECT_LT(took, 2000ms);

    EXPECT_TRUE(d.wait_for_log(event_for("mount unresponsive", pod_a), 2000ms)) << tail(d.log());
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount broken", pod_a)}).empty()) << tail(d.log());
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount healed", pod_a)}).empty()) << tail(d.log());
    EXPECT_EQ(stack_at(pod_a), (std::vector<std::pair<std::string, std::string>>{{dev_a, "fuse.fh_testfs"}}));
    EXPECT_EQ(count_mounts_at(a.source()), 1);
    EXPECT_EQ(count_mounts_at(b.source()), 1);
    EXPECT_FALSE(d.poll_exit()) << "fuse-healerd exited: " << tail(d.log());

    // A wakes up: its container reads the same generation again.
    hang.resume();
    EXPECT_TRUE(container_reads(ca, gen(1))) << ca.last()->state;
    EXPECT_EQ(read_file(pod_a + "/generation"), gen(1));
    EXPECT_EQ(d.terminate(), 0) << tail(d.log());
}

}  // namespace

TEST_F(HealEdge, HungDaemonDoesNotStallOtherHealsPidfd) { hung_daemon_does_not_stall_other_heals({}, "pidfd"); }

TEST_F(HealEdge, HungDaemonDoesNotStallOtherHealsFusectl) {
    hung_daemon_does_not_stall_other_heals({"--disable-kernel-feature", "fuse_fdinfo"}, "fusectl");
}

TEST_F(HealEdge, HungDaemonDoesNotStallOtherHealsStatx) {
    hung_daemon_does_not_stall_other_heals({"--disable-kernel-feature", "fusectl"}, "statx");
}

namespace {

// A hung daemon must not delay every heal of another dataset by the probe
// timeout: once A's probe has timed out, A is unresponsive until its probe
// returns, and B's heals do not wait for it again. (Before commit b21da9a,
// LivenessProber::check() waited up to probe_timeout afresh for A's stuck
// probe after every host action, so B's targets healed one per
// probe_timeout: 6 targets with probe_timeout 1s took about 7 s.)
void hung_daemon_does_not_delay_each_heal(const std::vector<std::string>& daemon_args) {
    Sandbox sb;
    FuseDaemon a(sb, sb.runtime() + "/ds-a/fuse");
    FuseDaemon b(sb, sb.runtime() + "/ds-b/fuse");
    a.start(1);
    b.start(1);
    const std::string pod_a = sb.make_pod_volume("pod-a", "vol-a");
    csi_bind(a.source(), "", pod_a, true);
    std::vector<std::string> pods_b;
    for (int i = 0; i < 6; ++i) {
        pods_b.push_back(sb.make_pod_volume("pod-b" + std::to_string(i), "vol-b"));
        csi_bind(b.source(), "", pods_b.back(), true);
    }
    Container ca(sb);
    ca.start(pod_a, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(ca, gen(1)));
    std::vector<std::string> all = pods_b;
    all.push_back(pod_a);
    Daemon d(sb);
    start_daemon(d, sb, all, "[heal]\nprobe_timeout = \"1s\"\n", daemon_args);

    Hang hang(a);
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(a.mount().device) > 0; }, 2000ms));
    b.kill9();
    const auto restarted = Clock::now();
    b.supervisor_restart(2);
    const bool all_healed = wait_until(
        [&] {
            for (const auto& p : pods_b)
                if (read_file(p + "/generation") != gen(2)) return false;
            return true;
        },
        15000ms, 5ms);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted);
    EXPECT_TRUE(all_healed) << tail(d.log());
    std::cout << "  6 targets of B healed " << took.count() << " ms after B's restart (probe_timeout 1 s, A hung)\n";
    // One probe timeout to find A hung, then B's heals without waiting on A again.
    EXPECT_LT(took, 2500ms) << joined(lines_with(d.log(), {"mount healed"}));
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount healed", pod_a)}).empty());
    hang.resume();
    EXPECT_TRUE(container_reads(ca, gen(1))) << ca.last()->state;
}

}  // namespace

TEST_F(HealEdge, HungDaemonDoesNotDelayEachHealFusectl) { hung_daemon_does_not_delay_each_heal({}); }

TEST_F(HealEdge, HungDaemonDoesNotDelayEachHealStatx) {
    hung_daemon_does_not_delay_each_heal({"--disable-kernel-feature", "fusectl"});
}

// ---- (h) symlinks ------------------------------------------------------------------------
//
// What the kernel does, and what each test relies on:
//  * mount(2) resolves symlinks in the target path: a bind onto
//    pods/<uid>/... where pods/<uid> is a symlink lands at the symlink's
//    destination, and mountinfo lists the resolved path.
//  * mountinfo prints a mount's path from its parent mount chain (d_path),
//    so it never holds a symlink at the moment it is read. A rename of an
//    ancestor directory carries the mounts below it along: mountinfo then
//    lists them at the new path, the old path holds nothing.
//  * A mount over an ancestor directory hides the mounts below without
//    changing their mountinfo path: the path the table shows then leads,
//    in a path walk, into the covering filesystem, where anything (e.g. a
//    symlink to elsewhere) may sit at the same names. This is how a
//    symlink ends up on the path of a target that is in the table.
// The daemon must act only on the exact mount it planned for: it resolves
// the path without following symlinks (openat2 RESOLVE_NO_SYMLINKS, or a
// walk with O_NOFOLLOW per component) and re-checks the mount id.
//
// source_prefixes is set so that the stale copies made outside the kubelet
// root for these tests are not taken for sources (see
// StaleCopyOutsideKubeletRootDoesNotHideTheSource for the default).

namespace {

// A target whose pod directory is shadowed by a tmpfs holding, at the same
// names, a symlink to a directory outside the kubelet root that holds another
// stale copy of the same dead superblock: either a parent component
// (.../kubernetes.io~csi/vol -> outside/vol) or the last one
// (.../vol/mount -> outside/vol/mount). The daemon must refuse to act
// through the symlink: nothing is mounted anywhere but at the source and at
// the control target.
void symlink_on_shadowed_target_path_is_refused(bool last_component, const std::vector<std::string>& daemon_args) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string shadowed = sb.make_pod_volume("pod-shadow", "vol");
    const std::string control = sb.make_pod_volume("pod-ok", "vol");
    const std::string outside_dir = sb.path("outside/vol");
    const std::string outside = outside_dir + "/mount";  // where the symlink leads
    csi_bind(source, "", shadowed, true);
    csi_bind(source, "", control, true);
    csi_bind(source, "", outside, true);

    Daemon d(sb);
    start_daemon(d, sb, {shadowed, control}, prefixes_toml(sb), daemon_args);
    const std::string old_device = fuse.mount().device;
    fuse.kill9();

    // Shadow pods/pod-shadow and plant the symlink in the shadowing tmpfs.
    const std::string pod_dir = sb.kubelet() + "/pods/pod-shadow";
    ASSERT_EQ(mount("shadow", pod_dir.c_str(), "tmpfs", 0, "mode=0755"), 0) << std::strerror(errno);
    const std::string link_path = last_component ? shadowed : pod_dir + "/volumes/kubernetes.io~csi/vol";
    const std::string link_dest = last_component ? outside : outside_dir;
    make_dirs(link_path.substr(0, link_path.rfind('/')));
    ASSERT_EQ(symlink(link_dest.c_str(), link_path.c_str()), 0);
    // The table still lists the hidden target at its path; a walk of that
    // path now ends, through the symlink, at the stale copy outside.
    ASSERT_EQ(count_mounts_at(shadowed), 1);
    char link[PATH_MAX] = {};
    ASSERT_GT(readlink(link_path.c_str(), link, sizeof link - 1), 0);
    ASSERT_EQ(std::string(link), link_dest);
    ASSERT_TRUE(is_dead_errno(read_errno(shadowed + "/generation")));
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", shadowed), kHealTimeout)) << tail(d.log());

    const std::size_t mark = d.log().size();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(control + "/generation", gen(2))) << tail(d.log());
    // The daemon tries the shadowed target and refuses.
    const bool refused = wait_until(
        [&] {
            const std::string l = d.log().substr(mark);
            return !lines_with(l, {"target=" + shadowed + " ", "no symlinks"}).empty() ||
                   !lines_with(l, {shadowed, "re-check"}).empty() ||
                   !lines_with(l, {"target=" + shadowed + " ", "symbolic links"}).empty();
        },
        kHealTimeout, 5ms);
    EXPECT_TRUE(refused) << "no refusal logged for " << shadowed << ":\n" << tail(d.log().substr(mark));
    // Retries back off (100, 200, 400 ms...): give them time to misbehave.
    std::this_thread::sleep_for(800ms);

    const std::string live = fuse.mount().device;
    const FuseMap expected = {
        {source, {live}}, {control, {live}}, {shadowed, {old_device}}, {outside, {old_device}}};
    EXPECT_EQ(fuse_map(), expected) << "FUSE mounts now:\n" << to_text(fuse_map()) << tail(d.log().substr(mark));
    EXPECT_TRUE(is_dead_errno(read_errno(outside + "/generation")))
        << "the copy outside the kubelet root was healed through the symlink";
    EXPECT_TRUE(lines_with(d.log(), {event_for("mount healed", shadowed)}).empty()) << tail(d.log());
    std::cout << "  refusals logged:\n" << joined(lines_with(d.log().substr(mark), {shadowed}));
}

}  // namespace

TEST_F(HealEdge, SymlinkedParentOnShadowedTargetPathIsRefused) {
    symlink_on_shadowed_target_path_is_refused(false, {});
}

TEST_F(HealEdge, SymlinkedParentOnShadowedTargetPathIsRefusedWithoutOpenat2) {
    symlink_on_shadowed_target_path_is_refused(false, {"--disable-kernel-feature", "openat2"});
}

TEST_F(HealEdge, SymlinkedLastComponentOnShadowedTargetPathIsRefused) {
    symlink_on_shadowed_target_path_is_refused(true, {});
}

TEST_F(HealEdge, SymlinkedLastComponentOnShadowedTargetPathIsRefusedWithoutOpenat2) {
    symlink_on_shadowed_target_path_is_refused(true, {"--disable-kernel-feature", "openat2"});
}

// pods/<uid> is a symlink to a directory outside the kubelet root when the
// volume is published: the bind lands at the real path, outside the root, so
// it is no target at all. It is neither learned nor healed, and nothing is
// mounted at the symlinked kubelet path.
TEST_F(HealEdge, SymlinkedPodDirIsNotATarget) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string real_pod = sb.path("elsewhere/pod-link");
    make_dirs(real_pod + "/volumes/kubernetes.io~csi/vol/mount");
    make_dirs(sb.kubelet() + "/pods");
    ASSERT_EQ(symlink(real_pod.c_str(), (sb.kubelet() + "/pods/pod-link").c_str()), 0);
    const std::string link_target = sb.pod_volume_path("pod-link", "vol");  // through the symlink
    const std::string real_target = real_pod + "/volumes/kubernetes.io~csi/vol/mount";
    csi_bind(source, "", link_target, true);
    ASSERT_EQ(count_mounts_at(link_target), 0);
    ASSERT_EQ(count_mounts_at(real_target), 1) << "mount(2) did not resolve the symlink?";
    const std::string control = sb.make_pod_volume("pod-ok", "vol");
    csi_bind(source, "", control, true);

    Daemon d(sb);
    start_daemon(d, sb, {control}, prefixes_toml(sb));
    const std::string state = read_file(state_file(sb)).value_or("");
    EXPECT_EQ(state.find("pod-link"), std::string::npos) << state;
    const std::string old_device = fuse.mount().device;
    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(control + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", control), kHealTimeout)) << tail(d.log());
    std::this_thread::sleep_for(300ms);

    const std::string live = fuse.mount().device;
    const FuseMap expected = {{source, {live}}, {control, {live}}, {real_target, {old_device}}};
    EXPECT_EQ(fuse_map(), expected) << "FUSE mounts now:\n" << to_text(fuse_map());
    EXPECT_TRUE(lines_with(d.log(), {"pod-link"}).empty()) << joined(lines_with(d.log(), {"pod-link"}));
}

// A pod directory renamed during the outage carries its stale target along
// (out of the kubelet root), and a symlink planted at the old name leads to
// another stale copy of the same superblock. The daemon's state still names
// the old path: it must not resolve that path (through the symlink) and
// heal what it finds there; it forgets the target instead.
TEST_F(HealEdge, RenamedPodDirReplacedBySymlinkIsNotFollowed) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string moved = sb.make_pod_volume("pod-moved", "vol");
    const std::string control = sb.make_pod_volume("pod-ok", "vol");
    const std::string decoy_pod = sb.path("decoy/pod-moved");
    const std::string decoy = decoy_pod + "/volumes/kubernetes.io~csi/vol/mount";
    csi_bind(source, "", moved, true);
    csi_bind(source, "", control, true);
    csi_bind(source, "", decoy, true);

    Daemon d(sb);
    start_daemon(d, sb, {moved, control}, prefixes_toml(sb));
    const std::string old_device = fuse.mount().device;
    fuse.kill9();

    const std::string pod_dir = sb.kubelet() + "/pods/pod-moved";
    const std::string renamed_pod = sb.path("elsewhere/pod-moved");
    make_dirs(sb.path("elsewhere"));
    ASSERT_EQ(rename(pod_dir.c_str(), renamed_pod.c_str()), 0) << std::strerror(errno);
    const std::string renamed = renamed_pod + "/volumes/kubernetes.io~csi/vol/mount";
    // The kernel moved the mount with its directory.
    EXPECT_EQ(count_mounts_at(moved), 0);
    EXPECT_EQ(count_mounts_at(renamed), 1);
    ASSERT_EQ(symlink(decoy_pod.c_str(), pod_dir.c_str()), 0);
    // The old path now resolves (following the symlink) to the decoy's stale copy.
    EXPECT_TRUE(is_dead_errno(read_errno(moved + "/generation")));

    const std::size_t mark = d.log().size();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(control + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", control), kHealTimeout, mark)) << tail(d.log());
    std::this_thread::sleep_for(300ms);

    const std::string live = fuse.mount().device;
    const FuseMap expected = {{source, {live}}, {control, {live}}, {renamed, {old_device}}, {decoy, {old_device}}};
    EXPECT_EQ(fuse_map(), expected) << "FUSE mounts now:\n" << to_text(fuse_map());
    EXPECT_TRUE(is_dead_errno(read_errno(moved + "/generation"))) << "healed through the symlink";
    EXPECT_TRUE(lines_with(d.log().substr(mark), {event_for("mount healed", moved)}).empty()) << tail(d.log());
    EXPECT_TRUE(wait_until(
        [&] {
            auto s = read_file(state_file(sb));
            return s && s->find(moved) == std::string::npos;
        },
        kHealTimeout))
        << "the state still remembers the renamed target: " << read_file(state_file(sb)).value_or("");
}

// ---- (i) the healer itself is SIGKILLed during an outage -----------------------------

// The healer learns its targets, is SIGKILLed; then the FUSE daemon dies and
// its supervisor removes the stale source before restarting it, so the new
// healer finds no trace of the old source in the table: the origin can come
// only from the state file. The targets and both containers heal.
TEST_F(HealEdge, DaemonKilledDuringOutageHealsFromSavedState) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod = sb.make_pod_volume("pod-a", "vol");
    const std::string sub = sb.pod_subpath_path("pod-a", "vol", "app", 0);
    csi_bind(source, "", pod, true);
    csi_bind(source, "sub", sub, true);
    Container slave(sb), priv(sb);
    slave.start(pod, ContainerPropagation::Slave, "generation");
    priv.start(sub, ContainerPropagation::Private, "inner");
    ASSERT_TRUE(container_reads(slave, gen(1)));
    ASSERT_TRUE(container_reads(priv, inner(1)));

    Daemon first(sb);
    start_daemon(first, sb, {pod, sub});
    first.kill9();

    fuse.kill9();
    ASSERT_TRUE(container_broken(slave));
    ASSERT_TRUE(container_broken(priv));
    ASSERT_EQ(lazy_umount(source), 0);
    ASSERT_EQ(count_mounts_at(source), 0);
    fuse.start(2);
    EXPECT_TRUE(is_dead_errno(read_errno(pod + "/generation")));

    Daemon second(sb);
    second.start();
    EXPECT_TRUE(second.wait_for_log("loaded 2 origins from " + state_file(sb), kHealTimeout)) << tail(second.log());
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(second.log());
    EXPECT_TRUE(host_reads(sub + "/inner", inner(2))) << tail(second.log());
    EXPECT_TRUE(container_reads(slave, gen(2))) << slave.last()->state << "\n" << tail(second.log());
    EXPECT_TRUE(container_reads(priv, inner(2))) << priv.last()->state << "\n" << tail(second.log());
    EXPECT_TRUE(second.wait_for_log(event_for("mount healed", pod), kHealTimeout)) << tail(second.log());
    EXPECT_TRUE(second.wait_for_log(event_for("mount healed", sub), kHealTimeout)) << tail(second.log());
    const std::string live = fuse.mount().device;
    const FuseMap expected = {{source, {live}}, {pod, {live}}, {sub, {live}}};
    EXPECT_EQ(fuse_map(), expected) << to_text(fuse_map());
    EXPECT_EQ(fuse_map(priv.mountinfo_path()), (FuseMap{{"/data", {live}}}));
    EXPECT_EQ(fuse_map(slave.mountinfo_path()), (FuseMap{{"/data", {live}}}));
    for (Container* c : {&slave, &priv})
        EXPECT_TRUE(bad_states(*c, {gen(1), gen(2), inner(1), inner(2)}).empty())
            << ::testing::PrintToString(c->state_sequence());
}

// ---- (j) the stack strategy over crash cycles ---------------------------------------------

// Five crash cycles with strategy "stack": after each, every host target, a
// slave and a private container read the new generation; every stack holds
// at most one dead layer under the live one; nothing was ever stacked on the
// source path (a bind on a dead top that shares its peer group with the
// source would propagate there).
TEST_F(HealEdge, StackStrategyKeepsAtMostOneDeadLayerOverCrashCycles) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod1 = sb.make_pod_volume("pod-1", "vol");
    const std::string pod2 = sb.make_pod_volume("pod-2", "vol");
    const std::string sub = sb.pod_subpath_path("pod-2", "vol", "app", 0);
    csi_bind(source, "", pod1, true);
    csi_bind(source, "", pod2, true);
    csi_bind(source, "sub", sub, true);
    Container slave(sb), priv(sb);
    slave.start(pod1, ContainerPropagation::Slave, "generation");
    priv.start(pod2, ContainerPropagation::Private, "generation");
    ASSERT_TRUE(container_reads(slave, gen(1)));
    ASSERT_TRUE(container_reads(priv, gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {pod1, pod2, sub}, "[heal]\nstrategy = \"stack\"\n");
    EXPECT_FALSE(lines_with(d.log(), {"strategy=stack"}).empty()) << tail(d.log());

    for (int g = 2; g <= 6; ++g) {
        SCOPED_TRACE("generation " + std::to_string(g));
        fuse.kill9();
        ASSERT_TRUE(container_broken(slave));
        const std::size_t mark = d.log().size();
        fuse.supervisor_restart(g);
        const std::string live = fuse.mount().device;
        const bool healed = host_reads(pod1 + "/generation", gen(g)) && host_reads(pod2 + "/generation", gen(g)) &&
                            host_reads(sub + "/inner", inner(g)) && container_reads(slave, gen(g)) &&
                            container_reads(priv, gen(g));
        EXPECT_TRUE(healed) << "slave: " << slave.last()->state << ", private: " << priv.last()->state
                            << "\nFUSE mounts:\n" << to_text(fuse_map()) << "log of this cycle:\n"
                            << d.log().substr(mark);
        if (!healed) break;
        // The heal may still be finishing (dead layers are shed first): wait
        // for the healed shape, then check it.
        auto settled = [&] {
            for (const auto& t : {pod1, pod2, sub})
                if (!check_stack(t, live).top_live) return false;
            return check_stack("/data", live, slave.mountinfo_path()).top_live &&
                   check_stack("/data", live, priv.mountinfo_path()).top_live;
        };
        EXPECT_TRUE(wait_until(settled, kHealTimeout)) << to_text(fuse_map());
        std::this_thread::sleep_for(100ms);
        for (const auto& t : {pod1, pod2, sub}) {
            StackCheck c = check_stack(t, live);
            EXPECT_TRUE(c.top_live) << t << "\n" << to_text(fuse_map());
            EXPECT_LE(c.dead, 1) << t << " has " << c.dead << " dead layers:\n" << to_text(fuse_map());
        }
        for (Container* c : {&slave, &priv}) {
            StackCheck s = check_stack("/data", live, c->mountinfo_path());
            EXPECT_TRUE(s.top_live) << to_text(fuse_map(c->mountinfo_path()));
            EXPECT_LE(s.dead, 1) << "container " << c->pid() << ":\n" << to_text(fuse_map(c->mountinfo_path()));
        }
        EXPECT_EQ(count_mounts_at(source), 1) << "something was mounted on the source path:\n"
                                              << to_text(fuse_map());
        EXPECT_EQ(stack_at(source), (std::vector<std::pair<std::string, std::string>>{{live, "fuse.fh_testfs"}}));
        if (HasFailure()) break;
    }
    EXPECT_TRUE(lines_with(d.log(), {"failed to heal"}).empty()) << joined(lines_with(d.log(), {"failed to heal"}));
    for (Container* c : {&slave, &priv}) {
        std::vector<std::string> allowed;
        for (int g = 1; g <= 6; ++g) allowed.push_back(gen(g));
        EXPECT_TRUE(bad_states(*c, allowed).empty()) << ::testing::PrintToString(c->state_sequence());
    }
}

// The stack strategy must add exactly one layer per heal and leave other
// pods alone: every target is healed once per cycle, holds one dead layer
// under one live one, and a healed target never loses its live layer again.
// (Failed before commit 859a5a7: BindOnTop detached the dead top from its
// *peers* only, not its *slaves*. After the first heal had made pod-1's and
// the subPath's dead bottoms slaves of the original peer group, pod-2's dead
// bottom was the group's only member: no peers, so it stayed shared, with
// slaves. The bind on pod-2 then propagated to pod-1's dead bottom, where the
// kernel tucked the copy beneath pod-1's healed layer (3 layers at pod-1),
// and in the next cycle "unmount-dead-layer" at pod-2 propagated to pod-1
// and removed pod-1's freshly healed layer: pod-1 was ENOTCONN again until
// the same reconcile healed it a second time.)
TEST_F(HealEdge, StackStrategyHealsEachTargetOnceWithoutTouchingOtherPods) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod1 = sb.make_pod_volume("pod-1", "vol");
    const std::string pod2 = sb.make_pod_volume("pod-2", "vol");
    const std::string sub = sb.pod_subpath_path("pod-2", "vol", "app", 0);
    csi_bind(source, "", pod1, true);
    csi_bind(source, "", pod2, true);
    csi_bind(source, "sub", sub, true);
    Container slave(sb);
    slave.start(pod1, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(slave, gen(1)));
    Daemon d(sb);
    start_daemon(d, sb, {pod1, pod2, sub}, "[heal]\nstrategy = \"stack\"\n");

    for (int g = 2; g <= 4; ++g) {
        SCOPED_TRACE("generation " + std::to_string(g));
        fuse.kill9();
        ASSERT_TRUE(container_broken(slave));
        const std::size_t mark = d.log().size();
        MountSampler sampler;
        fuse.supervisor_restart(g);
        const std::string live = fuse.mount().device;
        EXPECT_TRUE(container_reads(slave, gen(g))) << tail(d.log());
        EXPECT_TRUE(wait_until(
            [&] {
                for (const auto& t : {pod1, pod2, sub})
                    if (!check_stack(t, live).top_live) return false;
                return true;
            },
            kHealTimeout));
        std::this_thread::sleep_for(200ms);
        const auto& samples = sampler.stop();
        const std::string cycle_log = d.log().substr(mark);
        for (const auto& t : {pod1, pod2, sub}) {
            EXPECT_EQ(lines_with(cycle_log, {event_for("mount healed", t)}).size(), 1u)
                << t << " healed more than once:\n" << joined(lines_with(cycle_log, {t}));
            StackCheck c = check_stack(t, live);
            EXPECT_LE(c.layers, 2) << t << ": one dead layer under one live one expected:\n" << to_text(fuse_map());
            auto back = regressions(samples, t, live);
            EXPECT_TRUE(back.empty()) << t << " was healed, then its live mount went away again:\n" << joined(back);
        }
        EXPECT_LE(check_stack("/data", live, slave.mountinfo_path()).layers, 2)
            << to_text(fuse_map(slave.mountinfo_path()));
        EXPECT_EQ(count_mounts_at(source), 1);
        if (HasFailure()) break;
    }
}

// ---- (k) foreign FUSE implementations ---------------------------------------------------------

namespace {

// bindfs (fstype plain "fuse") and squashfuse (mounts rw; the CSI binds are
// read-only) instead of fh_testfs.
void basic_heal_with(FuseKind kind, const char* tool) {
    if (access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed";
    Sandbox sb;
    Dataset fuse(sb, {}, kind);
    const std::string& source = fuse.source();
    const std::string fstype = fuse.fstype();
    EXPECT_EQ(fstype, kind == FuseKind::BindFs ? "fuse" : "fuse.squashfuse");
    const std::string pod = sb.make_pod_volume("pod-a", "vol");
    const std::string sub = sb.pod_subpath_path("pod-a", "vol", "app", 0);
    csi_bind(source, "", pod, true);
    csi_bind(source, "sub", sub, true);
    Container slave(sb), priv(sb);
    slave.start(pod, ContainerPropagation::Slave, "data/hello");
    priv.start(pod, ContainerPropagation::Private, "data/hello");
    ASSERT_TRUE(container_reads(slave, hello(1)));
    ASSERT_TRUE(container_reads(priv, hello(1)));

    Daemon d(sb);
    start_daemon(d, sb, {pod, sub});
    fuse.kill9();
    ASSERT_TRUE(container_broken(slave));
    fuse.supervisor_restart(2);
    ASSERT_EQ(fuse.fstype(), fstype);

    EXPECT_TRUE(host_reads(pod + "/data/hello", hello(2))) << tail(d.log());
    EXPECT_TRUE(host_reads(sub + "/inner", inner(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(slave, hello(2))) << slave.last()->state << "\n" << tail(d.log());
    EXPECT_TRUE(container_reads(priv, hello(2))) << priv.last()->state << "\n" << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", pod), kHealTimeout)) << tail(d.log());
    auto healed = lines_with(d.log(), {event_for("mount healed", pod)});
    ASSERT_FALSE(healed.empty());
    EXPECT_NE(healed[0].find(" fstype=" + fstype + " "), std::string::npos) << healed[0];
    for (const auto& t : {pod, sub}) {
        auto top = topmost_at(t);
        ASSERT_TRUE(top) << t;
        EXPECT_EQ(top->device, fuse.mount().device) << top->raw;
        EXPECT_EQ(top->fstype, fstype);
        EXPECT_TRUE(top->read_only()) << "the healed mount lost its read-only flag: " << top->raw;
        EXPECT_EQ(count_mounts_at(t), 1);
    }
    EXPECT_EQ(count_mounts_at(source), 1);
    for (Container* c : {&slave, &priv})
        EXPECT_TRUE(bad_states(*c, {hello(1), hello(2)}).empty()) << ::testing::PrintToString(c->state_sequence());
}

}  // namespace

TEST_F(HealEdge, BasicHealWithBindFs) { basic_heal_with(FuseKind::BindFs, "/usr/bin/bindfs"); }

TEST_F(HealEdge, BasicHealWithSquashFuse) { basic_heal_with(FuseKind::SquashFuse, "/usr/bin/squashfuse"); }

// ---- (l) old-kernel fallbacks ------------------------------------------------------------------
// In daemon_test.cpp (KernelFallbacks): every forced fallback heals a volume,
// a subPath, a HostToContainer and a private container.

// ---- a stale copy of the source outside the kubelet root ----------------------------------------

// With source_prefixes empty (the default), any FUSE mount of a filesystem
// root outside <root_dir>/pods counts as a source. An extra bind of the
// dataset's root outside the kubelet root (a debugging bind, a second
// consumer) is still stale after the supervisor restarts the daemon at the
// real source path. The target's remembered origin names the real source,
// which is back and alive: the target must heal from it.
// (Failed before commit 859a5a7: plan_dead_target() took origin_from_table()
// only, i.e. source=<sandbox>/mnt/debug, whose topmost mount is the dead
// filesystem itself, and never tried the remembered origin: the target
// stayed broken with reason="source .../mnt/debug still holds the dead
// filesystem".)
TEST_F(HealEdge, StaleCopyOutsideKubeletRootDoesNotHideTheSource) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string& source = fuse.source();
    const std::string pod = sb.make_pod_volume("pod-a", "vol");
    csi_bind(source, "", pod, true);
    const std::string extra = sb.path("mnt/debug");
    csi_bind(source, "", extra, true);

    Daemon d(sb);
    start_daemon(d, sb, {pod});
    const std::string state = read_file(state_file(sb)).value_or("");
    EXPECT_NE(state.find("\"" + source + "\""), std::string::npos) << "learned the wrong source: " << state;
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << "FUSE mounts now:\n"
                                                          << to_text(fuse_map()) << tail(d.log());
    EXPECT_TRUE(is_dead_errno(read_errno(extra + "/generation"))) << "the extra copy outside was healed";
}

// ---- a recycled device number in an unrelated mount namespace ------------------------------------

namespace {

// A process in a mount namespace of its own, made before the test mounts
// anything (so it holds no copy of any FUSE mount): an unrelated container.
// On request it mounts tmpfs instances on `dir` in its namespace until one
// gets a wanted device number; anonymous device numbers (tmpfs, FUSE, proc,
// overlay...) come from one pool, lowest free first, so the number of a
// FUSE superblock that was just destroyed is handed to the next one.
class Bystander {
public:
    explicit Bystander(std::string dir) : dir_(std::move(dir)) {
        int to_child[2], to_parent[2];
        if (pipe2(to_child, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        if (pipe2(to_parent, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        pid_ = fork_tied_child();
        if (pid_ == 0) {
            if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
                _exit(2);
            std::uint64_t msg = 1;
            if (write(to_parent[1], &msg, sizeof msg) != sizeof msg) _exit(3);
            while (read(to_child[0], &msg, sizeof msg) == sizeof msg) {
                // Lower free numbers are kept (they would be handed out
                // first); a higher one means the wanted number is not free
                // yet: give it back and try again, for up to about 1 s.
                std::uint64_t got = 0;
                for (int i = 0; i < 1000; ++i) {
                    if (mount("bystander", dir_.c_str(), "tmpfs", 0, "size=64k") != 0) break;
                    struct stat st{};
                    if (stat(dir_.c_str(), &st) != 0) break;
                    got = st.st_dev;
                    if (got == msg) break;
                    if (minor(static_cast<dev_t>(got)) > minor(static_cast<dev_t>(msg))) {
                        umount2(dir_.c_str(), MNT_DETACH);
                        usleep(1000);
                    }
                }
                if (write(to_parent[1], &got, sizeof got) != sizeof got) _exit(4);
            }
            _exit(0);
        }
        close(to_child[0]);
        close(to_parent[1]);
        to_child_ = to_child[1];
        from_child_ = to_parent[0];
        std::uint64_t ready = 0;
        if (!receive(ready)) throw std::runtime_error("bystander did not start");
    }
    ~Bystander() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
        if (to_child_ >= 0) close(to_child_);
        if (from_child_ >= 0) close(from_child_);
    }
    Bystander(const Bystander&) = delete;
    Bystander& operator=(const Bystander&) = delete;

    pid_t pid() const { return pid_; }
    std::string mountinfo_path() const { return "/proc/" + std::to_string(pid_) + "/mountinfo"; }

    // Mounts tmpfs on dir until one gets device `want` (for up to about
    // 1 s); returns the device of the last one, 0 when mounting failed.
    dev_t grab(dev_t want) {
        std::uint64_t msg = want;
        if (write(to_child_, &msg, sizeof msg) != sizeof msg) return 0;
        std::uint64_t got = 0;
        return receive(got) ? static_cast<dev_t>(got) : 0;
    }

private:
    bool receive(std::uint64_t& out) {
        pollfd p{from_child_, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0) return false;
        return read(from_child_, &out, sizeof out) == sizeof out;
    }

    std::string dir_;
    pid_t pid_ = -1;
    int to_child_ = -1;
    int from_child_ = -1;
};

dev_t parse_device(const std::string& majmin) {
    unsigned major = 0, minor = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &major, &minor) != 2) return 0;
    return makedev(major, minor);
}

}  // namespace

// After healing a target, the daemon walks /proc once more for containers
// still holding copies of the dead superblock, matching mounts by (device
// number, root) only. By then the dead superblock may be gone and its
// anonymous device number handed to an unrelated mount (here a tmpfs in an
// unrelated namespace; on a node: any container's tmpfs, proc, overlay or
// another dataset's FUSE mount). That mount must not be touched.
//
// The window is made deterministic: the healer is SIGSTOPped while dataset
// D1 and dataset D2 come back, D2's new daemon is SIGSTOPped (alive by
// fusectl, but its probe hangs), then the healer continues. In one
// reconcile it heals D1's target (pod-1 sorts first; D1's dead superblock
// loses its last mount), then waits probe_timeout (4 s) on D2's new source, then does
// the final walk for D1's healed device. Meanwhile the bystander mounts a
// tmpfs that gets D1's old device number.
//
// Found as a bug: the final walk matched copies by (device, root) only and
// replaced the bystander's tmpfs with a clone of D1's source (and, under
// ctest -j8, one test's healer replaced another test's pod target). Copies
// now must also match fstype and mount source, and every action first
// requires fusectl to show the expected connection still aborted. Those
// checks did not cover a dead FUSE mount of the same fstype that got the
// number (seen under ctest -j2: an engine test healed the dead mount of the
// test beside it), so the healer now also pins D1's dead superblock from its
// heal to the final walk (Engine::healed_pins_): the bystander cannot get
// the number at all.
TEST_F(HealEdge, UnrelatedMountWithRecycledDeviceNumberIsNotTouched) {
    char tmpl[] = "/tmp/fh-bystander-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    const std::string by_dir = tmpl;
    struct RemoveDir {
        std::string dir;
        ~RemoveDir() { rmdir(dir.c_str()); }
    } remove_dir{by_dir};
    Bystander by(by_dir);  // before any mount of this test

    Sandbox sb;
    FuseDaemon d1(sb, sb.runtime() + "/ds-1/fuse");
    FuseDaemon d2(sb, sb.runtime() + "/ds-2/fuse");
    d1.start(1);
    d2.start(1);
    const std::string pod1 = sb.make_pod_volume("pod-1", "vol");
    const std::string pod2 = sb.make_pod_volume("pod-2", "vol");
    csi_bind(d1.source(), "", pod1, true);
    csi_bind(d2.source(), "", pod2, true);
    Daemon d(sb);
    // The window lasts the probe timeout: longer than the bystander's
    // attempts to get the number (~1 s), even on a loaded machine.
    start_daemon(d, sb, {pod1, pod2}, "[heal]\nprobe_timeout = \"4s\"\n");

    // Both datasets die; their supervisors remove the stale sources.
    const std::string old1 = d1.mount().device;
    d1.kill9();
    d2.kill9();
    ASSERT_EQ(lazy_umount(d1.source()), 0);
    ASSERT_EQ(lazy_umount(d2.source()), 0);
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", pod1), kHealTimeout)) << tail(d.log());
    ASSERT_TRUE(d.wait_for_log(event_for("mount broken", pod2), kHealTimeout)) << tail(d.log());
    ASSERT_TRUE(d.wait_for_log("namespace walk", kHealTimeout)) << tail(d.log());
    std::this_thread::sleep_for(100ms);  // let that reconcile finish

    // Both come back while the healer is stopped; D2's new daemon hangs.
    ASSERT_EQ(kill(d.pid(), SIGSTOP), 0);
    ASSERT_TRUE(wait_until([&] { return is_stopped(d.pid()); }, 2000ms));
    d2.start(2);
    // Serving (INIT done, nothing pending) before it hangs: fusectl then
    // says alive, and only the heal's probe of the new source blocks.
    ASSERT_EQ(read_file(d2.source() + "/generation"), gen(2));
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(d2.mount().device) == 0; }, 2000ms));
    Hang hang(d2);
    d1.start(2);
    const std::size_t mark = d.log().size();
    ASSERT_EQ(kill(d.pid(), SIGCONT), 0);

    ASSERT_TRUE(wait_until([&] {
        auto top = topmost_at(pod1);
        return top && top->device == d1.mount().device;
    }, kHealTimeout, 20us)) << tail(d.log());
    // The healer pins D1's dead superblock until its final walk: the
    // number cannot be handed to the bystander's tmpfs in the window.
    const dev_t got = by.grab(parse_device(old1));
    ASSERT_NE(got, 0u) << "the bystander did not answer";
    EXPECT_NE(got, parse_device(old1)) << "the bystander's tmpfs got D1's old device number " << old1
                                       << " while the healer still looks for copies of D1's dead superblock";
    std::cout << "  bystander pid " << by.pid() << " holds a tmpfs with device " << major(got) << ":" << minor(got)
              << " (D1's old number " << old1 << " is pinned)\n";

    // D2's probe times out, then the final walk runs.
    ASSERT_TRUE(d.wait_for_log(event_for("failed to heal, will retry", pod2), kHealTimeout, mark)) << tail(d.log());
    std::this_thread::sleep_for(300ms);
    const std::string by_ns = " in ns of pid " + std::to_string(by.pid()) + " ";
    EXPECT_TRUE(lines_with(d.log().substr(mark), {by_ns}).empty())
        << "the healer acted in the bystander's namespace:\n" << joined(lines_with(d.log().substr(mark), {by_ns}));
    EXPECT_TRUE(fuse_mounts(by.mountinfo_path()).empty())
        << "FUSE mounts in the bystander's namespace:\n" << to_text(fuse_map(by.mountinfo_path()));

    // D2 wakes up and is healed on the retry.
    hang.resume();
    EXPECT_TRUE(host_reads(pod2 + "/generation", gen(2))) << tail(d.log());
}
