// fuse-healerd as a process: command line, exit codes, signals, reload,
// sd_notify, and the fallback paths of older kernels forced with
// --disable-kernel-feature.
#include "heal_fixture.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace fh::test {
namespace {

// Runs the daemon binary to completion; returns (exit code, output).
std::pair<int, std::string> run_daemon_cmd(Sandbox& sb, const std::vector<std::string>& args) {
    const std::string log = sb.runtime() + "/" + sb.unique("cmd") + ".log";
    std::vector<std::string> argv{daemon_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_t pid = spawn(argv, log);
    int status = 0;
    waitpid(pid, &status, 0);
    return {exit_code_of(status), read_file(log).value_or("")};
}

class DaemonCli : public DaemonTest {
protected:
    Sandbox sb;
};

TEST_F(DaemonCli, CheckConfigAndExitCodes) {
    const std::string good = sb.path("good.toml"), bad = sb.path("bad.toml");
    write_file(good, "[heal]\nstrategy = \"stack\"\n");
    write_file(bad, "[heal]\nstrategy = \"stack\"\nprobe_timeout = 5\n");
    auto [ok_code, ok_out] = run_daemon_cmd(sb, {"--check-config", "--config", good});
    EXPECT_EQ(ok_code, 0) << ok_out;
    EXPECT_NE(ok_out.find("config OK: " + good), std::string::npos) << ok_out;

    auto [bad_code, bad_out] = run_daemon_cmd(sb, {"--check-config", "--config", bad});
    EXPECT_EQ(bad_code, 78) << bad_out;
    EXPECT_NE(bad_out.find(bad + ":3:17:"), std::string::npos) << bad_out;

    auto [missing_code, missing_out] = run_daemon_cmd(sb, {"--check-config", "--config", sb.path("nope.toml")});
    EXPECT_EQ(missing_code, 78) << "an explicit --config that does not exist is an error: " << missing_out;

    EXPECT_EQ(run_daemon_cmd(sb, {"--no-such-flag"}).first, 64);
    EXPECT_EQ(run_daemon_cmd(sb, {"--log-level", "loud"}).first, 64);
    EXPECT_EQ(run_daemon_cmd(sb, {"--disable-kernel-feature", "warp"}).first, 64);
    auto [v_code, v_out] = run_daemon_cmd(sb, {"--version"});
    EXPECT_EQ(v_code, 0);
    EXPECT_EQ(v_out.rfind("fuse-healerd ", 0), 0u) << v_out;
}

// SIGHUP reloads; an invalid file is refused with file:line:column and the
// daemon keeps running on the old config; SIGTERM stops it cleanly, fast.
TEST_F(DaemonCli, ReloadKeepsTheOldConfigWhenTheNewOneIsInvalid) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    std::string cfg = read_file(d.config_path()).value();
    write_file(d.config_path(), cfg + "[heal]\nstratgy = \"stack\"\n");
    kill(d.pid(), SIGHUP);
    ASSERT_TRUE(d.wait_for_log("failed to reload the config, keeping the old one: " + d.config_path() + ":")) << d.log();
    EXPECT_NE(d.log().find("unknown key \"stratgy\""), std::string::npos) << d.log();
    EXPECT_FALSE(d.poll_exit().has_value());

    write_file(d.config_path(), cfg + "[heal]\nsafety_scan_interval = \"0s\"\n");
    kill(d.pid(), SIGHUP);
    ASSERT_TRUE(d.wait_for_log("config reloaded from " + d.config_path())) << d.log();

    const auto t0 = Clock::now();
    EXPECT_EQ(d.terminate(), 0) << d.log();
    EXPECT_LT(Clock::now() - t0, 1000ms);
    EXPECT_NE(d.log().find("received SIGTERM, stopping"), std::string::npos);
}

// [heal] restart_grace: the start-up line names it, and "0s" turns heals
// planned ahead of a death off (this kernel has statmount and fusectl).
TEST_F(DaemonCli, RestartGraceIsNamedAtStartUpAndZeroTurnsPlanningAheadOff) {
    {
        Daemon d{sb};
        d.start("[heal]\nrestart_grace = \"120ms\"\n");
        ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
        if (d.log().find("source check=mountinfo") != std::string::npos) GTEST_SKIP() << "no statmount here";
        if (d.log().find("fusectl=yes") == std::string::npos) GTEST_SKIP() << "no fusectl here";
        EXPECT_NE(d.log().find("source check=statmount (heals armed while a source is down, and planned ahead of a "
                               "death: restart_grace=120ms) mount tracking="),
                  std::string::npos)
            << d.log();
        EXPECT_EQ(d.terminate(), 0) << d.log();
    }
    Daemon d{sb};
    d.start("[heal]\nrestart_grace = \"0s\"\n");
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    EXPECT_NE(d.log().find("source check=statmount (heals armed while a source is down) mount tracking="),
              std::string::npos)
        << d.log();
    EXPECT_EQ(d.log().find("planned ahead"), std::string::npos) << d.log();
}

// A datagram socket standing in for systemd's notify socket.
class NotifySocket {
public:
    explicit NotifySocket(const std::string& path) : path_(path) {
        fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind notify socket");
    }
    ~NotifySocket() { close(fd_); }
    // Collects every message received so far.
    std::string drain() {
        char buf[4096];
        ssize_t n;
        while ((n = recv(fd_, buf, sizeof buf, 0)) > 0) got_ += std::string(buf, n) + "\n";
        return got_;
    }
    bool wait_for(const std::string& needle, std::chrono::milliseconds t = 3000ms) {
        return wait_until([&] { return drain().find(needle) != std::string::npos; }, t);
    }

private:
    std::string path_;
    int fd_ = -1;
    std::string got_;
};

TEST_F(DaemonCli, TellsSystemdReadyWatchdogStatusAndStopping) {
    NotifySocket sock(sb.path("notify.sock"));
    setenv("NOTIFY_SOCKET", sb.path("notify.sock").c_str(), 1);
    setenv("WATCHDOG_USEC", "100000", 1);  // 100 ms: pings expected every 50 ms
    Daemon d{sb};
    d.start();
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    ASSERT_TRUE(sock.wait_for("READY=1")) << d.log();
    ASSERT_TRUE(sock.wait_for("WATCHDOG=1")) << sock.drain();
    ASSERT_TRUE(sock.wait_for("STATUS=0 targets, 0 broken, 0 healed")) << sock.drain();
    const auto pings_before = [&] {
        std::string s = sock.drain();
        int n = 0;
        for (auto p = s.find("WATCHDOG=1"); p != std::string::npos; p = s.find("WATCHDOG=1", p + 1)) ++n;
        return n;
    };
    const int n0 = pings_before();
    std::this_thread::sleep_for(300ms);
    EXPECT_GE(pings_before() - n0, 3) << "the loop pings at half of WATCHDOG_USEC";
    EXPECT_EQ(d.terminate(), 0);
    EXPECT_TRUE(sock.wait_for("STOPPING=1")) << sock.drain();
}

// The paths of older kernels, forced on this one. Each variant heals a
// volume seen by a HostToContainer and a private container, and a subPath.
struct Variant {
    const char* name;
    std::vector<std::string> disabled;
    const char* strategy;         // as logged at start
    const char* detection;        // as logged at start
    bool private_container_heals; // false without open_tree (no clone can enter a namespace)
};

class KernelFallbacks : public DaemonTest, public ::testing::WithParamInterface<Variant> {};

TEST_P(KernelFallbacks, HealsThroughTheFallbackPath) {
    const Variant& v = GetParam();
    Sandbox sb;
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    const std::string sub = sb.pod_subpath_path("pod-1", "pvc-1", "app", 0);
    csi_bind(fuse.source(), "sub", sub, true);
    Container slave{sb}, priv{sb};
    slave.start(vol, ContainerPropagation::Slave, "generation");
    priv.start(vol, ContainerPropagation::Private, "generation");
    ASSERT_TRUE(container_reads(slave, "1\n"));
    ASSERT_TRUE(container_reads(priv, "1\n"));
    Daemon d{sb};
    std::vector<std::string> args;
    for (const auto& f : v.disabled) {
        args.push_back("--disable-kernel-feature");
        args.push_back(f);
    }
    d.start("", args);
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    EXPECT_NE(d.log().find(std::string("strategy=") + v.strategy + " death detection=" + v.detection),
              std::string::npos)
        << d.log();
    for (const auto& f : v.disabled) EXPECT_NE(d.log().find(f + "=no(disabled)"), std::string::npos) << d.log();
    const bool statmount = std::find(v.disabled.begin(), v.disabled.end(), "statmount") == v.disabled.end();
    EXPECT_NE(d.log().find(std::string("source check=") + (statmount ? "statmount" : "mountinfo")), std::string::npos)
        << d.log();
    // Heals planned ahead of a death ([heal] restart_grace, "50ms" by
    // default) need statmount and fusectl.
    const bool fusectl = std::find(v.disabled.begin(), v.disabled.end(), "fusectl") == v.disabled.end();
    EXPECT_EQ(d.log().find("planned ahead of a death: restart_grace=50ms)") != std::string::npos, statmount && fusectl)
        << d.log();
    // Mount tracking by fanotify needs statmount; this kernel has both.
    const bool fanotify =
        statmount && std::find(v.disabled.begin(), v.disabled.end(), "fanotify_mount") == v.disabled.end();
    EXPECT_NE(d.log().find(std::string(" mount tracking=") + (fanotify ? "fanotify (" : "mountinfo (")),
              std::string::npos)
        << d.log();
    ASSERT_TRUE(daemon_learned(sb, vol) && daemon_learned(sb, sub)) << d.log();

    for (int gen = 2; gen <= 4; ++gen) {
        fuse.kill9();
        ASSERT_TRUE(container_broken(slave));
        fuse.supervisor_restart(gen);
        const std::string want = std::to_string(gen) + "\n";
        EXPECT_TRUE(host_reads(vol + "/generation", want)) << d.log();
        EXPECT_TRUE(host_reads(sub + "/inner", "inner " + want)) << d.log();
        EXPECT_TRUE(container_reads(slave, want)) << d.log();
        if (v.private_container_heals) {
            EXPECT_TRUE(container_reads(priv, want)) << d.log();
        }
        // Stacking leaves at most one dead layer under the live one; replace none.
        for (const std::string& t : {vol, sub}) {
            auto stack = stack_at(t);
            EXPECT_LE(stack.size(), std::string(v.strategy) == "stack" ? 2u : 1u) << t << "\n" << d.log();
            EXPECT_EQ(stack.back().first, fuse.mount().device) << t;
            auto top = topmost_at(t);
            ASSERT_TRUE(top) << t;
            EXPECT_TRUE(top->read_only()) << top->raw;
        }
        EXPECT_EQ(count_mounts_at(fuse.source()), 1) << "nothing is ever mounted on the source path";
        ASSERT_FALSE(HasFailure()) << "generation " << gen;
    }
    if (!v.private_container_heals) {
        EXPECT_TRUE(priv.last() && priv.last()->is_error());
    }
    for (Container* c : {&slave, &priv})
        EXPECT_EQ(bad_states(*c, {"1\n", "2\n", "3\n", "4\n"}), std::vector<std::string>{}) << c->pid();
    // Without open_tree the private copy cannot be reached: that is logged as
    // a warning at start, never as a failed heal.
    EXPECT_EQ(d.log().find("failed to heal"), std::string::npos) << d.log();
}

INSTANTIATE_TEST_SUITE_P(
    Variants, KernelFallbacks,
    ::testing::Values(Variant{"all_features", {}, "replace", "pidfd", true},
                      Variant{"no_fuse_fdinfo", {"fuse_fdinfo"}, "replace", "fusectl", true},
                      Variant{"no_fusectl", {"fusectl"}, "replace", "statx", true},
                      Variant{"no_openat2", {"openat2"}, "replace", "pidfd", true},
                      Variant{"no_statx_mnt_id", {"statx_mnt_id"}, "replace", "pidfd", true},
                      Variant{"no_statmount", {"statmount"}, "replace", "pidfd", true},
                      Variant{"no_fanotify_mount", {"fanotify_mount"}, "replace", "pidfd", true},
                      Variant{"no_beneath", {"move_mount_beneath"}, "stack", "pidfd", true},
                      Variant{"no_mount_setattr", {"move_mount_beneath", "mount_setattr"}, "stack", "pidfd", true},
                      Variant{"no_open_tree", {"open_tree", "fusectl"}, "stack", "statx", false}),
    [](const ::testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

} // namespace
} // namespace fh::test
