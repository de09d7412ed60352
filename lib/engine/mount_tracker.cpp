#include "engine/mount_tracker.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "core/fnv1a.h"
#include "engine/mount_query.h"

namespace fh {

namespace {

// <linux/fanotify.h> of Linux 6.14; Debian 12's (6.1) lacks them.
constexpr unsigned kFanReportMnt = 0x00004000;               // FAN_REPORT_MNT
constexpr unsigned kFanMarkMntns = 0x00000110;               // FAN_MARK_MNTNS
constexpr std::uint64_t kFanMntAttach = 0x01000000;          // FAN_MNT_ATTACH
constexpr std::uint64_t kFanMntDetach = 0x02000000;          // FAN_MNT_DETACH
constexpr std::uint8_t kFanEventInfoTypeMnt = 7;             // FAN_EVENT_INFO_TYPE_MNT
constexpr std::size_t kMntInfoIdOffset = 8;                  // fanotify_event_info_mnt.mnt_id (after hdr + pad)
constexpr std::size_t kMntInfoLen = 16;                      // sizeof(struct fanotify_event_info_mnt)

using SteadyClock = std::chrono::steady_clock;

Result<sys::UniqueFd> fanotify_open(const std::string& ns_path) {
    // FAN_CLASS_NOTIF is required with FAN_REPORT_MNT; the default queue
    // (16384 events, fs.fanotify.max_queued_events) is kept on purpose: an
    // overflow costs a resync, an unlimited queue costs unbounded memory
    // while the loop is stalled.
    const int fd = ::fanotify_init(kFanReportMnt | FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_error("fanotify_init(FAN_REPORT_MNT)", ns_path);
    sys::UniqueFd fan(fd);
    if (::fanotify_mark(fan.get(), FAN_MARK_ADD | kFanMarkMntns, kFanMntAttach | kFanMntDetach, AT_FDCWD,
                        ns_path.c_str()) != 0)
        return errno_error("fanotify_mark(FAN_MARK_MNTNS)", ns_path);
    return fan;
}

} // namespace

namespace {
// Returns true when a tracked entry says the same about a mount as a fresh
// look-up (the option strings are not compared: statmount does not fill them).
template <typename Tracked>
bool same_entry(const Tracked& a, const MountEntry& b) {
    return a.mount_id == b.mount_id && a.parent_id == b.parent_id && a.device == b.device && *a.root == b.root &&
           a.mountpoint == b.mountpoint && *a.fstype == b.fstype && *a.source == b.source && a.flags == b.flags &&
           a.propagation.shared_group == b.propagation.shared_group &&
           a.propagation.master_group == b.propagation.master_group &&
           a.propagation.unbindable == b.propagation.unbindable;
}

// Returns the by_old_id_ hash of a mountinfo id.
std::uint64_t old_id_hash(int mount_id) { return fnv1a_mix(kFnv1aOffsetBasis, static_cast<std::uint32_t>(mount_id)); }
} // namespace

void MountTracker::nodes_at_locked(std::string_view path, std::vector<Node>& nodes) const {
    by_mountpoint_.for_each(fnv1a(path), [&](Node n) {
        if (n->second.mountpoint == path) nodes.push_back(n);
        return true;
    });
}

std::vector<std::uint64_t> MountTracker::ids_at_locked(std::string_view path) const {
    std::vector<Node> nodes;
    nodes_at_locked(path, nodes);
    std::vector<std::uint64_t> ids;
    ids.reserve(nodes.size());
    for (Node n : nodes) ids.push_back(n->first);
    return ids;
}

const std::string* MountTracker::intern_locked(std::string s) {
    auto [it, inserted] = interned_.try_emplace(std::move(s), 0);
    ++it->second;
    return &it->first;
}

void MountTracker::release_locked(const std::string* s) {
    if (!s) return;
    auto it = interned_.find(*s);
    if (it != interned_.end() && --it->second == 0) {
        fuse_types_.erase(&it->first);  // the address may be handed to another string
        interned_.erase(it);
    }
}

MountTracker::Tracked MountTracker::make_tracked_locked(MountEntry e) {
    Tracked t;
    t.mount_id = e.mount_id;
    t.parent_id = e.parent_id;
    t.device = e.device;
    t.flags = e.flags;
    t.propagation = e.propagation;
    t.fstype = intern_locked(std::move(e.fstype));
    t.source = intern_locked(std::move(e.source));
    t.root = intern_locked(std::move(e.root));
    t.mountpoint = std::move(e.mountpoint);
    return t;
}

void MountTracker::assign_locked(Tracked& t, MountEntry e) {
    // Interned before the old ones are released: an unchanged fstype keeps
    // its string instead of freeing and making it again.
    Tracked fresh = make_tracked_locked(std::move(e));
    release_locked(t.fstype);
    release_locked(t.source);
    release_locked(t.root);
    t = std::move(fresh);
}

MountEntry MountTracker::to_entry(const Tracked& t) {
    MountEntry e;
    e.mount_id = t.mount_id;
    e.parent_id = t.parent_id;
    e.device = t.device;
    e.root = *t.root;
    e.mountpoint = t.mountpoint;
    e.fstype = *t.fstype;
    e.source = *t.source;
    e.flags = t.flags;
    e.propagation = t.propagation;
    return e;
}

MountRelevance MountTracker::relevance_locked(const Tracked& t) const {
    return mount_relevance(*t.fstype, t.mountpoint, rules_);
}

bool fanotify_mount_is_usable() {
    auto fan = fanotify_open("/proc/self/ns/mnt");
    return fan.ok();
}

void MountTracker::Outcome::add(MountRelevance r, const std::string& mp) {
    if (mountpoint.empty()) mountpoint = mp;
    if (relevance == MountRelevance::Unrelated && r != MountRelevance::Unrelated) {
        relevance = r;
        mountpoint = mp;
    }
}

MountTracker::MountTracker(RelevanceRules rules, Observer observer, MountTrackerOptions options)
    : rules_(std::move(rules)), observer_(std::move(observer)), options_(std::move(options)) {}

MountTracker::~MountTracker() = default;

Result<std::unique_ptr<MountTracker>> MountTracker::open(RelevanceRules rules, Observer observer,
                                                         MountTrackerOptions options) {
    std::unique_ptr<MountTracker> t(new MountTracker(std::move(rules), std::move(observer), std::move(options)));
    if (!statmount_is_usable())
        return Error{"mount tracking", t->options_.ns_path, EOPNOTSUPP,
                     "statmount does not report fs subtypes and sources (Linux < 6.13)"};
    auto fan = fanotify_open(t->options_.ns_path);
    if (!fan) return fan.error();
    t->fan_ = std::move(*fan);
    const int mi = ::open(t->options_.mountinfo_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (mi < 0) return errno_error("open", t->options_.mountinfo_path);
    t->mountinfo_.reset(mi);
    // The first poll of a fresh mountinfo fd reports no change; later ones
    // report each change of the namespace once (mounts_poll()).
    pollfd p{mi, POLLPRI, 0};
    (void)::poll(&p, 1, 0);
    // Marked before listing: whatever changes during the listing is also
    // queued, and applying it afterwards makes the table current.
    if (Status s = t->resync(); !s) return s.error();
    std::lock_guard<std::mutex> lock(t->mu_);
    UpdateSummary ignored;
    t->update_locked(ignored);
    return t;
}

void MountTracker::set_match(const MatchRules& match) {
    std::lock_guard<std::mutex> lock(mu_);
    RelevanceRules r = make_relevance_rules(match, rules_.source_paths);
    // The snapshot holds the mounts that matter under the rules it was made with.
    if (r.root_dir != rules_.root_dir || r.fs_types != rules_.fs_types) dirty_ = true;
    const bool types_changed = r.fs_types != rules_.fs_types;
    rules_ = std::move(r);
    if (types_changed) {
        fuse_types_.clear();
        fuse_paths_.clear();
        for (const auto& [id, e] : entries_) count_fuse_path_locked(e, +1);
    }
}

bool MountTracker::is_fuse_locked(const std::string* fstype) {
    auto [it, added] = fuse_types_.try_emplace(fstype, false);
    if (added) it->second = is_fuse_fstype(*fstype, rules_.fs_types);
    return it->second;
}

void MountTracker::count_fuse_path_locked(const Tracked& e, int delta) {
    if (!is_fuse_locked(e.fstype)) return;
    auto it = fuse_paths_.try_emplace(e.mountpoint, 0).first;
    it->second += delta;
    if (it->second <= 0) fuse_paths_.erase(it);
}

void MountTracker::set_source_paths(std::vector<std::string> source_paths) {
    std::lock_guard<std::mutex> lock(mu_);
    MatchRules m;
    m.root_dir = rules_.root_dir;
    m.fs_types = rules_.fs_types;
    RelevanceRules r = make_relevance_rules(m, std::move(source_paths));
    if (r.source_paths != rules_.source_paths) dirty_ = true;
    rules_.source_paths = std::move(r.source_paths);
}

std::size_t MountTracker::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.size();
}

std::uint64_t MountTracker::resyncs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return resyncs_;
}

std::size_t MountTracker::last_resync_differences() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_resync_differences_;
}

void MountTracker::request_resync() {
    std::lock_guard<std::mutex> lock(mu_);
    resync_pending_ = true;
}

MountTracker::UpdateSummary MountTracker::update() {
    std::lock_guard<std::mutex> lock(mu_);
    UpdateSummary sum;
    update_locked(sum);
    return sum;
}

void MountTracker::update_locked(UpdateSummary& sum) {
    // POLLPRI matters only while young FUSE mounts may still be remounted;
    // it is checked (and consumed) before the drain: a mount looked up by
    // the drain below is seen as it is after whatever change raised it, so
    // only the young mounts looked up in earlier calls need a new look.
    prune_young_locked();
    bool changed = false;
    if (!young_.empty()) {
        pollfd p{mountinfo_.get(), POLLPRI, 0};
        changed = ::poll(&p, 1, 0) > 0 && (p.revents & POLLPRI);
    }
    ++generation_;
    drain_locked(sum);
    if (changed) refresh_young_locked(sum);
}

bool MountTracker::wants_mountinfo_poll() {
    std::lock_guard<std::mutex> lock(mu_);
    prune_young_locked();
    return !young_.empty();
}

void MountTracker::note_own_mount(std::uint64_t unique_id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (own_mounts_.size() >= kMaxOwnMounts) own_mounts_.clear();
    own_mounts_.insert(unique_id);
}

void MountTracker::prune_young_locked() {
    if (young_.empty()) return;
    const auto now = SteadyClock::now();
    while (!young_.empty() && young_.front().until < now) young_.pop_front();
}

void MountTracker::drain_locked(UpdateSummary& sum) {
    // 16 KiB: 409 mount events of 40 bytes per read().
    alignas(fanotify_event_metadata) char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fan_.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN)
                spdlog::warn("failed to read mount events, ignoring: {}",
                             errno_error("read", "fanotify").message());
            return;
        }
        if (n == 0) return;
        // Room left for another event: the queue was empty when the kernel
        // filled the buffer, and a second read() would say EAGAIN (events
        // queued since wake the loop again).
        const bool drained = sizeof buf - static_cast<std::size_t>(n) >= 256;
        std::size_t off = 0;
        while (off + sizeof(fanotify_event_metadata) <= static_cast<std::size_t>(n)) {
            fanotify_event_metadata m;
            std::memcpy(&m, buf + off, sizeof m);
            if (m.event_len < sizeof m || off + m.event_len > static_cast<std::size_t>(n)) break;
            const char* ev = buf + off;
            off += m.event_len;
            if (m.vers != FANOTIFY_METADATA_VERSION) {
                spdlog::warn("failed to parse a mount event, ignoring: metadata version {} (expected {}); "
                             "resyncing the mount table",
                             m.vers, FANOTIFY_METADATA_VERSION);
                resync_pending_ = true;
                sum.overflow = true;
                continue;
            }
            if (m.mask & FAN_Q_OVERFLOW) {
                // The queue was full: events were dropped, the table may
                // differ anywhere. The next table() lists it again.
                resync_pending_ = true;
                sum.overflow = true;
                ++sum.events;
                ++sum.relevant;
                spdlog::warn("mount event queue overflowed (more than fs.fanotify.max_queued_events queued); "
                             "the mount table is listed again");
                if (observer_) observer_(TrackedEvent{"overflow", true, "queue-overflow", {}});
                continue;
            }
            // The mount id record; other record types (none today) skipped.
            bool found = false;
            std::uint64_t id = 0;
            for (std::size_t r = m.metadata_len; r + sizeof(fanotify_event_info_header) <= m.event_len;) {
                fanotify_event_info_header h;
                std::memcpy(&h, ev + r, sizeof h);
                if (h.len == 0) break;
                if (h.info_type == kFanEventInfoTypeMnt && h.len >= kMntInfoLen && r + kMntInfoLen <= m.event_len) {
                    std::memcpy(&id, ev + r + kMntInfoIdOffset, sizeof id);
                    found = true;
                }
                r += h.len;
            }
            if (!found) continue;
            const bool attach = m.mask & kFanMntAttach, detach = m.mask & kFanMntDetach;
            if (resyncing_) replay_.push_back(Replay{id, attach, detach});
            Outcome out;
            apply_event_locked(id, attach, detach, out);
            report_locked(attach && detach ? "moved" : attach ? "attached" : "detached", out, sum);
        }
        if (drained) return;
    }
}

void MountTracker::report_locked(const char* kind, const Outcome& out, UpdateSummary& sum) {
    const bool relevant = out.relevance != MountRelevance::Unrelated;
    ++sum.events;
    if (relevant) ++sum.relevant;
    const std::string_view mp = out.mountpoint.empty() ? std::string_view("(gone)") : out.mountpoint;
    if (relevant) spdlog::debug("mount event: {} {} ({})", kind, mp, to_string(out.relevance));
    else spdlog::trace("mount event: {} {} (unrelated)", kind, mp);
    if (observer_) observer_(TrackedEvent{kind, relevant, to_string(out.relevance), out.mountpoint});
}

void MountTracker::apply_event_locked(std::uint64_t id, bool attach, bool detach, Outcome& out) {
    const bool own = own_mounts_.erase(id) > 0;
    if (!attach) {
        // Detached: statmount can no longer see it; the tracked entry says
        // what it was.
        auto it = entries_.find(id);
        if (it == entries_.end()) return;  // attached and detached before we looked it up
        MountEntry gone;
        out.add(erase_at_locked(it, &gone), gone.mountpoint);
        // A mount that covered the detached one's root (same mountpoint,
        // sitting on it) is reparented onto its parent by the kernel. 6.18
        // reports that as a move of the covering mount (measured), which is
        // applied anyway; the look-up here costs one hash probe and does not
        // rely on it.
        std::vector<Node> here;
        nodes_at_locked(gone.mountpoint, here);
        std::vector<std::uint64_t> covering;  // ids: a refresh may drop an entry
        for (Node n : here)
            if (n->second.parent_id == gone.mount_id) covering.push_back(n->first);
        for (std::uint64_t c : covering) refresh_locked(c, out);
        // The last member here of a peer group with slaves: the kernel
        // turns them private or hands them to another master.
        const int group = gone.propagation.shared_group;
        if (group != 0 && !peers_.count(group)) {
            std::vector<std::uint64_t> slaves;
            if (auto g = slaves_.find(group); g != slaves_.end()) slaves.assign(g->second.begin(), g->second.end());
            for (std::uint64_t s : slaves) refresh_locked(s, out);
        }
        return;
    }
    // Attached, or moved (ATTACH and DETACH): look it up. Unchanged (listed
    // already, or looked up since as part of another event): nothing
    // around it moved either.
    bool changed = false, moved = detach;
    auto it = refresh_locked(id, out, &changed, &moved);
    if (!changed || it == entries_.end()) return;
    const Tracked& now = it->second;
    // Only FUSE mounts: theirs are the only flags the engine reads (a
    // target's read-only flag decides whether it may be healed).
    if (!own && out.relevance == MountRelevance::FuseMount && is_fuse_fstype(*now.fstype, rules_.fs_types))
        young_.push_back(Young{id, SteadyClock::now() + options_.young_window, generation_});
    // Tucked: a mount already at this spot (MOVE_MOUNT_BENEATH, or a mount
    // propagated under an existing one) now sits on the new one.
    std::vector<std::uint64_t> same_place = ids_at_locked(now.mountpoint);
    std::erase(same_place, id);
    const int mount_id = now.mount_id;
    for (std::uint64_t s : same_place) refresh_locked(s, out);
    // Moved: its submounts' mountpoints moved with it, unreported.
    if (moved)
        for (std::uint64_t d : descendants_locked(mount_id)) refresh_locked(d, out);
}

MountTracker::Entries::iterator MountTracker::refresh_locked(std::uint64_t id, Outcome& out, bool* changed,
                                                             bool* moved) {
    if (changed) *changed = false;
    auto e = statmount_entry(id);
    if (!e) {
        if (e.error().err != ENOENT) {
            // Not expected (statmount works for every mount of our own
            // namespace); the entry is kept and the table listed again.
            spdlog::warn("failed to look up a mount, ignoring: {}; resyncing the mount table", e.error().message());
            resync_pending_ = true;
            return entries_.find(id);
        }
        auto it = entries_.find(id);
        if (it == entries_.end()) return it;
        MountEntry gone;
        out.add(erase_at_locked(it, &gone), gone.mountpoint);
        if (changed) *changed = true;
        return entries_.end();
    }
    // One tree search per look-up: the tree is cold between two events.
    auto [it, inserted] = entries_.try_emplace(id);
    if (!inserted && same_entry(it->second, *e)) return it;
    // change_relevance() of the entry before and after.
    MountRelevance r = inserted ? MountRelevance::Unrelated : relevance_locked(it->second);
    if (r == MountRelevance::Unrelated) r = mount_relevance(*e, rules_);
    if (moved && !inserted)
        *moved = *moved || it->second.parent_id != e->parent_id || it->second.mountpoint != e->mountpoint;
    if (!inserted) unindex_locked(*it);
    assign_locked(it->second, std::move(*e));
    dirty_ = true;
    if (changed) *changed = true;
    out.add(r, it->second.mountpoint);
    // The kernel reuses mountinfo ids: one held by a tracked mount that is
    // not this one means that mount is gone and its detach was missed (a
    // lost event). Dropping it keeps ids unique in the table.
    const int mount_id = it->second.mount_id;
    std::uint64_t dup = 0;
    by_old_id_.for_each(old_id_hash(mount_id), [&](Node n) {
        if (n->second.mount_id == mount_id && n->first != id) dup = n->first;
        return dup == 0;
    });
    if (dup != 0) {
        spdlog::debug("mount id {} reused: dropping the stale entry of mount {}", mount_id, dup);
        MountEntry stale;
        out.add(erase_at_locked(entries_.find(dup), &stale), stale.mountpoint);
        resync_pending_ = true;
    }
    index_locked(*it);
    return it;
}

MountRelevance MountTracker::erase_at_locked(Entries::iterator it, MountEntry* removed) {
    const MountRelevance r = relevance_locked(it->second);
    if (removed) *removed = to_entry(it->second);
    drop_locked(it);
    dirty_ = true;
    return r;
}

MountTracker::Entries::iterator MountTracker::drop_locked(Entries::iterator it) {
    unindex_locked(*it);
    release_locked(it->second.fstype);
    release_locked(it->second.source);
    release_locked(it->second.root);
    return entries_.erase(it);
}

namespace {
// Removes `id` from `key`'s group, and the group once empty.
void erase_member(std::unordered_map<int, std::vector<std::uint64_t>>& groups, int key, std::uint64_t id) {
    auto g = groups.find(key);
    if (g == groups.end()) return;
    std::vector<std::uint64_t>& members = g->second;
    // From the end: the member detached is most often a recent one.
    auto m = std::find(members.rbegin(), members.rend(), id);
    if (m == members.rend()) return;
    *m = members.back();
    members.pop_back();
    if (members.empty()) groups.erase(g);
}
} // namespace

void MountTracker::index_locked(const Entries::value_type& node) {
    const auto& [id, e] = node;
    by_mountpoint_.insert(fnv1a(e.mountpoint), &node);
    count_fuse_path_locked(e, +1);
    by_old_id_.insert(old_id_hash(e.mount_id), &node);
    if (e.propagation.shared_group != 0) ++peers_[e.propagation.shared_group];
    if (e.propagation.master_group != 0) slaves_[e.propagation.master_group].push_back(id);
    if (e.parent_id != e.mount_id) children_[e.parent_id].push_back(id);
}

void MountTracker::unindex_locked(const Entries::value_type& node) {
    const auto& [id, e] = node;
    by_mountpoint_.erase(fnv1a(e.mountpoint), &node);
    count_fuse_path_locked(e, -1);
    by_old_id_.erase(old_id_hash(e.mount_id), &node);
    if (e.propagation.shared_group != 0) {
        auto p = peers_.find(e.propagation.shared_group);
        if (p != peers_.end() && --p->second <= 0) peers_.erase(p);
    }
    if (e.propagation.master_group != 0) erase_member(slaves_, e.propagation.master_group, id);
    if (e.parent_id != e.mount_id) erase_member(children_, e.parent_id, id);
}

std::vector<std::uint64_t> MountTracker::descendants_locked(int old_id) const {
    // Through the children_ index: O(submounts), not O(mounts).
    std::vector<std::uint64_t> out;
    std::vector<int> todo{old_id};
    std::set<int> seen{old_id};
    while (!todo.empty()) {
        const int p = todo.back();
        todo.pop_back();
        auto g = children_.find(p);
        if (g == children_.end()) continue;
        for (std::uint64_t id : g->second) {
            out.push_back(id);
            const int child = entries_.at(id).mount_id;
            if (seen.insert(child).second) todo.push_back(child);
        }
    }
    return out;
}

void MountTracker::refresh_young_locked(UpdateSummary& sum) {
    // POLLPRI does not say which mount changed: every young FUSE mount is
    // looked up again (a handful: those attached in the last
    // young_window), each change being one event.
    std::set<std::uint64_t> done;
    for (Young& y : young_) {
        if (y.generation == generation_ || !done.insert(y.id).second) continue;
        y.generation = generation_;
        Outcome out;
        bool changed = false;
        refresh_locked(y.id, out, &changed);
        if (changed) report_locked("changed", out, sum);
    }
}

Status MountTracker::resync() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        resyncing_ = true;
        resync_pending_ = false;
        replay_.clear();
    }
    // Listed without the mutex: the loop keeps applying events (to the old
    // table, and logging them in replay_ for the new one). Into a vector, not
    // a second map: it is patched into entries_ below, so the entries that
    // did not change (all but a few) keep their nodes and index entries.
    // Swapping in a whole new map every safety reconcile (30 s) held two
    // full tables at once and re-made 10,000 nodes and every index entry:
    // the daemon's peak RSS in scale_bench's churn run went 28.3 -> 25.1 MiB
    // with the patch (what stays resident after a burst of events is the
    // trim's business: Daemon::schedule_trim_if_heap_grew).
    std::vector<std::pair<std::uint64_t, MountEntry>> fresh;
    auto ids = list_mount_ids();
    if (ids) {
        fresh.reserve(ids->size());
        for (std::uint64_t id : *ids) {
            auto e = statmount_entry(id);
            if (e) fresh.emplace_back(id, std::move(*e));
            else if (e.error().err != ENOENT) {
                ids = e.error();
                break;
            }
        }
    }
    std::lock_guard<std::mutex> lock(mu_);
    resyncing_ = false;
    if (!ids) {
        resync_pending_ = true;
        replay_.clear();
        return ids.error();
    }
    // listmount lists in unique-id order; sorted anyway, as the merge needs it.
    std::sort(fresh.begin(), fresh.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    // A mount an event touched during the listing was reported by that
    // event: it is not a difference the resync found.
    std::unordered_set<std::uint64_t> replayed;
    for (const Replay& r : replay_) replayed.insert(r.id);
    std::size_t differences = 0;
    const auto differs = [&](std::uint64_t id) {
        if (!replayed.count(id)) ++differences;
    };
    if (entries_.empty()) {  // the first listing: indexes sized once
        by_mountpoint_.reserve(fresh.size());
        by_old_id_.reserve(fresh.size());
    }
    // Merge by id (both ascending): entries_ becomes exactly `fresh`. In
    // ascending order, a stale entry whose mountinfo id the kernel reused
    // (a lower unique id) is dropped before the new one is indexed.
    auto it = entries_.begin();
    for (auto& [id, e] : fresh) {
        while (it != entries_.end() && it->first < id) {
            differs(it->first);
            it = drop_locked(it);
        }
        if (it != entries_.end() && it->first == id) {
            if (!same_entry(it->second, e)) {
                differs(id);
                unindex_locked(*it);
                assign_locked(it->second, std::move(e));
                index_locked(*it);
            }
            ++it;
            continue;
        }
        differs(id);
        const auto added = entries_.emplace_hint(it, id, make_tracked_locked(std::move(e)));
        index_locked(*added);
    }
    while (it != entries_.end()) {
        differs(it->first);
        it = drop_locked(it);
    }
    // Events applied to the old table during the listing are applied again:
    // each looks its mount up afresh, so the order of listing and events
    // does not matter.
    for (const Replay& r : replay_) {
        Outcome ignored;
        apply_event_locked(r.id, r.attach, r.detach, ignored);
    }
    replay_.clear();
    ++resyncs_;
    last_resync_differences_ = differences;
    dirty_ = true;
    if (resyncs_ > 1 && differences > 0)
        spdlog::debug("mount table resync: {} mounts, {} entries differed from the tracked table (changes fanotify "
                      "does not report: flags, propagation, deleted roots)",
                      entries_.size(), differences);
    return {};
}

void MountTracker::catch_up(std::unique_lock<std::mutex>& lock) {
    UpdateSummary ignored;
    update_locked(ignored);
    if (resync_pending_ && !resyncing_) {
        lock.unlock();
        Status s = resync();
        lock.lock();
        if (!s) {
            spdlog::error("failed to list the mount table, ignoring: {}; using the tracked table", s.error().message());
        }
        update_locked(ignored);
    }
}

MountTable MountTracker::whole_table() {
    std::unique_lock<std::mutex> lock(mu_);
    catch_up(lock);
    std::vector<MountEntry> copy;
    copy.reserve(entries_.size());
    for (const auto& [id, e] : entries_) copy.push_back(to_entry(e));
    return MountTable(std::move(copy));
}

Result<std::shared_ptr<const MountTable>> MountTracker::table() {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    catch_up(lock);
    if (!dirty_)
        if (auto held = snapshot_.lock()) return held;
    const auto t1 = std::chrono::steady_clock::now();
    // Only the mounts that matter to plans (core/mount_relevance.h): on a
    // node whose thousands of mounts are mostly unrelated, the snapshot, its
    // indexes and every classification of it shrink to the FUSE mounts and
    // their stacks. Copied with the mutex held; the indexes are built after
    // it is released. Not a test of each of the node's mounts (10,000 in
    // scale_bench: that loop, fnmatch and a hash of each path in it, was
    // most of a step's table, 4-6 ms): the mounts that matter are all at a few known
    // paths. Collected as the index's pointers to the entries, then put in
    // unique-id order, which is mountinfo order.
    std::vector<Node> nodes;
    auto add_path = [&](std::string_view path) { nodes_at_locked(path, nodes); };
    // A FUSE mount, and any mount sharing its mountpoint.
    for (const auto& [path, count] : fuse_paths_) add_path(path);
    // Any mount at a source path.
    for (const std::string& path : rules_.source_paths) add_path(path);
    // Any mount at root_dir or above it ("/" included).
    const std::string_view root = rules_.root_dir;
    for (std::size_t end = root.size();;) {
        add_path(end == 0 ? std::string_view("/") : root.substr(0, end));
        if (end == 0) break;
        end = root.rfind('/', end - 1);
        if (end == std::string_view::npos) break;
    }
    std::sort(nodes.begin(), nodes.end(), [](Node a, Node b) { return a->first < b->first; });
    nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
    std::vector<MountEntry> copy;
    copy.reserve(nodes.size());
    // Straight from the index's pointers: a pass along the map to reach
    // them walked all 10,000 of its cold nodes for 2,011 (2-5 ms in
    // scale_bench, docs/PERFORMANCE.md, sessions 10 and 16).
    for (Node n : nodes) copy.push_back(to_entry(n->second));
    dirty_ = false;
    const std::size_t tracked = entries_.size();
    lock.unlock();
    const auto t2 = std::chrono::steady_clock::now();
    auto built = std::make_shared<const MountTable>(std::move(copy));
    const auto us = [](auto d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
    spdlog::trace("mount table snapshot: {} of {} tracked mounts (catching up {} us, copying {} us, indexing {} us)",
                  built->size(), tracked, us(t1 - t0), us(t2 - t1), us(std::chrono::steady_clock::now() - t2));
    lock.lock();
    // cppcheck-suppress knownConditionTrueFalse ; another thread may set dirty_ while the mutex is released
    if (!dirty_) snapshot_ = built;
    return built;
}

} // namespace fh
