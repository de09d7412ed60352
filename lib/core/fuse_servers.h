// Which processes serve which FUSE connection, and what follows when one of
// them exits. Pure: the /proc walk that gathers the facts is
// engine/server_scan.h, the pidfd watch that acts on them engine/death_watch.h.
//
// A FUSE connection is served by every process holding an open /dev/fuse
// file attached to it (the daemon, its forked children, clones made with
// FUSE_DEV_IOC_CLONE). The kernel aborts the connection when the last such
// file is closed, so "the last server exited" is "the connection died".
// Since Linux 6.16 (commit "fs: fuse: add dev id to /dev/fuse fdinfo"),
// /proc/<pid>/fdinfo/<fd> of an attached /dev/fuse file has a line
//     fuse_connection:\t<id>
// where <id> is the superblock's kernel-internal dev_t: the name of the
// connection's fusectl directory (/sys/fs/fuse/connections/<id>), and for
// FUSE's anonymous devices (major 0) the minor of the mount's st_dev. A file
// not yet attached (between open("/dev/fuse") and mount()) has no such line,
// on any kernel.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace fh {

// Returns the connection id of a /dev/fuse file from the text of its
// /proc/<pid>/fdinfo/<fd> (the value of its "fuse_connection:" line), or
// nullopt when there is no such line (a file not attached to a connection,
// or a kernel older than 6.16) or its value is not a number.
std::optional<std::uint32_t> parse_fuse_fdinfo(std::string_view text);
// Same, reading the text from a stream.
std::optional<std::uint32_t> parse_fuse_fdinfo(std::istream& in);

// Returns the userspace dev_t (st_dev, mountinfo's major:minor) of a
// connection id (the kernel's internal dev_t: major << 20 | minor).
dev_t connection_device(std::uint32_t id);
// Returns the connection id (fusectl directory name) of a superblock's
// userspace dev_t. For FUSE's anonymous devices with minors below 256 both
// encodings are the same number; above, and for fuseblk, they differ.
std::uint32_t connection_id(dev_t device);

// One process holding /dev/fuse files attached to connections.
struct FuseServer {
    int pid = 0;
    std::string comm;               // /proc/<pid>/comm, without the newline
    std::set<dev_t> connections;    // as userspace dev_t (connection_device)
    std::map<int, dev_t> fds;       // fd number -> connection, to re-check the process after pidfd_open
    bool operator==(const FuseServer&) const = default;
};

// The servers known, by pid.
using ServerMap = std::map<int, FuseServer>;

// Returns the pids of `servers` holding at least one of `wanted`: the
// processes whose exit can end a connection we care about.
std::set<int> servers_to_watch(const ServerMap& servers, const std::set<dev_t>& wanted);

// Returns the connections of `servers[pid]` that no other process of
// `servers` holds: those that lost their last known server when `pid`
// exited (empty when `pid` is unknown). The kernel aborts such a connection
// unless a process we did not see holds its file (e.g. one passed over a
// unix socket and not yet received); the caller confirms with fusectl.
std::vector<dev_t> connections_orphaned_by(const ServerMap& servers, int pid);

// Returns the connections of `wanted` not in `scanned`: new FUSE
// superblocks whose servers have not been looked for yet.
std::set<dev_t> connections_to_scan(const std::set<dev_t>& wanted, const std::set<dev_t>& scanned);

// Whether this kernel names the connection in /dev/fuse fdinfo.
enum class FdinfoSupport { Unknown, Yes, No };
// Returns "unknown", "yes" or "no".
const char* to_string(FdinfoSupport s);

// Returns true when `release` (uname -r, e.g. "6.18.44-fc-v782",
// "5.14.0-427.el9.x86_64") is Linux 6.16 or newer: the prior guess before any
// /dev/fuse file has been seen. Only a guess: a distribution kernel may
// carry the line in an older release (a backport), so evidence from
// judge_fdinfo_support() overrides it. An unparsable release returns false.
bool kernel_release_has_fuse_fdinfo(std::string_view release);

// What one walk of /proc saw of /dev/fuse files.
struct FdinfoEvidence {
    int dev_fuse_files = 0;     // open /dev/fuse files found
    int with_connection = 0;    // of those, with a "fuse_connection:" line
};

// Returns the support after a walk: Yes once any file named its connection
// (only a kernel with the line prints it; final). No when files were found,
// none named a connection, and FUSE connections we care about exist
// (`wanted_connections` > 0): their servers hold attached files, and
// attached files without the line mean an older kernel; a walk that only met
// files not yet attached is unlikely then, and a later walk that sees a line
// still turns No into Yes. Otherwise `current` (no evidence either way).
FdinfoSupport judge_fdinfo_support(FdinfoSupport current, const FdinfoEvidence& evidence,
                                   std::size_t wanted_connections);

} // namespace fh
