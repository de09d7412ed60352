// Mount tracking by fanotify (engine/mount_tracker.h) against the kernel's
// own view: after each change of a real table (tmpfs, bind, FUSE mounts,
// escaped names, shared/slave propagation, lazily unmounted subtrees, moved
// mounts, mounts moved beneath others), the tracker's table equals what
// read_mountinfo() parses from /proc/self/mountinfo, entry for entry, in
// order. Changes the kernel does not report (propagation changes) are shown
// to need the resync that the daemon's safety timer runs.
#include "heal_fixture.h"

#include <sys/mount.h>
#include <sys/syscall.h>

#include <atomic>
#include <sstream>
#include <thread>

#include "engine/mount_query.h"
#include "engine/mount_tracker.h"
#include "engine/sys.h"

namespace fh::test {
namespace {

std::string describe(const MountEntry& e) {
    std::ostringstream o;
    o << e.mount_id << " " << e.parent_id << " " << e.major() << ":" << e.minor() << " root=" << e.root
      << " mp=" << e.mountpoint << " type=" << e.fstype << " source=" << e.source
      << " ro=" << e.flags.read_only << " nosuid=" << e.flags.nosuid << " nodev=" << e.flags.nodev
      << " noexec=" << e.flags.noexec << " shared=" << e.propagation.shared_group
      << " master=" << e.propagation.master_group << " unbindable=" << e.propagation.unbindable;
    return o.str();
}

// Returns "" when both tables hold the same mounts in the same order (every
// field but the option strings, which statmount is not asked for), else
// the first difference.
std::string difference(const MountTable& got, const MountTable& want) {
    const auto& g = got.entries();
    const auto& w = want.entries();
    for (std::size_t i = 0; i < std::max(g.size(), w.size()); ++i) {
        const std::string gs = i < g.size() ? describe(g[i]) : "(none)";
        const std::string ws = i < w.size() ? describe(w[i]) : "(none)";
        if (gs != ws)
            return "entry " + std::to_string(i) + " of " + std::to_string(g.size()) + " tracked / " +
                   std::to_string(w.size()) + " in mountinfo:\n  tracked:   " + gs + "\n  mountinfo: " + ws;
    }
    return {};
}

class MountTrackerTest : public IntegrationTest {
protected:
    void SetUp() override {
        IntegrationTest::SetUp();
        if (IsSkipped()) return;
        if (!statmount_is_usable() || !fanotify_mount_is_usable())
            GTEST_SKIP() << "this kernel reports no mount events through fanotify (Linux < 6.14)";
        MatchRules m;
        m.root_dir = sb.kubelet();
        rules = make_relevance_rules(m, {sb.runtime() + "/ds/fuse"});
        auto t = MountTracker::open(rules,
                                    [this](const TrackedEvent& e) {
                                        events.push_back(Seen{e.kind, e.relevant, e.why, std::string(e.mountpoint)});
                                    });
        ASSERT_TRUE(t) << t.error().message();
        tracker = std::move(*t);
    }

    // Applies the queued events and compares with mountinfo: every tracked
    // mount, and the snapshot the engine gets (the mounts that matter).
    ::testing::AssertionResult same_as_mountinfo() {
        tracker->update();
        auto got = tracker->table();
        if (!got) return ::testing::AssertionFailure() << got.error().message();
        const MountTable whole = tracker->whole_table();
        auto want = read_mountinfo(kSelfMountinfo);
        if (!want) return ::testing::AssertionFailure() << want.error().message();
        std::string diff = difference(whole, *want);
        if (!diff.empty()) return ::testing::AssertionFailure() << "whole table: " << diff;
        const MountTable matter(keep_mounts_that_matter(want->entries(), rules));
        diff = difference(**got, matter);
        if (!diff.empty()) return ::testing::AssertionFailure() << "mounts that matter: " << diff;
        return ::testing::AssertionSuccess();
    }

    void mount_tmpfs(const std::string& path, const std::string& options = "size=1m") {
        make_dirs(path);
        ASSERT_EQ(::mount("fh-tmp", path.c_str(), "tmpfs", 0, options.c_str()), 0) << path << ": " << errno_name(errno);
    }
    void bind(const std::string& from, const std::string& to, unsigned long flags = 0) {
        make_dirs(to);
        ASSERT_EQ(::mount(from.c_str(), to.c_str(), nullptr, MS_BIND | flags, nullptr), 0)
            << from << " -> " << to << ": " << errno_name(errno);
    }
    void propagation(const std::string& path, unsigned long mode) {
        ASSERT_EQ(::mount(nullptr, path.c_str(), nullptr, mode, nullptr), 0) << path << ": " << errno_name(errno);
    }

    // A TrackedEvent's mountpoint is valid during the call only.
    struct Seen {
        std::string kind;
        bool relevant;
        std::string why;
        std::string mountpoint;
    };
    Sandbox sb;
    RelevanceRules rules;
    std::unique_ptr<MountTracker> tracker;
    std::vector<Seen> events;
};

TEST_F(MountTrackerTest, TableEqualsMountinfoAfterEachChange) {
    ASSERT_TRUE(same_as_mountinfo()) << "as listed";
    EXPECT_GT(tracker->size(), 1u);

    // Names that mountinfo escapes (\040, \011, \012, \134).
    const std::string odd = sb.path("with space/tab\tnew\nline back\\slash");
    mount_tmpfs(odd);
    ASSERT_TRUE(same_as_mountinfo()) << "tmpfs at an escaped path";
    bind(odd, sb.path("bound copy"));
    ASSERT_TRUE(same_as_mountinfo()) << "bind";
    bind(sb.path("bound copy"), sb.path("bound copy"));
    ASSERT_TRUE(same_as_mountinfo()) << "a bind stacked on itself";

    // A FUSE source and a CSI-like read-only bind into a pod (bind, then
    // remount read-only: no fanotify event, mountinfo's POLLPRI only).
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    ASSERT_TRUE(same_as_mountinfo()) << "FUSE source";
    const std::string vol = sb.make_pod_volume("pod-1", "pvc 1");
    bind(fuse.source(), vol);
    ASSERT_TRUE(same_as_mountinfo()) << "bind of the FUSE source, still read-write";
    ASSERT_EQ(::mount(nullptr, vol.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr), 0);
    ASSERT_TRUE(same_as_mountinfo()) << "remounted read-only";
    ASSERT_TRUE(read_mountinfo(kSelfMountinfo)->topmost_at(vol)->flags.read_only);
    const std::string sub = sb.pod_subpath_path("pod-1", "pvc 1", "app", 0);
    csi_bind(fuse.source(), "sub", sub, true);
    ASSERT_TRUE(same_as_mountinfo()) << "subPath bind";
    // A mount that is not FUSE matters where it shares a FUSE mountpoint.
    mount_tmpfs(vol);
    ASSERT_TRUE(same_as_mountinfo()) << "tmpfs over the pod volume";
    ASSERT_EQ(::umount2(vol.c_str(), 0), 0) << errno_name(errno);
    ASSERT_TRUE(same_as_mountinfo()) << "tmpfs over the pod volume gone";

    // Shared and slave propagation. The propagation changes themselves are
    // not reported (see NonEventedChangesAreSeenAfterAResync); everything
    // they cause afterwards is.
    const std::string p = sb.path("prop/p"), q = sb.path("prop/q"), s = sb.path("prop/s"), t = sb.path("prop/t");
    mount_tmpfs(p);
    propagation(p, MS_PRIVATE);
    propagation(p, MS_SHARED);
    bind(p, q);  // a peer of p
    bind(p, s);
    propagation(s, MS_SLAVE);  // a slave of p's group
    tracker->request_resync();
    ASSERT_TRUE(same_as_mountinfo()) << "after a resync";
    mount_tmpfs(p + "/sub");  // propagates to q (peer) and s (slave)
    ASSERT_TRUE(same_as_mountinfo()) << "propagated mount";
    EXPECT_EQ(count_mounts_at(q + "/sub"), 1);
    EXPECT_EQ(count_mounts_at(s + "/sub"), 1);
    bind(s, t);  // a slave of the same master
    ASSERT_TRUE(same_as_mountinfo()) << "bind of a slave";
    ASSERT_EQ(lazy_umount(p), 0);  // q still holds the group
    ASSERT_TRUE(same_as_mountinfo()) << "lazy unmount of a shared subtree";
    ASSERT_EQ(lazy_umount(q), 0);  // the group's last member: s and t lose their master
    ASSERT_TRUE(same_as_mountinfo()) << "lazy unmount of the last peer of a master group";

    // An unmount propagated to a slave copy that another mount covers: the
    // kernel unmounts the copy and reparents the covering mount ("topper")
    // onto the copy's parent, without an event for it.
    const std::string tu = sb.path("tuck/u"), tv = sb.path("tuck/v");
    mount_tmpfs(sb.path("tuck"));
    propagation(sb.path("tuck"), MS_PRIVATE);
    mount_tmpfs(tu);
    propagation(tu, MS_SHARED);
    bind(tu, tv);                        // a peer of u
    mount_tmpfs(tu + "/d");              // propagates to v/d
    propagation(tv + "/d", MS_SLAVE);    // v/d: a slave of u/d's group
    mount_tmpfs(tv + "/d", "size=2m");   // covers v/d, not propagated
    tracker->request_resync();
    ASSERT_TRUE(same_as_mountinfo()) << "after a resync";
    ASSERT_EQ(::umount2((tu + "/d").c_str(), 0), 0) << errno_name(errno);
    ASSERT_TRUE(same_as_mountinfo()) << "unmount propagated under a covering mount";
    EXPECT_EQ(count_mounts_at(tv + "/d"), 1);

    // A subtree moved: its submounts' mountpoints move with it. (The kernel
    // moves no mount whose parent is shared, hence a private parent.)
    mount_tmpfs(sb.path("move"));
    propagation(sb.path("move"), MS_PRIVATE);
    const std::string m = sb.path("move/from"), n = sb.path("move/to dir");
    mount_tmpfs(m);
    mount_tmpfs(m + "/x");
    mount_tmpfs(m + "/x/y");
    make_dirs(n);
    ASSERT_TRUE(same_as_mountinfo()) << "before the move";
    ASSERT_EQ(::mount(m.c_str(), n.c_str(), nullptr, MS_MOVE, nullptr), 0) << errno_name(errno);
    ASSERT_TRUE(same_as_mountinfo()) << "moved";

    // A clone moved beneath the mount at a path (what a replace heal does):
    // the mount on top is reparented onto the clone without an event; then
    // the top is detached.
    const std::string top = n + "/x";
    {
        auto clone = sys::open_tree_clone(odd);
        ASSERT_TRUE(clone) << clone.error().message();
        auto at = sys::open_path_nofollow(top, true);
        ASSERT_TRUE(at) << at.error().message();
        Status s2 = sys::move_mount_fd(clone->get(), at->get(), true, top);
        ASSERT_TRUE(s2) << s2.error().message();
    }
    ASSERT_TRUE(same_as_mountinfo()) << "clone moved beneath";
    ASSERT_EQ(lazy_umount(top), 0);
    ASSERT_TRUE(same_as_mountinfo()) << "top detached from the clone";

    // A dead FUSE source lazily unmounted, and a new one.
    fuse.kill9();
    ASSERT_TRUE(same_as_mountinfo()) << "FUSE daemon killed (no mount change)";
    fuse.supervisor_restart(2);
    ASSERT_TRUE(same_as_mountinfo()) << "FUSE source restarted";

    // Mounted and gone again before the tracker looked: nothing to track.
    const std::string brief = sb.path("brief");
    mount_tmpfs(brief);
    ASSERT_EQ(::umount2(brief.c_str(), 0), 0);
    ASSERT_TRUE(same_as_mountinfo()) << "mounted and unmounted between two updates";

    // A whole subtree lazily unmounted (the sandbox's pods).
    ASSERT_EQ(lazy_umount(vol), 0);
    ASSERT_EQ(lazy_umount(sub), 0);
    ASSERT_TRUE(same_as_mountinfo()) << "pod mounts gone";
    ASSERT_EQ(lazy_umount(sb.path("move")), 0);
    ASSERT_TRUE(same_as_mountinfo());
    EXPECT_EQ(tracker->resyncs(), 3u) << "the initial listing and the two asked for";
}

// Propagation changes raise neither a fanotify event nor mountinfo's
// POLLPRI: the tracker sees them at the next resync (the daemon's safety
// timer), and says how much it found different.
TEST_F(MountTrackerTest, NonEventedChangesAreSeenAfterAResync) {
    const std::string a = sb.path("a");
    mount_tmpfs(a);
    propagation(a, MS_PRIVATE);
    ASSERT_TRUE(same_as_mountinfo());
    propagation(a, MS_SHARED);
    EXPECT_FALSE(same_as_mountinfo()) << "the kernel said nothing about it";
    tracker->request_resync();
    EXPECT_TRUE(same_as_mountinfo());
    EXPECT_EQ(tracker->last_resync_differences(), 1u);
    // A remount of a mount that is not a FUSE mount is not looked up again
    // on POLLPRI (the engine reads no flags of other mounts).
    ASSERT_EQ(::mount(nullptr, a.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr), 0);
    EXPECT_FALSE(same_as_mountinfo());
    tracker->request_resync();
    EXPECT_TRUE(same_as_mountinfo());
}

// Each event is reported once with its relevance: a mount outside the
// kubelet tree that is not FUSE and covers no source path is unrelated.
TEST_F(MountTrackerTest, EventsAreReportedWithTheirRelevance) {
    mount_tmpfs(sb.path("elsewhere"));
    auto s1 = tracker->update();
    EXPECT_EQ(s1.events, 1);
    EXPECT_EQ(s1.relevant, 0);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, "attached");
    EXPECT_FALSE(events[0].relevant);
    EXPECT_EQ(events[0].mountpoint, sb.path("elsewhere"));

    mount_tmpfs(sb.kubelet() + "/pods/u1/volumes/kubernetes.io~secret/token");
    auto s2 = tracker->update();
    EXPECT_EQ(s2.relevant, 1);
    EXPECT_EQ(events.back().why, "kubelet-tree");

    mount_tmpfs(sb.runtime() + "/ds");  // covers the source path
    EXPECT_EQ(tracker->update().relevant, 1);
    EXPECT_EQ(events.back().why, "source-path");

    FuseDaemon fuse{sb, sb.path("other/fuse")};
    fuse.start(1);
    EXPECT_GE(tracker->update().relevant, 1);
    EXPECT_EQ(events.back().why, "fuse-mount");
    fuse.terminate();  // unmounts: a detach of a tracked FUSE mount
    auto s3 = tracker->update();
    EXPECT_EQ(s3.relevant, 1);
    EXPECT_EQ(events.back().kind, "detached");
    EXPECT_EQ(events.back().why, "fuse-mount");

    ASSERT_EQ(lazy_umount(sb.path("elsewhere")), 0);
    auto s4 = tracker->update();
    EXPECT_EQ(s4.events, 1);
    EXPECT_EQ(s4.relevant, 0);
    // New source paths come from the engine after a reconcile.
    tracker->set_source_paths({sb.path("later/fuse")});
    mount_tmpfs(sb.path("later"));
    EXPECT_EQ(tracker->update().relevant, 1);
    EXPECT_TRUE(same_as_mountinfo());
}

// More events than the kernel queues (16384; 18000 here): the overflow is reported as
// relevant and the next table() lists the whole table again.
TEST_F(MountTrackerTest, OwnHealsAreNotWatchedAsYoungMounts) {
    // A FUSE mount someone else attaches is watched for a while (kubelet
    // may remount it read-only, which fanotify does not report); a clone the
    // daemon attached itself, noted first as the executor does, is not. The
    // tracker is opened after the source is mounted, so only the mounts
    // below can make it young.
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    auto opened = MountTracker::open(rules);
    ASSERT_TRUE(opened) << opened.error().message();
    MountTracker& t = **opened;
    t.update();
    ASSERT_FALSE(t.wants_mountinfo_poll());

    const std::string own = sb.make_pod_volume("pod-1", "pvc-1");
    auto clone = sys::open_tree_clone(fuse.source());
    ASSERT_TRUE(clone) << clone.error().message();
    auto id = identify_mount_of_fd(clone->get(), fuse.source());
    ASSERT_TRUE(id) << id.error().message();
    t.note_own_mount(id->unique_mount_id);
    auto to = sys::open_path_nofollow(own, true);
    ASSERT_TRUE(to) << to.error().message();
    ASSERT_TRUE(sys::move_mount_fd(clone->get(), to->get(), false, own));
    t.update();
    EXPECT_FALSE(t.wants_mountinfo_poll()) << "the daemon's own heal is watched as a young mount";
    auto table = t.table();
    ASSERT_TRUE(table) << table.error().message();
    const MountEntry* top = (*table)->topmost_at(own);
    ASSERT_NE(top, nullptr) << "the own mount is not tracked at all";
    EXPECT_EQ(top->fstype, "fuse.fh_testfs");

    const std::string theirs = sb.make_pod_volume("pod-2", "pvc-1");
    csi_bind(fuse.source(), "", theirs, true);
    t.update();
    EXPECT_TRUE(t.wants_mountinfo_poll()) << "kubelet's bind is not watched for its read-only remount";
    ASSERT_TRUE(same_as_mountinfo());
}

TEST_F(MountTrackerTest, QueueOverflowResyncs) {
    const std::string dir = sb.path("many");
    mount_tmpfs(dir);
    propagation(dir, MS_PRIVATE);
    int mounted = 0;
    for (int i = 0; i < 9000; ++i) {
        const std::string d = dir + "/" + std::to_string(i);
        ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
        ASSERT_EQ(::mount(dir.c_str(), d.c_str(), nullptr, MS_BIND, nullptr), 0) << errno_name(errno);
        ++mounted;
    }
    for (int i = 0; i < mounted; ++i) ASSERT_EQ(::umount2((dir + "/" + std::to_string(i)).c_str(), 0), 0);
    auto s = tracker->update();
    EXPECT_TRUE(s.overflow);
    EXPECT_TRUE(same_as_mountinfo());
    EXPECT_EQ(tracker->resyncs(), 2u);
    ASSERT_EQ(lazy_umount(dir), 0);
    EXPECT_TRUE(same_as_mountinfo());
}

// The heal worker asks for tables while the loop applies events: every
// table is one the kernel had (checked at the end), and nothing is lost,
// resyncs included.
TEST_F(MountTrackerTest, ConcurrentUpdatesAndTables) {
    const std::string dir = sb.path("churn");
    mount_tmpfs(dir);
    std::atomic<bool> stop{false};
    std::atomic<int> tables{0};
    std::thread worker([&] {
        int n = 0;
        while (!stop) {
            if (++n % 7 == 0) tracker->request_resync();
            auto t = tracker->table();
            if (t) ++tables;
        }
    });
    bool mounted[10] = {};
    for (int i = 0; i < 300; ++i) {
        const int k = (i * 7) % 10;
        const std::string d = dir + "/" + std::to_string(k);
        make_dirs(d);
        if (mounted[k]) ASSERT_EQ(lazy_umount(d), 0);
        else ASSERT_EQ(::mount("fh-tmp", d.c_str(), "tmpfs", 0, "size=64k"), 0);
        mounted[k] = !mounted[k];
        tracker->update();
    }
    stop = true;
    worker.join();
    EXPECT_GT(tables.load(), 0);
    EXPECT_TRUE(same_as_mountinfo());
}

} // namespace
} // namespace fh::test
