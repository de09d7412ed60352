// The mount table model: one MountEntry per line of /proc/<pid>/mountinfo,
// parsed with libmount so that escapes (\040 for space, \012 for newline,
// \134 for backslash) and roots such as "/a//deleted" come out as the kernel
// means them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace fh {

// How mount events propagate to and from a mount (the optional fields of
// mountinfo: "shared:N", "master:N", "unbindable").
struct Propagation {
    int shared_group = 0;  // peer group id when shared, else 0
    int master_group = 0;  // peer group this mount is a slave of, else 0
    bool unbindable = false;

    bool is_shared() const { return shared_group != 0; }
    bool is_slave() const { return master_group != 0; }
    bool is_private() const { return !is_shared() && !is_slave() && !unbindable; }
};

// The per-mount flags that a bind mount can carry independently of the
// superblock (mount_setattr MOUNT_ATTR_* / MS_* on MS_REMOUNT|MS_BIND).
struct MountFlags {
    bool read_only = false;
    bool nosuid = false;
    bool nodev = false;
    bool noexec = false;
    bool operator==(const MountFlags&) const = default;
};

struct MountEntry {
    int mount_id = 0;
    int parent_id = 0;
    dev_t device = 0;          // st_dev of the superblock (major:minor field)
    std::string root;          // path inside the filesystem that is mounted
    std::string mountpoint;    // where it is mounted, unescaped
    std::string fstype;        // e.g. "fuse.juicefs", "fuse"
    std::string source;        // mount source string, e.g. "JuiceFS:vol"
    std::string vfs_options;   // per-mount options as printed, e.g. "ro,nosuid"
    std::string fs_options;    // superblock options as printed
    MountFlags flags;          // parsed from vfs_options
    Propagation propagation;

    unsigned major() const;
    unsigned minor() const;
};

// A snapshot of one mount namespace's table, in mountinfo order (the kernel
// prints mounts in the order they were attached to the namespace's list, so a
// mount stacked later on the same mountpoint comes after the one below it).
class MountTable {
public:
    MountTable() = default;
    explicit MountTable(std::vector<MountEntry> entries);

    const std::vector<MountEntry>& entries() const { return entries_; }
    std::size_t size() const { return entries_.size(); }

    // Returns the entry with this mount id, or nullptr.
    const MountEntry* find_id(int mount_id) const;

    // Returns the topmost mount at exactly this mountpoint path, or nullptr.
    // "Topmost" is the mount at the path that no other mount at the same path
    // sits on (its id is no other same-path mount's parent id).
    const MountEntry* topmost_at(const std::string& mountpoint) const;

    // Returns every mount at exactly this path, bottom first.
    std::vector<const MountEntry*> stack_at(const std::string& mountpoint) const;

    // Returns true when no other mount at the same mountpoint sits on `e`.
    bool is_topmost(const MountEntry& e) const;

    // Returns true when `e` is topmost_at(e.mountpoint): what a path walk to
    // its mountpoint reaches. Orders the stack only when `e` tops one of
    // several chains there, so asking it of every layer of a tall stack
    // costs O(n) per layer, not O(n log n).
    bool is_reached(const MountEntry& e) const;

    // Returns the indices of entries() sorted by mountpoint, table order
    // among equal ones.
    const std::vector<std::uint32_t>& by_mountpoint() const { return by_mountpoint_; }

    // Returns every mount of the superblock `device`.
    std::vector<const MountEntry*> with_device(dev_t device) const;

private:
    // The indices of entries_ at `mountpoint`, in table order: a range of
    // by_mountpoint_.
    std::pair<std::vector<std::uint32_t>::const_iterator, std::vector<std::uint32_t>::const_iterator> at(
        std::string_view mountpoint) const;

    std::vector<MountEntry> entries_;
    // Indices of entries_, sorted by mount id, and by mountpoint (table
    // order among equal ones). Sorted vectors rather than maps: no copy of
    // each path and no node per entry when the table is made (every step
    // makes one of 2,000 mounts or more), and a copied table indexes itself
    // (indices, not pointers).
    std::vector<std::uint32_t> by_id_;
    std::vector<std::uint32_t> by_mountpoint_;
};

// Parses mountinfo text from a FILE-like stream. `name` is used in errors.
// Returns the table, or an Error naming the stream and the libmount failure.
Result<MountTable> parse_mountinfo(std::istream& in, const std::string& name);

// Parses a mountinfo file such as /proc/self/mountinfo or a captured copy.
// Returns the table, or an Error with the path and errno.
Result<MountTable> read_mountinfo(const std::string& path);

// Parses the text of a mountinfo file. Returns the table or an Error.
Result<MountTable> parse_mountinfo_text(const std::string& text, const std::string& name);

// Returns true when a line of mountinfo `text` has one of `devices` as its
// device (the third field, major:minor), without parsing the rest: a walk
// of /proc reads a thousand containers' tables to find the few that hold a
// given superblock, and parses only those.
bool mountinfo_has_device(std::string_view text, const std::set<dev_t>& devices);

// Returns those of `devices` that the lines of mountinfo `text` name as their
// device, sorted, each once (empty when none does), read the same way as
// mountinfo_has_device: the namespace cache remembers which datasets each
// container holds without parsing its table.
std::vector<dev_t> mountinfo_devices_among(std::string_view text, const std::set<dev_t>& devices);

// Returns the per-mount flags found in a comma-separated vfs option string.
MountFlags parse_mount_flags(const std::string& vfs_options);

// Returns `root` without the "//deleted" marker the kernel appends to the
// root of a mount whose dentry is unhashed ("/a//deleted" -> "/a"; "/a"
// unchanged). On a dead FUSE connection the marker does not mean the
// directory was deleted: any lookup of it through the dead superblock
// (fuse_dentry_revalidate failing with ENOTCONN) invalidates the dentry, and
// from then on every bind of that directory, the pods' and the containers'
// copies included, shows the marker (measured: squashfuse in a crash loop).
std::string root_without_deleted_marker(const std::string& root);

} // namespace fh
