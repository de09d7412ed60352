// Publishing the metrics of core/metrics.h: an HTTP endpoint (GET /metrics,
// served by a thread of its own with poll(2); core/http.h says why not a
// library) and a textfile for node_exporter (written
// on its own thread). Neither touches the event loop or a FUSE filesystem:
// both only render the in-memory registry.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/listen_address.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "engine/sys.h"

namespace fh {

// Feeds one heal event into the metrics; the daemon's HealObserver calls it
// on the heal worker thread.
void record_heal_event(HealerMetrics& metrics, const HealEvent& event);

// How much a client may hold of the metrics server (tests shorten the times).
struct MetricsServerLimits {
    std::size_t max_connections = 16;  // more wait in the listen backlog
    // A connection whose request head has not arrived this long after its
    // accept, or whose answer made no progress for this long, is closed.
    std::chrono::milliseconds timeout{10000};
    // After the answer, how long the client has to close its side.
    std::chrono::milliseconds linger{2000};
    // After accept() failed for lack of fds or memory.
    std::chrono::milliseconds accept_pause{100};
};

// Serves GET (and HEAD) /metrics with the exposition text; any other path is
// 404, any other method 405, a malformed request 400 (core/http.h). Runs on
// a thread of its own. The limits keep a slow or hostile local client from
// holding it (MetricsServerLimits): a bounded number of connections, each
// with a deadline; a request head is at most kMaxHttpRequestHeadBytes; every
// answer closes its connection.
class MetricsServer {
public:
    // Binds `address` (port 0: the kernel picks one, see port()) and starts
    // serving `metrics`, which must outlive the server. Returns the running
    // server, or an Error naming the failed step (socket, bind, listen,
    // MHD_start_daemon), the address and the errno.
    static Result<std::unique_ptr<MetricsServer>> start(const ListenAddress& address, const HealerMetrics& metrics,
                                                        const MetricsServerLimits& limits = {});

    // Stops the thread (an in-flight request is cut) and closes the socket.
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // Returns the address as asked for, port 0 included.
    const ListenAddress& address() const { return address_; }
    // Returns the port actually bound.
    std::uint16_t port() const { return port_; }

private:
    using Clock = std::chrono::steady_clock;
    struct Connection;

    MetricsServer(const ListenAddress& address, const HealerMetrics& metrics, const MetricsServerLimits& limits)
        : address_(address), metrics_(metrics), limits_(limits) {}
    // The thread: polls the wake-up eventfd, the socket and the connections
    // until the destructor writes to the eventfd.
    void serve();
    // Accepts the clients queued, up to the limit.
    void accept_clients(std::vector<Connection>& connections, Clock::time_point& accept_paused_until,
                        Clock::time_point now);
    // Reads the request, sends the answer or drains what follows, as far as
    // the socket allows now; resets c.fd when the connection is done.
    void on_ready(Connection& c, short revents, Clock::time_point now);

    ListenAddress address_;
    const HealerMetrics& metrics_;
    const MetricsServerLimits limits_;
    std::uint16_t port_ = 0;
    sys::UniqueFd listen_;
    sys::UniqueFd wake_;  // eventfd: the destructor's "stop"
    std::thread thread_;
};

// Writes `content` to `path` for node_exporter's textfile collector,
// atomically (sys::write_file_atomically to "<path>.new", which the collector
// ignores, then renamed over `path`) and mode 0644 whatever the umask
// (node_exporter runs as another user). Returns an Error naming the failed
// step and path.
Status write_metrics_textfile(const std::string& path, const std::string& content);

// Rewrites a metrics textfile on request, from a thread of its own, at most
// once per `min_interval`: a request during the pause is written when it
// ends, so the file always catches up with the last request.
class MetricsTextfile {
public:
    // Starts the writer thread; `metrics` must outlive this object.
    MetricsTextfile(std::string path, const HealerMetrics& metrics,
                    std::chrono::milliseconds min_interval = std::chrono::seconds(1));
    // Stops the thread: waits for a write in progress, drops a pending one.
    ~MetricsTextfile();
    MetricsTextfile(const MetricsTextfile&) = delete;
    MetricsTextfile& operator=(const MetricsTextfile&) = delete;

    // Asks for the current metrics to be written; returns at once.
    void request_write();

    // Returns the file's path.
    const std::string& path() const { return path_; }
    // Returns how many writes succeeded (for tests and status).
    std::uint64_t writes() const;

private:
    void run();
    void write_once();

    const std::string path_;
    const HealerMetrics& metrics_;
    const std::chrono::milliseconds min_interval_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool requested_ = false;
    bool stopping_ = false;
    std::uint64_t writes_ = 0;
    bool failing_ = false;  // the last write failed and was logged; only the writer thread uses it
    std::thread thread_;
};

} // namespace fh
