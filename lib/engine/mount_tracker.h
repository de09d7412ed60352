// Mount tracking by fanotify: the host's mount table kept up to date one
// changed mount at a time, instead of re-reading /proc/self/mountinfo (~15 ms
// at 10,000 mounts) on every mount event.
//
// Kernel interfaces (all measured on this 6.18 kernel; Debian 12's headers
// lack them, so mount_tracker.cpp defines them):
// - fanotify_init(FAN_REPORT_MNT | FAN_CLASS_NOTIF) (Linux 6.14; any other
//   class is EINVAL) and fanotify_mark(FAN_MARK_ADD | FAN_MARK_MNTNS,
//   FAN_MNT_ATTACH | FAN_MNT_DETACH) on /proc/self/ns/mnt (dirfd AT_FDCWD and
//   the path, or an nsfs fd and a NULL path; AT_FDCWD with a NULL path is
//   EBADF). Each event is a fanotify_event_metadata (24 bytes, fd FAN_NOFD,
//   pid of the process that changed the table) followed by one info record
//   of type FAN_EVENT_INFO_TYPE_MNT (7): a 4-byte header, 4 bytes of padding
//   and the 64-bit unique mount id (record length 16). A move within the
//   namespace is one event with both ATTACH and DETACH set; an rbind or a
//   propagated mount gives one ATTACH per mount; a lazy unmount one DETACH
//   per mount of the subtree, propagated copies included.
// - listmount(LSMT_ROOT) (syscall 458, Linux 6.8) for the initial table and
//   resyncs, statmount(2) (457, fs subtype and source since 6.13) per mount.
//   statmount of a detached mount fails (ENOENT), so the entry of each id is
//   kept: a detach is applied from it.
//
// What fanotify does NOT report, and how it is covered:
// - A mount moved (MS_MOVE, move_mount) is reported, but not its submounts,
//   whose mountpoints change with it: they are looked up again.
// - A mount reparented without being attached: MOVE_MOUNT_BENEATH and mount
//   propagation "tuck" a new mount under the one at that spot (no event for
//   the mount now on top, measured), and an unmount reparents a mount
//   covering the unmounted one's root onto its parent (reported as a move on
//   6.18). After each attach (detach) the mounts at the same mountpoint
//   (sitting on the detached mount) are looked up again.
// - Slaves whose master peer group lost its last member in this namespace
//   (the kernel turns them private or hands them to another master): after
//   such a detach, the slaves of that group are looked up again.
// - Per-mount flags changed by MS_REMOUNT|MS_BIND or mount_setattr(), and a
//   superblock remount. These make /proc/self/mountinfo POLLPRI (measured),
//   so the tracker polls it too and then looks up again the FUSE mounts
//   attached during the last young_window (2 s): kubelet binds a CSI volume
//   and remounts it read-only right after, and a target's read-only flag
//   decides whether it may be healed. Other mounts' flags (the engine reads
//   no others), and a FUSE mount remounted later, are seen at the next
//   resync.
// - Propagation changes (--make-shared/slave/private, mount_setattr
//   propagation): no notification at all, not even POLLPRI; a root whose
//   directory was deleted ("/dir//deleted"); a mountpoint whose parent
//   directory was renamed. Seen at the next resync; the daemon asks for one
//   when its inotify watches of the pods tree see a directory renamed.
// A resync lists the whole table again (request_resync(): the daemon's
// safety timer, every [heal] safety_scan_interval; and a queue overflow) and
// logs how many entries it found different.
//
// Threads: the event loop calls update() when an fd is readable (cheap: one
// read() and one statmount() per event); the heal worker calls table() from
// Engine::reconcile. Both take the tracker's mutex. table() first applies
// every event already queued by the kernel (mount events are queued before
// the mount syscall returns), so the engine always sees its own actions and
// everything before them; then it returns an immutable snapshot
// (shared_ptr<const MountTable>) that the engine holds for its step. The
// tracker keeps only a weak reference: a snapshot is rebuilt when the table
// changed since the last one, or when no step holds it any more (~6 MiB of
// heap at 10,000 mounts, not worth keeping between reconciles; a rebuild
// costs ~6 ms there, a read of mountinfo ~15-90 ms). A resync lists and looks up every mount without the mutex
// (~35 ms at 10,000 mounts; the loop keeps applying events meanwhile, and
// they are applied again to the new table), so the loop never waits for it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/flat_multimap.h"
#include "core/mount_relevance.h"
#include "core/mountinfo.h"
#include "engine/sys.h"

namespace fh {

// One mount event the tracker applied, for its observer (metrics, logs).
struct TrackedEvent {
    // "attached", "detached", "moved", "changed" (flags seen changed after
    // mountinfo's POLLPRI) or "overflow" (the kernel dropped events).
    const char* kind = "";
    bool relevant = false;
    // Why it is relevant: to_string(MountRelevance), or "queue-overflow".
    const char* why = "";
    // Of the mount after the change, else before; "" when unknown. Valid
    // during the observer's call only.
    std::string_view mountpoint;
};

struct MountTrackerOptions {
    std::string ns_path = "/proc/self/ns/mnt";
    std::string mountinfo_path = "/proc/self/mountinfo";  // polled for POLLPRI (remounts)
    // How long after its attach a FUSE mount is looked up again on each
    // POLLPRI of mountinfo (see above). Each POLLPRI costs one statmount
    // (~3.5 us) per young FUSE mount.
    std::chrono::milliseconds young_window{2000};
};

class MountTracker {
public:
    using Observer = std::function<void(const TrackedEvent&)>;

    // Returns a tracker of the namespace of options.ns_path, with its table
    // listed (the fanotify mark is placed first, so nothing attached during
    // the listing is missed), or an Error naming the step and errno (EINVAL
    // from fanotify_init on kernels without FAN_REPORT_MNT, EPERM without
    // CAP_SYS_ADMIN or under a seccomp filter). `observer` is called for
    // every event applied, from whichever thread applies it, with the
    // tracker's mutex held: it must not call back into the tracker.
    static Result<std::unique_ptr<MountTracker>> open(RelevanceRules rules, Observer observer = {},
                                                      MountTrackerOptions options = {});
    ~MountTracker();
    MountTracker(const MountTracker&) = delete;
    MountTracker& operator=(const MountTracker&) = delete;

    // The fds to poll: fanotify (readable) and, while
    // wants_mountinfo_poll(), mountinfo (POLLPRI).
    int fanotify_fd() const { return fan_.get(); }
    int mountinfo_fd() const { return mountinfo_.get(); }

    // Replaces the config part of the relevance rules (root_dir, fs_types).
    void set_match(const MatchRules& match);
    // Replaces the source paths of the relevance rules (any order).
    void set_source_paths(std::vector<std::string> source_paths);

    struct UpdateSummary {
        int events = 0;    // events applied
        int relevant = 0;  // of which relevant
        bool overflow = false;  // events were lost: a resync is pending (table() does it)
    };
    // Applies the queued events (and, after mountinfo's POLLPRI, looks up
    // the young relevant mounts again). Returns what it applied; a
    // reconcile is due when relevant > 0 or overflow.
    UpdateSummary update();

    // Returns true while young FUSE mounts are watched for remounts: the
    // loop polls mountinfo_fd() for POLLPRI only then (every mount change
    // raises it, so polling it always would double the wake-ups).
    bool wants_mountinfo_poll();

    // Notes that the mount with this 64-bit unique id is one of the daemon's
    // own heals, about to be attached (thread-safe; Executor's own-mount
    // hook): it is not watched as a young mount, since its flags are those
    // the executor gave it before attaching it and no kubelet remounts it.
    // Watching it cost one statmount per young mount per mount event: after
    // a heal of 200 targets, 200 look-ups for each of the next events
    // (~11 % of the daemon's CPU in scale_bench's supervisor cycles).
    void note_own_mount(std::uint64_t unique_id);

    // Returns the table as of now, holding the mounts that matter to plans
    // (core/mount_relevance.h, under the rules set last): queued events
    // applied, and the resync done first when one is pending. Returns an Error only when a resync
    // fails to list the table (the tables before it stays in use then, and
    // the resync is tried again at the next call).
    Result<std::shared_ptr<const MountTable>> table();

    // Returns every tracked mount, related or not, as of now (queued events
    // applied, a pending resync done): what the tracker keeps, which tests
    // compare with mountinfo.
    MountTable whole_table();

    // Makes the next table() list the whole table again.
    void request_resync();

    // Returns the number of mounts tracked.
    std::size_t size() const;
    // Returns the number of resyncs done, and how many entries the last one
    // found different (added, removed or changed) from the tracked table.
    std::uint64_t resyncs() const;
    std::size_t last_resync_differences() const;

private:
    MountTracker(RelevanceRules rules, Observer observer, MountTrackerOptions options);

    // One tracked mount: what statmount said of it, in a compact form. A
    // node holds ~10,000 mounts, most of which never matter; a MountEntry is
    // 224 bytes (six strings), and here its two option strings are always
    // empty (statmount is not asked for them) while fstype and source repeat
    // across most mounts ("tmpfs", "overlay", one per FUSE dataset), so those
    // two are interned. 112 bytes instead of 224: ~1.1 MiB less at 10,000
    // mounts (docs/PERFORMANCE.md, Session 7).
    struct Tracked {
        int mount_id = 0;
        int parent_id = 0;
        dev_t device = 0;
        MountFlags flags;
        Propagation propagation;
        const std::string* fstype = nullptr;  // a key of interned_, never null once stored
        const std::string* source = nullptr;  // a key of interned_, never null once stored
        // A key of interned_ too: most roots are "/", and a pointer is 24
        // bytes less per mount than a std::string (~0.25 MiB at 10,000).
        const std::string* root = nullptr;
        std::string mountpoint;
    };
    using Entries = std::map<std::uint64_t, Tracked>;  // by unique id: mountinfo order
    using Node = const Entries::value_type*;            // an entry, as the indexes point at it
    // A group id (a parent's mountinfo id, a master peer group) -> the ids
    // of its members, in no order; each member once (every index_locked is
    // paired with an unindex_locked). Thousands of mounts can share a
    // parent (8,000 in scale_bench): finding one among them by walking an
    // unordered_multimap's nodes at each detach was 27% of the daemon's CPU
    // per unrelated mount event. A vector searched from its end costs
    // nothing for the usual detach, of a recent mount (unique ids grow, and
    // a new member is appended), and a few microseconds of sequential reads
    // at worst; it holds 8 bytes per member where an unordered_set held a
    // 32-byte node and a bucket (~0.3 MiB at 10,000 mounts, Session 13).
    using IdGroups = std::unordered_map<int, std::vector<std::uint64_t>>;
    // What one event did: its relevance, the mountpoint to report.
    struct Outcome {
        MountRelevance relevance = MountRelevance::Unrelated;
        std::string mountpoint;
        void add(MountRelevance r, const std::string& mp);
    };

    void update_locked(UpdateSummary& sum);
    // Returns whether `fstype` (an interned one) matches rules_.fs_types,
    // matched once per fstype and fs_types (fuse_types_).
    bool is_fuse_locked(const std::string* fstype);
    // Counts `e` in fuse_paths_ (`delta` +1 when indexed, -1 when not any
    // more) when it is a FUSE mount.
    void count_fuse_path_locked(const Tracked& e, int delta);
    // Applies the queued events, and does a pending resync (with `lock`,
    // which holds mu_, released meanwhile).
    void catch_up(std::unique_lock<std::mutex>& lock);
    // Reads the fanotify queue dry. `sum` counts; ids applied while a
    // resync runs are logged in replay_.
    void drain_locked(UpdateSummary& sum);
    void apply_event_locked(std::uint64_t id, bool attach, bool detach, Outcome& out);
    void refresh_young_locked(UpdateSummary& sum);
    // Drops the young mounts whose window has passed.
    void prune_young_locked();
    // Looks `id` up again and stores it (or drops it: gone). Returns its
    // entry, end() when gone; sets *changed when the entry changed, and
    // *moved when it was tracked before at another parent or mountpoint.
    Entries::iterator refresh_locked(std::uint64_t id, Outcome& out, bool* changed = nullptr, bool* moved = nullptr);
    // Drops an entry; returns its relevance.
    MountRelevance erase_at_locked(Entries::iterator it, MountEntry* removed = nullptr);
    // Drops an entry (unindexed, its interned strings released); returns
    // the entry after it.
    Entries::iterator drop_locked(Entries::iterator it);
    // Adds `node` (an entry of entries_) to the indexes, or takes it out.
    void index_locked(const Entries::value_type& node);
    void unindex_locked(const Entries::value_type& node);
    // Appends to `nodes` the entries whose mountpoint is `path`, in no order.
    void nodes_at_locked(std::string_view path, std::vector<Node>& nodes) const;
    // Returns the unique ids of the entries whose mountpoint is `path`, in no order.
    std::vector<std::uint64_t> ids_at_locked(std::string_view path) const;
    // Returns the interned copy of `s` (one more field points at it).
    const std::string* intern_locked(std::string s);
    // One field less points at `s`; the last one frees it.
    void release_locked(const std::string* s);
    // Returns `e` as a tracked entry (its fstype and source interned).
    Tracked make_tracked_locked(MountEntry e);
    // Makes `t` say what `e` says (the old interned strings released).
    void assign_locked(Tracked& t, MountEntry e);
    // Returns the full entry of a tracked mount (option strings empty).
    static MountEntry to_entry(const Tracked& t);
    // Returns the relevance of a tracked mount (mount_relevance).
    MountRelevance relevance_locked(const Tracked& t) const;
    // Returns the unique ids of the mounts below `old_id` (its submounts,
    // recursively), from the parent ids of the tracked entries.
    std::vector<std::uint64_t> descendants_locked(int old_id) const;
    void report_locked(const char* kind, const Outcome& out, UpdateSummary& sum);
    Status resync();

    RelevanceRules rules_;
    Observer observer_;
    MountTrackerOptions options_;
    sys::UniqueFd fan_;
    sys::UniqueFd mountinfo_;

    mutable std::mutex mu_;
    // The strings the entries' fstype, source and root point at, with how many
    // fields point at each (node-based: a key's address is stable).
    std::unordered_map<std::string, std::size_t> interned_;
    Entries entries_;
    // Indexes of entries_, pointing at its nodes (stable until erased; an
    // entry is taken out of them before it changes or goes). Flat tables:
    // 16 bytes a mount each, where unordered maps took ~48 and ~32 bytes
    // and their buckets (~0.45 MiB less at 10,000 mounts). A hash may be
    // shared by entries of other keys, so each look-up checks the entry.
    FlatHashMultimap<Node> by_mountpoint_;  // fnv1a(mountpoint) -> the entries there
    // fnv1a_mix of the reusable mountinfo id -> the entries with it (more
    // than one only while a reuse is being found out, see refresh_locked).
    FlatHashMultimap<Node> by_old_id_;
    // Mountpoint -> how many FUSE mounts (rules_.fs_types) are tracked
    // there: the snapshot (table()) starts from these paths instead of
    // testing each of a node's thousands of mounts. Rebuilt when fs_types
    // change (set_match).
    std::unordered_map<std::string, int> fuse_paths_;
    // Interned fstype -> whether it matches rules_.fs_types; cleared with them.
    std::unordered_map<const std::string*, bool> fuse_types_;
    std::unordered_map<int, int> peers_;                // shared peer group -> tracked members
    // master peer group -> its tracked slaves: when a group's last member
    // goes, its slaves are looked up again without a walk of every mount
    // (a shared tmpfs mounted and unmounted is such a group).
    IdGroups slaves_;
    // parent's mountinfo id -> tracked children: the submounts of a moved
    // mount are found without a walk of every mount (a FUSE daemon
    // mounted at a staging path and moved into place is one).
    IdGroups children_;
    // FUSE mounts attached recently, oldest first, looked up again after
    // each POLLPRI of mountinfo until `until`; `generation` is the update
    // that last looked each up.
    struct Young {
        std::uint64_t id;
        std::chrono::steady_clock::time_point until;
        std::uint64_t generation;
    };
    std::deque<Young> young_;
    // Ids from note_own_mount not yet seen attached. An attach that failed
    // leaves its id here (unique ids are never reused, so it matches
    // nothing): the set is emptied when it grows past kMaxOwnMounts.
    std::unordered_set<std::uint64_t> own_mounts_;
    static constexpr std::size_t kMaxOwnMounts = 4096;
    std::uint64_t generation_ = 0;  // update_locked() calls

    bool dirty_ = true;  // entries_ changed since snapshot_ was built
    std::weak_ptr<const MountTable> snapshot_;  // the last one, while a step holds it
    bool resync_pending_ = false;
    bool resyncing_ = false;
    // Events applied while a resync lists the table: (id, attach, detach),
    // applied again to the new table.
    struct Replay {
        std::uint64_t id;
        bool attach;
        bool detach;
    };
    std::vector<Replay> replay_;
    std::uint64_t resyncs_ = 0;
    std::size_t last_resync_differences_ = 0;
};

// Returns true when this kernel reports mount events through fanotify
// (FAN_REPORT_MNT, Linux 6.14) and the caller may watch its mount namespace
// (CAP_SYS_ADMIN). Side-effect free: the fanotify group is closed again.
bool fanotify_mount_is_usable();

} // namespace fh
