// The heal planner: a pure function from (mount tables, liveness, origins,
// policy) to a plan, an ordered list of actions plus a verdict per target.
// The engine executes the FIRST action only, re-reads the table of the
// namespace it acted in and plans again: mounts propagate between peers, so
// a plan made before an action can be wrong after it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.h"

namespace fh {

// What the engine knows about a superblock's FUSE connection.
enum class Liveness {
    Unknown,       // not probed yet (or the probe is still running)
    Alive,         // the connection answers
    Dead,          // the connection is aborted: the daemon is gone
    Unresponsive,  // a probe timed out: the daemon is hung, not (yet) dead
};
// Returns "unknown", "alive", "dead" or "unresponsive".
const char* to_string(Liveness l);

using LivenessMap = std::map<dev_t, Liveness>;

enum class Strategy { Replace, Stack };
// Returns "replace" or "stack".
const char* to_string(Strategy s);

// A mount namespace other than the daemon's own that holds a mount of a dead
// superblock. `pid` is one process in it, `ns_inode` its /proc/<pid>/ns/mnt
// inode (the namespace's identity).
struct NamespaceView {
    int pid = 0;
    std::uint64_t ns_inode = 0;
    MountTable table;
    // The pod that process runs in, from its cgroup (core/pod_cgroup.h), ""
    // when unknown: copies of one dataset in many pods' containers are binds
    // of the same directory, and this is what tells whose they are.
    std::string pod_uid;
};

// The propagation a new mount gets before it is attached.
enum class PropagationMode { Shared, Slave, Private };
// Returns "shared", "slave" or "private".
const char* to_string(PropagationMode p);

// Returns the mode that keeps a replaced mount's propagation: a slave stays a
// slave (now of the new source's peer group), a private mount stays private,
// a shared mount joins the new source's peer group.
PropagationMode propagation_mode_of(const Propagation& p);

enum class ActionKind {
    Replace,           // clone beneath the stale top, then detach the top
    UnmountDeadLayer,  // detach a dead top layer (stack strategy)
    BindOnTop,         // attach a clone on top of the dead top (stack strategy)
};
// Returns "replace", "unmount-dead-layer" or "bind-on-top".
const char* to_string(ActionKind k);

struct HealAction {
    ActionKind kind = ActionKind::Replace;
    // Host target path this action heals. A copy in a container's
    // namespace belongs to the target of the container's pod when that pod
    // has one on the same dead superblock and root (NamespaceView::pod_uid),
    // else to the first target of that superblock and root.
    std::string target;
    int ns_pid = 0;                // 0: the daemon's namespace; else a pid in the namespace
    std::uint64_t ns_inode = 0;    // 0 for the daemon's namespace
    std::string mountpoint;        // where to act, as seen inside that namespace
    int expected_mount_id = 0;     // the stale mount that must still be topmost there
    dev_t expected_device = 0;     // its (dead) superblock
    std::string clone_path;        // host path of the live source to clone (not for UnmountDeadLayer)
    // The live superblock a clone of clone_path must belong to: the source
    // may die or be unmounted between planning and acting, and a clone of
    // what is then at the path (a dead FUSE mount, or the empty directory
    // under it) must never be attached. 0 for UnmountDeadLayer.
    dev_t source_device = 0;
    MountFlags flags;              // per-mount flags for the new mount
    PropagationMode propagation = PropagationMode::Shared;
    // Stack strategy only: the dead top is shared, so a bind on it would be
    // copied onto its peers (other pods' volumes, with this target's flags,
    // or a dead source under its new mount) and onto the group's slaves, and
    // a later unmount of the layer would propagate to theirs (removing
    // layers healed there). Make the dead top private first: nothing done on
    // it propagates any more. Containers that relied on that propagation get
    // their own action in their namespace.
    bool make_private_first = false;
    // Host actions: the peer group of the stale top when it is shared, else
    // 0. The engine keeps one member of it until the walk after the heal
    // (Executor::pin_superblock), so that copies in containers that are
    // slaves of it keep their master, and their propagation, until healed.
    int stale_peer_group = 0;

    bool in_host() const { return ns_pid == 0; }
};

// Where a target stands after planning.
enum class TargetState {
    Healthy,       // its topmost mount is alive
    Unresponsive,  // its topmost mount's daemon is hung
    Unknown,       // liveness not known yet
    Broken,        // dead, and its source is not back (waiting for a mount event)
    Healing,       // dead, source back: actions are planned
    Skipped,       // dead, but policy or missing data forbids healing
};
// Returns "healthy", "unresponsive", "unknown", "broken", "healing" or "skipped".
const char* to_string(TargetState s);

struct TargetVerdict {
    std::string target;       // host target path
    TargetPath where;
    TargetState state = TargetState::Unknown;
    dev_t device = 0;         // the topmost mount's superblock
    std::string reason;       // why broken/skipped, human readable
    Origin origin;            // valid when has_origin
    bool has_origin = false;
    bool origin_from_table = false;  // true when recovered from the table, not from state
    // Broken only: a new mount is at the origin's source path, but one that
    // can never serve this target (not a FUSE filesystem root, or another
    // fstype); `reason` says which. The engine reports it (a wrong source is
    // worth a log line; waiting for one is not).
    bool source_refused = false;
};

// A copy the daemon made in a container: where it is (namespace inode,
// mountpoint there; pid: the process the heal entered it through).
struct CopyMade {
    std::uint64_t ns_inode = 0;
    int pid = 0;
    std::string mountpoint;
};

// A container copy the daemon made a slave of its source's peer group: by
// its namespace's inode and a hash of its mountpoint there (16 bytes, not a
// path: a node has thousands). The kernel turns a slave private when the
// last member of its master group goes, and in a crash loop that can come
// before the copy's next heal: a source that dies before its host mounts
// were healed onto it was the group's only member, and a host heal that
// runs before its copies (a copy the step did not know yet, a re-plan)
// empties the old group. The copy then shows private; these keys make its
// next heal a slave again (PlanInput::slave_copies).
struct SlaveCopy {
    std::uint64_t ns_inode = 0;
    std::uint64_t mountpoint_hash = 0;
    // (Written out: clang-tidy 14 flags a defaulted operator<=>, modernize-use-nullptr.)
    friend bool operator==(const SlaveCopy& a, const SlaveCopy& b) {
        return a.ns_inode == b.ns_inode && a.mountpoint_hash == b.mountpoint_hash;
    }
    friend bool operator<(const SlaveCopy& a, const SlaveCopy& b) {
        return a.ns_inode != b.ns_inode ? a.ns_inode < b.ns_inode : a.mountpoint_hash < b.mountpoint_hash;
    }
};

// Returns the key of the copy at `mountpoint` in namespace `ns_inode`
// (FNV-1a of the mountpoint: the same in every run, for the tests).
SlaveCopy slave_copy_key(std::uint64_t ns_inode, std::string_view mountpoint);

// A host target healed earlier whose dead superblock may still be held by
// containers that the namespace scan of that heal did not see (e.g. started
// during the outage). Its copies are healed from the same clone path.
struct HealedTarget {
    std::string target;
    dev_t device = 0;        // the dead superblock
    std::string root;        // the target's root in it
    std::string fstype;      // its fstype and mount source: once the last host
    std::string source;      // mount is gone, the device number can be reused
    std::string source_path; // where it was healed from: copies are healed only
    std::string clone_path;  // while a live mount of `fstype` is still there
    // When not empty, only these copies of `device` are healed: copies the
    // daemon made, ahead of the host mount, from a source that died before
    // the host mount was healed (Engine::stranded_). Their mount source
    // need not be `source` (bindfs names each generation's mount after its
    // own directory). (Those made slaves are healed as slaves again,
    // through PlanInput::slave_copies: their master group died with that
    // source, which left them private.)
    std::vector<CopyMade> copies_made;
};

struct PlanInput {
    const MatchRules* rules = nullptr;
    const MountTable* host = nullptr;
    const Classification* classes = nullptr;  // of *host
    const LivenessMap* liveness = nullptr;
    const OriginMap* origins = nullptr;       // learned earlier (persisted)
    const std::vector<NamespaceView>* namespaces = nullptr;  // may be null
    const std::vector<HealedTarget>* healed = nullptr;       // may be null; their devices need liveness too
    // Copies made slaves earlier, sorted; a dead copy among them that shows
    // private is healed as a slave (see SlaveCopy). May be null.
    const std::vector<SlaveCopy>* slave_copies = nullptr;
    Strategy strategy = Strategy::Replace;
    bool read_write = false;       // [heal] read_write
    bool heal_namespaces = true;   // [heal] namespaces
};

struct Plan {
    std::vector<HealAction> actions;      // in execution order
    std::vector<TargetVerdict> verdicts;  // one per target, in classification order
    std::vector<dev_t> need_liveness;     // devices that matter and are Unknown
};

// Returns the plan for one step. Ordering: global (CSI staging) targets
// before pod targets; for each target, copies inside other namespaces before
// the host mount (once the last host mount of a dead peer group is detached,
// the kernel turns the containers' slave copies private); last, copies of
// already healed targets (`healed`) still found in namespaces. A container
// copy is healed with the first target of its (device, root), and counted
// for the target of its own pod (see HealAction::target).
Plan plan_heals(const PlanInput& in);

// Returns why the mount `src` (the topmost mount at `source_path`, nullptr
// when nothing is mounted there) cannot be the new source of a target whose
// dead superblock is `dead_device` and whose origin has `fstype`, or "" when
// it can: a FUSE filesystem root of that fstype, not the dead superblock.
// Liveness is not judged here.
std::string source_mount_problem(const MountEntry* src, const std::string& source_path, const std::string& fstype,
                                 dev_t dead_device, const MatchRules& rules);

// A source path that dead targets wait for.
struct AwaitedSource {
    std::string source_path;
    std::string fstype;              // the origin's fstype: the new mount must have it
    std::vector<dev_t> dead_devices; // the superblocks it replaces: never accepted as the new source
};

// Heals planned while their source is down, carried out the moment it is
// back without reading or planning the whole table again (an event then
// costs O(sources), not O(mounts)). Every action is still re-checked by the
// executor right before it runs, so a stale armed plan fails safe (ESTALE).
struct ArmedHeals {
    std::vector<AwaitedSource> sources;
    std::vector<HealAction> actions;          // in plan order
    std::vector<std::size_t> action_source;   // per action: its index in `sources`
    std::vector<TargetVerdict> verdicts;      // of the targets the actions heal
    // Per action: its target's index in `verdicts`, or kNoVerdict (heals
    // planned ahead of a death keep none).
    std::vector<std::size_t> action_verdict;
    static constexpr std::size_t kNoVerdict = static_cast<std::size_t>(-1);

    bool empty() const { return actions.empty(); }
};

// Returns the armed heals for `plan` (made from `in`): the targets that wait
// for their source (Broken, origin known) are planned again as if a live
// mount of the origin's fstype were the topmost mount at each awaited source
// path. The actions are those plan_heals will make once the source is back,
// except that it may find other work too (a remembered namespace gone, a
// second candidate origin): the engine plans in full after firing them.
ArmedHeals arm_heals(const PlanInput& in, const Plan& plan);

// Returns the part of `armed` that heals copies of `device` in containers'
// namespaces: those actions, with their sources and verdicts (the indices
// made anew). What is planned ahead of a death (see Engine): the host's
// mounts wait for a walk of /proc after it anyway.
ArmedHeals copies_in_containers(const ArmedHeals& armed, dev_t device);

// Appends `more` to `into`, its indices shifted past `into`'s.
void append_armed_heals(ArmedHeals& into, ArmedHeals more);

// Returns the origins to remember from a table: for every target whose
// topmost mount is Alive, the origin recovered from its source; and for
// every Dead target that `known` has no origin for, the origin recovered
// from a source outside <root_dir> that still holds the dead superblock. The
// latter is a pod published while its FUSE daemon was dead (the CSI bind of
// the source path bound the stale mount): it was never seen alive, and once
// the supervisor lazily unmounts the stale source, the table no longer says
// where it came from. A remembered origin is never replaced by a dead
// target's (the table may show a stale copy that never comes back, see
// plan_heals), nor learned from a staging mount under <root_dir>, which is
// itself a target once its source is known.
OriginMap learn_origins(const Classification& c, const LivenessMap& liveness, const MatchRules& rules,
                        const OriginMap* known = nullptr);

} // namespace fh
