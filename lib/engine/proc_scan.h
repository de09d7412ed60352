// Finds the mount namespaces, other than the daemon's own, that hold mounts
// of given superblocks: the containers whose copies of a pod volume must be
// healed inside their namespace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/planner.h"

namespace fh {

// A namespace holding mounts of some of the devices a walk remembers (the
// engine's namespace cache): where to look first when one of them dies.
struct NamespaceHolding {
    int pid = 0;                  // the process it was read through
    std::uint64_t ns_inode = 0;
    std::vector<dev_t> devices;   // those of the walk's devices it holds, sorted
};

struct NamespaceScan {
    std::vector<NamespaceView> namespaces;  // those holding a mount of a wanted device, parsed
    std::vector<NamespaceHolding> holdings; // those holding a wanted or a remembered device
    int processes = 0;                      // processes looked at
    int distinct_namespaces = 0;            // namespaces read (one mountinfo each)
    std::vector<std::uint64_t> namespace_inodes;  // the inodes of those, sorted
};

// Returns the namespaces under `proc_root` (normally "/proc") holding a mount
// of one of `devices`, skipping the namespace of `self_pid`, and, in
// `holdings`, every namespace holding one of `devices` or `remembered` with
// the ones it holds. Each namespace is read once, through its first process
// found (deduplicated by the (dev, inode) of /proc/<pid>/ns/mnt), and parsed
// only when it holds one of `devices`. Processes that exit during the walk
// are skipped. Reading /proc/<pid>/mountinfo never touches a FUSE
// filesystem. Each view carries the pod of its process (read_pod_uid).
NamespaceScan scan_namespaces(const std::string& proc_root, int self_pid, const std::set<dev_t>& devices,
                              const std::set<dev_t>& remembered = {});

// Returns the pod UID of process `pid` from <proc_root>/<pid>/cgroup
// (core/pod_cgroup.h), or "" when it names no pod or cannot be read.
std::string read_pod_uid(const std::string& proc_root, int pid);

} // namespace fh
