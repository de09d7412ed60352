#include "core/model.h"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <map>
#include <set>
#include <string_view>

namespace fh {

const char* to_string(TargetKind kind) {
    switch (kind) {
    case TargetKind::GlobalMount: return "global";
    case TargetKind::Volume: return "volume";
    case TargetKind::Subpath: return "subpath";
    }
    return "?";
}

bool is_fuse_fstype(const std::string& fstype, const std::vector<std::string>& globs) {
    return std::any_of(globs.begin(), globs.end(), [&](const std::string& g) {
        return fnmatch(g.c_str(), fstype.c_str(), 0) == 0;
    });
}

bool path_is_within(std::string_view path, std::string_view dir) {
    if (dir == "/") return path.starts_with('/');
    if (!path.starts_with(dir)) return false;
    return path.size() == dir.size() || path[dir.size()] == '/';
}

namespace {

// Splits "a/b/c" into `out`, dropping empty components: views into `s`.
// Returns how many were stored, at most N: a caller that wants up to N - 1
// learns from an N-th that the path is deeper. A fixed array, not a vector:
// classify parses every FUSE mount's path at every step.
template <std::size_t N>
std::size_t split_components(std::string_view s, std::array<std::string_view, N>& out) {
    std::size_t n = 0;
    std::size_t i = 0;
    while (i < s.size() && n < N) {
        std::size_t j = s.find('/', i);
        if (j == std::string_view::npos) j = s.size();
        if (j > i) out[n++] = s.substr(i, j - i);
        i = j + 1;
    }
    return n;
}

// Returns true when `path` lies strictly below `dir` (component-wise).
bool is_below(std::string_view path, std::string_view dir) {
    return path_is_within(path, dir) && path.size() > dir.size();
}

} // namespace

bool is_normalized_path(const std::string& path) {
    if (path.empty() || path[0] != '/') return false;
    if (path == "/") return true;
    if (path.back() == '/') return false;
    for (std::size_t i = 1; i <= path.size();) {
        std::size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        const std::string_view part(path.data() + i, j - i);
        if (part.empty() || part == "." || part == "..") return false;
        i = j + 1;
    }
    return true;
}

namespace {

// Returns true when `e` may be a source: a mount of the filesystem's root,
// outside the pods tree, and under a configured prefix if any are set.
// `pods` is <root_dir>/pods, made once by the caller.
bool is_source_candidate(const MountEntry& e, const MatchRules& rules, const std::string& pods) {
    // The kernel never prints "." or ".." components; a table that has them
    // was not written by it, and no path of it is acted on.
    // The prefix test first: it rules out every pod mount without scanning
    // its path.
    if (e.root != "/" || path_is_within(e.mountpoint, pods) || !is_normalized_path(e.mountpoint)) return false;
    if (rules.source_prefixes.empty()) return true;
    // CSI staging mounts under plugins/ are never the FUSE daemon's own mount
    // point when prefixes are configured; prefixes name where daemons mount.
    return std::any_of(rules.source_prefixes.begin(), rules.source_prefixes.end(),
                       [&](const std::string& p) { return path_is_within(e.mountpoint, p); });
}

} // namespace

namespace {

// parse_pod_path with <root_dir>/pods given (classify makes it once, not
// once per FUSE mount).
std::optional<TargetPath> parse_path_below_pods(std::string_view path, std::string_view pods) {
    if (!is_below(path, pods)) return std::nullopt;
    // Five components at most (see below); a sixth says "deeper".
    std::array<std::string_view, 6> parts;
    const std::size_t n = split_components(path.substr(pods.size()), parts);
    // <uid>/volumes/<plugin>/<volume>[/mount]  or  <uid>/volume-subpaths/<volume>/<ctr>/<n>
    if (n < 3 || n > 5) return std::nullopt;
    for (std::size_t i = 0; i < n; ++i)
        if (parts[i] == "." || parts[i] == "..") return std::nullopt;
    TargetPath tp;
    if (parts[1] == "volumes" && (n == 4 || (n == 5 && parts[4] == "mount"))) {
        tp.kind = TargetKind::Volume;
        tp.pod_uid = parts[0];
        tp.volume = parts[3];
        return tp;
    }
    if (parts[1] == "volume-subpaths" && n == 5) {
        tp.kind = TargetKind::Subpath;
        tp.pod_uid = parts[0];
        tp.volume = parts[2];
        return tp;
    }
    return std::nullopt;
}

} // namespace

std::optional<TargetPath> parse_pod_path(const std::string& path, const std::string& root_dir) {
    return parse_path_below_pods(path, root_dir + "/pods");
}

std::string Origin::clone_path() const {
    if (root.empty() || root == "/") return source_path;
    return source_path + root;
}

Classification classify(const MountTable& table, const MatchRules& rules, const OriginMap* remembered) {
    Classification c;
    const std::string plugins = rules.root_dir + "/plugins";
    const std::string pods_dir = rules.root_dir + "/pods";
    // Which entries are FUSE mounts, matched once per distinct fstype (a
    // table has a handful; fnmatch per entry and glob was a tenth of a step).
    std::vector<std::pair<std::string_view, bool>> fstypes;
    std::vector<bool> fuse(table.size());
    for (std::size_t i = 0; i < table.size(); ++i) {
        const std::string& t = table.entries()[i].fstype;
        auto known = std::find_if(fstypes.begin(), fstypes.end(), [&](const auto& f) { return f.first == t; });
        if (known == fstypes.end()) known = fstypes.insert(fstypes.end(), {t, is_fuse_fstype(t, rules.fs_types)});
        fuse[i] = known->second;
    }
    // Devices that have a source candidate outside <root_dir>: for those, a
    // plugins/ mount is a CSI staging mount (a target), not the source.
    std::set<dev_t> has_outside_source;
    for (std::size_t i = 0; i < table.size(); ++i) {
        const MountEntry& e = table.entries()[i];
        if (fuse[i] && is_source_candidate(e, rules, pods_dir) && !path_is_within(e.mountpoint, rules.root_dir))
            has_outside_source.insert(e.device);
    }
    auto is_staging_target = [&](const MountEntry& e) {
        return is_below(e.mountpoint, plugins) && is_normalized_path(e.mountpoint) &&
               (has_outside_source.count(e.device) || (remembered && remembered->count(e.mountpoint)));
    };
    for (std::size_t i = 0; i < table.size(); ++i) {
        const MountEntry& e = table.entries()[i];
        if (fuse[i] && !is_staging_target(e) && is_source_candidate(e, rules, pods_dir)) c.sources.push_back(&e);
    }
    // Targets in path order: walking the table's mountpoint index gives it
    // without sorting (sorting 2,000 paths with a long common prefix was a
    // tenth of classify).
    std::vector<Target> globals, pods;
    for (std::uint32_t i : table.by_mountpoint()) {
        if (!fuse[i]) continue;
        const MountEntry& e = table.entries()[i];
        // Only the mount a path walk reaches counts: the top of the stack.
        if (!table.is_reached(e)) continue;
        if (auto where = parse_path_below_pods(e.mountpoint, pods_dir))
            pods.push_back(Target{&e, std::move(*where), e.mountpoint});
        else if (is_staging_target(e))
            globals.push_back(Target{&e, TargetPath{TargetKind::GlobalMount, {}, {}}, e.mountpoint});
    }
    c.targets = std::move(globals);
    c.targets.insert(c.targets.end(), std::make_move_iterator(pods.begin()), std::make_move_iterator(pods.end()));
    return c;
}

std::optional<Origin> origin_from_table(const Classification& c, const Target& target,
                                        const MatchRules& rules) {
    const MountEntry* best = nullptr;
    for (const MountEntry* s : c.sources) {
        if (s->device != target.mount->device || s->mountpoint == target.path) continue;
        // A plugins/ staging mount is only a source when nothing outside the
        // kubelet tree mounts the same superblock; prefer the latter.
        if (!best || (path_is_within(best->mountpoint, rules.root_dir) &&
                      !path_is_within(s->mountpoint, rules.root_dir)))
            best = s;
    }
    if (!best) return std::nullopt;
    Origin o;
    o.source_path = best->mountpoint;
    o.root = target.mount->root;  // source root is "/", so the target's root is relative to it
    o.fstype = target.mount->fstype;
    o.source = target.mount->source;
    o.flags = target.mount->flags;
    return o;
}

} // namespace fh
