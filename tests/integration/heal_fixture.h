// Shared setup for tests of fuse-healerd: one dataset (a FUSE daemon at a
// source path) bound into pods, containers on the pod paths, the daemon; and
// what those tests read back: the files of each generation, the daemon's log
// lines, its state file. Used by tests/integration/*_test.cpp, the fault
// tests (tests/fault/fault_fixture.h builds on it) and the fault campaign.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace fh::test {

// How long a heal, or anything the daemon does on an event, may take here.
inline constexpr auto kHealTimeout = 5000ms;

// ---- the files a FuseDaemon serves (harness.h) ------------------------------

// The contents of `generation`, data/hello and sub/inner of generation `g`.
inline std::string gen(int g) { return std::to_string(g) + "\n"; }
inline std::string hello(int g) { return "hello from generation " + std::to_string(g) + "\n"; }
inline std::string inner(int g) { return "inner " + std::to_string(g) + "\n"; }

// Returns true for the errno of a read through a dead FUSE mount.
inline bool is_dead_errno(int e) { return e == ENOTCONN || e == ECONNABORTED; }

// ---- setup ------------------------------------------------------------------

// The dataset most tests use: a FuseDaemon at <runtime>/ds/fuse, started at
// generation 1 by the constructor, with `extra_args` (kept for its restarts).
class Dataset : public FuseDaemon {
public:
    explicit Dataset(Sandbox& sb, std::vector<std::string> extra_args = {}, FuseKind kind = FuseKind::TestFs)
        : FuseDaemon(sb, sb.runtime() + "/ds/fuse", kind) {
        set_extra_args(std::move(extra_args));
        start(1);
    }
};

// Publishes `source` read-only on a new CSI volume `vol` of pod `uid` (its
// vol_data.json naming `volume_handle`), as kubelet and a CSI driver's
// NodePublishVolume do. Returns the target.
inline std::string publish_volume(Sandbox& sb, const std::string& source, const std::string& uid,
                                  const std::string& vol = "vol", const std::string& volume_handle = "") {
    const std::string target = sb.make_pod_volume(uid, vol, volume_handle);
    csi_bind(source, "", target, true);
    return target;
}

// Binds <source>/<subdir> read-only at subPath 0 of container "app" in pod
// `uid`'s volume `vol`, as kubelet does for a subPath. Returns the target.
inline std::string publish_subpath(Sandbox& sb, const std::string& source, const std::string& subdir,
                                   const std::string& uid, const std::string& vol = "vol") {
    const std::string target = sb.pod_subpath_path(uid, vol, "app", 0);
    csi_bind(source, subdir, target, true);
    return target;
}

// [match] source_prefixes = the sandbox's runtime/: a FUSE mount elsewhere
// (a stale copy a test makes outside the kubelet root) is no source.
inline std::string prefixes_toml(const Sandbox& sb) {
    return "[match]\nsource_prefixes = [\"" + sb.runtime() + "\"]\n";
}

// Forks a helper process that dies with this one: the child (0 returned)
// gets SIGKILL when its parent exits (PR_SET_PDEATHSIG; a parent gone before
// the prctl ends it at once). Returns the child's pid in the parent; throws
// when fork fails.
inline pid_t fork_tied_child() {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
    }
    return pid;
}

// Returns true when `pid` is stopped (state T in /proc/<pid>/stat).
inline bool is_stopped(pid_t pid) {
    auto st = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!st) return false;
    auto paren = st->rfind(')');
    return paren != std::string::npos && st->compare(paren, 3, ") T") == 0;
}

// SIGSTOPs a process (waits until it is stopped; throws when it cannot) and
// SIGCONTs it when destroyed (or on resume()).
class Stopped {
public:
    explicit Stopped(pid_t pid) : pid_(pid) {
        if (kill(pid_, SIGSTOP) != 0 || !wait_until([&] { return is_stopped(pid_); }, 2000ms))
            throw std::runtime_error("could not stop pid " + std::to_string(pid_));
    }
    ~Stopped() { resume(); }
    Stopped(const Stopped&) = delete;
    Stopped& operator=(const Stopped&) = delete;
    void resume() {
        if (pid_ > 0) kill(pid_, SIGCONT);
        pid_ = -1;
    }

private:
    pid_t pid_;
};

// SIGSTOPs a FUSE daemon and SIGCONTs it when destroyed (or on resume()), so
// that teardown never meets a stopped daemon, whatever assertion failed.
class Hang {
public:
    explicit Hang(FuseDaemon& f) : f_(f) {
        f_.stop();
        stopped_ = true;
    }
    ~Hang() { resume(); }
    Hang(const Hang&) = delete;
    Hang& operator=(const Hang&) = delete;
    void resume() {
        if (!stopped_) return;
        stopped_ = false;
        if (f_.running()) f_.cont();
    }

private:
    FuseDaemon& f_;
    bool stopped_ = false;
};

// ---- the daemon's log ---------------------------------------------------------

// The lines of `text` that contain every one of `needles`.
inline std::vector<std::string> lines_with(const std::string& text, const std::vector<std::string>& needles) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        bool all = true;
        for (const auto& n : needles) all = all && line.find(n) != std::string::npos;
        if (all) out.push_back(line);
    }
    return out;
}

// The lines, each indented, for a failure message.
inline std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += "  " + x + "\n";
    return s;
}

// The last `n` characters of a log, for a failure message.
inline std::string tail(const std::string& s, std::size_t n = 6000) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// `s` as fuse-healerd writes a path in a log line: space, tab, newline,
// backslash and the other control characters as \ooo octal escapes, as in
// /proc/self/mountinfo (core/control_protocol.h, escape_control_cell).
inline std::string log_escaped(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c <= 0x20 || c == '\\' || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\%03o", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// The needle of a heal event line for exactly this target (the path is
// followed by " pod=", so a prefix of another path does not match). The
// path is written as the daemon logs it: see log_escaped().
inline std::string event_for(const std::string& event, const std::string& target) {
    return event + ": target=" + log_escaped(target) + " ";
}

// ---- the daemon's state file ------------------------------------------------------

inline std::string state_file(const Sandbox& sb) { return sb.state() + "/origins.json"; }

// True when the state file names every one of `targets` (as JSON strings).
inline bool state_has(const Sandbox& sb, const std::vector<std::string>& targets) {
    auto text = read_file(state_file(sb));
    if (!text) return false;
    auto doc = nlohmann::json::parse(*text, nullptr, false);
    if (!doc.is_object() || !doc.contains("origins")) return false;
    std::set<std::string> have;
    for (const auto& o : doc["origins"])
        if (o.is_object() && o.contains("target") && o["target"].is_string()) have.insert(o["target"]);
    for (const auto& t : targets)
        if (!have.count(t)) return false;
    return true;
}

// Starts the daemon and waits until it is ready and its first reconcile has
// learned (and saved) the origins of `targets` (none: only ready): only then
// may a FUSE daemon die, since the supervisor's umount -l removes the source
// the origin is read from. Throws when either does not happen in time.
inline void start_daemon(Daemon& d, Sandbox& sb, const std::vector<std::string>& targets,
                         const std::string& toml = "", const std::vector<std::string>& args = {}) {
    d.start(toml, args);
    if (!d.wait_for_log("ready: watching", kHealTimeout))
        throw std::runtime_error("fuse-healerd did not get ready: " + tail(d.log()));
    if (!targets.empty() && !wait_until([&] { return state_has(sb, targets); }, kHealTimeout))
        throw std::runtime_error("fuse-healerd did not learn the origins; state: " +
                                 read_file(state_file(sb)).value_or("(none)") + "\nlog:\n" + tail(d.log()));
}

// ---- waits ----------------------------------------------------------------------

// Waits until the container's latest state reads `file` content `want`.
inline bool container_reads(Container& c, const std::string& want, std::chrono::milliseconds timeout = 5000ms) {
    return c
        .wait_for_state([&](const ContainerEvent& e) { return e.ok() && e.contents() && *e.contents() == want; },
                        timeout)
        .has_value();
}

// Waits until the container's latest state is an error (the dead FUSE).
inline bool container_broken(Container& c, std::chrono::milliseconds timeout = 5000ms) {
    return c.wait_for_state([](const ContainerEvent& e) { return e.is_error(); }, timeout).has_value();
}

// Starts `c` on `target` (propagation `p`, probing `file` under /data) and
// waits until it reads `want`; returns whether it did.
inline bool start_reading(Container& c, const std::string& target, ContainerPropagation p, const std::string& file,
                          const std::string& want) {
    c.start(target, p, file);
    return container_reads(c, want);
}

// Returns the states a container went through that are neither the old nor
// the new content nor an error: an empty directory or any other content.
inline std::vector<std::string> bad_states(Container& c, const std::vector<std::string>& allowed_contents) {
    std::vector<std::string> bad;
    for (const auto& e : c.events()) {
        if (e.is_error()) continue;
        if (e.ok() && e.contents()) {
            bool known = false;
            for (const auto& a : allowed_contents) known = known || *e.contents() == a;
            if (known) continue;
        }
        bad.push_back(e.state);
    }
    return bad;
}

// Returns the FUSE mounts (fstype fuse or fuse.*) in a mountinfo file.
inline std::vector<MountLine> fuse_mounts(const std::string& mountinfo = kSelfMountinfo) {
    std::vector<MountLine> out;
    for (auto& m : read_mount_lines(mountinfo))
        if (m.fstype == "fuse" || m.fstype.rfind("fuse.", 0) == 0) out.push_back(m);
    return out;
}

// Waits until the daemon has learned (and saved) the origin of `target`: a
// crash before that leaves it nothing to heal from once the stale source is
// lazily unmounted, as it would a real node.
inline bool daemon_learned(const Sandbox& sb, const std::string& target, std::chrono::milliseconds timeout = 5000ms) {
    return wait_until([&] { return state_has(sb, {target}); }, timeout);
}

// Waits until reading `path` gives `want`.
inline bool host_reads(const std::string& path, const std::string& want, std::chrono::milliseconds timeout = 5000ms) {
    return wait_until([&] { return read_file(path) == want; }, timeout);
}

} // namespace fh::test
