// Which changes of the host mount table can matter to fuse-healer. A node
// with ten thousand mounts sees mount events all the time (containers start
// and stop, systemd mounts units, other CSI drivers bind their volumes); only
// a few touch a FUSE mount, the kubelet tree or a source path. With mount
// tracking by fanotify (engine/mount_tracker.h) each event names the mount it
// changed, so an unrelated one is applied to the tracked table and dropped:
// nothing is read, classified or planned for it.
//
// Pure: the tracker calls it with the entry before and after a change.
#pragma once

#include <string>
#include <vector>

#include "core/model.h"

namespace fh {

// What decides relevance: the [kubelet] root_dir and [match] fs_types of the
// config, and where the sources of the known origins live.
struct RelevanceRules {
    std::string root_dir;
    std::vector<std::string> fs_types;
    // Sorted, without duplicates (make_relevance_rules does that): the
    // source paths that targets were learned from or wait for.
    std::vector<std::string> source_paths;
};

// Returns the rules for `match` and the source paths of the known origins
// (any order, duplicates allowed).
RelevanceRules make_relevance_rules(const MatchRules& match, std::vector<std::string> source_paths);

// Why a mount matters, the first reason found in this order.
enum class MountRelevance {
    Unrelated,    // none of the reasons below
    FuseMount,    // its fstype is one of [match] fs_types (a target, a source or a would-be one)
    KubeletTree,  // mounted in <root_dir>, or at or above it (a mount over the whole tree)
    SourcePath,   // mounted at a source path, or above one (it covers the source)
};
// Returns "unrelated", "fuse-mount", "kubelet-tree" or "source-path".
const char* to_string(MountRelevance r);

// Returns why the mount `e` matters, or Unrelated. A mount inside a source
// path (below it) is unrelated: it changes nothing at the source's root.
MountRelevance mount_relevance(const MountEntry& e, const RelevanceRules& rules);
// The same from the only two fields it reads (for callers that keep mounts
// in a form of their own: the tracker's compact entries).
MountRelevance mount_relevance(const std::string& fstype, const std::string& mountpoint, const RelevanceRules& rules);

// Returns why a change of the table matters: the relevance of the mount
// before the change, else of the mount after it (either may be null: an
// attach has no before, a detach no after; a move or a flag change has
// both, at different paths for a move). Unrelated when neither matters, so a
// detach of a tracked FUSE or kubelet mount is relevant through `before`.
MountRelevance change_relevance(const MountEntry* before, const MountEntry* after, const RelevanceRules& rules);

// Whether the engine's classification and plans can depend on the mount
// `e` of the host's table (the engine is given only such mounts, so that a
// node's thousands of unrelated mounts cost nothing at each step and no
// memory in its snapshots). They are:
// - a FUSE mount (a target, a source or a would-be one);
// - any mount at a mountpoint that also holds a FUSE mount: the layers over
//   and under a target or a source decide which one a path walk reaches;
// - any mount at a source path: what is left there once a dead source is
//   unmounted (the reason a heal waits);
// - any mount at or above root_dir (one over the whole kubelet tree).
// Classification reads the table only through FUSE mounts and the stacks at
// their mountpoints (core/model.h), so it classifies the kept mounts exactly
// as the whole table. `shares_fuse_mountpoint`: whether the same table holds
// a FUSE mount at e.mountpoint.
bool matters_to_plans(const MountEntry& e, const RelevanceRules& rules, bool shares_fuse_mountpoint);
// The same from the only two fields it reads.
bool matters_to_plans(const std::string& fstype, const std::string& mountpoint, const RelevanceRules& rules,
                      bool shares_fuse_mountpoint);

// Returns the entries of `entries` that matter to plans (matters_to_plans),
// in their order (the order of a stack's chains depends on it).
std::vector<MountEntry> keep_mounts_that_matter(std::vector<MountEntry> entries, const RelevanceRules& rules);

} // namespace fh
