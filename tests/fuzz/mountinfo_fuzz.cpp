// Fuzz target: the mount table model. /proc/<pid>/mountinfo is parsed with
// libmount (core/mountinfo.h), indexed (MountTable), classified into
// targets and sources (core/model.h), and planned (core/planner.h). Mount
// paths come from anyone who can mount: a pod's volume name, a container's
// mounts, a FUSE daemon's source string.
//
// Invariants: parsing either fails with an Error naming the input or gives
// a table whose indexes agree with its entries; the table written back as
// mountinfo (escaping as the kernel does) parses to the same table; the
// classification and the plans, for several liveness assignments and both
// strategies, keep their documented promises (one verdict per target, every
// host action at its own target under <root_dir>, on a mount that is the
// one the table shows, clone paths only for clones, armed-heal indexes in
// range).
#include <sys/sysmacros.h>

#include <algorithm>
#include <set>

#include "core/fnv1a.h"
#include "core/model.h"
#include "core/mount_relevance.h"
#include "core/mountinfo.h"
#include "core/planner.h"
#include "fuzz_check.h"

namespace {

using fh::fuzz::show;

const std::string kName = "fuzz.mountinfo";

// Escapes as the kernel's mangle() does for mountinfo fields (space, tab,
// newline, backslash as \ooo), and every other byte libmount's line reader
// could split on or drop (control characters).
std::string mangle(const std::string& s) {
    std::string out;
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= ' ' || c == '\\' || c == 0x7f) {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\%03o", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out;
}

// Returns the table as mountinfo text.
std::string to_mountinfo(const fh::MountTable& t) {
    std::string out;
    for (const fh::MountEntry& e : t.entries()) {
        out += std::to_string(e.mount_id) + " " + std::to_string(e.parent_id) + " " + std::to_string(major(e.device)) +
               ":" + std::to_string(minor(e.device)) + " " + mangle(e.root) + " " + mangle(e.mountpoint) + " " +
               mangle(e.vfs_options);
        if (e.propagation.shared_group) out += " shared:" + std::to_string(e.propagation.shared_group);
        if (e.propagation.master_group) out += " master:" + std::to_string(e.propagation.master_group);
        if (e.propagation.unbindable) out += " unbindable";
        out += " - " + mangle(e.fstype) + " " + mangle(e.source) + " " + mangle(e.fs_options) + "\n";
    }
    return out;
}

bool same_entry(const fh::MountEntry& a, const fh::MountEntry& b) {
    return a.mount_id == b.mount_id && a.parent_id == b.parent_id && a.device == b.device && a.root == b.root &&
           a.mountpoint == b.mountpoint && a.fstype == b.fstype && a.source == b.source &&
           a.vfs_options == b.vfs_options && a.fs_options == b.fs_options && a.flags == b.flags &&
           a.propagation.shared_group == b.propagation.shared_group &&
           a.propagation.master_group == b.propagation.master_group &&
           a.propagation.unbindable == b.propagation.unbindable;
}

// Every field of an entry is one non-empty word in mountinfo; a table with
// an empty one cannot be written back as the same table.
bool writable(const fh::MountTable& t) {
    return std::all_of(t.entries().begin(), t.entries().end(), [](const fh::MountEntry& e) {
        return !e.root.empty() && !e.mountpoint.empty() && !e.vfs_options.empty() && !e.fstype.empty() &&
               !e.source.empty() && !e.fs_options.empty();
    });
}

void check_indexes(const fh::MountTable& t) {
    std::map<std::string, std::vector<const fh::MountEntry*>> by_path;
    for (const fh::MountEntry& e : t.entries()) {
        FH_FUZZ_CHECK(t.find_id(e.mount_id) == &e, "find_id(" + std::to_string(e.mount_id) + ") is another entry");
        by_path[e.mountpoint].push_back(&e);
        const auto same_dev = t.with_device(e.device);
        FH_FUZZ_CHECK(std::find(same_dev.begin(), same_dev.end(), &e) != same_dev.end(), "with_device misses one");
        for (const fh::MountEntry* d : same_dev) FH_FUZZ_CHECK(d->device == e.device, "with_device has another");
    }
    for (auto& [path, here] : by_path) {
        std::vector<const fh::MountEntry*> stack = t.stack_at(path);
        FH_FUZZ_CHECK(!stack.empty() && t.topmost_at(path) == stack.back(), "topmost_at is not the stack's top at " +
                                                                                show(path));
        // The stack holds each mount at the path exactly once.
        std::sort(stack.begin(), stack.end());
        std::sort(here.begin(), here.end());
        FH_FUZZ_CHECK(stack == here, "stack_at(" + show(path) + ") has " + std::to_string(stack.size()) +
                                         " mounts, the table " + std::to_string(here.size()));
    }
}

void check_classification(const fh::MountTable& t, const fh::MatchRules& rules, const fh::Classification& c) {
    std::set<std::string> paths;
    bool pods_started = false;
    for (const fh::Target& target : c.targets) {
        FH_FUZZ_CHECK(target.mount && target.path == target.mount->mountpoint, "a target off its mount");
        FH_FUZZ_CHECK(t.topmost_at(target.path) == target.mount, "a target that is not topmost: " + show(target.path));
        FH_FUZZ_CHECK(fh::is_fuse_fstype(target.mount->fstype, rules.fs_types), "a target that is not FUSE");
        FH_FUZZ_CHECK(fh::path_is_within(target.path, rules.root_dir), "a target outside root_dir: " + show(target.path));
        FH_FUZZ_CHECK(paths.insert(target.path).second, "two targets at " + show(target.path));
        if (target.where.kind == fh::TargetKind::GlobalMount) {
            FH_FUZZ_CHECK(!pods_started, "a global target after a pod target");
            FH_FUZZ_CHECK(fh::path_is_within(target.path, rules.root_dir + "/plugins"), "global " + show(target.path));
        } else {
            pods_started = true;
            const auto where = fh::parse_pod_path(target.path, rules.root_dir);
            FH_FUZZ_CHECK(where && where->kind == target.where.kind && where->pod_uid == target.where.pod_uid &&
                              where->volume == target.where.volume,
                          "a pod target whose path says otherwise: " + show(target.path));
        }
        if (auto o = fh::origin_from_table(c, target, rules)) {
            FH_FUZZ_CHECK(o->source_path != target.path, "a target is its own origin: " + show(target.path));
            FH_FUZZ_CHECK(o->root == target.mount->root && o->fstype == target.mount->fstype, "origin fields");
        }
    }
    for (const fh::MountEntry* s : c.sources) {
        FH_FUZZ_CHECK(s->root == "/" && fh::is_fuse_fstype(s->fstype, rules.fs_types), "a source " + show(s->mountpoint));
        FH_FUZZ_CHECK(!fh::path_is_within(s->mountpoint, rules.root_dir + "/pods"), "a source in the pods tree");
    }
}

void check_plan(const fh::PlanInput& in, const fh::Plan& plan) {
    const fh::Classification& c = *in.classes;
    FH_FUZZ_CHECK(plan.verdicts.size() == c.targets.size(), "not one verdict per target");
    std::map<std::string, const fh::TargetVerdict*> verdicts;
    for (std::size_t i = 0; i < plan.verdicts.size(); ++i) {
        const fh::TargetVerdict& v = plan.verdicts[i];
        FH_FUZZ_CHECK(v.target == c.targets[i].path, "verdicts out of the targets' order");
        verdicts[v.target] = &v;
        if (v.state == fh::TargetState::Healing) FH_FUZZ_CHECK(v.has_origin, "healing without an origin");
        if (v.state == fh::TargetState::Skipped || v.state == fh::TargetState::Broken)
            FH_FUZZ_CHECK(!v.reason.empty(), "broken or skipped without a reason: " + show(v.target));
    }
    for (const fh::HealAction& a : plan.actions) {
        const auto it = verdicts.find(a.target);
        FH_FUZZ_CHECK(it != verdicts.end() && it->second->state == fh::TargetState::Healing,
                      "an action for a target that is not healing: " + show(a.target));
        if (a.kind == fh::ActionKind::UnmountDeadLayer) {
            FH_FUZZ_CHECK(a.clone_path.empty() && a.source_device == 0, "an unmount that clones");
        } else {
            FH_FUZZ_CHECK(!a.clone_path.empty() && a.clone_path.front() == '/', "a clone of " + show(a.clone_path));
            FH_FUZZ_CHECK(a.source_device != a.expected_device, "a clone of the dead superblock");
        }
        if (a.in_host()) {
            // The daemon never mounts anywhere but the exact target it tracks.
            FH_FUZZ_CHECK(a.mountpoint == a.target && fh::path_is_within(a.mountpoint, in.rules->root_dir),
                          "a host action at " + show(a.mountpoint) + " for " + show(a.target));
            const fh::MountEntry* m = in.host->find_id(a.expected_mount_id);
            FH_FUZZ_CHECK(m && m->mountpoint == a.mountpoint && m->device == a.expected_device &&
                              in.host->topmost_at(a.mountpoint) == m,
                          "a host action on a mount the table does not show on top at " + show(a.mountpoint));
        }
    }
}

void check_armed(const fh::ArmedHeals& armed) {
    FH_FUZZ_CHECK(armed.action_source.size() == armed.actions.size() &&
                      armed.action_verdict.size() == armed.actions.size(),
                  "armed heal indexes do not match the actions");
    for (std::size_t i = 0; i < armed.actions.size(); ++i) {
        FH_FUZZ_CHECK(armed.action_source[i] < armed.sources.size() && armed.action_verdict[i] < armed.verdicts.size(),
                      "an armed heal index out of range");
        FH_FUZZ_CHECK(armed.actions[i].target == armed.verdicts[armed.action_verdict[i]].target,
                      "an armed action points at another target's verdict");
    }
}

// Returns <root_dir> as the input suggests it: the part of the first
// mountpoint before "/pods/" or "/plugins/", so that mutated trees are
// classified too; the default otherwise.
std::string root_dir_of(const fh::MountTable& t) {
    for (const fh::MountEntry& e : t.entries())
        for (const char* marker : {"/pods/", "/plugins/"}) {
            const std::size_t at = e.mountpoint.find(marker);
            if (at != std::string::npos && at > 0 && e.mountpoint.front() == '/') return e.mountpoint.substr(0, at);
        }
    return "/var/lib/kubelet";
}

void model_and_plan(const fh::MountTable& table, const std::string& text) {
    fh::MatchRules rules;
    rules.root_dir = root_dir_of(table);
    const fh::Classification c = fh::classify(table, rules);
    check_classification(table, rules, c);

    // Liveness: the textbook outage (every target's superblock dead, every
    // other one alive), then assignments drawn from the input.
    std::set<dev_t> target_devices;
    for (const fh::Target& t : c.targets) target_devices.insert(t.mount->device);
    const std::uint64_t seed = fh::fnv1a(text);
    for (int round = 0; round < 3; ++round) {
        fh::LivenessMap liveness;
        for (const fh::MountEntry& e : table.entries()) {
            if (round == 0) {
                liveness[e.device] = target_devices.count(e.device) ? fh::Liveness::Dead : fh::Liveness::Alive;
            } else {
                const std::uint64_t h = (seed + round) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(e.device);
                liveness[e.device] = static_cast<fh::Liveness>((h >> 17) % 4);
            }
        }
        const fh::OriginMap learned = fh::learn_origins(c, liveness, rules);
        for (const auto& [target, o] : learned)
            FH_FUZZ_CHECK(o.source_path != target && !o.source_path.empty(), "learned origin of " + show(target));
        // The same table as a container's view: its copies of dead targets
        // are planned as namespace actions.
        const std::vector<fh::NamespaceView> namespaces{fh::NamespaceView{42, 4026531841ull, table}};
        for (const fh::Strategy strategy : {fh::Strategy::Replace, fh::Strategy::Stack}) {
            fh::PlanInput in;
            in.rules = &rules;
            in.host = &table;
            in.classes = &c;
            in.liveness = &liveness;
            in.origins = &learned;
            in.namespaces = &namespaces;
            in.strategy = strategy;
            in.read_write = round != 2;
            const fh::Plan plan = fh::plan_heals(in);
            check_plan(in, plan);
            check_armed(fh::arm_heals(in, plan));
        }
    }

    const fh::RelevanceRules relevance = fh::make_relevance_rules(rules, {"/tmp/fhcap/runtime/ds1/fuse"});
    for (const fh::MountEntry& e : table.entries()) (void)fh::change_relevance(&e, nullptr, relevance);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    const fh::Result<fh::MountTable> parsed = fh::parse_mountinfo_text(text, kName);
    if (!parsed) {
        FH_FUZZ_CHECK(parsed.error().path == kName && !parsed.error().what.empty(),
                      "an error without context: " + parsed.error().message());
        return 0;
    }
    const fh::MountTable& table = *parsed;
    check_indexes(table);

    if (writable(table)) {
        const std::string written = to_mountinfo(table);
        const fh::Result<fh::MountTable> again = fh::parse_mountinfo_text(written, kName);
        FH_FUZZ_CHECK(again.ok(), "written back, it does not parse: " + again.error().message() + "\n" + written);
        FH_FUZZ_CHECK(again->size() == table.size(), "written back, the entry count changed:\n" + written);
        for (std::size_t i = 0; i < table.size(); ++i)
            FH_FUZZ_CHECK(same_entry(again->entries()[i], table.entries()[i]),
                          "written back, entry " + std::to_string(i) + " changed:\n" + written + "from " + show(text));
    }
    model_and_plan(table, text);
    return 0;
}
