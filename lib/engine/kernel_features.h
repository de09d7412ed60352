// Kernel features detected at run time. Nodes run kernels from 4.18 (RHEL 8)
// to 6.x, so every feature has a fallback, and a switch forces the fallback
// so both paths are tested on a new kernel.
#pragma once

#include <set>
#include <string>

namespace fh {

// Names accepted by --disable-kernel-feature.
inline constexpr const char* kFeatureOpenTree = "open_tree";                  // 5.2
inline constexpr const char* kFeatureMountSetattr = "mount_setattr";          // 5.12
inline constexpr const char* kFeatureMoveMountBeneath = "move_mount_beneath";  // 6.5
inline constexpr const char* kFeatureOpenat2 = "openat2";                      // 5.6
inline constexpr const char* kFeatureStatxMntId = "statx_mnt_id";             // 5.8
inline constexpr const char* kFeatureFusectl = "fusectl";                      // any, if mountable
inline constexpr const char* kFeatureStatmount = "statmount";                  // 6.8; subtype+source 6.13
inline constexpr const char* kFeatureFanotifyMount = "fanotify_mount";         // 6.14 (needs statmount)
// /dev/fuse fdinfo names its connection (6.16), for the death watch with
// pidfds (pidfd_open, 5.3); see engine/death_watch.h.
inline constexpr const char* kFeatureFuseFdinfo = "fuse_fdinfo";

struct KernelFeatures {
    bool open_tree = false;
    bool mount_setattr = false;
    bool move_mount_beneath = false;
    bool openat2 = false;
    // statx reports a mount's id (STATX_MNT_ID): each action checks the
    // mount at its target with one statx instead of reading the fd's
    // /proc fdinfo file (sys::fd_mount_statx).
    bool statx_mnt_id = false;
    bool fusectl = false;            // the fuse control filesystem is mounted and usable
    bool statmount = false;          // one mount can be queried without reading the table (armed heals)
    // Mount events name the mount they changed (fanotify FAN_REPORT_MNT) and
    // listmount lists the table: the host table is tracked per mount
    // (engine/mount_tracker.h) instead of re-read per event.
    bool fanotify_mount = false;
    // pidfd_open works (Linux 5.3; a seccomp filter may refuse it).
    bool pidfd = false;
    // The FUSE servers' exits can be watched: pidfd_open works and /dev/fuse
    // fdinfo names its connection. At start a guess from the kernel release
    // (6.16+); the daemon corrects it from the first /dev/fuse files it sees
    // (a distribution kernel may carry the line in an older release).
    bool fuse_fdinfo = false;
    std::string kernel_release;      // uname -r
    std::string fusectl_dir;         // e.g. /sys/fs/fuse/connections
    // Why fusectl is not in use when it was not disabled, e.g. "not mounted
    // at /sys/fs/fuse/connections, and mounting it there failed: ENOENT".
    std::string fusectl_problem;
    std::set<std::string> disabled;  // forced off by the operator

    // Returns a one-line summary, e.g.
    // "open_tree=yes mount_setattr=yes move_mount_beneath=no(disabled) openat2=yes statx_mnt_id=yes fusectl=yes
    // statmount=yes fanotify_mount=yes fuse_fdinfo=yes".
    std::string describe() const;
};

// Returns the features this kernel offers, minus `disabled`. Probes are
// side-effect free: each syscall is called with arguments that fail with
// EBADF/EFAULT when it exists and with ENOSYS/EINVAL when it does not. When
// fusectl is not mounted at `fusectl_dir` and `mount_fusectl` is true, mounts
// it there (the daemon's job on a host; tests pass their own namespace).
KernelFeatures detect_kernel_features(const std::set<std::string>& disabled, const std::string& fusectl_dir,
                                      bool mount_fusectl);

// Returns true when `name` is one of the feature names above.
bool is_known_kernel_feature(const std::string& name);

} // namespace fh
