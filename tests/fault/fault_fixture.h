// Shared helpers of the fault tests (tests/fault/*_test.cpp): races with
// kubelet, resource faults and path attacks on the target side, against
// real FUSE daemons and fuse-healerd, each test in its own process and
// private mount namespace (tests/integration/main.cpp, harness.h). Here: the
// whole mount table compared, fh_testfs's gate, the control socket; the
// setup, log lines and state file of every test of fuse-healerd are in
// tests/integration/heal_fixture.h.
#pragma once

#include <gtest/gtest.h>

#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/control_protocol.h"
#include "engine/ctl_client.h"
#include "harness.h"
#include "heal_fixture.h"

namespace fh::test {

// fh_testfs's extra tree for the gated heals (see Gate): a directory "gated"
// that subPath targets bind. One level down: a held lookup holds every
// lookup in its directory (libfuse does not ask for FUSE_PARALLEL_DIROPS),
// and the root must stay served.
inline const std::vector<std::string> kGatedTree = {"--tree", "gate/gated/inner=gated {gen}\\n"};

// Returns `a` followed by `b` (FuseDaemon arguments).
inline std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// ---- the whole mount table --------------------------------------------------

// One mount as compared across tables: where, which superblock, which part
// of it, which type. Mount ids and options are left out (ids are reused,
// a healed mount keeps the flags of the one it replaced).
inline std::string mount_key(const MountLine& m) {
    return m.mountpoint + " dev=" + m.device + " root=" + m.root + " type=" + m.fstype;
}

// The table as a multiset of mount_key()s.
using TableKeys = std::multiset<std::string>;
inline TableKeys table_keys(const std::string& mountinfo = kSelfMountinfo) {
    TableKeys out;
    for (const auto& m : read_mount_lines(mountinfo)) out.insert(mount_key(m));
    return out;
}

// What changed between two tables.
struct TableDiff {
    std::vector<std::string> removed;  // in `before`, not in `after`
    std::vector<std::string> added;    // in `after`, not in `before`
    bool empty() const { return removed.empty() && added.empty(); }
};

inline TableDiff table_diff(const TableKeys& before, const TableKeys& after) {
    TableDiff d;
    std::set_difference(before.begin(), before.end(), after.begin(), after.end(), std::back_inserter(d.removed));
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(d.added));
    return d;
}

inline std::string to_text(const TableDiff& d) {
    std::string s = "removed:\n" + joined(d.removed) + "added:\n" + joined(d.added);
    return s;
}

// The diff a heal of `targets` makes: at each target (and at the source,
// restarted by its supervisor), the mount of the dead superblock `old_dev`
// replaced by one of `new_dev`, with the same root.
inline TableDiff expected_heal_diff(const TableKeys& before, const std::vector<std::string>& mountpoints,
                                    const std::string& old_dev, const std::string& new_dev) {
    TableDiff d;
    for (const auto& key : before)
        for (const auto& mp : mountpoints) {
            const std::string prefix = mp + " dev=" + old_dev + " ";
            if (key.compare(0, prefix.size(), prefix) != 0) continue;
            d.removed.push_back(key);
            d.added.push_back(mp + " dev=" + new_dev + " " + key.substr(prefix.size()));
        }
    std::sort(d.removed.begin(), d.removed.end());
    std::sort(d.added.begin(), d.added.end());
    return d;
}

// ---- the gate of fh_testfs ----------------------------------------------------

// fh_testfs --gate PATH=FILE: every request for PATH in the filesystem is
// held until FILE exists. Use args() as the FuseDaemon's extra arguments;
// wait_held() returns once a request (e.g. the healer's probe of a clone
// path) is held; open() lets it (and every later one) through. Destroyed,
// the gate opens, so that nothing stays blocked whatever failed.
class Gate {
public:
    Gate(Sandbox& sb, std::string fs_path) : fs_path_(std::move(fs_path)) {
        file_ = sb.runtime() + "/" + sb.unique("gate");
    }
    ~Gate() { open(); }
    Gate(const Gate&) = delete;
    Gate& operator=(const Gate&) = delete;

    std::vector<std::string> args() const { return {"--gate", fs_path_ + "=" + file_}; }
    bool held() const { return access((file_ + ".held").c_str(), F_OK) == 0; }
    bool wait_held(std::chrono::milliseconds timeout = kHealTimeout) const {
        return wait_until([&] { return held(); }, timeout);
    }
    void open() {
        if (!opened_) write_file(file_, "open\n");
        opened_ = true;
    }

private:
    std::string fs_path_;
    std::string file_;
    bool opened_ = false;
};

// Restarts `fuse` at generation `g`, as its supervisor does, with the gated
// directory of kGatedTree held shut by `gate`: the heal of the subPath
// target cloned from it stops in its probe there, after the heals planned
// before it. Returns true once that probe is held (false: not in time).
inline bool restart_gated(FuseDaemon& fuse, const Gate& gate, int g) {
    fuse.set_extra_args(plus(kGatedTree, gate.args()));
    fuse.supervisor_restart(g);
    return gate.wait_held();
}

// ---- the control socket ---------------------------------------------------------

// Returns the daemon's status answer as JSON, or null when it did not answer.
inline nlohmann::json status_json(const std::string& socket) {
    auto answer = control_exchange(socket, encode_control_request({ControlCommand::Status, ""}), 5s);
    if (!std::holds_alternative<std::string>(answer)) return nlohmann::json();
    return nlohmann::json::parse(std::get<std::string>(answer), nullptr, false);
}

// Returns the status entry of `target` (null when not listed).
inline nlohmann::json target_status(const nlohmann::json& status, const std::string& target) {
    if (!status.is_object() || !status.contains("targets")) return nlohmann::json();
    for (const auto& t : status["targets"])
        if (t["target"] == target) return t;
    return nlohmann::json();
}

// Asks `d` for its status (every `poll`, up to `timeout`) until `pred` holds
// for the answer. Returns whether it did; `*last` (when given) is the last
// answer, for the failure message.
inline bool wait_for_status(const Daemon& d, const std::function<bool(const nlohmann::json&)>& pred,
                            nlohmann::json* last = nullptr, std::chrono::milliseconds timeout = kHealTimeout,
                            std::chrono::microseconds poll = 1ms) {
    nlohmann::json status;
    const bool held = wait_until(
        [&] {
            status = status_json(d.control_socket());
            return pred(status);
        },
        timeout, poll);
    if (last) *last = std::move(status);
    return held;
}

// The same for the status entry of `target` (null while it is not listed).
inline bool wait_for_target_status(const Daemon& d, const std::string& target,
                                   const std::function<bool(const nlohmann::json&)>& pred,
                                   nlohmann::json* last = nullptr, std::chrono::milliseconds timeout = kHealTimeout,
                                   std::chrono::microseconds poll = 1ms) {
    nlohmann::json entry;
    const bool held = wait_for_status(
        d,
        [&](const nlohmann::json& status) {
            entry = target_status(status, target);
            return pred(entry);
        },
        nullptr, timeout, poll);
    if (last) *last = std::move(entry);
    return held;
}

// Returns daemon.degraded of a status answer (empty when absent).
inline std::vector<std::string> degraded_of(const nlohmann::json& status) {
    std::vector<std::string> out;
    if (!status.is_object() || !status.contains("daemon") || !status["daemon"].contains("degraded")) return out;
    for (const auto& d : status["daemon"]["degraded"])
        if (d.is_string()) out.push_back(d.get<std::string>());
    return out;
}

// Asks the daemon for a reconcile (fuse-healerctl heal) and returns the
// answer line.
inline std::string heal_request(const std::string& socket, const std::string& target) {
    auto answer = control_exchange(socket, encode_control_request({ControlCommand::Heal, target}), 15s);
    if (!std::holds_alternative<std::string>(answer)) return "(no answer)";
    return std::get<std::string>(answer);
}

}  // namespace fh::test
