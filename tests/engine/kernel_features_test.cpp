// Tests of kernel feature detection (engine/kernel_features.h), strategy
// resolution (engine/event_loop.h) and the names of heal events (engine.h).
#include "engine/kernel_features.h"

#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/fuse_servers.h"
#include "engine/engine.h"
#include "engine/event_loop.h"
#include "engine/mount_tracker.h"
#include "engine/sys.h"

namespace fh {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(KernelFeatures, DisabledFeaturesAreOffAndSaySo) {
    KernelFeatures f = detect_kernel_features({"fusectl", "openat2"}, "/nonexistent", false);
    EXPECT_FALSE(f.fusectl);
    EXPECT_FALSE(f.openat2);
    EXPECT_TRUE(f.fusectl_dir.empty()) << f.fusectl_dir;
    EXPECT_EQ(f.disabled, (std::set<std::string>{"fusectl", "openat2"}));
    const std::string d = f.describe();
    EXPECT_TRUE(contains(d, "openat2=no(disabled)")) << d;
    EXPECT_TRUE(contains(d, "fusectl=no(disabled)")) << d;
    // The others are reported, disabled or not.
    EXPECT_TRUE(contains(d, "open_tree=")) << d;
    EXPECT_TRUE(contains(d, "mount_setattr=")) << d;
    EXPECT_TRUE(contains(d, "move_mount_beneath=")) << d;
    EXPECT_FALSE(contains(d, "open_tree=no(disabled)")) << d;
}

TEST(KernelFeatures, DisablingOnlyAffectsTheNamedFeatures) {
    KernelFeatures all = detect_kernel_features({}, "/nonexistent", false);
    KernelFeatures some = detect_kernel_features({"openat2"}, "/nonexistent", false);
    EXPECT_FALSE(some.openat2);
    EXPECT_EQ(some.open_tree, all.open_tree);
    EXPECT_EQ(some.mount_setattr, all.mount_setattr);
    EXPECT_EQ(some.move_mount_beneath, all.move_mount_beneath);
    EXPECT_TRUE(all.disabled.empty());
    EXPECT_FALSE(contains(all.describe(), "(disabled)")) << all.describe();
}

// Linux 5.8+ (this machine's 6.18 included) reports the mount id in statx;
// disabling it forces the fdinfo fallback and says so.
TEST(KernelFeatures, StatxMntIdIsDetectedAndCanBeDisabled) {
    const KernelFeatures all = detect_kernel_features({}, "/nonexistent", false);
    EXPECT_TRUE(all.statx_mnt_id) << all.kernel_release;
    EXPECT_TRUE(contains(all.describe(), "statx_mnt_id=yes")) << all.describe();
    const KernelFeatures off = detect_kernel_features({"statx_mnt_id"}, "/nonexistent", false);
    EXPECT_FALSE(off.statx_mnt_id);
    EXPECT_TRUE(contains(off.describe(), "statx_mnt_id=no(disabled)")) << off.describe();
    EXPECT_EQ(off.openat2, all.openat2);
}

TEST(KernelFeatures, FusectlIsOffWhenNotMountedThereAndNotAskedToMount) {
    // A plain directory is not the fuse control filesystem.
    char tmpl[] = "/tmp/fh-engine-kf-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    KernelFeatures f = detect_kernel_features({}, dir, false);
    std::filesystem::remove_all(dir);
    EXPECT_FALSE(f.fusectl);
    EXPECT_TRUE(f.fusectl_dir.empty());
    const std::string d = f.describe();
    EXPECT_TRUE(contains(d, "fusectl=no")) << d;
    EXPECT_FALSE(contains(d, "fusectl=no(disabled)")) << d;

    KernelFeatures missing = detect_kernel_features({}, "/nonexistent", false);
    EXPECT_FALSE(missing.fusectl);
}

TEST(KernelFeatures, BeneathImpliesOpenTreeAndMountSetattr) {
    KernelFeatures no_tree = detect_kernel_features({"open_tree"}, "/nonexistent", false);
    EXPECT_FALSE(no_tree.open_tree);
    EXPECT_FALSE(no_tree.move_mount_beneath);
    KernelFeatures no_setattr = detect_kernel_features({"mount_setattr"}, "/nonexistent", false);
    EXPECT_FALSE(no_setattr.move_mount_beneath) << "a replace sets flags on the clone before attaching it";
    KernelFeatures no_beneath = detect_kernel_features({"move_mount_beneath"}, "/nonexistent", false);
    EXPECT_FALSE(no_beneath.move_mount_beneath);
    EXPECT_TRUE(contains(no_beneath.describe(), "move_mount_beneath=no(disabled)")) << no_beneath.describe();
}

TEST(KernelFeatures, FuseFdinfoFollowsTheReleaseAndPidfdAndCanBeDisabled) {
    const KernelFeatures f = detect_kernel_features({}, "/nonexistent", false);
    EXPECT_FALSE(f.kernel_release.empty());
    EXPECT_TRUE(f.pidfd) << "pidfd_open (Linux 5.3) works here";
    EXPECT_EQ(f.fuse_fdinfo, kernel_release_has_fuse_fdinfo(f.kernel_release)) << f.kernel_release;
    const KernelFeatures off = detect_kernel_features({"fuse_fdinfo"}, "/nonexistent", false);
    EXPECT_FALSE(off.fuse_fdinfo);
    EXPECT_TRUE(off.pidfd) << "pidfd_open is not the feature disabled";
    EXPECT_TRUE(contains(off.describe(), "fuse_fdinfo=no(disabled)")) << off.describe();
}

TEST(KernelFeatures, OpenTreeProbeMatchesTheSyscall) {
    // Cross-check the probe with our own call: ENOSYS means the syscall is missing.
    errno = 0;
    long rc = ::syscall(SYS_open_tree, -1, "", 0);
    const bool have = !(rc < 0 && errno == ENOSYS);
    if (rc >= 0) ::close(static_cast<int>(rc));
    EXPECT_EQ(detect_kernel_features({}, "/nonexistent", false).open_tree, have);
}

TEST(KernelFeatures, DescribeFormat) {
    KernelFeatures f;
    f.open_tree = true;
    f.mount_setattr = true;
    f.move_mount_beneath = false;
    f.openat2 = true;
    f.statx_mnt_id = true;
    f.fusectl = true;
    f.statmount = true;
    f.fanotify_mount = true;
    f.disabled = {"move_mount_beneath"};
    f.fuse_fdinfo = true;
    EXPECT_EQ(f.describe(),
              "open_tree=yes mount_setattr=yes move_mount_beneath=no(disabled) openat2=yes statx_mnt_id=yes "
              "fusectl=yes statmount=yes fanotify_mount=yes fuse_fdinfo=yes");
    KernelFeatures none;
    EXPECT_EQ(none.describe(),
              "open_tree=no mount_setattr=no move_mount_beneath=no openat2=no statx_mnt_id=no fusectl=no "
              "statmount=no fanotify_mount=no fuse_fdinfo=no");
}

// Mount tracking needs statmount: disabling statmount turns it off too, and
// disabling it alone leaves statmount as it was. As root on Linux 6.14+ it
// is on by default (the tracker needs CAP_SYS_ADMIN to watch the namespace).
TEST(KernelFeatures, FanotifyMountNeedsStatmount) {
    KernelFeatures all = detect_kernel_features({}, "/nonexistent", false);
    if (all.statmount && ::geteuid() == 0) {
        EXPECT_EQ(all.fanotify_mount, fanotify_mount_is_usable());
    }
    if (!all.statmount) {
        EXPECT_FALSE(all.fanotify_mount);
    }
    KernelFeatures no_statmount = detect_kernel_features({"statmount"}, "/nonexistent", false);
    EXPECT_FALSE(no_statmount.fanotify_mount);
    EXPECT_TRUE(contains(no_statmount.describe(), "fanotify_mount=no")) << no_statmount.describe();
    EXPECT_FALSE(contains(no_statmount.describe(), "fanotify_mount=no(disabled)")) << no_statmount.describe();
    KernelFeatures off = detect_kernel_features({"fanotify_mount"}, "/nonexistent", false);
    EXPECT_FALSE(off.fanotify_mount);
    EXPECT_EQ(off.statmount, all.statmount);
    EXPECT_TRUE(contains(off.describe(), "fanotify_mount=no(disabled)")) << off.describe();
}

TEST(KernelFeatures, IsKnownKernelFeature) {
    for (const char* name :
         {"open_tree", "mount_setattr", "move_mount_beneath", "openat2", "statx_mnt_id", "fusectl", "statmount",
          "fanotify_mount", "fuse_fdinfo"})
        EXPECT_TRUE(is_known_kernel_feature(name)) << name;
    for (const char* name : {"", "bogus", "OPENAT2", "openat2 ", "fuse", "move_mount", "statx", "listmount", "fanotify"})
        EXPECT_FALSE(is_known_kernel_feature(name)) << "\"" << name << "\"";
}

KernelFeatures beneath(bool on) {
    KernelFeatures f;
    f.open_tree = on;
    f.move_mount_beneath = on;
    return f;
}

TEST(ResolveStrategy, AutoPicksReplaceOnlyWithBeneath) {
    auto a = resolve_strategy(StrategySetting::Auto, beneath(true));
    ASSERT_TRUE(a.ok()) << a.error().message();
    EXPECT_EQ(*a, Strategy::Replace);
    auto b = resolve_strategy(StrategySetting::Auto, beneath(false));
    ASSERT_TRUE(b.ok()) << b.error().message();
    EXPECT_EQ(*b, Strategy::Stack);
}

TEST(ResolveStrategy, ReplaceNeedsBeneath) {
    auto a = resolve_strategy(StrategySetting::Replace, beneath(true));
    ASSERT_TRUE(a.ok()) << a.error().message();
    EXPECT_EQ(*a, Strategy::Replace);
    auto b = resolve_strategy(StrategySetting::Replace, beneath(false));
    ASSERT_FALSE(b.ok()) << "resolved to " << to_string(*b);
    EXPECT_EQ(b.error().err, ENOSYS);
    EXPECT_TRUE(contains(b.error().message(), "stack")) << b.error().message();
}

TEST(ResolveStrategy, StackIsAlwaysStack) {
    for (bool on : {true, false}) {
        auto r = resolve_strategy(StrategySetting::Stack, beneath(on));
        ASSERT_TRUE(r.ok()) << r.error().message();
        EXPECT_EQ(*r, Strategy::Stack);
    }
}

TEST(ResolveStrategy, DetectedFeaturesResolveConsistently) {
    KernelFeatures f = detect_kernel_features({}, "/nonexistent", false);
    auto a = resolve_strategy(StrategySetting::Auto, f);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, f.move_mount_beneath ? Strategy::Replace : Strategy::Stack);
    KernelFeatures off = detect_kernel_features({"move_mount_beneath"}, "/nonexistent", false);
    EXPECT_FALSE(resolve_strategy(StrategySetting::Replace, off).ok());
    auto s = resolve_strategy(StrategySetting::Auto, off);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(*s, Strategy::Stack);
}

TEST(HealEventKind, Names) {
    EXPECT_STREQ(to_string(HealEvent::Kind::Broken), "broken");
    EXPECT_STREQ(to_string(HealEvent::Kind::Healed), "healed");
    EXPECT_STREQ(to_string(HealEvent::Kind::HealFailed), "heal-failed");
    EXPECT_STREQ(to_string(HealEvent::Kind::Skipped), "skipped");
    EXPECT_STREQ(to_string(HealEvent::Kind::Unresponsive), "unresponsive");
    EXPECT_STREQ(to_string(HealEvent::Kind::Recovered), "recovered");
}

} // namespace
} // namespace fh
