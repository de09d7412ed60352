// Finds the mount namespaces, other than the daemon's own, that hold mounts
// of given superblocks: the containers whose copies of a pod volume must be
// healed inside their namespace.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

#include "core/planner.h"

namespace fh {

struct NamespaceScan {
    std::vector<NamespaceView> namespaces;  // those holding a mount of a wanted device
    int processes = 0;                      // processes looked at
    int distinct_namespaces = 0;            // namespaces read (one mountinfo each)
};

// Returns the namespaces under `proc_root` (normally "/proc") holding a mount
// of one of `devices`, skipping the namespace of `self_pid`. Each namespace
// is read once, through its first process found (deduplicated by the
// (dev, inode) of /proc/<pid>/ns/mnt). Processes that exit during the walk
// are skipped. Reading /proc/<pid>/mountinfo never touches a FUSE filesystem.
// Each view carries the pod of its process (read_pod_uid).
NamespaceScan scan_namespaces(const std::string& proc_root, int self_pid, const std::set<dev_t>& devices);

// Returns the pod UID of process `pid` from <proc_root>/<pid>/cgroup
// (core/pod_cgroup.h), or "" when it names no pod or cannot be read.
std::string read_pod_uid(const std::string& proc_root, int pid);

} // namespace fh
