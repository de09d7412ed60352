#include "engine/server_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "engine/sys.h"

namespace fh {

namespace {

constexpr std::string_view kDevFuse = "/dev/fuse";

// Returns the whole content of `name` relative to `dir_fd` (fdinfo and comm
// are well under a page), or nullopt when it cannot be opened or read (the
// process or the fd went away).
std::optional<std::string> read_at(int dir_fd, const char* name) {
    sys::UniqueFd fd(::openat(dir_fd, name, O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return std::nullopt;
    std::string out;
    char buf[1024];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

// Returns true when the link `name` in `dir_fd` reads "/dev/fuse". The
// device node may live in a container's own /dev; readlink prints the path
// from that mount namespace's root, which is "/dev/fuse" there too.
bool links_to_dev_fuse(int dir_fd, const char* name) {
    char target[32];  // longer targets are not /dev/fuse
    const ssize_t n = ::readlinkat(dir_fd, name, target, sizeof target);
    return n == static_cast<ssize_t>(kDevFuse.size()) && std::string_view(target, static_cast<std::size_t>(n)) == kDevFuse;
}

// Returns the connection of fd `fd_name` of the process whose /proc
// directory is `pid_fd`, when it is an attached /dev/fuse file; counts what
// it saw into `evidence` when `evidence` is not null.
std::optional<dev_t> fuse_connection_of(int pid_fd, int fd_dir, const char* fd_name, FdinfoEvidence* evidence) {
    if (!links_to_dev_fuse(fd_dir, fd_name)) return std::nullopt;
    const std::string rel = std::string("fdinfo/") + fd_name;
    const auto text = read_at(pid_fd, rel.c_str());
    if (!text) return std::nullopt;  // closed meanwhile
    const auto id = parse_fuse_fdinfo(std::string_view(*text));
    if (evidence) {
        ++evidence->dev_fuse_files;
        if (id) ++evidence->with_connection;
    }
    if (!id) return std::nullopt;
    return connection_device(*id);
}

} // namespace

void ServerScan::merge(ServerScan&& other) {
    for (auto& [pid, server] : other.servers) servers[pid] = std::move(server);
    evidence.dev_fuse_files += other.evidence.dev_fuse_files;
    evidence.with_connection += other.evidence.with_connection;
    processes += other.processes;
    fds += other.fds;
    unreadable += other.unreadable;
    pids.insert(other.pids.begin(), other.pids.end());
}

ServerScan scan_fuse_servers(const std::string& proc_root, int self_pid, const std::function<bool(int pid)>& include) {
    ServerScan out;
    sys::UniqueFd proc_fd(::open(proc_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!proc_fd.valid()) return out;
    // Close-on-exec like every descriptor of the daemon (clang-tidy's
    // android-cloexec-dup found a plain dup() here).
    const int dir_fd = ::fcntl(proc_fd.get(), F_DUPFD_CLOEXEC, 0);
    DIR* dir = dir_fd < 0 ? nullptr : ::fdopendir(dir_fd);
    if (!dir) {
        if (dir_fd >= 0) ::close(dir_fd);
        return out;
    }
    while (struct dirent* de = ::readdir(dir)) {
        char* end = nullptr;
        const long pid = std::strtol(de->d_name, &end, 10);
        if (pid <= 0 || *end != '\0' || pid == self_pid) continue;
        out.pids.insert(static_cast<int>(pid));
        if (include && !include(static_cast<int>(pid))) continue;
        ++out.processes;
        sys::UniqueFd pid_fd(::openat(proc_fd.get(), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!pid_fd.valid()) continue;  // exited
        const int fd_dir_fd = ::openat(pid_fd.get(), "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd_dir_fd < 0) {
            if (errno != ENOENT) ++out.unreadable;
            continue;
        }
        DIR* fds = ::fdopendir(fd_dir_fd);
        if (!fds) {
            ::close(fd_dir_fd);
            continue;
        }
        FuseServer server;
        for (;;) {
            errno = 0;
            struct dirent* fde = ::readdir(fds);
            if (!fde) {
                // A process we may not inspect fails the open above or,
                // on some kernels, this readdir.
                if (errno == EACCES) ++out.unreadable;
                break;
            }
            if (fde->d_name[0] == '.') continue;
            ++out.fds;
            const auto conn = fuse_connection_of(pid_fd.get(), ::dirfd(fds), fde->d_name, &out.evidence);
            if (!conn) continue;
            char* fd_end = nullptr;
            const long fd_number = std::strtol(fde->d_name, &fd_end, 10);  // not atoi: it hides a bad name
            if (fd_end == fde->d_name || *fd_end != '\0' || fd_number < 0 || fd_number > INT_MAX) continue;
            server.connections.insert(*conn);
            server.fds[static_cast<int>(fd_number)] = *conn;
        }
        ::closedir(fds);
        if (server.connections.empty()) continue;
        server.pid = static_cast<int>(pid);
        if (auto comm = read_at(pid_fd.get(), "comm")) {
            if (!comm->empty() && comm->back() == '\n') comm->pop_back();
            server.comm = std::move(*comm);
        }
        out.servers.emplace(server.pid, std::move(server));
    }
    ::closedir(dir);
    return out;
}

bool still_serves(const std::string& proc_root, const FuseServer& server) {
    const std::string dir = proc_root + "/" + std::to_string(server.pid);
    sys::UniqueFd pid_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pid_fd.valid()) return false;
    sys::UniqueFd fd_dir(::openat(pid_fd.get(), "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_dir.valid()) return false;
    for (const auto& [fd, conn] : server.fds) {
        const std::string name = std::to_string(fd);
        const auto now = fuse_connection_of(pid_fd.get(), fd_dir.get(), name.c_str(), nullptr);
        if (now && *now == conn) return true;
    }
    return false;
}

} // namespace fh
