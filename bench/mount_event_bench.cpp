// mount_event_bench: what a mount event costs fuse-healerd when the node has
// 10,000 mounts, with mount tracking by fanotify and with the mountinfo
// fallback (--disable-kernel-feature fanotify_mount).
//
//   mount_event_bench [--mounts 10000] [--targets 10] [--events 200] [--interval-ms 100]
//                     [--relevant-events 40] [--relevant-interval-ms 150] [--runs 20] [--daemon PATH]
//
// Must run as root. Everything happens inside a private mount namespace that
// this process creates, in a tmpfs sandbox; nothing reaches the machine's
// mount table.
//
// The table: one fh_testfs source, --targets pod volumes bound read-only from
// it (csi_bind), and --mounts bind mounts outside the kubelet tree at paths
// like a container runtime's (<sandbox>/node/containers/<64 hex>/mounts/shm,
// ~110 characters), on a private tmpfs.
//
// 1. In this process (the engine library, no daemon), p50 and max over --runs:
//    read_mountinfo() of the whole table; MountTracker::open() (the tracker's
//    start-up: fanotify mark, listmount, one statmount per mount); update()
//    applying one unrelated event (a tmpfs mounted outside the kubelet tree);
//    table() rebuilding the snapshot after a change; and the heap the
//    tracker holds (mallinfo2: its table, then with a snapshot).
// 2. fuse-healerd, once per mount tracking (fanotify, mountinfo), with
//    safety_scan_interval = "0s" (no timer work during the measurement) and
//    --log-level info: the time from exec to "ready"; then --events unrelated
//    mount events (a tmpfs mounted, then unmounted, outside the kubelet tree,
//    one event every --interval-ms) and --relevant-events relevant ones (the
//    same in the kubelet tree, every --relevant-interval-ms). The daemon's CPU
//    is the sum of its threads' run time (/proc/<pid>/task/*/schedstat, ns),
//    minus its idle rate measured over 2 s before, divided by the events;
//    the reconciles it ran come from fuse-healerctl status (the control
//    socket). VmRSS and VmHWM at the end.
#include <malloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/control_protocol.h"
#include "core/mountinfo.h"
#include "engine/ctl_client.h"
#include "engine/mount_tracker.h"
#include "harness.h"

namespace ft = fh::test;
using namespace std::chrono_literals;

namespace {

struct Options {
    int mounts = 10000;
    int targets = 10;
    // Intervals longer than a reconcile of the mountinfo fallback at 10,000
    // mounts (~20-90 ms here), so that it reconciles once per event instead
    // of coalescing several.
    int events = 200;
    int interval_ms = 100;
    int relevant_events = 40;
    int relevant_interval_ms = 150;
    int runs = 20;
    std::string daemon;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "mount_event_bench: %s\nusage: mount_event_bench [--mounts N] [--targets N] [--events N] "
                 "[--interval-ms MS] [--relevant-events N] [--relevant-interval-ms MS] [--runs N] [--daemon PATH]\n",
                 why);
    std::exit(64);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage(("missing value for " + a).c_str());
        const std::string v = argv[++i];
        auto number = [&] {
            char* end = nullptr;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (!end || *end || n < 0) usage(("bad number for " + a).c_str());
            return static_cast<int>(n);
        };
        if (a == "--mounts") o.mounts = number();
        else if (a == "--targets") o.targets = number();
        else if (a == "--events") o.events = number();
        else if (a == "--interval-ms") o.interval_ms = number();
        else if (a == "--relevant-events") o.relevant_events = number();
        else if (a == "--relevant-interval-ms") o.relevant_interval_ms = number();
        else if (a == "--runs") o.runs = std::max(1, number());
        else if (a == "--daemon") o.daemon = v;
        else usage(("unknown option " + a).c_str());
    }
    return o;
}

void progress(const std::string& s) { std::fprintf(stderr, "mount_event_bench: %s\n", s.c_str()); }

void check(bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error(what + ": " + std::strerror(errno));
}

double ms_since(ft::Clock::time_point t0) { return std::chrono::duration<double, std::milli>(ft::Clock::now() - t0).count(); }

struct Stats {
    double p50 = 0, max = 0;
};
Stats stats(std::vector<double> v) {
    if (v.empty()) return {};
    std::sort(v.begin(), v.end());
    return {v[(v.size() - 1) / 2], v.back()};
}

// CPU time of every live thread of `pid`, in ns (schedstat's first field:
// time spent running, with ns resolution, where /proc/<pid>/stat counts
// 10 ms ticks).
double cpu_ns(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    double total = 0;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return 0;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        auto s = ft::read_file(dir + "/" + e->d_name + "/schedstat");
        if (s) total += std::strtod(s->c_str(), nullptr);
    }
    ::closedir(d);
    return total;
}

// A field of /proc/<pid>/status in kB (VmRSS, VmHWM), -1 when absent.
long status_kb(pid_t pid, const std::string& field) {
    auto s = ft::read_file("/proc/" + std::to_string(pid) + "/status");
    if (!s) return -1;
    const auto at = s->find(field + ":");
    if (at == std::string::npos) return -1;
    return std::strtol(s->c_str() + at + field.size() + 1, nullptr, 10);
}

std::size_t heap_in_use() { return mallinfo2().uordblks; }

// One unrelated mount event: a tmpfs mounted at `at` or, when mounted,
// unmounted.
void toggle(const std::string& at, bool& mounted) {
    if (mounted) check(::umount2(at.c_str(), 0) == 0, "umount " + at);
    else check(::mount("bench-churn", at.c_str(), "tmpfs", 0, "size=64k") == 0, "mount tmpfs on " + at);
    mounted = !mounted;
}

// Builds the node: a FUSE source, `targets` pod volumes, `mounts` binds
// outside the kubelet tree.
struct Node {
    ft::Sandbox& sb;
    ft::FuseDaemon fuse;
    std::string churn, kube_churn;

    Node(ft::Sandbox& s, const Options& o) : sb(s), fuse(s, s.runtime() + "/ds/fuse") {
        fuse.start(1);
        for (int i = 0; i < o.targets; ++i)
            ft::csi_bind(fuse.source(), "", sb.make_pod_volume("pod-" + std::to_string(i), "pvc-1"), true);
        const std::string node = sb.path("node");
        ft::make_dirs(node);
        check(::mount("bench-node", node.c_str(), "tmpfs", 0, "size=64m") == 0, "mount " + node);
        check(::mount(nullptr, node.c_str(), nullptr, MS_PRIVATE, nullptr) == 0, "make " + node + " private");
        ft::make_dirs(node + "/src");
        const auto t0 = ft::Clock::now();
        for (int i = 0; i < o.mounts; ++i) {
            char id[65];
            std::snprintf(id, sizeof id, "%016x%016x%016x%016x", 0x5eed0000u + i, i * 2654435761u, i * 40503u, i);
            const std::string at = node + "/containers/" + id + "/mounts/shm";
            ft::make_dirs(at);
            check(::mount((node + "/src").c_str(), at.c_str(), nullptr, MS_BIND, nullptr) == 0, "bind " + at);
        }
        progress(std::to_string(o.mounts) + " bind mounts made in " + std::to_string(static_cast<int>(ms_since(t0))) +
                 " ms; the table has " + std::to_string(ft::read_mountinfo_lines().size()) + " mounts");
        churn = node + "/churn";
        ft::make_dirs(churn);
        kube_churn = sb.kubelet() + "/pods/pod-0/volumes/kubernetes.io~secret/bench";
        ft::make_dirs(kube_churn);
    }
};

void in_process(const Options& o, Node& node) {
    std::vector<double> read, open, update, rebuild;
    std::size_t mounts = 0, heap_table = 0, heap_snapshot = 0;
    fh::MatchRules rules;
    rules.root_dir = node.sb.kubelet();
    for (int r = 0; r < o.runs; ++r) {
        auto t0 = ft::Clock::now();
        auto table = fh::read_mountinfo("/proc/self/mountinfo");
        read.push_back(ms_since(t0));
        if (!table) throw std::runtime_error(table.error().message());
        mounts = table->size();
    }
    for (int r = 0; r < o.runs; ++r) {
        const std::size_t h0 = heap_in_use();
        auto t0 = ft::Clock::now();
        auto t = fh::MountTracker::open(fh::make_relevance_rules(rules, {}));
        open.push_back(ms_since(t0));
        if (!t) throw std::runtime_error(t.error().message());
        const std::size_t h1 = heap_in_use();
        auto snap = (*t)->table();
        if (!snap) throw std::runtime_error(snap.error().message());
        heap_table = h1 - h0;
        heap_snapshot = heap_in_use() - h1;
        bool mounted = false;
        for (int i = 0; i < 10; ++i) {
            toggle(node.churn, mounted);
            t0 = ft::Clock::now();
            auto s = (*t)->update();
            update.push_back(ms_since(t0));
            if (s.events != 1 || s.relevant != 0) throw std::runtime_error("expected one unrelated event");
        }
        t0 = ft::Clock::now();
        auto rebuilt = (*t)->table();
        rebuild.push_back(ms_since(t0));
    }
    const Stats sr = stats(read), so = stats(open), su = stats(update), sb = stats(rebuild);
    std::printf("\n## In process (%zu mounts, %d runs)\n\n", mounts, o.runs);
    std::printf("| step | p50 ms | max ms |\n|---|--:|--:|\n");
    std::printf("| read_mountinfo() of the whole table | %.3f | %.3f |\n", sr.p50, sr.max);
    std::printf("| MountTracker::open() (fanotify mark, listmount, statmount of each mount) | %.3f | %.3f |\n", so.p50,
                so.max);
    std::printf("| MountTracker::update() applying one unrelated event | %.4f | %.4f |\n", su.p50, su.max);
    std::printf("| MountTracker::table() rebuilding the snapshot after a change | %.3f | %.3f |\n", sb.p50, sb.max);
    std::printf("\nHeap held by the tracker: %.2f MiB for its table, %.2f MiB more with a snapshot (mallinfo2)\n",
                heap_table / 1048576.0, heap_snapshot / 1048576.0);
}

nlohmann::json status(const std::string& socket) {
    auto answer = fh::control_exchange(socket, fh::encode_control_request({fh::ControlCommand::Status, ""}), 5s);
    if (!std::holds_alternative<std::string>(answer)) return {};
    return nlohmann::json::parse(std::get<std::string>(answer), nullptr, false);
}

std::int64_t daemon_number(const nlohmann::json& s, const char* key) {
    if (!s.is_object() || !s.contains("daemon") || !s["daemon"].contains(key)) return -1;
    return s["daemon"][key].get<std::int64_t>();
}

// Waits until the daemon's CPU time stops growing (its start-up or the last
// event's reconcile is over).
void wait_quiet(pid_t pid) {
    double last = cpu_ns(pid);
    for (int i = 0; i < 200; ++i) {
        std::this_thread::sleep_for(100ms);
        const double now = cpu_ns(pid);
        if (now - last < 1e5) return;  // < 0.1 ms of CPU in 100 ms
        last = now;
    }
}

struct DaemonResult {
    std::string tracking;
    double ready_ms = 0;
    double idle_us_per_s = 0;
    double unrelated_us = 0, relevant_us = 0;
    std::int64_t unrelated_reconciles = 0, relevant_reconciles = 0;
    std::int64_t unrelated_counted = 0;
    long rss_start_kb = 0, rss_kb = 0, hwm_kb = 0;
};

// Runs `events` events (toggle of `at`), one every `interval`; returns the
// daemon's CPU per event in us (idle rate subtracted) and the reconciles run.
std::pair<double, std::int64_t> measure(const ft::Daemon& d, const std::string& at, int events, int interval_ms,
                                              double idle_ns_per_s) {
    const std::string& socket = d.control_socket();
    wait_quiet(d.pid());
    const std::int64_t r0 = daemon_number(status(socket), "reconciles");
    const double c0 = cpu_ns(d.pid());
    const auto t0 = ft::Clock::now();
    bool mounted = false;
    int done = 0;  // `events`, plus one to unmount the last tmpfs when odd
    for (; done < events || mounted; ++done) {
        toggle(at, mounted);
        std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    }
    wait_quiet(d.pid());
    const double c1 = cpu_ns(d.pid());
    const double seconds = ms_since(t0) / 1000.0;
    const std::int64_t r1 = daemon_number(status(socket), "reconciles");
    const double per_event_us = (c1 - c0 - idle_ns_per_s * seconds) / done / 1000.0;
    return {per_event_us, r1 - r0};
}

DaemonResult run_daemon(const Options& o, Node& node, const std::string& daemon, bool fanotify) {
    DaemonResult r;
    r.tracking = fanotify ? "fanotify" : "mountinfo";
    ft::Daemon d{node.sb, daemon};
    std::vector<std::string> args{"--log-level", "info"};
    if (!fanotify) args.insert(args.end(), {"--disable-kernel-feature", "fanotify_mount"});
    const auto t0 = ft::Clock::now();
    d.start("[heal]\nsafety_scan_interval = \"0s\"\n", args);
    if (!d.wait_for_log("ready: watching", 60000ms)) throw std::runtime_error("fuse-healerd did not start: " + d.log());
    r.ready_ms = ms_since(t0);
    if (d.log().find("mount tracking=" + r.tracking + " (") == std::string::npos)
        throw std::runtime_error("fuse-healerd does not say mount tracking=" + r.tracking + ":\n" + d.log());
    wait_quiet(d.pid());
    r.rss_start_kb = status_kb(d.pid(), "VmRSS");
    // Idle rate: nothing happens for 2 s.
    const double i0 = cpu_ns(d.pid());
    std::this_thread::sleep_for(2s);
    r.idle_us_per_s = (cpu_ns(d.pid()) - i0) / 2.0 / 1000.0;
    const std::int64_t u0 = daemon_number(status(d.control_socket()), "unrelated_mount_events");
    std::tie(r.unrelated_us, r.unrelated_reconciles) =
        measure(d, node.churn, o.events, o.interval_ms, r.idle_us_per_s * 1000.0);
    r.unrelated_counted = daemon_number(status(d.control_socket()), "unrelated_mount_events") - u0;
    std::tie(r.relevant_us, r.relevant_reconciles) =
        measure(d, node.kube_churn, o.relevant_events, o.relevant_interval_ms, r.idle_us_per_s * 1000.0);
    r.rss_kb = status_kb(d.pid(), "VmRSS");
    r.hwm_kb = status_kb(d.pid(), "VmHWM");
    if (d.terminate() != 0) throw std::runtime_error("fuse-healerd did not stop cleanly:\n" + d.log());
    return r;
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    if (geteuid() != 0) {
        std::fprintf(stderr, "mount_event_bench: must run as root (it mounts, inside a private mount namespace)\n");
        return 77;
    }
    const std::string daemon = o.daemon.empty() ? ft::daemon_path() : o.daemon;
    std::string why;
    if (!ft::Daemon::available(&why, daemon)) {
        std::fprintf(stderr, "mount_event_bench: %s\n", why.c_str());
        return 1;
    }
    if (!ft::enter_private_mount_namespace(&why)) {
        std::fprintf(stderr, "mount_event_bench: cannot enter a private mount namespace: %s\n", why.c_str());
        return 1;
    }
    if (!fh::fanotify_mount_is_usable()) {
        std::fprintf(stderr, "mount_event_bench: this kernel has no fanotify mount events (Linux < 6.14)\n");
        return 1;
    }
    try {
        ft::Sandbox sb;
        Node node(sb, o);
        in_process(o, node);
        std::vector<DaemonResult> results;
        for (bool fanotify : {true, false}) {
            progress(std::string("fuse-healerd with mount tracking ") + (fanotify ? "fanotify" : "mountinfo"));
            results.push_back(run_daemon(o, node, daemon, fanotify));
        }
        std::printf("\n## fuse-healerd (%d unrelated events every %d ms, %d relevant every %d ms)\n\n", o.events,
                    o.interval_ms, o.relevant_events, o.relevant_interval_ms);
        std::printf("| mount tracking | start to ready ms | idle us/s | unrelated: CPU us/event | reconciles | "
                    "counted unrelated | relevant: CPU us/event | reconciles | VmRSS at start MiB | VmRSS MiB | "
                    "VmHWM MiB |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for (const auto& r : results)
            std::printf("| %s | %.1f | %.1f | %.1f | %lld | %lld | %.1f | %lld | %.1f | %.1f | %.1f |\n",
                        r.tracking.c_str(), r.ready_ms, r.idle_us_per_s, r.unrelated_us,
                        static_cast<long long>(r.unrelated_reconciles), static_cast<long long>(r.unrelated_counted),
                        r.relevant_us, static_cast<long long>(r.relevant_reconciles), r.rss_start_kb / 1024.0,
                        r.rss_kb / 1024.0, r.hwm_kb / 1024.0);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mount_event_bench: FAILED: %s\n", e.what());
        return 1;
    }
    return 0;
}
