#include "engine/kernel_features.h"

#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>

#include "core/fuse_servers.h"
#include "engine/mount_query.h"
#include "engine/mount_tracker.h"
#include "engine/sys.h"

namespace fh {

namespace {

constexpr long kFusectlSuperMagic = 0x65735543;  // FUSE_CTL_SUPER_MAGIC

bool syscall_exists(long rc) { return !(rc < 0 && errno == ENOSYS); }

bool probe_open_tree() {
    // An empty path without AT_EMPTY_PATH fails with ENOENT once the
    // syscall exists.
    return syscall_exists(::syscall(SYS_open_tree, -1, "", 0));
}

bool probe_mount_setattr() {
    // A NULL attr with size 0 fails with EINVAL/EBADF when the call exists.
    return syscall_exists(::syscall(SYS_mount_setattr, -1, "", AT_EMPTY_PATH, nullptr, 0));
}

bool probe_move_mount_beneath() {
    // move_mount rejects unknown flags with EINVAL before looking at its
    // descriptors; with known flags and fd -1 it fails with EBADF instead.
    long rc = ::syscall(SYS_move_mount, -1, "", -1, "",
                        sys::kMoveMountFEmptyPath | sys::kMoveMountTEmptyPath | sys::kMoveMountBeneath);
    return rc < 0 && errno == EBADF;
}

bool probe_openat2() {
    sys::OpenHow how;
    how.flags = O_PATH | O_CLOEXEC;
    long rc = ::syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how));
    if (rc >= 0) {
        ::close(static_cast<int>(rc));
        return true;
    }
    return false;
}

bool probe_statx_mnt_id() {
    const int fd = ::open("/", O_PATH | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = sys::fd_mount_statx(fd, "/").ok();
    ::close(fd);
    return ok;
}

bool probe_pidfd_open() {
    // Our own pid always exists: a pidfd when the call works, ENOSYS before
    // 5.3, EPERM under a seccomp filter that refuses it.
    auto fd = sys::pidfd_open(static_cast<int>(::getpid()));
    return fd.ok();
}

bool is_fusectl_mounted(const std::string& dir) {
    struct statfs sf {};
    return ::statfs(dir.c_str(), &sf) == 0 && static_cast<long>(sf.f_type) == kFusectlSuperMagic;
}

} // namespace

bool is_known_kernel_feature(const std::string& name) {
    return name == kFeatureOpenTree || name == kFeatureMountSetattr || name == kFeatureMoveMountBeneath ||
           name == kFeatureOpenat2 || name == kFeatureStatxMntId || name == kFeatureFusectl ||
           name == kFeatureStatmount || name == kFeatureFanotifyMount || name == kFeatureFuseFdinfo;
}

KernelFeatures detect_kernel_features(const std::set<std::string>& disabled, const std::string& fusectl_dir,
                                      bool mount_fusectl) {
    KernelFeatures f;
    f.disabled = disabled;
    auto on = [&](const char* name, bool present) { return present && !disabled.count(name); };
    f.open_tree = on(kFeatureOpenTree, probe_open_tree());
    f.mount_setattr = on(kFeatureMountSetattr, probe_mount_setattr());
    // BENEATH is only useful with a detached clone to move, whose flags and
    // propagation are set before it is attached (mount_setattr): a replace
    // has no later moment to fix them. Every kernel with BENEATH (6.5) has
    // both, so only a forced fallback makes this matter.
    f.move_mount_beneath =
        f.open_tree && f.mount_setattr && on(kFeatureMoveMountBeneath, probe_move_mount_beneath());
    f.openat2 = on(kFeatureOpenat2, probe_openat2());
    f.statx_mnt_id = on(kFeatureStatxMntId, probe_statx_mnt_id());
    f.statmount = on(kFeatureStatmount, statmount_is_usable());
    // The tracker looks every mount up with statmount, fs subtypes and
    // sources included: without a usable statmount (or with it disabled)
    // there is no tracking, whatever fanotify offers.
    f.fanotify_mount = f.statmount && on(kFeatureFanotifyMount, fanotify_mount_is_usable());
    struct utsname u {};
    if (::uname(&u) == 0) f.kernel_release = u.release;
    f.pidfd = probe_pidfd_open();
    // Whether the fdinfo line exists cannot be probed without an open
    // /dev/fuse file, and the daemon must not open /dev/fuse itself (the
    // unit's DevicePolicy=closed): the release is the guess until a walk of
    // /proc finds one (see judge_fdinfo_support).
    f.fuse_fdinfo = f.pidfd && on(kFeatureFuseFdinfo, kernel_release_has_fuse_fdinfo(f.kernel_release));
    if (!disabled.count(kFeatureFusectl)) {
        bool mounted = is_fusectl_mounted(fusectl_dir);
        if (!mounted && mount_fusectl) {
            const bool ok = ::mount("fusectl", fusectl_dir.c_str(), "fusectl", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                    nullptr) == 0;
            const Error why = errno_error("mount fusectl", fusectl_dir);
            mounted = ok || is_fusectl_mounted(fusectl_dir);
            if (!mounted) f.fusectl_problem = "not mounted at " + fusectl_dir + ", and " + why.message();
        } else if (!mounted) {
            f.fusectl_problem = "not mounted at " + fusectl_dir;
        }
        f.fusectl = mounted;
        if (mounted) f.fusectl_dir = fusectl_dir;
    }
    return f;
}

std::string KernelFeatures::describe() const {
    auto item = [&](const char* name, bool v) {
        return std::string(name) + "=" + (v ? "yes" : (disabled.count(name) ? "no(disabled)" : "no"));
    };
    return item(kFeatureOpenTree, open_tree) + " " + item(kFeatureMountSetattr, mount_setattr) + " " +
           item(kFeatureMoveMountBeneath, move_mount_beneath) + " " + item(kFeatureOpenat2, openat2) + " " +
           item(kFeatureStatxMntId, statx_mnt_id) + " " + item(kFeatureFusectl, fusectl) + " " +
           item(kFeatureStatmount, statmount) + " " + item(kFeatureFanotifyMount, fanotify_mount) + " " +
           item(kFeatureFuseFdinfo, fuse_fdinfo);
}

} // namespace fh
