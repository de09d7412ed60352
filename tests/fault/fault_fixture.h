// Shared helpers of the fault tests (tests/fault/*_test.cpp): races with
// kubelet, resource faults and path attacks on the target side, against
// real FUSE daemons and fuse-healerd, each test in its own process and
// private mount namespace (tests/integration/main.cpp, harness.h).
#pragma once

#include <gtest/gtest.h>

#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <sstream>
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

inline constexpr auto kHealTimeout = 5000ms;

inline std::string gen(int g) { return std::to_string(g) + "\n"; }
inline std::string hello(int g) { return "hello from generation " + std::to_string(g) + "\n"; }
inline std::string inner(int g) { return "inner " + std::to_string(g) + "\n"; }

inline bool is_dead_errno(int e) { return e == ENOTCONN || e == ECONNABORTED; }

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

inline std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += "  " + x + "\n";
    return s;
}

inline std::string tail(const std::string& s, std::size_t n = 6000) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// The needle of a heal event line for exactly this target (the path is
// followed by " pod=", so a prefix of another path does not match). The
// path is written as the daemon logs it: see log_escaped().
inline std::string log_escaped(const std::string& s);
inline std::string event_for(const std::string& event, const std::string& target) {
    return event + ": target=" + log_escaped(target) + " ";
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

// Starts the daemon and waits until it is ready and has learned (and
// saved) the origins of `targets` (none: only ready).
inline void start_daemon(Daemon& d, Sandbox& sb, const std::vector<std::string>& targets,
                         const std::string& toml = "", const std::vector<std::string>& args = {}) {
    d.start(toml, args);
    if (!d.wait_for_log("ready: watching", kHealTimeout))
        throw std::runtime_error("fuse-healerd did not get ready: " + tail(d.log()));
    if (!targets.empty() && !wait_until([&] { return state_has(sb, targets); }, kHealTimeout))
        throw std::runtime_error("fuse-healerd did not learn the origins; state: " +
                                 read_file(state_file(sb)).value_or("(none)") + "\nlog:\n" + tail(d.log()));
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
