#include "engine/mount_query.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include <cstring>
#include <vector>

#include "engine/sys.h"

namespace fh {

namespace {

// Debian 12's headers (linux-libc-dev 6.1) predate all of these.
constexpr unsigned kStatxMntIdUnique = 0x4000;        // STATX_MNT_ID_UNIQUE, 6.8
constexpr std::uint64_t kStatxAttrMountRoot = 0x2000;  // STATX_ATTR_MOUNT_ROOT, 5.8
constexpr std::uint64_t kSmSbBasic = 0x1;              // STATMOUNT_SB_BASIC
constexpr std::uint64_t kSmMntBasic = 0x2;             // STATMOUNT_MNT_BASIC
constexpr std::uint64_t kSmMntRoot = 0x8;              // STATMOUNT_MNT_ROOT
constexpr std::uint64_t kSmMntPoint = 0x10;            // STATMOUNT_MNT_POINT
constexpr std::uint64_t kSmFsType = 0x20;              // STATMOUNT_FS_TYPE
constexpr std::uint64_t kSmFsSubtype = 0x100;          // STATMOUNT_FS_SUBTYPE, 6.13
constexpr std::uint64_t kSmSbSource = 0x200;           // STATMOUNT_SB_SOURCE, 6.13
constexpr std::uint64_t kSmSupportedMask = 0x1000;     // STATMOUNT_SUPPORTED_MASK
constexpr std::uint32_t kMntIdReqSizeVer0 = 24;        // MNT_ID_REQ_SIZE_VER0
// What every lookup asks for. FS_SUBTYPE and SB_SOURCE are reported only
// when the mount has them (bindfs has no subtype), so their absence from the
// answer's mask is not an error once the kernel is known to support them.
constexpr std::uint64_t kRequired = kSmSbBasic | kSmMntBasic | kSmMntRoot | kSmMntPoint | kSmFsType;
constexpr std::uint64_t kWanted = kRequired | kSmFsSubtype | kSmSbSource;

#ifndef SYS_statmount
#define SYS_statmount 457  // x86_64 and the generic table (aarch64) alike, Linux 6.8
#endif
#ifndef SYS_listmount
#define SYS_listmount 458  // likewise, Linux 6.8
#endif
constexpr std::uint64_t kLsmtRoot = ~0ULL;  // LSMT_ROOT: the mounts reachable from the caller's root

struct MntIdReq {  // struct mnt_id_req, version 0
    std::uint32_t size = kMntIdReqSizeVer0;
    std::uint32_t spare = 0;
    std::uint64_t mnt_id = 0;
    std::uint64_t param = 0;
};

struct StatmountHeader {  // struct statmount (uapi/linux/mount.h, 6.18), strings follow
    std::uint32_t size;
    std::uint32_t mnt_opts;
    std::uint64_t mask;
    std::uint32_t sb_dev_major;
    std::uint32_t sb_dev_minor;
    std::uint64_t sb_magic;
    std::uint32_t sb_flags;
    std::uint32_t fs_type;
    std::uint64_t mnt_id;
    std::uint64_t mnt_parent_id;
    std::uint32_t mnt_id_old;
    std::uint32_t mnt_parent_id_old;
    std::uint64_t mnt_attr;
    std::uint64_t mnt_propagation;
    std::uint64_t mnt_peer_group;
    std::uint64_t mnt_master;
    std::uint64_t propagate_from;
    std::uint32_t mnt_root;
    std::uint32_t mnt_point;
    std::uint64_t mnt_ns_id;
    std::uint32_t fs_subtype;
    std::uint32_t sb_source;
    std::uint32_t opt_num;
    std::uint32_t opt_array;
    std::uint32_t opt_sec_num;
    std::uint32_t opt_sec_array;
    std::uint64_t supported_mask;
    std::uint32_t mnt_uidmap_num;
    std::uint32_t mnt_uidmap;
    std::uint32_t mnt_gidmap_num;
    std::uint32_t mnt_gidmap;
    std::uint64_t spare2[43];
};
static_assert(sizeof(StatmountHeader) == 0x200, "struct statmount is 512 bytes before its strings");

// Calls statmount; `buf` grows until the strings fit (EOVERFLOW).
Result<const StatmountHeader*> call_statmount(std::uint64_t id, std::uint64_t mask, std::vector<char>& buf) {
    MntIdReq req;
    req.mnt_id = id;
    req.param = mask;
    for (;;) {
        if (::syscall(SYS_statmount, &req, buf.data(), buf.size(), 0) == 0)
            return reinterpret_cast<const StatmountHeader*>(buf.data());
        if (errno != EOVERFLOW || buf.size() >= (1u << 20))
            return errno_error("statmount", "mount id " + std::to_string(id));
        buf.resize(buf.size() * 2);
    }
}

std::string string_at(const StatmountHeader* h, std::uint32_t offset) {
    return std::string(reinterpret_cast<const char*>(h) + sizeof(StatmountHeader) + offset);
}

} // namespace

bool statmount_is_usable() {
    struct statx sx {};
    if (::statx(AT_FDCWD, "/", AT_STATX_DONT_SYNC, kStatxMntIdUnique, &sx) != 0 ||
        !(sx.stx_mask & kStatxMntIdUnique))
        return false;
    std::vector<char> buf(4096);
    auto h = call_statmount(sx.stx_mnt_id, kRequired | kSmSupportedMask, buf);
    if (!h) return false;
    const std::uint64_t have = (*h)->mask;
    return (have & kRequired) == kRequired && (have & kSmSupportedMask) &&
           ((*h)->supported_mask & kWanted) == kWanted;
}

Result<MountEntry> statmount_entry(std::uint64_t unique_mount_id) {
    // One buffer per thread: the mount tracker calls this for every mount
    // event (and 10,000 times when it lists the table), where an allocation
    // per call would be a good part of the cost.
    thread_local std::vector<char> buf(4096);
    auto r = call_statmount(unique_mount_id, kWanted, buf);
    if (!r) return r.error();
    const StatmountHeader* h = *r;
    if ((h->mask & kRequired) != kRequired)
        return Error{"statmount", "mount id " + std::to_string(unique_mount_id), EOPNOTSUPP,
                     "the kernel left out required fields"};
    MountEntry e;
    e.mount_id = static_cast<int>(h->mnt_id_old);
    e.parent_id = static_cast<int>(h->mnt_parent_id_old);
    e.device = makedev(h->sb_dev_major, h->sb_dev_minor);
    e.root = string_at(h, h->mnt_root);
    e.mountpoint = string_at(h, h->mnt_point);
    // mountinfo prints "<type>.<subtype>" (e.g. fuse.sshfs) as the fstype.
    e.fstype = string_at(h, h->fs_type);
    if (h->mask & kSmFsSubtype) e.fstype += "." + string_at(h, h->fs_subtype);
    // The kernel leaves SB_SOURCE out when the mount has no source string
    // (e.g. fsmount() without a "source" parameter); mountinfo prints
    // "none" then. Every mount of a kernel that reports the field at all
    // (statmount_is_usable) has it otherwise.
    e.source = (h->mask & kSmSbSource) ? string_at(h, h->sb_source) : "none";
    e.flags.read_only = (h->mnt_attr & sys::kMountAttrRdonly) != 0;
    e.flags.nosuid = (h->mnt_attr & sys::kMountAttrNosuid) != 0;
    e.flags.nodev = (h->mnt_attr & sys::kMountAttrNodev) != 0;
    e.flags.noexec = (h->mnt_attr & sys::kMountAttrNoexec) != 0;
    // Peer group ids are the ones mountinfo prints as shared:N / master:N.
    if (h->mnt_propagation & MS_SHARED) e.propagation.shared_group = static_cast<int>(h->mnt_peer_group);
    if (h->mnt_propagation & MS_SLAVE) e.propagation.master_group = static_cast<int>(h->mnt_master);
    e.propagation.unbindable = (h->mnt_propagation & MS_UNBINDABLE) != 0;
    // vfs_options/fs_options stay empty: the option strings are not asked
    // for (nothing decides on them; `flags` carries the per-mount flags).
    return e;
}

Result<std::vector<std::uint64_t>> list_mount_ids() {
    std::vector<std::uint64_t> ids;
    // Pages of 4096 ids; each page starts after the last id of the one
    // before (mnt_id_req.param), so a mount attached meanwhile with a larger
    // id is still listed and nothing is listed twice.
    constexpr std::size_t kPage = 4096;
    MntIdReq req;
    req.mnt_id = kLsmtRoot;
    for (;;) {
        const std::size_t have = ids.size();
        ids.resize(have + kPage);
        req.param = have == 0 ? 0 : ids[have - 1];
        const long n = ::syscall(SYS_listmount, &req, ids.data() + have, kPage, 0);
        if (n < 0) return errno_error("listmount", "the mount namespace");
        ids.resize(have + static_cast<std::size_t>(n));
        if (static_cast<std::size_t>(n) < kPage) return ids;
    }
}

Result<PathMount> identify_mount_at_path(const std::string& path, bool use_openat2) {
    auto fd = sys::open_path_nofollow(path, use_openat2);
    if (!fd) return fd.error();
    return identify_mount_of_fd(fd->get(), path);
}

Result<PathMount> identify_mount_of_fd(int fd, const std::string& path) {
    struct statx sx {};
    // AT_STATX_DONT_SYNC: a FUSE inode answers from its cache, never asking
    // its daemon (which may be dead or hung).
    if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, kStatxMntIdUnique, &sx) != 0)
        return errno_error("statx", path);
    if (!(sx.stx_mask & kStatxMntIdUnique))
        return Error{"statx", path, EOPNOTSUPP, "no unique mount id (Linux < 6.8)"};
    if (!(sx.stx_attributes_mask & kStatxAttrMountRoot))
        return Error{"statx", path, EOPNOTSUPP, "no mount-root attribute (Linux < 5.8)"};
    PathMount m;
    m.unique_mount_id = sx.stx_mnt_id;
    m.device = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    m.is_mount_root = (sx.stx_attributes & kStatxAttrMountRoot) != 0;
    return m;
}

Result<MountEntry> mount_at_path(const std::string& path, bool use_openat2) {
    auto m = identify_mount_at_path(path, use_openat2);
    if (!m) return m.error();
    return statmount_entry(m->unique_mount_id);
}

} // namespace fh
