#include "engine/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>


#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/http.h"
#include "engine/sys.h"

namespace fh {
namespace {

// Seconds from the engine's microseconds.
double seconds(std::int64_t us) { return static_cast<double>(us) / 1e6; }

// Returns a listening TCP socket bound to `address`, or an Error naming the
// step, the address and the errno.
Result<sys::UniqueFd> listen_on(const ListenAddress& address) {
    const std::string where = address.to_string();
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (address.ipv6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(address.port);
        if (::inet_pton(AF_INET6, address.host.c_str(), &in6->sin6_addr) != 1)
            return Error{"parse address", where, EINVAL, {}};
        length = sizeof *in6;
    } else {
        auto* in4 = reinterpret_cast<sockaddr_in*>(&storage);
        in4->sin_family = AF_INET;
        in4->sin_port = htons(address.port);
        if (::inet_pton(AF_INET, address.host.c_str(), &in4->sin_addr) != 1)
            return Error{"parse address", where, EINVAL, {}};
        length = sizeof *in4;
    }
    sys::UniqueFd fd(::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return errno_error("socket", where);
    // A restarted daemon must not wait for the old connections' TIME_WAIT
    // to end before it can listen again.
    const int on = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0)
        return errno_error("setsockopt SO_REUSEADDR", where);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&storage), length) != 0) return errno_error("bind", where);
    if (::listen(fd.get(), 64) != 0) return errno_error("listen", where);
    return fd;
}

// Returns the port a socket is bound to (0 when unknown).
std::uint16_t bound_port(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return 0;
    if (storage.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
}

} // namespace

void record_heal_event(HealerMetrics& metrics, const HealEvent& event) {
    switch (event.kind) {
    case HealEvent::Kind::Broken: metrics.record_broken(); return;
    case HealEvent::Kind::Unresponsive: metrics.record_unresponsive(); return;
    case HealEvent::Kind::Healed:
        metrics.record_heal(HealResult::Healed, seconds(event.heal_us), seconds(event.outage_us));
        return;
    case HealEvent::Kind::HealFailed: metrics.record_heal(HealResult::Failed); return;
    case HealEvent::Kind::Skipped: metrics.record_heal(HealResult::Skipped); return;
    case HealEvent::Kind::Recovered: metrics.record_recovered(seconds(event.outage_us)); return;
    }
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const ListenAddress& address,
                                                             const HealerMetrics& metrics,
                                                             const MetricsServerLimits& limits) {
    Result<sys::UniqueFd> socket = listen_on(address);
    if (!socket) return socket.error();
    std::unique_ptr<MetricsServer> server(new MetricsServer(address, metrics, limits));
    server->port_ = bound_port(socket->get());
    server->listen_ = std::move(*socket);
    server->wake_ = sys::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!server->wake_.valid()) return errno_error("eventfd", address.to_string());
    try {
        server->thread_ = std::thread([s = server.get()] { s->serve(); });
    } catch (const std::system_error& e) {
        return Error{"start the metrics server's thread", address.to_string(), e.code().value(), {}};
    }
    return server;
}

MetricsServer::~MetricsServer() {
    if (thread_.joinable()) {
        const std::uint64_t one = 1;
        // An eventfd write of 1 cannot fail short of a counter overflow.
        (void)!::write(wake_.get(), &one, sizeof one);
        thread_.join();
    }
}

// One connection: the request head as received, then the answer being sent,
// then the rest of what the client sends, read and dropped until it closes.
struct MetricsServer::Connection {
    sys::UniqueFd fd;
    std::string received;
    std::string answer;
    std::size_t sent = 0;
    bool answered = false;  // `answer` is set: sending, then draining
    bool draining = false;  // answer sent and our side shut down
    Clock::time_point deadline;
};

void MetricsServer::serve() {
    std::vector<Connection> connections;
    std::vector<pollfd> fds;
    Clock::time_point accept_paused_until{};
    for (;;) {
        const auto now = Clock::now();
        fds.clear();
        fds.push_back({wake_.get(), POLLIN, 0});
        // At the limit the listening socket is not polled: new clients wait
        // in its backlog (or time out on their side) until a slot frees.
        const bool accepting = connections.size() < limits_.max_connections && now >= accept_paused_until;
        fds.push_back({accepting ? listen_.get() : -1, POLLIN, 0});
        Clock::time_point next_deadline = Clock::time_point::max();
        if (!accepting && connections.size() < limits_.max_connections) next_deadline = accept_paused_until;
        for (const Connection& c : connections) {
            const bool sending = c.answered && !c.draining;
            fds.push_back({c.fd.get(), static_cast<short>(sending ? POLLOUT : POLLIN), 0});
            next_deadline = std::min(next_deadline, c.deadline);
        }
        int timeout_ms = -1;
        if (next_deadline != Clock::time_point::max())
            timeout_ms = static_cast<int>(std::max<std::int64_t>(
                0, std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now).count()));
        if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
            if (errno == EINTR) continue;
            spdlog::error("metrics HTTP server: failed to poll, stopping /metrics: {}", std::strerror(errno));
            return;
        }
        if (fds[0].revents != 0) return;  // the destructor asks to stop
        const auto after = Clock::now();
        // Events first, for the connections polled (accepted ones come after).
        for (std::size_t i = 0; i < connections.size(); ++i)
            if (fds[i + 2].revents != 0) on_ready(connections[i], fds[i + 2].revents, after);
        if (fds[1].revents != 0) accept_clients(connections, accept_paused_until, after);
        for (Connection& c : connections) {
            if (c.fd.valid() && after >= c.deadline) {
                spdlog::debug("metrics HTTP server: closing a connection {} ({} ms)",
                              c.draining ? "that did not close after its answer" : "that is too slow",
                              (c.draining ? limits_.linger : limits_.timeout).count());
                c.fd.reset();
            }
        }
        std::erase_if(connections, [](const Connection& c) { return !c.fd.valid(); });
    }
}

void MetricsServer::accept_clients(std::vector<Connection>& connections, Clock::time_point& accept_paused_until,
                                   Clock::time_point now) {
    while (connections.size() < limits_.max_connections) {
        sys::UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (fd.valid()) {
            Connection c;
            c.fd = std::move(fd);
            c.deadline = now + limits_.timeout;
            connections.push_back(std::move(c));
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // EMFILE, ENFILE, ENOBUFS: the pending client stays queued and the
        // socket stays readable; without a pause this would spin.
        spdlog::warn("metrics HTTP server: failed to accept a connection, ignoring for {} ms: {}",
                     limits_.accept_pause.count(), std::strerror(errno));
        accept_paused_until = now + limits_.accept_pause;
        return;
    }
}

void MetricsServer::on_ready(Connection& c, short revents, Clock::time_point now) {
    if ((revents & POLLNVAL) != 0) {
        c.fd.reset();
        return;
    }
    if (!c.answered || c.draining) {
        char buffer[4096];
        const ssize_t n = ::recv(c.fd.get(), buffer, sizeof buffer, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) {  // the client left (or reset the connection)
            c.fd.reset();
            return;
        }
        // The deadline is not moved by what arrives: a client sending a
        // byte every few seconds must not hold a slot for hours.
        if (c.draining) return;  // what a client sends after its request is dropped
        c.received.append(buffer, static_cast<std::size_t>(n));
        const HttpParse parsed = parse_http_request_head(c.received);
        if (parsed.state == HttpParse::State::Incomplete) return;
        if (parsed.state == HttpParse::State::Invalid)
            spdlog::debug("metrics HTTP server: answering {} to a malformed request: {}", parsed.status, parsed.why);
        const HttpResponse response =
            answer_metrics_request(parsed, [this] { return metrics_.render(); }, kMetricsContentType);
        const bool head_only = parsed.state == HttpParse::State::Complete && parsed.head.method == "HEAD";
        c.answer = serialize_http_response(response, head_only, std::time(nullptr));
        c.answered = true;
        std::string().swap(c.received);
        // Sent at once when the socket has room (it does for a scrape's
        // answer: the socket buffer holds ~2.5 MiB); else on POLLOUT.
    }
    while (c.sent < c.answer.size()) {
        const ssize_t n = ::send(c.fd.get(), c.answer.data() + c.sent, c.answer.size() - c.sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {  // EPIPE, ECONNRESET: the client left
            c.fd.reset();
            return;
        }
        c.sent += static_cast<std::size_t>(n);
        c.deadline = now + limits_.timeout;
    }
    // All sent: close our side and read until the client closes its own.
    // Closing at once would make the kernel answer whatever the client still
    // sends (a request body, a pipelined request) with a reset, and a reset
    // may discard the answer before the client has read it (RFC 9112 9.6).
    std::string().swap(c.answer);
    ::shutdown(c.fd.get(), SHUT_WR);
    c.draining = true;
    c.deadline = now + limits_.linger;
}

Status write_metrics_textfile(const std::string& path, const std::string& content) {
    // sys::write_file_atomically creates its file 0600 (it writes the
    // daemon's private state), but node_exporter runs as another user
    // (Debian: prometheus) and must read this one. A chmod after it would
    // leave every new inode at `path` 0600 for a moment, failing a scrape
    // then; so the text goes whole to a staging name that the collector
    // ignores (it reads *.prom only), is made 0644 there, and only then is
    // renamed over `path`: a reader sees the old text or the new one, both
    // readable.
    const std::string staging = path + ".new";
    if (Status written = sys::write_file_atomically(staging, content); !written) return written;
    const auto fail = [&staging](const std::string& step, const std::string& where) {
        Error error = errno_error(step, where);
        ::unlink(staging.c_str());
        return error;
    };
    if (::chmod(staging.c_str(), 0644) != 0) return fail("chmod", staging);
    if (::rename(staging.c_str(), path.c_str()) != 0) return fail("rename " + staging + " to", path);
    return {};
}

MetricsTextfile::MetricsTextfile(std::string path, const HealerMetrics& metrics, std::chrono::milliseconds min_interval)
    : path_(std::move(path)), metrics_(metrics), min_interval_(min_interval) {
    thread_ = std::thread([this] { run(); });
}

MetricsTextfile::~MetricsTextfile() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
        cv_.notify_all();
    }
    thread_.join();
}

void MetricsTextfile::request_write() {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = true;
    cv_.notify_all();
}

std::uint64_t MetricsTextfile::writes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_;
}

void MetricsTextfile::run() {
    using Clock = std::chrono::steady_clock;
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<Clock::time_point> last_write;
    for (;;) {
        cv_.wait(lock, [&] { return requested_ || stopping_; });
        // The pause between writes; requests arriving meanwhile are folded
        // into the one write after it.
        if (last_write) cv_.wait_until(lock, *last_write + min_interval_, [&] { return stopping_; });
        if (stopping_) return;
        requested_ = false;
        lock.unlock();
        write_once();
        last_write = Clock::now();
        lock.lock();
    }
}

void MetricsTextfile::write_once() {
    const Status written = write_metrics_textfile(path_, metrics_.render());
    if (!written) {
        // Once per failure streak, not once per second.
        if (!failing_) spdlog::warn("failed to write metrics textfile, ignoring: {}", written.error().message());
        failing_ = true;
        return;
    }
    if (failing_) spdlog::info("metrics textfile {} written again", path_);
    failing_ = false;
    std::lock_guard<std::mutex> lock(mu_);
    ++writes_;
}

} // namespace fh
