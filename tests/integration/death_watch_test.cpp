// The death watch with real FUSE daemons: the /proc walk finds fh_testfs and
// its connection; fuse-healerd logs a kill -9 at once through the pidfd
// (no mount event, no timer); without fuse_fdinfo the safety reconcile still
// detects it; [heal] abort_hung_after aborts a stopped daemon's connection so
// that its restart heals.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/control_protocol.h"
#include "engine/ctl_client.h"
#include "engine/liveness.h"
#include "engine/server_scan.h"
#include "harness.h"
#include "heal_fixture.h"

namespace fh::test {
namespace {

using json = nlohmann::json;

// Returns the dev_t of a mountinfo "major:minor".
dev_t parse_device(const std::string& text) {
    unsigned maj = 0, min = 0;
    std::sscanf(text.c_str(), "%u:%u", &maj, &min);
    return ::makedev(maj, min);
}

// The lines of `text` that contain `needle`.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.find(needle) != std::string::npos) out.push_back(line);
    return out;
}

// Returns the daemon's status answer as JSON, or null without an answer.
json status_json(const std::string& socket) {
    auto answer = control_exchange(socket, encode_control_request({ControlCommand::Status, ""}), 5s);
    if (!std::holds_alternative<std::string>(answer)) return json();
    return json::parse(std::get<std::string>(answer), nullptr, false);
}

class DeathWatchScan : public IntegrationTest {
protected:
    Sandbox sb;
};

TEST_F(DeathWatchScan, TheWalkOfProcFindsFhTestfsAndItsConnection) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const dev_t dev = parse_device(fuse.mount().device);

    const auto t0 = Clock::now();
    const ServerScan scan = scan_fuse_servers("/proc", ::getpid());
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
    std::cout << "  walk of /proc: " << scan.processes << " processes, " << scan.fds << " fds, "
              << scan.evidence.dev_fuse_files << " /dev/fuse files, " << scan.servers.size() << " servers in "
              << took.count() << " us\n";
    ASSERT_TRUE(scan.servers.count(fuse.pid())) << "fh_testfs (pid " << fuse.pid() << ") not found";
    const FuseServer& s = scan.servers.at(fuse.pid());
    EXPECT_EQ(s.comm, "fh_testfs");
    EXPECT_EQ(s.connections, (std::set<dev_t>{dev})) << fuse.mount().raw;
    EXPECT_GE(scan.evidence.with_connection, 1);
    EXPECT_EQ(scan.unreadable, 0) << "root inspects every process";
    EXPECT_TRUE(still_serves("/proc", s));
    // The connection id is the fusectl directory's name.
    EXPECT_FALSE(read_fusectl("/sys/fs/fuse/connections", dev).aborted);
    EXPECT_TRUE(read_fusectl("/sys/fs/fuse/connections", dev).present);

    fuse.kill9();
    EXPECT_FALSE(still_serves("/proc", s));
    EXPECT_FALSE(scan_fuse_servers("/proc", ::getpid()).servers.count(s.pid));
    EXPECT_TRUE(read_fusectl("/sys/fs/fuse/connections", dev).aborted) << "the kernel aborted it with the last file";
}

class DeathWatchDaemon : public DaemonTest {
protected:
    // One dataset bound into one pod volume; fuse-healerd started with
    // `toml` and `args`, ready and having learned the volume.
    void start(const std::string& toml, const std::vector<std::string>& args = {}) {
        fuse.start(1);
        vol = sb.make_pod_volume("pod-1", "pvc-1");
        csi_bind(fuse.source(), "", vol, true);
        d.start(toml, args);
        ASSERT_TRUE(d.wait_for_log("ready: watching")) << d.log();
        ASSERT_TRUE(daemon_learned(sb, vol)) << d.log();
    }
    std::string watching(pid_t pid) const { return "watching FUSE server fh_testfs (pid " + std::to_string(pid) + ")"; }
    std::string died(pid_t pid) const {
        return "FUSE server died: connection=" + fuse.mount().device + " pid=" + std::to_string(pid) +
               " comm=fh_testfs fstype=fuse.fh_testfs source=" + fuse.source() + " targets=1 target=" + vol + " ";
    }

    Sandbox sb;
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    Daemon d{sb};
    std::string vol;
};

// safety_scan_interval = "0s" and a kill -9 that changes no mount: only the
// pidfd can tell the daemon.
TEST_F(DeathWatchDaemon, KillNineIsLoggedAtOnceThroughThePidfd) {
    start("[heal]\nsafety_scan_interval = \"0s\"\n");
    EXPECT_NE(d.log().find("death detection=pidfd"), std::string::npos) << d.log();
    ASSERT_TRUE(d.wait_for_log(watching(fuse.pid()))) << d.log();
    EXPECT_EQ(status_json(d.control_socket())["daemon"]["detection"], "pidfd");

    for (int gen = 2; gen <= 3; ++gen) {
        // The mount events of the last start and heal are all in.
        json before;
        ASSERT_TRUE(wait_until(
            [&] {
                const json prev = status_json(d.control_socket());
                std::this_thread::sleep_for(100ms);
                before = status_json(d.control_socket());
                return !before.is_null() && before["daemon"]["mount_events"] == prev["daemon"]["mount_events"];
            },
            5000ms));
        const pid_t pid = fuse.pid();
        const std::string death = died(pid);
        const std::size_t mark = d.log().size();
        fuse.kill9();
        ASSERT_TRUE(d.wait_for_log(death, 2000ms, mark)) << tail(d.log());
        ASSERT_TRUE(d.wait_for_log("mount broken: target=" + vol + " ", 2000ms, mark)) << tail(d.log());
        const std::string since = d.log().substr(mark);
        EXPECT_LT(since.find(death), since.find("mount broken: target=" + vol)) << since;
        const auto line = lines_with(since, death);
        ASSERT_EQ(line.size(), 1u) << since;
        EXPECT_NE(line[0].find(" warning "), std::string::npos) << line[0];
        EXPECT_NE(line[0].find(" outage_start="), std::string::npos) << line[0];
        EXPECT_NE(line[0].find(" detection_latency_us="), std::string::npos) << line[0];
        std::cout << "  " << line[0].substr(line[0].find("FUSE server died")) << "\n";
        // No mount event and no timer brought it: the table did not change.
        const json after = status_json(d.control_socket());
        EXPECT_EQ(after["daemon"]["mount_events"], before["daemon"]["mount_events"]) << after;

        // The restarted daemon is healed and watched in its turn.
        fuse.supervisor_restart(gen);
        EXPECT_TRUE(host_reads(vol + "/generation", std::to_string(gen) + "\n")) << tail(d.log());
        ASSERT_TRUE(d.wait_for_log(watching(fuse.pid()), 5000ms, mark)) << tail(d.log());
    }
    EXPECT_EQ(d.terminate(), 0) << tail(d.log());
}

TEST_F(DeathWatchDaemon, WithoutFuseFdinfoTheSafetyReconcileStillDetects) {
    start("[heal]\nsafety_scan_interval = \"1s\"\n", {"--disable-kernel-feature", "fuse_fdinfo"});
    EXPECT_NE(d.log().find("death detection=fusectl"), std::string::npos) << d.log();
    EXPECT_NE(d.log().find("fuse_fdinfo=no(disabled)"), std::string::npos) << d.log();
    const json status = status_json(d.control_socket());
    EXPECT_EQ(status["daemon"]["detection"], "fusectl") << status;
    const std::size_t mark = d.log().size();
    fuse.kill9();
    EXPECT_TRUE(d.wait_for_log("mount broken: target=" + vol + " ", 5000ms, mark)) << tail(d.log());
    EXPECT_TRUE(lines_with(d.log(), "FUSE server died").empty()) << d.log();
    EXPECT_TRUE(lines_with(d.log(), "watching FUSE server").empty()) << d.log();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(vol + "/generation", "2\n")) << tail(d.log());
}

// A stopped daemon with requests waiting is hung: after abort_hung_after
// (and a probe that times out) its connection is aborted while the process
// still exists, the target is broken, and the supervisor's restart heals.
TEST_F(DeathWatchDaemon, AbortHungAfterAbortsAStoppedDaemonAndItsRestartHeals) {
    start("[heal]\nsafety_scan_interval = \"0s\"\nprobe_timeout = \"300ms\"\nabort_hung_after = \"1s\"\n");
    Container c{sb};
    c.start(vol, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(c, "1\n"));
    const std::string dev = fuse.mount().device;
    const std::size_t mark = d.log().size();
    fuse.stop();
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(dev) > 0; }, 2000ms))
        << "the container's probe never blocked on the stopped daemon";
    const auto stopped = Clock::now();

    ASSERT_TRUE(d.wait_for_log("aborted hung FUSE connection: connection=" + dev + " ", 10000ms, mark))
        << tail(d.log());
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped);
    const auto line = lines_with(d.log(), "aborted hung FUSE connection");
    ASSERT_EQ(line.size(), 1u);
    EXPECT_NE(line[0].find(" warning "), std::string::npos) << line[0];
    EXPECT_NE(line[0].find("source=" + fuse.source()), std::string::npos) << line[0];
    EXPECT_NE(line[0].find(" waiting="), std::string::npos) << line[0];
    EXPECT_NE(line[0].find(" abort_hung_after_us=1000000 "), std::string::npos) << line[0];
    std::cout << "  aborted " << took.count() << " ms after the daemon stopped: "
              << line[0].substr(line[0].find("aborted")) << "\n";
    EXPECT_GE(took, 900ms) << "not before abort_hung_after";
    EXPECT_EQ(::kill(fuse.pid(), 0), 0) << "the hung daemon still exists: the abort, not its death, ended it";
    EXPECT_TRUE(read_fusectl("/sys/fs/fuse/connections", parse_device(dev)).aborted);
    EXPECT_TRUE(d.wait_for_log("mount broken: target=" + vol + " ", 2000ms, mark)) << tail(d.log());
    EXPECT_TRUE(container_broken(c)) << c.last()->state;
    const int err = read_errno(vol + "/generation");
    EXPECT_TRUE(err == ECONNABORTED || err == ENOTCONN) << errno_name(err);

    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(vol + "/generation", "2\n")) << tail(d.log());
    EXPECT_TRUE(container_reads(c, "2\n")) << c.last()->state << "\n" << tail(d.log());
    EXPECT_EQ(lines_with(d.log(), "aborted hung FUSE connection").size(), 1u) << "one abort";
    EXPECT_EQ(d.terminate(), 0) << tail(d.log());
}

// Off by default: a stopped daemon stays unresponsive, never aborted.
TEST_F(DeathWatchDaemon, HungConnectionsAreLeftAloneByDefault) {
    start("[heal]\nsafety_scan_interval = \"1s\"\nprobe_timeout = \"300ms\"\n");
    Container c{sb};
    c.start(vol, ContainerPropagation::Slave, "generation");
    ASSERT_TRUE(container_reads(c, "1\n"));
    const std::string dev = fuse.mount().device;
    fuse.stop();
    ASSERT_TRUE(wait_until([&] { return fusectl_waiting(dev) > 0; }, 2000ms));
    EXPECT_TRUE(d.wait_for_log("mount unresponsive: target=" + vol + " ", 5000ms)) << tail(d.log());
    std::this_thread::sleep_for(1500ms);
    EXPECT_FALSE(read_fusectl("/sys/fs/fuse/connections", parse_device(dev)).aborted);
    EXPECT_TRUE(lines_with(d.log(), "aborted hung FUSE connection").empty()) << d.log();
    fuse.cont();
    EXPECT_TRUE(container_reads(c, "1\n"));
}

} // namespace
} // namespace fh::test
