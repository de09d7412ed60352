// Tests of the relevance of a mount table change (core/mount_relevance.h):
// which mount events fuse-healer must reconcile for, and which it may drop.
#include "core/mount_relevance.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <string>

namespace fh {
namespace {

const std::string K = "/var/lib/kubelet";
const std::string SRC = "/run/fh/ds1/fuse";
const std::string SRC2 = "/runtime/ds2/fuse";

MountEntry mount(const std::string& mountpoint, const std::string& fstype = "tmpfs") {
    MountEntry e;
    e.mount_id = 100;
    e.parent_id = 1;
    e.mountpoint = mountpoint;
    e.fstype = fstype;
    e.root = "/";
    return e;
}

RelevanceRules rules(std::vector<std::string> sources = {SRC2, SRC, SRC}) {
    MatchRules m;
    m.root_dir = K;
    return make_relevance_rules(m, std::move(sources));
}

TEST(MountRelevance, RulesSortAndDeduplicateTheSourcePaths) {
    EXPECT_EQ(rules().source_paths, (std::vector<std::string>{SRC, SRC2}));
    EXPECT_EQ(rules().root_dir, K);
    EXPECT_EQ(rules().fs_types, (std::vector<std::string>{"fuse", "fuse.*"}));
}

TEST(MountRelevance, FuseMountsAnywhereMatter) {
    const RelevanceRules r = rules();
    EXPECT_EQ(mount_relevance(mount("/mnt/anything", "fuse.sshfs"), r), MountRelevance::FuseMount);
    EXPECT_EQ(mount_relevance(mount("/mnt/anything", "fuse"), r), MountRelevance::FuseMount);
    EXPECT_EQ(mount_relevance(mount(K + "/pods/u1/volumes/x/pv/mount", "fuse.juicefs"), r),
              MountRelevance::FuseMount);
    // Only the configured globs: fuseblk is not "fuse" nor "fuse.*".
    EXPECT_EQ(mount_relevance(mount("/mnt/usb", "fuseblk"), r), MountRelevance::Unrelated);
    MatchRules only;
    only.root_dir = K;
    only.fs_types = {"fuse.juicefs"};
    EXPECT_EQ(mount_relevance(mount("/mnt/x", "fuse.sshfs"), make_relevance_rules(only, {})),
              MountRelevance::Unrelated);
}

TEST(MountRelevance, AnyMountInOrOverTheKubeletTreeMatters) {
    const RelevanceRules r = rules();
    EXPECT_EQ(mount_relevance(mount(K + "/pods/u1/volumes/kubernetes.io~secret/token"), r),
              MountRelevance::KubeletTree);
    EXPECT_EQ(mount_relevance(mount(K), r), MountRelevance::KubeletTree) << "kubelet's bind of its own root";
    EXPECT_EQ(mount_relevance(mount("/var/lib"), r), MountRelevance::KubeletTree) << "covers the whole tree";
    // Component-wise: a sibling with the same prefix is not in the tree.
    EXPECT_EQ(mount_relevance(mount("/var/lib/kubelet-old/x"), r), MountRelevance::Unrelated);
    EXPECT_EQ(mount_relevance(mount("/var/lib/docker/overlay2/abc/merged", "overlay"), r),
              MountRelevance::Unrelated);
}

TEST(MountRelevance, MountsAtOrAboveASourcePathMatterButNotBelowIt) {
    const RelevanceRules r = rules();
    EXPECT_EQ(mount_relevance(mount(SRC), r), MountRelevance::SourcePath);
    EXPECT_EQ(mount_relevance(mount("/run/fh"), r), MountRelevance::SourcePath) << "covers the source";
    EXPECT_EQ(mount_relevance(mount("/runtime"), r), MountRelevance::SourcePath);
    EXPECT_EQ(mount_relevance(mount(SRC + "/sub"), r), MountRelevance::Unrelated) << "inside the source";
    // Prefix-sharing neighbours sort between "dir" and "dir/": still found
    // or rejected correctly.
    EXPECT_EQ(mount_relevance(mount("/run/fh/ds1/fuse-2"), r), MountRelevance::Unrelated);
    EXPECT_EQ(mount_relevance(mount("/run/fh/ds1/fus"), r), MountRelevance::Unrelated);
    EXPECT_EQ(mount_relevance(mount("/run/fh/ds"), r), MountRelevance::Unrelated);
    EXPECT_EQ(mount_relevance(mount("/run/fh/ds1"), rules({"/run/fh/ds1-x/fuse", "/run/fh/ds1.y", SRC})),
              MountRelevance::SourcePath);
    EXPECT_EQ(mount_relevance(mount("/run/fh/ds1"), rules({"/run/fh/ds1-x/fuse", "/run/fh/ds1.y"})),
              MountRelevance::Unrelated);
    EXPECT_EQ(mount_relevance(mount("/"), rules({SRC})), MountRelevance::KubeletTree);
    EXPECT_EQ(mount_relevance(mount("/run/user/1000"), rules({})), MountRelevance::Unrelated);
}

TEST(MountRelevance, OrderOfReasons) {
    // A FUSE mount in the kubelet tree at a source path says FuseMount.
    RelevanceRules r = rules({K + "/plugins/x/globalmount"});
    EXPECT_EQ(mount_relevance(mount(K + "/plugins/x/globalmount", "fuse.x"), r), MountRelevance::FuseMount);
    EXPECT_EQ(mount_relevance(mount(K + "/plugins/x/globalmount"), r), MountRelevance::KubeletTree);
}

TEST(MountRelevance, ChangesLookAtBothSides) {
    const RelevanceRules r = rules();
    const MountEntry unrelated = mount("/var/lib/docker/overlay2/abc/merged", "overlay");
    const MountEntry fuse = mount("/mnt/fuse", "fuse.x");
    const MountEntry kube = mount(K + "/pods/u1/volumes/kubernetes.io~empty-dir/cache");
    // Attach and detach of an unrelated mount; an event for a mount that was
    // already gone when it was looked up (no side known).
    EXPECT_EQ(change_relevance(nullptr, &unrelated, r), MountRelevance::Unrelated);
    EXPECT_EQ(change_relevance(&unrelated, nullptr, r), MountRelevance::Unrelated);
    EXPECT_EQ(change_relevance(nullptr, nullptr, r), MountRelevance::Unrelated);
    // A detach of a tracked FUSE or kubelet mount.
    EXPECT_EQ(change_relevance(&fuse, nullptr, r), MountRelevance::FuseMount);
    EXPECT_EQ(change_relevance(&kube, nullptr, r), MountRelevance::KubeletTree);
    // A move into or out of the kubelet tree, or onto a source path.
    EXPECT_EQ(change_relevance(&unrelated, &kube, r), MountRelevance::KubeletTree);
    EXPECT_EQ(change_relevance(&kube, &unrelated, r), MountRelevance::KubeletTree);
    const MountEntry at_source = mount(SRC);
    EXPECT_EQ(change_relevance(&unrelated, &at_source, r), MountRelevance::SourcePath);
    EXPECT_EQ(change_relevance(&unrelated, &unrelated, r), MountRelevance::Unrelated);
}

TEST(MountRelevance, TheTwoFieldFormsDecideAsTheEntryForms) {
    // The tracker keeps mounts in a compact form and asks with fstype and
    // mountpoint alone: every other field must be irrelevant to both.
    const RelevanceRules r = rules();
    for (const MountEntry& e :
         {mount("/mnt/fuse", "fuse.x"), mount(K + "/pods/u1/volumes/kubernetes.io~empty-dir/cache"), mount(SRC),
          mount(SRC + "/inner"), mount("/var/lib"), mount("/var/lib/docker/overlay2/abc/merged", "overlay")}) {
        MountEntry other = e;  // every field but the two changed
        other.mount_id = 7;
        other.parent_id = 8;
        other.device = makedev(9, 9);
        other.root = "/elsewhere";
        other.source = "src";
        other.flags.read_only = true;
        other.propagation.shared_group = 3;
        EXPECT_EQ(mount_relevance(e.fstype, e.mountpoint, r), mount_relevance(e, r)) << e.mountpoint;
        EXPECT_EQ(mount_relevance(other, r), mount_relevance(e, r)) << e.mountpoint;
        for (bool shares : {false, true}) {
            EXPECT_EQ(matters_to_plans(e.fstype, e.mountpoint, r, shares), matters_to_plans(e, r, shares))
                << e.mountpoint;
            EXPECT_EQ(matters_to_plans(other, r, shares), matters_to_plans(e, r, shares)) << e.mountpoint;
        }
    }
}

TEST(MountRelevance, Names) {
    EXPECT_STREQ(to_string(MountRelevance::Unrelated), "unrelated");
    EXPECT_STREQ(to_string(MountRelevance::FuseMount), "fuse-mount");
    EXPECT_STREQ(to_string(MountRelevance::KubeletTree), "kubelet-tree");
    EXPECT_STREQ(to_string(MountRelevance::SourcePath), "source-path");
}

// --- mounts that matter to plans ------------------------------------------------

TEST(MountsThatMatter, FuseMountsTheirStacksSourcesAndCoversOfTheTreeAreKept) {
    const RelevanceRules r = rules();
    const std::string vol = K + "/pods/u1/volumes/kubernetes.io~csi/pv1/mount";
    EXPECT_TRUE(matters_to_plans(mount("/mnt/anything", "fuse.sshfs"), r, false));
    EXPECT_TRUE(matters_to_plans(mount(vol), r, true));  // a tmpfs over (or under) a target
    EXPECT_TRUE(matters_to_plans(mount(SRC), r, false));  // what a dead source left at its path
    EXPECT_TRUE(matters_to_plans(mount("/var/lib"), r, false));  // covers the whole tree
    EXPECT_TRUE(matters_to_plans(mount(K), r, false));
    // A tmpfs in the tree at no FUSE mount's path (a projected token, a
    // secret), below a source, or anywhere else: nothing plans from it.
    EXPECT_FALSE(matters_to_plans(mount(K + "/pods/u1/volumes/kubernetes.io~projected/token"), r, false));
    EXPECT_FALSE(matters_to_plans(mount(SRC + "/inner"), r, false));
    EXPECT_FALSE(matters_to_plans(mount("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs", "overlay"),
                                  r, false));
}

TEST(MountsThatMatter, KeepsTheOrderAndFindsSharedMountpointsItself) {
    const std::string vol = K + "/pods/u1/volumes/kubernetes.io~csi/pv1/mount";
    // Short mountpoints (in the strings' own buffers) and long ones: the
    // decision is taken before anything is moved.
    std::vector<MountEntry> in = {mount("/a"), mount(vol), mount("/b", "fuse.x"), mount(vol, "fuse.x"),
                                  mount("/b"), mount(K + "/pods/u1/plain"), mount(SRC)};
    for (std::size_t i = 0; i < in.size(); ++i) in[i].mount_id = static_cast<int>(100 + i);
    const std::vector<MountEntry> kept = keep_mounts_that_matter(in, rules());
    std::vector<int> ids;
    for (const MountEntry& e : kept) ids.push_back(e.mount_id);
    EXPECT_EQ(ids, (std::vector<int>{101, 102, 103, 104, 106}));
    EXPECT_EQ(kept[0].mountpoint, vol);
    EXPECT_EQ(kept[3].mountpoint, "/b");
}

} // namespace
} // namespace fh
