#include "engine/ctl_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/control_protocol.h"
#include "core/planner.h"

namespace fh {

namespace {

using Clock = std::chrono::steady_clock;

// Closes a descriptor when it goes out of scope.
class ScopedFd {
public:
    explicit ScopedFd(int fd) : fd_(fd) {}
    ~ScopedFd() {
        if (fd_ >= 0) ::close(fd_);
    }
    ScopedFd(const ScopedFd&) = delete;
    ScopedFd& operator=(const ScopedFd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

CtlError failed(std::string message) { return CtlError{CtlError::Kind::Failed, std::move(message)}; }

// Returns the milliseconds left until `deadline` (0 when past it).
int millis_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

// Returns the CtlError for a failed connect(2) to `path`.
CtlError connect_error(const std::string& path, int err) {
    switch (err) {
    case ENOENT: return {CtlError::Kind::NotRunning, "fuse-healerd is not running (no socket at " + path + ")"};
    case ECONNREFUSED:
        return {CtlError::Kind::NotRunning,
                "fuse-healerd is not running (no socket at " + path + " is listening: " + std::strerror(err) + ")"};
    case EACCES:
    case EPERM:
        return {CtlError::Kind::PermissionDenied, "permission denied: cannot connect to " + path + ": " +
                                                      std::strerror(err) + " (fuse-healerctl must run as root)"};
    case EAGAIN:
        return failed("fuse-healerd at " + path + " accepts no connection (its backlog is full): " +
                      std::strerror(err));
    default: return failed("failed to connect to " + path + ": " + std::strerror(err));
    }
}

// Writes all of `data`. Returns 0, or the errno of the failed send
// (ETIMEDOUT when the deadline passed).
int send_all(int fd, const std::string& data, Clock::time_point deadline) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        // MSG_NOSIGNAL: a daemon that closed the connection must not kill us
        // with SIGPIPE before we read why it did.
        const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return errno;
        pollfd p{fd, POLLOUT, 0};
        const int left = millis_left(deadline);
        if (left == 0 || ::poll(&p, 1, left) == 0) return ETIMEDOUT;
    }
    return 0;
}

// Returns the path a heal target is known by in the daemon: absolute,
// without "." and ".." components or trailing slashes. Purely lexical: the
// path may be a dead FUSE mount (ENOTCONN) or a hung one (a stat would
// block), so it is never touched.
std::string normalize_target(const std::string& target) {
    std::filesystem::path p(target);
    if (p.is_relative()) {
        // Without a current directory (deleted, or unreadable) the path is
        // sent as given, and the daemon's answer says it is not absolute.
        std::error_code ec;
        const std::filesystem::path cwd = std::filesystem::current_path(ec);
        if (ec) return target;
        p = cwd / p;
    }
    std::string out = p.lexically_normal().string();
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out;
}

// Returns the exit code for an error answered by the daemon.
int exit_code_for(ControlErrorCode code) {
    return code == ControlErrorCode::PermissionDenied ? kCtlExitPermission : kCtlExitFailure;
}

int exit_code_for(CtlError::Kind kind) {
    switch (kind) {
    case CtlError::Kind::NotRunning: return kCtlExitNotRunning;
    case CtlError::Kind::PermissionDenied: return kCtlExitPermission;
    case CtlError::Kind::Failed: return kCtlExitFailure;
    }
    return kCtlExitFailure;
}

} // namespace

std::variant<std::string, CtlError> control_exchange(const std::string& socket_path, const std::string& request_line,
                                                     std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    sockaddr_un addr{};
    if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
        return failed("socket path \"" + socket_path + "\" is empty or longer than " +
                      std::to_string(sizeof addr.sun_path - 1) + " bytes");
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);

    ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return failed(std::string("failed to create a unix socket: ") + std::strerror(errno));
    // A unix connect waits (up to the send timeout) while the listener's
    // backlog is full; bound that wait by our deadline.
    const timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        if (errno != EINTR) return connect_error(socket_path, errno);
    }

    // A daemon that refuses us (peer check) answers and closes, possibly
    // before our request is written: then the send fails, but its answer is
    // there to read, and it says more than EPIPE.
    const int send_error = send_all(fd.get(), request_line, deadline);

    std::string received;
    char buf[65536];
    for (;;) {
        if (const auto nl = received.find('\n'); nl != std::string::npos) return received.substr(0, nl);
        pollfd p{fd.get(), POLLIN, 0};
        const int left = millis_left(deadline);
        const int ready = left == 0 ? 0 : ::poll(&p, 1, left);
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0)
            return failed("no answer from fuse-healerd on " + socket_path + " within " +
                          std::to_string(timeout.count() / 1000) + " s");
        if (ready < 0) return failed(std::string("failed to wait for the answer: ") + std::strerror(errno));
        const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n > 0) {
            received.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        const int err = n < 0 ? errno : 0;
        if (send_error != 0 && send_error != ETIMEDOUT)
            return failed("failed to send the request to " + socket_path + ": " + std::strerror(send_error));
        if (send_error == ETIMEDOUT)
            return failed("fuse-healerd on " + socket_path + " did not read the request within " +
                          std::to_string(timeout.count() / 1000) + " s");
        return failed("fuse-healerd closed the connection on " + socket_path + " without answering" +
                      (err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string()) +
                      "; is it stopping?");
    }
}

int run_fuse_healerctl(int argc, char** argv) {
    CLI::App app{"fuse-healerctl: ask fuse-healerd, through its control socket, for the state of every FUSE mount "
                 "it tracks, or to heal one now."};
    app.set_version_flag("--version", std::string("fuse-healerctl ") + FUSE_HEALER_VERSION);
    // Global options are accepted after the subcommand too.
    app.fallthrough();
    std::string socket_path, config_path;
    app.add_option("--socket", socket_path,
                   "control socket of fuse-healerd (default: [control] socket of the config file, else " +
                       std::string(kDefaultControlSocket) + ")");
    app.add_option("--config", config_path,
                   std::string("config file to read [control] socket from (default ") + kDefaultConfigPath + ")");

    bool json = false;
    CLI::App* status = app.add_subcommand("status", "print every tracked target and a summary of the daemon");
    status->add_flag("--json", json, "print the daemon's answer as JSON (one line) instead of a table");
    std::string target;
    CLI::App* heal =
        app.add_subcommand("heal", "reconcile now and print the state of TARGET once that reconcile has finished");
    heal->add_option("TARGET", target, "the target's path (a pod volume, subPath or CSI staging mount)")->required();
    heal->add_flag("--json", json, "print the daemon's answer as JSON (one line)");
    app.require_subcommand(1);
    app.footer("Exit codes: 0 ok; 1 failure (the daemon answered an error, or no answer); 2 heal: the target is not "
               "healthy afterwards; 64 bad command line; 69 fuse-healerd is not running; 77 permission denied; 78 "
               "bad config file.");
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kCtlExitUsage;
    }

    if (app.count("--socket") > 0 && socket_path.empty()) {
        std::cerr << "fuse-healerctl: --socket must not be empty\n";
        return kCtlExitUsage;
    }
    if (socket_path.empty()) {
        const bool is_default = config_path.empty();
        if (is_default) config_path = kDefaultConfigPath;
        const ConfigResult loaded = load_config(config_path, is_default);
        if (const auto* err = std::get_if<ConfigError>(&loaded)) {
            std::cerr << "fuse-healerctl: config error: " << err->to_string()
                      << " (pass --socket PATH to name the socket instead)\n";
            return kCtlExitConfig;
        }
        socket_path = std::get<Config>(loaded).control_socket;
        if (socket_path.empty()) {
            std::cerr << "fuse-healerctl: the control socket is turned off ([control] socket = \"\" in "
                      << config_path << ")\n";
            return kCtlExitNotRunning;
        }
    }

    if (heal->parsed() && target.empty()) {
        std::cerr << "fuse-healerctl: heal: TARGET must not be empty\n";
        return kCtlExitUsage;
    }

    ControlRequest request;
    if (heal->parsed()) {
        request.command = ControlCommand::Heal;
        request.target = normalize_target(target);
    }
    const auto answer = control_exchange(socket_path, encode_control_request(request),
                                         request.command == ControlCommand::Heal ? kCtlHealTimeout : kCtlStatusTimeout);
    if (const auto* err = std::get_if<CtlError>(&answer)) {
        std::cerr << "fuse-healerctl: " << err->message << "\n";
        return exit_code_for(err->kind);
    }
    const std::string& line = std::get<std::string>(answer);
    const Result<ControlResponse> response = parse_control_response(line);
    if (!response) {
        std::cerr << "fuse-healerctl: unreadable answer from fuse-healerd: " << response.error().message() << "\n";
        return kCtlExitFailure;
    }
    if (response->error) {
        std::cerr << "fuse-healerctl: " << to_string(request.command) << " failed: " << response->error->message
                  << "\n";
        return exit_code_for(response->error->code);
    }
    if (request.command == ControlCommand::Status) {
        if (!response->daemon) {
            std::cerr << "fuse-healerctl: unreadable answer from fuse-healerd: not a status answer\n";
            return kCtlExitFailure;
        }
        std::cout << (json ? line + "\n" : render_status_table(*response->daemon, response->targets));
        return kCtlExitOk;
    }
    if (!response->target) {
        std::cerr << "fuse-healerctl: unreadable answer from fuse-healerd: not a heal answer\n";
        return kCtlExitFailure;
    }
    std::cout << (json ? line + "\n" : render_heal_result(*response->target));
    return response->target->state == to_string(TargetState::Healthy) ? kCtlExitOk : kCtlExitNotHealthy;
}

} // namespace fh
