#include "core/planner.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "core/fnv1a.h"

namespace fh {

const char* to_string(Liveness l) {
    switch (l) {
    case Liveness::Unknown: return "unknown";
    case Liveness::Alive: return "alive";
    case Liveness::Dead: return "dead";
    case Liveness::Unresponsive: return "unresponsive";
    }
    return "?";
}

const char* to_string(Strategy s) { return s == Strategy::Replace ? "replace" : "stack"; }

const char* to_string(PropagationMode p) {
    switch (p) {
    case PropagationMode::Shared: return "shared";
    case PropagationMode::Slave: return "slave";
    case PropagationMode::Private: return "private";
    }
    return "?";
}

const char* to_string(ActionKind k) {
    switch (k) {
    case ActionKind::Replace: return "replace";
    case ActionKind::UnmountDeadLayer: return "unmount-dead-layer";
    case ActionKind::BindOnTop: return "bind-on-top";
    }
    return "?";
}

const char* to_string(TargetState s) {
    switch (s) {
    case TargetState::Healthy: return "healthy";
    case TargetState::Unresponsive: return "unresponsive";
    case TargetState::Unknown: return "unknown";
    case TargetState::Broken: return "broken";
    case TargetState::Healing: return "healing";
    case TargetState::Skipped: return "skipped";
    }
    return "?";
}

SlaveCopy slave_copy_key(std::uint64_t ns_inode, std::string_view mountpoint) {
    return SlaveCopy{ns_inode, fnv1a(mountpoint)};
}

PropagationMode propagation_mode_of(const Propagation& p) {
    if (p.is_shared()) return PropagationMode::Shared;
    if (p.is_slave()) return PropagationMode::Slave;
    return PropagationMode::Private;
}

namespace {

class Planner {
public:
    explicit Planner(const PlanInput& in) : in_(in) {}

    Plan run() {
        if (in_.heal_namespaces && in_.namespaces) {
            // Index the namespaces' topmost mounts once: matching each dead
            // target against every namespace's table would be quadratic.
            for (const NamespaceView& ns : *in_.namespaces)
                for (const MountEntry& e : ns.table.entries())
                    if (ns.table.is_topmost(e))
                        ns_copies_[{e.device, root_without_deleted_marker(e.root)}].emplace_back(&ns, &e);
        }
        plan_.verdicts.reserve(in_.classes->targets.size());
        for (const Target& t : in_.classes->targets) plan_target(t);
        if (in_.heal_namespaces && in_.namespaces && in_.healed)
            for (const HealedTarget& h : *in_.healed) {
                // Only while the source it was healed from still serves: in a
                // crash loop it may be dead or gone again by now.
                const MountEntry* src = in_.host->topmost_at(h.source_path);
                if (!source_mount_problem(src, h.source_path, h.fstype, h.device, *in_.rules).empty() ||
                    require(src->device) != Liveness::Alive)
                    continue;
                // And only while its old superblock is the dead one: its
                // number may have been handed to another live mount.
                if (require(h.device) != Liveness::Dead) continue;
                plan_namespace_copies(h.target, MountEntry{.device = h.device, .root = h.root, .fstype = h.fstype,
                                                           .source = h.source},
                                      h.clone_path, src->device, &h.copies_made);
            }
        attribute_copies_to_pods();
        plan_.need_liveness.assign(need_.begin(), need_.end());
        return std::move(plan_);
    }

private:
    // A container copy planned from a namespace whose pod is known.
    struct PodCopy {
        std::size_t action;  // index in plan_.actions
        dev_t device;
        std::string root;    // without the deleted marker
        const std::string* pod_uid;  // NamespaceView::pod_uid
    };

    Liveness liveness(dev_t d) const {
        auto it = in_.liveness->find(d);
        return it == in_.liveness->end() ? Liveness::Unknown : it->second;
    }

    // Returns the liveness of `d`, recording that it is needed when unknown.
    Liveness require(dev_t d) {
        Liveness l = liveness(d);
        if (l == Liveness::Unknown) need_.insert(d);
        return l;
    }

    void plan_target(const Target& t) {
        TargetVerdict v;
        v.target = t.path;
        v.where = t.where;
        v.device = t.mount->device;
        switch (require(t.mount->device)) {
        case Liveness::Alive: v.state = TargetState::Healthy; break;
        case Liveness::Unresponsive: v.state = TargetState::Unresponsive; break;
        case Liveness::Unknown: v.state = TargetState::Unknown; break;
        case Liveness::Dead: plan_dead_target(t, v); break;
        }
        plan_.verdicts.push_back(std::move(v));
    }

    // Returns why `origin`'s source cannot serve a heal of `stale` yet, or
    // "" when a live FUSE mount of the same fstype is the topmost mount at
    // the source path. Sets *refused when something new is mounted there
    // that can never serve it (not a FUSE root, or another fstype).
    std::string source_not_ready(const Origin& origin, const MountEntry& stale, bool* refused) {
        const MountEntry* src = in_.host->topmost_at(origin.source_path);
        std::string why = source_mount_problem(src, origin.source_path, origin.fstype, stale.device, *in_.rules);
        *refused = !why.empty() && src && src->device != stale.device;
        if (!why.empty()) return why;
        switch (require(src->device)) {
        case Liveness::Unknown: return "waiting for the new source's liveness";
        case Liveness::Dead: return "the new source is dead too";
        case Liveness::Unresponsive: return "the new source does not answer";
        case Liveness::Alive: break;
        }
        return "";
    }

    void plan_dead_target(const Target& t, TargetVerdict& v) {
        // Candidate origins: the one the table shows now (a source mount of
        // the dead superblock), then the remembered one. The table can show
        // a stale copy of the dataset outside the pods tree (a second
        // consumer's bind) that never comes back, while the remembered
        // source is back: the first candidate whose source is ready wins.
        std::vector<std::pair<Origin, bool>> candidates;  // (origin, from table)
        if (auto o = origin_from_table(*in_.classes, t, *in_.rules)) candidates.emplace_back(*o, true);
        if (auto it = in_.origins->find(t.path); it != in_.origins->end())
            if (candidates.empty() || candidates[0].first.source_path != it->second.source_path)
                candidates.emplace_back(it->second, false);
        if (candidates.empty()) {
            v.state = TargetState::Skipped;
            v.reason = "no origin known: its source was never seen alive and no mount of its "
                       "superblock remains at a source path";
            return;
        }
        if (!t.mount->flags.read_only && !in_.read_write) {
            v.state = TargetState::Skipped;
            v.reason = "read-write target; set [heal] read_write = true to heal it";
            return;
        }
        v.state = TargetState::Broken;
        v.has_origin = true;
        bool ready = false;
        for (auto& [origin, from_table] : candidates) {
            // The stale mount itself is the truth for its root and flags; an
            // origin contributes where the source lives. A root marked
            // deleted is cloned without the marker: on a dead connection
            // the marker only says a lookup failed (see
            // root_without_deleted_marker); a directory really deleted is
            // missing from the new source, and the probe of the clone path
            // before any mount says so (ENOENT: the heal fails, and backs off).
            origin.root = root_without_deleted_marker(t.mount->root);
            origin.flags = t.mount->flags;
            bool refused = false;
            std::string why = source_not_ready(origin, *t.mount, &refused);
            if (&origin == &candidates[0].first || why.empty()) {
                v.origin = origin;
                v.origin_from_table = from_table;
                v.reason = why;
                v.source_refused = refused;
            }
            if (why.empty()) {
                ready = true;
                break;
            }
        }
        if (!ready) return;
        v.state = TargetState::Healing;
        v.reason = "the source is back";
        const std::string clone = v.origin.clone_path();
        const dev_t source_device = in_.host->topmost_at(v.origin.source_path)->device;
        if (in_.heal_namespaces && in_.namespaces)
            plan_namespace_copies(t.path, *t.mount, clone, source_device);
        add_action(t.path, 0, 0, *in_.host, *t.mount, clone, source_device);
    }

    // Appends actions for every topmost mount in the other namespaces that
    // is a copy of `stale` (same device and root, a deleted marker aside, and
    // same fstype and mount source), each claimed once. With `made` not
    // empty, only the copies it lists, whatever their mount source.
    void plan_namespace_copies(const std::string& target, const MountEntry& stale, const std::string& clone,
                               dev_t source_device, const std::vector<CopyMade>* made = nullptr) {
        if (made && made->empty()) made = nullptr;
        auto it = ns_copies_.find({stale.device, root_without_deleted_marker(stale.root)});
        if (it == ns_copies_.end()) return;
        for (const auto& [ns, e] : it->second) {
            if (e->fstype != stale.fstype || (!made && e->source != stale.source)) continue;
            // (Structured bindings are not captured by lambdas before C++20's clang.)
            if (made && std::none_of(made->begin(), made->end(),
                                     [ns_inode = ns->ns_inode, &mountpoint = e->mountpoint](const CopyMade& c) {
                                         return c.ns_inode == ns_inode && c.mountpoint == mountpoint;
                                     }))
                continue;
            if (!claimed_.insert({ns->ns_inode, e->mountpoint}).second) continue;
            add_action(target, ns->pid, ns->ns_inode, ns->table, *e, clone, source_device);
            if (!ns->pod_uid.empty())
                pod_copies_.push_back(
                    PodCopy{plan_.actions.size() - 1, e->device, root_without_deleted_marker(e->root), &ns->pod_uid});
        }
        // Every target of the same (device, root) is a bind of the same
        // directory of the same superblock: its copies are all claimed now.
        // Dropping them keeps planning linear when a thousand pods bind one
        // dataset. (Not so for a list of copies made: other targets' lists
        // name the others.)
        if (!made) ns_copies_.erase(it);
    }

    // Appends the action that heals the dead topmost mount `top` of `table`.
    void add_action(const std::string& target, int pid, std::uint64_t ns_inode, const MountTable& table,
                    const MountEntry& top, const std::string& clone, dev_t source_device) {
        HealAction a;
        a.target = target;
        a.ns_pid = pid;
        a.ns_inode = ns_inode;
        a.mountpoint = top.mountpoint;
        a.expected_mount_id = top.mount_id;
        a.expected_device = top.device;
        a.clone_path = clone;
        a.source_device = source_device;
        a.flags = top.flags;
        a.propagation = propagation_mode_of(top.propagation);
        if (pid == 0) a.stale_peer_group = top.propagation.shared_group;
        // A copy made a slave that shows private lost its master group (see
        // SlaveCopy), not its owner's choice: a slave again.
        if (pid != 0 && a.propagation == PropagationMode::Private && in_.slave_copies &&
            std::binary_search(in_.slave_copies->begin(), in_.slave_copies->end(),
                               slave_copy_key(ns_inode, top.mountpoint)))
            a.propagation = PropagationMode::Slave;
        // Any strategy first sheds extra dead layers (left by a stacking
        // healer or by us on an old kernel): both layers are dead, so the
        // pod sees ENOTCONN before and after, never an empty directory.
        if (dead_layers_at(table, top) > 1) {
            a.kind = ActionKind::UnmountDeadLayer;
            a.clone_path.clear();
            a.source_device = 0;
        } else if (in_.strategy == Strategy::Replace) {
            a.kind = ActionKind::Replace;
        } else {
            a.kind = ActionKind::BindOnTop;
            a.make_private_first = pid == 0 && top.propagation.is_shared();
            // A stacked layer that joined the source's peer group would send
            // any later mount on it back onto the source path: keep it a
            // receiver only.
            if (a.propagation == PropagationMode::Shared) a.propagation = PropagationMode::Slave;
        }
        plan_.actions.push_back(std::move(a));
    }

    // Returns how many layers at top's mountpoint are dead. A layer below the
    // top cannot be probed through the path, so unknown lower FUSE layers
    // count as dead: they are older generations.
    int dead_layers_at(const MountTable& table, const MountEntry& top) const {
        int dead = 0;
        for (const MountEntry* m : table.stack_at(top.mountpoint)) {
            if (!is_fuse_fstype(m->fstype, in_.rules->fs_types)) continue;
            Liveness l = liveness(m->device);
            if (l == Liveness::Dead || (m != &top && l == Liveness::Unknown)) ++dead;
        }
        return dead;
    }

    // Hands each container copy of a pod to that pod's own target, when the
    // pod has exactly one target being healed (in this plan, or earlier:
    // `healed`) on the copy's dead superblock and root. The copies of a
    // (device, root) are all planned with its first target (one claim per
    // group keeps planning linear), so without this every copy would be
    // counted for that first target. Only the label changes: the order of
    // the actions and what they do stay as planned.
    void attribute_copies_to_pods() {
        if (pod_copies_.empty()) return;
        // (device, root, pod uid) -> the target; "" when the pod has several.
        std::map<std::tuple<dev_t, std::string, std::string>, std::string> owner;
        const auto add = [&](dev_t device, const std::string& root, const std::string& target) {
            auto where = parse_pod_path(target, in_.rules->root_dir);
            if (!where || where->pod_uid.empty()) return;
            auto [it, inserted] = owner.try_emplace({device, root_without_deleted_marker(root), where->pod_uid}, target);
            if (!inserted && it->second != target) it->second.clear();
        };
        std::set<std::string_view> healing;
        for (const TargetVerdict& v : plan_.verdicts)
            if (v.state == TargetState::Healing) healing.insert(v.target);
        for (const Target& t : in_.classes->targets)
            if (t.mount && healing.count(t.path)) add(t.mount->device, t.mount->root, t.path);
        if (in_.healed)
            for (const HealedTarget& h : *in_.healed) add(h.device, h.root, h.target);
        for (const PodCopy& c : pod_copies_) {
            auto it = owner.find({c.device, c.root, *c.pod_uid});
            if (it != owner.end() && !it->second.empty()) plan_.actions[c.action].target = it->second;
        }
    }

    const PlanInput& in_;
    Plan plan_;
    std::vector<PodCopy> pod_copies_;  // the copies planned from namespaces whose pod is known
    std::set<dev_t> need_;
    std::set<std::pair<std::uint64_t, std::string>> claimed_;
    // (device, root) -> topmost mounts of it in other namespaces, in scan order.
    std::map<std::pair<dev_t, std::string>, std::vector<std::pair<const NamespaceView*, const MountEntry*>>>
        ns_copies_;
};

// Returns a device number that no mount of `table` has, for a mount that
// does not exist yet. Majors of 4095 are never handed out by the kernel's
// anonymous or block device allocators in practice; the loop makes sure.
dev_t unused_device(const MountTable& table, std::set<dev_t>& taken) {
    if (taken.empty())
        for (const MountEntry& e : table.entries()) taken.insert(e.device);
    dev_t d = makedev(4095, 0xfffff);
    while (taken.count(d)) --d;
    taken.insert(d);
    return d;
}

} // namespace

Plan plan_heals(const PlanInput& in) { return Planner(in).run(); }

std::string source_mount_problem(const MountEntry* src, const std::string& source_path, const std::string& fstype,
                                 dev_t dead_device, const MatchRules& rules) {
    if (!src) return "source " + source_path + " is not mounted yet";
    if (src->device == dead_device) return "source " + source_path + " still holds the dead filesystem";
    if (!is_fuse_fstype(src->fstype, rules.fs_types) || src->root != "/")
        return "source " + source_path + " holds a " + src->fstype + " mount that is not a FUSE filesystem root";
    if (src->fstype != fstype) return "source " + source_path + " came back as " + src->fstype + ", expected " + fstype;
    return "";
}

ArmedHeals arm_heals(const PlanInput& in, const Plan& plan) {
    ArmedHeals armed;
    std::map<std::string, std::size_t> index;  // source path -> index in armed.sources
    for (const TargetVerdict& v : plan.verdicts) {
        if (v.state != TargetState::Broken || !v.has_origin) continue;
        auto [it, added] = index.emplace(v.origin.source_path, armed.sources.size());
        if (added) armed.sources.push_back(AwaitedSource{v.origin.source_path, v.origin.fstype, {}});
        // Two targets waiting on one path with different fstypes cannot both
        // be satisfied by one mount; the first one's fstype is armed and the
        // other target is left to the full plan.
        auto& devs = armed.sources[it->second].dead_devices;
        if (std::find(devs.begin(), devs.end(), v.device) == devs.end()) devs.push_back(v.device);
    }
    if (armed.sources.empty()) return armed;

    // The table as it will be once every awaited source is back: a live
    // FUSE root of the expected fstype on top of whatever is at the path.
    // Only the part that can change an awaited target's plan: the stacks at
    // the paths holding a mount of a dead superblock (the targets, and the
    // sources they were bound from), and at the awaited source paths.
    // Classification and planning look no further than a target's own
    // stack, its superblock's other mounts and its source path; copying
    // and classifying all 2,000 targets of a node was 6-16 ms per arming.
    std::set<dev_t> dead;
    for (const AwaitedSource& s : armed.sources) dead.insert(s.dead_devices.begin(), s.dead_devices.end());
    std::set<std::string_view> paths;
    for (const AwaitedSource& s : armed.sources) paths.insert(s.source_path);
    for (const MountEntry& e : in.host->entries())
        if (dead.count(e.device)) paths.insert(e.mountpoint);
    std::vector<MountEntry> entries;
    for (const MountEntry& e : in.host->entries())
        if (paths.count(e.mountpoint)) entries.push_back(e);
    LivenessMap liveness = *in.liveness;
    std::set<dev_t> taken;
    // Ids for mounts that do not exist yet: above every id in the table
    // (computed wide: a table holding INT_MAX, which only a corrupt one
    // does, made "max + 1" overflow), else the highest ones not taken.
    std::set<int> ids;  // of the whole table: a new id must be new to the node, not just to this part
    for (const MountEntry& e : in.host->entries()) ids.insert(e.mount_id);
    long long next_id = ids.empty() ? 1 : std::max(1LL, static_cast<long long>(*ids.rbegin()) + 1);
    auto new_mount_id = [&] {
        int id = std::numeric_limits<int>::max();
        if (next_id <= id) {
            id = static_cast<int>(next_id++);
        } else {
            while (ids.count(id)) --id;
        }
        ids.insert(id);
        return id;
    };
    for (const AwaitedSource& s : armed.sources) {
        MountEntry m;
        m.mount_id = new_mount_id();
        const MountEntry* below = in.host->topmost_at(s.source_path);
        m.parent_id = below ? below->mount_id : 0;
        m.device = unused_device(*in.host, taken);
        m.root = "/";
        m.mountpoint = s.source_path;
        m.fstype = s.fstype;
        entries.push_back(std::move(m));
        liveness[entries.back().device] = Liveness::Alive;
    }
    const MountTable future(std::move(entries));
    const Classification classes = classify(future, *in.rules, in.origins);
    PlanInput future_in = in;
    future_in.host = &future;
    future_in.classes = &classes;
    future_in.liveness = &liveness;
    Plan future_plan = plan_heals(future_in);

    std::map<std::string, std::size_t> healing;  // target -> its index in armed.verdicts
    for (const TargetVerdict& v : future_plan.verdicts)
        if (v.state == TargetState::Healing && index.count(v.origin.source_path)) {
            healing[v.target] = armed.verdicts.size();
            armed.verdicts.push_back(v);
        }
    for (HealAction& a : future_plan.actions) {
        auto it = healing.find(a.target);
        if (it == healing.end()) continue;  // e.g. a copy of a target healed earlier
        armed.action_source.push_back(index.at(armed.verdicts[it->second].origin.source_path));
        armed.action_verdict.push_back(it->second);
        armed.actions.push_back(std::move(a));
    }
    return armed;
}

ArmedHeals copies_in_containers(const ArmedHeals& armed, dev_t device) {
    ArmedHeals out;
    std::map<std::size_t, std::size_t> source_at, verdict_at;  // index in `armed` -> index in `out`
    for (std::size_t k = 0; k < armed.actions.size(); ++k) {
        const HealAction& a = armed.actions[k];
        if (a.in_host() || a.expected_device != device) continue;
        auto [s, new_source] = source_at.emplace(armed.action_source[k], out.sources.size());
        if (new_source) out.sources.push_back(armed.sources[armed.action_source[k]]);
        out.actions.push_back(a);
        out.action_source.push_back(s->second);
        if (armed.action_verdict[k] == ArmedHeals::kNoVerdict) {
            out.action_verdict.push_back(ArmedHeals::kNoVerdict);
            continue;
        }
        auto [v, new_verdict] = verdict_at.emplace(armed.action_verdict[k], out.verdicts.size());
        if (new_verdict) out.verdicts.push_back(armed.verdicts[armed.action_verdict[k]]);
        out.action_verdict.push_back(v->second);
    }
    return out;
}

void append_armed_heals(ArmedHeals& into, ArmedHeals more) {
    const std::size_t sources = into.sources.size(), verdicts = into.verdicts.size();
    std::move(more.sources.begin(), more.sources.end(), std::back_inserter(into.sources));
    std::move(more.verdicts.begin(), more.verdicts.end(), std::back_inserter(into.verdicts));
    std::move(more.actions.begin(), more.actions.end(), std::back_inserter(into.actions));
    for (std::size_t i : more.action_source) into.action_source.push_back(sources + i);
    for (std::size_t i : more.action_verdict)
        into.action_verdict.push_back(i == ArmedHeals::kNoVerdict ? i : verdicts + i);
}

OriginMap learn_origins(const Classification& c, const LivenessMap& liveness, const MatchRules& rules,
                        const OriginMap* known) {
    OriginMap out;
    for (const Target& t : c.targets) {
        auto it = liveness.find(t.mount->device);
        if (it == liveness.end()) continue;
        if (it->second == Liveness::Alive) {
            if (auto o = origin_from_table(c, t, rules)) out.emplace(t.path, std::move(*o));
        } else if (it->second == Liveness::Dead && !(known && known->count(t.path))) {
            auto o = origin_from_table(c, t, rules);
            if (o && !path_is_within(o->source_path, rules.root_dir)) out.emplace(t.path, std::move(*o));
        }
    }
    return out;
}

} // namespace fh
