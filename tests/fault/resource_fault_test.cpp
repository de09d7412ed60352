// Resource faults (issue 5, "Resource faults"), against real FUSE daemons
// and fuse-healerd:
//
//   InotifyWatchLimit...      no inotify watch left for the daemon's user:
//                             degraded (log, status, metric), pods indexed by
//                             rescans, heals unaffected; recovers when watches
//                             are free again
//   InotifyQueueOverflow...   the pod index's queue overflows while the daemon
//                             is stopped: it rescans
//   FanotifyQueueOverflow...  the mount event queue overflows: the table is
//                             listed again and a heal missed in it happens
//   StateDir...               the state dir is full or read-only: heals go on
//                             from memory, reported until a save works again
//   CorruptStateFile...       truncated or corrupt state: ignored with a
//                             warning, rebuilt
//   FusectlAbsent...          no fusectl and none can be mounted: statx probes
//
// Nothing here changes a global sysctl: the inotify watch limit is per user,
// so the daemon runs as a user of its own (fh_run_as) whose watches a child
// of the test holds; queue overflows are provoked by stopping the daemon
// (SIGSTOP) while more events than the queue holds (16384 by default) pile up.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fault_fixture.h"

#ifndef FH_RUN_AS_PATH
#define FH_RUN_AS_PATH ""
#endif

using namespace fh::test;

namespace {

class ResourceFault : public DaemonTest {};

// The value of one series in a Prometheus text file, e.g.
// metric_value(text, "fuse_healer_degraded{reason=\"state_not_saved\"}").
std::optional<double> metric_value(const std::string& text, const std::string& series) {
    for (const auto& line : lines_with(text, {series + " "}))
        if (line.compare(0, series.size() + 1, series + " ") == 0) return std::stod(line.substr(series.size() + 1));
    return std::nullopt;
}

std::string metrics_toml(const Sandbox& sb) {
    return "[metrics]\nlisten = \"\"\ntextfile = \"" + sb.path("metrics.prom") + "\"\n";
}

// Waits until the metrics textfile shows `series` at `value`.
bool wait_for_metric(const Sandbox& sb, const std::string& series, double value,
                     std::chrono::milliseconds timeout = kHealTimeout) {
    return wait_until(
        [&] {
            auto text = read_file(sb.path("metrics.prom"));
            auto v = text ? metric_value(*text, series) : std::nullopt;
            return v && *v == value;
        },
        timeout, 10ms);
}

bool degraded_mentions(const nlohmann::json& status, const std::string& needle) {
    for (const auto& d : degraded_of(status))
        if (d.find(needle) != std::string::npos) return true;
    return false;
}

// ---- a user whose inotify watches are all taken ------------------------------------------

// A uid no process on the machine uses (per-user limits are counted per
// uid in the initial user namespace).
constexpr uid_t kWatchUser = 3999123;

// A child process running as kWatchUser that takes every inotify watch that
// user may have (fs.inotify.max_user_watches), in all but one of its
// inotify instances (fs.inotify.max_user_instances; one is left for the
// daemon), on the same few thousand files (a watch is per instance and
// inode). release() (or the destructor) ends it, which frees them.
class WatchHog {
public:
    explicit WatchHog(const std::string& dir) {
        int to_parent[2], to_child[2];
        if (pipe2(to_parent, O_CLOEXEC) != 0 || pipe2(to_child, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        long max_watches = 0, max_instances = 0;
        std::ifstream("/proc/sys/fs/inotify/max_user_watches") >> max_watches;
        std::ifstream("/proc/sys/fs/inotify/max_user_instances") >> max_instances;
        if (max_watches <= 0 || max_instances < 2) throw std::runtime_error("unreadable inotify limits");
        const long instances = max_instances - 1;
        const long files = max_watches / instances + 1;
        make_dirs(dir);
        for (long i = 0; i < files; ++i) {
            const std::string f = dir + "/" + std::to_string(i);
            if (mknod(f.c_str(), S_IFREG | 0644, 0) != 0 && errno != EEXIST) throw std::runtime_error("mknod " + f);
        }
        pid_ = fork_tied_child();
        if (pid_ == 0) {
            if (setgroups(0, nullptr) != 0 || setresgid(kWatchUser, kWatchUser, kWatchUser) != 0 ||
                setresuid(kWatchUser, kWatchUser, kWatchUser) != 0)
                _exit(2);
            prctl(PR_SET_PDEATHSIG, SIGKILL);  // cleared by the uid change
            if (chdir(dir.c_str()) != 0) _exit(3);
            long held = 0;
            bool full = false;
            for (long in = 0; in < instances && !full; ++in) {
                const int fd = inotify_init1(IN_CLOEXEC);
                if (fd < 0) break;
                for (long i = 0; i < files; ++i) {
                    if (inotify_add_watch(fd, std::to_string(i).c_str(), IN_DELETE_SELF) < 0) {
                        full = errno == ENOSPC;
                        if (!full) _exit(4);
                        break;
                    }
                    ++held;
                }
            }
            const std::int64_t msg = full ? held : -held;
            if (write(to_parent[1], &msg, sizeof msg) != sizeof msg) _exit(5);
            char c;
            (void)!read(to_child[0], &c, 1);  // until told (or the test ends)
            _exit(0);
        }
        close(to_parent[1]);
        close(to_child[0]);
        to_child_ = to_child[1];
        pollfd p{to_parent[0], POLLIN, 0};
        std::int64_t msg = 0;
        const bool got = poll(&p, 1, 60000) == 1 && read(to_parent[0], &msg, sizeof msg) == sizeof msg;
        close(to_parent[0]);
        if (!got || msg <= 0) {
            release();
            throw std::runtime_error("the watch hog did not exhaust the watches (" + std::to_string(msg) + ")");
        }
        held_ = msg;
    }
    ~WatchHog() { release(); }
    WatchHog(const WatchHog&) = delete;
    WatchHog& operator=(const WatchHog&) = delete;

    long held() const { return held_; }
    void release() {
        if (to_child_ >= 0) close(to_child_);
        to_child_ = -1;
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    int to_child_ = -1;
    long held_ = 0;
};

// Sets FH_RUN_AS_UID for the next Daemon::start through fh_run_as.
class RunAsEnv {
public:
    explicit RunAsEnv(uid_t uid) { setenv("FH_RUN_AS_UID", std::to_string(uid).c_str(), 1); }
    ~RunAsEnv() { unsetenv("FH_RUN_AS_UID"); }
};

}  // namespace

// The daemon's user has no inotify watch left. The daemon says so (a
// warning, `degraded` in its status, fuse_healer_degraded{reason=
// "inotify_watch_limit"} 1), indexes the pods tree by rescans on the safety
// timer instead, and heals as usual. Once watches are free again, the next
// rescan gets them back and says so.
TEST_F(ResourceFault, InotifyWatchLimitDegradesLoudlyAndFallsBackToRescans) {
    if (std::string(FH_RUN_AS_PATH).empty()) GTEST_SKIP() << "fh_run_as was not built";
    Sandbox sb;
    make_dirs(sb.path("hog"));
    ASSERT_EQ(mount("hog", sb.path("hog").c_str(), "tmpfs", 0, "mode=0777"), 0) << std::strerror(errno);
    Dataset fuse(sb);
    const std::string pod_a = publish_volume(sb, fuse.source(), "pod-a", "vol", "handle-a");

    const auto t0 = Clock::now();
    WatchHog hog(sb.path("hog/files"));
    std::cout << "  the hog holds " << hog.held() << " inotify watches of uid " << kWatchUser << " (taken in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() << " ms)\n";
    RunAsEnv as(kWatchUser);
    Daemon d(sb, FH_RUN_AS_PATH);
    start_daemon(d, sb, {pod_a}, "[heal]\nsafety_scan_interval = \"1s\"\n" + metrics_toml(sb));
    EXPECT_TRUE(d.wait_for_log("inotify watch limit", kHealTimeout)) << tail(d.log());
    nlohmann::json status;
    EXPECT_TRUE(wait_for_status(
        d, [](const nlohmann::json& s) { return degraded_mentions(s, "inotify watch limit"); }, &status))
        << status.dump();
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_degraded{reason=\"inotify_watch_limit\"}", 1))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");

    // A pod published now is found by a rescan (no watch tells about it):
    // its vol_data.json is known by the next safety scan.
    const std::string pod_b = publish_volume(sb, fuse.source(), "pod-b", "vol", "handle-b");
    ASSERT_TRUE(wait_until([&] { return state_has(sb, {pod_b}); }, kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(wait_for_target_status(
        d, pod_b, [](const nlohmann::json& t) { return t.value("volume_handle", "") == "handle-b"; }, &status,
        kHealTimeout, 20ms))
        << status.dump();
    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod_a + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(host_reads(pod_b + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", pod_b), kHealTimeout)) << tail(d.log());
    auto healed = lines_with(d.log(), {event_for("mount healed", pod_b)});
    ASSERT_FALSE(healed.empty());
    EXPECT_NE(healed.back().find("volume_handle=handle-b"), std::string::npos) << healed.back();
    // Warned once, not at every rescan.
    EXPECT_EQ(lines_with(d.log(), {"inotify watch limit", "degraded"}).size(), 1u)
        << joined(lines_with(d.log(), {"inotify watch limit"}));

    // Watches are free again: the next rescan takes them.
    const std::size_t mark = d.log().size();
    hog.release();
    EXPECT_TRUE(d.wait_for_log("the pod index watches the pods tree again", kHealTimeout, mark)) << tail(d.log());
    EXPECT_TRUE(wait_for_status(d, [](const nlohmann::json& s) { return degraded_of(s).empty(); }, &status))
        << status.dump();
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_degraded{reason=\"inotify_watch_limit\"}", 0))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");
    EXPECT_EQ(d.terminate(), 0) << tail(d.log());
}

// The pod index's inotify queue (fs.inotify.max_queued_events, 16384)
// overflows while the daemon is stopped: the events of a pod published
// after the flood are lost. The daemon rescans on IN_Q_OVERFLOW, so that
// pod's vol_data.json is known when its heal is logged.
TEST_F(ResourceFault, InotifyQueueOverflowRescansThePodsTree) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string pod_a = publish_volume(sb, fuse.source(), "pod-a", "vol", "handle-a");
    Daemon d(sb);
    // No safety rescan: only the overflow can find the lost pod.
    start_daemon(d, sb, {pod_a}, "[heal]\nsafety_scan_interval = \"0s\"\n" + metrics_toml(sb));

    long queued = 16384;
    std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> queued;
    const std::string pod_new = sb.make_pod_volume("pod-new", "vol", "handle-new");
    {
        Stopped stopped(d.pid());
        const std::string pods = sb.kubelet() + "/pods/";
        for (long i = 0; i < queued / 2 + 100; ++i) {  // two events each
            const std::string dir = pods + "flood-" + std::to_string(i);
            ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << std::strerror(errno);
            ASSERT_EQ(rmdir(dir.c_str()), 0) << std::strerror(errno);
        }
        std::filesystem::remove_all(sb.kubelet() + "/pods/pod-new");
        sb.make_pod_volume("pod-new", "vol", "handle-new");
        csi_bind(fuse.source(), "", pod_new, true);
    }
    EXPECT_TRUE(d.wait_for_log("inotify queue overflowed", kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_event_queue_overflows_total{queue=\"inotify\"}", 1))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");
    ASSERT_TRUE(wait_until([&] { return state_has(sb, {pod_new}); }, kHealTimeout)) << tail(d.log());

    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod_new + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", pod_new), kHealTimeout)) << tail(d.log());
    auto healed = lines_with(d.log(), {event_for("mount healed", pod_new)});
    ASSERT_FALSE(healed.empty());
    EXPECT_NE(healed.back().find("volume_handle=handle-new"), std::string::npos) << healed.back();
}

// The mount event queue (fanotify, fs.fanotify.max_queued_events) overflows
// while the daemon is stopped, and the dataset dies and comes back in the
// meantime: its events are among those lost. The daemon lists the table
// again and heals, without waiting for the safety scan.
TEST_F(ResourceFault, FanotifyQueueOverflowListsTheTableAgainAndHeals) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string pod = publish_volume(sb, fuse.source(), "pod-a");
    Daemon d(sb);
    start_daemon(d, sb, {pod}, "[heal]\nsafety_scan_interval = \"0s\"\n" + metrics_toml(sb));
    if (lines_with(d.log(), {"mount tracking=fanotify"}).empty()) GTEST_SKIP() << "no mount tracking by fanotify";

    long queued = 16384;
    std::ifstream("/proc/sys/fs/fanotify/max_queued_events") >> queued;
    char tmpl[] = "/tmp/fh-flood-XXXXXX";  // outside the (shared) sandbox: no copies propagate
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    struct RemoveDir {
        std::string dir;
        ~RemoveDir() {
            umount2(dir.c_str(), MNT_DETACH);
            rmdir(dir.c_str());
        }
    } flood{tmpl};
    {
        Stopped stopped(d.pid());
        for (long i = 0; i < queued / 2 + 100; ++i) {  // attach + detach
            ASSERT_EQ(mount(flood.dir.c_str(), flood.dir.c_str(), nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);
            ASSERT_EQ(umount2(flood.dir.c_str(), 0), 0) << std::strerror(errno);
        }
        fuse.kill9();
        fuse.supervisor_restart(2);
    }
    EXPECT_TRUE(d.wait_for_log("mount event queue overflowed", kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_event_queue_overflows_total{queue=\"fanotify\"}", 1))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");
}

namespace {

enum class StateDirFault { Full, ReadOnly };

// The state dir cannot take the state file: a tmpfs filled up, or a
// read-only bind. The daemon learns the targets anyway, says once that it
// heals from memory (log, status, metric), and heals a dataset whose
// supervisor removed the stale source (so the origin can only come from
// memory). Once the dir takes writes again, the next reconcile saves the
// state and the report clears.
void state_dir_fault(StateDirFault fault) {
    Sandbox sb;
    const std::string state = sb.state();
    if (fault == StateDirFault::Full) {
        ASSERT_EQ(mount("state", state.c_str(), "tmpfs", 0, "size=16k,mode=0700"), 0) << std::strerror(errno);
        const std::string filler = state + "/filler";
        std::ofstream f(filler);
        const std::string block(4096, 'x');
        for (int i = 0; i < 64 && f.write(block.data(), block.size()); ++i) f.flush();
    } else {
        ASSERT_EQ(mount(state.c_str(), state.c_str(), nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);
        ASSERT_EQ(mount(nullptr, state.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr), 0)
            << std::strerror(errno);
    }
    Dataset fuse(sb);
    const std::string pod = publish_volume(sb, fuse.source(), "pod-a");
    const std::string sub = publish_subpath(sb, fuse.source(), "sub", "pod-a");
    Container c(sb);
    ASSERT_TRUE(start_reading(c, pod, ContainerPropagation::Private, "generation", gen(1)));

    Daemon d(sb);
    start_daemon(d, sb, {}, metrics_toml(sb));
    const std::string why = fault == StateDirFault::Full ? "No space left on device" : "Read-only file system";
    EXPECT_TRUE(d.wait_for_log("failed to save state, ignoring", kHealTimeout)) << tail(d.log());
    auto warned = lines_with(d.log(), {"failed to save state, ignoring"});
    ASSERT_FALSE(warned.empty());
    EXPECT_NE(warned[0].find(why), std::string::npos) << warned[0];
    EXPECT_NE(warned[0].find("healing continues from memory"), std::string::npos) << warned[0];
    nlohmann::json status;
    EXPECT_TRUE(wait_for_status(d, [&](const nlohmann::json& s) { return degraded_mentions(s, why); }, &status))
        << status.dump();
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_degraded{reason=\"state_not_saved\"}", 1))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");
    EXPECT_FALSE(read_file(state_file(sb)).has_value()) << "a state file was written";

    // The learned origins live in memory only: heal from them.
    ASSERT_TRUE(
        wait_for_target_status(d, sub, [](const nlohmann::json& t) { return t.value("state", "") == "healthy"; }));
    fuse.kill9();
    ASSERT_TRUE(container_broken(c));
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(host_reads(sub + "/inner", inner(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state;
    // Said once, not at every failed save.
    EXPECT_EQ(lines_with(d.log(), {"failed to save state, ignoring"}).size(), 1u)
        << joined(lines_with(d.log(), {"failed to save state"}));

    // The dir takes writes again: the next reconcile saves.
    const std::size_t mark = d.log().size();
    if (fault == StateDirFault::Full) {
        ASSERT_EQ(unlink((state + "/filler").c_str()), 0);
    } else {
        ASSERT_EQ(mount(nullptr, state.c_str(), nullptr, MS_REMOUNT | MS_BIND, nullptr), 0) << std::strerror(errno);
    }
    heal_request(d.control_socket(), pod);
    EXPECT_TRUE(d.wait_for_log("state saved again to " + state_file(sb), kHealTimeout, mark)) << tail(d.log());
    EXPECT_TRUE(state_has(sb, {pod, sub})) << read_file(state_file(sb)).value_or("(none)");
    EXPECT_TRUE(wait_for_status(d, [](const nlohmann::json& s) { return degraded_of(s).empty(); }, &status))
        << status.dump();
    EXPECT_TRUE(wait_for_metric(sb, "fuse_healer_degraded{reason=\"state_not_saved\"}", 0))
        << read_file(sb.path("metrics.prom")).value_or("(no metrics)");
    EXPECT_TRUE(bad_states(c, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}

}  // namespace

TEST_F(ResourceFault, StateDirFullKeepsHealingFromMemory) { state_dir_fault(StateDirFault::Full); }

TEST_F(ResourceFault, StateDirReadOnlyKeepsHealingFromMemory) { state_dir_fault(StateDirFault::ReadOnly); }

namespace {

struct CorruptState {
    const char* name;
    std::function<std::string(const std::string& good)> make;  // from a good state file's text
    const char* warning;                                       // in the "failed to load state" line
};

}  // namespace

// A state file that is truncated, corrupt, of another version, or names
// paths with "." or ".." components is ignored with a warning naming the
// file and the problem; the daemon learns the targets again and replaces
// the file with a good one. Each case also restarts the daemon during an
// outage (the stale source still mounted): it heals from the origins it
// learns from the table.
TEST_F(ResourceFault, CorruptStateFileIsIgnoredWithAWarningAndRebuilt) {
    const std::vector<CorruptState> cases = {
        {"empty", [](const std::string&) { return std::string(); }, "bad JSON"},
        {"truncated", [](const std::string& good) { return good.substr(0, good.size() / 2); }, "bad JSON"},
        {"garbage", [](const std::string&) { return std::string("\x7f" "ELF" "\x02\x01\x01" "\0\0\0" "garbage", 17); },
         "bad JSON"},
        {"other version",
         [](const std::string& good) {
             auto j = nlohmann::json::parse(good);
             j["version"] = 99;
             return j.dump();
         },
         "version 99 is not 1"},
        {"dot-dot source",
         [](const std::string& good) {
             auto j = nlohmann::json::parse(good);
             std::string s = j["origins"][0]["source_path"];
             j["origins"][0]["source_path"] = s.substr(0, s.rfind('/')) + "/../ds/fuse";
             return j.dump();
         },
         "not a normalized absolute path"},
    };
    Sandbox sb;
    Dataset fuse(sb);
    const std::string pod = publish_volume(sb, fuse.source(), "pod-a");
    std::string good;
    {
        Daemon d(sb);
        start_daemon(d, sb, {pod});
        good = read_file(state_file(sb)).value_or("");
        EXPECT_EQ(d.terminate(), 0);
    }
    ASSERT_FALSE(good.empty());
    int generation = 1;
    for (const auto& k : cases) {
        SCOPED_TRACE(k.name);
        write_file(state_file(sb), k.make(good));
        Daemon d(sb);
        d.start();
        ASSERT_TRUE(d.wait_for_log("ready: watching", kHealTimeout)) << tail(d.log());
        EXPECT_TRUE(d.wait_for_log("failed to load state, ignoring", kHealTimeout)) << tail(d.log());
        auto warned = lines_with(d.log(), {"failed to load state, ignoring"});
        ASSERT_FALSE(warned.empty());
        EXPECT_NE(warned[0].find(state_file(sb)), std::string::npos) << warned[0];
        EXPECT_NE(warned[0].find(k.warning), std::string::npos) << warned[0];
        // Rebuilt from the table.
        EXPECT_TRUE(wait_until([&] { return read_file(state_file(sb)) == good; }, kHealTimeout))
            << read_file(state_file(sb)).value_or("(none)") << "\n" << tail(d.log());
        EXPECT_EQ(d.terminate(), 0);
    }

    // During an outage, with the stale source still in the table.
    write_file(state_file(sb), "{\"version\":1,\"origins\":[{\"target\":");
    fuse.kill9();
    Daemon d(sb);
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready: watching", kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log("failed to load state, ignoring", kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount broken", pod), kHealTimeout)) << tail(d.log());
    EXPECT_TRUE(wait_until([&] { return state_has(sb, {pod}); }, kHealTimeout))
        << read_file(state_file(sb)).value_or("(none)") << "\n" << tail(d.log());
    fuse.supervisor_restart(++generation);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(generation))) << tail(d.log());
}

// A mount namespace without fusectl where none can be mounted (the fuse
// directory of sysfs is hidden by an empty read-only tmpfs, so that
// /sys/fs/fuse/connections does not exist): the daemon says it falls back
// to statx probes, and heals.
TEST_F(ResourceFault, FusectlAbsentAndNotMountableFallsBackToStatx) {
    Sandbox sb;
    Dataset fuse(sb);
    const std::string pod = publish_volume(sb, fuse.source(), "pod-a");
    Container c(sb);
    ASSERT_TRUE(start_reading(c, pod, ContainerPropagation::Private, "generation", gen(1)));

    ASSERT_EQ(mount("no-fusectl", "/sys/fs/fuse", "tmpfs", MS_RDONLY, "size=4k"), 0) << std::strerror(errno);
    struct Unhide {
        ~Unhide() { umount2("/sys/fs/fuse", MNT_DETACH); }
    } unhide;
    struct stat st{};
    ASSERT_NE(stat("/sys/fs/fuse/connections", &st), 0);

    Daemon d(sb);
    start_daemon(d, sb, {pod});
    EXPECT_FALSE(lines_with(d.log(), {"death detection=statx"}).empty()) << tail(d.log());
    EXPECT_FALSE(lines_with(d.log(), {"fusectl=no"}).empty()) << tail(d.log());
    auto said = lines_with(d.log(), {"fusectl is not available"});
    ASSERT_FALSE(said.empty()) << tail(d.log());
    EXPECT_NE(said[0].find("/sys/fs/fuse/connections"), std::string::npos) << said[0];
    EXPECT_NE(said[0].find("statx"), std::string::npos) << said[0];
    const auto status = status_json(d.control_socket());
    EXPECT_EQ(status["daemon"].value("detection", ""), "statx") << status.dump();
    EXPECT_NE(status["daemon"].value("kernel", "").find("fusectl=no"), std::string::npos) << status.dump();

    fuse.kill9();
    ASSERT_TRUE(container_broken(c));
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(pod + "/generation", gen(2))) << tail(d.log());
    EXPECT_TRUE(container_reads(c, gen(2))) << c.last()->state << "\n" << tail(d.log());
    EXPECT_TRUE(d.wait_for_log(event_for("mount healed", pod), kHealTimeout)) << tail(d.log());
    EXPECT_EQ(stat("/sys/fs/fuse/connections", &st), -1) << "the daemon mounted something in the hidden dir";
    EXPECT_TRUE(bad_states(c, {gen(1), gen(2)}).empty()) << ::testing::PrintToString(c.state_sequence());
}
