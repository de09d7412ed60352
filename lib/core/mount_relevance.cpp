#include "core/mount_relevance.h"

#include <algorithm>
#include <string_view>
#include <unordered_set>

namespace fh {

RelevanceRules make_relevance_rules(const MatchRules& match, std::vector<std::string> source_paths) {
    std::sort(source_paths.begin(), source_paths.end());
    source_paths.erase(std::unique(source_paths.begin(), source_paths.end()), source_paths.end());
    return RelevanceRules{match.root_dir, match.fs_types, std::move(source_paths)};
}

const char* to_string(MountRelevance r) {
    switch (r) {
    case MountRelevance::Unrelated: return "unrelated";
    case MountRelevance::FuseMount: return "fuse-mount";
    case MountRelevance::KubeletTree: return "kubelet-tree";
    case MountRelevance::SourcePath: return "source-path";
    }
    return "?";
}

namespace {

// Returns true when a path of the sorted `paths` is `dir` or lies below it.
// The paths below "dir" sort after "dir/" and before "dir0" ('0' follows
// '/'), so one lower_bound finds the first candidate; "dir" itself sorts
// before "dir-x", "dir.x" (which sort between "dir" and "dir/"), hence the
// separate exact look-up. O(log n): a node may know hundreds of sources.
bool covers_any(const std::string& dir, const std::vector<std::string>& paths) {
    if (std::binary_search(paths.begin(), paths.end(), dir)) return true;
    const std::string prefix = dir == "/" ? dir : dir + "/";
    auto it = std::lower_bound(paths.begin(), paths.end(), prefix);
    return it != paths.end() && it->compare(0, prefix.size(), prefix) == 0;
}

} // namespace

MountRelevance mount_relevance(const std::string& fstype, const std::string& mountpoint, const RelevanceRules& rules) {
    if (is_fuse_fstype(fstype, rules.fs_types)) return MountRelevance::FuseMount;
    if (path_is_within(mountpoint, rules.root_dir) || path_is_within(rules.root_dir, mountpoint))
        return MountRelevance::KubeletTree;
    if (covers_any(mountpoint, rules.source_paths)) return MountRelevance::SourcePath;
    return MountRelevance::Unrelated;
}

MountRelevance mount_relevance(const MountEntry& e, const RelevanceRules& rules) {
    return mount_relevance(e.fstype, e.mountpoint, rules);
}

MountRelevance change_relevance(const MountEntry* before, const MountEntry* after, const RelevanceRules& rules) {
    if (before) {
        MountRelevance r = mount_relevance(*before, rules);
        if (r != MountRelevance::Unrelated) return r;
    }
    if (after) return mount_relevance(*after, rules);
    return MountRelevance::Unrelated;
}

bool matters_to_plans(const std::string& fstype, const std::string& mountpoint, const RelevanceRules& rules,
                      bool shares_fuse_mountpoint) {
    return shares_fuse_mountpoint || is_fuse_fstype(fstype, rules.fs_types) ||
           std::binary_search(rules.source_paths.begin(), rules.source_paths.end(), mountpoint) ||
           path_is_within(rules.root_dir, mountpoint);
}

bool matters_to_plans(const MountEntry& e, const RelevanceRules& rules, bool shares_fuse_mountpoint) {
    return matters_to_plans(e.fstype, e.mountpoint, rules, shares_fuse_mountpoint);
}

std::vector<MountEntry> keep_mounts_that_matter(std::vector<MountEntry> entries, const RelevanceRules& rules) {
    std::unordered_set<std::string_view> fuse_mountpoints;
    for (const MountEntry& e : entries)
        if (is_fuse_fstype(e.fstype, rules.fs_types)) fuse_mountpoints.insert(e.mountpoint);
    // Decided before anything is moved: the set views the entries' strings.
    std::vector<bool> keep(entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i)
        keep[i] = matters_to_plans(entries[i], rules, fuse_mountpoints.count(entries[i].mountpoint) > 0);
    fuse_mountpoints.clear();
    std::vector<MountEntry> kept;
    kept.reserve(static_cast<std::size_t>(std::count(keep.begin(), keep.end(), true)));
    for (std::size_t i = 0; i < entries.size(); ++i)
        if (keep[i]) kept.push_back(std::move(entries[i]));
    return kept;
}

} // namespace fh
