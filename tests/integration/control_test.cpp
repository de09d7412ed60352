// The control socket and fuse-healerctl against a running fuse-healerd:
//
//   Status...          the table and --json of a daemon that healed a target
//   ALargeStatus...    a status answer of 300 targets is trimmed away once
//                      the daemon is idle, with no reconcile to wait for
//   Heal...            heal TARGET answers with the state after its reconcile
//   NotRunning...      no daemon, a stale socket, a second daemon, a path
//                      that is not a socket
//   NonRoot...         a peer that is not uid 0 is refused (SO_PEERCRED)
//   HungFuse...        status is answered in < 100 ms while a FUSE daemon is
//                      SIGSTOPped and the heal worker is stuck probing it; a
//                      heal then times out after 10 s with an error
//   ManyClients... / Awkward... / TooMany...   concurrency and framing
//   Stalled...         200 ill-behaved clients hold up neither others nor a heal
//   Hostile...         garbage, deep nesting, huge lines: error answers, the
//                      daemon lives on
//   RefusedPeers...    refused non-root peers take no client slot
//   CommandLine        fuse-healerctl's options and exit codes
//   MountTracking...   unrelated mount events are counted and dropped with
//                      fanotify tracking, and reconciled for on mountinfo
//
// Each test runs in its own process and private mount namespace (main.cpp).
// The harness configures each daemon's socket inside its sandbox
// (Daemon::control_socket()), never under the machine's /run.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/control_protocol.h"
#include "engine/control_server.h"
#include "engine/ctl_client.h"
#include "harness.h"
#include "heal_fixture.h"

namespace fh::test {
namespace {

using nlohmann::json;

constexpr uid_t kNobody = 65534;

// ---- running fuse-healerctl ---------------------------------------------------

struct CtlRun {
    int code = -1;  // exit code, 128+signal, -1 when it had to be killed
    std::string out;
    std::string err;
};

// Runs fuse-healerctl with `args` to completion (killed after 30 s), as
// `uid` (and gid) when it is not 0, in `cwd` when not empty. Returns its exit
// code and output.
CtlRun run_ctl(const std::vector<std::string>& args, uid_t uid = 0, const std::string& cwd = "") {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> argv{ctl_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        dup2(err[1], 2);
        if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(119);
        if (uid != 0 && (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0))
            _exit(120);
        execv(cargv[0], cargv.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    CtlRun r;
    const auto deadline = Clock::now() + 30s;
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0 && Clock::now() < deadline) {
        if (poll(fds, 2, 100) <= 0) continue;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            char buf[4096];
            const ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
            } else {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    if (open_fds > 0) kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    r.code = open_fds > 0 ? -1 : exit_code_of(status);
    // Sanitizer builds: a report ends fuse-healerctl with an exit code a
    // test may expect for other reasons; its stderr says which.
    EXPECT_EQ(sanitizer_report(r.err), "") << "fuse-healerctl " << testing::PrintToString(args);
    return r;
}

std::string describe(const CtlRun& r) {
    return "exit " + std::to_string(r.code) + "\nstdout:\n" + r.out + "stderr:\n" + r.err;
}

// Returns the daemon's status answer as JSON (through the library, not the
// binary, so that polling is cheap), or null when it did not answer.
json status_json(const std::string& socket) {
    auto answer = control_exchange(socket, encode_control_request({ControlCommand::Status, ""}), 5s);
    if (!std::holds_alternative<std::string>(answer)) return json();
    return json::parse(std::get<std::string>(answer), nullptr, false);
}

// Returns daemon.<key> of a status answer, -1 when it is not there (no
// answer).
std::int64_t daemon_number(const json& status, const char* key) {
    if (!status.is_object() || !status.contains("daemon") || !status["daemon"].contains(key)) return -1;
    return status["daemon"][key].get<std::int64_t>();
}

// Returns the status entry of `target` (null when not listed).
json target_status(const json& status, const std::string& target) {
    if (!status.is_object() || !status.contains("targets")) return json();
    for (const auto& t : status["targets"])
        if (t["target"] == target) return t;
    return json();
}

// Waits until the status of `target` satisfies `pred`.
bool wait_for_target(const std::string& socket, const std::string& target, const std::function<bool(const json&)>& pred,
                     std::chrono::milliseconds timeout = 5000ms) {
    return wait_until(
        [&] {
            const json t = target_status(status_json(socket), target);
            return !t.is_null() && pred(t);
        },
        timeout, 20ms);
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// ---- raw clients ----------------------------------------------------------------

// A unix stream connection spoken to byte by byte, for what fuse-healerctl
// never does (pipelining, partial writes, oversized lines, leaving early).
class RawClient {
public:
    explicit RawClient(const std::string& path) {
        fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
    }
    ~RawClient() {
        if (fd_ >= 0) close(fd_);
    }
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;

    // Returns true when all of `data` was written.
    bool send(const std::string& data) {
        std::size_t sent = 0;
        while (sent < data.size()) {
            const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) return false;
            sent += static_cast<std::size_t>(n);
        }
        return true;
    }
    // Writes `chunk` again and again without blocking until `max_bytes` are
    // sent or the socket has taken nothing for `stall`. Returns the bytes
    // sent (the last copy may be cut short).
    std::size_t send_until_stalled(const std::string& chunk, std::size_t max_bytes,
                                   std::chrono::milliseconds stall) {
        std::size_t total = 0, offset = 0;
        while (total < max_bytes) {
            const ssize_t n = ::send(fd_, chunk.data() + offset, chunk.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                total += static_cast<std::size_t>(n);
                offset = (offset + static_cast<std::size_t>(n)) % chunk.size();
                continue;
            }
            if (n < 0 && errno != EAGAIN) break;
            pollfd p{fd_, POLLOUT, 0};
            if (poll(&p, 1, static_cast<int>(stall.count())) <= 0) break;
        }
        return total;
    }
    void shutdown_write() { shutdown(fd_, SHUT_WR); }
    void close_now() {
        close(fd_);
        fd_ = -1;
    }

    // Returns the next line (without '\n'), or nullopt on EOF, an error or
    // when none arrives within `timeout`.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            if (!fill(deadline)) return std::nullopt;
        }
    }

    // Returns true when the daemon closes the connection within `timeout`
    // with nothing more to read (a reset counts as closed).
    bool closed_by_peer(std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = Clock::now() + timeout;
        const std::size_t before = buf_.size();
        while (fill(deadline)) {
        }
        return eof_ && buf_.size() == before;
    }

private:
    // Reads what is there into buf_; returns false on EOF, error or timeout.
    bool fill(Clock::time_point deadline) {
        pollfd p{fd_, POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return false;
        char buf[65536];
        const ssize_t n = recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) {
            eof_ = n == 0 || errno == ECONNRESET;
            return false;
        }
        buf_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    std::string buf_;
    bool eof_ = false;
};

// What a client running as another uid got from the socket.
struct ForeignExchange {
    int connect_errno = 0;  // 0 when connected
    std::string received;   // everything read until EOF
    bool eof = false;       // the daemon closed the connection
};

// Forks a child that drops to `uid` with setresuid, connects to `path`,
// sends `request` and reads until EOF (5 s at most). Returns what it saw.
ForeignExchange exchange_as(uid_t uid, const std::string& path, const std::string& request) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        // Only syscalls from here: the parent may have had other threads.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0) _exit(120);
        if (geteuid() != uid) _exit(121);
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            const int e = errno;
            (void)!write(report[1], "E", 1);
            (void)!write(report[1], &e, sizeof e);
            _exit(0);
        }
        (void)!write(report[1], "C", 1);
        (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
        char buf[4096];
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 5000) <= 0) _exit(0);  // no EOF marker: the daemon kept us
            const ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n < 0 && errno != ECONNRESET) _exit(0);
            if (n <= 0) break;
            (void)!write(report[1], buf, static_cast<std::size_t>(n));
        }
        (void)!write(report[1], "\0EOF", 4);
        _exit(0);
    }
    close(report[1]);
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = read(report[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
    close(report[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw std::runtime_error("the uid " + std::to_string(uid) + " child failed: status " + std::to_string(status));
    ForeignExchange r;
    if (!got.empty() && got[0] == 'E' && got.size() == 1 + sizeof(int)) {
        std::memcpy(&r.connect_errno, got.data() + 1, sizeof(int));
        return r;
    }
    if (got.empty() || got[0] != 'C') throw std::runtime_error("the uid child reported nothing");
    r.received = got.substr(1);
    const std::string marker("\0EOF", 4);
    if (r.received.size() >= 4 && r.received.compare(r.received.size() - 4, 4, marker) == 0) {
        r.eof = true;
        r.received.resize(r.received.size() - 4);
    }
    return r;
}

// ---- fixtures -------------------------------------------------------------------

class ControlTest : public DaemonTest {
protected:
    void SetUp() override {
        DaemonTest::SetUp();
        if (IsSkipped()) return;
        if (access(ctl_path().c_str(), X_OK) != 0) GTEST_SKIP() << "fuse-healerctl is not built: " << ctl_path();
    }
    Sandbox sb;
};

// One dataset bound into one pod volume, and a daemon that learned it.
class ControlWithTarget : public ControlTest {
protected:
    // Starts the FUSE daemon, binds the volume and starts fuse-healerd with
    // `extra_toml` and `args`; waits until it has learned the volume.
    void start(const std::string& extra_toml = "", const std::vector<std::string>& args = {}) {
        fuse.start(1);
        vol = sb.make_pod_volume("pod-1", "pvc-1");
        csi_bind(fuse.source(), "", vol, true);
        d.start(extra_toml, args);
        ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
        ASSERT_TRUE(daemon_learned(sb, vol)) << d.log();
        ASSERT_TRUE(wait_for_target(d.control_socket(), vol, [](const json& t) { return t["state"] == "healthy"; }))
            << d.log();
    }

    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    Daemon d{sb};
    std::string vol;
};

// ---- status -----------------------------------------------------------------------

TEST_F(ControlWithTarget, StatusTableAndJsonShowAHealedTarget) {
    start();
    const std::string socket = d.control_socket();
    struct stat st {};
    ASSERT_EQ(lstat(socket.c_str(), &st), 0) << socket;
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << st.st_mode;
    EXPECT_EQ(st.st_uid, 0u);

    fuse.kill9();
    fuse.supervisor_restart(2);
    ASSERT_TRUE(host_reads(vol + "/generation", "2\n")) << d.log();
    ASSERT_TRUE(wait_for_target(socket, vol, [](const json& t) { return t["heals"] == 1; })) << d.log();

    const CtlRun js = run_ctl({"--socket", socket, "status", "--json"});
    ASSERT_EQ(js.code, 0) << describe(js);
    EXPECT_EQ(js.err, "");
    ASSERT_EQ(js.out.find('\n'), js.out.size() - 1) << "one JSON line: " << js.out;
    const json doc = json::parse(js.out);
    EXPECT_EQ(doc["ok"], true);
    const json& daemon = doc["daemon"];
    EXPECT_EQ(daemon["version"], FUSE_HEALER_VERSION);
    EXPECT_EQ(daemon["pid"], d.pid());
    // As logged at start: "... strategy=S death detection=D kernel: K".
    const std::string log = d.log();
    const std::size_t start_line = log.find("fuse-healer " FUSE_HEALER_VERSION " starting:");
    ASSERT_NE(start_line, std::string::npos) << log;
    const std::string started = split_lines(log.substr(start_line))[0];
    EXPECT_NE(started.find("strategy=" + daemon["strategy"].get<std::string>() +
                           " death detection=" + daemon["detection"].get<std::string>() + " "),
              std::string::npos)
        << started << "\n" << daemon;
    EXPECT_EQ(started.substr(started.find(" kernel: ") + 9), daemon["kernel"]);
    EXPECT_EQ(daemon["detection"], "pidfd") << "the death watch (fuse_fdinfo, Linux 6.16+)";
    // This kernel has fanotify mount events: the default is tracking by them.
    EXPECT_EQ(daemon["mount_tracking"], "fanotify");
    EXPECT_NE(started.find(" mount tracking=fanotify ("), std::string::npos) << started;
    EXPECT_GE(daemon["unrelated_mount_events"].get<int>(), 0) << daemon;
    EXPECT_LE(daemon["unrelated_mount_events"].get<int>(), daemon["mount_events"].get<int>()) << daemon;
    EXPECT_EQ(daemon["targets"], 1);
    EXPECT_EQ(daemon["broken"], 0);
    EXPECT_EQ(daemon["heals"], 1);
    // The restart's unmount and mount, and the heal's own (the monitor may
    // coalesce them, so at least one).
    EXPECT_GE(daemon["mount_events"].get<int>(), 1) << daemon;
    EXPECT_GE(daemon["reconciles"].get<int>(), 2) << daemon;
    ASSERT_EQ(doc["targets"].size(), 1u) << doc;
    const json& t = doc["targets"][0];
    EXPECT_EQ(t["target"], vol);
    EXPECT_EQ(t["pod_uid"], "pod-1");
    EXPECT_EQ(t["volume"], "pvc-1");
    EXPECT_EQ(t["driver"], "fuse.csi.fluid.io") << "from vol_data.json";
    EXPECT_EQ(t["kind"], "volume");
    EXPECT_EQ(t["fstype"], "fuse.fh_testfs");
    EXPECT_EQ(t["state"], "healthy");
    EXPECT_EQ(t["reason"], "");
    EXPECT_EQ(t["heals"], 1);
    const std::int64_t outage = t["last_outage_us"].get<std::int64_t>();
    EXPECT_GT(outage, 0);
    EXPECT_LT(outage, 10'000'000) << "the outage lasted from the kill to the restart";

    const CtlRun table = run_ctl({"--socket", socket, "status"});
    ASSERT_EQ(table.code, 0) << describe(table);
    EXPECT_EQ(table.err, "");
    const std::vector<std::string> lines = split_lines(table.out);
    ASSERT_EQ(lines.size(), 6u) << table.out;
    EXPECT_EQ(lines[0], "fuse-healerd " FUSE_HEALER_VERSION ", pid " + std::to_string(d.pid()) + ": strategy " +
                            daemon["strategy"].get<std::string>() + ", detection pidfd, mount tracking fanotify");
    EXPECT_EQ(lines[1], "kernel: " + daemon["kernel"].get<std::string>());
    EXPECT_EQ(lines[2].rfind("targets: 1 tracked, 0 broken; 1 healed since start; ", 0), 0u) << lines[2];
    EXPECT_EQ(lines[3], "");
    EXPECT_EQ(words(lines[4]),
              (std::vector<std::string>{"POD", "UID", "VOLUME", "TARGET", "FSTYPE", "STATE", "HEALS", "LAST", "OUTAGE"}));
    EXPECT_EQ(words(lines[5]), (std::vector<std::string>{"pod-1", "pvc-1", vol, "fuse.fh_testfs", "healthy", "1",
                                                         format_outage(outage)}));
    // Columns line up: each cell starts where its header does.
    EXPECT_EQ(lines[5].find(vol), lines[4].find("TARGET")) << table.out;
    EXPECT_EQ(lines[5].find("healthy"), lines[4].find("STATE")) << table.out;

    // A stopped daemon takes its socket with it.
    EXPECT_EQ(d.terminate(), 0) << d.log();
    EXPECT_NE(lstat(socket.c_str(), &st), 0);
    EXPECT_EQ(errno, ENOENT);
}

// ---- heal -------------------------------------------------------------------------

// A status answer of 300 targets (~86 KiB, ~0.6 MiB of heap while it is
// built) schedules a malloc_trim once the daemon has been idle for a second.
// The heal worker used to wait for work only, so a trim asked for by the loop
// thread waited for the next reconcile: on a quiet node, the safety scan's.
TEST_F(ControlTest, ALargeStatusAnswerIsTrimmedAwayWithoutAReconcile) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    constexpr int kPods = 300;
    std::vector<std::string> vols;
    for (int i = 0; i < kPods; ++i) {
        vols.push_back(sb.make_pod_volume("pod-" + std::to_string(i), "pvc-1"));
        csi_bind(fuse.source(), "", vols.back(), true);
    }
    Daemon d{sb};
    // No safety scan in the test's time: the only reconciles are the
    // start-up ones.
    d.start("[heal]\nsafety_scan_interval = \"1h\"\n", {"--log-level", "trace"});
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();
    ASSERT_TRUE(wait_for_target(socket, vols.back(), [](const json& t) { return t["state"] == "healthy"; })) << d.log();
    ASSERT_TRUE(d.wait_for_log("malloc_trim: ", 5000ms)) << "no trim after the start-up reconcile\n" << d.log();
    // Past the moment of any trim the polls above asked for.
    std::this_thread::sleep_for(1500ms);
    const std::int64_t reconciles = daemon_number(status_json(socket), "reconciles");
    std::this_thread::sleep_for(1500ms);

    const std::size_t mark = d.log().size();
    auto answer = control_exchange(socket, encode_control_request({ControlCommand::Status, ""}), 5s);
    ASSERT_TRUE(std::holds_alternative<std::string>(answer));
    ASSERT_GE(std::get<std::string>(answer).size(), std::size_t{64} * 1024)
        << "the answer is below the size that schedules a trim: add targets";
    EXPECT_TRUE(d.wait_for_log("malloc_trim: ", 3000ms, mark)) << d.log().substr(mark);
    EXPECT_EQ(daemon_number(status_json(socket), "reconciles"), reconciles) << "a reconcile ran: it trims anyway";
}

TEST_F(ControlWithTarget, HealAnswersWithTheStateAfterItsReconcile) {
    start();
    const std::string socket = d.control_socket();
    const auto reconciles = [&] { return daemon_number(status_json(socket), "reconciles"); };

    const int before = reconciles();
    const std::size_t mark = d.log().size();
    const CtlRun healthy = run_ctl({"--socket", socket, "heal", vol});
    EXPECT_EQ(healthy.code, 0) << describe(healthy);
    EXPECT_EQ(healthy.out, vol + ": healthy (heals 0, last outage -)\n");
    EXPECT_EQ(healthy.err, "");
    EXPECT_GT(reconciles(), before) << "the answer waited for a reconcile started by the request";
    EXPECT_TRUE(d.wait_for_log("heal of " + vol + " asked for on the control socket", 1000ms, mark)) << d.log();

    // The path is taken lexically, as the daemon knows it.
    EXPECT_EQ(run_ctl({"--socket", socket, "heal", vol + "/./"}).code, 0);
    EXPECT_EQ(run_ctl({"--socket", socket, "heal", vol + "/../mount"}).code, 0);
    const CtlRun relative = run_ctl({"--socket", socket, "heal", "./mount"}, 0, vol + "/..");
    EXPECT_EQ(relative.code, 0) << describe(relative);
    EXPECT_EQ(relative.out, vol + ": healthy (heals 0, last outage -)\n");

    // The source is dead and not back: the reconcile leaves it broken.
    fuse.kill9();
    const CtlRun broken = run_ctl({"--socket", socket, "heal", vol});
    EXPECT_EQ(broken.code, kCtlExitNotHealthy) << describe(broken);
    EXPECT_EQ(broken.out, vol + ": broken: source " + fuse.source() +
                              " still holds the dead filesystem (heals 0, last outage -)\n")
        << describe(broken);
    const CtlRun broken_json = run_ctl({"--socket", socket, "heal", "--json", vol});
    EXPECT_EQ(broken_json.code, kCtlExitNotHealthy) << describe(broken_json);
    const json answer = json::parse(broken_json.out);
    EXPECT_EQ(answer["ok"], true);
    EXPECT_EQ(answer["target"]["target"], vol);
    EXPECT_EQ(answer["target"]["state"], "broken");
    EXPECT_EQ(answer["target"]["reason"], "source " + fuse.source() + " still holds the dead filesystem");

    // A client that leaves before its answer costs the daemon nothing.
    {
        RawClient early(socket);
        ASSERT_TRUE(early.send(encode_control_request({ControlCommand::Heal, vol})));
        early.close_now();
    }

    fuse.supervisor_restart(2);
    ASSERT_TRUE(host_reads(vol + "/generation", "2\n")) << d.log();
    const CtlRun healed = run_ctl({"--socket", socket, "heal", vol});
    EXPECT_EQ(healed.code, 0) << describe(healed);
    EXPECT_EQ(healed.out.rfind(vol + ": healthy (heals 1, last outage ", 0), 0u) << describe(healed);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();

    const CtlRun unknown = run_ctl({"--socket", socket, "heal", sb.path("not-a-target")});
    EXPECT_EQ(unknown.code, kCtlExitFailure) << describe(unknown);
    EXPECT_EQ(unknown.out, "");
    EXPECT_EQ(unknown.err, "fuse-healerctl: heal failed: " + sb.path("not-a-target") +
                               " is not a target fuse-healerd tracks (fuse-healerctl status lists them)\n");
}

// ---- not running --------------------------------------------------------------------

TEST_F(ControlTest, NotRunningStaleSocketsAndASecondDaemon) {
    const std::string path = sb.path("ctl.sock");
    const CtlRun none = run_ctl({"--socket", path, "status"});
    EXPECT_EQ(none.code, kCtlExitNotRunning) << describe(none);
    EXPECT_EQ(none.out, "");
    EXPECT_EQ(none.err, "fuse-healerctl: fuse-healerd is not running (no socket at " + path + ")\n");

    // A socket file left by a daemon that died: nobody listens.
    {
        const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
        close(fd);
    }
    const CtlRun stale = run_ctl({"--socket", path, "heal", "/x"});
    EXPECT_EQ(stale.code, kCtlExitNotRunning) << describe(stale);
    EXPECT_EQ(stale.err.rfind("fuse-healerctl: fuse-healerd is not running (no socket at " + path, 0), 0u)
        << stale.err;

    const std::string control = "[control]\nsocket = \"" + path + "\"\n";
    Daemon d{sb};
    d.start(control);
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    EXPECT_NE(d.log().find("removed the stale control socket " + path), std::string::npos) << d.log();
    const CtlRun served = run_ctl({"--socket", path, "status", "--json"});
    ASSERT_EQ(served.code, 0) << describe(served) << d.log();
    EXPECT_EQ(json::parse(served.out)["daemon"]["pid"], d.pid());

    // A second daemon does not take over a live socket; it heals without one.
    Daemon second{sb};
    second.start(control);
    ASSERT_TRUE(second.wait_for_log("ready")) << second.log();
    EXPECT_NE(second.log().find("failed to set up the control socket, ignoring (fuse-healerctl cannot reach this "
                                "daemon): replace the control socket " + path),
              std::string::npos)
        << second.log();
    EXPECT_NE(second.log().find("another process listens on it"), std::string::npos) << second.log();
    EXPECT_EQ(second.terminate(), 0) << second.log();
    const CtlRun still = run_ctl({"--socket", path, "status", "--json"});
    ASSERT_EQ(still.code, 0) << describe(still);
    EXPECT_EQ(json::parse(still.out)["daemon"]["pid"], d.pid()) << "the second daemon removed nothing of the first";
    EXPECT_EQ(d.terminate(), 0);

    // A path that is not a socket is never removed.
    const std::string file = sb.path("not-a-socket");
    write_file(file, "precious\n");
    Daemon third{sb};
    third.start("[control]\nsocket = \"" + file + "\"\n");
    ASSERT_TRUE(third.wait_for_log("ready")) << third.log();
    EXPECT_NE(third.log().find("the path exists and is not a socket; not removing it"), std::string::npos)
        << third.log();
    EXPECT_EQ(third.terminate(), 0);
    EXPECT_EQ(read_file(file), "precious\n");

    // An empty path turns the socket off.
    Daemon off{sb};
    off.start("[control]\nsocket = \"\"\n");
    ASSERT_TRUE(off.wait_for_log("ready")) << off.log();
    EXPECT_NE(off.log().find("control socket turned off"), std::string::npos) << off.log();
}

// ---- non-root peers -------------------------------------------------------------------

TEST_F(ControlTest, NonRootPeersAreRefused) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();

    // Mode 0600: the kernel refuses the connect itself.
    const ForeignExchange by_mode = exchange_as(kNobody, socket, encode_control_request({}));
    EXPECT_EQ(by_mode.connect_errno, EACCES) << std::strerror(by_mode.connect_errno);
    const CtlRun ctl_by_mode = run_ctl({"--socket", socket, "status"}, kNobody);
    EXPECT_EQ(ctl_by_mode.code, kCtlExitPermission) << describe(ctl_by_mode);
    EXPECT_EQ(ctl_by_mode.err, "fuse-healerctl: permission denied: cannot connect to " + socket +
                                   ": Permission denied (fuse-healerctl must run as root)\n");

    // Opened up by mistake: SO_PEERCRED still refuses anyone but root.
    ASSERT_EQ(chmod(socket.c_str(), 0666), 0);
    const std::size_t mark = d.log().size();
    const ForeignExchange by_cred = exchange_as(kNobody, socket, encode_control_request({}));
    ASSERT_EQ(by_cred.connect_errno, 0) << std::strerror(by_cred.connect_errno);
    EXPECT_TRUE(by_cred.eof) << "the daemon closes the connection: " << by_cred.received;
    ASSERT_EQ(by_cred.received.find('\n'), by_cred.received.size() - 1) << "one answer: " << by_cred.received;
    const Result<ControlResponse> refused = parse_control_response(by_cred.received);
    ASSERT_TRUE(refused) << refused.error().message();
    ASSERT_TRUE(refused->error) << by_cred.received;
    EXPECT_EQ(refused->error->code, ControlErrorCode::PermissionDenied);
    EXPECT_EQ(refused->error->message, "permission denied: fuse-healerd answers only root on its control socket, "
                                       "and this client runs as uid 65534");
    EXPECT_TRUE(d.wait_for_log("uid 65534): only root is served", 1000ms, mark)) << d.log();

    const CtlRun ctl_by_cred = run_ctl({"--socket", socket, "status"}, kNobody);
    EXPECT_EQ(ctl_by_cred.code, kCtlExitPermission) << describe(ctl_by_cred);
    EXPECT_EQ(ctl_by_cred.err, "fuse-healerctl: status failed: " + refused->error->message + "\n");
    EXPECT_EQ(ctl_by_cred.out, "");

    // Root is still served.
    EXPECT_EQ(run_ctl({"--socket", socket, "status"}).code, 0);
}

// ---- a hung FUSE daemon ---------------------------------------------------------------

// SIGSTOPs the FUSE daemon and makes a mount event, which starts a reconcile
// that probes every target. With statx probes (fusectl off) that reconcile
// blocks its worker on the stopped daemon for the probe timeout. The mount is
// in the kubelet tree: one elsewhere is unrelated and starts no reconcile.
void stop_fuse_and_trigger_a_reconcile(Sandbox& sb, FuseDaemon& fuse) {
    fuse.stop();
    const std::string trigger = sb.kubelet() + "/trigger";
    make_dirs(trigger);
    if (mount("trigger", trigger.c_str(), "tmpfs", 0, nullptr) != 0)
        throw std::runtime_error(std::string("mount tmpfs: ") + std::strerror(errno));
}

// Returns true once the daemon says a reconcile is running (stuck).
bool reconcile_gets_stuck(const std::string& socket) {
    return wait_until([&] { return daemon_number(status_json(socket), "reconcile_running_us") > 0; }, 2000ms, 5ms);
}

TEST_F(ControlWithTarget, StatusIsAnsweredInUnder100msWhileAFuseDaemonIsStopped) {
    start("[heal]\nprobe_timeout = \"3s\"\n", {"--disable-kernel-feature", "fusectl"});
    const std::string socket = d.control_socket();
    stop_fuse_and_trigger_a_reconcile(sb, fuse);

    // Sample from the mount event on, while the worker is stuck (its probe
    // times out after 3 s).
    const auto since = Clock::now();
    int samples = 0, while_stuck = 0;
    std::chrono::microseconds slowest{0};
    while (Clock::now() - since < 2000ms) {
        const auto t0 = Clock::now();
        auto answer = control_exchange(socket, encode_control_request({}), 5s);
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
        ASSERT_TRUE(std::holds_alternative<std::string>(answer)) << std::get<CtlError>(answer).message;
        const json doc = json::parse(std::get<std::string>(answer));
        ASSERT_EQ(doc["ok"], true) << doc;
        ++samples;
        if (doc["daemon"]["reconcile_running_us"].get<std::int64_t>() > 0) ++while_stuck;
        slowest = std::max(slowest, took);
        EXPECT_LT(took, 100ms) << "status sample " << samples << " took " << took.count() << " us";
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_GE(while_stuck, samples / 2) << "most samples were taken while the heal worker was stuck (" << while_stuck
                                        << " of " << samples << ")";
    std::cout << "  " << samples << " status answers (" << while_stuck << " while the worker was stuck), slowest "
              << slowest.count() << " us\n";

    // The table is a snapshot: once the probe times out it says unresponsive.
    EXPECT_TRUE(wait_for_target(socket, vol, [](const json& t) { return t["state"] == "unresponsive"; }, 5000ms))
        << d.log();
    const CtlRun table = run_ctl({"--socket", socket, "status"});
    EXPECT_EQ(table.code, 0) << describe(table);
    EXPECT_NE(table.out.find("unresponsive"), std::string::npos) << table.out;
    fuse.cont();
    EXPECT_TRUE(wait_for_target(socket, vol, [](const json& t) { return t["state"] == "healthy"; }, 10000ms))
        << d.log();
}

TEST_F(ControlWithTarget, HealTimesOutAfter10sWhileTheWorkerIsStuck) {
    start("[heal]\nprobe_timeout = \"30s\"\n", {"--disable-kernel-feature", "fusectl"});
    const std::string socket = d.control_socket();
    stop_fuse_and_trigger_a_reconcile(sb, fuse);
    ASSERT_TRUE(reconcile_gets_stuck(socket)) << d.log();

    const auto t0 = Clock::now();
    const CtlRun heal = run_ctl({"--socket", socket, "heal", vol});
    const auto took = Clock::now() - t0;
    EXPECT_EQ(heal.code, kCtlExitFailure) << describe(heal);
    EXPECT_EQ(heal.err.rfind("fuse-healerctl: heal failed: the reconcile did not finish within 10 s", 0), 0u)
        << heal.err;
    EXPECT_GE(took, 9500ms);
    EXPECT_LT(took, 15000ms);
    EXPECT_NE(d.log().find("answering with a timeout"), std::string::npos) << d.log();
    fuse.cont();
}

// ---- mount tracking ---------------------------------------------------------------

// The parameter: the mount tracking in use ("fanotify", the default on this
// kernel, or "mountinfo" with fanotify_mount disabled).
class MountTracking : public ControlTest, public ::testing::WithParamInterface<std::string> {};

// Mount events outside the kubelet tree that are not FUSE mounts and cover no
// source path are unrelated: with fanotify they are counted and dropped (no
// reconcile); the mountinfo monitor cannot tell what changed and reconciles
// for each wake-up. A mount in the kubelet tree is relevant with both.
TEST_P(MountTracking, UnrelatedMountEventsRunNoReconcileWithFanotify) {
    const bool fanotify = GetParam() == "fanotify";
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    Daemon d{sb};
    d.start("", fanotify ? std::vector<std::string>{} : std::vector<std::string>{"--disable-kernel-feature", "fanotify_mount"});
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    ASSERT_TRUE(daemon_learned(sb, vol)) << d.log();
    const std::string socket = d.control_socket();
    // Quiet: the start-up reconciles are over.
    json before;
    ASSERT_TRUE(wait_until(
        [&] {
            before = status_json(socket);
            return daemon_number(before, "reconciles") >= 1 && daemon_number(before, "reconcile_running_us") == 0;
        },
        5000ms));
    std::this_thread::sleep_for(200ms);
    before = status_json(socket);
    EXPECT_EQ(before["daemon"]["mount_tracking"], GetParam()) << before;
    EXPECT_NE(d.log().find(" mount tracking=" + GetParam() + " ("), std::string::npos) << d.log();

    const std::string churn = sb.path("elsewhere");
    make_dirs(churn);
    constexpr int kMounts = 10;
    for (int i = 0; i < kMounts; ++i) {
        ASSERT_EQ(mount("bystander", churn.c_str(), "tmpfs", 0, "size=64k"), 0) << errno_name(errno);
        ASSERT_EQ(umount2(churn.c_str(), 0), 0) << errno_name(errno);
    }
    json after;
    if (fanotify) {
        ASSERT_TRUE(wait_until(
            [&] {
                after = status_json(socket);
                return daemon_number(after, "unrelated_mount_events") >=
                       daemon_number(before, "unrelated_mount_events") + 2 * kMounts;
            },
            5000ms))
            << after;
        std::this_thread::sleep_for(200ms);
        after = status_json(socket);
        EXPECT_EQ(daemon_number(after, "reconciles"), daemon_number(before, "reconciles"))
            << "an unrelated mount event started a reconcile\n" << after;
        EXPECT_EQ(daemon_number(after, "mount_events") - daemon_number(before, "mount_events"), 2 * kMounts) << after;
    } else {
        ASSERT_TRUE(wait_until(
            [&] {
                after = status_json(socket);
                return daemon_number(after, "reconciles") > daemon_number(before, "reconciles");
            },
            5000ms))
            << after;
        EXPECT_EQ(daemon_number(after, "unrelated_mount_events"), 0) << after;
    }

    // In the kubelet tree: relevant with both.
    const json quiet = status_json(socket);
    const std::string kube = sb.kubelet() + "/pods/pod-1/volumes/kubernetes.io~secret/token";
    make_dirs(kube);
    ASSERT_EQ(mount("token", kube.c_str(), "tmpfs", 0, "size=64k"), 0) << errno_name(errno);
    EXPECT_TRUE(wait_until(
        [&] { return daemon_number(status_json(socket), "reconciles") > daemon_number(quiet, "reconciles"); },
        5000ms))
        << status_json(socket);

    // And the heal path works on top of it.
    fuse.kill9();
    fuse.supervisor_restart(2);
    EXPECT_TRUE(host_reads(vol + "/generation", "2\n")) << d.log();
}

INSTANTIATE_TEST_SUITE_P(Tracking, MountTracking, ::testing::Values("fanotify", "mountinfo"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// ---- many clients, framing ----------------------------------------------------------

TEST_F(ControlTest, ManyConcurrentClients) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();

    // 200 connections open at once, each with a request in flight.
    std::vector<std::unique_ptr<RawClient>> clients;
    for (int i = 0; i < 200; ++i) clients.push_back(std::make_unique<RawClient>(socket));
    for (auto& c : clients) ASSERT_TRUE(c->send(encode_control_request({})));
    int answered = 0;
    for (auto& c : clients) {
        const auto line = c->read_line();
        if (line && json::parse(*line)["daemon"]["pid"] == d.pid()) ++answered;
    }
    EXPECT_EQ(answered, 200);
    clients.clear();

    // And 8 threads, each asking 25 times in a row.
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
                auto a = control_exchange(socket, encode_control_request({}), 5s);
                if (std::holds_alternative<std::string>(a) && parse_control_response(std::get<std::string>(a)))
                    ++ok;
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 200);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

TEST_F(ControlTest, PartialPipelinedMalformedAndOversizedRequests) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();
    const auto code_of = [](const std::optional<std::string>& line) -> std::string {
        if (!line) return "<no answer>";
        const json doc = json::parse(*line, nullptr, false);
        if (doc.is_discarded()) return "<not JSON>";
        return doc["ok"] == true ? "ok" : doc["error"]["code"].get<std::string>();
    };

    // One byte per write: the daemon waits for the newline.
    {
        RawClient c(socket);
        for (const char ch : encode_control_request({})) {
            ASSERT_TRUE(c.send(std::string(1, ch)));
            std::this_thread::sleep_for(1ms);
        }
        EXPECT_EQ(code_of(c.read_line()), "ok");
    }
    // Three requests in one write, answered in order; a bad one does not
    // close the connection.
    {
        RawClient c(socket);
        ASSERT_TRUE(c.send(encode_control_request({ControlCommand::Heal, "/not/a/target"}) + "{\"command\":\n" +
                           encode_control_request({})));
        EXPECT_EQ(code_of(c.read_line()), "unknown-target");
        EXPECT_EQ(code_of(c.read_line()), "bad-request");
        EXPECT_EQ(code_of(c.read_line()), "ok");
        ASSERT_TRUE(c.send("{\"command\":\"stats\"}\n"));
        EXPECT_EQ(code_of(c.read_line()), "unknown-command");
        c.shutdown_write();
        EXPECT_TRUE(c.closed_by_peer()) << "EOF after the last answer closes the connection";
    }
    // A last request without its newline is answered at EOF.
    {
        RawClient c(socket);
        std::string request = encode_control_request({});
        request.pop_back();
        ASSERT_TRUE(c.send(request));
        c.shutdown_write();
        EXPECT_EQ(code_of(c.read_line()), "ok");
        EXPECT_TRUE(c.closed_by_peer());
    }
    // Oversized, with or without a newline: one error, then the daemon closes.
    for (const std::string& big :
         {std::string(70000, 'x'), std::string(kMaxControlRequestBytes + 1, ' ') + "\n" + encode_control_request({})}) {
        RawClient c(socket);
        ASSERT_TRUE(c.send(big));
        const auto line = c.read_line();
        EXPECT_EQ(code_of(line), "request-too-large") << line.value_or("");
        EXPECT_TRUE(c.closed_by_peer()) << "no answer to what followed the oversized line";
    }
    // A client that connects and says nothing holds nothing up.
    RawClient idle(socket);
    const CtlRun r = run_ctl({"--socket", socket, "status"});
    EXPECT_EQ(r.code, 0) << describe(r);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

// A client that sends requests and never reads the answers: once its
// unread answers pass 4 MiB the daemon stops answering and reading it (so
// its sends stall), and goes on when it reads.
TEST_F(ControlTest, AClientThatDoesNotReadIsNotReadFrom) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    RawClient c(d.control_socket());
    const std::string request = encode_control_request({});
    std::string chunk;
    while (chunk.size() + request.size() <= 64 * 1024) chunk += request;
    // Unbounded, the daemon would take all 16 MiB (and hold ~200 MiB of
    // answers); bounded, it stops near 4 MiB of answers (~16k requests,
    // ~300 KiB) plus what the socket buffers hold.
    const std::size_t sent = c.send_until_stalled(chunk, 16 * 1024 * 1024, 1000ms);
    EXPECT_LT(sent, 2u * 1024 * 1024) << "the daemon kept reading a client that does not read";
    EXPECT_GT(sent, 64u * 1024);
    std::cout << "  the daemon stopped reading after " << sent << " bytes of requests\n";

    // Reading resumes it: every complete request is answered.
    const std::size_t requests = sent / request.size();
    std::size_t answered = 0;
    while (answered < requests) {
        const auto line = c.read_line(5000ms);
        if (!line || line->rfind("{\"ok\":true,", 0) != 0) break;
        ++answered;
    }
    EXPECT_EQ(answered, requests);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

TEST_F(ControlTest, TooManyClientsAreToldBusy) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();
    const std::size_t limit = ControlServerLimits{}.max_clients;
    std::vector<std::unique_ptr<RawClient>> clients;
    for (std::size_t i = 0; i < limit; ++i) {
        clients.push_back(std::make_unique<RawClient>(socket));
        ASSERT_TRUE(clients.back()->send(encode_control_request({})));
    }
    // Every one of them is served (and so counted by the daemon)...
    for (auto& c : clients) ASSERT_TRUE(c->read_line()) << "client " << (&c - clients.data());
    // ...and the next one is told why it is turned away.
    RawClient extra(socket);
    const auto line = extra.read_line();
    ASSERT_TRUE(line);
    const Result<ControlResponse> busy = parse_control_response(*line);
    ASSERT_TRUE(busy && busy->error) << *line;
    EXPECT_EQ(busy->error->code, ControlErrorCode::Busy);
    EXPECT_TRUE(extra.closed_by_peer());
    // A freed slot is served again.
    clients.pop_back();
    EXPECT_TRUE(wait_until([&] { return run_ctl({"--socket", socket, "status"}).code == 0; }, 3000ms, 50ms));
}

// 200 connections at once, none of them well behaved: stalled in the middle
// of a request, silent, sending and not reading, or writing a byte at a time.
// While they hang on, a FUSE daemon dies and comes back: the heal happens,
// and fuse-healerctl's status and heal are answered. Afterwards each of them
// is answered as soon as its request is whole.
TEST_F(ControlWithTarget, StalledSlowAndSilentClientsHoldUpNeitherOthersNorAHeal) {
    start();
    const std::string socket = d.control_socket();
    const std::string status = encode_control_request({});
    const std::string half = status.substr(0, status.size() / 2);
    std::vector<std::unique_ptr<RawClient>> stalled, silent, unread, slow;
    for (int i = 0; i < 80; ++i) {
        stalled.push_back(std::make_unique<RawClient>(socket));
        ASSERT_TRUE(stalled.back()->send(half));
    }
    for (int i = 0; i < 40; ++i) silent.push_back(std::make_unique<RawClient>(socket));
    for (int i = 0; i < 40; ++i) {
        unread.push_back(std::make_unique<RawClient>(socket));
        ASSERT_TRUE(unread.back()->send(status));
    }
    for (int i = 0; i < 40; ++i) slow.push_back(std::make_unique<RawClient>(socket));
    // The slow ones: one byte each every 20 ms, ~0.5 s for a request, all
    // through the heal below.
    std::atomic<bool> slow_sent{true};
    std::thread slow_writer([&] {
        for (const char ch : status) {
            for (auto& c : slow) slow_sent = c->send(std::string(1, ch)) && slow_sent;
            std::this_thread::sleep_for(20ms);
        }
    });

    const std::size_t mark = d.log().size();
    fuse.kill9();
    fuse.supervisor_restart(2);
    const bool healed = host_reads(vol + "/generation", "2\n");
    // heal first: its answer waits for a reconcile, after which the status
    // counts the heal (the mount is replaced before the count goes up).
    const CtlRun heal = run_ctl({"--socket", socket, "heal", vol});
    const CtlRun st = run_ctl({"--socket", socket, "status", "--json"});
    slow_writer.join();
    ASSERT_TRUE(healed) << d.log();
    EXPECT_TRUE(d.wait_for_log("healed", 1000ms, mark)) << d.log();
    ASSERT_EQ(st.code, 0) << describe(st);
    EXPECT_EQ(json::parse(st.out)["daemon"]["heals"], 1) << st.out;
    EXPECT_EQ(heal.code, 0) << describe(heal);
    EXPECT_EQ(heal.out.rfind(vol + ": healthy (heals 1, last outage ", 0), 0u) << describe(heal);

    const auto answered = [&](RawClient& c) {
        const auto line = c.read_line();
        if (!line) return false;
        const json doc = json::parse(*line, nullptr, false);
        return doc.is_object() && doc.value("ok", false);
    };
    ASSERT_TRUE(slow_sent.load());
    int ok = 0;
    for (auto& c : slow) ok += answered(*c);
    for (auto& c : unread) ok += answered(*c);
    for (auto& c : stalled) ok += c->send(status.substr(half.size())) && answered(*c);
    for (auto& c : silent) ok += c->send(status) && answered(*c);
    EXPECT_EQ(ok, 200);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

// Requests no client of ours sends: binary garbage, invalid UTF-8, a NUL in
// a path, JSON nested 30,000 deep, a 60 KB path, a 1 MB line. Each gets an
// error answer that is valid JSON (or request-too-large and a close), the
// connection stays usable after any line within the limit, and the daemon
// lives on.
TEST_F(ControlTest, HostileRequestsAreAnsweredAndTheDaemonSurvives) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();
    const auto answer_of = [](const std::optional<std::string>& line) -> json {
        if (!line) return "<no answer>";
        const json doc = json::parse(*line, nullptr, false);
        if (doc.is_discarded()) return "<not JSON: " + json(*line).dump(-1, ' ', false, json::error_handler_t::replace) + ">";
        return doc;
    };
    const auto code_of = [&](const std::optional<std::string>& line) -> std::string {
        const json doc = answer_of(line);
        if (!doc.is_object()) return doc.get<std::string>();
        return doc["ok"] == true ? "ok" : doc["error"]["code"].get<std::string>();
    };
    const std::vector<std::pair<std::string, std::string>> cases{
        {std::string("\x00\x01\x02\xff\xfe garbage", 14), "bad-request"},
        {"{\"command\":\"st\xff\xfe\"}", "bad-request"},
        {"{\"command\":\"heal\",\"target\":\"/a\\u0000b\"}", "bad-request"},
        {"{\"command\":\"heal\",\"target\":\"/\xc3\x28\"}", "bad-request"},
        {"{\"command\":\"heal\",\"target\":\"/x\",\"target\":\"/y\"}", "unknown-target"},
        {"{\"command\":\"status\",\"command\":\"stats\"}", "unknown-command"},
        {std::string(30000, '[') + std::string(30000, ']'), "bad-request"},
        {std::string(30000, '[') , "bad-request"},
        {"{\"command\":\"heal\",\"target\":\"/" + std::string(60000, 'a') + "\"}", "unknown-target"},
        {"{\"command\":\"heal\",\"target\":" + std::string(20000, '1') + "}", "bad-request"},
        {"{\"command\":\"heal\",\"target\":1e999999}", "bad-request"},
        {"\"\\ud800\"", "bad-request"},
        {"{\"command\":\"status\"}{\"command\":\"status\"}", "bad-request"},
        {"\r", "bad-request"},
    };
    {
        RawClient c(socket);
        for (const auto& [request, code] : cases) {
            ASSERT_TRUE(c.send(request + "\n"));
            const auto line = c.read_line();
            EXPECT_EQ(code_of(line), code) << json(request.substr(0, 80)).dump(-1, ' ', false, json::error_handler_t::replace);
        }
        // Still served on the same connection.
        ASSERT_TRUE(c.send(encode_control_request({})));
        EXPECT_EQ(code_of(c.read_line()), "ok");
    }
    // A megabyte without a newline: one answer, then the daemon closes.
    {
        RawClient c(socket);
        const std::size_t sent = c.send_until_stalled(std::string(64 * 1024, '{'), 1024 * 1024, 2000ms);
        EXPECT_GT(sent, kMaxControlRequestBytes);
        EXPECT_EQ(code_of(c.read_line()), "request-too-large");
        EXPECT_TRUE(c.closed_by_peer());
    }
    EXPECT_EQ(run_ctl({"--socket", socket, "status"}).code, 0);
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

// Peers refused for their uid are closed at once: however many connect (and
// never read their refusal), they take no slot from root's clients.
TEST_F(ControlTest, RefusedPeersTakeNoSlot) {
    Daemon d{sb};
    d.start();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    const std::string socket = d.control_socket();
    ASSERT_EQ(chmod(socket.c_str(), 0666), 0);
    const std::size_t limit = ControlServerLimits{}.max_clients;
    // A child as nobody opens limit + 44 connections, sends a request on
    // each, reads none, and holds them all open until told to go.
    int ready[2], go[2];
    ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        close(go[1]);  // else its own copy keeps the read below from seeing EOF
        if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
            setresuid(kNobody, kNobody, kNobody) != 0)
            _exit(120);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket.c_str());
        int connected = 0;
        for (std::size_t i = 0; i < limit + 44; ++i) {
            const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) break;
            (void)!::send(fd, "{\"command\":\"status\"}\n", 21, MSG_NOSIGNAL);
            ++connected;
        }
        (void)!write(ready[1], &connected, sizeof connected);
        char c;
        (void)!read(go[0], &c, 1);
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    int connected = 0;
    ASSERT_EQ(read(ready[0], &connected, sizeof connected), static_cast<ssize_t>(sizeof connected));
    EXPECT_EQ(connected, static_cast<int>(limit + 44));
    // While the child still holds every connection: root is served.
    const CtlRun r = run_ctl({"--socket", socket, "status"});
    EXPECT_EQ(r.code, 0) << describe(r);
    close(go[1]);
    close(ready[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();
}

// ---- command line -------------------------------------------------------------------

TEST_F(ControlTest, CommandLine) {
    const CtlRun version = run_ctl({"--version"});
    EXPECT_EQ(version.code, 0);
    EXPECT_EQ(version.out, "fuse-healerctl " FUSE_HEALER_VERSION "\n");
    const CtlRun help = run_ctl({"--help"});
    EXPECT_EQ(help.code, 0);
    for (const char* needle : {"status", "heal", "--socket", "--config", "69 fuse-healerd is not running",
                               "77 permission denied"})
        EXPECT_NE(help.out.find(needle), std::string::npos) << needle << "\n" << help.out;
    const CtlRun status_help = run_ctl({"status", "--help"});
    EXPECT_EQ(status_help.code, 0);
    EXPECT_NE(status_help.out.find("--json"), std::string::npos) << status_help.out;
    EXPECT_EQ(run_ctl({}).code, kCtlExitUsage);
    EXPECT_EQ(run_ctl({"status", "--no-such-flag"}).code, kCtlExitUsage);
    EXPECT_EQ(run_ctl({"heal"}).code, kCtlExitUsage) << "heal needs a TARGET";
    EXPECT_EQ(run_ctl({"heal", ""}).code, kCtlExitUsage) << "an empty TARGET is not the current directory";
    EXPECT_EQ(run_ctl({"--socket", "", "status"}).code, kCtlExitUsage);

    // Without --socket, the socket comes from the config file.
    const std::string conf = sb.path("fh.toml");
    write_file(conf, "[control]\nsocket = \"" + sb.path("from-config.sock") + "\"\n");
    const CtlRun from_config = run_ctl({"--config", conf, "status"});
    EXPECT_EQ(from_config.code, kCtlExitNotRunning) << describe(from_config);
    EXPECT_NE(from_config.err.find("no socket at " + sb.path("from-config.sock")), std::string::npos)
        << from_config.err;
    write_file(conf, "[control]\nsocket = \"\"\n");
    const CtlRun off = run_ctl({"--config", conf, "status"});
    EXPECT_EQ(off.code, kCtlExitNotRunning) << describe(off);
    EXPECT_NE(off.err.find("the control socket is turned off"), std::string::npos) << off.err;
    write_file(conf, "[control]\nsocket = 7\n");
    const CtlRun bad = run_ctl({"--config", conf, "status"});
    EXPECT_EQ(bad.code, kCtlExitConfig) << describe(bad);
    EXPECT_NE(bad.err.find(conf + ":2:10:"), std::string::npos) << bad.err;
}

} // namespace
} // namespace fh::test
