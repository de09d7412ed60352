// copy_floor_bench: what the kernel alone needs to replace one stale mount in
// each of N container mount namespaces, with the system calls fuse-healerd's
// namespace workers make per copy and none of its checks, files or logs:
//
//   open_tree(OPEN_TREE_CLONE) of the source in the bench's namespace,
//   mount_setattr (propagation private) on the clone, setns into the
//   container's namespace, move_mount(MOVE_MOUNT_BENEATH) under the stale
//   mount, umount2(MNT_DETACH) of the stale mount, close, setns back.
//
// It gives the floor under scale_bench's "all 200 copies healthy": the part
// of a heal that no change in the daemon can remove on this kernel and
// machine. Each umount2 ends in an expedited RCU grace period
// (namespace_unlock), which needs every CPU to pass a quiescent state: busy
// CPUs make it slower, so --busy-loops adds spinning processes as other load.
//
// Mode "executor" does the same replacements with the daemon's own
// Executor::execute_in_namespaces (its 4 namespace workers, and every check
// it makes per copy), from the HealActions the planner would make: the
// difference to "floor" at 4 threads is what the executor adds.
//
//   copy_floor_bench [--copies 200] [--threads 1,2,4,8] [--busy-loops 0,2] [--rounds 5]
//                    [--modes floor,executor]
//
// The source is a live fh_testfs mount, the stale mount a bind of a killed
// one (a dead FUSE connection), as in a heal. Must run as root. Everything
// happens inside a private mount namespace that this process creates, in a
// sandbox; the holders of the container namespaces are children that die
// with it (PR_SET_PDEATHSIG).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <linux/mount.h>

#include "bench_util.h"
#include "core/mountinfo.h"
#include "core/planner.h"
#include "engine/executor.h"
#include "engine/kernel_features.h"
#include "harness.h"

namespace {

using fh::bench::fail;
using fh::bench::fail_errno;
using fh::bench::percentile;
using fh::bench::progress;
using Clock = std::chrono::steady_clock;

#ifndef MOVE_MOUNT_BENEATH
#define MOVE_MOUNT_BENEATH 0x00000200  // Linux 6.5; Debian 12's headers predate it
#endif

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "copy_floor_bench: %s\nusage: copy_floor_bench [--copies 200] [--threads 1,2,4,8] "
                 "[--busy-loops 0,2] [--rounds 5] [--modes floor,executor]\n",
                 why.c_str());
    std::exit(2);
}
void usage_cb(const std::string& why) { usage(why); }

std::vector<long> parse_list(const std::string& flag, const std::string& v, long min) {
    std::vector<long> out;
    std::size_t start = 0;
    while (start <= v.size()) {
        const std::size_t comma = v.find(',', start);
        const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        out.push_back(fh::bench::parse_long(flag, item, min, usage_cb));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

// A child that holds a mount namespace of its own, with a bind of the
// sandbox's stale mount at <sandbox>/t (and a copy of the bench's table, as
// after unshare).
struct Holder {
    pid_t pid = -1;
    int ns_fd = -1;
};

Holder start_holder(const std::string& sandbox) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) fail_errno("pipe2");
    const pid_t pid = ::fork();
    if (pid < 0) fail_errno("fork");
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        const bool ok = ::unshare(CLONE_NEWNS) == 0 &&
                        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
                        ::mount((sandbox + "/stale").c_str(), (sandbox + "/t").c_str(), nullptr, MS_BIND, nullptr) == 0;
        const char c = ok ? '1' : '0';
        (void)!::write(ready[1], &c, 1);
        for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = '0';
    const bool ok = ::read(ready[0], &c, 1) == 1 && c == '1';
    ::close(ready[0]);
    if (!ok) fail("a holder could not set up its namespace");
    Holder h{pid, ::open(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC)};
    if (h.ns_fd < 0) fail_errno("open /proc/<pid>/ns/mnt");
    return h;
}

void stop(pid_t pid) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
}

// Returns the actions the planner would make to replace the stale mount in
// each holder's namespace (in the holders' order).
std::vector<fh::HealAction> plan_copies(const std::string& sandbox, const std::vector<Holder>& holders,
                                        dev_t stale_device, dev_t source_device) {
    const std::string target = sandbox + "/t";
    std::vector<fh::HealAction> actions(holders.size());
    for (std::size_t i = 0; i < holders.size(); ++i) {
        const std::string proc = "/proc/" + std::to_string(holders[i].pid);
        auto table = fh::read_mountinfo(proc + "/mountinfo");
        if (!table) fail("failed to read " + proc + "/mountinfo: " + table.error().message());
        const fh::MountEntry* stale = table->topmost_at(target);
        if (!stale) fail("no stale mount at " + target + " in " + proc);
        struct stat ns {};
        if (::fstat(holders[i].ns_fd, &ns) != 0) fail_errno("fstat " + proc + "/ns/mnt");
        fh::HealAction& a = actions[i];
        a.kind = fh::ActionKind::Replace;
        a.target = a.mountpoint = target;
        a.ns_pid = holders[i].pid;
        a.ns_inode = ns.st_ino;
        a.expected_mount_id = stale->mount_id;
        a.expected_device = stale_device;
        a.clone_path = sandbox + "/src";
        a.source_device = source_device;
        a.propagation = fh::PropagationMode::Private;
    }
    return actions;
}

// Carries out `actions` with the daemon's executor, in one batch as the
// engine does; returns each copy's time in ms.
std::vector<double> replace_all_with_executor(fh::Executor& executor, const std::vector<fh::HealAction>& actions) {
    std::vector<const fh::HealAction*> batch;
    for (const fh::HealAction& a : actions) batch.push_back(&a);
    std::vector<fh::Executor::NamespaceOutcome> outcomes = executor.execute_in_namespaces(batch);
    std::vector<double> took;
    for (const auto& o : outcomes) {
        if (!o.status) fail("a copy failed: " + o.status.error().message());
        took.push_back(std::chrono::duration<double, std::milli>(o.took).count());
    }
    return took;
}

// Replaces the stale mount in each holder's namespace on `threads` threads;
// returns each copy's time in ms (in the holders' order).
std::vector<double> replace_all(const std::string& sandbox, const std::vector<Holder>& holders, long threads,
                                int home_ns) {
    std::vector<double> took(holders.size(), 0.0);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    const std::string src = sandbox + "/src", target = sandbox + "/t";
    auto work = [&] {
        // setns(CLONE_NEWNS) refuses a thread sharing its fs_struct.
        if (::unshare(CLONE_FS) != 0) {
            failed = true;
            return;
        }
        for (std::size_t i; (i = next++) < holders.size();) {
            const auto t0 = Clock::now();
            const int clone = static_cast<int>(
                ::syscall(SYS_open_tree, AT_FDCWD, src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
            mount_attr attr{};
            attr.propagation = MS_PRIVATE;
            const bool ok =
                clone >= 0 && ::syscall(SYS_mount_setattr, clone, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0 &&
                ::setns(holders[i].ns_fd, CLONE_NEWNS) == 0 &&
                ::syscall(SYS_move_mount, clone, "", AT_FDCWD, target.c_str(),
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH) == 0 &&
                ::umount2(target.c_str(), MNT_DETACH) == 0;
            if (clone >= 0) ::close(clone);
            if (::setns(home_ns, CLONE_NEWNS) != 0 || !ok) {
                failed = true;
                return;
            }
            took[i] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        }
    };
    std::vector<std::thread> pool;
    for (long k = 0; k < threads; ++k) pool.emplace_back(work);
    for (std::thread& t : pool) t.join();
    if (failed) fail("a copy failed (open_tree, mount_setattr, setns, move_mount beneath or umount2)");
    return took;
}

// Returns the device number of the topmost mount at `path` in the bench's
// namespace (from its table: the dead one cannot be stat()ed).
dev_t device_of(const std::string& path) {
    auto table = fh::read_mountinfo(fh::test::kSelfMountinfo);
    if (!table) fail("failed to read the mount table: " + table.error().message());
    const fh::MountEntry* m = table->topmost_at(path);
    if (!m) fail("nothing mounted at " + path);
    return m->device;
}

} // namespace

int main(int argc, char** argv) {
    fh::bench::set_progress_name("copy_floor_bench");
    long copies = 200, rounds = 5;
    std::vector<long> threads{1, 2, 4, 8}, busy{0, 2};
    std::vector<std::string> modes{"floor", "executor"};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage(a + " wants a value");
        const std::string v = argv[++i];
        if (a == "--copies") copies = fh::bench::parse_long(a, v, 1, usage_cb);
        else if (a == "--rounds") rounds = fh::bench::parse_long(a, v, 1, usage_cb);
        else if (a == "--threads") threads = parse_list(a, v, 1);
        else if (a == "--busy-loops") busy = parse_list(a, v, 0);
        else if (a == "--modes") {
            modes.clear();
            for (std::size_t start = 0; start <= v.size();) {
                const std::size_t comma = v.find(',', start);
                modes.push_back(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
                if (modes.back() != "floor" && modes.back() != "executor")
                    usage("--modes: \"" + modes.back() + "\" is neither floor nor executor");
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
        } else usage("unknown flag " + a);
    }
    if (::geteuid() != 0) {
        std::fprintf(stderr, "copy_floor_bench: must run as root (it mounts)\n");
        return 77;
    }
    std::string why;
    if (!fh::test::enter_private_mount_namespace(&why)) fail("cannot enter a private mount namespace: " + why);
    {
        fh::test::Sandbox sb;
        const std::string sandbox = sb.root();
        // The live source (generation 2) and a dead one (generation 1,
        // killed: its mount stays, the connection aborted).
        fh::test::FuseDaemon source{sb, sandbox + "/src"}, dead{sb, sandbox + "/stale"};
        source.start(2);
        dead.start(1);
        dead.kill9();
        if (::mkdir((sandbox + "/t").c_str(), 0755) != 0) fail_errno("mkdir");
        const dev_t source_device = device_of(sandbox + "/src"), stale_device = device_of(sandbox + "/stale");
        const int home_ns = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        if (home_ns < 0) fail_errno("open /proc/self/ns/mnt");
        const fh::KernelFeatures features = fh::detect_kernel_features({}, "/sys/fs/fuse/connections", false);
        if (!features.move_mount_beneath) fail("needs MOVE_MOUNT_BENEATH (Linux 6.5)");
        fh::Executor executor(features, sb.kubelet());

        std::printf("%s; %ld copies, %ld rounds each\n\n", fh::bench::machine_description().c_str(), copies,
                    rounds);
        std::printf("| mode | busy loops | threads | all copies p50 / max (ms) | per copy p50 / p99 (ms) |\n"
                    "|--|--:|--:|--|--|\n");
        for (long b : busy) {
            std::vector<pid_t> loops;
            for (long k = 0; k < b; ++k) {
                const pid_t p = ::fork();
                if (p < 0) fail_errno("fork");
                if (p == 0) {
                    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                    for (;;) __asm__ volatile("" ::: "memory");  // spin on the CPU, in user mode
                }
                loops.push_back(p);
            }
            for (const std::string& mode : modes) {
                const bool with_executor = mode == "executor";
                const std::vector<long> counts =
                    with_executor ? std::vector<long>{static_cast<long>(fh::Executor::kNamespaceWorkerThreads)}
                                  : threads;
                for (long t : counts) {
                    std::vector<double> all, per_copy;
                    for (long r = 0; r < rounds; ++r) {
                        std::vector<Holder> holders;
                        for (long c = 0; c < copies; ++c) holders.push_back(start_holder(sandbox));
                        const std::vector<fh::HealAction> actions =
                            with_executor ? plan_copies(sandbox, holders, stale_device, source_device)
                                          : std::vector<fh::HealAction>{};
                        const auto t0 = Clock::now();
                        std::vector<double> took = with_executor ? replace_all_with_executor(executor, actions)
                                                                 : replace_all(sandbox, holders, t, home_ns);
                        all.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
                        per_copy.insert(per_copy.end(), took.begin(), took.end());
                        // Every namespace must now read the live source at t.
                        for (const Holder& h : holders) {
                            const std::string at = "/proc/" + std::to_string(h.pid) + "/root" + sandbox + "/t";
                            if (fh::test::read_file(at + "/generation") != "2\n")
                                fail("a copy does not show the source: " + at);
                            stop(h.pid);
                            ::close(h.ns_fd);
                        }
                    }
                    progress("%s, busy loops %ld, threads %ld: all copies p50 %.2f ms", mode.c_str(), b, t,
                             percentile(all, 50));
                    std::printf("| %s | %ld | %ld | %.2f / %.2f | %.3f / %.3f |\n", mode.c_str(), b, t,
                                percentile(all, 50), fh::bench::max_of(all), percentile(per_copy, 50),
                                percentile(per_copy, 99));
                    (void)std::fflush(stdout);
                }
            }
            for (pid_t p : loops) stop(p);
        }
        ::close(home_ns);
    }
    return 0;
}
