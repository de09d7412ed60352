// The control socket server: a unix stream socket served by the daemon's
// libuv loop. Its callbacks only gather input (accept, read, split lines,
// parse) and call a handler; answers are written asynchronously, so no
// client can block the loop, however slowly it reads.
//
// Per connection: peer credentials are checked with SO_PEERCRED when it is
// accepted (only uid 0 is served; others get a permission-denied answer and
// are closed); requests are answered one at a time, in order (a pipelined
// request waits for the answer to the one before it, which may come later,
// e.g. when a heal's reconcile finishes); a line longer than the limit gets
// a request-too-large answer and the connection is closed; a last request
// without its newline is answered when the client shuts down its side.
//
// Everything here runs on the loop's thread. The server does not ignore
// SIGPIPE itself: the process must (a client that leaves before its answer
// would otherwise kill it).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/control_protocol.h"
#include "core/error.h"

namespace fh {

struct ControlServerLimits {
    std::size_t max_request_bytes = kMaxControlRequestBytes;
    // More clients get a busy answer and are closed: each costs a buffer
    // and a handle, and only root can connect, so this is a guard against a
    // runaway script, not an attacker.
    std::size_t max_clients = 256;
    // A client whose unread answers exceed this gets no more answers, and
    // is not read from, until it reads them: a client that only writes
    // cannot grow the daemon.
    std::size_t max_unread_answers_bytes = std::size_t{4} * 1024 * 1024;
    // Requests of one client answered in one turn of the loop (from one
    // poll for I/O to the next; 0 counts as 1); the rest wait for the next
    // turn. 64 KiB of pipelined status requests are ~3,000 answers, ~0.2 s
    // of the loop thread in a release build and seconds under the
    // sanitizers, during which mount events, other clients and this
    // client's own writes would wait.
    std::size_t answers_per_turn = 64;
    // A client that has sent nothing and read nothing for this long, and
    // waits for no answer, is closed: fuse-healerctl is done in
    // milliseconds, so only a stalled or forgotten client stays idle, and
    // max_clients of them would lock everyone else out. Checked about
    // every quarter of it.
    std::chrono::milliseconds idle_timeout{std::chrono::seconds(10)};
};

class ControlServer {
public:
    // The one answer owed to one request. Copyable, so a handler can keep it
    // until the answer is ready; send it exactly once, from the loop thread,
    // while the server exists.
    class Reply {
    public:
        // Writes `line` (one encoded response, ending in '\n') to the client
        // that asked, and goes on with that client's next request. Returns
        // false when the client has gone in the meantime (nothing is sent).
        bool send(const std::string& line) const;
        // Returns the peer's pid (from SO_PEERCRED), for logs.
        std::int64_t peer_pid() const { return peer_pid_; }

    private:
        friend class ControlServer;
        ControlServer* server_ = nullptr;
        std::uint64_t client_id_ = 0;
        std::int64_t peer_pid_ = 0;
    };

    // Receives each request with the Reply to send its answer through.
    using Handler = std::function<void(const ControlRequest& request, const Reply& reply)>;

    ControlServer(uv_loop_t* loop, Handler handler, const ControlServerLimits& limits = {});
    // Calls close(). The loop must still run once afterwards (or be walked
    // and run to completion) so that the handles' close callbacks free them;
    // they never touch the server, so it may be gone by then.
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Creates the socket at `path` with mode 0600 (missing parent
    // directories are created with mode 0700), replacing a stale socket file
    // that nobody listens on, and starts accepting. Returns an Error with
    // the step, the path and the errno: e.g. when another process listens
    // there, or the path is not a socket.
    Status listen(const std::string& path);

    // Stops accepting, closes every client (answers not yet written are
    // dropped) and removes the socket file if it is still the one created
    // by listen(). The handles finish closing on the next loop iteration.
    void close();

    // Returns the number of connected clients.
    std::size_t client_count() const { return clients_.size(); }

    // Returns the socket path given to listen().
    const std::string& path() const { return path_; }

private:
    struct Client;
    struct Write;

    void on_connection(int status);
    void on_read(Client& c, ssize_t nread, const uv_buf_t* buf);
    void on_write_done(Client& c, int status);
    // Closes the clients idle for limits_.idle_timeout (see there).
    void close_idle_clients();
    // Answers the buffered requests of `c` until one is waiting for its
    // answer, no complete line is left, its unread answers are too many, or
    // its answers for this turn of the loop are used up (it then waits for
    // start_turn()).
    void process(Client& c);
    // Runs once per loop turn, right before the poll for I/O: gives every
    // client its answers_per_turn again and goes on with the clients that
    // used theirs up.
    void start_turn();
    // Sends the answer owed to `c`'s current request.
    bool deliver(std::uint64_t client_id, const std::string& line);
    void write(Client& c, const std::string& line);
    // Writes `line` and closes the client once it is written.
    void answer_and_close(Client& c, const ControlError& error);
    // Starts or stops reading from `c` to bound what it can make us hold.
    void update_reading(Client& c);
    // Returns true while the answers `c` has not read yet (bytes not yet
    // taken by its socket) are within limits_.max_unread_answers_bytes.
    bool unread_answers_fit(Client& c) const;
    // Closes `c` when nothing is left to do for it.
    void maybe_finish(Client& c);
    void close_client(Client& c);

    uv_loop_t* loop_;
    Handler handler_;
    ControlServerLimits limits_;
    uv_pipe_t* listener_ = nullptr;  // freed by its close callback
    uv_timer_t* idle_timer_ = nullptr;  // closes idle clients; freed by its close callback
    uv_prepare_t* turn_ = nullptr;      // runs start_turn(); freed by its close callback
    // Active while a client waits for its next turn, so that the poll before
    // that turn does not block; does nothing itself. Freed by its close callback.
    uv_idle_t* waiting_turn_ = nullptr;
    std::vector<std::uint64_t> out_of_turn_;  // clients whose answers for this turn are used up
    bool closed_ = false;
    std::string path_;
    dev_t socket_dev_ = 0;  // identity of the socket file we created,
    ino_t socket_ino_ = 0;  // so that close() never removes another's
    std::uint64_t next_client_id_ = 1;
    std::map<std::uint64_t, Client*> clients_;  // open clients (closing ones are not here)
    std::vector<char> read_buffer_;
};

} // namespace fh
