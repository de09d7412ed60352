// Tests of the mountinfo parser and MountTable on real captures (see
// tests/data/README.md for how each file was made and what it shows).
#include "core/mountinfo.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fh {
namespace {

dev_t dev(unsigned maj, unsigned min) { return makedev(maj, min); }
// glibc's major()/minor() macros would rewrite MountEntry::major()/minor().
#undef major
#undef minor

const std::string kData = FH_TEST_DATA_DIR;
const std::string T = "/tmp/fhcap";
const std::string K = T + "/kubelet";
const std::string SRC = T + "/runtime/ds1/fuse";
const std::string SRC2 = T + "/runtime/ds2/fuse";
const std::string POD1 = "0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01";
const std::string POD2 = "5d2e7a90-13c4-4b8f-8e3d-2c7a9f04b6e2";
const std::string POD3 = "9e8d7c6b-5a4f-4e3d-8c1b-0a9f8e7d6c5b";
const std::string GLOBAL = K + "/plugins/kubernetes.io/csi/fuse.csi.fluid.io/"
                               "3f1c9a8e5b2d4c6f8a0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f1a3c5e7b9d1f3a/"
                               "globalmount";
const std::string VOL1 = K + "/pods/" + POD1 + "/volumes/kubernetes.io~csi/pvc-1/mount";
const std::string SUB1 = K + "/pods/" + POD1 + "/volume-subpaths/pvc-1/app/0";
const std::string VOL1B = K + "/pods/" + POD1 + "/volumes/kubernetes.io~csi/pvc-2/mount";
const std::string VOL2 = K + "/pods/" + POD2 + "/volumes/kubernetes.io~csi/pvc-1/mount";
const std::string VOL3 = K + "/pods/" + POD3 + "/volumes/kubernetes.io~csi/my vol\\1/mount";
const std::string SUB3 = K + "/pods/" + POD3 + "/volume-subpaths/my vol\\1/tab\tand\nnewline/0";
const std::string FUSE_OPTS = "rw,user_id=0,group_id=0,default_permissions,allow_other";

std::string file_text(const std::string& name) {
    std::ifstream in(kData + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

MountTable load(const std::string& name) {
    auto r = read_mountinfo(kData + "/" + name);
    if (!r) {
        ADD_FAILURE() << r.error().message();
        return {};
    }
    return *r;
}

std::vector<int> ids(const std::vector<const MountEntry*>& mounts) {
    std::vector<int> out;
    for (const MountEntry* m : mounts) out.push_back(m->mount_id);
    return out;
}

// Returns the lines of `text` (without their newlines).
std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

std::string join(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

// --- parsing of real captures ------------------------------------------------

TEST(Mountinfo, LiveTreeCountsAndFields) {
    MountTable t = load("kubelet-live.mountinfo");
    ASSERT_EQ(t.size(), 30u);
    EXPECT_EQ(t.entries().front().mount_id, 43);
    EXPECT_EQ(t.entries().back().mount_id, 72);

    const MountEntry* src = t.find_id(64);
    ASSERT_NE(src, nullptr);
    EXPECT_EQ(src->parent_id, 63);
    EXPECT_EQ(src->device, dev(0, 40));
    EXPECT_EQ(src->major(), 0u);
    EXPECT_EQ(src->minor(), 40u);
    EXPECT_EQ(src->root, "/");
    EXPECT_EQ(src->mountpoint, SRC);
    EXPECT_EQ(src->fstype, "fuse");
    EXPECT_EQ(src->source, T + "/data/ds1");
    EXPECT_EQ(src->vfs_options, "rw,nosuid,nodev,relatime");
    EXPECT_EQ(src->fs_options, FUSE_OPTS);
    EXPECT_EQ(src->flags, (MountFlags{false, true, true, false}));
    EXPECT_EQ(src->propagation.shared_group, 2);
    EXPECT_FALSE(src->propagation.is_slave());

    const MountEntry* squash = t.find_id(65);
    ASSERT_NE(squash, nullptr);
    EXPECT_EQ(squash->mountpoint, SRC2);
    EXPECT_EQ(squash->fstype, "fuse.squashfuse");
    EXPECT_EQ(squash->source, "squashfuse");
    EXPECT_EQ(squash->device, dev(0, 41));
    EXPECT_EQ(squash->fs_options, "rw,user_id=0,group_id=0");

    const MountEntry* tmpfs = t.find_id(63);
    ASSERT_NE(tmpfs, nullptr);
    EXPECT_EQ(tmpfs->mountpoint, T);
    EXPECT_EQ(tmpfs->fstype, "tmpfs");
    EXPECT_EQ(tmpfs->source, "fhcap");
    EXPECT_EQ(tmpfs->propagation.shared_group, 1);

    // The machine's root: a block device, its parent outside the table.
    const MountEntry* root = t.find_id(43);
    ASSERT_NE(root, nullptr);
    EXPECT_EQ(root->mountpoint, "/");
    EXPECT_EQ(root->parent_id, 42);
    EXPECT_EQ(root->device, dev(254, 0));
    EXPECT_EQ(root->major(), 254u);
    EXPECT_EQ(root->minor(), 0u);
    EXPECT_TRUE(root->propagation.is_private());
    EXPECT_EQ(t.find_id(42), nullptr);
    EXPECT_EQ(t.find_id(0), nullptr);
}

TEST(Mountinfo, LiveTreeBindsSubpathsAndReadOnly) {
    MountTable t = load("kubelet-live.mountinfo");
    ASSERT_NE(t.topmost_at(GLOBAL), nullptr);
    EXPECT_EQ(t.topmost_at(GLOBAL)->mount_id, 66);
    ASSERT_NE(t.topmost_at(VOL1), nullptr);
    EXPECT_EQ(t.topmost_at(VOL1)->root, "/");

    const MountEntry* sub = t.topmost_at(SUB1);
    ASSERT_NE(sub, nullptr);
    EXPECT_EQ(sub->mount_id, 68);
    EXPECT_EQ(sub->root, "/sub");
    EXPECT_EQ(sub->device, dev(0, 40));

    // remount,bind,ro changes the mount, not the superblock.
    const MountEntry* ro = t.topmost_at(VOL2);
    ASSERT_NE(ro, nullptr);
    EXPECT_EQ(ro->mount_id, 70);
    EXPECT_EQ(ro->vfs_options, "ro,nosuid,nodev,relatime");
    EXPECT_TRUE(ro->flags.read_only);
    EXPECT_EQ(ro->fs_options, FUSE_OPTS);

    // Every bind of the shared source joined its peer group.
    for (int id : {64, 66, 67, 68, 70, 71, 72}) {
        ASSERT_NE(t.find_id(id), nullptr) << id;
        EXPECT_EQ(t.find_id(id)->propagation.shared_group, 2) << id;
    }
}

TEST(Mountinfo, EscapedPathsComeOutUnescaped) {
    MountTable t = load("kubelet-live.mountinfo");
    const MountEntry* vol3 = t.find_id(71);
    ASSERT_NE(vol3, nullptr);
    EXPECT_EQ(vol3->mountpoint, VOL3);  // \040 and \134
    const MountEntry* sub3 = t.find_id(72);
    ASSERT_NE(sub3, nullptr);
    EXPECT_EQ(sub3->mountpoint, SUB3);  // \011 and \012
    EXPECT_EQ(sub3->root, "/sub dir");  // roots are escaped too
    EXPECT_EQ(t.topmost_at(VOL3), vol3);
    EXPECT_EQ(t.topmost_at(SUB3), sub3);
    // The escaped spelling is not a mountpoint.
    EXPECT_EQ(t.topmost_at(K + "/pods/" + POD3 + "/volumes/kubernetes.io~csi/my\\040vol\\1341/mount"),
              nullptr);
}

TEST(Mountinfo, WithDevice) {
    MountTable t = load("kubelet-live.mountinfo");
    EXPECT_EQ(ids(t.with_device(dev(0, 40))), (std::vector<int>{64, 66, 67, 68, 70, 71, 72}));
    EXPECT_EQ(ids(t.with_device(dev(0, 41))), (std::vector<int>{65, 69}));
    EXPECT_TRUE(t.with_device(dev(0, 99)).empty());
}

TEST(Mountinfo, StaleTreeKeepsOldDeviceAndNewSourceIsLast) {
    MountTable t = load("kubelet-stale.mountinfo");
    ASSERT_EQ(t.size(), 30u);
    // The new source reused the freed id 64 and is listed last.
    const MountEntry& last = t.entries().back();
    EXPECT_EQ(last.mount_id, 64);
    EXPECT_EQ(last.mountpoint, SRC);
    EXPECT_EQ(last.device, dev(0, 42));
    EXPECT_EQ(last.propagation.shared_group, 4);
    EXPECT_EQ(t.topmost_at(SRC), &last);
    EXPECT_EQ(ids(t.stack_at(SRC)), (std::vector<int>{64}));
    // The targets still show the dead superblock, which no mount at the
    // source path shows any more.
    EXPECT_EQ(ids(t.with_device(dev(0, 40))), (std::vector<int>{66, 67, 68, 70, 71, 72}));
    EXPECT_EQ(ids(t.with_device(dev(0, 42))), (std::vector<int>{64}));
    ASSERT_NE(t.topmost_at(VOL1), nullptr);
    EXPECT_EQ(t.topmost_at(VOL1)->device, dev(0, 40));
    // The squashfuse source lived through it.
    EXPECT_EQ(ids(t.with_device(dev(0, 41))), (std::vector<int>{65, 69}));
}

// --- stacks ------------------------------------------------------------------

TEST(Mountinfo, StackedTargets) {
    MountTable t = load("kubelet-stacked.mountinfo");
    ASSERT_EQ(t.size(), 45u);

    // Stale, first heal, second heal: bottom first.
    EXPECT_EQ(ids(t.stack_at(VOL1)), (std::vector<int>{67, 73, 82}));
    EXPECT_EQ(ids(t.stack_at(GLOBAL)), (std::vector<int>{66, 74, 83}));
    EXPECT_EQ(ids(t.stack_at(VOL3)), (std::vector<int>{71, 75, 84}));
    EXPECT_EQ(ids(t.stack_at(VOL2)), (std::vector<int>{70, 76, 85}));
    EXPECT_EQ(ids(t.stack_at(SUB1)), (std::vector<int>{68, 77}));
    EXPECT_EQ(ids(t.stack_at(VOL1B)), (std::vector<int>{69}));

    const MountEntry* top = t.topmost_at(VOL1);
    ASSERT_NE(top, nullptr);
    EXPECT_EQ(top->mount_id, 82);
    EXPECT_EQ(top->device, dev(0, 43));
    EXPECT_TRUE(t.is_topmost(*top));
    EXPECT_FALSE(t.is_topmost(*t.find_id(67)));
    EXPECT_FALSE(t.is_topmost(*t.find_id(73)));
    EXPECT_EQ(t.topmost_at(SUB1)->mount_id, 77);
    EXPECT_TRUE(t.is_topmost(*t.find_id(77)));
    EXPECT_FALSE(t.is_topmost(*t.find_id(68)));

    // Propagated copies onto the read-only target came out read-write.
    auto vol2 = t.stack_at(VOL2);
    ASSERT_EQ(vol2.size(), 3u);
    EXPECT_TRUE(vol2[0]->flags.read_only);
    EXPECT_FALSE(vol2[1]->flags.read_only);
    EXPECT_FALSE(vol2[2]->flags.read_only);

    // A copy propagated below a covered mount: alone at its path, on the
    // stale bottom mount of the volume.
    EXPECT_EQ(ids(t.stack_at(VOL1 + "/sub")), (std::vector<int>{81}));
    EXPECT_EQ(t.find_id(81)->parent_id, 67);
    EXPECT_TRUE(t.is_topmost(*t.find_id(81)));

    // The host's own stacks.
    EXPECT_EQ(ids(t.stack_at("/dev/shm")), (std::vector<int>{59, 60}));
    EXPECT_EQ(t.topmost_at("/dev/pts")->mount_id, 62);

    EXPECT_TRUE(t.stack_at("/no/such/path").empty());
    EXPECT_EQ(t.topmost_at("/no/such/path"), nullptr);
    EXPECT_EQ(t.topmost_at(VOL1 + "/"), nullptr);  // exact paths only
}

TEST(Mountinfo, MountMovedBeneathIsListedAfterTheOneOnIt) {
    MountTable t = load("kubelet-stacked.mountinfo");
    const std::string path = T + "/beneath/a";
    // Table order is upper (86) then lower (88); the stack follows parents.
    EXPECT_EQ(ids(t.stack_at(path)), (std::vector<int>{88, 86}));
    const MountEntry* top = t.topmost_at(path);
    ASSERT_NE(top, nullptr);
    EXPECT_EQ(top->mount_id, 86);
    EXPECT_EQ(top->source, "upper");
    EXPECT_TRUE(t.is_topmost(*top));
    EXPECT_FALSE(t.is_topmost(*t.find_id(88)));
}

TEST(MountTable, SeveralChainsAtOnePathAndSelfParent) {
    // /a/b mounted on an /a tmpfs that was covered by another /a tmpfs with
    // its own /a/b stack: two chains at /a/b. Hand-made: no capture has it.
    auto entry = [](int id, int parent, std::string mp) {
        MountEntry e;
        e.mount_id = id;
        e.parent_id = parent;
        e.mountpoint = std::move(mp);
        return e;
    };
    MountTable t({entry(1, 1, "/"), entry(2, 1, "/a"), entry(10, 2, "/a/b"), entry(3, 2, "/a"),
                  entry(20, 3, "/a/b"), entry(21, 20, "/a/b")});
    EXPECT_EQ(ids(t.stack_at("/")), (std::vector<int>{1}));
    EXPECT_EQ(t.topmost_at("/")->mount_id, 1);
    EXPECT_TRUE(t.is_topmost(*t.find_id(1)));
    EXPECT_EQ(ids(t.stack_at("/a")), (std::vector<int>{2, 3}));
    EXPECT_EQ(ids(t.stack_at("/a/b")), (std::vector<int>{10, 20, 21}));
    EXPECT_EQ(t.topmost_at("/a/b")->mount_id, 21);
    EXPECT_TRUE(t.is_topmost(*t.find_id(10)));  // nothing at /a/b sits on it
    EXPECT_FALSE(t.is_topmost(*t.find_id(20)));
}

// --- deleted roots -------------------------------------------------------------

TEST(Mountinfo, DeletedRootsKeepTheMarker) {
    MountTable t = load("deleted-roots.mountinfo");
    ASSERT_EQ(t.size(), 27u);
    EXPECT_EQ(t.find_id(65)->root, "/data/gone dir//deleted");
    EXPECT_EQ(t.find_id(65)->mountpoint, T + "/mnt/dir");
    EXPECT_EQ(t.find_id(66)->root, "/data/gone-file//deleted");
    const MountEntry* fuse_gone = t.find_id(67);
    EXPECT_EQ(fuse_gone->root, "/gone//deleted");
    EXPECT_EQ(fuse_gone->device, dev(0, 40));
    EXPECT_EQ(fuse_gone->fstype, "fuse");
    // Removed behind FUSE's back, and not looked up since: the kernel has not
    // noticed.
    EXPECT_EQ(t.find_id(68)->root, "/gone-remote");
}

TEST(Mountinfo, MountpointNamedDeletedIsKept) {
    MountTable t = load("deleted-roots.mountinfo");
    const MountEntry* e = t.find_id(69);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->mountpoint, T + "/mnt/x (deleted)");
    EXPECT_EQ(e->root, "/mnt/dir2");
    EXPECT_EQ(t.topmost_at(T + "/mnt/x (deleted)"), e);
}

// --- propagation ---------------------------------------------------------------

TEST(Mountinfo, PropagationFields) {
    MountTable t = load("propagation.mountinfo");
    ASSERT_EQ(t.size(), 30u);
    auto prop = [&](int id) { return t.find_id(id)->propagation; };
    EXPECT_EQ(prop(64).shared_group, 2);
    EXPECT_TRUE(prop(64).is_shared());
    EXPECT_EQ(prop(65).shared_group, 2);

    EXPECT_EQ(t.find_id(66)->mountpoint, T + "/prop/slave");
    EXPECT_TRUE(prop(66).is_slave());
    EXPECT_FALSE(prop(66).is_shared());
    EXPECT_EQ(prop(66).master_group, 2);

    EXPECT_EQ(t.find_id(67)->mountpoint, T + "/prop/private");
    EXPECT_TRUE(prop(67).is_private());

    EXPECT_EQ(t.find_id(68)->mountpoint, T + "/prop/unbindable");
    EXPECT_TRUE(prop(68).unbindable);
    EXPECT_FALSE(prop(68).is_private());
    EXPECT_FALSE(prop(68).is_shared());

    EXPECT_EQ(prop(69).shared_group, 3);
    EXPECT_EQ(prop(69).master_group, 2);
    EXPECT_EQ(prop(71).shared_group, 4);
    EXPECT_EQ(prop(71).master_group, 2);
    EXPECT_EQ(prop(72).master_group, 4);
    EXPECT_FALSE(prop(72).is_shared());
}

TEST(Mountinfo, ChrootViewWithPropagateFrom) {
    MountTable t = load("propagation-chroot.mountinfo");
    ASSERT_EQ(t.size(), 2u);
    const MountEntry* in = t.topmost_at("/in");
    ASSERT_NE(in, nullptr);
    EXPECT_EQ(in->mount_id, 70);
    EXPECT_EQ(in->propagation.shared_group, 2);
    const MountEntry* view = t.topmost_at("/view");
    ASSERT_NE(view, nullptr);
    EXPECT_EQ(view->propagation.master_group, 4);  // propagate_from:2 is not kept
    EXPECT_EQ(view->propagation.shared_group, 0);
    EXPECT_EQ(view->parent_id, 63);
    EXPECT_EQ(t.find_id(63), nullptr);  // outside the chroot
}

TEST(MountFlags, ParsedFromVfsOptions) {
    EXPECT_EQ(parse_mount_flags("ro,nosuid,nodev,noexec,relatime"), (MountFlags{true, true, true, true}));
    EXPECT_EQ(parse_mount_flags("rw,relatime"), MountFlags{});
    EXPECT_EQ(parse_mount_flags(""), MountFlags{});
    EXPECT_EQ(parse_mount_flags("ro"), (MountFlags{true, false, false, false}));
    EXPECT_EQ(parse_mount_flags("rw,noexec"), (MountFlags{false, false, false, true}));
    // Whole options only.
    EXPECT_EQ(parse_mount_flags("roo,nosuidx,nodevice,xnoexec"), MountFlags{});
}

// --- other inputs --------------------------------------------------------------

TEST(Mountinfo, StreamTextAndFileAgree) {
    const std::string text = file_text("kubelet-stacked.mountinfo");
    std::istringstream in(text);
    auto from_stream = parse_mountinfo(in, "stacked");
    auto from_text = parse_mountinfo_text(text, "stacked");
    MountTable from_file = load("kubelet-stacked.mountinfo");
    ASSERT_TRUE(from_stream.ok()) << from_stream.error().message();
    ASSERT_TRUE(from_text.ok()) << from_text.error().message();
    ASSERT_EQ(from_stream->size(), from_file.size());
    ASSERT_EQ(from_text->size(), from_file.size());
    for (std::size_t i = 0; i < from_file.size(); ++i) {
        const MountEntry& a = from_file.entries()[i];
        for (const MountEntry& b : {from_stream->entries()[i], from_text->entries()[i]}) {
            EXPECT_EQ(a.mount_id, b.mount_id);
            EXPECT_EQ(a.parent_id, b.parent_id);
            EXPECT_EQ(a.device, b.device);
            EXPECT_EQ(a.root, b.root);
            EXPECT_EQ(a.mountpoint, b.mountpoint);
            EXPECT_EQ(a.source, b.source);
            EXPECT_EQ(a.fs_options, b.fs_options);
        }
    }
}

TEST(Mountinfo, NoFinalNewlineAndEmptyInput) {
    std::string text = file_text("propagation-chroot.mountinfo");
    text.pop_back();
    auto r = parse_mountinfo_text(text, "chroot");
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->size(), 2u);
    EXPECT_EQ(r->entries().back().fs_options, FUSE_OPTS);

    // A chroot with no mountpoint inside it sees an empty table.
    auto empty = parse_mountinfo_text("", "empty");
    ASSERT_TRUE(empty.ok()) << empty.error().message();
    EXPECT_EQ(empty->size(), 0u);
}

TEST(Mountinfo, ReadsOwnTable) {
    auto r = read_mountinfo("/proc/self/mountinfo");
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_GT(r->size(), 0u);
}

// --- malformed input -----------------------------------------------------------

// Expects a parse error that names `name` and contains `detail`.
void expect_parse_error(const std::string& text, const std::string& detail) {
    auto r = parse_mountinfo_text(text, "bad.mountinfo");
    ASSERT_FALSE(r.ok()) << "parsed " << r->size() << " mounts from: " << text;
    EXPECT_EQ(r.error().what, "parse mountinfo");
    EXPECT_EQ(r.error().path, "bad.mountinfo");
    EXPECT_EQ(r.error().err, EINVAL);
    EXPECT_NE(r.error().detail.find(detail), std::string::npos) << r.error().detail;
}

TEST(MountinfoErrors, TruncatedLastLine) {
    auto lines = lines_of(file_text("kubelet-live.mountinfo"));
    ASSERT_EQ(lines.size(), 30u);
    std::string text = join(lines);
    // Cut inside the mountpoint of line 30, as a short read would.
    std::string cut = text.substr(0, text.size() - lines.back().size() + 40);
    expect_parse_error(cut, "line 30");
    // Cut right after the separator: no fs type, no source.
    std::string last = lines.back();
    std::vector<std::string> l2 = lines;
    l2.back() = last.substr(0, last.find(" - ") + 3);
    expect_parse_error(join(l2), "line 30");
}

TEST(MountinfoErrors, TruncatedLineInTheMiddle) {
    auto lines = lines_of(file_text("kubelet-live.mountinfo"));
    for (std::size_t keep : {1u, 5u, 9u, 20u}) {
        auto l = lines;
        l[24] = l[24].substr(0, keep);
        expect_parse_error(join(l), "line 25");
    }
}

TEST(MountinfoErrors, GarbageLine) {
    auto lines = lines_of(file_text("kubelet-live.mountinfo"));
    auto l = lines;
    l.insert(l.begin() + 3, "garbage here");
    expect_parse_error(join(l), "line 4");
    l = lines;
    l.insert(l.begin() + 10, "12 13 xx:yy / /x rw - tmpfs t rw");
    expect_parse_error(join(l), "line 11");
    l = lines;
    l.insert(l.begin() + 10, "12 13 0:5 / /x rw shared:1 tmpfs t rw");  // no " - "
    expect_parse_error(join(l), "line 11");
}

TEST(MountinfoErrors, GarbageFirstLine) {
    const std::string mountinfo = file_text("kubelet-live.mountinfo");
    expect_parse_error("garbage here\n" + mountinfo, "line 1");
    // A first line that is valid fstab makes libmount read the file as an
    // fstab; its second line then fails as one, but the first is to blame.
    expect_parse_error("/dev/sda1 / ext4 rw 0 0\n" + mountinfo,
                       "the first line is not in mountinfo format");
    expect_parse_error("/dev/sda1 / ext4 rw 0 0\n", "the first line is not in mountinfo format");
}

TEST(MountinfoErrors, BinaryJunk) {
    std::string junk;
    for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 7919 + 13) % 256));
    auto r = parse_mountinfo_text(junk, "junk");
    EXPECT_FALSE(r.ok());
    // A NUL byte inside a line, which the kernel never prints.
    std::string nul = std::string("63 43 0:39 / /t rw") + '\0' +
                      " - tmpfs t rw\n64 63 0:40 / /x rw - tmpfs x rw\n";
    EXPECT_FALSE(parse_mountinfo_text(nul, "nul").ok());
}

TEST(MountinfoErrors, BadOptionalFields) {
    const std::string head = "63 43 0:39 / /t rw,relatime ";
    const std::string tail = " - tmpfs t rw\n";
    expect_parse_error(head + "shared:x" + tail, "mount id 63: bad optional field \"shared:x\"");
    expect_parse_error(head + "master:" + tail, "\"master:\"");
    expect_parse_error(head + "shared:0" + tail, "\"shared:0\"");
    expect_parse_error(head + "shared:1 propagate_from:-2" + tail, "\"propagate_from:-2\"");
    expect_parse_error(head + "master:99999999999" + tail, "\"master:99999999999\"");
    // Unknown tags are allowed: the kernel may add some.
    auto r = parse_mountinfo_text(head + "shared:1 newtag:7 other" + tail, "t");
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->entries()[0].propagation.shared_group, 1);
}

TEST(MountinfoErrors, DuplicateMountId) {
    expect_parse_error("63 43 0:39 / /t rw - tmpfs t rw\n63 43 0:40 / /u rw - tmpfs u rw\n",
                       "duplicate mount id 63");
}

TEST(MountinfoErrors, MissingFile) {
    auto r = read_mountinfo(kData + "/no-such.mountinfo");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what, "read mountinfo");
    EXPECT_EQ(r.error().path, kData + "/no-such.mountinfo");
    EXPECT_EQ(r.error().err, ENOENT);
}

TEST(MountinfoErrors, MessageNamesStreamAndLine) {
    std::istringstream in("63 43 0:39 / /t rw - tmpfs t rw\nnot a line\n");
    auto r = parse_mountinfo(in, "pid 42");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message(),
              "parse mountinfo pid 42: Invalid argument (line 2: not a valid mountinfo line)");
}

TEST(MountinfoHasDevice, FindsEveryDeviceOfACaptureAndNoOther) {
    const std::string text = file_text("kubelet-live.mountinfo");
    auto table = parse_mountinfo_text(text, "kubelet-live.mountinfo");
    ASSERT_TRUE(table) << table.error().message();
    std::set<dev_t> present;
    for (const MountEntry& e : table->entries()) present.insert(e.device);
    ASSERT_GT(present.size(), 3u);
    for (dev_t d : present) EXPECT_TRUE(mountinfo_has_device(text, {d})) << "device " << d;
    // A number absent from the table, also as a prefix or suffix of present
    // ones ("0:4" in "0:46"), is not found.
    dev_t absent = dev(4095, 1048575);
    EXPECT_FALSE(mountinfo_has_device(text, {absent}));
    EXPECT_FALSE(mountinfo_has_device(text, {}));
    EXPECT_TRUE(mountinfo_has_device(text, {absent, *present.begin()}));
}

TEST(MountinfoHasDevice, LooksOnlyAtTheDeviceField) {
    // The device's text elsewhere on a line (a root, a mountpoint, a source)
    // does not count; malformed lines are skipped.
    const std::string text =
        "36 35 98:0 /0:46 /mnt/0:46 rw,noatime - ext3 0:46 rw\n"
        "garbage\n"
        "37 36 x:y / /a rw - tmpfs tmpfs rw\n"
        "38 36 0:46x / /b rw - tmpfs tmpfs rw\n";
    EXPECT_FALSE(mountinfo_has_device(text, {dev(0, 46)}));
    EXPECT_TRUE(mountinfo_has_device(text, {dev(98, 0)}));
    EXPECT_TRUE(mountinfo_has_device(text + "39 36 0:46 / /c rw - fuse.x x rw", {dev(0, 46)}));
}

TEST(MountinfoDevicesAmong, NamesEachPresentDeviceOnceSortedAndNoOther) {
    const std::string text = file_text("kubelet-live.mountinfo");
    auto table = parse_mountinfo_text(text, "kubelet-live.mountinfo");
    ASSERT_TRUE(table) << table.error().message();
    std::set<dev_t> present;
    std::map<dev_t, int> lines;  // how many mounts share each device
    for (const MountEntry& e : table->entries()) {
        present.insert(e.device);
        ++lines[e.device];
    }
    ASSERT_TRUE(std::any_of(lines.begin(), lines.end(), [](const auto& l) { return l.second > 1; }))
        << "the capture should have a device on several lines (binds), or 'each once' is not tested";
    const dev_t absent = dev(4095, 1048575);
    std::set<dev_t> asked = present;
    asked.insert(absent);
    EXPECT_EQ(mountinfo_devices_among(text, asked), std::vector<dev_t>(present.begin(), present.end()));
    // A subset: exactly the asked ones that are there.
    const dev_t first = *present.begin(), last = *present.rbegin();
    EXPECT_EQ(mountinfo_devices_among(text, {last, absent, first}), (std::vector<dev_t>{first, last}));
    EXPECT_TRUE(mountinfo_devices_among(text, {absent}).empty());
    EXPECT_TRUE(mountinfo_devices_among(text, {}).empty());
    // Only the device field counts, as for mountinfo_has_device.
    EXPECT_TRUE(mountinfo_devices_among("36 35 98:0 /0:46 /mnt/0:46 rw - ext3 0:46 rw\n", {dev(0, 46)}).empty());
}

} // namespace
} // namespace fh
