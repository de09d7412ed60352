// Tests of the /proc walk for FUSE servers (engine/server_scan.h) and of the
// death watch (engine/death_watch.h) on a fake /proc tree and a fake fusectl
// directory: the processes are real children of the test (their pidfds are
// real), the /dev/fuse files are symlinks with captured fdinfo beside them.
// The walk of the real /proc with a real FUSE daemon is an integration test
// (tests/integration/death_watch_test.cpp).
#include "engine/death_watch.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "engine/server_scan.h"

namespace fh {
namespace {

using testing_support::slurp;
using testing_support::spit;
using testing_support::TempDir;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kFdinfo = std::string(FH_TEST_DATA_DIR) + "/fdinfo/";

// A fake proc root: <root>/<pid>/{fd/<n> -> target, fdinfo/<n>, comm}.
class FakeProc {
public:
    const std::string& root() const { return tmp_.path(); }

    // Adds fd `fd` of `pid` linking to `target`, with `fdinfo` (none when
    // empty: the fd closed between the readdir and the read).
    void add_fd(int pid, int fd, const std::string& target, const std::string& fdinfo) {
        const std::string dir = tmp_ / std::to_string(pid);
        fs::create_directories(dir + "/fd");
        fs::create_directories(dir + "/fdinfo");
        fs::create_symlink(target, dir + "/fd/" + std::to_string(fd));
        if (!fdinfo.empty()) spit(dir + "/fdinfo/" + std::to_string(fd), fdinfo);
    }
    void set_comm(int pid, const std::string& comm) { spit(tmp_ / (std::to_string(pid) + "/comm"), comm + "\n"); }
    // A process with no fd directory (a kernel thread shows an empty one;
    // a process that exited during the walk, none).
    void add_bare(int pid) { fs::create_directories(tmp_ / std::to_string(pid)); }
    // The process is gone from /proc.
    void remove(int pid) { fs::remove_all(tmp_ / std::to_string(pid)); }
    void set_fdinfo(int pid, int fd, const std::string& fdinfo) {
        spit(tmp_ / (std::to_string(pid) + "/fdinfo/" + std::to_string(fd)), fdinfo);
    }

private:
    TempDir tmp_;
};

// A fake fusectl tree: <dir>/<id>/{max_background,waiting}.
class FakeFusectl {
public:
    const std::string& dir() const { return tmp_.path(); }
    void set(std::uint32_t id, bool aborted) {
        fs::create_directories(tmp_ / std::to_string(id));
        spit(tmp_ / (std::to_string(id) + "/max_background"), aborted ? "4294967295\n" : "12\n");
        spit(tmp_ / (std::to_string(id) + "/waiting"), "0\n");
    }
    void remove(std::uint32_t id) { fs::remove_all(tmp_ / std::to_string(id)); }

private:
    TempDir tmp_;
};

std::string fdinfo_of(std::uint32_t id) {
    return "pos:\t0\nflags:\t02100002\nmnt_id:\t58\nino:\t90\nfuse_connection:\t" + std::to_string(id) + "\n";
}

TEST(ServerScan, FindsDevFuseHoldersAndTheirConnections) {
    FakeProc proc;
    // A daemon with a captured attached file (connection 946) and a clone of
    // it, plus stdio.
    proc.add_fd(100, 0, "/dev/null", "pos:\t0\nflags:\t02\nmnt_id:\t1\nino:\t5\n");
    proc.add_fd(100, 3, "/dev/fuse", slurp(kFdinfo + "fh_testfs-dev-fuse.fdinfo"));
    proc.add_fd(100, 7, "/dev/fuse", slurp(kFdinfo + "fh_testfs-dev-fuse.fdinfo"));
    proc.set_comm(100, "fh_testfs");
    // bindfs (libfuse 2) on 948.
    proc.add_fd(200, 4, "/dev/fuse", slurp(kFdinfo + "bindfs-dev-fuse.fdinfo"));
    proc.set_comm(200, "bindfs");
    // A daemon still starting: /dev/fuse open, not mounted yet.
    proc.add_fd(300, 3, "/dev/fuse", slurp(kFdinfo + "dev-fuse-unattached.fdinfo"));
    // A file on some other device, and names that only look alike.
    proc.add_fd(400, 3, "/etc/hostname", slurp(kFdinfo + "regular-file.fdinfo"));
    proc.add_fd(400, 4, "/dev/fuse (deleted)", fdinfo_of(1));
    proc.add_fd(400, 5, "/tmp/dev/fuse", fdinfo_of(2));
    // A file closed between the readdir and the fdinfo read.
    proc.add_fd(500, 9, "/dev/fuse", "");
    proc.add_bare(600);
    // Ourselves: skipped.
    proc.add_fd(700, 3, "/dev/fuse", fdinfo_of(5));

    const ServerScan scan = scan_fuse_servers(proc.root(), 700);
    EXPECT_EQ(scan.processes, 6) << "all but ourselves";
    EXPECT_EQ(scan.fds, 9);
    EXPECT_EQ(scan.evidence.dev_fuse_files, 4) << "100 (two), 200, 300; 500's went away";
    EXPECT_EQ(scan.evidence.with_connection, 3);
    ASSERT_EQ(scan.servers.size(), 2u);
    const FuseServer& a = scan.servers.at(100);
    EXPECT_EQ(a.pid, 100);
    EXPECT_EQ(a.comm, "fh_testfs");
    EXPECT_EQ(a.connections, (std::set<dev_t>{::makedev(0, 946)}));
    EXPECT_EQ(a.fds, (std::map<int, dev_t>{{3, ::makedev(0, 946)}, {7, ::makedev(0, 946)}}));
    const FuseServer& b = scan.servers.at(200);
    EXPECT_EQ(b.comm, "bindfs");
    EXPECT_EQ(b.connections, (std::set<dev_t>{::makedev(0, 948)}));

    EXPECT_TRUE(still_serves(proc.root(), a));
    // The pid was reused by a process that holds another connection's file
    // at that fd number, or none.
    proc.set_fdinfo(100, 3, fdinfo_of(1));
    EXPECT_TRUE(still_serves(proc.root(), a)) << "fd 7 still names 946";
    proc.set_fdinfo(100, 7, slurp(kFdinfo + "dev-fuse-unattached.fdinfo"));
    EXPECT_FALSE(still_serves(proc.root(), a));
    FuseServer gone = a;
    gone.pid = 999;
    EXPECT_FALSE(still_serves(proc.root(), gone));
}

TEST(ServerScan, AMissingProcRootFindsNothing) {
    const ServerScan scan = scan_fuse_servers("/nonexistent/proc", 1);
    EXPECT_EQ(scan.processes, 0);
    EXPECT_TRUE(scan.servers.empty());
}

// A child that sleeps until killed (SIGKILL from the test or, should the
// test die, from its parent's death).
class Child {
public:
    Child() {
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;) ::pause();
        }
    }
    ~Child() { kill(); }
    int pid() const { return pid_; }
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    int pid_ = -1;
};

// A libuv loop driven by the test one iteration at a time.
class Loop {
public:
    Loop() { uv_loop_init(&loop_); }
    ~Loop() {
        uv_run(&loop_, UV_RUN_DEFAULT);  // finish closing
        uv_loop_close(&loop_);
    }
    uv_loop_t* get() { return &loop_; }
    // Runs the loop until `cond` or `timeout`; returns cond().
    bool run_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 5000ms) {
        const auto end = std::chrono::steady_clock::now() + timeout;
        while (!cond() && std::chrono::steady_clock::now() < end) {
            uv_run(&loop_, UV_RUN_NOWAIT);
            std::this_thread::sleep_for(1ms);
        }
        return cond();
    }

private:
    uv_loop_t loop_{};
};

FuseConnectionInfo connection(std::uint32_t id, std::vector<std::string> targets = {}) {
    FuseConnectionInfo c;
    c.device = connection_device(id);
    c.fstype = "fuse.fh_testfs";
    c.sources = {"/runtime/ds" + std::to_string(id) + "/fuse"};
    c.targets = std::move(targets);
    c.liveness = Liveness::Alive;
    return c;
}

// What the watch reported, in order.
struct Recorder {
    std::vector<ServerDeath> deaths;
    std::vector<ServerScan> scans;
    std::vector<std::vector<dev_t>> unwatched;  // each on_unwatched_death call
};

// Returns a watch over `proc` and `ctl` that records everything it reports
// in `rec` (recording the unwatched deaths changes nothing the watch does:
// it marks them dead whether or not anyone is told).
std::unique_ptr<DeathWatch> make_watch(Loop& loop, const FakeProc& proc, const FakeFusectl& ctl, Recorder& rec) {
    DeathWatchSettings s;
    s.proc_root = proc.root();
    s.fusectl_dir = ctl.dir();
    s.self_pid = ::getpid();
    return std::make_unique<DeathWatch>(
        loop.get(), s, [&rec](const ServerDeath& d) { rec.deaths.push_back(d); },
        [&rec](const ServerScan& scan, std::chrono::microseconds) { rec.scans.push_back(scan); },
        [&rec](const std::vector<dev_t>& c) { rec.unwatched.push_back(c); });
}

TEST(DeathWatch, TheLastServersExitIsReportedWithItsPidCommAndMounts) {
    Child daemon, helper;
    FakeProc proc;
    FakeFusectl ctl;
    // The daemon serves 41 and 42; a helper it forked also holds 42.
    proc.add_fd(daemon.pid(), 3, "/dev/fuse", fdinfo_of(41));
    proc.add_fd(daemon.pid(), 4, "/dev/fuse", fdinfo_of(42));
    proc.set_comm(daemon.pid(), "juicefs");
    proc.add_fd(helper.pid(), 3, "/dev/fuse", fdinfo_of(42));
    proc.set_comm(helper.pid(), "juicefs-helper");
    ctl.set(41, false);
    ctl.set(42, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(41, {"/k/pods/a/v"}), connection(42)});
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 2; }));
    EXPECT_EQ(watch->connections_watched(), 2u);
    EXPECT_EQ(rec.scans.size(), 1u);
    EXPECT_FALSE(watch->scanning());

    // The kernel aborts 41 when the daemon's files close; 42 lives on in the helper.
    ctl.set(41, true);
    daemon.kill();
    ASSERT_TRUE(loop.run_until([&] { return !rec.deaths.empty(); }));
    ASSERT_EQ(rec.deaths.size(), 1u);
    const ServerDeath& d = rec.deaths[0];
    EXPECT_EQ(d.connection, connection_device(41));
    EXPECT_EQ(d.comm, "juicefs");
    EXPECT_EQ(d.fstype, "fuse.fh_testfs");
    EXPECT_EQ(d.sources, (std::vector<std::string>{"/runtime/ds41/fuse"}));
    EXPECT_EQ(d.targets, (std::vector<std::string>{"/k/pods/a/v"}));
    EXPECT_GE(d.detection_latency_us, 0);
    EXPECT_LE(d.woke, Clock::now());
    EXPECT_LE(d.outage_start, std::chrono::system_clock::now());
    EXPECT_EQ(watch->servers_watched(), 1u);

    // The helper goes too: now 42 has lost its last server.
    ctl.set(42, true);
    const int helper_pid = helper.pid();
    helper.kill();
    ASSERT_TRUE(loop.run_until([&] { return rec.deaths.size() == 2; }));
    EXPECT_EQ(rec.deaths[1].connection, connection_device(42));
    EXPECT_EQ(rec.deaths[1].pid, helper_pid);
    EXPECT_EQ(rec.deaths[1].comm, "juicefs-helper");
    EXPECT_EQ(watch->servers_watched(), 0u);
    EXPECT_EQ(rec.scans.size(), 1u) << "deaths need no walk";
}

TEST(DeathWatch, AnExitThatLeavesTheConnectionAliveLooksForTheOtherHolder) {
    Child daemon, receiver;
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(daemon.pid(), 3, "/dev/fuse", fdinfo_of(43));
    proc.set_comm(daemon.pid(), "old");
    ctl.set(43, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(43)});
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 1; }));

    // The file was handed over a unix socket to a process the walk had not
    // seen (a smooth upgrade); the old daemon exits, the connection lives.
    proc.add_fd(receiver.pid(), 5, "/dev/fuse", fdinfo_of(43));
    proc.set_comm(receiver.pid(), "new");
    proc.remove(daemon.pid());
    daemon.kill();
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 2 && watch->servers_watched() == 1; }));
    EXPECT_TRUE(rec.deaths.empty());
    // The receiver is watched now: its death is the connection's.
    ctl.set(43, true);
    const int receiver_pid = receiver.pid();
    receiver.kill();
    ASSERT_TRUE(loop.run_until([&] { return !rec.deaths.empty(); }));
    EXPECT_EQ(rec.deaths[0].pid, receiver_pid);
    EXPECT_EQ(rec.deaths[0].comm, "new");
}

TEST(DeathWatch, AServerGoneBeforeItsPidfdWasOpenedIsReportedToo) {
    FakeProc proc;
    FakeFusectl ctl;
    int gone_pid = 0;
    {
        Child c;
        gone_pid = c.pid();
    }  // killed and reaped: the walk lists a pid that no longer exists
    proc.add_fd(gone_pid, 3, "/dev/fuse", fdinfo_of(44));
    proc.set_comm(gone_pid, "crashed");
    ctl.set(44, true);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(44)});
    ASSERT_TRUE(loop.run_until([&] { return !rec.deaths.empty(); }));
    EXPECT_EQ(rec.deaths[0].pid, gone_pid);
    EXPECT_EQ(rec.deaths[0].comm, "crashed");
    EXPECT_EQ(watch->servers_watched(), 0u);
}

// The server died after the reconcile that reported its connection alive
// and before the walk: no process holds its /dev/fuse file any more, and
// fusectl says aborted. The walk says so (the engine must check its
// targets: a kill changes no mount), once; a connection nobody visible
// serves that is alive is not reported, nor one the engine knows is dead.
TEST(DeathWatch, AConnectionThatDiedBeforeTheWalkIsReportedUnwatched) {
    FakeProc proc;
    FakeFusectl ctl;
    ctl.set(51, true);   // died before the walk
    ctl.set(52, false);  // alive, served by a process we cannot see
    ctl.set(53, true);   // dead, and the engine knows it
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    FuseConnectionInfo known_dead = connection(53);
    known_dead.liveness = Liveness::Dead;
    watch->set_connections({connection(51), connection(52), known_dead});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 1 && !watch->scanning(); }));
    ASSERT_EQ(rec.unwatched.size(), 1u);
    EXPECT_EQ(rec.unwatched[0], std::vector<dev_t>{connection_device(51)});
    EXPECT_TRUE(rec.deaths.empty()) << "no server, no pid: not a server's death";
    // The same connections reported again (the reconcile it asked for has
    // not run yet): no second report, no walk.
    watch->set_connections({connection(51), connection(52), known_dead});
    loop.run_until([] { return false; }, 50ms);
    EXPECT_EQ(rec.unwatched.size(), 1u);
    EXPECT_EQ(rec.scans.size(), 1u);
}

// Deaths of one source's connections in a crash loop: each is reported to
// the engine, but its log line only while the shared limiter admits it
// (the daemon limits "FUSE server died" lines with the same one).
TEST(DeathWatch, UnwatchedDeathLinesAreLimitedPerSource) {
    FakeProc proc;
    FakeFusectl ctl;
    Loop loop;
    Recorder rec;
    RepeatLimiter limiter(1, std::chrono::seconds(60));
    DeathWatchSettings s;
    s.proc_root = proc.root();
    s.fusectl_dir = ctl.dir();
    s.self_pid = ::getpid();
    s.death_line_limiter = &limiter;
    DeathWatch watch(
        loop.get(), s, [&rec](const ServerDeath& d) { rec.deaths.push_back(d); },
        [&rec](const ServerScan& scan, std::chrono::microseconds) { rec.scans.push_back(scan); },
        [&rec](const std::vector<dev_t>& c) { rec.unwatched.push_back(c); });
    // Three generations at one source, each dead before a walk saw its server.
    for (std::uint32_t id : {71u, 72u, 73u}) {
        ctl.set(id, true);
        FuseConnectionInfo c = connection(id);
        c.sources = {"/runtime/ds/fuse"};
        const std::size_t scans = rec.scans.size();
        watch.set_connections({c});
        ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == scans + 1 && !watch.scanning(); }));
    }
    ASSERT_EQ(rec.unwatched.size(), 3u) << "a death whose line was held back was not reported to the engine";
    const RepeatLimiter::Suppressed held = limiter.take_suppressed(RepeatLimiter::Clock::now());
    EXPECT_EQ(held.lines, 2u);
    EXPECT_EQ(held.by_key.count(death_line_key("/runtime/ds/fuse")), 1u);
}

// A server killed while the walk runs: the walk meets it with its files
// already closed (no server) but its connection not yet aborted; the
// connection is read again shortly after the walk and reported then (found
// by the ASan build: fault.PathAttack.* killed fh_testfs right after
// fuse-healerd got ready, and its death waited for the safety reconcile).
TEST(DeathWatch, AConnectionThatDiesWhileTheWalkRunsIsReportedUnwatchedSoonAfter) {
    FakeProc proc;
    FakeFusectl ctl;
    ctl.set(61, false);  // alive at the walk, no server visible
    ctl.set(62, false);  // alive, served by a process we cannot see
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(61), connection(62)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 1 && !watch->scanning(); }));
    EXPECT_TRUE(rec.unwatched.empty());
    ctl.set(61, true);  // the kernel aborts it now
    ASSERT_TRUE(loop.run_until([&] { return !rec.unwatched.empty(); }, 2000ms));
    EXPECT_EQ(rec.unwatched[0], std::vector<dev_t>{connection_device(61)});
    EXPECT_TRUE(rec.deaths.empty()) << "no server, no pid: not a server's death";
    // Read once: a connection that stays alive is left to the reconciles,
    // and the dead one is not reported twice.
    loop.run_until([] { return false; }, 300ms);
    EXPECT_EQ(rec.unwatched.size(), 1u);
    EXPECT_EQ(rec.scans.size(), 1u);
}

TEST(DeathWatch, NoReportForCleanUnmountsOrConnectionsKnownDead) {
    Child clean, known;
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(clean.pid(), 3, "/dev/fuse", fdinfo_of(45));
    proc.add_fd(known.pid(), 3, "/dev/fuse", fdinfo_of(46));
    ctl.set(45, false);
    ctl.set(46, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    FuseConnectionInfo dead = connection(46);
    watch->set_connections({connection(45), dead});
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 2; }));
    // 45 unmounted cleanly before its daemon exited: no fusectl dir left.
    ctl.remove(45);
    clean.kill();
    // 46 was aborted earlier and the engine knows it dead.
    dead.liveness = Liveness::Dead;
    watch->set_connections({connection(45), dead});
    ctl.set(46, true);
    known.kill();
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 0; }));
    EXPECT_TRUE(rec.deaths.empty());
}

// A walk can meet a server while it exits: its files are already closed
// (the kernel aborts the connection a little later, then the pidfd fires).
// It must stay watched, or that death is lost.
TEST(DeathWatch, AServerAWalkNoLongerSeesStaysWatchedUntilItExits) {
    Child a, b;
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(a.pid(), 3, "/dev/fuse", fdinfo_of(50));
    proc.add_fd(b.pid(), 3, "/dev/fuse", fdinfo_of(51));
    ctl.set(50, false);
    ctl.set(51, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(50)});
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 1 && !watch->scanning(); }));
    // a's files are gone from /proc, a still runs; a new connection makes a walk.
    proc.remove(a.pid());
    watch->set_connections({connection(50), connection(51)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 2 && !watch->scanning(); }));
    EXPECT_EQ(watch->servers_watched(), 2u) << "a is still watched";
    ctl.set(50, true);
    const int a_pid = a.pid();
    a.kill();
    ASSERT_TRUE(loop.run_until([&] { return !rec.deaths.empty(); }));
    EXPECT_EQ(rec.deaths[0].pid, a_pid);
    EXPECT_EQ(rec.deaths[0].connection, connection_device(50));
}

// Two holders of one connection exit together: one report, and none where
// the map still counts a holder that no longer holds the file.
TEST(DeathWatch, OneReportPerDeathWhateverTheMapSays) {
    Child a, b;
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(a.pid(), 3, "/dev/fuse", fdinfo_of(52));
    proc.add_fd(b.pid(), 3, "/dev/fuse", fdinfo_of(52));
    ctl.set(52, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(52)});
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 2; }));
    ctl.set(52, true);  // b had closed its copy; a's exit aborts the connection
    const int a_pid = a.pid();
    a.kill();
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 1; }));
    ASSERT_EQ(rec.deaths.size(), 1u) << "reported although the map still counted b";
    EXPECT_EQ(rec.deaths[0].pid, a_pid);
    b.kill();
    ASSERT_TRUE(loop.run_until([&] { return watch->servers_watched() == 0; }));
    EXPECT_EQ(rec.deaths.size(), 1u) << "not twice";
}

TEST(DeathWatch, ALaterWalkLooksAtNewProcessesFirst) {
    Child old_server, restarted, late, bystanders[3];
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(old_server.pid(), 3, "/dev/fuse", fdinfo_of(53));
    for (const Child& b : bystanders) proc.add_fd(b.pid(), 0, "/dev/null", "pos:\t0\n");
    ctl.set(53, false);
    ctl.set(54, false);
    ctl.set(55, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(53)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 1 && !watch->scanning(); }));
    EXPECT_EQ(rec.scans[0].processes, 4) << "the first walk looks at every process";
    // A daemon restarted as a new process: found among the new ones alone.
    proc.add_fd(restarted.pid(), 3, "/dev/fuse", fdinfo_of(54));
    watch->set_connections({connection(53), connection(54)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 2 && !watch->scanning(); }));
    EXPECT_EQ(rec.scans[1].processes, 1) << "only the new process was looked at";
    EXPECT_EQ(watch->servers_watched(), 2u);
    // A new connection served by an old process (a bystander mounted
    // another filesystem): the new ones first, then the others.
    proc.add_fd(bystanders[1].pid(), 4, "/dev/fuse", fdinfo_of(55));
    proc.add_fd(late.pid(), 0, "/dev/null", "pos:\t0\n");
    watch->set_connections({connection(53), connection(54), connection(55)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 3 && !watch->scanning(); }));
    EXPECT_EQ(rec.scans[2].processes, 6) << "1 new, then the 5 known";
    EXPECT_TRUE(rec.scans[2].servers.count(bystanders[1].pid()));
    EXPECT_EQ(watch->servers_watched(), 3u);
}

// A server listed by the walk that cannot be watched and whose connection
// lives on (here a pid that does not exist) must not make walks follow
// each other.
TEST(DeathWatch, NoWalkStormForAServerThatCannotBeWatched) {
    FakeProc proc;
    FakeFusectl ctl;
    int gone_pid = 0;
    {
        Child c;
        gone_pid = c.pid();
    }
    proc.add_fd(gone_pid, 3, "/dev/fuse", fdinfo_of(56));
    ctl.set(56, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(56)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 1 && !watch->scanning(); }));
    loop.run_until([] { return false; }, 200ms);
    EXPECT_EQ(rec.scans.size(), 1u);
    EXPECT_TRUE(rec.deaths.empty());
}

TEST(DeathWatch, WalksOnlyForNewConnectionsAndDropsServersOfForgottenOnes) {
    Child a, b;
    FakeProc proc;
    FakeFusectl ctl;
    proc.add_fd(a.pid(), 3, "/dev/fuse", fdinfo_of(47));
    proc.add_fd(b.pid(), 3, "/dev/fuse", fdinfo_of(48));
    ctl.set(47, false);
    ctl.set(48, false);
    Loop loop;
    Recorder rec;
    auto watch = make_watch(loop, proc, ctl, rec);
    watch->set_connections({connection(47)});
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 1 && !watch->scanning(); }));
    EXPECT_EQ(watch->servers_watched(), 1u) << "b serves a connection nobody tracks";
    watch->set_connections({connection(47)});
    EXPECT_FALSE(watch->scanning()) << "nothing new: no walk";
    watch->set_connections({connection(47), connection(48)});
    EXPECT_TRUE(watch->scanning());
    ASSERT_TRUE(loop.run_until([&] { return rec.scans.size() == 2 && watch->servers_watched() == 2; }));
    watch->set_connections({connection(48)});  // 47's mounts are gone
    EXPECT_EQ(watch->servers_watched(), 1u);
    EXPECT_FALSE(watch->scanning());
    watch->close();
    EXPECT_EQ(watch->servers_watched(), 0u);
    watch->set_connections({connection(49)});
    EXPECT_FALSE(watch->scanning()) << "closed";
}

} // namespace
} // namespace fh
