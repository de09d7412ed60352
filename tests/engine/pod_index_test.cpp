// Tests of PodIndex (engine/pod_index.h) on a fake kubelet tree under /tmp,
// kept current with inotify.
#include "engine/pod_index.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace fh {
namespace {

using testing_support::spit;
using testing_support::TempDir;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kCsi = "kubernetes.io~csi";



std::string vol_json(const std::string& driver, const std::string& handle, const std::string& spec,
                     const std::string& uid) {
    return R"({"attachmentID":"csi-0123","driverName":")" + driver + R"(","nodeName":"n1","podUID":")" + uid +
           R"(","specVolID":")" + spec + R"(","volumeHandle":")" + handle +
           R"(","volumeLifecycleMode":"Persistent","volumeName":")" + spec + R"("})";
}

enum class Write { Direct, Rename };

// A fake <root_dir> with a pods/ tree.
class Kubelet {
public:
    Kubelet() { fs::create_directories(pods()); }
    const std::string& root() const { return tmp_.path(); }
    std::string pods() const { return tmp_ / "pods"; }
    std::string pod_dir(const std::string& uid) const { return pods() + "/" + uid; }
    std::string vol_dir(const std::string& uid, const std::string& vol) const {
        return pod_dir(uid) + "/volumes/" + kCsi + "/" + vol;
    }
    std::string mount_path(const std::string& uid, const std::string& vol) const {
        return vol_dir(uid, vol) + "/mount";
    }
    std::string subpath(const std::string& uid, const std::string& vol, const std::string& ctr = "app",
                        int n = 0) const {
        return pod_dir(uid) + "/volume-subpaths/" + vol + "/" + ctr + "/" + std::to_string(n);
    }

    // Writes vol_data.json of a volume, creating the dirs (like `mkdir -p`).
    void write_vol_data(const std::string& uid, const std::string& vol, const std::string& text,
                        Write how = Write::Direct) {
        const std::string dir = vol_dir(uid, vol);
        fs::create_directories(dir);
        if (how == Write::Direct) {
            spit(dir + "/vol_data.json", text);
        } else {
            spit(dir + "/vol_data.json.tmp", text);
            fs::rename(dir + "/vol_data.json.tmp", dir + "/vol_data.json");
        }
    }
    // A volume as kubelet makes it: the dir, vol_data.json, an empty mount dir.
    void add_volume(const std::string& uid, const std::string& vol, const std::string& driver,
                    const std::string& handle, Write how = Write::Direct) {
        write_vol_data(uid, vol, vol_json(driver, handle, vol, uid), how);
        fs::create_directories(mount_path(uid, vol));
    }

private:
    TempDir tmp_;
};

// Handles inotify events until `done` holds or `timeout` passes. Nested
// directories appear in several events, so this loops.
bool pump_until(PodIndex& idx, const std::function<bool()>& done, std::chrono::milliseconds timeout = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        idx.handle_events();
        if (done()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        struct pollfd p {idx.fd(), POLLIN, 0};
        ::poll(&p, 1, 20);
    }
}

// Handles events until none arrive for `quiet`; returns how many were handled.
int settle(PodIndex& idx, std::chrono::milliseconds quiet = 200ms) {
    int total = 0;
    for (int i = 0; i < 200; ++i) {
        struct pollfd p {idx.fd(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(quiet.count())) <= 0) break;
        total += idx.handle_events();
    }
    return total;
}

// Watches for one pod with n CSI volumes: <uid>, volumes, kubernetes.io~csi, each <vol>.
std::size_t pod_watches(std::size_t volumes) { return 3 + volumes; }

class PodIndexTest : public ::testing::Test {
protected:
    void SetUp() override {
        kl_.add_volume("uid-1", "pvc-1", "fuse.csi.fluid.io", "default-ds");
        kl_.add_volume("uid-1", "pvc-2", "csi.juicefs.com", "jfs-handle");
        kl_.add_volume("uid-2", "pvc-1", "fuse.csi.fluid.io", "other-ds");
        // Other plugins are not CSI volumes and are not descended into.
        fs::create_directories(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/cache");
        spit(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/cache/vol_data.json",
             vol_json("bogus", "bogus", "cache", "uid-2"));
        fs::create_directories(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~projected/kube-api-access");
        fs::create_directories(kl_.pod_dir("uid-2") + "/containers/app");
        fs::create_directories(kl_.pod_dir("uid-2") + "/plugins/kubernetes.io~empty-dir/wrapped");
        fs::create_directories(kl_.subpath("uid-1", "pvc-1"));
        spit(kl_.pods() + "/not-a-dir", "x");
        idx_.rescan();
        ASSERT_GE(idx_.fd(), 0) << "inotify is not available";
    }
    std::size_t base_watches() const { return 1 + pod_watches(2) + pod_watches(1); }

    Kubelet kl_;
    PodIndex idx_{kl_.root()};
};

TEST_F(PodIndexTest, RescanIndexesTheCsiVolumes) {
    EXPECT_EQ(idx_.volumes(), 3u);
    EXPECT_EQ(idx_.watches(), base_watches());
    EXPECT_FALSE(idx_.degraded());

    auto v = idx_.lookup(kl_.mount_path("uid-1", "pvc-1"));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(v->driver_name, "fuse.csi.fluid.io");
    EXPECT_EQ(v->volume_handle, "default-ds");
    EXPECT_EQ(v->spec_vol_id, "pvc-1");
    EXPECT_EQ(v->pod_uid, "uid-1");

    auto w = idx_.lookup(kl_.mount_path("uid-1", "pvc-2"));
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->driver_name, "csi.juicefs.com");
    EXPECT_EQ(w->volume_handle, "jfs-handle");

    // Same volume name in another pod: that pod's own file.
    auto o = idx_.lookup(kl_.mount_path("uid-2", "pvc-1"));
    ASSERT_TRUE(o.has_value());
    EXPECT_EQ(o->volume_handle, "other-ds");
    EXPECT_EQ(o->pod_uid, "uid-2");

    // The volume dir itself names the volume too.
    auto d = idx_.lookup(kl_.vol_dir("uid-1", "pvc-2"));
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->volume_handle, "jfs-handle");
}

TEST_F(PodIndexTest, SubpathTargetsResolveToTheirVolume) {
    auto v = idx_.lookup(kl_.subpath("uid-1", "pvc-1", "app", 0));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(v->volume_handle, "default-ds");
    auto w = idx_.lookup(kl_.subpath("uid-1", "pvc-2", "sidecar", 3));
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->volume_handle, "jfs-handle");
    auto o = idx_.lookup(kl_.subpath("uid-2", "pvc-1", "app", 1));
    ASSERT_TRUE(o.has_value());
    EXPECT_EQ(o->volume_handle, "other-ds");
    EXPECT_FALSE(idx_.lookup(kl_.subpath("uid-2", "pvc-2")).has_value());
}

TEST_F(PodIndexTest, UnknownTargetsAreNotFound) {
    EXPECT_FALSE(idx_.lookup(kl_.mount_path("uid-1", "pvc-9")).has_value());
    EXPECT_FALSE(idx_.lookup(kl_.mount_path("uid-9", "pvc-1")).has_value());
    EXPECT_FALSE(idx_.lookup(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/cache/mount").has_value());
    EXPECT_FALSE(idx_.lookup(kl_.mount_path("uid-1", "pvc-1") + "/deeper").has_value());
    EXPECT_FALSE(idx_.lookup("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/pvc-1/mount").has_value());
    EXPECT_FALSE(idx_.lookup(kl_.pods()).has_value());
    EXPECT_FALSE(idx_.lookup("").has_value());
}

TEST_F(PodIndexTest, RescanIsIdempotent) {
    idx_.rescan();
    idx_.rescan();
    EXPECT_EQ(idx_.volumes(), 3u);
    EXPECT_EQ(idx_.watches(), base_watches());
    // The watches removed by rescan report IN_IGNORED; handling those must
    // not drop the new watches.
    settle(idx_);
    EXPECT_EQ(idx_.watches(), base_watches());
    kl_.add_volume("uid-3", "pvc-x", "d", "after-rescan");
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-3", "pvc-x")).has_value(); }));
}

TEST_F(PodIndexTest, NewPodWithMkdirPAndPlainWrite) {
    kl_.add_volume("uid-3", "pvc-new", "new.csi", "new-handle", Write::Direct);
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-3", "pvc-new")).has_value(); }))
        << "volumes: " << idx_.volumes() << " watches: " << idx_.watches();
    auto v = idx_.lookup(kl_.mount_path("uid-3", "pvc-new"));
    EXPECT_EQ(v->driver_name, "new.csi");
    EXPECT_EQ(v->volume_handle, "new-handle");
    EXPECT_EQ(v->pod_uid, "uid-3");
    settle(idx_);
    EXPECT_EQ(idx_.volumes(), 4u);
    EXPECT_EQ(idx_.watches(), base_watches() + pod_watches(1));
}

TEST_F(PodIndexTest, NewPodWithMkdirPAndRenamedWrite) {
    kl_.add_volume("uid-4", "pvc-ren", "ren.csi", "ren-handle", Write::Rename);
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-4", "pvc-ren")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.subpath("uid-4", "pvc-ren"))->volume_handle, "ren-handle");
    settle(idx_);
    EXPECT_EQ(idx_.volumes(), 4u);
    EXPECT_EQ(idx_.watches(), base_watches() + pod_watches(1));
}

TEST_F(PodIndexTest, VolDataWrittenAfterTheDirIsWatched) {
    // The dirs first; the index catches up and watches the volume dir ...
    fs::create_directories(kl_.vol_dir("uid-5", "pvc-late"));
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.watches() == base_watches() + pod_watches(1); }))
        << "watches: " << idx_.watches();
    EXPECT_FALSE(idx_.lookup(kl_.mount_path("uid-5", "pvc-late")).has_value());
    EXPECT_EQ(idx_.volumes(), 3u);
    // ... then vol_data.json: plainly written, then replaced by a rename.
    spit(kl_.vol_dir("uid-5", "pvc-late") + "/vol_data.json", vol_json("late.csi", "h1", "pvc-late", "uid-5"));
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-5", "pvc-late")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-5", "pvc-late"))->volume_handle, "h1");
    kl_.write_vol_data("uid-5", "pvc-late", vol_json("late.csi", "h2", "pvc-late", "uid-5"), Write::Rename);
    ASSERT_TRUE(pump_until(idx_, [&] {
        auto v = idx_.lookup(kl_.mount_path("uid-5", "pvc-late"));
        return v && v->volume_handle == "h2";
    }));
}

TEST_F(PodIndexTest, NewVolumeInAnExistingPod) {
    kl_.add_volume("uid-2", "pvc-3", "third.csi", "third");
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-2", "pvc-3")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-2", "pvc-3"))->driver_name, "third.csi");
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-2", "pvc-1"))->volume_handle, "other-ds");
    settle(idx_);
    EXPECT_EQ(idx_.volumes(), 4u);
    EXPECT_EQ(idx_.watches(), base_watches() + 1);
}

TEST_F(PodIndexTest, VolDataRewrittenInPlaceIsReloaded) {
    spit(kl_.vol_dir("uid-1", "pvc-2") + "/vol_data.json", vol_json("csi.juicefs.com", "rewritten", "pvc-2", "uid-1"));
    ASSERT_TRUE(pump_until(idx_, [&] {
        auto v = idx_.lookup(kl_.mount_path("uid-1", "pvc-2"));
        return v && v->volume_handle == "rewritten";
    }));
    EXPECT_EQ(idx_.volumes(), 3u);
}

TEST_F(PodIndexTest, DeletedPodDisappears) {
    fs::remove_all(kl_.pod_dir("uid-1"));
    ASSERT_TRUE(pump_until(idx_, [&] {
        return !idx_.lookup(kl_.mount_path("uid-1", "pvc-1")).has_value() &&
               !idx_.lookup(kl_.mount_path("uid-1", "pvc-2")).has_value();
    }));
    settle(idx_);
    EXPECT_EQ(idx_.volumes(), 1u);
    EXPECT_EQ(idx_.watches(), 1 + pod_watches(1)) << "watches of the deleted pod were not dropped";
    EXPECT_FALSE(idx_.lookup(kl_.subpath("uid-1", "pvc-1")).has_value());
    EXPECT_TRUE(idx_.lookup(kl_.mount_path("uid-2", "pvc-1")).has_value());

    // The same uid coming back (a static pod recreated) is indexed afresh.
    kl_.add_volume("uid-1", "pvc-1", "back.csi", "back");
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-1", "pvc-1")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-1", "pvc-1"))->volume_handle, "back");
    settle(idx_);
    EXPECT_EQ(idx_.watches(), 1 + pod_watches(1) + pod_watches(1));
}

// Directories renamed in or out of the watched tree are counted (the mounts
// below them change path without a mount event); files are not.
TEST_F(PodIndexTest, RenamedDirectoriesAreCounted) {
    settle(idx_);
    const std::uint64_t before = idx_.dirs_renamed();
    spit(kl_.vol_dir("uid-1", "pvc-1") + "/x.tmp", "{}");
    fs::rename(kl_.vol_dir("uid-1", "pvc-1") + "/x.tmp", kl_.vol_dir("uid-1", "pvc-1") + "/x.json");
    settle(idx_);
    EXPECT_EQ(idx_.dirs_renamed(), before) << "a file renamed";
    const TempDir elsewhere;
    fs::rename(kl_.pod_dir("uid-1"), elsewhere / "uid-1");
    settle(idx_);
    EXPECT_EQ(idx_.dirs_renamed(), before + 1) << "a pod dir renamed out of the tree";
    fs::rename(elsewhere / "uid-1", kl_.pod_dir("uid-9"));
    settle(idx_);
    EXPECT_EQ(idx_.dirs_renamed(), before + 2) << "and back in under another name";
    EXPECT_TRUE(idx_.lookup(kl_.mount_path("uid-9", "pvc-1")).has_value());
}

TEST_F(PodIndexTest, DeletedVolumeDirDisappears) {
    fs::remove_all(kl_.vol_dir("uid-1", "pvc-2"));
    ASSERT_TRUE(pump_until(idx_, [&] { return !idx_.lookup(kl_.mount_path("uid-1", "pvc-2")).has_value(); }));
    settle(idx_);
    EXPECT_TRUE(idx_.lookup(kl_.mount_path("uid-1", "pvc-1")).has_value());
    EXPECT_EQ(idx_.volumes(), 2u);
    EXPECT_EQ(idx_.watches(), base_watches() - 1);
}

TEST_F(PodIndexTest, CorruptVolDataIsIgnored) {
    // At rescan time: bad JSON, a missing required field, a wrong type.
    kl_.write_vol_data("uid-6", "bad-json", R"({"driverName":"x","volumeHan)");
    kl_.write_vol_data("uid-6", "no-handle", R"({"driverName":"x","specVolID":"y"})");
    kl_.write_vol_data("uid-6", "wrong-type", R"({"driverName":1,"volumeHandle":"h","specVolID":"y"})");
    kl_.write_vol_data("uid-6", "empty", "");
    idx_.rescan();
    for (const char* vol : {"bad-json", "no-handle", "wrong-type", "empty"})
        EXPECT_FALSE(idx_.lookup(kl_.mount_path("uid-6", vol)).has_value()) << vol;
    EXPECT_EQ(idx_.volumes(), 3u);
    // Their dirs are still watched, so a fixed file is picked up.
    EXPECT_EQ(idx_.watches(), base_watches() + pod_watches(4));
    kl_.write_vol_data("uid-6", "bad-json", vol_json("fixed.csi", "fixed", "bad-json", "uid-6"), Write::Rename);
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-6", "bad-json")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-6", "bad-json"))->volume_handle, "fixed");

    // Through events: a good file turned corrupt is dropped, not kept stale.
    spit(kl_.vol_dir("uid-1", "pvc-1") + "/vol_data.json", "{garbage");
    ASSERT_TRUE(pump_until(idx_, [&] { return !idx_.lookup(kl_.mount_path("uid-1", "pvc-1")).has_value(); }));
    EXPECT_TRUE(idx_.lookup(kl_.mount_path("uid-1", "pvc-2")).has_value());
}

TEST_F(PodIndexTest, VolDataWithoutPodUidIsAccepted) {
    kl_.write_vol_data("uid-7", "old-kubelet", R"({"driverName":"d","volumeHandle":"h","specVolID":"s"})");
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-7", "old-kubelet")).has_value(); }));
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-7", "old-kubelet"))->pod_uid, "");
}

TEST_F(PodIndexTest, NeverDescendsIntoTheMountDir) {
    // A tree inside a volume's mount dir, with files named like kubelet's.
    const std::string mnt = kl_.mount_path("uid-1", "pvc-1");
    fs::create_directories(mnt + "/pods/x/volumes/" + kCsi + "/y");
    spit(mnt + "/pods/x/volumes/" + kCsi + "/y/vol_data.json", vol_json("inner", "inner", "y", "x"));
    spit(mnt + "/vol_data.json", vol_json("inner", "inner-top", "pvc-1", "uid-1"));
    fs::create_directories(mnt + "/volumes/" + kCsi + "/z");
    spit(mnt + "/volumes/" + kCsi + "/z/vol_data.json", vol_json("inner", "inner-z", "z", "uid-1"));
    settle(idx_);
    idx_.rescan();
    EXPECT_EQ(idx_.volumes(), 3u);
    EXPECT_EQ(idx_.watches(), base_watches());
    EXPECT_EQ(idx_.lookup(mnt)->volume_handle, "default-ds");
    settle(idx_);  // the IN_IGNORED of the watches the rescan replaced

    // Changes below mount/ after the scan raise no event at all.
    fs::create_directories(mnt + "/later/a/b");
    spit(mnt + "/later/vol_data.json", vol_json("inner", "later", "pvc-1", "uid-1"));
    spit(mnt + "/vol_data.json", vol_json("inner", "inner-top-2", "pvc-1", "uid-1"));
    fs::rename(mnt + "/vol_data.json", mnt + "/moved.json");
    fs::remove_all(mnt + "/pods");
    EXPECT_EQ(settle(idx_), 0) << "the index watches something inside " << mnt;
    EXPECT_EQ(idx_.volumes(), 3u);
    EXPECT_EQ(idx_.watches(), base_watches());
    EXPECT_EQ(idx_.lookup(mnt)->volume_handle, "default-ds");
    EXPECT_FALSE(idx_.lookup(kl_.root() + "/pods/uid-1/volumes/" + kCsi + "/pvc-1/mount/pods/x/volumes/" + kCsi +
                             "/y/mount")
                     .has_value());

    // A mount dir created after the volume dir is watched is not entered either.
    kl_.write_vol_data("uid-8", "pvc-m", vol_json("m.csi", "m", "pvc-m", "uid-8"));
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-8", "pvc-m")).has_value(); }));
    settle(idx_);
    const std::size_t w = idx_.watches();
    fs::create_directories(kl_.mount_path("uid-8", "pvc-m") + "/deep/er");
    spit(kl_.mount_path("uid-8", "pvc-m") + "/vol_data.json", vol_json("inner", "x", "pvc-m", "uid-8"));
    EXPECT_EQ(settle(idx_), 0);
    EXPECT_EQ(idx_.watches(), w);
    EXPECT_EQ(idx_.lookup(kl_.mount_path("uid-8", "pvc-m"))->volume_handle, "m");
}

TEST_F(PodIndexTest, OtherPluginsAndPodDirsAreNotWatched) {
    // Creating entries under unwatched dirs raises no event.
    fs::create_directories(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/new");
    spit(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/new/vol_data.json",
         vol_json("bogus", "bogus", "new", "uid-2"));
    fs::create_directories(kl_.pod_dir("uid-2") + "/containers/app/x");
    const int events = settle(idx_);
    // volumes/ is watched, so the new plugin-level entries below it do not
    // show (only kubernetes.io~csi is descended into).
    EXPECT_EQ(events, 0);
    EXPECT_EQ(idx_.watches(), base_watches());
    EXPECT_EQ(idx_.volumes(), 3u);
    EXPECT_FALSE(idx_.lookup(kl_.pod_dir("uid-2") + "/volumes/kubernetes.io~empty-dir/new/mount").has_value());
}

TEST_F(PodIndexTest, QueueOverflowRescans) {
    const int max_queued = [] {
        std::ifstream in("/proc/sys/fs/inotify/max_queued_events");
        int v = 0;
        in >> v;
        return v;
    }();
    if (max_queued <= 0 || max_queued > 100000)
        GTEST_SKIP() << "fs.inotify.max_queued_events is " << max_queued << ": too large to overflow quickly";
    // Renaming a plain file in pods/ back and forth raises IN_MOVED_FROM and
    // IN_MOVED_TO each time (cheaper than creating files): overflow the queue.
    const std::string a = kl_.pods() + "/junk-a", b = kl_.pods() + "/junk-b";
    spit(a, "x");
    for (int i = 0; i < max_queued / 2 + 100; ++i)
        ASSERT_EQ(::rename(i % 2 ? b.c_str() : a.c_str(), i % 2 ? a.c_str() : b.c_str()), 0) << i;
    // A pod created once the queue is full: its events are dropped, so only
    // the rescan the overflow triggers can find it.
    kl_.add_volume("uid-ovf", "pvc-o", "o.csi", "overflowed");
    ASSERT_TRUE(pump_until(idx_, [&] { return idx_.lookup(kl_.mount_path("uid-ovf", "pvc-o")).has_value(); }, 10s));
    settle(idx_);
    EXPECT_EQ(idx_.volumes(), 4u);
    EXPECT_EQ(idx_.watches(), base_watches() + pod_watches(1));
}

// kubelet not started yet: <root_dir> itself is missing. The index waits on
// the deepest existing ancestor and fills itself, through inotify alone, once
// kubelet creates the tree (mkdir -p, one level at a time).
TEST(PodIndex, MissingRootDirIsWaitedFor) {
    TempDir tmp;
    const std::string root = tmp / "var/lib/kubelet";
    PodIndex idx(root);
    idx.rescan();
    EXPECT_TRUE(idx.waiting_for_pods_dir());
    EXPECT_EQ(idx.volumes(), 0u);
    EXPECT_EQ(idx.watches(), 1u) << "one watch, on the deepest ancestor that exists";
    fs::create_directories(root + "/pods/u/volumes/" + kCsi + "/v");
    spit(root + "/pods/u/volumes/" + kCsi + "/v/vol_data.json", vol_json("d", "h", "v", "u"));
    ASSERT_TRUE(pump_until(idx, [&] { return idx.volumes() == 1u; }));
    EXPECT_FALSE(idx.waiting_for_pods_dir());
    ASSERT_TRUE(idx.lookup(root + "/pods/u/volumes/" + kCsi + "/v/mount").has_value());
    EXPECT_EQ(idx.watches(), 1 + pod_watches(1)) << "the ancestor watch is gone";

    // pods/ removed (a node reset): waiting again, then indexing again.
    fs::remove_all(root + "/pods");
    ASSERT_TRUE(pump_until(idx, [&] { return idx.waiting_for_pods_dir(); }));
    EXPECT_EQ(idx.volumes(), 0u);
    fs::create_directories(root + "/pods/w/volumes/" + kCsi + "/x");
    spit(root + "/pods/w/volumes/" + kCsi + "/x/vol_data.json", vol_json("d", "h2", "x", "w"));
    ASSERT_TRUE(pump_until(idx, [&] { return idx.volumes() == 1u; }));
    EXPECT_TRUE(idx.lookup(root + "/pods/w/volumes/" + kCsi + "/x/mount").has_value());
}

} // namespace
} // namespace fh
