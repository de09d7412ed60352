// Finds the processes serving FUSE connections: a walk of /proc for open
// /dev/fuse files and the connection their fdinfo names (see
// core/fuse_servers.h). Nothing here touches a FUSE filesystem: readlink of
// /proc/<pid>/fd/<n> only prints the file's path (d_path), and fdinfo and
// comm are the kernel's own text. /dev/fuse itself is never opened (the
// unit's DevicePolicy=closed forbids it).
#pragma once

#include <functional>
#include <set>
#include <string>

#include "core/fuse_servers.h"

namespace fh {

struct ServerScan {
    ServerMap servers;           // processes holding /dev/fuse files attached to a connection
    FdinfoEvidence evidence;     // what the fdinfo of those files said (see judge_fdinfo_support)
    int processes = 0;           // processes looked at
    int fds = 0;                 // fd links read
    int unreadable = 0;          // processes whose fd directory could not be read (EACCES, ...)
    std::set<int> pids;          // every process listed, looked at or not (`self_pid` excluded)

    // Adds what `other` found (a walk of other processes) to this one.
    void merge(ServerScan&& other);
};

// Returns the FUSE servers under `proc_root` (normally "/proc"), skipping
// `self_pid`. For each process: readlink of every <pid>/fd/<n>; for those
// equal to "/dev/fuse", <pid>/fdinfo/<n> is read and parsed; a process with
// at least one attached file is read its <pid>/comm. Processes that exit
// during the walk, and fds closed meanwhile, are skipped; a process whose fd
// directory cannot be read (EACCES without CAP_SYS_PTRACE) is counted in
// `unreadable`. Only the thread group's fd table is read (threads made
// without CLONE_FILES, which hold a table of their own, are not).
// `include`, when set, picks the processes looked at (the others are only
// listed in `pids`): the death watch looks at the processes started since
// its last walk first, where a restarted FUSE daemon is.
ServerScan scan_fuse_servers(const std::string& proc_root, int self_pid,
                             const std::function<bool(int pid)>& include = {});

// Returns true when `server.pid` under `proc_root` still holds at least one
// of the files `server.fds` recorded, attached to the same connection: the
// check that a pidfd opened after the walk refers to that very process and
// not to a new one that reused its pid.
bool still_serves(const std::string& proc_root, const FuseServer& server);

} // namespace fh
