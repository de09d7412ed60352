// plan_bench: what the pure part of one reconcile step costs at scale, with
// no mounts and no daemon: the table that mount tracking hands each step,
// its classification, learning the origins, the plan, and the arming of
// heals while a source is down. The table has the shape of scale_bench's
// (docs/PERFORMANCE.md): 1,000 pods with 2 targets each over 10 FUSE
// sources, and the 200 containers holding copies of the dead source.
//
// Usage: plan_bench [--pods 1000] [--targets-per-pod 2] [--sources 10]
//                   [--container-mounts 30] [--repeat 50] [--only PHASE]
// Prints, per phase, the median and the minimum over --repeat runs, in µs.
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/planner.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    int pods = 1000;
    int targets_per_pod = 2;
    int sources = 10;
    int container_mounts = 30;  // mounts in each container's table besides its copy
    int repeat = 50;
    std::string only;  // run only the phases whose name contains this (for a profiler)
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "plan_bench: %s\nusage: plan_bench [--pods 1000] [--targets-per-pod 2] [--sources 10] "
                 "[--container-mounts 30] [--repeat 50] [--only PHASE]\n",
                 why);
    std::exit(64);  // EX_USAGE, as the other benches
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        auto value = [&](int min) {
            if (i + 1 >= argc) usage((std::string(argv[i]) + " needs a value").c_str());
            char* end = nullptr;
            long v = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || v < min || v > 1000000) usage((std::string("bad value for ") + argv[i - 1]).c_str());
            return static_cast<int>(v);
        };
        if (!std::strcmp(argv[i], "--pods")) o.pods = value(1);
        else if (!std::strcmp(argv[i], "--targets-per-pod")) o.targets_per_pod = value(1);
        else if (!std::strcmp(argv[i], "--sources")) o.sources = value(1);
        else if (!std::strcmp(argv[i], "--container-mounts")) o.container_mounts = value(0);
        else if (!std::strcmp(argv[i], "--repeat")) o.repeat = value(1);
        else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) o.only = argv[++i];
        else usage((std::string("unknown option ") + argv[i]).c_str());
    }
    return o;
}

const std::string kRoot = "/var/lib/kubelet";

// A mount of the root of `device` at `mountpoint`.
fh::MountEntry entry(int id, int parent, dev_t device, const std::string& mountpoint, const char* fstype,
                     const char* source, const char* vfs_options, const char* fs_options) {
    fh::MountEntry e;
    e.mount_id = id;
    e.parent_id = parent;
    e.device = device;
    e.root = "/";
    e.mountpoint = mountpoint;
    e.fstype = fstype;
    e.source = source;
    e.vfs_options = vfs_options;
    e.fs_options = fs_options;
    return e;
}

// A read-only fh_testfs mount, shared in `shared_group` (0: private).
fh::MountEntry fuse_entry(int id, int parent, dev_t device, const std::string& mountpoint, int shared_group) {
    fh::MountEntry e = entry(id, parent, device, mountpoint, "fuse.fh_testfs", "fh_testfs", "ro,relatime",
                             "ro,user_id=0,group_id=0,allow_other");
    e.flags.read_only = true;
    e.propagation.shared_group = shared_group;
    return e;
}

fh::MountEntry plain_entry(int id, int parent, const std::string& mountpoint) {
    return entry(id, parent, makedev(8, 1), mountpoint, "ext4", "/dev/sda1", "rw,relatime", "rw");
}

dev_t source_device(int s) { return makedev(0, 40 + s); }
std::string source_path(int s) { return "/run/fluid/ds-" + std::to_string(s) + "/fuse"; }

// The host table as mount tracking keeps it: the mounts that matter (the
// root, the sources, the targets).
std::vector<fh::MountEntry> host_entries(const Options& o, std::vector<std::string>& dead_targets) {
    std::vector<fh::MountEntry> v;
    v.push_back(plain_entry(1, 1, "/"));
    int id = 100;
    for (int s = 0; s < o.sources; ++s) v.push_back(fuse_entry(id++, 1, source_device(s), source_path(s), 10 + s));
    char pod[16];
    for (int p = 0; p < o.pods; ++p) {
        std::snprintf(pod, sizeof pod, "%04d", p);
        for (int k = 0; k < o.targets_per_pod; ++k) {
            const int s = (p * o.targets_per_pod + k) % o.sources;
            std::string path = kRoot + "/pods/pod-" + pod + "/volumes/kubernetes.io~csi/pv-" + std::to_string(k) +
                               "/mount";
            if (s == 0) dead_targets.push_back(path);
            v.push_back(fuse_entry(id++, 1, source_device(s), path, 10 + s));
        }
    }
    return v;
}

// The containers holding a copy of one of `targets`: a small table each.
std::vector<fh::NamespaceView> containers(const Options& o, const std::vector<std::string>& targets) {
    std::vector<fh::NamespaceView> out;
    int pid = 5000;
    for (std::size_t i = 0; i < targets.size(); ++i) {
        std::vector<fh::MountEntry> v;
        v.push_back(plain_entry(1, 1, "/"));
        for (int m = 0; m < o.container_mounts; ++m) v.push_back(plain_entry(2 + m, 1, "/etc/m" + std::to_string(m)));
        fh::MountEntry copy = fuse_entry(1000, 1, source_device(0), "/data", 0);
        copy.propagation.master_group = 10;
        v.push_back(std::move(copy));
        out.push_back(fh::NamespaceView{pid++, 4026530000ULL + i, fh::MountTable(std::move(v)), ""});
    }
    return out;
}

// Runs `f` `repeat` times; prints the median and minimum in µs. Skipped
// when `only` is set and not part of `name`.
void time_phase(const char* name, int repeat, const std::string& only, const std::function<void()>& f) {
    if (!only.empty() && std::string(name).find(only) == std::string::npos) return;
    std::vector<double> us;
    for (int i = 0; i < repeat; ++i) {
        const auto t0 = Clock::now();
        f();
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("| %-52s | %9.0f | %9.0f |\n", name, us[us.size() / 2], us.front());
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    std::vector<std::string> dead_targets;
    const std::vector<fh::MountEntry> entries = host_entries(o, dead_targets);
    fh::MatchRules rules;
    rules.root_dir = kRoot;

    const fh::MountTable host{std::vector<fh::MountEntry>(entries)};
    fh::LivenessMap alive, one_dead;
    for (int s = 0; s < o.sources; ++s) alive[source_device(s)] = fh::Liveness::Alive;
    one_dead = alive;
    one_dead[source_device(0)] = fh::Liveness::Dead;
    const fh::Classification classes = fh::classify(host, rules);
    const fh::OriginMap origins = fh::learn_origins(classes, alive, rules, nullptr);
    // The supervisor has unmounted the dead source: the step sees it gone.
    std::vector<fh::MountEntry> without_source;
    for (const auto& e : entries)
        if (e.mountpoint != source_path(0)) without_source.push_back(e);
    const fh::MountTable host_dead{std::move(without_source)};
    const fh::Classification classes_dead = fh::classify(host_dead, rules, &origins);
    const std::vector<fh::NamespaceView> views = containers(o, dead_targets);

    fh::PlanInput in;
    in.rules = &rules;
    in.host = &host_dead;
    in.classes = &classes_dead;
    in.liveness = &one_dead;
    in.origins = &origins;
    in.namespaces = &views;
    const fh::Plan outage = fh::plan_heals(in);
    const fh::ArmedHeals armed = fh::arm_heals(in, outage);

    std::printf("plan_bench: %zu mounts, %zu targets over %d sources, %zu containers holding the dead source's "
                "copies (%d other mounts each); %d runs per phase\n\n",
                entries.size(), classes.targets.size(), o.sources, views.size(), o.container_mounts, o.repeat);
    std::printf("| %-52s | %9s | %9s |\n", "phase", "p50 (µs)", "min (µs)");
    std::printf("|%s|%s|%s|\n", std::string(54, '-').c_str(), std::string(11, '-').c_str(),
                std::string(11, '-').c_str());
    std::size_t sink = 0;
    time_phase("table: MountTable from the tracked entries", o.repeat, o.only, [&] {
        fh::MountTable t{std::vector<fh::MountEntry>(entries)};
        sink += t.size();
    });
    time_phase("classify", o.repeat, o.only, [&] { sink += fh::classify(host, rules, &origins).targets.size(); });
    time_phase("learn_origins, all alive", o.repeat, o.only,
               [&] { sink += fh::learn_origins(classes, alive, rules, &origins).size(); });
    time_phase("plan_heals, all alive", o.repeat, o.only, [&] {
        fh::PlanInput healthy = in;
        healthy.host = &host;
        healthy.classes = &classes;
        healthy.liveness = &alive;
        healthy.namespaces = nullptr;
        sink += fh::plan_heals(healthy).verdicts.size();
    });
    time_phase("plan_heals, one source dead and unmounted", o.repeat, o.only,
               [&] { sink += fh::plan_heals(in).verdicts.size(); });
    time_phase("arm_heals (its 200 targets and their copies)", o.repeat, o.only,
               [&] { sink += fh::arm_heals(in, outage).actions.size(); });
    std::printf("\narmed: %zu actions for %zu awaited sources (%zu)\n", armed.actions.size(), armed.sources.size(),
                sink > 0 ? armed.verdicts.size() : 0);
    return 0;
}
