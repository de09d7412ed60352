#include "engine/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>

#include "engine/sys.h"

namespace fh {
namespace {

// Seconds from the engine's microseconds.
double seconds(std::int64_t us) { return static_cast<double>(us) / 1e6; }

// libmicrohttpd's messages (a client that hung up, a malformed request) are
// about clients, not about healing: debug level.
void log_mhd_message(void*, const char* format, va_list args) {
    char text[512];
    std::vsnprintf(text, sizeof text, format, args);
    std::string message(text);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
    spdlog::debug("metrics HTTP server: {}", message);
}

// Answers one request; `cls` is the HealerMetrics. Returns MHD_NO only when
// no response could be queued (MHD then closes the connection).
MHD_Result answer_request(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                          const char*, size_t*, void**) {
    const auto* metrics = static_cast<const HealerMetrics*>(cls);
    unsigned status = MHD_HTTP_OK;
    std::string body;
    const char* content_type = "text/plain; charset=utf-8";
    const bool is_get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0 || std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (std::strcmp(url, "/metrics") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        body = "not found: fuse-healerd serves /metrics only\n";
    } else if (!is_get) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = "method not allowed: /metrics answers GET and HEAD\n";
    } else {
        body = metrics->render();
        content_type = kMetricsContentType;
    }
    // Answered on the first call, before any request body: MHD discards the
    // rest of a body and closes that connection, which is what a scrape
    // endpoint wants for a POST.
    MHD_Response* response = MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    const MHD_Result queued = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return queued;
}

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
                                                             const HealerMetrics& metrics) {
    Result<sys::UniqueFd> socket = listen_on(address);
    if (!socket) return socket.error();
    std::unique_ptr<MetricsServer> server(new MetricsServer(address, metrics));
    server->port_ = bound_port(socket->get());
    // One internal thread serves every connection (the scrapers are few);
    // the limits keep a slow or hostile client from holding it: at most 16
    // connections, each closed after 10 s of silence.
    const int fd = socket->release();
    struct stat before {};
    ::fstat(fd, &before);
    server->daemon_ = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &answer_request,
        const_cast<HealerMetrics*>(&metrics), MHD_OPTION_EXTERNAL_LOGGER, &log_mhd_message, nullptr,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
        MHD_OPTION_END);
    // From a successful start on, MHD_stop_daemon closes the socket. Whether
    // a failed start closed it is not documented (0.9.75 leaves it open when
    // an option is refused), so it is closed here if the descriptor still is
    // the same socket, and not if MHD closed it and another thread's open()
    // got the number since.
    if (server->daemon_ == nullptr) {
        struct stat after {};
        if (::fstat(fd, &after) == 0 && after.st_dev == before.st_dev && after.st_ino == before.st_ino) ::close(fd);
        return Error{"MHD_start_daemon", address.to_string(), 0, "libmicrohttpd failed to start (see debug log)"};
    }
    return server;
}

MetricsServer::~MetricsServer() {
    if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
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
