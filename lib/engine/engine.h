// The engine: one reconcile step reads the mount table, learns origins,
// checks liveness, plans and carries out heals one action at a time. It is
// synchronous and owns no loop: the daemon calls reconcile() from its heal
// worker thread whenever an event arrives; tests call it directly.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/packed_strings.h"
#include "core/planner.h"
#include "core/voldata.h"
#include "engine/executor.h"
#include "engine/kernel_features.h"
#include "engine/liveness.h"
#include "engine/mount_query.h"
#include "engine/state_store.h"

namespace fh {

using Clock = std::chrono::steady_clock;

// Who a target belongs to, for logs.
struct TargetContext {
    std::string target;
    std::string pod_uid;
    std::string volume;
    std::string driver;         // from vol_data.json when known
    std::string volume_handle;  // from vol_data.json when known
};

// One event of a target's story, reported to the observer.
struct HealEvent {
    enum class Kind { Broken, Healed, HealFailed, Skipped, Unresponsive, Recovered };
    Kind kind;
    TargetContext ctx;
    std::string source;        // source path (origin)
    std::string fstype;
    std::string strategy;      // "replace" / "stack"
    std::int64_t outage_us = 0;      // since the outage was first seen
    std::int64_t heal_us = 0;        // time spent acting on this target (all its mounts)
    std::int64_t since_event_us = 0; // from the event that started the reconcile to healed
    std::int64_t start_after_event_us = 0;  // from that event to this target's first action
    // From that event to the probe of the new source this target is cloned
    // from (the first step of a heal; 0 when another target's heal in the
    // same step probed that source already).
    std::int64_t probe_after_event_us = 0;
    int namespaces_healed = 0;       // container copies healed with it
    std::string reason;        // why broken/failed/skipped
};
// Returns "broken", "healed", "heal-failed", "skipped", "unresponsive" or "recovered".
const char* to_string(HealEvent::Kind k);

// Receives heal events; the daemon logs them, tests record them.
using HealObserver = std::function<void(const HealEvent&)>;

// Looks up vol_data.json facts for a target path (empty when unknown).
using VolumeLookup = std::function<std::optional<VolumeData>(const std::string& target)>;

struct TargetStatus {
    TargetContext ctx;
    TargetKind kind = TargetKind::Volume;
    std::string fstype;
    TargetState state = TargetState::Unknown;
    std::string reason;
    int heals = 0;
    std::int64_t last_outage_us = 0;
};

// One FUSE superblock the engine tracks (the topmost mount of a target, or a
// source), as the last reconcile saw it: the connections whose servers the
// death watch looks for (engine/death_watch.h).
struct FuseConnectionInfo {
    dev_t device = 0;
    std::string fstype;
    std::vector<std::string> sources;  // source mountpoints of this superblock
    std::vector<std::string> targets;  // targets whose topmost mount is of this superblock
    Liveness liveness = Liveness::Unknown;  // as the last reconcile found it
    bool operator==(const FuseConnectionInfo&) const = default;
};

struct ReconcileSummary {
    int actions = 0;          // actions carried out
    int failures = 0;         // actions that failed
    int healed = 0;           // targets healed
    int targets = 0;          // targets tracked after the step
    bool table_error = false; // the host mountinfo could not be read
    int armed_actions = 0;    // of `actions`: fired from heals armed before the event
    int namespace_walks = 0;  // walks of /proc for containers' namespaces in this step
    int planned_ahead = 0;    // source superblocks whose heals were planned ahead of a death in this step
};

// Looks up the mount at a source path without reading the mount table, in
// two steps (see mount_query.h): `identify` (statx: which mount, and is
// something mounted there) costs no lock and answers most events alone;
// `describe` (statmount: fstype, root, mountpoint) only for a new mount.
struct SourceLookup {
    std::function<Result<PathMount>(const std::string& path)> identify;
    std::function<Result<MountEntry>(std::uint64_t unique_mount_id)> describe;
    // Returns true when both steps are set (armed heals are on).
    explicit operator bool() const { return identify && describe; }
};

// Returns the host's mount table as of now, or an Error. Called from the
// heal worker at each step that needs the table (see EngineSettings).
using TableSource = std::function<Result<std::shared_ptr<const MountTable>>()>;

struct EngineSettings {
    std::string mountinfo_path = "/proc/self/mountinfo";
    std::string proc_root = "/proc";
    // False on kernels without open_tree (< 5.2): no clone can be carried
    // into another namespace, so copies in containers are left to
    // propagation (HostToContainer) and never planned.
    bool namespace_heals_supported = true;
    // Set on kernels with a usable statmount (6.13+): while targets wait
    // for a source, their heals are planned ahead (armed), and each event
    // first looks at the awaited source paths alone; when one is back, its
    // armed heals start before the table is read (see ArmedHeals). Unset,
    // every event reads and plans the whole table first.
    SourceLookup source_lookup;
    // True (with source_lookup, container heals on and Config's
    // restart_grace above 0): the heals of every live source's copies in
    // containers are planned ahead, while nothing is broken, and armed the
    // moment fusectl says that source's connection died; for up to
    // restart_grace after, each step only checks whether the source is back
    // and fires them, instead of planning the whole table (an outage's own
    // step, 10-15 ms at 2,000 targets, kept a supervisor's restart ~3 ms
    // after the kill waiting for its end). Its "mount broken" lines and
    // status come at most that much later; the death watch logs the outage
    // at once. Set it only with fusectl in use: without it no death is seen
    // this way.
    bool plan_ahead = false;
    // Where the host's table comes from. Set with mount tracking by
    // fanotify (MountTracker::table: the tracked table, an immutable
    // snapshot shared with the tracker, with every event queued before the
    // call applied, the engine's own actions included). Unset, each read
    // parses `mountinfo_path`.
    TableSource host_table;
};

class Engine {
public:
    Engine(Config config, Strategy strategy, LivenessProber& prober, Executor& executor, StateStore& store,
           HealObserver observer, VolumeLookup volumes = {}, EngineSettings settings = {});

    // Runs one reconcile step; `trigger` is when the event that asked for it
    // arrived. Returns what was done.
    ReconcileSummary reconcile(Clock::time_point trigger);

    // Returns the earliest time a backed-off target may be retried, if any
    // retry is still due: a retry time the last reconcile started after has
    // had its step (the heal ran, or no heal was planned: its source is
    // gone, and an event brings it back). Returns the last step's start (a
    // time past: at once) while a dead superblock waits for its walk of
    // /proc.
    std::optional<Clock::time_point> next_retry() const;

    // Returns a snapshot of every tracked target (thread-safe).
    std::vector<TargetStatus> status() const;
    // Returns whether heals are planned ahead of a death: fusectl is in use
    // (EngineSettings::plan_ahead), the source check too (source_lookup),
    // and [heal] restart_grace is above 0 (as of the last set_config; the
    // thread that calls reconcile(), or before it runs).
    bool plans_ahead() const;
    // Returns how many actions are planned ahead of a death, by the source
    // superblock whose death would arm them (see restart_grace). Between
    // steps only (the thread that calls reconcile()).
    std::map<dev_t, std::size_t> planned_ahead() const;

    // Returns the state of every tracked target, in status() order
    // (thread-safe): what the counts need, without unpacking each target's
    // context (status() makes ~10,000 strings at 2,000 targets, twice a
    // step for the metrics and the sd_notify line).
    std::vector<TargetState> target_states() const;

    // Applies a reloaded config (strategy as resolved by the caller).
    void set_config(const Config& config, Strategy strategy);

    // Returns the origins known now (learned or loaded).
    OriginMap origins() const;

    // Returns the strategy in use.
    Strategy strategy() const { return strategy_.load(); }

    // Returns why the state file could not be saved by the last attempt,
    // or "" when it was (thread-safe): heals go on from memory meanwhile.
    std::string state_problem() const;

    // Returns the source paths of the origins known after the last
    // reconcile (learned, loaded, or recovered from the table), sorted,
    // without duplicates (thread-safe): mount events at or over them matter
    // (see core/mount_relevance.h).
    std::vector<std::string> source_paths() const;

    // Returns the FUSE superblocks of the targets and sources seen by the
    // last reconcile that read the mount table, by device (thread-safe).
    std::vector<FuseConnectionInfo> connections() const;
    // Returns the same as connections(), as the engine's own immutable
    // list, never null (thread-safe): holders share it instead of copying
    // every target path (the death watch and the hung-connection aborter
    // each held a copy, ~0.2 MiB apiece at 2,000 targets).
    std::shared_ptr<const std::vector<FuseConnectionInfo>> shared_connections() const;
    // Returns a number that changes whenever connections() does (starts at
    // 0, thread-safe): the loop copies them only then.
    std::uint64_t connections_version() const { return connections_version_.load(); }

private:
    // A TargetContext in one allocation (five strings held ~0.3 KiB per
    // target, most of it the path, the driver and the handle on the heap
    // one by one): target, pod_uid, volume, driver, volume_handle.
    using PackedContext = PackedStrings<5>;
    static constexpr std::size_t kPackedTarget = 0;
    static constexpr std::size_t kPackedVolumeHandle = 4;
    // Returns `c` packed.
    static PackedContext pack(const TargetContext& c);
    // Returns the TargetContext packed in `p` (a copy).
    static TargetContext unpack(const PackedContext& p);
    // Returns true when `p` holds exactly `c`'s fields.
    static bool packs(const PackedContext& p, const TargetContext& c);

    struct Track {  // per-target memory across steps; fields by size (no padding)
        Clock::time_point outage_start{};
        Clock::time_point retry_at{};
        Clock::time_point heal_started{};  // this heal's first action, {} before it
        Clock::time_point probe_started{}; // when its new source was probed (the heal's first step), {} before
        std::int64_t last_outage_us = 0;
        std::int64_t heal_us = 0;   // action time accumulated in this heal
        TargetState state = TargetState::Unknown;
        TargetKind kind = TargetKind::Volume;
        int heals = 0;
        int failures = 0;
        int ns_healed = 0;
        bool in_outage = false;
        bool reported = false;      // the current state was reported
        // ctx was looked up for a verdict (context_for); false only for a
        // track an action made first, whose events carry an empty context.
        bool ctx_known = false;
        // The outage was reported (Broken). An outage begun when heals
        // planned ahead were armed is reported by the next full step.
        bool outage_reported = false;
        std::string reported_reason;
        std::string reason;         // the last verdict's reason (why broken, skipped...)
        std::string fstype;
        // Immutable, never null, shared with the status rows (status_): one
        // copy of each target's context, not two. Its target field is the
        // track's key in tracks_ (a view into it: the path is not stored
        // again).
        std::shared_ptr<const PackedContext> ctx;
    };
    // Returns the track of `target`, made (with an unknown context) if none.
    Track& track(const std::string& target);
    // A target's row of the status snapshot, as status() returns it but
    // with the context shared with its Track (~0.5 MiB less at 2,000
    // targets than full TargetStatus copies, scale_bench heap).
    struct StatusRow {
        std::shared_ptr<const PackedContext> ctx;  // null: an empty context
        TargetKind kind = TargetKind::Volume;
        TargetState state = TargetState::Unknown;
        int heals = 0;
        std::int64_t last_outage_us = 0;
        std::string fstype;
        std::string reason;
    };

    TargetContext context_for(const Target& t) const;
    // Returns the host's mounts that matter to plans (core/mount_relevance.h)
    // from settings_.host_table, else parsed from settings_.mountinfo_path.
    Result<std::shared_ptr<const MountTable>> read_host_table() const;
    void note_verdicts(const Plan& plan, const Classification& c, Clock::time_point now);
    void emit(HealEvent::Kind kind, const Track& tr, const TargetVerdict* v, std::string reason,
              Clock::time_point now, Clock::time_point trigger = {});
    void back_off(Track& tr, Clock::time_point now);
    // Starts `tr`'s outage at `now`, not reported yet.
    static void begin_outage(Track& tr, Clock::time_point now);
    void learn(const Classification& c, const MountTable& host, const LivenessMap& liveness);
    // Returns the liveness of the targets' and the sources' superblocks.
    LivenessMap check_liveness(const MountTable& host, const Classification& c);
    // Returns the superblocks of `c`'s targets and sources, by device.
    static std::vector<FuseConnectionInfo> connections_of(const Classification& c, const LivenessMap& liveness);
    // Adds to `liveness` the dead superblocks of healed_ targets that copies
    // in `namespaces` may still hold (see the planner's healed copies).
    void check_healed_liveness(const std::vector<NamespaceView>& namespaces, LivenessMap& liveness);
    // Closes `pins` (healed_pins_, or pins taken from it), leaving it empty;
    // timed in the debug log: closing one can wait for a dead superblock's
    // teardown.
    static void release_pins(std::vector<sys::UniqueFd>& pins);
    // Walks /proc and returns the namespaces holding `devices`, parsed.
    // Remembers (known_namespaces_) every namespace holding one of them or
    // of `cached`, with the ones it holds; counts the walk in `sum`.
    std::vector<NamespaceView> scan_all_namespaces(const std::set<dev_t>& devices, const std::set<dev_t>& cached,
                                                   ReconcileSummary& sum);
    // Returns the remembered namespaces that held one of `devices` at the
    // last walk and still do, re-read (much cheaper than a walk of /proc,
    // so it is what the outage and heal paths use).
    std::vector<NamespaceView> reread_known_namespaces(const std::set<dev_t>& devices);
    // Returns the mount table of namespace `ns_inode` read through `pid`,
    // or nothing when that pid has exited, now lives in another namespace
    // (reused), or its mountinfo cannot be read.
    std::optional<MountTable> read_namespace_table(int pid, std::uint64_t ns_inode) const;
    // Notes that the copy of `device` in namespace `ns_inode` was healed: the
    // cache no longer lists that namespace as holding it, so the steps that
    // follow do not read it again for nothing (200 reads, 10 ms, before the
    // host mounts of an outage). Any other copy of `device` there was
    // planned with it; one not healed is found by the walk that comes before
    // the host mounts are healed.
    void forget_healed_copy(std::uint64_t ns_inode, dev_t device);

    // What a batch of actions did.
    struct BatchOutcome {
        int executed = 0;
        bool table_moved = false;    // an action found its mountpoint changed (ESTALE)
        bool out_of_budget = false;
        bool host_changed = false;   // an action ran in the daemon's namespace
        std::set<std::uint64_t> changed_namespaces;  // inodes of the other namespaces acted in
    };
    // A probe of a clone path started before run_batch (fire_armed_heals).
    struct EarlyProbe {
        LivenessProber::Probe probe;
        // The clone path is the root of the new source's mount: reaching it
        // and cloning it ask its FUSE daemon nothing (a subdirectory takes a
        // lookup, which a hung daemon never answers), so container copies
        // of it may be prepared while the probe travels (run_batch's gate).
        bool at_mount_root = false;
    };
    // Carries out `actions` in order, one mountpoint at a time, skipping
    // targets that back off or whose source does not answer a probe
    // (`ready_sources` remembers the clone paths that did in this step).
    // `budget` (< 0: unlimited) counts down per action. Returns the outcome.
    // `verdicts[k]` is the verdict of the target of `actions[k]` (may be null).
    // `early_probes` holds probes of clone paths started before the batch.
    BatchOutcome run_batch(const std::vector<const HealAction*>& actions,
                           const std::vector<const TargetVerdict*>& verdicts, Clock::time_point trigger,
                           std::set<std::string>& ready_sources, int& budget, ReconcileSummary& sum,
                           const std::map<std::string, EarlyProbe>* early_probes = nullptr);
    // Checks the awaited sources of the armed heals with source_lookup and
    // runs the actions of those that are back and alive (the new source's
    // probes start before its statmount, so the two overlap). Returns the
    // outcome (nothing executed when no source is back).
    BatchOutcome fire_armed_heals(Clock::time_point trigger, std::set<std::string>& ready_sources,
                                  ReconcileSummary& sum);

    // Plans the heals of the container copies of each live source
    // superblock as if it had died (planned_ahead_), for those whose inputs
    // changed since: its targets' mounts, the containers the namespace
    // cache lists for it, the strategy. `in` is a converged step's input.
    // Counts the superblocks planned for in `sum`.
    void plan_ahead(const PlanInput& in, ReconcileSummary& sum);
    // Arms the heals planned ahead for the superblocks fusectl now says are
    // dead. Returns true when it armed any.
    bool arm_planned_ahead();

    Config config_;
    std::atomic<Strategy> strategy_;  // set on the heal worker (reload), read by the loop (status)
    LivenessProber& prober_;
    Executor& executor_;
    StateStore& store_;
    HealObserver observer_;
    VolumeLookup volumes_;
    EngineSettings settings_;

    OriginMap origins_;
    bool state_save_failing_ = false;
    // The namespace cache: the namespaces the last /proc walk found holding
    // mounts of the targets' superblocks, and the devices it looked for.
    // Walks run before any outage (at the first step, when a new superblock
    // appears, and again every safety_scan_interval), so when a FUSE daemon
    // dies its containers are already known and the outage step only
    // re-reads them: at 1,000 containers a walk costs 20-35 ms, and a
    // supervisor that restarts the daemon at once waited for it. A container
    // started since the last walk is found by the walk after the heal (see
    // healed_), which heals its copy then.
    struct KnownNamespace {
        int pid = 0;
        std::uint64_t ns_inode = 0;
        // Of known_namespaces_devices_, those it held: known_devices_[first_device, + device_count).
        std::uint32_t first_device = 0;
        std::uint32_t device_count = 0;
        // Of the process (NamespaceView::pod_uid), once read (pod_uid_known):
        // known_pod_uids_[pod_uid_at, + pod_uid_size).
        std::uint32_t pod_uid_at = 0;
        std::uint32_t pod_uid_size = 0;
        bool pod_uid_known = false;
    };
    std::vector<KnownNamespace> known_namespaces_;
    // The cache's devices and pod uids, each in one array, not a vector and
    // a string per namespace: every walk makes the cache anew in the middle
    // of its step's garbage, and 1,000 namespaces' small objects made there
    // then pinned their pages after malloc_trim (scale_bench, heal cycles).
    std::vector<dev_t> known_devices_;
    std::string known_pod_uids_;
    // Returns the devices `k` held at the last walk, less its healed copies.
    std::span<const dev_t> devices_of(const KnownNamespace& k) const;
    // Stores `uid` as `k`'s pod.
    void set_pod_uid(KnownNamespace& k, std::string_view uid);
    std::set<dev_t> known_namespaces_devices_;
    Clock::time_point last_walk_{};  // when known_namespaces_ was last walked for
    // Dead superblocks that a walk of /proc looked for after they died: only
    // their host mounts may be healed (see reconcile). Pruned to the dead
    // superblocks still held at the end of each step.
    std::set<dev_t> walked_after_death_;
    // The dead superblocks held at the end of the last step: a death seen
    // by an earlier step is walked for even when the cache knows it.
    std::set<dev_t> deaths_seen_;
    // A dead superblock has not been walked for: next_retry() asks for the
    // step that does it at once (the step that saw the death arms from the
    // cache and ends, so a source back meanwhile is not kept waiting).
    bool walk_due_ = false;
    std::vector<HealedTarget> healed_;  // host targets healed since the last walk
    // Copies in containers healed onto a new superblock while their
    // target's host mount was still dead: armed heals run the copies the
    // namespace cache knows at once, and the host mount after a walk of
    // /proc. By target (the one each copy's heal was counted for). In a
    // crash loop the new source can die in between, and the host mount is
    // then healed onto the next one: no host mount holds these copies'
    // superblock, so no walk would look for them. That heal moves them to
    // stranded_ (see settle in run_batch). Dropped when the target leaves
    // its outage otherwise.
    struct CopiesAhead {
        dev_t device = 0;               // the superblock they were put on
        std::vector<CopyMade> copies;   // where they are
    };
    std::map<std::string, std::vector<CopiesAhead>, std::less<>> copies_ahead_;
    // Records that `a`, a copy in a container, was healed while its target
    // was in an outage.
    void note_copy_ahead(const HealAction& a);
    // The copies in containers this daemon made slaves, sorted (see
    // SlaveCopy): the planner heals them as slaves again once their master
    // group is gone. A copy healed otherwise leaves the list; so do the
    // copies of namespaces that a walk of /proc no longer finds.
    std::vector<SlaveCopy> slave_copies_;
    // Records in slave_copies_ the propagation that `a`, an action in a
    // container carried out, gave its copy.
    void note_copy_propagation(const HealAction& a);
    // Copies left on a dead superblock that no host mount holds (from
    // copies_ahead_), as healed targets whose copies_made say where they
    // are: every step reads those namespaces (no walk: the pid and the
    // namespace are known) and plans their heals with healed_'s, from the
    // host target's source, until each copy is healed, gone, or no longer
    // on a dead superblock. Kept across steps: the source can be dead
    // again at the step after the host heal (a crash loop), and the copies
    // are healed from the one after.
    std::vector<HealedTarget> stranded_;
    // Appends to `namespaces` the views of stranded_ copies' namespaces it
    // lacks (a process gone, or a pid now in another namespace, is left out).
    void load_stranded_views(std::vector<NamespaceView>& namespaces) const;
    // Drops from stranded_ the copies that `namespaces` (loaded with
    // load_stranded_views) no longer shows on their dead superblock, and
    // the entries whose superblock fusectl no longer says is dead.
    void prune_stranded(const std::vector<NamespaceView>& namespaces);
    // Returns healed_, plus stranded_ when there are any (the planner's
    // `healed`), in `storage` when both.
    const std::vector<HealedTarget>* healed_for_plan(std::vector<HealedTarget>& storage) const;
    // One fd per healed_ entry, on its stale mount (see
    // Executor::pin_superblock): while copies of a dead superblock are
    // looked for by device number, that number must stay its own. For the
    // first of each shared peer group, a clone of the stale mount that
    // keeps the group (pinned_peer_groups_), so its slaves in containers
    // stay slaves until the walk after the heal finds and heals them.
    std::vector<sys::UniqueFd> healed_pins_;
    std::set<int> pinned_peer_groups_;
    ArmedHeals armed_;                  // heals waiting for their source (empty without source_lookup)
    // Heals planned ahead of a death, by source superblock (see
    // restart_grace), held compactly: a node's 2,000 copies as HealActions
    // with their verdicts kept 1.3 MiB more resident (scale_bench), as
    // PlannedCopy ~0.15 MiB. Expanded into armed_ when the death comes.
    struct PlannedCopy {
        // The target's context, shared with its track: the target path.
        std::shared_ptr<const PackedContext> target;
        std::uint64_t ns_inode = 0;
        int ns_pid = 0;
        int expected_mount_id = 0;
        // In PlannedAhead::text.
        std::uint32_t mountpoint_at = 0, mountpoint_size = 0;
        std::uint32_t clone_path_at = 0, clone_path_size = 0;
        std::uint32_t source = 0;  // index in PlannedAhead::sources
        MountFlags flags;
        PropagationMode propagation = PropagationMode::Shared;
        ActionKind kind = ActionKind::Replace;
        bool make_private_first = false;
    };
    struct PlannedAhead {
        std::uint64_t inputs = 0;  // hash of what they were planned from
        std::vector<AwaitedSource> sources;
        std::vector<PlannedCopy> copies;
        std::string text;  // the copies' mountpoints and clone paths, each clone path once
    };
    // Returns `heals` (copies in containers of `device`) held compactly.
    PlannedAhead pack_planned(const ArmedHeals& heals, dev_t device) const;
    // Returns `p`, of `device`, as armed heals (no verdicts: a copy's heal
    // that fails is reported without its source path).
    static ArmedHeals unpack_planned(const PlannedAhead& p, dev_t device);
    std::map<dev_t, PlannedAhead> planned_ahead_;
    // Returns how long a death's planned heals wait for their source: the
    // config's restart_grace, 0 when nothing is planned ahead (plans_ahead).
    std::chrono::microseconds restart_grace() const;
    // Set when heals planned ahead were armed for a death: until then steps
    // only fire armed heals whose source is back.
    Clock::time_point restart_wait_until_{};
    // By target path; each key views the target field of its track's ctx.
    std::map<std::string_view, Track, std::less<>> tracks_;
    Clock::time_point last_reconcile_start_{};  // when the last reconcile() began
    mutable std::mutex status_mu_;
    std::vector<StatusRow> status_;
    std::vector<std::string> source_paths_;  // under status_mu_
    std::shared_ptr<const std::vector<FuseConnectionInfo>> connections_ =
        std::make_shared<const std::vector<FuseConnectionInfo>>();  // under status_mu_; never null
    std::string state_problem_;                    // under status_mu_
    std::atomic<std::uint64_t> connections_version_{0};
};

} // namespace fh
