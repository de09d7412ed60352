#include "engine/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

namespace fh {

namespace {

constexpr int kListenBacklog = 128;
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;

uv_stream_t* as_stream(uv_pipe_t* p) { return reinterpret_cast<uv_stream_t*>(p); }
uv_handle_t* as_handle(uv_pipe_t* p) { return reinterpret_cast<uv_handle_t*>(p); }
uv_handle_t* as_handle(uv_timer_t* t) { return reinterpret_cast<uv_handle_t*>(t); }
uv_handle_t* as_handle(uv_prepare_t* p) { return reinterpret_cast<uv_handle_t*>(p); }
uv_handle_t* as_handle(uv_idle_t* i) { return reinterpret_cast<uv_handle_t*>(i); }

// Returns the address of the socket at `path` (the caller has checked that
// it fits in sun_path).
sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

// Creates the missing directories of `dir`, each with mode 0700: the
// socket's directory is where its access is really decided (a connect needs
// search permission on every directory above it).
Status make_private_dirs(const std::string& dir) {
    for (std::size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
        const std::string part = dir.substr(0, end);
        if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("mkdir", part);
        if (end == std::string::npos) return {};
    }
}

// Removes a socket file left by a daemon that died without removing it.
// Returns an Error when the path is something else, or when a process still
// accepts connections on it.
Status remove_stale_socket(const std::string& path, const sockaddr_un& addr) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        return errno_error("lstat", path);
    }
    if (!S_ISSOCK(st.st_mode))
        return Error{"replace the control socket", path, EEXIST, "the path exists and is not a socket; not removing it"};
    // Non-blocking: a connect to a live listener whose backlog is full
    // would otherwise wait.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) return errno_error("socket", path);
    const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int err = errno;
    ::close(probe);
    if (rc == 0 || err == EAGAIN)
        return Error{"replace the control socket", path, EADDRINUSE,
                     "another process listens on it (is another fuse-healerd running?)"};
    if (err != ECONNREFUSED) return Error{"connect to the existing socket", path, err, "to tell whether it is stale"};
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unlink stale socket", path);
    spdlog::info("removed the stale control socket {} (nobody listened on it)", path);
    return {};
}

} // namespace

struct ControlServer::Client {
    ControlServer* server = nullptr;
    std::uint64_t id = 0;
    uv_pipe_t pipe{};
    std::int64_t peer_pid = 0;
    std::string input;                // bytes read and not yet answered
    bool awaiting_answer = false;     // a request was handed to the handler
    bool eof = false;                 // the client shut down its side
    bool closing = false;             // uv_close called; the close callback deletes this
    bool close_when_written = false;  // after a fatal answer
    bool reading = false;
    bool processing = false;          // inside process(): a synchronous answer must not recurse
    bool out_of_turn = false;         // in server->out_of_turn_
    std::size_t answered_in_turn = 0; // requests answered since the last start_turn()
    std::size_t writes_in_flight = 0;
    std::uint64_t last_active_ms = 0;  // uv_now() when it connected, sent bytes or read an answer
};

struct ControlServer::Write {
    uv_write_t req{};
    // cppcheck-suppress unusedStructMember ; the bytes uv_write sends: req's buffer points into it
    std::string data;
    Client* client = nullptr;
};

bool ControlServer::Reply::send(const std::string& line) const {
    return server_ != nullptr && server_->deliver(client_id_, line);
}

ControlServer::ControlServer(uv_loop_t* loop, Handler handler, const ControlServerLimits& limits)
    : loop_(loop), handler_(std::move(handler)), limits_(limits), read_buffer_(kReadChunk) {}

ControlServer::~ControlServer() { close(); }

Status ControlServer::listen(const std::string& path) {
    path_ = path;
    if (path.empty() || path.front() != '/') return Error{"create the control socket", path, EINVAL, "not an absolute path"};
    if (path.size() >= sizeof(sockaddr_un::sun_path))
        return Error{"create the control socket", path, ENAMETOOLONG, "longer than a unix socket path can be"};
    const std::string dir = path.substr(0, path.rfind('/'));
    if (!dir.empty())
        if (Status st = make_private_dirs(dir); !st) return st;
    const sockaddr_un addr = unix_address(path);
    if (Status st = remove_stale_socket(path, addr); !st) return st;

    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return errno_error("socket", path);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        Error e = errno_error("bind", path);
        ::close(fd);
        return e;
    }
    // Before listen(): until then a connect is refused, so no client ever
    // reaches the socket with the mode the umask gave it.
    struct stat st {};
    if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0 || ::listen(fd, kListenBacklog) != 0) {
        Error e = errno_error("chmod 0600, stat and listen on", path);
        ::unlink(path.c_str());
        ::close(fd);
        return e;
    }
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;

    // The handle lives on the heap and is freed by its close callback, so
    // that the server itself can go away before the loop has run that.
    listener_ = new uv_pipe_t{};
    uv_pipe_init(loop_, listener_, 0);
    listener_->data = this;
    int rc = uv_pipe_open(listener_, fd);
    if (rc == 0)
        rc = uv_listen(as_stream(listener_), kListenBacklog, [](uv_stream_t* s, int status) {
            static_cast<ControlServer*>(s->data)->on_connection(status);
        });
    if (rc != 0) {
        close();  // closes the handle (and with it fd), removes the file
        return Error{"listen on the control socket", path, -rc, uv_strerror(rc)};
    }
    if (limits_.idle_timeout.count() > 0) {
        idle_timer_ = new uv_timer_t{};
        uv_timer_init(loop_, idle_timer_);
        idle_timer_->data = this;
        const auto every = static_cast<std::uint64_t>(std::max<std::int64_t>(1, limits_.idle_timeout.count() / 4));
        uv_timer_start(
            idle_timer_, [](uv_timer_t* t) { static_cast<ControlServer*>(t->data)->close_idle_clients(); }, every,
            every);
        uv_unref(as_handle(idle_timer_));  // it never keeps the loop alive on its own
    }
    turn_ = new uv_prepare_t{};
    uv_prepare_init(loop_, turn_);
    turn_->data = this;
    uv_prepare_start(turn_, [](uv_prepare_t* p) { static_cast<ControlServer*>(p->data)->start_turn(); });
    uv_unref(as_handle(turn_));
    waiting_turn_ = new uv_idle_t{};
    uv_idle_init(loop_, waiting_turn_);
    waiting_turn_->data = this;
    return {};
}

void ControlServer::start_turn() {
    // Each client's count starts again only here, once per turn: a client's
    // process() runs many times in one turn (libuv runs the callbacks of
    // all its finished writes in a row, and each comes back to process()),
    // so a count per call of process() bounded nothing: 64 finished writes
    // took 64 x 64 answers, the whole buffered input, in one turn.
    for (auto& [id, c] : clients_) c->answered_in_turn = 0;
    std::vector<std::uint64_t> waiting;
    waiting.swap(out_of_turn_);
    for (const std::uint64_t id : waiting) {
        const auto it = clients_.find(id);
        if (it == clients_.end()) continue;  // closed meanwhile
        it->second->out_of_turn = false;
        process(*it->second);  // may use this turn up too, and wait again
    }
    if (out_of_turn_.empty()) uv_idle_stop(waiting_turn_);
}

void ControlServer::close_idle_clients() {
    const std::uint64_t now = uv_now(loop_);
    const auto limit = static_cast<std::uint64_t>(limits_.idle_timeout.count());
    std::vector<Client*> idle;
    for (const auto& [id, c] : clients_)
        if (!c->closing && !c->awaiting_answer && now - c->last_active_ms >= limit) idle.push_back(c);
    for (Client* c : idle) {
        spdlog::debug("closing control client pid {}: idle for {} ms{}", c->peer_pid, now - c->last_active_ms,
                      c->writes_in_flight > 0 ? " with answers it does not read" : "");
        close_client(*c);
    }
}

void ControlServer::close() {
    if (closed_) return;
    closed_ = true;
    for (auto& [id, c] : clients_) {
        c->closing = true;
        uv_close(as_handle(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
    }
    clients_.clear();
    if (idle_timer_ != nullptr) {
        uv_timer_stop(idle_timer_);
        idle_timer_->data = nullptr;
        uv_close(as_handle(idle_timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        idle_timer_ = nullptr;
    }
    out_of_turn_.clear();
    if (turn_ != nullptr) {
        turn_->data = nullptr;
        uv_close(as_handle(turn_), [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
        turn_ = nullptr;
    }
    if (waiting_turn_ != nullptr) {
        uv_close(as_handle(waiting_turn_), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
        waiting_turn_ = nullptr;
    }
    if (listener_ == nullptr) return;  // listen() never got as far as the handle
    listener_->data = nullptr;
    uv_close(as_handle(listener_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    listener_ = nullptr;
    // Only the file we created: a daemon started after us may have replaced it.
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_ &&
        ::unlink(path_.c_str()) != 0)
        spdlog::warn("failed to remove the control socket {}, ignoring: {}", path_, std::strerror(errno));
}

void ControlServer::on_connection(int status) {
    if (status < 0) {
        spdlog::warn("failed to accept a control connection, ignoring: {}", uv_strerror(status));
        return;
    }
    auto* c = new Client{};
    c->server = this;
    c->id = next_client_id_++;
    uv_pipe_init(loop_, &c->pipe, 0);
    c->pipe.data = c;
    if (const int rc = uv_accept(as_stream(listener_), as_stream(&c->pipe)); rc != 0) {
        spdlog::warn("failed to accept a control connection, ignoring: {}", uv_strerror(rc));
        c->closing = true;
        uv_close(as_handle(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
        return;
    }
    clients_[c->id] = c;
    c->last_active_ms = uv_now(loop_);

    uv_os_fd_t fd = -1;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (uv_fileno(as_handle(&c->pipe), &fd) != 0 || ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        spdlog::warn("failed to read the peer credentials of a control client, closing it: {}", std::strerror(errno));
        close_client(*c);
        return;
    }
    c->peer_pid = cred.pid;
    if (cred.uid != 0) {
        spdlog::warn("refused a control client (pid {}, uid {}): only root is served", cred.pid, cred.uid);
        answer_and_close(*c, {ControlErrorCode::PermissionDenied,
                              "permission denied: fuse-healerd answers only root on its control socket, and this "
                              "client runs as uid " + std::to_string(cred.uid)});
        return;
    }
    // Clients being answered and closed (refused peers, whose refusal is
    // written at the end of this loop iteration) take no slot: a burst of
    // refused connections accepted in one iteration must not lock root out.
    std::size_t served = 0;
    for (const auto& [id, client] : clients_) served += client->close_when_written ? 0 : 1;
    if (served > limits_.max_clients) {
        spdlog::warn("refused a control client (pid {}): {} clients are connected already", cred.pid,
                     limits_.max_clients);
        answer_and_close(*c, {ControlErrorCode::Busy, "too many clients are connected to the control socket (" +
                                                          std::to_string(limits_.max_clients) + "); try again"});
        return;
    }
    update_reading(*c);
}

void ControlServer::on_read(Client& c, ssize_t nread, const uv_buf_t* buf) {
    if (nread > 0) {
        c.input.append(buf->base, static_cast<std::size_t>(nread));
        c.last_active_ms = uv_now(loop_);
    } else if (nread == UV_EOF) {
        c.eof = true;
        c.reading = false;  // libuv stops reading at EOF
    } else if (nread < 0) {
        spdlog::debug("control client pid {} read failed, closing it: {}", c.peer_pid, uv_strerror(static_cast<int>(nread)));
        close_client(c);
        return;
    }
    process(c);
}

void ControlServer::process(Client& c) {
    if (c.processing) return;
    c.processing = true;
    while (!c.closing && !c.close_when_written && !c.awaiting_answer && !c.out_of_turn) {
        // Pipelined requests whose answers the client does not read wait
        // in its input (bounded by update_reading) until it reads:
        // on_write_done comes back here.
        if (!unread_answers_fit(c)) break;
        const std::size_t newline = c.input.find('\n');
        const std::size_t length = newline == std::string::npos ? c.input.size() : newline;
        // Past the limit without a newline, the rest of the stream cannot
        // be split into requests reliably: answer and close.
        if (length > limits_.max_request_bytes) {
            answer_and_close(c, {ControlErrorCode::RequestTooLarge,
                                 "request longer than the limit of " + std::to_string(limits_.max_request_bytes) +
                                     " bytes; closing the connection"});
            break;
        }
        if (newline == std::string::npos && !(c.eof && !c.input.empty())) break;  // wait for the rest
        // This turn's answers used up: the rest in the next turn, after the
        // loop has polled (and written what was answered so far).
        if (c.answered_in_turn >= std::max<std::size_t>(1, limits_.answers_per_turn)) {
            c.out_of_turn = true;
            out_of_turn_.push_back(c.id);
            if (waiting_turn_ != nullptr) uv_idle_start(waiting_turn_, [](uv_idle_t*) {});
            break;
        }
        ++c.answered_in_turn;
        // At EOF a last request may lack its newline (printf '...' | socat).
        std::string line = c.input.substr(0, length);
        c.input.erase(0, newline == std::string::npos ? length : length + 1);

        auto parsed = parse_control_request(line);
        if (const auto* error = std::get_if<ControlError>(&parsed)) {
            spdlog::debug("control client pid {}: {}", c.peer_pid, error->message);
            write(c, encode_error_response(*error));
            continue;
        }
        const auto& request = std::get<ControlRequest>(parsed);
        spdlog::debug("control request from pid {}: {}{}{}", c.peer_pid, to_string(request.command),
                      request.target.empty() ? "" : " ", request.target);
        c.awaiting_answer = true;
        Reply reply;
        reply.server_ = this;
        reply.client_id_ = c.id;
        reply.peer_pid_ = c.peer_pid;
        handler_(request, reply);  // may answer at once, through deliver()
    }
    c.processing = false;
    update_reading(c);
    maybe_finish(c);
}

bool ControlServer::deliver(std::uint64_t client_id, const std::string& line) {
    const auto it = clients_.find(client_id);
    if (it == clients_.end()) return false;  // gone while its answer was being worked out
    Client& c = *it->second;
    if (!c.awaiting_answer) {
        spdlog::error("control: a second answer to one request, ignoring it");
        return false;
    }
    c.awaiting_answer = false;
    write(c, line);
    process(c);  // the next pipelined request, unless process() is on the stack already
    return true;
}

void ControlServer::write(Client& c, const std::string& line) {
    auto* w = new Write{};
    w->data = line;
    w->client = &c;
    w->req.data = w;
    const uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    ++c.writes_in_flight;
    const int rc = uv_write(&w->req, as_stream(&c.pipe), &buf, 1, [](uv_write_t* req, int status) {
        auto* done = static_cast<Write*>(req->data);
        Client* client = done->client;
        delete done;
        // A closing client's writes are cancelled; the server may be gone.
        if (client->closing) return;
        client->server->on_write_done(*client, status);
    });
    if (rc != 0) {
        --c.writes_in_flight;
        delete w;
        spdlog::debug("control client pid {}: write failed, closing it: {}", c.peer_pid, uv_strerror(rc));
        close_client(c);
    }
}

void ControlServer::on_write_done(Client& c, int status) {
    --c.writes_in_flight;
    c.last_active_ms = uv_now(loop_);
    if (status < 0) {
        spdlog::debug("control client pid {} left before reading its answer: {}", c.peer_pid, uv_strerror(status));
        close_client(c);
        return;
    }
    if (c.close_when_written && c.writes_in_flight == 0) {
        close_client(c);
        return;
    }
    // The answers it had not read are written: go on with its requests.
    process(c);
}

void ControlServer::answer_and_close(Client& c, const ControlError& error) {
    c.close_when_written = true;
    c.input.clear();
    write(c, encode_error_response(error));
    update_reading(c);
}

bool ControlServer::unread_answers_fit(Client& c) const {
    return uv_stream_get_write_queue_size(as_stream(&c.pipe)) <= limits_.max_unread_answers_bytes;
}

void ControlServer::update_reading(Client& c) {
    if (c.closing) return;
    const bool unread_answers_fit = this->unread_answers_fit(c);
    // Requests not processed yet (one waits for its answer, or the pass
    // yielded) are only buffered: stop past one request's worth (a request
    // of exactly the limit still needs its newline).
    const bool input_fits = c.input.size() <= limits_.max_request_bytes;
    const bool want = !c.eof && !c.close_when_written && unread_answers_fit && input_fits;
    if (want && !c.reading) {
        const int rc = uv_read_start(
            as_stream(&c.pipe),
            [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
                // One buffer serves every client: libuv reads into it and
                // calls the read callback before it allocates again.
                auto& storage = static_cast<Client*>(h->data)->server->read_buffer_;
                *buf = uv_buf_init(storage.data(), static_cast<unsigned>(storage.size()));
            },
            [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                auto* client = static_cast<Client*>(s->data);
                client->server->on_read(*client, nread, buf);
            });
        if (rc != 0) {
            spdlog::debug("control client pid {}: read failed, closing it: {}", c.peer_pid, uv_strerror(rc));
            close_client(c);
            return;
        }
        c.reading = true;
    } else if (!want && c.reading) {
        uv_read_stop(as_stream(&c.pipe));
        c.reading = false;
    }
}

void ControlServer::maybe_finish(Client& c) {
    if (c.closing) return;
    if (c.eof && !c.awaiting_answer && c.input.empty() && c.writes_in_flight == 0) close_client(c);
}

void ControlServer::close_client(Client& c) {
    if (c.closing) return;
    c.closing = true;
    clients_.erase(c.id);
    uv_close(as_handle(&c.pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
}

} // namespace fh
