#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/fnv1a.h"
#include "core/fuse_servers.h"
#include "core/mount_relevance.h"
#include "engine/proc_scan.h"
#include "engine/sys.h"

namespace fh {

const char* to_string(HealEvent::Kind k) {
    switch (k) {
    case HealEvent::Kind::Broken: return "broken";
    case HealEvent::Kind::Healed: return "healed";
    case HealEvent::Kind::HealFailed: return "heal-failed";
    case HealEvent::Kind::Skipped: return "skipped";
    case HealEvent::Kind::Unresponsive: return "unresponsive";
    case HealEvent::Kind::Recovered: return "recovered";
    }
    return "?";
}

namespace {

std::int64_t micros(Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); }

// Empties `s` and frees its buffer. clear(), and assigning an empty string,
// keep the buffer: a target's reason (~100-200 bytes, set while it was
// broken) then outlived the outage in every healed track, 2,000 small blocks
// allocated during the outage's steps among the steps' freed memory, which
// malloc_trim cannot give back around them.
void release_text(std::string& s) { std::string().swap(s); }

// Backoff for a target whose heal failed: 100 ms doubling to 30 s.
Clock::duration backoff_for(int failures) {
    auto d = std::chrono::milliseconds(100) * (1LL << std::min(failures - 1, 9));
    return std::min<Clock::duration>(d, std::chrono::seconds(30));
}

} // namespace

Engine::Engine(Config config, Strategy strategy, LivenessProber& prober, Executor& executor, StateStore& store,
               HealObserver observer, VolumeLookup volumes, EngineSettings settings)
    : config_(std::move(config)),
      strategy_(strategy),
      prober_(prober),
      executor_(executor),
      store_(store),
      observer_(std::move(observer)),
      volumes_(std::move(volumes)),
      settings_(std::move(settings)) {
    auto loaded = store_.load();
    if (loaded) {
        origins_ = std::move(*loaded);
        spdlog::info("loaded {} origins from {}", origins_.size(), store_.path());
    } else {
        spdlog::warn("failed to load state, ignoring: {}; starting without remembered origins",
                     loaded.error().message());
    }
}

void Engine::set_config(const Config& config, Strategy strategy) {
    config_ = config;
    strategy_ = strategy;
    prober_.set_probe_timeout(config.probe_timeout);
    executor_.set_root_dir(config.match.root_dir);
    planned_ahead_.clear();  // planned under the old rules; the next converged step plans again
}

OriginMap Engine::origins() const { return origins_; }

bool Engine::plans_ahead() const {
    return settings_.plan_ahead && settings_.source_lookup && config_.restart_grace.count() > 0;
}

std::chrono::microseconds Engine::restart_grace() const {
    return plans_ahead() ? config_.restart_grace : std::chrono::microseconds(0);
}

Engine::PackedContext Engine::pack(const TargetContext& c) {
    return PackedContext({c.target, c.pod_uid, c.volume, c.driver, c.volume_handle});
}

TargetContext Engine::unpack(const PackedContext& p) {
    return TargetContext{std::string(p[0]), std::string(p[1]), std::string(p[2]), std::string(p[3]),
                         std::string(p[4])};
}

bool Engine::packs(const PackedContext& p, const TargetContext& c) {
    return p[0] == c.target && p[1] == c.pod_uid && p[2] == c.volume && p[3] == c.driver && p[4] == c.volume_handle;
}

TargetContext Engine::context_for(const Target& t) const {
    TargetContext ctx;
    ctx.target = t.path;
    ctx.pod_uid = t.where.pod_uid;
    ctx.volume = t.where.volume;
    if (volumes_) {
        if (auto vd = volumes_(t.path)) {
            ctx.driver = vd->driver_name;
            ctx.volume_handle = vd->volume_handle;
        }
    }
    return ctx;
}

void Engine::emit(HealEvent::Kind kind, const Track& tr, const TargetVerdict* v, std::string reason,
                  Clock::time_point now, Clock::time_point trigger) {
    if (!observer_) return;
    HealEvent e{kind, tr.ctx_known ? unpack(*tr.ctx) : TargetContext{}};
    if (v && v->has_origin) {
        e.source = v->origin.source_path;
    }
    e.fstype = tr.fstype;
    e.strategy = to_string(strategy_.load());
    e.outage_us = tr.in_outage ? micros(now - tr.outage_start) : 0;
    e.heal_us = tr.heal_us;
    e.since_event_us = trigger == Clock::time_point{} ? 0 : micros(now - trigger);
    if (trigger != Clock::time_point{} && tr.heal_started != Clock::time_point{})
        e.start_after_event_us = micros(tr.heal_started - trigger);
    if (trigger != Clock::time_point{} && tr.probe_started != Clock::time_point{})
        e.probe_after_event_us = micros(tr.probe_started - trigger);
    e.namespaces_healed = tr.ns_healed;
    e.reason = std::move(reason);
    observer_(e);
}

void Engine::begin_outage(Track& tr, Clock::time_point now) {
    tr.in_outage = true;
    tr.outage_reported = false;
    tr.outage_start = now;
    tr.heal_us = 0;
    tr.ns_healed = 0;
    tr.failures = 0;
    tr.reported = false;
}

void Engine::back_off(Track& tr, Clock::time_point now) {
    ++tr.failures;
    tr.retry_at = now + backoff_for(tr.failures);
}

void Engine::learn(const Classification& c, const MountTable& host, const LivenessMap& liveness) {
    bool changed = false;
    for (auto& [path, origin] : learn_origins(c, liveness, config_.match, &origins_)) {
        auto it = origins_.find(path);
        if (it == origins_.end() || !(it->second == origin)) {
            origins_[path] = origin;
            changed = true;
        }
    }
    // Forget targets that are no longer mounted at all (pod deleted); a
    // stale target stays mounted during an outage, so its origin is kept.
    for (auto it = origins_.begin(); it != origins_.end();) {
        if (!host.topmost_at(it->first)) {
            it = origins_.erase(it);
            changed = true;
        } else {
            ++it;
        }
    }
    // While saves fail (a full or read-only state dir), every step tries
    // again: nothing else would write the state once the dir recovers.
    if (!changed && !state_save_failing_) return;
    Status s = store_.save(origins_);
    if (!s) {
        if (!state_save_failing_)
            spdlog::warn("failed to save state, ignoring: {}; healing continues from memory", s.error().message());
        state_save_failing_ = true;
        std::lock_guard<std::mutex> lock(status_mu_);
        state_problem_ = "failed to save " + store_.path() + ": " + s.error().message() +
                         "; healing continues from memory (a restart forgets what was learned since)";
    } else if (state_save_failing_) {
        spdlog::info("state saved again to {}", store_.path());
        state_save_failing_ = false;
        std::lock_guard<std::mutex> lock(status_mu_);
        state_problem_.clear();
    }
}

std::string Engine::state_problem() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    return state_problem_;
}

Engine::Track& Engine::track(const std::string& target) {
    auto it = tracks_.find(target);
    if (it != tracks_.end()) return it->second;
    // Never in practice: every action's target had a verdict, which made
    // its track. Its events carry an empty context (ctx_known false).
    Track fresh;
    fresh.ctx = std::make_shared<const PackedContext>(pack(TargetContext{target, {}, {}, {}, {}}));
    const std::string_view key = (*fresh.ctx)[kPackedTarget];
    return tracks_.emplace(key, std::move(fresh)).first->second;
}

void Engine::note_verdicts(const Plan& plan, const Classification& c, Clock::time_point now) {
    // One verdict per target, in classification order (plan_heals): the
    // target of verdict i is c.targets[i], checked, found by path otherwise.
    // (A map of the 2,000 paths cost every step 2,000 string copies.)
    std::set<std::string_view> present;  // views into plan.verdicts
    for (std::size_t i = 0; i < plan.verdicts.size(); ++i) {
        const TargetVerdict& v = plan.verdicts[i];
        present.insert(v.target);
        const Target* t = i < c.targets.size() && c.targets[i].path == v.target ? &c.targets[i] : nullptr;
        if (!t) {
            auto it = std::find_if(c.targets.begin(), c.targets.end(), [&](const Target& x) { return x.path == v.target; });
            if (it == c.targets.end()) continue;  // never: every verdict is of a classified target
            t = &*it;
        }
        auto it = tracks_.find(v.target);
        // Looked up again while vol_data.json is unknown: kubelet may write
        // it after the mount appears, and the pod index reads it on the loop
        // thread, so the first step can run before it is indexed.
        if (it == tracks_.end() || !it->second.ctx_known || (*it->second.ctx)[kPackedTarget].empty() ||
            (*it->second.ctx)[kPackedVolumeHandle].empty()) {
            TargetContext ctx = context_for(*t);
            if (it == tracks_.end()) {
                Track fresh;
                fresh.ctx = std::make_shared<const PackedContext>(pack(ctx));
                fresh.ctx_known = true;
                const std::string_view key = (*fresh.ctx)[kPackedTarget];  // == v.target
                it = tracks_.emplace(key, std::move(fresh)).first;
            } else if (!it->second.ctx_known || !packs(*it->second.ctx, ctx)) {
                // A new copy only when it differs (the status rows share
                // it); the key moves to the new copy's path.
                auto node = tracks_.extract(it);
                node.mapped().ctx = std::make_shared<const PackedContext>(pack(ctx));
                node.mapped().ctx_known = true;
                node.key() = (*node.mapped().ctx)[kPackedTarget];
                it = tracks_.insert(std::move(node)).position;
            }
        }
        Track& tr = it->second;
        tr.kind = v.where.kind;
        tr.fstype = t->mount->fstype;
        const bool dead = v.state == TargetState::Broken || v.state == TargetState::Healing ||
                          v.state == TargetState::Skipped;
        if (dead && !tr.in_outage) begin_outage(tr, now);
        if (dead && !tr.outage_reported) {
            tr.outage_reported = true;
            emit(HealEvent::Kind::Broken, tr, &v, v.reason, now);
        }
        // A source back as something that cannot serve the target (another
        // fstype, not a FUSE root) is reported like a skip, once per reason;
        // the target keeps waiting for a good one (armed, Broken).
        const bool refused = v.state == TargetState::Broken && v.source_refused;
        if ((v.state == TargetState::Skipped || refused) && (!tr.reported || tr.reported_reason != v.reason)) {
            emit(HealEvent::Kind::Skipped, tr, &v, v.reason, now);
            tr.reported = true;
            tr.reported_reason = v.reason;
        }
        if (v.state == TargetState::Unresponsive && tr.state != TargetState::Unresponsive)
            emit(HealEvent::Kind::Unresponsive, tr, &v, "probe timed out after " +
                 std::to_string(config_.probe_timeout.count() / 1000) + " ms", now);
        if (v.state == TargetState::Healthy && tr.in_outage) {
            // Alive again without us (e.g. kubelet remounted it). An outage
            // no step saw (begun when planned heals were armed) ends quietly.
            tr.in_outage = false;
            if (auto ahead = copies_ahead_.find(t->path); ahead != copies_ahead_.end()) copies_ahead_.erase(ahead);
            if (tr.outage_reported) {
                tr.last_outage_us = micros(now - tr.outage_start);
                emit(HealEvent::Kind::Recovered, tr, &v, "alive again without a heal", now);
            }
        }
        tr.state = v.state;
        if (v.state == TargetState::Healthy) release_text(tr.reason);
        else tr.reason = v.reason;
    }
    for (auto it = tracks_.begin(); it != tracks_.end();) {
        if (!present.count(it->first)) {
            if (it->second.in_outage)
                spdlog::info("target {} was unmounted during its outage (pod deleted?), forgetting it; it is not "
                             "healed", it->first);
            else
                spdlog::debug("target {} is gone (unmounted), forgetting it", it->first);
            if (auto ahead = copies_ahead_.find(it->first); ahead != copies_ahead_.end()) copies_ahead_.erase(ahead);
            it = tracks_.erase(it);
        } else {
            ++it;
        }
    }
}

void Engine::release_pins(std::vector<sys::UniqueFd>& pins) {
    if (pins.empty()) return;
    // Each pin may be the last reference to a dead FUSE superblock, and the
    // close() that drops it tears the superblock down, which can take long:
    // 2.2 s and 4.0 s in the fault campaign at load 4-20, the heal worker
    // waiting in bdi_unregister -> wb_shutdown -> __flush_work (the
    // superblock's writeback work, run on a kworker that a loaded machine
    // runs late; sampled with scripts/sample-daemon-stacks.sh). Closing them
    // on a thread of their own was tried once, confounded by the load (a
    // heal's own detach then waited 15 s, its stack not sampled), so they
    // stay on the heal worker, timed, but after the step's status is
    // published (docs/RELIABILITY.md, "Open").
    const auto count = pins.size();
    const auto t0 = Clock::now();
    pins.clear();
    spdlog::debug("released {} pins of healed targets' dead filesystems ({} us)", count, micros(Clock::now() - t0));
}

std::vector<NamespaceView> Engine::scan_all_namespaces(const std::set<dev_t>& devices, const std::set<dev_t>& cached,
                                                       ReconcileSummary& sum) {
    const auto t0 = Clock::now();
    auto scan = scan_namespaces(settings_.proc_root, ::getpid(), devices, cached);
    known_namespaces_devices_ = cached;
    known_namespaces_devices_.insert(devices.begin(), devices.end());
    spdlog::debug("namespace walk: {} processes, {} namespaces, {} hold dead mounts, {} hold the {} superblocks "
                  "looked for ({} us)",
                  scan.processes, scan.distinct_namespaces, scan.namespaces.size(), scan.holdings.size(),
                  known_namespaces_devices_.size(), micros(Clock::now() - t0));
    // The pod of each namespace: from the parsed ones, else kept from the
    // last walk (same process, same namespace): read once per container,
    // not at every death (200 reads of /proc/<pid>/cgroup in its step).
    std::map<std::pair<int, std::uint64_t>, std::string> pod_of;  // by (pid, namespace inode)
    for (const KnownNamespace& k : known_namespaces_)
        if (k.pod_uid_known) pod_of[{k.pid, k.ns_inode}] = known_pod_uids_.substr(k.pod_uid_at, k.pod_uid_size);
    for (const auto& ns : scan.namespaces) pod_of[{ns.pid, ns.ns_inode}] = ns.pod_uid;
    known_namespaces_.clear();
    known_devices_.clear();
    known_pod_uids_.clear();
    known_namespaces_.reserve(scan.holdings.size());
    for (const auto& h : scan.holdings) {
        KnownNamespace k;
        k.pid = h.pid;
        k.ns_inode = h.ns_inode;
        k.first_device = static_cast<std::uint32_t>(known_devices_.size());
        k.device_count = static_cast<std::uint32_t>(h.devices.size());
        known_devices_.insert(known_devices_.end(), h.devices.begin(), h.devices.end());
        if (auto pod = pod_of.find({h.pid, h.ns_inode}); pod != pod_of.end()) set_pod_uid(k, pod->second);
        known_namespaces_.push_back(k);
    }
    // A namespace no process shows any more is gone, and its copies with it.
    std::erase_if(slave_copies_, [&](const SlaveCopy& k) {
        return !std::binary_search(scan.namespace_inodes.begin(), scan.namespace_inodes.end(), k.ns_inode);
    });
    last_walk_ = Clock::now();
    ++sum.namespace_walks;
    return std::move(scan.namespaces);
}

std::vector<NamespaceView> Engine::reread_known_namespaces(const std::set<dev_t>& devices) {
    const auto t0 = Clock::now();
    std::vector<NamespaceView> out;
    for (KnownNamespace& known : known_namespaces_) {
        const auto held = devices_of(known);
        if (std::none_of(held.begin(), held.end(), [&](dev_t d) { return devices.count(d) > 0; })) continue;
        auto table = read_namespace_table(known.pid, known.ns_inode);
        if (!table) continue;
        bool wanted = false;
        for (const auto& e : table->entries()) wanted = wanted || devices.count(e.device);
        if (!wanted) continue;
        if (!known.pod_uid_known) set_pod_uid(known, read_pod_uid(settings_.proc_root, known.pid));
        out.push_back(NamespaceView{known.pid, known.ns_inode, std::move(*table),
                                    known_pod_uids_.substr(known.pod_uid_at, known.pod_uid_size)});
    }
    spdlog::trace("re-read {} of {} known namespaces for {} superblocks ({} us)", out.size(), known_namespaces_.size(),
                  devices.size(), micros(Clock::now() - t0));
    return out;
}

std::optional<MountTable> Engine::read_namespace_table(int pid, std::uint64_t ns_inode) const {
    auto id = sys::mount_ns_id(settings_.proc_root, pid);
    if (!id || id->second != ns_inode) return std::nullopt;  // gone, or the pid was reused
    auto table = read_mountinfo(settings_.proc_root + "/" + std::to_string(pid) + "/mountinfo");
    if (!table) return std::nullopt;
    return std::move(*table);
}

std::span<const dev_t> Engine::devices_of(const KnownNamespace& k) const {
    return std::span<const dev_t>(known_devices_).subspan(k.first_device, k.device_count);
}

void Engine::set_pod_uid(KnownNamespace& k, std::string_view uid) {
    k.pod_uid_at = static_cast<std::uint32_t>(known_pod_uids_.size());
    k.pod_uid_size = static_cast<std::uint32_t>(uid.size());
    k.pod_uid_known = true;
    known_pod_uids_ += uid;
}

void Engine::forget_healed_copy(std::uint64_t ns_inode, dev_t device) {
    for (KnownNamespace& known : known_namespaces_) {
        if (known.ns_inode != ns_inode) continue;
        const auto first = known_devices_.begin() + known.first_device;
        known.device_count = static_cast<std::uint32_t>(std::remove(first, first + known.device_count, device) - first);
    }
}

void Engine::note_copy_ahead(const HealAction& a) {
    auto it = copies_ahead_.find(a.target);
    if (it == copies_ahead_.end()) it = copies_ahead_.emplace(a.target, std::vector<CopiesAhead>{}).first;
    auto& list = it->second;
    auto c = std::find_if(list.begin(), list.end(), [&](const CopiesAhead& x) { return x.device == a.source_device; });
    if (c == list.end()) {
        list.push_back(CopiesAhead{a.source_device, {}});
        c = list.end() - 1;
    }
    c->copies.push_back(CopyMade{a.ns_inode, a.ns_pid, a.mountpoint});
}

void Engine::note_copy_propagation(const HealAction& a) {
    if (a.kind == ActionKind::UnmountDeadLayer) return;  // what it uncovers is not ours
    const SlaveCopy key = slave_copy_key(a.ns_inode, a.mountpoint);
    auto it = std::lower_bound(slave_copies_.begin(), slave_copies_.end(), key);
    const bool listed = it != slave_copies_.end() && *it == key;
    if (a.propagation == PropagationMode::Slave && !listed) slave_copies_.insert(it, key);
    if (a.propagation != PropagationMode::Slave && listed) slave_copies_.erase(it);
}

void Engine::load_stranded_views(std::vector<NamespaceView>& namespaces) const {
    std::set<std::uint64_t> have;
    for (const NamespaceView& ns : namespaces) have.insert(ns.ns_inode);
    for (const HealedTarget& h : stranded_)
        for (const CopyMade& c : h.copies_made) {
            if (!have.insert(c.ns_inode).second) continue;
            auto table = read_namespace_table(c.pid, c.ns_inode);
            if (!table) continue;
            namespaces.push_back(NamespaceView{c.pid, c.ns_inode, std::move(*table),
                                               read_pod_uid(settings_.proc_root, c.pid)});
        }
}

void Engine::prune_stranded(const std::vector<NamespaceView>& namespaces) {
    for (HealedTarget& h : stranded_) {
        if (prober_.fusectl_state(h.device) == Liveness::Alive) {  // its number was handed on
            h.copies_made.clear();
            continue;
        }
        std::erase_if(h.copies_made, [&](const CopyMade& c) {
            auto ns = std::find_if(namespaces.begin(), namespaces.end(),
                                   [&](const NamespaceView& v) { return v.ns_inode == c.ns_inode; });
            if (ns == namespaces.end()) return true;  // its process is gone
            const MountEntry* top = ns->table.topmost_at(c.mountpoint);
            return !top || top->device != h.device;
        });
    }
    std::erase_if(stranded_, [](const HealedTarget& h) { return h.copies_made.empty(); });
}

const std::vector<HealedTarget>* Engine::healed_for_plan(std::vector<HealedTarget>& storage) const {
    if (stranded_.empty()) return &healed_;
    storage = healed_;
    storage.insert(storage.end(), stranded_.begin(), stranded_.end());
    return &storage;
}

void Engine::check_healed_liveness(const std::vector<NamespaceView>& namespaces, LivenessMap& liveness) {
    // The dead superblocks of targets healed earlier, whose copies a
    // container started during the outage may still hold. Once its last
    // mount is gone a device number is handed to the next mount, maybe one
    // of another dataset that other containers copy; the planner heals a
    // copy only while its device is still the dead superblock. fusectl
    // tells at once. Without it, the host mounts are gone, so one copy is
    // probed through its process's root (/proc/<pid>/root/<mountpoint>),
    // with the same statx probe and timeout as any other.
    // The same for the superblocks of stranded copies (stranded_).
    std::vector<std::pair<dev_t, std::string>> probe;
    std::vector<const HealedTarget*> all;
    for (const HealedTarget& h : healed_) all.push_back(&h);
    for (const HealedTarget& h : stranded_) all.push_back(&h);
    std::set<dev_t> asked;
    for (const HealedTarget* hp : all) {
        const HealedTarget& h = *hp;
        if (liveness.count(h.device) || !asked.insert(h.device).second) continue;
        if (Liveness l = prober_.fusectl_state(h.device); l != Liveness::Unknown) {
            liveness[h.device] = l;
            continue;
        }
        for (const NamespaceView& ns : namespaces) {
            auto copies = ns.table.with_device(h.device);
            auto top = std::find_if(copies.begin(), copies.end(),
                                    [&](const MountEntry* e) { return ns.table.is_topmost(*e); });
            if (top == copies.end()) continue;
            probe.emplace_back(h.device, settings_.proc_root + "/" + std::to_string(ns.pid) + "/root" +
                                             (*top)->mountpoint);
            break;
        }
    }
    for (auto& [dev, l] : prober_.check(probe)) liveness[dev] = l;
}

LivenessMap Engine::check_liveness(const MountTable& host, const Classification& c) {
    // Liveness of every target's topmost mount and of every source a dead
    // target may be healed from, asked afresh each step (a fusectl file read
    // per device, or a statx that fails at once on a dead connection). Not
    // cached: once the last mount of a dead superblock is gone its device
    // number is handed to the next FUSE mount, often the restarted daemon's
    // own, within the same step.
    // One path per superblock: the prober checks each device once, and
    // 2,000 targets on 10 datasets would copy 2,000 paths for it.
    std::vector<std::pair<dev_t, std::string>> probe;
    std::set<dev_t> listed;
    for (const Target& t : c.targets)
        if (listed.insert(t.mount->device).second) probe.emplace_back(t.mount->device, t.mount->mountpoint);
    for (const MountEntry* s : c.sources)
        if (host.is_topmost(*s) && listed.insert(s->device).second) probe.emplace_back(s->device, s->mountpoint);
    return prober_.check(probe);
}

Engine::BatchOutcome Engine::run_batch(const std::vector<const HealAction*>& actions,
                                       const std::vector<const TargetVerdict*>& verdicts, Clock::time_point trigger,
                                       std::set<std::string>& ready_sources, int& budget, ReconcileSummary& sum,
                                       const std::map<std::string, EarlyProbe>* early_probes) {
    // Each host swap completes before the next action begins. Consecutive
    // actions in containers' namespaces, one per namespace, run together
    // (Executor::execute_in_namespaces): they cannot touch each other's
    // mounts, and each mostly waits for its detach's RCU grace period. The
    // executor re-checks each mountpoint right before acting; when it finds
    // the table moved (ESTALE) the batch stops and the caller reads the
    // tables again.
    BatchOutcome out;
    enum class Admit { Go, Skip, Stop };
    // Books actions[k] as not carried out: its new source failed the probe
    // of its clone path with `e`.
    auto refuse_unserved = [&](std::size_t k, const Error& e) {
        const HealAction& a = *actions[k];
        Track& tr = track(a.target);
        back_off(tr, Clock::now());
        // ENOENT: a subPath target's directory is missing from the new
        // source (never an empty directory in its place).
        emit(HealEvent::Kind::HealFailed, tr, verdicts[k],
             (e.err == ENOENT ? "the new source has no " + a.clone_path + " (the directory this target binds): "
                              : "the new source does not serve " + a.clone_path + ": ") +
                 e.message(),
             Clock::now(), trigger);
        tr.heal_started = tr.probe_started = {};  // the next attempt is timed from its own event
    };
    // Clone paths whose early probe (started by fire_armed_heals) was not
    // waited for at admission: the container actions of one batch wait for
    // it in their gate instead, once everything before their first change
    // is done, so that the first copies are ready to move the moment the
    // new FUSE daemon answers. Only mount roots (EarlyProbe): what comes
    // before the gate must not wait for that FUSE daemon. Read by the
    // workers during the batch.
    std::map<std::string, const LivenessProber::Probe*> gated;
    // Whether actions[k] may run now: not backing off, its new source has
    // answered a probe (probed here, once per clone path per step), and the
    // step's budget is not spent. With `may_gate` (a container action) and
    // an early probe of a mount root, the probe is left to the action's
    // gate (`gated`).
    auto admit = [&](std::size_t k, bool may_gate) -> Admit {
        const HealAction& a = *actions[k];
        Track& tr = track(a.target);
        if (tr.failures > 0 && Clock::now() < tr.retry_at) return Admit::Skip;
        if (!a.clone_path.empty() && !ready_sources.count(a.clone_path)) {
            const EarlyProbe* early = nullptr;
            if (early_probes)
                if (auto it = early_probes->find(a.clone_path); it != early_probes->end()) early = &it->second;
            const auto probe_start = early ? early->probe.started() : Clock::now();
            if (tr.probe_started == Clock::time_point{}) tr.probe_started = probe_start;
            if (early && early->at_mount_root && may_gate) {
                gated.emplace(a.clone_path, &early->probe);
            } else {
                Status s = early ? prober_.wait_probe(early->probe) : prober_.probe_path(a.clone_path);
                spdlog::debug("probed {} before cloning it ({} us): {}", a.clone_path,
                              micros(Clock::now() - probe_start), s ? "ok" : s.error().message());
                if (!s) {
                    refuse_unserved(k, s.error());
                    return Admit::Skip;
                }
                ready_sources.insert(a.clone_path);
            }
        }
        if (budget-- == 0) {
            spdlog::error("reconcile step did not converge; stopping it here");
            out.out_of_budget = true;
            return Admit::Stop;
        }
        return Admit::Go;
    };
    // Books the outcome of actions[k], carried out from t0 for `took`.
    // Returns false when the batch must stop (the table moved).
    auto settle = [&](std::size_t k, const Status& s, Clock::time_point t0, Clock::duration took,
                      sys::UniqueFd pin) -> bool {
        const HealAction& a = *actions[k];
        Track& tr = track(a.target);
        const TargetVerdict* v = verdicts[k];
        const auto t1 = t0 + took;
        if (tr.heal_started == Clock::time_point{}) tr.heal_started = t0;
        ++out.executed;
        ++sum.actions;
        tr.heal_us += micros(took);
        spdlog::debug("{} {} at {}{} (connection {} -> {}, {}, {} us): {}", to_string(a.kind), a.target, a.mountpoint,
                      a.in_host() ? "" : " in ns of pid " + std::to_string(a.ns_pid),
                      connection_id(a.expected_device), connection_id(a.source_device), to_string(a.propagation),
                      micros(took), s ? "ok" : s.error().message());
        if (!s) {
            if (s.error().err == ESTALE) {  // the table moved under us: read it and plan again
                out.table_moved = true;
                return false;
            }
            ++sum.failures;
            back_off(tr, t1);  // its later actions in this batch are skipped
            emit(HealEvent::Kind::HealFailed, tr, v, s.error().message(), t1, trigger);
            tr.heal_started = tr.probe_started = {};
            return true;
        }
        if (!a.in_host()) {
            ++tr.ns_healed;
            forget_healed_copy(a.ns_inode, a.expected_device);
            note_copy_propagation(a);
            if (tr.in_outage && a.source_device != 0) note_copy_ahead(a);
            for (HealedTarget& h : stranded_)
                if (h.device == a.expected_device)
                    std::erase_if(h.copies_made, [&](const CopyMade& c) {
                        return c.ns_inode == a.ns_inode && c.mountpoint == a.mountpoint;
                    });
            return true;
        }
        if (a.kind == ActionKind::UnmountDeadLayer) return true;
        if (pin.valid()) {
            healed_.push_back(HealedTarget{a.target, a.expected_device, v->origin.root, v->origin.fstype,
                                           v->origin.source, v->origin.source_path, a.clone_path, {}});
            healed_pins_.push_back(std::move(pin));
            if (a.stale_peer_group != 0) pinned_peer_groups_.insert(a.stale_peer_group);
        }
        if (auto ahead = copies_ahead_.find(a.target); ahead != copies_ahead_.end()) {
            // Copies healed ahead onto a superblock this heal did not use:
            // it died before this host mount was healed. Healed again from
            // the same source (stranded_). (Its device number stays its own
            // while any of them holds it.)
            for (CopiesAhead& c : ahead->second) {
                if (c.device == a.source_device || !v) continue;
                spdlog::debug("{} copies of {} in containers were healed onto connection {}, which died before the "
                              "host mount was healed: healing them again", c.copies.size(), a.target,
                              connection_id(c.device));
                stranded_.push_back(HealedTarget{a.target, c.device, v->origin.root, v->origin.fstype,
                                                 v->origin.source, v->origin.source_path, a.clone_path,
                                                 std::move(c.copies)});
            }
            copies_ahead_.erase(ahead);
        }
        ++sum.healed;
        ++tr.heals;
        tr.failures = 0;
        tr.last_outage_us = micros(t1 - tr.outage_start);
        emit(HealEvent::Kind::Healed, tr, v, {}, t1, trigger);
        tr.in_outage = false;
        tr.heal_us = 0;
        tr.heal_started = {};
        tr.probe_started = {};
        tr.ns_healed = 0;
        tr.state = TargetState::Healthy;
        release_text(tr.reason);
        return true;
    };

    for (std::size_t k = 0; k < actions.size(); ++k) {
        const HealAction& a = *actions[k];
        const Admit admitted = admit(k, !a.in_host());
        if (admitted == Admit::Stop) break;
        if (admitted == Admit::Skip) continue;

        if (!a.in_host()) {
            // This action and the container actions right after it, at most
            // one per namespace.
            std::vector<std::size_t> group{k};
            std::set<std::uint64_t> namespaces{a.ns_inode};
            bool stop = false;
            std::size_t next = k + 1;
            for (; next < actions.size() && !actions[next]->in_host() &&
                   !namespaces.count(actions[next]->ns_inode);
                 ++next) {
                const Admit more = admit(next, true);
                if (more == Admit::Stop) {
                    stop = true;
                    break;
                }
                if (more == Admit::Go) {
                    group.push_back(next);
                    namespaces.insert(actions[next]->ns_inode);
                }
            }
            std::vector<const HealAction*> group_actions;
            for (std::size_t i : group) {
                group_actions.push_back(actions[i]);
                out.changed_namespaces.insert(actions[i]->ns_inode);
            }
            Executor::Gate gate;
            if (!gated.empty())
                gate = [this, &gated](const HealAction& a) -> Status {
                    auto it = gated.find(a.clone_path);
                    return it == gated.end() ? Status{} : prober_.wait_probe(*it->second);
                };
            const auto t0 = Clock::now();
            std::vector<Executor::NamespaceOutcome> results = executor_.execute_in_namespaces(group_actions, gate);
            // The gated probes have answered (or timed out) by now, unless
            // every copy of a path failed before its gate: then this waits
            // for that probe, as admission did before copies were prepared.
            // A probe gives the same answer on every call.
            std::map<std::string, Error> unserved;
            for (const auto& [path, probe] : gated) {
                Status s = prober_.wait_probe(*probe);
                spdlog::debug("probed {} before moving clones of it ({} us; the container copies were prepared "
                              "meanwhile): {}",
                              path, micros(Clock::now() - probe->started()), s ? "ok" : s.error().message());
                if (s) ready_sources.insert(path);
                else unserved.emplace(path, s.error());
            }
            gated.clear();
            bool moved = false;
            for (std::size_t g = 0; g < group.size(); ++g) {
                if (results[g].refused_at_gate) {
                    auto e = unserved.find(actions[group[g]]->clone_path);
                    refuse_unserved(group[g], e != unserved.end() ? e->second : results[g].status.error());
                    continue;
                }
                moved = !settle(group[g], results[g].status, t0 + results[g].started, results[g].took, {}) || moved;
            }
            if (moved || stop) break;
            k = next - 1;
            continue;
        }

        out.host_changed = true;
        // Copies of a healed target are looked for later by the dead
        // superblock's device number; pin the superblock first (its stale
        // mount is about to be detached), or the number could be reused.
        sys::UniqueFd pin;
        const TargetVerdict* v = verdicts[k];
        const bool keep_healed = v && a.kind != ActionKind::UnmountDeadLayer && config_.namespaces &&
                                 settings_.namespace_heals_supported;
        if (keep_healed) {
            // One member per peer group is enough to keep it.
            const bool keep_group = a.stale_peer_group != 0 && !pinned_peer_groups_.count(a.stale_peer_group);
            auto p = executor_.pin_superblock(a, keep_group);
            if (p) pin = std::move(*p);
            else spdlog::debug("failed to pin the dead filesystem at {}, ignoring (its copies in containers "
                               "started later are not looked for): {}", a.mountpoint, p.error().message());
        }
        const auto t0 = Clock::now();
        Status s = executor_.execute(a);
        if (!settle(k, s, t0, Clock::now() - t0, std::move(pin))) break;
    }
    return out;
}

Engine::BatchOutcome Engine::fire_armed_heals(Clock::time_point trigger, std::set<std::string>& ready_sources,
                                              ReconcileSummary& sum) {
    const auto entered = Clock::now();
    // Which awaited sources are back. Per path: a statx (no lock) says
    // whether a mount other than the dead ones is there; most events stop
    // here. For a new mount: its liveness (fusectl: one small file read),
    // then the probes of the paths its heals clone are started, then
    // statmount checks the mount is a FUSE root of the origin's fstype while
    // the probes travel to the new FUSE daemon and back. (A probe of a mount
    // that fails the check is left to finish; a probe never changes
    // anything.)
    std::vector<bool> back(armed_.sources.size(), false);
    std::vector<dev_t> new_device(armed_.sources.size(), 0);
    std::map<std::string, EarlyProbe> early_probes;
    bool any = false;
    for (std::size_t i = 0; i < armed_.sources.size(); ++i) {
        const AwaitedSource& src = armed_.sources[i];
        auto id = settings_.source_lookup.identify(src.source_path);
        if (!id) {
            spdlog::debug("failed to look up source {}, ignoring: {}", src.source_path, id.error().message());
            continue;
        }
        if (!id->is_mount_root || std::find(src.dead_devices.begin(), src.dead_devices.end(), id->device) !=
                                      src.dead_devices.end()) {
            spdlog::trace("armed heals for {} wait: {}", src.source_path,
                          id->is_mount_root ? "the dead filesystem is still mounted there" : "nothing mounted there");
            continue;
        }
        // fusectl's marker alone: a fresh connection counts its INIT request
        // as waiting until the FUSE daemon answers it, so the full check
        // would wait on a statx for that answer here, and the probes of the
        // clone paths started next would wait for it a second time. Those
        // probes are the liveness proof: run_batch acts only once they
        // answered. Without fusectl, the statx check decides.
        Liveness state = prober_.fusectl_state(id->device);
        if (state == Liveness::Unknown) state = prober_.check({{id->device, src.source_path}})[id->device];
        if (state != Liveness::Alive) continue;
        std::vector<std::string> started;
        for (std::size_t k = 0; k < armed_.actions.size(); ++k) {
            const std::string& clone = armed_.actions[k].clone_path;
            if (armed_.action_source[k] != i || clone.empty() || early_probes.count(clone)) continue;
            early_probes.emplace(clone, EarlyProbe{prober_.start_probe(clone), clone == src.source_path});
            started.push_back(clone);
        }
        auto m = settings_.source_lookup.describe(id->unique_mount_id);
        if (!m) {
            spdlog::debug("failed to look up source {}, ignoring: {}", src.source_path, m.error().message());
        } else {
            std::string why;
            for (dev_t dead : src.dead_devices) {
                why = source_mount_problem(&*m, src.source_path, src.fstype, dead, config_.match);
                if (!why.empty()) break;
            }
            if (why.empty()) {
                back[i] = any = true;
                new_device[i] = id->device;
                continue;
            }
            spdlog::trace("armed heals for {} wait: {}", src.source_path, why);
        }
        for (const std::string& clone : started) early_probes.erase(clone);
    }
    if (!any) return {};
    const auto checked = Clock::now();
    // Pointers, not copies: with a thousand targets a copy of the actions
    // alone would cost more than the source check.
    std::vector<const HealAction*> ready;
    std::vector<const TargetVerdict*> verdicts;
    ready.reserve(armed_.actions.size());
    verdicts.reserve(armed_.actions.size());
    int deferred = 0;
    for (std::size_t k = 0; k < armed_.actions.size(); ++k) {
        if (!back[armed_.action_source[k]]) continue;
        HealAction& a = armed_.actions[k];
        // A host mount waits for the walk after its superblock's death
        // (see reconcile): the containers the cache knows go now, the host
        // mounts after the full plan's walk.
        if (a.in_host() && !walked_after_death_.count(a.expected_device)) {
            ++deferred;
            continue;
        }
        if (!a.clone_path.empty()) a.source_device = new_device[armed_.action_source[k]];
        ready.push_back(&a);
        const std::size_t v = armed_.action_verdict[k];
        verdicts.push_back(v == ArmedHeals::kNoVerdict ? nullptr : &armed_.verdicts[v]);
    }
    const auto picked = Clock::now();
    spdlog::debug("a source is back: firing {} armed actions ({} us since the event: {} us to this step, {} us "
                  "checking {} sources, {} us picking actions; {} host actions wait for a walk of /proc)",
                  ready.size(), micros(picked - trigger), micros(entered - trigger), micros(checked - entered),
                  armed_.sources.size(), micros(picked - checked), deferred);
    int unlimited = -1;
    const int before = sum.actions;
    BatchOutcome out = run_batch(ready, verdicts, trigger, ready_sources, unlimited, sum, &early_probes);
    sum.armed_actions += sum.actions - before;
    return out;
}

std::vector<FuseConnectionInfo> Engine::connections_of(const Classification& c, const LivenessMap& liveness) {
    std::map<dev_t, FuseConnectionInfo> by_device;
    auto entry = [&](const MountEntry& m) -> FuseConnectionInfo& {
        auto [it, added] = by_device.try_emplace(m.device);
        FuseConnectionInfo& info = it->second;
        if (added) {
            info.device = m.device;
            info.fstype = m.fstype;
            const auto l = liveness.find(m.device);
            info.liveness = l == liveness.end() ? Liveness::Unknown : l->second;
        }
        return info;
    };
    for (const Target& t : c.targets) entry(*t.mount).targets.push_back(t.path);
    for (const MountEntry* s : c.sources) entry(*s).sources.push_back(s->mountpoint);
    std::vector<FuseConnectionInfo> out;
    out.reserve(by_device.size());
    for (auto& [dev, info] : by_device) out.push_back(std::move(info));
    return out;
}

ReconcileSummary Engine::reconcile(Clock::time_point trigger) {
    last_reconcile_start_ = Clock::now();
    ReconcileSummary sum;
    std::vector<NamespaceView> namespaces;
    bool views_loaded = false;  // `namespaces` is current for this step
    std::set<dev_t> views_devices;  // the devices `namespaces` was read for
    bool walked = false;        // a full /proc walk ran in this step
    std::vector<HealedTarget> healed_storage;  // see healed_for_plan
    std::set<std::string> ready_sources;  // clone paths that answered a probe in this step
    int budget = -1;
    const bool heal_namespaces = config_.namespaces && settings_.namespace_heals_supported;
    if (!heal_namespaces) {  // turned off by a reload: nothing looks for copies any more
        healed_.clear();
        copies_ahead_.clear();
        stranded_.clear();
        slave_copies_.clear();
        release_pins(healed_pins_);
        pinned_peer_groups_.clear();
    }

    // Heals armed while their source was down go first: checking the
    // awaited source paths costs microseconds, reading the table does not.
    // Whatever they did, the full read and plan below follow and finish the
    // job (and arm again if something still waits).
    if (restart_grace().count() > 0 && !planned_ahead_.empty() && arm_planned_ahead())
        restart_wait_until_ = last_reconcile_start_ + restart_grace();
    if (!armed_.empty()) {
        const BatchOutcome fired = fire_armed_heals(trigger, ready_sources, sum);
        if (fired.executed == 0 && last_reconcile_start_ < restart_wait_until_) {
            // A death whose heals were planned ahead: wait for its source
            // here (the next_retry() timer ends the wait), not in a full
            // step that a source mounted meanwhile would have to wait for.
            spdlog::trace("waiting up to {} us for a dead source to be mounted again",
                          micros(restart_wait_until_ - last_reconcile_start_));
            sum.targets = static_cast<int>(tracks_.size());
            return sum;
        }
        armed_ = {};
        restart_wait_until_ = {};
    }

    // The host's table, its classification and liveness; re-read after
    // every action in the host namespace. An action inside a container's
    // namespace cannot change the host's table (container copies are slaves
    // or private), so the host view is kept across those.
    std::shared_ptr<const MountTable> host;
    Classification c;
    LivenessMap liveness;
    bool host_stale = true;
    PlanInput in;
    Plan plan;
    bool converged = false;  // the last plan was made from current tables and needed no action
    // The superblocks of every target's topmost mount, as the namespace
    // cache remembers them (see known_namespaces_).
    auto superblocks_of_targets = [&c] {
        std::set<dev_t> devices;
        for (const Target& t : c.targets) devices.insert(t.mount->device);
        return devices;
    };

    for (;;) {
        const auto step_start = Clock::now();
        // Where a step's time goes, for the trace line below (µs): reading
        // the table, classifying it, liveness, learning the origins.
        std::int64_t read_us = 0, classify_us = 0, liveness_us = 0, learn_us = 0;
        if (host_stale) {
            auto table = read_host_table();
            if (!table) {
                spdlog::error("failed to read the mount table, ignoring this step: {}", table.error().message());
                sum.table_error = true;
                break;
            }
            host = std::move(*table);
            auto t = Clock::now();
            read_us = micros(t - step_start);
            c = classify(*host, config_.match, &origins_);
            classify_us = micros(Clock::now() - t);
            t = Clock::now();
            liveness = check_liveness(*host, c);
            liveness_us = micros(Clock::now() - t);
            t = Clock::now();
            learn(c, *host, liveness);
            learn_us = micros(Clock::now() - t);
            host_stale = false;
        }
        if (heal_namespaces && !views_loaded && !known_namespaces_.empty() &&
            std::any_of(tracks_.begin(), tracks_.end(), [](const auto& t) { return t.second.in_outage; })) {
            // An outage is under way and its containers are known: read them
            // now, so the first plan of this step can already heal.
            std::set<dev_t> down;
            for (const Target& t : c.targets)
                if (auto l = liveness.find(t.mount->device); l != liveness.end() && l->second != Liveness::Alive &&
                                                             known_namespaces_devices_.count(t.mount->device))
                    down.insert(t.mount->device);
            if (!down.empty()) {
                namespaces = reread_known_namespaces(down);
                views_loaded = true;
                views_devices = std::move(down);
            }
        }

        if (heal_namespaces && !stranded_.empty()) load_stranded_views(namespaces);
        if (heal_namespaces && (!healed_.empty() || !stranded_.empty())) check_healed_liveness(namespaces, liveness);
        in = PlanInput{};
        in.rules = &config_.match;
        in.host = &*host;
        in.classes = &c;
        in.liveness = &liveness;
        in.origins = &origins_;
        in.namespaces = &namespaces;
        in.healed = healed_for_plan(healed_storage);
        in.slave_copies = &slave_copies_;
        in.strategy = strategy_.load();
        in.read_write = config_.read_write;
        in.heal_namespaces = heal_namespaces;
        const auto plan_start = Clock::now();
        plan = plan_heals(in);
        const auto now = Clock::now();
        note_verdicts(plan, c, now);
        spdlog::trace("step: {} mounts that matter, {} targets, {} actions planned, {} us since the event, {} us "
                      "in this step (table {}, classify {}, liveness {}, learn {}, plan {}, verdicts {} us)",
                      host->size(), c.targets.size(), plan.actions.size(), micros(now - trigger),
                      micros(Clock::now() - step_start), read_us, classify_us, liveness_us, learn_us,
                      micros(now - plan_start), micros(Clock::now() - now));
        sum.targets = static_cast<int>(plan.verdicts.size());

        if (heal_namespaces) {
            std::set<dev_t> dead_devices;
            for (const auto& v : plan.verdicts)
                if (v.state == TargetState::Broken || v.state == TargetState::Healing) dead_devices.insert(v.device);
            const bool known = std::includes(known_namespaces_devices_.begin(), known_namespaces_devices_.end(),
                                             dead_devices.begin(), dead_devices.end());
            // The cache may miss containers started since its last walk, so
            // a host mount of a dead superblock is acted on only after a walk
            // that began once the superblock was dead: every container that
            // holds a copy then is healed first. (Healed after the host, a
            // slave copy would have lost its dead master and turned private,
            // and a daemon killed in between would never find it again.)
            // That walk runs in the step after the one that saw the death
            // (see walk_due_), or here, before the host actions, when the
            // source came back first.
            std::set<dev_t> unwalked;
            for (dev_t d : dead_devices)
                if (!walked_after_death_.count(d) && (!known || deaths_seen_.count(d))) unwalked.insert(d);
            for (const HealAction& a : plan.actions)
                if (a.in_host() && !walked_after_death_.count(a.expected_device)) unwalked.insert(a.expected_device);
            if (!unwalked.empty()) {
                // An outage we have not looked for in containers yet: walk
                // /proc now (while waiting for the source, when it is not back).
                // Also when this step walked already: shedding a dead top
                // layer (strategy "stack") can uncover an older dead
                // superblock that walk did not look for, and that the cache
                // no longer lists for containers that shed theirs too. Each
                // walk marks what it looked for, so this ends: at most one
                // walk per dead layer.
                namespaces = scan_all_namespaces(dead_devices, superblocks_of_targets(), sum);
                walked_after_death_.insert(dead_devices.begin(), dead_devices.end());
                walked_after_death_.insert(unwalked.begin(), unwalked.end());
                views_loaded = walked = true;
                views_devices = dead_devices;
                continue;
            }
            if (!views_loaded && !plan.actions.empty()) {
                // Containers hold copies of dead mounts the host table cannot
                // show; they are healed before the host mount.
                std::set<dev_t> devs;
                for (const auto& a : plan.actions) devs.insert(a.expected_device);
                namespaces = reread_known_namespaces(devs);
                views_loaded = true;
                views_devices = devs;
                continue;
            }
        }
        if (budget < 0) budget = static_cast<int>(plan.actions.size()) * 3 + 8;

        // Carry out the plan; after the batch the tables are read again and
        // planned again until nothing is left to do.
        std::vector<const HealAction*> actions;
        std::vector<const TargetVerdict*> verdicts;
        {
            std::map<std::string_view, const TargetVerdict*> verdict_of;
            for (const auto& x : plan.verdicts) verdict_of[x.target] = &x;
            for (const HealAction& a : plan.actions) {
                actions.push_back(&a);
                auto it = verdict_of.find(a.target);
                verdicts.push_back(it == verdict_of.end() ? nullptr : it->second);
            }
        }
        BatchOutcome batch = run_batch(actions, verdicts, trigger, ready_sources, budget, sum);
        host_stale = batch.host_changed || batch.table_moved;
        // Re-read the namespaces we changed; drop those whose process is gone
        // (or whose pid now names another namespace).
        for (auto it = namespaces.begin(); it != namespaces.end();) {
            if (!batch.changed_namespaces.count(it->ns_inode)) {
                ++it;
                continue;
            }
            auto t = read_namespace_table(it->pid, it->ns_inode);
            if (t) {
                it->table = std::move(*t);
                ++it;
            } else {
                it = namespaces.erase(it);
            }
        }
        if (batch.out_of_budget) break;
        if (batch.executed > 0 || batch.table_moved) continue;
        if (!healed_.empty() && heal_namespaces && !walked) {
            // Heals done from remembered namespaces: walk /proc once more for
            // containers started during the outage that still hold a copy.
            std::set<dev_t> devs;
            for (const auto& h : healed_) devs.insert(h.device);
            namespaces = scan_all_namespaces(devs, superblocks_of_targets(), sum);
            walked_after_death_.insert(devs.begin(), devs.end());
            walked = true;
            views_devices = devs;
            if (!namespaces.empty()) {
                budget = -1;
                continue;
            }
        }
        converged = true;
        break;
    }

    // The walk saw every namespace after those heals: their pins go, but
    // only once the step's status is out (below), since closing the last
    // reference to a dead superblock can wait for its teardown.
    std::vector<sys::UniqueFd> pins_to_release;
    if (walked) {
        healed_.clear();
        pins_to_release = std::move(healed_pins_);
        healed_pins_.clear();
        pinned_peer_groups_.clear();
    }
    // The superblocks whose source the armed heals will wait for.
    std::set<dev_t> awaited;
    if (converged && settings_.source_lookup)
        for (const auto& v : plan.verdicts)
            if (v.state == TargetState::Broken && v.has_origin) awaited.insert(v.device);
    // Dead superblocks still held by a target; and those of healed targets,
    // whose copies the walk after a heal looks for (it runs whenever
    // healed_ is not empty, so no walk is asked for them here).
    std::set<dev_t> dead, dead_of_healed;
    if (heal_namespaces && host) {
        for (const auto& v : plan.verdicts)
            if (v.state == TargetState::Broken || v.state == TargetState::Healing) dead.insert(v.device);
        for (const HealedTarget& h : healed_) dead_of_healed.insert(h.device);
    }
    bool views_of_awaited = false;  // `namespaces` holds every namespace holding an awaited superblock, now
    if (converged && heal_namespaces && healed_.empty()) {
        // Refresh the namespace cache now, not when a FUSE daemon dies, if
        // it misses a superblock (a new dataset, or the daemon's first step)
        // or is older than the safety scan's interval (containers started
        // since; that timer also bounds how stale a safety reconcile lets
        // anything else get). Not while heals wait for the walk after them
        // (healed_), which refreshes it too. The dead superblocks of an
        // outage are among those looked for, so a refresh during one keeps
        // its containers known, and counts as their walk after the death:
        // so it comes before the heals are armed, which must carry what it
        // finds. (Armed before it, from the cache, they missed a copy the
        // cache did not list, and this walk let the host mounts go without
        // waiting for another: healed first, they emptied the copy's dead
        // master group, which left it private; the crash-loop campaign.)
        const std::set<dev_t> superblocks = superblocks_of_targets();
        const auto interval = config_.safety_scan_interval;
        const bool missing = !std::includes(known_namespaces_devices_.begin(), known_namespaces_devices_.end(),
                                            superblocks.begin(), superblocks.end());
        // A tenth of slack: the safety timer that brings this step runs
        // every interval, and the walk that started the count came a little
        // after one such step (its own step's end): without the slack every
        // other safety scan would find the cache just under the interval old.
        const bool old = interval.count() > 0 && Clock::now() - last_walk_ >= interval - interval / 10;
        if (!superblocks.empty() && (missing || old)) {
            auto views = scan_all_namespaces(awaited, superblocks, sum);
            for (dev_t d : superblocks)
                if (dead.count(d)) walked_after_death_.insert(d);
            if (!awaited.empty()) {
                namespaces = std::move(views);
                views_of_awaited = true;
            }
        }
    }
    if (converged && settings_.source_lookup) {
        const auto t0 = Clock::now();
        if (heal_namespaces && !awaited.empty()) {
            // The armed heals must carry the container copies of exactly the
            // awaited superblocks (a final walk above may have looked for
            // others): read the namespaces that hold them, now, while waiting.
            const bool known = std::includes(known_namespaces_devices_.begin(), known_namespaces_devices_.end(),
                                             awaited.begin(), awaited.end());
            // Read in this step for exactly these devices, and nothing acted
            // since the plan that used them: current, not read again (at
            // 1,000 containers, 80 ms saved when a death is first seen).
            const bool current =
                views_of_awaited || (views_loaded && views_devices == awaited && sum.actions == 0);
            if (!current)
                namespaces = known ? reread_known_namespaces(awaited)
                                   : scan_all_namespaces(awaited, superblocks_of_targets(), sum);
        }
        // Stranded copies go with their targets' armed heals when those
        // are dead again (arm_heals keeps the copies of targets it heals).
        if (heal_namespaces && !stranded_.empty()) load_stranded_views(namespaces);
        armed_ = arm_heals(in, plan);
        if (!armed_.empty())
            spdlog::debug("armed {} actions for {} awaited sources ({} us)", armed_.actions.size(),
                          armed_.sources.size(), micros(Clock::now() - t0));
    }
    // The others are done with. No walk is asked for after a step that
    // could not read the table: the next one would fail the same way, at
    // once (a table that cannot be read is retried on events and the
    // safety timer, as before).
    std::erase_if(walked_after_death_, [&](dev_t d) { return !dead.count(d) && !dead_of_healed.count(d); });
    if (!stranded_.empty()) {
        std::vector<NamespaceView> views;
        load_stranded_views(views);
        prune_stranded(views);
    }
    deaths_seen_ = dead;
    walk_due_ = !sum.table_error &&
                std::any_of(dead.begin(), dead.end(), [&](dev_t d) { return !walked_after_death_.count(d); });

    std::vector<StatusRow> snapshot;
    snapshot.reserve(tracks_.size());
    for (const auto& [path, tr] : tracks_)
        snapshot.push_back(
            StatusRow{tr.ctx_known ? tr.ctx : nullptr, tr.kind, tr.state, tr.heals, tr.last_outage_us, tr.fstype, tr.reason});
    std::set<std::string> sources;
    for (const auto& [path, o] : origins_) sources.insert(o.source_path);
    for (const auto& v : plan.verdicts)
        if (v.has_origin) sources.insert(v.origin.source_path);
    std::optional<std::vector<FuseConnectionInfo>> connections;
    if (host) connections = connections_of(c, liveness);
    // Logged before the lock: a status request on the loop thread waits
    // for status_mu_, and must not wait for a log write too.
    spdlog::trace("reconcile done: {} actions, {} healed ({} us)", sum.actions, sum.healed,
                  micros(Clock::now() - last_reconcile_start_));
    {
        std::lock_guard<std::mutex> lock(status_mu_);
        status_ = std::move(snapshot);
        source_paths_.assign(sources.begin(), sources.end());
        if (connections && *connections != *connections_) {
            connections_ = std::make_shared<const std::vector<FuseConnectionInfo>>(std::move(*connections));
            ++connections_version_;
        }
    }
    release_pins(pins_to_release);
    if (converged && heal_namespaces && plans_ahead()) plan_ahead(in, sum);
    return sum;
}

void Engine::plan_ahead(const PlanInput& in, ReconcileSummary& sum) {
    // What the heals of one superblock's copies depend on, hashed: its
    // targets' topmost mounts (by id: a target mounted again is a new
    // mount), and the namespaces the cache lists as holding it. Unchanged
    // inputs, unchanged plan: a step that changed nothing of a source costs
    // one pass over the targets. (A plan made stale by a change this misses
    // fails safe: the executor re-checks each mount, ESTALE.)
    std::map<dev_t, std::uint64_t> inputs;
    for (const Target& t : in.classes->targets) {
        const dev_t d = t.mount->device;
        auto l = in.liveness->find(d);
        if (l == in.liveness->end() || l->second != Liveness::Alive || !known_namespaces_devices_.count(d)) continue;
        auto [it, added] = inputs.emplace(d, fnv1a_mix(kFnv1aOffsetBasis, static_cast<std::uint64_t>(in.strategy)));
        it->second = fnv1a_mix(fnv1a_mix(it->second, static_cast<std::uint64_t>(t.mount->mount_id)),
                               static_cast<std::uint64_t>(t.mount->parent_id));
    }
    // Summed, not chained: a walk lists the namespaces in /proc's order,
    // which need not repeat, and the same set must give the same inputs.
    for (const KnownNamespace& known : known_namespaces_)
        for (dev_t d : devices_of(known))
            if (auto it = inputs.find(d); it != inputs.end())
                it->second +=
                    fnv1a_mix(fnv1a_mix(kFnv1aOffsetBasis, known.ns_inode), static_cast<std::uint64_t>(known.pid));
    std::erase_if(planned_ahead_, [&](const auto& p) { return !inputs.count(p.first); });
    for (const auto& [device, hash] : inputs) {
        if (auto it = planned_ahead_.find(device); it != planned_ahead_.end() && it->second.inputs == hash) continue;
        const auto t0 = Clock::now();
        // The plan once `device` is dead, and the heals armed from it when
        // its source path is back: this step's input but for the liveness
        // of that one superblock and the views of its containers.
        const std::vector<NamespaceView> views = reread_known_namespaces({device});
        LivenessMap liveness = *in.liveness;
        liveness[device] = Liveness::Dead;
        PlanInput dead = in;
        dead.liveness = &liveness;
        dead.namespaces = &views;
        PlannedAhead planned = pack_planned(copies_in_containers(arm_heals(dead, plan_heals(dead)), device), device);
        planned.inputs = hash;
        spdlog::debug("planned {} heals of copies in containers ahead of a death of {} ({} us)", planned.copies.size(),
                      planned.sources.empty() ? std::string("its source") : planned.sources.front().source_path,
                      micros(Clock::now() - t0));
        planned_ahead_[device] = std::move(planned);
        ++sum.planned_ahead;
    }
}

Engine::PlannedAhead Engine::pack_planned(const ArmedHeals& heals, dev_t device) const {
    PlannedAhead p;
    p.sources = heals.sources;
    p.copies.reserve(heals.actions.size());
    std::map<std::string_view, std::uint32_t> clone_at;  // clone path (viewing the action's) -> offset in p.text
    auto add = [&p](std::string_view s) {
        const auto at = static_cast<std::uint32_t>(p.text.size());
        p.text += s;
        return at;
    };
    for (std::size_t k = 0; k < heals.actions.size(); ++k) {
        const HealAction& a = heals.actions[k];
        auto tr = tracks_.find(a.target);
        if (tr == tracks_.end() || a.expected_device != device) continue;  // never so: planned from these tracks
        PlannedCopy c;
        c.target = tr->second.ctx;
        c.ns_inode = a.ns_inode;
        c.ns_pid = a.ns_pid;
        c.expected_mount_id = a.expected_mount_id;
        c.mountpoint_at = add(a.mountpoint);
        c.mountpoint_size = static_cast<std::uint32_t>(a.mountpoint.size());
        auto [it, added] = clone_at.emplace(a.clone_path, 0);
        if (added) it->second = add(a.clone_path);
        c.clone_path_at = it->second;
        c.clone_path_size = static_cast<std::uint32_t>(a.clone_path.size());
        c.source = static_cast<std::uint32_t>(heals.action_source[k]);
        c.flags = a.flags;
        c.propagation = a.propagation;
        c.kind = a.kind;
        c.make_private_first = a.make_private_first;
        p.copies.push_back(std::move(c));
    }
    p.text.shrink_to_fit();
    return p;
}

ArmedHeals Engine::unpack_planned(const PlannedAhead& p, dev_t device) {
    ArmedHeals armed;
    armed.sources = p.sources;
    armed.actions.reserve(p.copies.size());
    for (const PlannedCopy& c : p.copies) {
        HealAction a;
        a.kind = c.kind;
        a.target = std::string((*c.target)[kPackedTarget]);
        a.ns_pid = c.ns_pid;
        a.ns_inode = c.ns_inode;
        a.mountpoint = p.text.substr(c.mountpoint_at, c.mountpoint_size);
        a.expected_mount_id = c.expected_mount_id;
        a.expected_device = device;
        a.clone_path = p.text.substr(c.clone_path_at, c.clone_path_size);
        a.flags = c.flags;
        a.propagation = c.propagation;
        a.make_private_first = c.make_private_first;
        armed.actions.push_back(std::move(a));
        armed.action_source.push_back(c.source);
        armed.action_verdict.push_back(ArmedHeals::kNoVerdict);
    }
    return armed;
}

bool Engine::arm_planned_ahead() {
    bool any = false;
    for (auto it = planned_ahead_.begin(); it != planned_ahead_.end();) {
        if (it->second.copies.empty() || prober_.fusectl_state(it->first) != Liveness::Dead) {
            ++it;
            continue;
        }
        spdlog::debug("armed {} heals of copies in containers planned ahead of this death (connection {})",
                      it->second.copies.size(), connection_id(it->first));
        ArmedHeals planned = unpack_planned(it->second, it->first);
        // The outage begins now for the targets whose copies these heals
        // serve: their heals count from here, and the copies they heal
        // before the next full step are counted in their "mount healed"
        // lines. That step reports the outage (Broken) as usual.
        const auto now = Clock::now();
        for (const HealAction& a : planned.actions)
            if (Track& tr = track(a.target); !tr.in_outage) begin_outage(tr, now);
        append_armed_heals(armed_, std::move(planned));
        it = planned_ahead_.erase(it);
        any = true;
    }
    return any;
}

std::map<dev_t, std::size_t> Engine::planned_ahead() const {
    std::map<dev_t, std::size_t> out;
    for (const auto& [device, p] : planned_ahead_) out[device] = p.copies.size();
    return out;
}

Result<std::shared_ptr<const MountTable>> Engine::read_host_table() const {
    if (settings_.host_table) return settings_.host_table();
    auto table = read_mountinfo(settings_.mountinfo_path);
    if (!table) return table.error();
    // The same mounts as the tracker's snapshots: those that matter to plans.
    std::vector<std::string> sources;
    sources.reserve(origins_.size());
    for (const auto& [path, o] : origins_) sources.push_back(o.source_path);
    return std::make_shared<const MountTable>(
        keep_mounts_that_matter(table->entries(), make_relevance_rules(config_.match, std::move(sources))));
}

std::vector<std::string> Engine::source_paths() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    return source_paths_;
}

std::vector<FuseConnectionInfo> Engine::connections() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    return *connections_;
}

std::shared_ptr<const std::vector<FuseConnectionInfo>> Engine::shared_connections() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    return connections_;
}

std::optional<Clock::time_point> Engine::next_retry() const {
    // A death not yet walked for: the next step walks, at once.
    if (walk_due_) return last_reconcile_start_;
    std::optional<Clock::time_point> best;
    // Waiting for a dead source after arming its heals planned ahead: the
    // full step comes when the wait is over (if the source is not back).
    if (!armed_.empty() && restart_wait_until_ > last_reconcile_start_) best = restart_wait_until_;
    for (const auto& [path, tr] : tracks_)
        if (tr.in_outage && tr.failures > 0 && tr.retry_at > last_reconcile_start_ && (!best || tr.retry_at < *best))
            best = tr.retry_at;
    return best;
}

std::vector<TargetStatus> Engine::status() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    std::vector<TargetStatus> out;
    out.reserve(status_.size());
    for (const StatusRow& r : status_)
        out.push_back(TargetStatus{r.ctx ? unpack(*r.ctx) : TargetContext{}, r.kind, r.fstype, r.state, r.reason, r.heals,
                                   r.last_outage_us});
    return out;
}

std::vector<TargetState> Engine::target_states() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    std::vector<TargetState> out;
    out.reserve(status_.size());
    for (const StatusRow& r : status_) out.push_back(r.state);
    return out;
}

} // namespace fh
