// Integration tests of the test tooling itself (fh_testfs, fh_test_container,
// the harness), without fuse-healerd. They also document the kernel behaviour
// fuse-healer exists for: after a FUSE daemon dies and a supervisor restarts
// it at the same source path, every bind copy of the old mount stays dead.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "harness.h"

using namespace fh::test;

namespace fh::test {
void PrintTo(FuseKind k, std::ostream* os) { *os << to_string(k); }
}  // namespace fh::test

namespace {

bool is_dead(const ContainerEvent& e) {
    return e.is_error() && (e.error() == "ENOTCONN" || e.error() == "ECONNABORTED");
}

auto has_contents(std::string want) {
    return [want](const ContainerEvent& e) { return e.ok() && e.contents() == want; };
}

void print_sequence(const std::string& name, Container& c) {
    std::cout << "  " << name << " states:";
    for (const auto& s : c.state_sequence()) std::cout << " [" << s << "]";
    std::cout << "\n";
}

const std::vector<std::string> kTopLevel = {"data", "generation", "sub"};

// True when pid has exited but is not reaped yet.
bool is_zombie(pid_t pid) {
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return false;
    auto paren = stat->rfind(')');
    return paren != std::string::npos && stat->compare(paren, 3, ") Z") == 0;
}

}  // namespace

class HarnessSelftest : public IntegrationTest {};

// (a) The bug: kill -9 of the FUSE daemon leaves every copy ENOTCONN, and a
// supervisor restart at the same source path heals the source only.
TEST_F(HarnessSelftest, SupervisorRestartLeavesPodAndContainerCopiesStale) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(1);
    EXPECT_EQ(fuse.fstype(), "fuse.fh_testfs");
    EXPECT_EQ(read_file(source + "/generation"), "1\n");
    EXPECT_EQ(read_file(source + "/data/hello"), "hello from generation 1\n");
    EXPECT_EQ(read_file(source + "/sub/inner"), "inner 1\n");

    const std::string pod = sb.make_pod_volume("pod-a", "vol1", "handle-1");
    csi_bind(source, "", pod, false);
    EXPECT_EQ(read_file(pod + "/generation"), "1\n");
    auto vol_data = read_file(pod + "/../vol_data.json");
    ASSERT_TRUE(vol_data);
    EXPECT_NE(vol_data->find("\"podUID\":\"pod-a\""), std::string::npos) << *vol_data;

    Container slave(sb), priv(sb);
    slave.start(pod, ContainerPropagation::Slave, "generation");
    priv.start(pod, ContainerPropagation::Private, "generation");

    for (Container* c : {&slave, &priv}) {
        auto e = c->wait_for_state(has_contents("1\n"));
        ASSERT_TRUE(e) << "container " << c->pid() << " never read generation 1";
        EXPECT_EQ(e->listing(), kTopLevel);
        // Like a real runtime: only the tmpfs root and /data.
        auto mounts = c->mounts();
        ASSERT_EQ(mounts.size(), 2u) << ::testing::PrintToString(c->mountinfo());
        EXPECT_EQ(mounts[0].mountpoint, "/");
        EXPECT_EQ(mounts[1].mountpoint, "/data");
        EXPECT_EQ(mounts[1].fstype, "fuse.fh_testfs");
        EXPECT_EQ(mounts[1].device, fuse.mount().device);
    }
    EXPECT_NE(slave.mounts()[1].master_group(), 0) << slave.mounts()[1].raw;
    EXPECT_EQ(priv.mounts()[1].master_group(), 0) << priv.mounts()[1].raw;
    EXPECT_EQ(priv.mounts()[1].shared_group(), 0) << priv.mounts()[1].raw;

    const std::string old_device = fuse.mount().device;
    const std::int64_t killed_at = monotonic_usec();
    fuse.kill9();
    for (Container* c : {&slave, &priv}) {
        auto e = c->wait_for_state(is_dead);
        ASSERT_TRUE(e) << "container " << c->pid() << " still sees " << c->last()->state;
        std::cout << "  container " << c->pid() << " saw " << e->state << " " << (e->usec - killed_at)
                  << " us after kill -9\n";
    }
    int host_err = read_errno(source + "/generation");
    EXPECT_TRUE(host_err == ENOTCONN || host_err == ECONNABORTED) << errno_name(host_err);
    EXPECT_EQ(errno_name(read_errno(pod + "/generation")), errno_name(host_err));

    fuse.supervisor_restart(2);
    EXPECT_NE(fuse.mount().device, old_device);
    EXPECT_EQ(read_file(source + "/generation"), "2\n");
    // The pod path is a bind of the old superblock: still dead.
    int pod_err = read_errno(pod + "/generation");
    EXPECT_TRUE(pod_err == ENOTCONN || pod_err == ECONNABORTED) << errno_name(pod_err);
    auto pod_stack = stack_at(pod);
    ASSERT_EQ(pod_stack.size(), 1u);
    EXPECT_EQ(pod_stack[0].first, old_device);

    // Give the probers plenty of rounds: they stay dead (the bug fuse-healer fixes).
    std::this_thread::sleep_for(200ms);
    for (Container* c : {&slave, &priv}) {
        auto e = c->last();
        ASSERT_TRUE(e);
        EXPECT_TRUE(is_dead(*e)) << e->state;
        EXPECT_FALSE(c->wait_for_state(has_contents("2\n"), 100ms)) << "container healed by itself?";
        EXPECT_EQ(c->mounts()[1].device, old_device);
    }
    print_sequence("slave", slave);
    print_sequence("private", priv);
    EXPECT_EQ(slave.stop(), 0);
    EXPECT_EQ(priv.stop(), 0);
}

// What a "stack" heal relies on: a new bind on top of the stale pod mount
// propagates into a slave (HostToContainer) container, not a private one.
TEST_F(HarnessSelftest, BindOnTopOfStalePodPathReachesSlaveContainerOnly) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(1);
    const std::string pod = sb.make_pod_volume("pod-b", "vol1");
    csi_bind(source, "", pod, false);
    Container slave(sb), priv(sb);
    slave.start(pod, ContainerPropagation::Slave, "generation");
    priv.start(pod, ContainerPropagation::Private, "generation");
    ASSERT_TRUE(slave.wait_for_state(has_contents("1\n")));
    ASSERT_TRUE(priv.wait_for_state(has_contents("1\n")));

    fuse.supervisor_restart(2);
    ASSERT_TRUE(slave.wait_for_state(is_dead));
    ASSERT_TRUE(priv.wait_for_state(is_dead));

    csi_bind(source, "", pod, false);  // stacked on the stale mount
    EXPECT_EQ(read_file(pod + "/generation"), "2\n");
    auto stack = stack_at(pod);
    ASSERT_EQ(stack.size(), 2u);
    EXPECT_EQ(stack[1].first, fuse.mount().device);

    auto healed = slave.wait_for_state(has_contents("2\n"));
    EXPECT_TRUE(healed) << slave.last()->state;
    EXPECT_EQ(count_mounts_at("/data", slave.mountinfo_path()), 2);
    EXPECT_EQ(count_mounts_at("/data", priv.mountinfo_path()), 1);
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(is_dead(*priv.last())) << priv.last()->state;
    print_sequence("slave", slave);
    print_sequence("private", priv);
}

// Subpath and read-only binds, and the mountinfo helpers.
TEST_F(HarnessSelftest, SubpathAndReadOnlyBinds) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(7);
    const std::string pod = sb.make_pod_volume("pod-c", "vol1");
    csi_bind(source, "", pod, true);
    const std::string sub = sb.pod_subpath_path("pod-c", "vol1", "app", 0);
    csi_bind(source, "sub", sub, false);
    EXPECT_EQ(sub, sb.kubelet() + "/pods/pod-c/volume-subpaths/vol1/app/0");

    EXPECT_EQ(read_file(sub + "/inner"), "inner 7\n");
    auto top = topmost_at(pod);
    ASSERT_TRUE(top);
    EXPECT_TRUE(top->read_only()) << top->raw;
    auto sub_top = topmost_at(sub);
    ASSERT_TRUE(sub_top);
    EXPECT_EQ(sub_top->root, "/sub");
    EXPECT_EQ(sub_top->fstype, "fuse.fh_testfs");
    EXPECT_EQ(count_mounts_under(sb.kubelet()), 2);
    EXPECT_EQ(count_mounts_under(sb.kubelet() + "/pods/pod-c/volume-subpaths"), 1);
    EXPECT_EQ(count_mounts_at(pod), 1);

    Container c(sb);
    c.start(sub, ContainerPropagation::Slave, "inner");
    auto e = c.wait_for_state(has_contents("inner 7\n"));
    ASSERT_TRUE(e) << (c.last() ? c.last()->state : "no state");
    EXPECT_EQ(e->listing(), std::vector<std::string>{"inner"});
}

// A hung daemon (SIGSTOP) blocks the prober; SIGCONT resumes it. A container
// blocked in a request can only exit once the daemon answers (or dies).
TEST_F(HarnessSelftest, StoppedDaemonHangsProbesUntilContinued) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(1);
    const std::string pod = sb.make_pod_volume("pod-d", "vol1");
    csi_bind(source, "", pod, false);
    Container c(sb);
    c.start(pod, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(c.wait_for_state(has_contents("1\n")));
    const std::string dev = fuse.mount().device;
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(dev) == 0; }, 2000ms));
    size_t before = c.events().size();

    fuse.stop();
    EXPECT_TRUE(wait_until([&] { return fusectl_waiting(dev) > 0; }, 2000ms)) << "the prober never blocked";
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(c.events().size(), before) << c.last()->state;
    fuse.cont();
    EXPECT_TRUE(wait_until([&] { return fusectl_waiting(dev) == 0; }, 2000ms));
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(c.events().size(), before);
    EXPECT_TRUE(c.last()->ok());

    fuse.stop();
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(dev) > 0; }, 2000ms));
    // Whether the container can exit now depends on whether a daemon thread
    // had read the request before it stopped (then the wait is uninterruptible).
    int status = c.stop(200ms);
    std::cout << "  container stop while the daemon is stopped: "
              << (status == -1 ? "stuck (request already read by the daemon)" : "exited " + std::to_string(exit_code_of(status)))
              << "\n";
    fuse.cont();
    if (status == -1) {
        EXPECT_TRUE(c.running());
        status = c.stop();
    }
    EXPECT_NE(status, -1);
    EXPECT_FALSE(c.running());
}

// fusectl is mounted in the test namespace; aborting a hung daemon's
// connection makes its mounts fail with ECONNABORTED/ENOTCONN at once.
TEST_F(HarnessSelftest, FusectlAbortOfHungDaemon) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(1);
    const std::string dir = fusectl_dir(fuse.mount().device);
    struct stat st{};
    ASSERT_EQ(stat(dir.c_str(), &st), 0) << dir << " (is fusectl mounted in this namespace?)";
    // Right after the mount appears, INIT may still be in flight.
    EXPECT_TRUE(wait_until([&] { return fusectl_waiting(fuse.mount().device) == 0; }, 2000ms));

    Container c(sb);
    c.start(source, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(c.wait_for_state(has_contents("1\n")));
    fuse.stop();
    EXPECT_TRUE(wait_until([&] { return fusectl_waiting(fuse.mount().device) > 0; }, 2000ms));
    std::cout << "  waiting requests while stopped: " << fusectl_waiting(fuse.mount().device) << "\n";
    EXPECT_EQ(fusectl_abort(fuse.mount().device), 0);
    auto dead = c.wait_for_state(is_dead);
    EXPECT_TRUE(dead) << c.last()->state;
    int host_err = read_errno(source + "/generation");
    EXPECT_TRUE(host_err == ENOTCONN || host_err == ECONNABORTED) << errno_name(host_err);
    print_sequence("container", c);
    std::cout << "  host read after abort: " << errno_name(host_err) << "\n";
    fuse.cont();
}

// Daemons other than fh_testfs: bindfs and squashfuse serve the same tree.
class OtherFuseDaemons : public IntegrationTest, public ::testing::WithParamInterface<FuseKind> {};

TEST_P(OtherFuseDaemons, ServeTheGenerationTreeAndGoStaleOnKill) {
    const FuseKind kind = GetParam();
    const char* tool = kind == FuseKind::BindFs ? "/usr/bin/bindfs" : "/usr/bin/squashfuse";
    if (access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed";
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source, kind);
    fuse.start(1);
    std::cout << "  " << to_string(kind) << ": fstype " << fuse.fstype() << ", source \"" << fuse.mount().source
              << "\", vfs options " << fuse.mount().vfs_options << ", fs options " << fuse.mount().fs_options
              << "\n";
    EXPECT_EQ(fuse.fstype(), kind == FuseKind::BindFs ? "fuse" : "fuse.squashfuse");
    EXPECT_EQ(read_file(source + "/generation"), "1\n");
    EXPECT_EQ(read_file(source + "/data/hello"), "hello from generation 1\n");
    EXPECT_EQ(read_file(source + "/sub/inner"), "inner 1\n");

    const std::string pod = sb.make_pod_volume("pod-e", "vol1");
    csi_bind(source, "", pod, false);
    Container c(sb);
    c.start(pod, ContainerPropagation::Slave, "data/hello");
    ASSERT_TRUE(c.wait_for_state(has_contents("hello from generation 1\n")))
        << (c.last() ? c.last()->state : "no state") << c.log() << "\nwaiting requests "
        << fusectl_waiting(fuse.mount().device) << "\n"
        << describe_process(c.pid()) << describe_process(fuse.pid());

    fuse.kill9();
    EXPECT_TRUE(c.wait_for_state(is_dead)) << c.last()->state;
    fuse.supervisor_restart(2);
    EXPECT_EQ(read_file(source + "/generation"), "2\n");
    EXPECT_EQ(fuse.fstype(), kind == FuseKind::BindFs ? "fuse" : "fuse.squashfuse");
    print_sequence(to_string(kind), c);
}

INSTANTIATE_TEST_SUITE_P(Kinds, OtherFuseDaemons, ::testing::Values(FuseKind::BindFs, FuseKind::SquashFuse),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// fh_test_container exits 0 on SIGTERM and on stdin EOF, and its events are
// in order with monotonic timestamps.
TEST_F(HarnessSelftest, ContainerExitsOnSigtermAndEof) {
    Sandbox sb;
    const std::string source = sb.runtime() + "/vol1/fuse";
    FuseDaemon fuse(sb, source);
    fuse.start(3);
    Container a(sb), b(sb);
    a.start(source, ContainerPropagation::Private, "generation");
    b.start(source, ContainerPropagation::Private);
    ASSERT_TRUE(a.wait_for_state(has_contents("3\n")));
    auto eb = b.wait_for_state([](const ContainerEvent& e) { return e.ok(); });
    ASSERT_TRUE(eb);
    EXPECT_FALSE(eb->contents());
    EXPECT_EQ(eb->listing(), kTopLevel);
    std::int64_t now = monotonic_usec();
    EXPECT_LE(eb->usec, now);
    EXPECT_GT(eb->usec, now - 10'000'000);

    ASSERT_EQ(kill(a.pid(), SIGTERM), 0);
    EXPECT_TRUE(wait_until([&] { return is_zombie(a.pid()); }, 2000ms)) << "SIGTERM did not end it";
    EXPECT_EQ(exit_code_of(a.stop()), 0);
    EXPECT_EQ(exit_code_of(b.stop()), 0);
}

// fh_testfs SIGTERMed at once after start() (as soon as its mount shows):
// it unmounts and exits 0, every time. libfuse's own handlers, installed
// after the mount, let 34 of 200 such SIGTERMs kill it with its mount left
// behind, and under ThreadSanitizer lost 1 in 100-200.
TEST_F(HarnessSelftest, TestFsTerminatedRightAfterItsStartUnmounts) {
    Sandbox sb;
    for (int i = 0; i < 30; ++i) {
        const std::string source = sb.runtime() + "/vol" + std::to_string(i) + "/fuse";
        FuseDaemon fuse(sb, source);
        fuse.start(1);
        ASSERT_EQ(fuse.terminate(), 0) << "start " << i << ": " << fuse.log();
        ASSERT_EQ(count_mounts_at(source), 0) << "start " << i << ": the mount was left behind";
    }
}

// (c) Nothing is left behind: mounts, directories, processes - even with a
// leaked daemon object and a container hung on a stopped daemon.
TEST_F(HarnessSelftest, SandboxCleanupLeavesNothingBehind) {
    const auto before = read_mountinfo_lines();
    std::string root;
    std::vector<pid_t> pids;
    {
        Sandbox sb;
        root = sb.root();
        EXPECT_EQ(count_mounts_at(root), 1);
        auto sandbox_mount = topmost_at(root);
        ASSERT_TRUE(sandbox_mount);
        EXPECT_NE(sandbox_mount->shared_group(), 0) << sandbox_mount->raw;
        struct stat st{};
        EXPECT_EQ(stat(sb.kubelet().c_str(), &st), 0);
        EXPECT_EQ(stat(sb.runtime().c_str(), &st), 0);

        FuseDaemon fuse(sb, sb.runtime() + "/vol1/fuse");
        fuse.start(1);
        // Static: the pointer keeps the lost object reachable, so that
        // LeakSanitizer (scripts/sanitize.sh) does not report the loss.
        static FuseDaemon* leaked = nullptr;
        leaked = new FuseDaemon(sb, sb.runtime() + "/vol2/fuse");
        leaked->start(1);
        const std::string pod1 = sb.make_pod_volume("pod-f", "vol1");
        const std::string pod2 = sb.make_pod_volume("pod-f", "vol2");
        csi_bind(fuse.source(), "", pod1, false);
        csi_bind(leaked->source(), "", pod2, false);
        Container c1(sb), c2(sb);
        c1.start(pod1, ContainerPropagation::Slave, "generation");
        c2.start(pod2, ContainerPropagation::Private, "generation");
        ASSERT_TRUE(c1.wait_for_state(has_contents("1\n")));
        ASSERT_TRUE(c2.wait_for_state(has_contents("1\n")));
        leaked->stop();  // c2's prober now hangs in a FUSE request
        pids = {fuse.pid(), leaked->pid(), c1.pid(), c2.pid()};
        EXPECT_GT(count_mounts_under(root), 4);
        // `leaked` is never deleted: the Sandbox must kill it (the object's
        // memory is deliberately lost; its destructor would reap it).
    }
    EXPECT_EQ(read_mountinfo_lines(), before);
    EXPECT_EQ(count_mounts_under(root), 0);
    struct stat st{};
    EXPECT_NE(stat(root.c_str(), &st), 0) << root << " still exists";
    for (pid_t p : pids) EXPECT_NE(kill(p, 0), 0) << "pid " << p << " survived";
}

// The fuse-healerd wrapper: config text (the daemon itself may not be built).
TEST_F(HarnessSelftest, DaemonConfigAndAvailability) {
    Sandbox sb;
    Daemon d(sb);
    std::string cfg = d.config_text("[heal]\nstrategy = \"replace\"");
    EXPECT_NE(cfg.find("root_dir = \"" + sb.kubelet() + "\""), std::string::npos) << cfg;
    EXPECT_NE(cfg.find("dir = \"" + sb.state() + "\""), std::string::npos) << cfg;
    EXPECT_NE(cfg.find("level = \"debug\""), std::string::npos) << cfg;
    EXPECT_EQ(d.control_socket().rfind(sb.root() + "/control-", 0), 0u) << d.control_socket();
    EXPECT_NE(cfg.find("[control]\nsocket = \"" + d.control_socket() + "\""), std::string::npos) << cfg;
    EXPECT_EQ(d.config_text("[control]\nsocket = \"\"\n").find(d.control_socket()), std::string::npos)
        << "a test's own [control] table replaces the harness's";
    EXPECT_NE(cfg.find("[heal]\nstrategy = \"replace\"\n"), std::string::npos) << cfg;
    std::string why;
    bool available = Daemon::available(&why);
    std::cout << "  fuse-healerd: " << (available ? daemon_path() : why) << "\n";
    EXPECT_EQ(available, why.empty());

    // Exercise the process plumbing with a stand-in for the daemon.
    const std::string fake_bin = sb.runtime() + "/fake-healerd";
    write_file(fake_bin, "#!/bin/sh\necho \"fake daemon $*\" >&2\nexec sleep 30\n");
    ASSERT_EQ(chmod(fake_bin.c_str(), 0755), 0);
    ASSERT_TRUE(Daemon::available(nullptr, fake_bin));
    Daemon fake(sb, fake_bin);
    fake.start("[heal]\nnamespaces = true\n", {"--extra"});
    EXPECT_TRUE(fake.wait_for_log("fake daemon --config " + fake.config_path() + " --extra", 2000ms)) << fake.log();
    EXPECT_EQ(read_file(fake.config_path()), fake.config_text("[heal]\nnamespaces = true\n"));
    EXPECT_FALSE(fake.poll_exit());
    EXPECT_EQ(fake.terminate(), 128 + SIGTERM);
    EXPECT_FALSE(fake.running());
}

// sanitizer_report() finds the first line of each runtime's report, and
// nothing in an ordinary log.
TEST(HarnessSanitizerReport, FindsEachRuntimesReport) {
    const std::string log = "[2026-01-01 00:00:00.000] [info] fuse-healerd 0.1.0 starting\n";
    EXPECT_EQ(sanitizer_report(log), "");
    EXPECT_EQ(sanitizer_report(""), "");
    const std::vector<std::string> first_lines = {
        "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010",
        "==4242==ERROR: LeakSanitizer: detected memory leaks",
        "lib/core/duration.cpp:42:17: runtime error: signed integer overflow: 1 + 2147483647",
        "WARNING: ThreadSanitizer: data race (pid=4242)",
        "AddressSanitizer:DEADLYSIGNAL",
    };
    for (const auto& first : first_lines) {
        const std::string report = sanitizer_report(log + first + "\n    #0 0x1 in f a.cpp:1\nSUMMARY: x\n" + log);
        EXPECT_EQ(report.rfind(first, 0), 0u) << report;
        EXPECT_NE(report.find("SUMMARY: x"), std::string::npos) << report;
    }
}

// A report in the log of a process the sandbox ran (here written by hand)
// fails the test when the Sandbox goes, even if the test saw nothing.
TEST_F(HarnessSelftest, SandboxFailsTheTestOnASanitizerReportInALog) {
    EXPECT_NONFATAL_FAILURE(
        {
            Sandbox sb;
            write_file(sb.runtime() + "/fuse-healerd-1.log",
                       "[info] ready\n==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n");
        },
        "sanitizer report in");
}
