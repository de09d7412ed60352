#include "engine/sys.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace fh::sys {

Result<UniqueFd> open_tree_clone(const std::string& path) {
    int fd = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path.c_str(),
                                        kOpenTreeClone | kOpenTreeCloexec | AT_SYMLINK_NOFOLLOW));
    if (fd < 0) return errno_error("open_tree", path);
    return UniqueFd(fd);
}

Result<UniqueFd> open_tree_clone_fd(int fd, const std::string& what_path) {
    int clone = static_cast<int>(::syscall(SYS_open_tree, fd, "", kOpenTreeClone | kOpenTreeCloexec | AT_EMPTY_PATH));
    if (clone < 0) return errno_error("open_tree", what_path);
    return UniqueFd(clone);
}

Status mount_setattr_fd(int fd, const MountAttr& attr, const std::string& what_path) {
    MountAttr a = attr;
    if (::syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof(a)) != 0)
        return errno_error("mount_setattr", what_path);
    return {};
}

Status move_mount_fd(int from_fd, int to_fd, bool beneath, const std::string& to_path) {
    unsigned flags = kMoveMountFEmptyPath | kMoveMountTEmptyPath | (beneath ? kMoveMountBeneath : 0);
    if (::syscall(SYS_move_mount, from_fd, "", to_fd, "", flags) != 0)
        return errno_error(beneath ? "move_mount beneath" : "move_mount", to_path);
    return {};
}

namespace {

std::vector<std::string> components(const std::string& path) {
    std::vector<std::string> out;
    std::stringstream ss(path);
    std::string part;
    while (std::getline(ss, part, '/'))
        if (!part.empty()) out.push_back(part);
    return out;
}

} // namespace

Result<UniqueFd> open_path_nofollow(const std::string& path, bool use_openat2) {
    if (path.empty() || path[0] != '/') return Error{"resolve", path, EINVAL, "not an absolute path"};
    auto parts = components(path);
    for (const auto& p : parts)
        if (p == "." || p == "..") return Error{"resolve", path, EINVAL, "path has . or .. components"};
    if (use_openat2) {
        OpenHow how;
        // No O_NOFOLLOW: with O_PATH it would return an fd of a final
        // symlink itself; RESOLVE_NO_SYMLINKS alone refuses it with ELOOP.
        how.flags = O_PATH | O_CLOEXEC;
        how.resolve = kResolveNoSymlinks | kResolveNoMagiclinks;
        int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof(how)));
        if (fd < 0) return errno_error("openat2 (no symlinks)", path);
        return UniqueFd(fd);
    }
    UniqueFd cur(::open("/", O_PATH | O_CLOEXEC | O_DIRECTORY));
    if (!cur.valid()) return errno_error("open", "/");
    for (const auto& p : parts) {
        // O_NOFOLLOW with O_PATH opens a symlink itself instead of failing.
        // readlinkat(fd, "") succeeds only on a symlink and, unlike fstat,
        // never calls into the filesystem (a hung FUSE mount would block it).
        UniqueFd next(::openat(cur.get(), p.c_str(), O_PATH | O_CLOEXEC | O_NOFOLLOW));
        if (!next.valid()) return errno_error("open (no symlinks)", path);
        char dummy[1];
        if (::readlinkat(next.get(), "", dummy, sizeof(dummy)) >= 0)
            return Error{"open (no symlinks)", path, ELOOP, "component \"" + p + "\" is a symlink"};
        cur = std::move(next);
    }
    return cur;
}

Result<int> fd_mount_id(int fd, const std::string& proc_self) {
    const std::string path = proc_self + "/fdinfo/" + std::to_string(fd);
    auto text = read_small_file(path);
    if (!text) return text.error();
    std::istringstream in(*text);
    std::string key;
    while (in >> key) {
        if (key == "mnt_id:") {
            int id = 0;
            if (in >> id) return id;
        }
    }
    return Error{"read mnt_id", path, ENOENT, "no mnt_id line"};
}

Result<FdMount> fd_mount_statx(int fd, const std::string& what_path) {
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, kStatxMntId, &sx) != 0)
        return errno_error("statx", what_path);
    // A kernel without the field ignores the request bit and leaves it out
    // of the answer's mask. (The device is always filled in.)
    if (!(sx.stx_mask & kStatxMntId)) return Error{"statx", what_path, ENOSYS, "no STATX_MNT_ID (Linux 5.8)"};
    return FdMount{makedev(sx.stx_dev_major, sx.stx_dev_minor), static_cast<int>(sx.stx_mnt_id)};
}

Result<dev_t> fd_device(int fd, const std::string& what_path) {
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &sx) != 0) return errno_error("statx", what_path);
    return makedev(sx.stx_dev_major, sx.stx_dev_minor);
}

Result<std::string> read_small_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("open", path);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error("read", path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

Status write_file_atomically(const std::string& path, const std::string& content) {
    auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    const std::string tmp = path + ".tmp";
    // A temp file left by a crash is removed; O_EXCL|O_NOFOLLOW then make
    // sure we write a file we created, not something planted at that name.
    ::unlink(tmp.c_str());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return errno_error("create", tmp);
    std::size_t off = 0;
    while (off < content.size()) {
        ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            Error e = errno_error("write", tmp);
            ::unlink(tmp.c_str());
            return e;
        }
        off += static_cast<std::size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
        Error e = errno_error("fsync", tmp);
        ::unlink(tmp.c_str());
        return e;
    }
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        Error e = errno_error("rename", path);
        ::unlink(tmp.c_str());
        return e;
    }
    // The rename is durable only once the directory entry is on disk.
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd.valid() || ::fsync(dfd.get()) != 0) return errno_error("fsync", dir);
    return {};
}

Result<UniqueFd> pidfd_open(int pid) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return errno_error("pidfd_open", "pid " + std::to_string(pid));
    return UniqueFd(fd);
}

Result<std::pair<dev_t, ino_t>> mount_ns_id(const std::string& proc_root, int pid) {
    const std::string path = proc_root + "/" + std::to_string(pid) + "/ns/mnt";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return errno_error("stat", path);
    return std::make_pair(st.st_dev, st.st_ino);
}

} // namespace fh::sys
