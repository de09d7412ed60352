// The control socket's protocol, spoken between fuse-healerd and
// fuse-healerctl: one JSON request per line, one JSON response per line, in
// request order.
//
//   {"command":"status"}
//   {"command":"heal","target":"/var/lib/kubelet/pods/<uid>/volumes/.../mount"}
//
// A response is {"ok":true, ...} with the answer, or
// {"ok":false,"error":{"code":"<code>","message":"<why>"}}. Status answers
// carry "daemon" (a summary) and "targets" (one object per tracked target);
// heal answers carry "target" (that target's state after the reconcile).
//
// Pure: parsing, validation, encoding and the human-readable rendering. The
// socket server is lib/engine/control_server.h, the client
// lib/engine/ctl_client.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/error.h"

namespace fh {

// The longest request line accepted, without its newline. A status or heal
// request is well under 5 KiB (a path is at most 4 KiB); anything longer is
// not a request, and buffering it would let a client grow the daemon.
inline constexpr std::size_t kMaxControlRequestBytes = std::size_t{64} * 1024;

enum class ControlCommand { Status, Heal };
// Returns "status" or "heal".
const char* to_string(ControlCommand c);

struct ControlRequest {
    ControlCommand command = ControlCommand::Status;
    std::string target;  // Heal only: absolute, without trailing slashes
};

// Why a request was not answered; the code is machine-readable (the client
// picks its exit code from it), the message is for humans.
enum class ControlErrorCode {
    BadRequest,        // not JSON, not an object, a missing, unknown or mistyped key
    UnknownCommand,    // "command" names no command
    RequestTooLarge,   // a line longer than kMaxControlRequestBytes (the connection is closed)
    PermissionDenied,  // the peer is not root (the connection is closed)
    Busy,              // too many clients connected (the connection is closed)
    UnknownTarget,     // heal: the path is not a target the daemon tracks
    Timeout,           // heal: the reconcile did not finish in time
    Internal,          // anything else that went wrong in the daemon
};
// Returns "bad-request", "unknown-command", "request-too-large",
// "permission-denied", "busy", "unknown-target", "timeout" or "internal".
const char* to_string(ControlErrorCode c);
// Returns the code named `name`, or nullopt for a name no code has.
std::optional<ControlErrorCode> control_error_code_from(std::string_view name);

struct ControlError {
    ControlErrorCode code = ControlErrorCode::Internal;
    std::string message;
};

// Returns the request in `line` (one line without its newline; a trailing
// '\r' is ignored), or the error to answer it with. Keys other than
// "command" and (for heal) "target" are rejected, so that a misspelt key is
// not silently ignored.
std::variant<ControlRequest, ControlError> parse_control_request(std::string_view line);

// Returns the request as one JSON line ending in '\n'.
std::string encode_control_request(const ControlRequest& request);

// One tracked target, as the daemon reports it.
struct ControlTarget {
    std::string target;         // host path
    std::string pod_uid;        // empty for a CSI staging (global) mount
    std::string volume;
    std::string driver;         // from vol_data.json, empty when unknown
    std::string volume_handle;  // from vol_data.json, empty when unknown
    std::string kind;           // "volume", "subpath" or "global"
    std::string fstype;
    std::string state;          // "healthy", "broken", "unresponsive", "skipped", "healing", "unknown"
    std::string reason;         // why broken/skipped/unresponsive, empty otherwise
    int heals = 0;              // heals since the daemon started
    std::int64_t last_outage_us = 0;  // length of the last healed outage, 0 when none
    bool operator==(const ControlTarget&) const = default;
};

// The daemon as a whole.
struct ControlDaemonSummary {
    std::string version;
    std::int64_t pid = 0;
    std::string strategy;         // "replace" or "stack"
    std::string detection;        // "fusectl" or "statx"
    std::string kernel_features;  // KernelFeatures::describe()
    int targets = 0;              // tracked targets
    int broken = 0;               // of which broken, healing or unresponsive
    std::int64_t heals = 0;       // targets healed since the daemon started
    std::uint64_t mount_events = 0;          // mount events since start (all of them)
    std::uint64_t reconciles = 0;            // reconciles finished since start
    std::int64_t reconcile_running_us = 0;   // how long the current reconcile has run, 0 when idle
    std::string mount_tracking;              // "fanotify" or "mountinfo"
    std::uint64_t unrelated_mount_events = 0;  // of mount_events: dropped as unrelated (fanotify only)
    // Why the daemon runs degraded, one text per reason (e.g. the inotify
    // watch limit, a state file that cannot be saved); empty when it does
    // not. Optional in a response (older daemons do not send it).
    std::vector<std::string> degraded;
    bool operator==(const ControlDaemonSummary&) const = default;
};

// Each returns one JSON line ending in '\n'. Strings that are not valid
// UTF-8 (paths are bytes) have their bad bytes replaced with U+FFFD: the
// answer is always valid JSON.
std::string encode_status_response(const ControlDaemonSummary& daemon, const std::vector<ControlTarget>& targets);
std::string encode_heal_response(const ControlTarget& target);
std::string encode_error_response(const ControlError& error);

// A decoded response: exactly one of error, status (daemon + targets) or
// heal (target) is set.
struct ControlResponse {
    std::optional<ControlError> error;
    std::optional<ControlDaemonSummary> daemon;
    std::vector<ControlTarget> targets;
    std::optional<ControlTarget> target;
};

// Returns the response in `line`, or an Error naming what is malformed.
// Unknown keys are ignored (a newer daemon may add some); missing or
// mistyped known keys are errors.
Result<ControlResponse> parse_control_response(std::string_view line);

// Returns a table cell for `text`: the space, tab, newline, backslash and
// other control characters written as \ooo octal escapes, as in
// /proc/self/mountinfo, so that a cell is one whitespace-free word (columns
// split with awk) and a name cannot forge a row; "-" for an empty text.
std::string escape_control_cell(std::string_view text);

// Returns a duration in microseconds for humans: "-" for 0, else e.g.
// "850us", "912.3ms", "4.25s", "3m07s", "2h05m".
std::string format_outage(std::int64_t us);

// Returns the status for humans: a summary of the daemon, then one row per
// target under the columns POD UID, VOLUME, TARGET, FSTYPE, STATE, HEALS,
// LAST OUTAGE (cells as escape_control_cell, columns aligned, no trailing
// spaces), or a line saying no target is tracked.
std::string render_status_table(const ControlDaemonSummary& daemon, const std::vector<ControlTarget>& targets);

// Returns one line for a heal answer: "<target>: <state>[: <reason>]
// (heals N, last outage D)".
std::string render_heal_result(const ControlTarget& target);

} // namespace fh
