// fuse-healerctl: the client of the control socket (see
// core/control_protocol.h). ctl/main.cpp only calls run_fuse_healerctl.
#pragma once

#include <chrono>
#include <string>
#include <variant>

namespace fh {

// Exit codes of fuse-healerctl (documented in fuse-healerctl(8)); the
// sysexits.h values where one fits, as for fuse-healerd.
inline constexpr int kCtlExitOk = 0;
inline constexpr int kCtlExitFailure = 1;      // the daemon answered an error, or the exchange failed
inline constexpr int kCtlExitNotHealthy = 2;   // heal: the target is not healthy after the reconcile
inline constexpr int kCtlExitUsage = 64;       // bad command line (EX_USAGE)
inline constexpr int kCtlExitNotRunning = 69;  // no socket, or nobody listens on it (EX_UNAVAILABLE)
inline constexpr int kCtlExitPermission = 77;  // the socket or the daemon refused us (EX_NOPERM)
inline constexpr int kCtlExitConfig = 78;      // the config file that names the socket is invalid (EX_CONFIG)

// How long the client waits for an answer, in total: the daemon answers a
// status at once, and a heal within 10 s (after that it answers a timeout).
inline constexpr std::chrono::milliseconds kCtlStatusTimeout{10000};
inline constexpr std::chrono::milliseconds kCtlHealTimeout{30000};

// Why an exchange with the daemon failed.
struct CtlError {
    enum class Kind { NotRunning, PermissionDenied, Failed };
    Kind kind = Kind::Failed;
    std::string message;  // for humans, with the socket path and the errno text
};

// Connects to the control socket at `socket_path`, sends `request_line` (one
// encoded request ending in '\n') and reads one response line. Returns that
// line without its '\n', or the CtlError saying why not (e.g. NotRunning
// for a missing socket or ECONNREFUSED, PermissionDenied for EACCES). Gives
// up after `timeout` in total.
std::variant<std::string, CtlError> control_exchange(const std::string& socket_path, const std::string& request_line,
                                                     std::chrono::milliseconds timeout);

// Parses the command line, talks to the daemon and prints the answer.
// Returns the process exit code (one of kCtlExit*).
int run_fuse_healerctl(int argc, char** argv);

} // namespace fh
