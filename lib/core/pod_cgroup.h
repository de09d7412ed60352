// Which pod a process belongs to, from its cgroup: how a copy of a pod
// volume found in a container's mount namespace is told apart from the
// copies of the same dataset in the other pods' containers (they are binds
// of the same directory of the same superblock, so the mount table alone
// cannot say whose they are).
//
// Pure: the caller reads /proc/<pid>/cgroup.
#pragma once

#include <string>
#include <string_view>

namespace fh {

// Returns the pod UID named by the cgroup paths of `cgroup_file` (the text
// of /proc/<pid>/cgroup, one "hierarchy-id:controllers:path" line per
// hierarchy; v1, v2 or hybrid), or "" when no line names a pod. kubelet
// puts every container of a pod below a cgroup named after the pod:
// - cgroupfs driver: /kubepods/<qos>/pod<uid>/<container> (no <qos> for
//   Guaranteed pods);
// - systemd driver: /kubepods.slice/kubepods-<qos>.slice/
//   kubepods-<qos>-pod<uid with '_' for '-'>.slice/cri-containerd-<id>.scope.
// The UID comes back as the API prints it: the 36-character UUID, or the
// 32 hex digits of a static pod's manifest hash. A path naming two pods
// (nested pods do not exist) gives the deepest; lines that disagree give "".
std::string pod_uid_from_cgroup(std::string_view cgroup_file);

} // namespace fh
