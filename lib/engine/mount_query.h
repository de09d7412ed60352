// Asking the kernel about one mount without reading the whole mount table:
// statx() for the unique id of the mount a path resolves to, then statmount()
// (Linux 6.8) for that mount's fields. Costs a few microseconds whatever the
// size of the table, where a read of /proc/self/mountinfo costs ~7 ms at
// 1,000 mounts and ~15 ms at 10,000.
//
// Neither call ever sends a request to a FUSE daemon: the path walk stops at
// the mount's root dentry (no lookup in the FUSE filesystem), statx with
// AT_STATX_DONT_SYNC answers from the inode cache, and statmount reads only
// the kernel's mount structures. So a hung FUSE daemon cannot block them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mountinfo.h"

namespace fh {

// Returns true when this kernel's statmount reports every field a
// MountEntry needs, the fs subtype ("fuse.<subtype>") and the mount source
// included. Those two came in Linux 6.13; the kernel says what it supports
// through STATMOUNT_SUPPORTED_MASK, and a kernel without that answer is
// treated as lacking them (a "fuse.x" mount would look like plain "fuse").
bool statmount_is_usable();

// Returns the mount with this unique (64-bit, never reused) id in the
// caller's mount namespace, as a MountEntry with the same values mountinfo
// would show (ids are the reusable mountinfo ids; a mount without a source
// string says "none", as mountinfo prints it), except vfs_options and
// fs_options, left empty (`flags` carries the per-mount flags). Returns an
// Error with errno (ENOENT once the mount is gone or in another namespace).
Result<MountEntry> statmount_entry(std::uint64_t unique_mount_id);

// What statx alone tells of the topmost mount a path resolves to.
struct PathMount {
    std::uint64_t unique_mount_id = 0;  // for statmount_entry
    dev_t device = 0;                   // the superblock's device
    bool is_mount_root = false;         // the path is the root of that mount: something is mounted there
};

// Returns the unique id and device of the mount `path` resolves to (without
// following symlinks, see sys::open_path_nofollow) and whether the path is
// its root, or an Error with the step, the path and errno. Unlike
// statmount, statx does not take the kernel's mount lock (namespace_sem, one
// for all namespaces): any mount or unmount anywhere on the node holds that
// lock for writing, and a statmount waits for it (measured: ~0.25 ms right
// after an event at 1,000 targets), so callers ask statx first and
// statmount only when something changed.
Result<PathMount> identify_mount_at_path(const std::string& path, bool use_openat2);
// Returns the same for what `fd` refers to (an O_PATH fd, or a detached
// mount from open_tree, whose unique id it keeps once attached); `path`
// names it in errors.
Result<PathMount> identify_mount_of_fd(int fd, const std::string& path);

// Returns the unique ids of every mount of the caller's mount namespace that
// is reachable from its root (listmount(LSMT_ROOT), Linux 6.8), in ascending
// order: the order in which this kernel prints them in mountinfo (the
// namespace keeps its mounts sorted by unique id since 6.8). Not atomic: the
// kernel hands them out in pages, so a mount attached or detached meanwhile
// may or may not be listed. Returns an Error with errno.
Result<std::vector<std::uint64_t>> list_mount_ids();

// Returns the topmost mount that `path` resolves to: the mount at `path`
// itself when something is mounted there, else the mount that contains it
// (its mountpoint then differs from `path`). The path is resolved without
// following symlinks (see sys::open_path_nofollow). Returns an Error with
// the step, the path and errno.
Result<MountEntry> mount_at_path(const std::string& path, bool use_openat2);

} // namespace fh
