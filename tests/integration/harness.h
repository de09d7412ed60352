// Integration-test harness: real FUSE daemons, kubelet-like bind mounts and
// emulated containers, all inside a private mount namespace so that nothing
// reaches the machine's mount table.
//
// Every test runs in its own process (gtest_discover_tests), and main.cpp
// calls enter_private_mount_namespace() once before any thread exists. A test
// then builds a Sandbox (a shared tmpfs under /tmp holding kubelet/ and
// runtime/), starts FuseDaemons at source paths in it, csi_bind()s them into
// pod paths, starts Containers on the pod paths and watches their probes.
//
// Setup actions throw std::runtime_error with the reason on failure (gtest
// reports it as a test failure); waits and queries return bool/optional.
//
// Start processes from the test's main thread: children get
// PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that forked them
// exits, so that a crashed test leaves no FUSE daemon behind.
//
// Lifetime: FuseDaemon, Container and Daemon keep a reference to their
// Sandbox and must be destroyed before it (declare them after it). Each kills
// its own process when destroyed; the Sandbox also kills (SIGKILL + waitpid)
// whatever of its children is still running, aborts the FUSE connections
// mounted in it (a process blocked in a request that a SIGSTOPped daemon has
// already read cannot die until then), reaps, and lazily unmounts.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace fh::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- process-wide setup ---------------------------------------------------

// Enters a private mount namespace: unshare(CLONE_NEWNS), make / rprivate,
// and mount fusectl at /sys/fs/fuse/connections when this namespace has none
// (failure there is ignored). Returns false with the reason in *why when not
// root, when /dev/fuse is missing, or when a step fails. Call it once, from
// main(), before any thread is created (unshare affects the calling thread).
bool enter_private_mount_namespace(std::string* why);

// Returns the result of the one enter_private_mount_namespace() call made by
// the test main: empty when the namespace is ready, else the reason to skip.
const std::string& namespace_skip_reason();
void set_namespace_skip_reason(std::string why);

// Paths of the tools, from the build (empty when not built).
std::string testfs_path();            // fh_testfs
std::string test_container_path();    // fh_test_container
std::string daemon_path();            // fuse-healerd, empty when the target does not exist
std::string ctl_path();               // fuse-healerctl, empty when the target does not exist

// ---- mountinfo helpers (independent of lib/core) --------------------------

// One line of a mountinfo file, with the octal escapes (\040 ...) undone.
struct MountLine {
    int id = 0;
    int parent = 0;
    std::string device;        // "major:minor"
    std::string root;
    std::string mountpoint;
    std::string vfs_options;   // per-mount options, e.g. "ro,nosuid"
    std::string optional;      // optional fields, e.g. "shared:12 master:3"
    std::string fstype;
    std::string source;
    std::string fs_options;    // superblock options
    std::string raw;           // the line as read

    bool read_only() const;    // "ro" in vfs_options
    int shared_group() const;  // N of "shared:N", else 0
    int master_group() const;  // N of "master:N", else 0
};

inline constexpr const char* kSelfMountinfo = "/proc/self/mountinfo";

// Returns the raw lines of a mountinfo file (empty when unreadable).
std::vector<std::string> read_mountinfo_lines(const std::string& path = kSelfMountinfo);
// Parses a mountinfo file, in file order (empty when unreadable).
std::vector<MountLine> read_mount_lines(const std::string& path = kSelfMountinfo);
std::optional<MountLine> parse_mount_line(const std::string& line);

// Number of mounts whose mountpoint is `prefix` or lies below it.
int count_mounts_under(const std::string& prefix, const std::string& mountinfo = kSelfMountinfo);
// Number of mounts at exactly `path` (the whole stack).
int count_mounts_at(const std::string& path, const std::string& mountinfo = kSelfMountinfo);
// The stack at `path`, bottom first: (device "major:minor", fstype).
std::vector<std::pair<std::string, std::string>> stack_at(const std::string& path,
                                                          const std::string& mountinfo = kSelfMountinfo);
// The topmost mount at `path` (the one no other mount at `path` sits on).
std::optional<MountLine> topmost_at(const std::string& path, const std::string& mountinfo = kSelfMountinfo);

// ---- fusectl ------------------------------------------------------------------

// The fusectl directory of a FUSE superblock ("major:minor" as in mountinfo):
// /sys/fs/fuse/connections/<dev>. enter_private_mount_namespace() mounts
// fusectl there when this namespace has none.
std::string fusectl_dir(const std::string& device);
// Aborts a FUSE connection (writes to its fusectl "abort"), as an operator
// would for a hung daemon. Returns 0 or the errno.
int fusectl_abort(const std::string& device);
// The number of requests waiting on a connection, or -1 when unreadable.
int fusectl_waiting(const std::string& device);

// ---- small file helpers -----------------------------------------------------

// Returns the contents of a file, or nullopt with errno set.
std::optional<std::string> read_file(const std::string& path);
// Writes a file (throws on failure).
void write_file(const std::string& path, const std::string& contents);
// mkdir -p (throws on failure).
void make_dirs(const std::string& path);
// Returns the errno of reading `path` (0 on success): ENOTCONN for a dead FUSE.
int read_errno(const std::string& path);
// Returns "ENOTCONN" etc. for an errno.
std::string errno_name(int err);

// One line per thread of pid: "tid state wchan [kernel stack]" (kernel stack
// needs root), for diagnosing hangs in test failure messages.
std::string describe_process(pid_t pid);

// Polls `cond` every `poll` until it is true or `timeout` passes.
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
                std::chrono::microseconds poll = 1ms);

// ---- Sandbox ----------------------------------------------------------------

class Sandbox {
public:
    // mkdtemp /tmp/fh-sandbox-XXXXXX, mount a tmpfs on it, make it MS_SHARED
    // (like / on a systemd host) and create kubelet/, runtime/ and state/.
    Sandbox();
    ~Sandbox();
    Sandbox(const Sandbox&) = delete;
    Sandbox& operator=(const Sandbox&) = delete;

    const std::string& root() const { return root_; }
    std::string kubelet() const { return root_ + "/kubelet"; }
    std::string runtime() const { return root_ + "/runtime"; }
    std::string state() const { return root_ + "/state"; }
    std::string path(const std::string& rel) const { return root_ + "/" + rel; }
    void make_dirs(const std::string& path) const { fh::test::make_dirs(path); }

    // <kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<vol>/mount
    std::string pod_volume_path(const std::string& uid, const std::string& vol) const;
    // <kubelet>/pods/<uid>/volume-subpaths/<vol>/<ctr>/<n>
    std::string pod_subpath_path(const std::string& uid, const std::string& vol, const std::string& ctr,
                                 int n) const;
    // Creates the pod volume dir with its vol_data.json (as kubelet does before
    // NodePublishVolume) and returns the mount path (not yet mounted).
    std::string make_pod_volume(const std::string& uid, const std::string& vol,
                                const std::string& volume_handle = "",
                                const std::string& driver = "fuse.csi.fluid.io");

    // Child-process bookkeeping, used by FuseDaemon/Container/Daemon.
    void track(pid_t pid) { children_.insert(pid); }
    void untrack(pid_t pid) { children_.erase(pid); }

    // Writes to fusectl "abort" of every FUSE mount under root(); returns how
    // many were aborted. The destructor does this after SIGKILLing children.
    int abort_fuse_connections();

    // Returns a fresh unique name ("name-1", "name-2", ...) for files in runtime/.
    std::string unique(const std::string& name);

private:
    std::string root_;
    bool mounted_ = false;
    std::set<pid_t> children_;
    int counter_ = 0;
};

// Bind-mounts <source_path>/<source_subdir> (subdir may be empty) on
// target_path (created with mkdir -p), like a CSI NodePublishVolume: a plain
// MS_BIND, then a MS_REMOUNT|MS_BIND|MS_RDONLY when read_only. Throws on error.
void csi_bind(const std::string& source_path, const std::string& source_subdir, const std::string& target_path,
              bool read_only = false);

// Lazily unmounts path (umount2 MNT_DETACH). Returns 0 or the errno.
int lazy_umount(const std::string& path);

// ---- FuseDaemon ---------------------------------------------------------------

enum class FuseKind {
    TestFs,      // fh_testfs, fstype fuse.fh_testfs, read-only
    BindFs,      // bindfs -f over a directory holding the same files
    SquashFuse,  // squashfuse -f of a mksquashfs image of the same files
};
const char* to_string(FuseKind k);

// A FUSE daemon serving, at `source_path`:
//   generation  "N\n",  data/hello "hello from generation N\n",  sub/inner "inner N\n"
// It runs in the foreground as a child of this process (stdout+stderr go to a
// log in the sandbox's runtime/), so it can be killed, stopped and restarted.
class FuseDaemon {
public:
    FuseDaemon(Sandbox& sb, std::string source_path, FuseKind kind = FuseKind::TestFs);
    ~FuseDaemon();
    FuseDaemon(const FuseDaemon&) = delete;
    FuseDaemon& operator=(const FuseDaemon&) = delete;

    // Extra arguments for the next start (fh_testfs: e.g. {"--rw-mount"},
    // {"--tree", "x=y"}; bindfs: extra options).
    void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }

    // Starts the daemon (mkdir -p the source first) and waits until a FUSE
    // mount of the expected fstype appears at the source path that was not
    // there before the start (mount ids are reused by the kernel, so "new" is
    // "not in the set seen just before"); polls every 1 ms up to 5 s. Then
    // waits (up to 5 s more) until the daemon catches SIGTERM (or blocks it
    // to take it with sigwait()), so that a terminate() right after start()
    // unmounts. Throws when the daemon exits, or the mount or the handling
    // of SIGTERM does not appear.
    void start(int generation);
    // SIGKILL and reap. The mount stays behind, stale (ENOTCONN).
    void kill9();
    // SIGTERM and reap: the daemon unmounts its source on the way out.
    int terminate();
    void stop();  // SIGSTOP: requests hang
    void cont();  // SIGCONT
    // As a container entrypoint does under a supervisor: kill -9 when running,
    // umount -l the stale source, start again at the same path.
    void supervisor_restart(int generation);

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    int generation() const { return generation_; }
    const std::string& source() const { return source_; }
    FuseKind kind() const { return kind_; }
    // The fstype observed for the current mount ("fuse.fh_testfs", ...).
    const std::string& fstype() const { return fstype_; }
    // The current mount as seen at start (id, device, ...).
    const MountLine& mount() const { return mount_; }
    // The daemon's captured stdout+stderr (all starts).
    std::string log() const;

private:
    void reap(int sig);
    std::vector<std::string> command(int generation);

    Sandbox& sb_;
    std::string source_;
    FuseKind kind_;
    std::vector<std::string> extra_args_;
    pid_t pid_ = -1;
    int generation_ = 0;
    std::string fstype_;
    MountLine mount_;
    std::string log_path_;
};

// Writes the standard files of generation N (generation, data/hello,
// sub/inner) into dir, creating it.
void write_generation_tree(const std::string& dir, int generation);

// ---- PodCgroup ------------------------------------------------------------------

// A cgroup named as kubelet's cgroupfs driver names a pod's:
// <cgroup2 mount>/fh-test-<pid>-<n>/kubepods/pod<uid>. The daemon tells the
// container copies of different pods apart by it (core/pod_cgroup.h). Made
// in the cgroup v2 hierarchy (the first cgroup2 mount of /proc/self/mountinfo,
// e.g. /sys/fs/cgroup/unified on a hybrid host); throws when there is none
// or it cannot be written. The destructor moves any process still in it back
// to the hierarchy's root and removes the three directories.
class PodCgroup {
public:
    explicit PodCgroup(const std::string& pod_uid);
    ~PodCgroup();
    PodCgroup(const PodCgroup&) = delete;
    PodCgroup& operator=(const PodCgroup&) = delete;

    // Moves `pid` into the pod's cgroup (throws on failure).
    void add(pid_t pid) const;
    const std::string& path() const { return pod_; }

private:
    std::string root_;  // the cgroup2 mount
    std::string top_;   // fh-test-<pid>-<n>
    std::string pod_;   // .../kubepods/pod<uid>
};

// ---- Container ------------------------------------------------------------------

// How the container's /data is made after the rbind (HostToContainer = Slave).
enum class ContainerPropagation { Slave, Private };

struct ContainerEvent {
    std::int64_t usec = 0;  // CLOCK_MONOTONIC microseconds (comparable to monotonic_usec())
    std::string state;      // "ok ls=... file=...", "empty", "error ENOTCONN"

    // "ok", "empty" or "error".
    std::string kind() const;
    bool ok() const { return kind() == "ok"; }
    bool is_error() const { return kind() == "error"; }
    // For "error E...": the errno name, else "".
    std::string error() const;
    // For "ok": the unescaped contents after "file=" (nullopt without --file).
    std::optional<std::string> contents() const;
    // For "ok": the directory listing, sorted.
    std::vector<std::string> listing() const;
};

std::int64_t monotonic_usec();

// fh_test_container on a pod path: its own mount namespace with /data = an
// rbind of the volume, rslave or rprivate, after pivot_root.
class Container {
public:
    explicit Container(Sandbox& sb);
    ~Container();
    Container(const Container&) = delete;
    Container& operator=(const Container&) = delete;

    // Starts it and waits (5 s) for "ready". `file` is probed under /data.
    void start(const std::string& volume_path, ContainerPropagation propagation, const std::string& file = "",
               int interval_us = 1000);
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }

    // All state-change lines received so far (reads the pipe without blocking).
    const std::vector<ContainerEvent>& events();
    // The most recent state, if any.
    std::optional<ContainerEvent> last();
    // Waits until the current state satisfies pred (checked against the latest
    // event now, then against every new event). Returns the matching event.
    std::optional<ContainerEvent> wait_for_state(const std::function<bool(const ContainerEvent&)>& pred,
                                                 std::chrono::milliseconds timeout = 5000ms);
    // The states so far, e.g. {"ok ls=...", "error ENOTCONN"}.
    std::vector<std::string> state_sequence();

    std::string mountinfo_path() const { return "/proc/" + std::to_string(pid_) + "/mountinfo"; }
    std::vector<std::string> mountinfo() const { return read_mountinfo_lines(mountinfo_path()); }
    std::vector<MountLine> mounts() const { return read_mount_lines(mountinfo_path()); }
    // What the container's stderr said.
    std::string log() const;

    // Closes stdin (the tool exits on EOF), waits up to `timeout`, then
    // SIGKILLs and waits up to `timeout` again. Returns the wait status; -1
    // when not running, or when the process could not exit because a probe is
    // stuck in a FUSE request that a stopped daemon has already read (then it
    // stays running(): continue or kill the daemon and stop() again).
    int stop(std::chrono::milliseconds timeout = 2000ms);

private:
    bool read_available(int timeout_ms);

    Sandbox& sb_;
    pid_t pid_ = -1;
    int out_fd_ = -1;
    int in_fd_ = -1;
    std::string buf_;
    std::vector<ContainerEvent> events_;
    std::string log_path_;
};

// ---- gtest fixtures -----------------------------------------------------------

// Base fixture for integration tests: skips with the reason when the private
// mount namespace could not be entered (not root, no /dev/fuse). main.cpp
// also skips every test in that case, but only a fixture marks each test as
// skipped in gtest's own report.
class IntegrationTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!namespace_skip_reason().empty()) GTEST_SKIP() << namespace_skip_reason();
    }
};

// Fixture for tests of fuse-healerd: also skips when the daemon is not built.
class DaemonTest : public IntegrationTest {
protected:
    void SetUp() override;
};

// ---- Daemon (fuse-healerd) -----------------------------------------------------

// Runs fuse-healerd with a config written into the sandbox:
//   [kubelet] root_dir = <sandbox>/kubelet
//   [state]   dir      = <sandbox>/state
//   [log]     level    = "debug"
//   [control] socket   = control_socket()   (unless extra_toml has [control])
// followed by `extra_toml` (which must therefore start with a table header
// other than the first three, e.g. "[heal]\nstrategy = \"replace\"\n").
// stdout and stderr are captured into <sandbox>/runtime/fuse-healerd-N.log.
class Daemon {
public:
    explicit Daemon(Sandbox& sb, std::string binary = daemon_path());
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // True when the binary exists; else false with the reason (tests skip).
    static bool available(std::string* why, const std::string& binary = daemon_path());

    // Returns the config text that start() writes.
    std::string config_text(const std::string& extra_toml = "") const;
    // Writes the config and starts `binary --config FILE [extra_args...]`.
    void start(const std::string& extra_toml = "", const std::vector<std::string>& extra_args = {});
    void kill9();
    // SIGTERM, wait (up to `timeout`, then SIGKILL). Returns the exit code, or
    // 128+signal when killed by a signal, -1 when not running.
    int terminate(std::chrono::milliseconds timeout = 10000ms);
    // Reaps the daemon if it exited by itself; returns the same code as
    // terminate() or nullopt while it runs.
    std::optional<int> poll_exit();

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    const std::string& config_path() const { return config_path_; }
    const std::string& log_path() const { return log_path_; }
    // <sandbox>/control-N.sock, one per Daemon object: the [control] socket
    // the harness writes into the config.
    const std::string& control_socket() const { return control_socket_; }
    std::string log() const;
    // Waits until the log contains `needle` (searching from `from` chars on).
    bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout = 5000ms,
                      std::size_t from = 0) const;

private:
    Sandbox& sb_;
    std::string binary_;
    pid_t pid_ = -1;
    std::string config_path_;
    std::string log_path_;
    std::string control_socket_;
};

// Starts argv as a child in this namespace with stdin from /dev/null and
// stdout+stderr appended to log_path. Returns the pid (throws on failure).
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path);
// Converts a wait status to exit code / 128+signal.
int exit_code_of(int wait_status);

// Returns the first sanitizer report (ASan, LSan, UBSan, TSan) in `text`,
// from its first line on (at most 60 lines), or "" when there is none. In a
// sanitizer build (scripts/sanitize.sh) every report ends its process, whose
// stderr holds it: ~Sandbox() fails the test with each report found in the
// logs of the processes started in the sandbox (the files of runtime/), and
// a test that captures a process's stderr itself checks it with this.
std::string sanitizer_report(const std::string& text);

}  // namespace fh::test
