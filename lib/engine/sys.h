// Thin wrappers over the syscalls the engine needs, with the constants that
// Debian 12's headers (linux-libc-dev 6.1) lack. Each returns an Error with
// the syscall name, path and errno on failure.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "core/error.h"

// x86_64 and aarch64 share the generic syscall numbers for these (added in
// 5.2 / 5.6 / 5.12), so one set of fallbacks serves both.
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace fh::sys {

// <linux/mount.h> values; some are newer than Debian 12's headers.
inline constexpr unsigned kOpenTreeClone = 1;             // OPEN_TREE_CLONE
inline constexpr unsigned kOpenTreeCloexec = O_CLOEXEC;   // OPEN_TREE_CLOEXEC
inline constexpr unsigned kMoveMountFEmptyPath = 0x04;    // MOVE_MOUNT_F_EMPTY_PATH
inline constexpr unsigned kMoveMountTEmptyPath = 0x40;    // MOVE_MOUNT_T_EMPTY_PATH
inline constexpr unsigned kMoveMountBeneath = 0x200;      // MOVE_MOUNT_BENEATH, Linux 6.5
inline constexpr unsigned kStatxMntId = 0x1000;           // STATX_MNT_ID, Linux 5.8
inline constexpr std::uint64_t kMountAttrRdonly = 0x1;    // MOUNT_ATTR_RDONLY
inline constexpr std::uint64_t kMountAttrNosuid = 0x2;    // MOUNT_ATTR_NOSUID
inline constexpr std::uint64_t kMountAttrNodev = 0x4;     // MOUNT_ATTR_NODEV
inline constexpr std::uint64_t kMountAttrNoexec = 0x8;    // MOUNT_ATTR_NOEXEC
inline constexpr std::uint64_t kResolveNoMagiclinks = 0x02;  // RESOLVE_NO_MAGICLINKS
inline constexpr std::uint64_t kResolveNoSymlinks = 0x04;    // RESOLVE_NO_SYMLINKS
inline constexpr std::uint64_t kResolveNoXdev = 0x01;        // RESOLVE_NO_XDEV (unused: targets are mountpoints)

struct MountAttr {  // struct mount_attr, MOUNT_ATTR_SIZE_VER0 = 32
    std::uint64_t attr_set = 0;
    std::uint64_t attr_clr = 0;
    std::uint64_t propagation = 0;  // MS_SHARED, MS_SLAVE, MS_PRIVATE or 0
    std::uint64_t userns_fd = 0;
};

struct OpenHow {  // struct open_how, OPEN_HOW_SIZE_VER0 = 24
    std::uint64_t flags = 0;
    std::uint64_t mode = 0;
    std::uint64_t resolve = 0;
};

// An owned file descriptor, closed on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(o.release());
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() {
        int f = fd_;
        fd_ = -1;
        return f;
    }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

// Returns a detached clone of the mount at `path` (OPEN_TREE_CLONE; the
// last component is not followed if it is a symlink).
Result<UniqueFd> open_tree_clone(const std::string& path);
// Returns a detached clone of the mount `fd` refers to (an O_PATH fd of its
// root: OPEN_TREE_CLONE with AT_EMPTY_PATH); `what_path` is for errors.
Result<UniqueFd> open_tree_clone_fd(int fd, const std::string& what_path);

// Applies per-mount flags and propagation to the mount at fd (AT_EMPTY_PATH).
Status mount_setattr_fd(int fd, const MountAttr& attr, const std::string& what_path);

// Attaches the detached mount `from_fd` at the mount `to_fd` refers to;
// `beneath` puts it under the top mount (MOVE_MOUNT_BENEATH).
Status move_mount_fd(int from_fd, int to_fd, bool beneath, const std::string& to_path);

// Returns an O_PATH fd of `path` resolved without following any symlink in
// any component (openat2 RESOLVE_NO_SYMLINKS when `use_openat2`, else a walk
// one component at a time with O_PATH|O_NOFOLLOW). `path` must be absolute
// and free of "." and ".." components.
Result<UniqueFd> open_path_nofollow(const std::string& path, bool use_openat2);

// Returns the mount id of the mount an fd refers to, read from
// <proc_self>/fdinfo/<fd> (which never calls into the filesystem, so it
// cannot hang on a FUSE mount). `proc_self` is "/proc/self", or "." for a
// thread whose cwd is the daemon's /proc/self (inside another namespace).
Result<int> fd_mount_id(int fd, const std::string& proc_self = "/proc/self");

// The superblock and the mount an fd refers to.
struct FdMount {
    dev_t device = 0;  // st_dev
    int mount_id = 0;  // the mountinfo (32-bit, reusable) id, as fd_mount_id
};
// Returns the device number (as fd_device) and the mount id (as
// fd_mount_id) of what `fd` refers to, from one statx(STATX_MNT_ID,
// AT_STATX_DONT_SYNC): no file is opened (fd_mount_id opens, reads and
// closes one, and needs a /proc), and no request reaches a FUSE daemon (the
// inode cache answers, as for fd_device). Returns an Error with ENOSYS when
// the kernel does not report the id (before Linux 5.8), and statx's own
// errno otherwise; `what_path` names the fd in errors.
Result<FdMount> fd_mount_statx(int fd, const std::string& what_path);

// Returns the device number (st_dev: the superblock) of what `fd` refers
// to, from statx(AT_STATX_DONT_SYNC) with an empty mask: the inode cache
// answers, so no request reaches a FUSE daemon (dead or hung) and FUSE's
// allow_other check does not apply. Returns an Error with errno.
Result<dev_t> fd_device(int fd, const std::string& what_path);

// Returns the whole content of a small file (sysfs, procfs, config).
Result<std::string> read_small_file(const std::string& path);

// Writes `content` to `path` atomically: a temp file in the same directory,
// fsync, rename, fsync of the directory. Returns an Error naming the step.
Status write_file_atomically(const std::string& path, const std::string& content);

// Returns a pidfd for `pid` (pidfd_open, Linux 5.3), or an Error.
Result<UniqueFd> pidfd_open(int pid);

// Returns the (dev, inode) of the mount namespace of `pid` under `proc_root`
// (stat of <proc_root>/<pid>/ns/mnt), or an Error.
Result<std::pair<dev_t, ino_t>> mount_ns_id(const std::string& proc_root, int pid);

} // namespace fh::sys
