// Classification of mounts into targets (pod volume mounts to heal) and
// sources (where a FUSE daemon mounts its filesystem), and the origin of a
// target: what a fresh copy of it is cloned from.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/mountinfo.h"

namespace fh {

// What to match, taken from the [kubelet] and [match] config sections.
struct MatchRules {
    std::string root_dir = "/var/lib/kubelet";
    std::vector<std::string> fs_types = {"fuse", "fuse.*"};  // fnmatch globs
    std::vector<std::string> source_prefixes;                // empty: any
};

enum class TargetKind {
    GlobalMount,  // a CSI staging mount under <root_dir>/plugins/ (healed first)
    Volume,       // <root_dir>/pods/<uid>/volumes/...
    Subpath,      // <root_dir>/pods/<uid>/volume-subpaths/...
};

// Returns "global", "volume" or "subpath".
const char* to_string(TargetKind kind);

// Where a path sits in the kubelet tree, from the path alone.
struct TargetPath {
    TargetKind kind = TargetKind::Volume;
    std::string pod_uid;  // empty for GlobalMount
    std::string volume;   // volume name (the directory kubelet names after it)
};

// Returns true when `fstype` matches one of the globs.
bool is_fuse_fstype(const std::string& fstype, const std::vector<std::string>& globs);

// Returns true when `path` is `dir` or lies below it (component-wise, so
// "/a/bc" is not below "/a/b").
bool path_is_within(std::string_view path, std::string_view dir);

// Returns true when `path` is absolute and has no empty, "." or ".."
// component and no trailing slash (as the kernel prints mountpoints): only
// such paths are ever acted on or stored.
bool is_normalized_path(const std::string& path);

// Returns where a pod-tree path sits: a Volume
// (<root_dir>/pods/<uid>/volumes/<plugin>/<vol>[/mount]) or a Subpath
// (<root_dir>/pods/<uid>/volume-subpaths/<vol>/<container>/<index>), or
// nullopt for any other path, deeper ones included. GlobalMount is never returned here:
// whether a plugins/ mount is a target depends on the table (see classify).
std::optional<TargetPath> parse_pod_path(const std::string& path, const std::string& root_dir);

// A target's origin: enough to make a fresh copy of it from a new FUSE mount.
struct Origin {
    std::string source_path;  // mountpoint of the source, e.g. /runtime/x/fuse
    std::string root;         // target's root relative to the source, "/" or "/sub"
    std::string fstype;
    std::string source;       // mount source string, e.g. "JuiceFS:vol"
    MountFlags flags;         // the target's per-mount flags
    bool operator==(const Origin&) const = default;

    // Returns source_path joined with root: the host path to clone.
    std::string clone_path() const;
};

using OriginMap = std::map<std::string, Origin>;  // key: target mountpoint

struct Target {
    const MountEntry* mount = nullptr;  // the topmost mount at the target path
    TargetPath where;
    std::string path;                   // == mount->mountpoint
};

// A classified host table. Pointers point into the table passed in.
struct Classification {
    std::vector<Target> targets;                 // global mounts first, then pod mounts, each by path
    std::vector<const MountEntry*> sources;      // FUSE mounts with root "/" outside <root_dir>/pods
};

// Returns the targets and sources of a host table. A target is the topmost
// FUSE mount at a pod volume path (see parse_pod_path), or at a path under
// <root_dir>/plugins/ when a source of the same superblock exists outside
// <root_dir> or `remembered` holds an origin for that path (a staging mount
// whose source was lazily unmounted during an outage is still a target);
// otherwise that plugins mount is the source itself.
Classification classify(const MountTable& table, const MatchRules& rules, const OriginMap* remembered = nullptr);

// Returns the origin of `target` recovered from a source mount of the same
// superblock in the table (preferring sources outside <root_dir>), or nullopt
// when the table holds none. Works for a live mount and for a stale one whose
// source is still mounted.
std::optional<Origin> origin_from_table(const Classification& c, const Target& target,
                                        const MatchRules& rules);

} // namespace fh
