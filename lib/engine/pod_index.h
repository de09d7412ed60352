// An index of pods and their CSI volumes under <root_dir>/pods, kept current
// with inotify, so heal logs can name the driver and volume handle behind a
// target. Watches: pods/, pods/<uid>/, pods/<uid>/volumes/,
// pods/<uid>/volumes/kubernetes.io~csi/ and each CSI volume dir (where
// kubelet writes vol_data.json). It never descends into a volume's `mount`
// directory or stats it: that is the FUSE mountpoint, and a hung FUSE daemon
// would block the call.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/packed_strings.h"
#include "core/voldata.h"

namespace fh {

class PodIndex {
public:
    explicit PodIndex(std::string root_dir);
    ~PodIndex();
    PodIndex(const PodIndex&) = delete;
    PodIndex& operator=(const PodIndex&) = delete;

    // Returns the inotify fd to poll (readable when events are pending), or
    // -1 when inotify could not be set up (the index then rescans on the
    // safety timer only).
    int fd() const { return fd_; }

    // Reads pending inotify events and updates the index; rescans everything
    // on IN_Q_OVERFLOW. Returns the number of events handled.
    int handle_events();

    // Rebuilds the whole index from the tree (also (re)adding watches).
    void rescan();

    // Points the index at another <root_dir> (a reloaded config) and rescans.
    void set_root_dir(std::string root_dir);

    // Returns the vol_data.json of the CSI volume a target path belongs to:
    // pods/<uid>/volumes/kubernetes.io~csi/<vol>/mount -> that volume's file;
    // pods/<uid>/volume-subpaths/<vol>/... -> the volume named <vol> of pod <uid>.
    std::optional<VolumeData> lookup(const std::string& target) const;

    // Returns how many CSI volumes are indexed and watches are held.
    std::size_t volumes() const;
    std::size_t watches() const { return watches_.size(); }

    // Returns true while <root_dir>/pods does not exist (kubelet has not
    // started yet): the deepest existing ancestor is watched instead, and the
    // index fills itself once the directory appears.
    bool waiting_for_pods_dir() const { return waiting_; }

    // Returns how many directories were renamed in or out of a watched
    // directory so far. The mounts below a renamed directory change their
    // mountpoint without any mount event (see engine/mount_tracker.h).
    std::uint64_t dirs_renamed() const { return dirs_renamed_; }

    // Returns true when a watch could not be added (e.g. the inotify watch
    // limit was reached): the index is incomplete and rescans are the fallback.
    bool degraded() const { return degraded_; }
    // Returns why the index is degraded, for the status; "" when it is not.
    std::string degraded_reason() const;

    // Returns how many times the inotify queue overflowed (each time, the
    // index was rebuilt by a rescan).
    std::uint64_t overflows() const { return overflows_; }

private:
    // `parent`: the wd of the watch on path's parent directory, or kNoParent.
    void scan_dir(const std::string& path, int depth, int parent);
    // Returns the wd watching `path`, or kNoParent when none could be added.
    int add_watch(const std::string& path, int depth, int parent);
    void load_vol_data(const std::string& vol_dir);
    // Watches the deepest existing ancestor of pods_dir_ for it to appear.
    void wait_for_pods_dir();

    std::string root_dir_;   // written by the loop thread under mu_; lookup() reads it
    std::string pods_dir_;
    int fd_ = -1;
    bool degraded_ = false;
    bool reported_degraded_ = false;  // the degradation was logged (and its end will be)
    bool waiting_ = false;
    std::uint64_t overflows_ = 0;
    std::uint64_t dirs_renamed_ = 0;
    // One watched directory: its name below its parent's watch, so each
    // path is stored once as its components (~0.5 MiB less at 1,000 pods,
    // 5,000 watches: full paths, and a second map from path to wd, held
    // ~1 MiB; scale_bench heap).
    static constexpr int kNoParent = -1;
    struct Watch {
        int parent = kNoParent;  // the parent's wd, or kNoParent: `name` is then the full path
        int depth = 0;           // below pods/ (kAncestorDepth: an ancestor of a missing pods/)
        std::string name;
    };
    // Returns the path of the directory watched as `w`.
    std::string path_of(const Watch& w) const;
    // Forgets the watch `wd`; its children keep their path as a full path.
    void forget_watch(int wd);
    // Returns true when `wd` is `other` or one of its ancestors.
    bool is_ancestor(int wd, int other) const;

    std::unordered_map<int, Watch> watches_;  // by wd
    mutable std::mutex mu_;
    // Returns the key of the CSI volume dir `vol_dir` in volumes_ (mu_ held):
    // "<uid>/<vol>" for pods/<uid>/volumes/<plugin>/<vol> (parse_pod_path, as
    // lookup() parses a target), else the path itself (a directory renamed
    // away; never equal to a short key, as it begins with '/'). ~0.2 MiB
    // less than full paths at 2,000 volumes.
    std::string volume_key(const std::string& vol_dir) const;
    // Each VolumeData in one allocation (four strings held 128 bytes inline,
    // and each field longer than 15 bytes on the heap apart): driver_name,
    // volume_handle, spec_vol_id, pod_uid.
    using PackedVolume = PackedStrings<4>;
    std::map<std::string, PackedVolume> volumes_;  // by volume_key()
};

} // namespace fh
