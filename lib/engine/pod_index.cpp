#include "engine/pod_index.h"

#include <dirent.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/model.h"
#include "engine/sys.h"

namespace fh {

namespace {

constexpr const char* kCsiPlugin = "kubernetes.io~csi";
// Depth below pods/: 0 pods/, 1 <uid>, 2 volumes, 3 kubernetes.io~csi, 4 <vol>.
constexpr int kVolumeDirDepth = 4;
// The watch on an ancestor of a pods/ that does not exist yet.
constexpr int kAncestorDepth = -1;
constexpr uint32_t kDirEvents = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                                IN_CLOSE_WRITE | IN_ONLYDIR;

// Returns true when the entry `name` at `depth` (the depth of its parent) is
// a directory this index descends into.
bool descends(const std::string& name, int parent_depth) {
    switch (parent_depth) {
    case 0: return true;                   // <uid>
    case 1: return name == "volumes";
    case 2: return name == kCsiPlugin;
    case 3: return true;                   // <vol>
    default: return false;                 // never into <vol>/mount
    }
}

} // namespace

PodIndex::PodIndex(std::string root_dir) : root_dir_(std::move(root_dir)), pods_dir_(root_dir_ + "/pods") {
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0) spdlog::warn("failed to set up inotify, ignoring: {}; pods are indexed on rescans only",
                              std::strerror(errno));
}

PodIndex::~PodIndex() {
    if (fd_ >= 0) ::close(fd_);
}

std::size_t PodIndex::volumes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return volumes_.size();
}

int PodIndex::add_watch(const std::string& path, int depth, int parent) {
    if (fd_ < 0) return kNoParent;
    // The watch mask here includes IN_CLOSE_WRITE only where vol_data.json lives.
    uint32_t mask = depth == kVolumeDirDepth   ? (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF)
                    : depth == kAncestorDepth ? (IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR)
                                              : (kDirEvents & ~IN_CLOSE_WRITE);
    int wd = ::inotify_add_watch(fd_, path.c_str(), mask | IN_DONT_FOLLOW);
    if (wd < 0) {
        if (errno == ENOSPC && !degraded_) {
            degraded_ = true;
            // Once per degradation, not at every rescan that meets the limit again.
            if (!reported_degraded_)
                spdlog::warn("failed to watch {}, ignoring: the inotify watch limit is reached "
                             "(fs.inotify.max_user_watches, per user); the pod index is degraded to rescans: new "
                             "pods' vol_data.json and renamed directories are seen at the next safety scan",
                             path);
            reported_degraded_ = true;
        }
        return kNoParent;
    }
    // A directory watched already (listed and reported both, or renamed)
    // gets its wd again: the entry then takes this path and depth. Its
    // name is relative to the parent's watch unless that would make a
    // loop (the same directory reached below itself, e.g. a bind mount).
    const bool relative = parent != kNoParent && !is_ancestor(wd, parent) && watches_.count(parent);
    Watch& w = watches_[wd];
    w.depth = depth;
    if (relative) {
        w.parent = parent;
        w.name = path.substr(path.rfind('/') + 1);
    } else {
        w.parent = kNoParent;
        w.name = path;
    }
    return wd;
}

bool PodIndex::is_ancestor(int wd, int other) const {
    // Bounded: every chain is acyclic (add_watch never closes a loop).
    for (int cur = other; cur != kNoParent;) {
        if (cur == wd) return true;
        const auto it = watches_.find(cur);
        if (it == watches_.end()) return false;
        cur = it->second.parent;
    }
    return false;
}

std::string PodIndex::path_of(const Watch& w) const {
    // At most 5 levels (pods/<uid>/volumes/kubernetes.io~csi/<vol>).
    std::vector<const Watch*> chain{&w};
    while (chain.back()->parent != kNoParent) {
        const auto it = watches_.find(chain.back()->parent);
        if (it == watches_.end()) break;  // never: forget_watch() makes children full paths first
        chain.push_back(&it->second);
    }
    std::string path = chain.back()->name;
    for (auto it = chain.rbegin() + 1; it != chain.rend(); ++it) path.append("/").append((*it)->name);
    return path;
}

void PodIndex::forget_watch(int wd) {
    const auto gone = watches_.find(wd);
    if (gone == watches_.end()) return;
    // Its children (a directory renamed out of it, whose watch lives on)
    // keep the path they had, as a full path.
    for (auto& [child_wd, child] : watches_) {
        if (child.parent != wd) continue;
        child.name = path_of(child);
        child.parent = kNoParent;
    }
    watches_.erase(gone);
}

void PodIndex::load_vol_data(const std::string& vol_dir) {
    const std::string file = vol_dir + "/vol_data.json";
    auto text = sys::read_small_file(file);
    std::lock_guard<std::mutex> lock(mu_);
    if (!text) {
        volumes_.erase(volume_key(vol_dir));
        return;
    }
    auto vd = parse_vol_data(*text, file);
    if (!vd) {
        spdlog::warn("failed to read {}, ignoring: {}", file, vd.error().message());
        volumes_.erase(volume_key(vol_dir));
        return;
    }
    volumes_.insert_or_assign(volume_key(vol_dir), PackedVolume({vd->driver_name, vd->volume_handle, vd->spec_vol_id,
                                                                vd->pod_uid}));
}

// Recursive, one level per directory, never deeper than kVolumeDirDepth.
void PodIndex::scan_dir(const std::string& path, int depth, int parent) { // NOLINT(misc-no-recursion): bounded, above
    // Watch first, then list: an entry created between the two is then
    // either listed or reported by the watch (mkdir -p races a late watch).
    const int wd = add_watch(path, depth, parent);
    if (depth == kVolumeDirDepth) {
        load_vol_data(path);
        return;
    }
    DIR* d = ::opendir(path.c_str());
    if (!d) return;
    std::vector<std::string> subdirs;
    while (struct dirent* de = ::readdir(d)) {
        std::string name = de->d_name;
        if (name == "." || name == "..") continue;
        // d_type comes from the parent directory (the node's disk), so this
        // never stats a mountpoint.
        if (de->d_type != DT_DIR) continue;
        if (descends(name, depth)) subdirs.push_back(path + "/" + name);
    }
    ::closedir(d);
    for (const auto& s : subdirs) scan_dir(s, depth + 1, wd);
}

void PodIndex::set_root_dir(std::string root_dir) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        root_dir_ = std::move(root_dir);
        pods_dir_ = root_dir_ + "/pods";
        // Keyed relative to the old pods/: gone with it (rescan() reads the
        // new tree next), so no lookup meanwhile finds them under the new one.
        volumes_.clear();
    }
    rescan();
}

void PodIndex::wait_for_pods_dir() {
    // Walk up to the deepest ancestor that exists; its IN_CREATE tells when
    // the next component appears (then this runs again, one level deeper).
    std::string dir = pods_dir_;
    struct stat st {};
    while (dir.size() > 1) {
        dir.resize(std::max<std::size_t>(dir.rfind('/'), 1));
        if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) break;
    }
    if (!waiting_)
        spdlog::warn("{} does not exist yet (kubelet not started?); waiting for it, watching {}", pods_dir_, dir);
    waiting_ = true;
    add_watch(dir, kAncestorDepth, kNoParent);
}

void PodIndex::rescan() {
    if (fd_ >= 0) {
        for (const auto& [wd, w] : watches_) ::inotify_rm_watch(fd_, wd);
    }
    watches_.clear();
    degraded_ = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        volumes_.clear();
    }
    struct stat st {};
    if (::stat(pods_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        wait_for_pods_dir();
        return;
    }
    if (waiting_) spdlog::info("{} appeared; indexing pods", pods_dir_);
    waiting_ = false;
    scan_dir(pods_dir_, 0, kNoParent);
    if (reported_degraded_ && !degraded_) {
        spdlog::info("inotify watches are available again: the pod index watches the pods tree again ({} watches)",
                     watches_.size());
        reported_degraded_ = false;
    }
}

std::string PodIndex::degraded_reason() const {
    if (!degraded_) return {};
    return "the inotify watch limit is reached (fs.inotify.max_user_watches): the pod index is incomplete and "
           "rescans at each safety scan";
}

int PodIndex::handle_events() {
    if (fd_ < 0) return 0;
    alignas(struct inotify_event) char buf[16384];
    int handled = 0;
    for (;;) {
        ssize_t n = ::read(fd_, buf, sizeof(buf));
        if (n <= 0) break;
        for (char* p = buf; p < buf + n;) {
            auto* ev = reinterpret_cast<struct inotify_event*>(p);
            p += sizeof(struct inotify_event) + ev->len;
            ++handled;
            if (ev->mask & IN_Q_OVERFLOW) {
                ++overflows_;
                spdlog::warn("inotify queue overflowed (more than fs.inotify.max_queued_events queued); rescanning {}",
                             pods_dir_);
                rescan();
                return handled;
            }
            auto it = watches_.find(ev->wd);
            if (it == watches_.end()) continue;
            const std::string dir = path_of(it->second);
            const int depth = it->second.depth;
            if (depth == kAncestorDepth) {
                // Something appeared (or the ancestor went away): look again.
                rescan();
                return handled;
            }
            if (depth == 0 && (ev->mask & IN_DELETE_SELF)) {
                rescan();  // pods/ itself was removed: wait for it again
                return handled;
            }
            if (ev->mask & (IN_IGNORED | IN_DELETE_SELF)) {
                if (ev->mask & IN_IGNORED) forget_watch(ev->wd);
                if (depth == kVolumeDirDepth) {
                    std::lock_guard<std::mutex> lock(mu_);
                    volumes_.erase(volume_key(dir));
                }
                continue;
            }
            if ((ev->mask & (IN_MOVED_FROM | IN_MOVED_TO)) && (ev->mask & IN_ISDIR)) ++dirs_renamed_;
            const std::string name = ev->len ? ev->name : "";
            if (depth == kVolumeDirDepth) {
                if (name == "vol_data.json") load_vol_data(dir);
                continue;
            }
            if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && (ev->mask & IN_ISDIR) && descends(name, depth))
                scan_dir(dir + "/" + name, depth + 1, ev->wd);
        }
    }
    return handled;
}

std::string PodIndex::volume_key(const std::string& vol_dir) const {
    // The same parse as lookup()'s of a target path, so both make one key.
    const auto where = parse_pod_path(vol_dir, root_dir_);
    if (!where || where->kind != TargetKind::Volume) return vol_dir;
    return where->pod_uid + "/" + where->volume;
}

std::optional<VolumeData> PodIndex::lookup(const std::string& target) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto where = parse_pod_path(target, root_dir_);
    if (!where) return std::nullopt;
    auto it = volumes_.find(where->pod_uid + "/" + where->volume);
    if (it == volumes_.end()) return std::nullopt;
    const PackedVolume& p = it->second;
    return VolumeData{std::string(p[0]), std::string(p[1]), std::string(p[2]), std::string(p[3])};
}

} // namespace fh
