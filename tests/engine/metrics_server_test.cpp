// Tests of engine/metrics_server.h: the HTTP endpoint on a loopback port the
// kernel picks, the textfile writer, and the mapping of heal events onto the
// metrics. No mounts, no root.
#include "engine/metrics_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "../scrape.h"
#include "temp_dir.h"

namespace fh {
namespace {

using testing_support::slurp;

using namespace std::chrono_literals;
using namespace std::string_literals;
using testing_support::TempDir;


// Polls `done` every millisecond for up to `timeout`; returns its last value.
template <typename F>
bool eventually(F done, std::chrono::milliseconds timeout = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Sends the daemon's log to a string for the test's lifetime.
class CapturedLog {
public:
    CapturedLog() : previous_(spdlog::default_logger()) {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        sink->set_pattern("%l %v");
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
        spdlog::set_level(spdlog::level::debug);
    }
    ~CapturedLog() { spdlog::set_default_logger(previous_); }
    std::string text() {
        spdlog::default_logger()->flush();
        return out_.str();
    }
    // Returns how many times `needle` was logged.
    int count(const std::string& needle) {
        const std::string t = text();
        int n = 0;
        for (auto p = t.find(needle); p != std::string::npos; p = t.find(needle, p + 1)) ++n;
        return n;
    }

private:
    std::shared_ptr<spdlog::logger> previous_;
    std::ostringstream out_;
};

std::unique_ptr<MetricsServer> start_on_loopback(const HealerMetrics& metrics, const std::string& host = "127.0.0.1") {
    Result<std::unique_ptr<MetricsServer>> server = MetricsServer::start(ListenAddress{host, host == "::1", 0}, metrics);
    if (!server) {
        ADD_FAILURE() << server.error().message();
        return nullptr;
    }
    return std::move(*server);
}

scrape::HttpResponse get(const MetricsServer& server, const std::string& method, const std::string& path) {
    std::string why;
    auto response = scrape::http_request(server.address().host, server.port(), method, path, &why);
    if (!response) {
        ADD_FAILURE() << why;
        return {};
    }
    return *response;
}

TEST(MetricsServer, ServesTheRenderedTextWithTheExpositionContentType) {
    HealerMetrics metrics;
    metrics.set_build_info("9.9.9", "replace", "fusectl");
    metrics.record_heal(HealResult::Healed, 0.002, 4);
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    EXPECT_NE(server->port(), 0) << "the kernel picked a port";
    scrape::HttpResponse r = get(*server, "GET", "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(r.body, metrics.render());
    std::string why;
    const auto samples = scrape::parse_samples(r.body, &why);
    ASSERT_TRUE(samples) << why;
    EXPECT_EQ(samples->at("fuse_healer_heals_total{result=\"healed\"}"), 1);
    EXPECT_EQ(samples->at("fuse_healer_build_info{version=\"9.9.9\",strategy=\"replace\",detection=\"fusectl\"}"), 1);

    // Served live: a later record shows in the next scrape.
    metrics.record_heal(HealResult::Healed, 0.002, 4);
    EXPECT_NE(get(*server, "GET", "/metrics").body.find("fuse_healer_heals_total{result=\"healed\"} 2\n"),
              std::string::npos);
}

TEST(MetricsServer, OtherPathsAre404OtherMethods405HeadHasNoBody) {
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    for (const char* path : {"/other", "/", "/metrics/", "/metricsx"}) EXPECT_EQ(get(*server, "GET", path).status, 404) << path;
    scrape::HttpResponse post = get(*server, "POST", "/metrics");
    EXPECT_EQ(post.status, 405);
    EXPECT_EQ(post.headers["allow"], "GET, HEAD");
    scrape::HttpResponse head = get(*server, "HEAD", "/metrics");
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.body, "");
    EXPECT_EQ(head.headers["content-length"], std::to_string(metrics.render().size()));
}

TEST(MetricsServer, ServesIpv6Loopback) {
    const int probe = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in6 any{};
    any.sin6_family = AF_INET6;
    any.sin6_addr = in6addr_loopback;
    const bool have_ipv6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0;
    if (probe >= 0) ::close(probe);
    if (!have_ipv6) GTEST_SKIP() << "no IPv6 loopback here";
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics, "::1");
    ASSERT_TRUE(server);
    EXPECT_EQ(get(*server, "GET", "/metrics").status, 200);
}

TEST(MetricsServer, APortInUseIsAnErrorNamingTheAddress) {
    HealerMetrics metrics;
    auto first = start_on_loopback(metrics);
    ASSERT_TRUE(first);
    const ListenAddress taken{"127.0.0.1", false, first->port()};
    Result<std::unique_ptr<MetricsServer>> second = MetricsServer::start(taken, metrics);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().message(), "bind " + taken.to_string() + ": Address already in use");
    EXPECT_EQ(get(*first, "GET", "/metrics").status, 200) << "the first server is unaffected";
}

TEST(MetricsServer, StoppingFreesThePort) {
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    const ListenAddress address{"127.0.0.1", false, server->port()};
    server.reset();
    std::string why;
    EXPECT_FALSE(scrape::http_request(address.host, address.port, "GET", "/metrics", &why)) << "still served";
    Result<std::unique_ptr<MetricsServer>> again = MetricsServer::start(address, metrics);
    EXPECT_TRUE(again) << again.error().message();
}

// ---- hostile and slow clients (the port is open to every local user) -------

// A client socket connected to the server, blocking, with 5 s timeouts.
sys::UniqueFd connect_to(const MetricsServer& server) {
    sys::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(server.port());
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&in), sizeof in), 0) << std::strerror(errno);
    return fd;
}

void send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        ASSERT_GT(n, 0) << std::strerror(errno);
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

// Returns what the server sends until it closes; "<error: ...>" on a reset
// or a timeout (the answer may have been lost then).
std::string read_until_closed(int fd) {
    std::string got;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0) return got;
        if (n < 0) return got + "<error: " + std::strerror(errno) + ">";
        got.append(buf, static_cast<std::size_t>(n));
    }
}

std::string status_line(const std::string& answer) { return answer.substr(0, answer.find("\r\n")); }

TEST(MetricsServer, ARequestSentAByteAtATimeIsAnswered) {
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    sys::UniqueFd c = connect_to(*server);
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (const char byte : request) {
        send_all(c.get(), std::string_view(&byte, 1));
        std::this_thread::sleep_for(1ms);
    }
    const std::string answer = read_until_closed(c.get());
    EXPECT_EQ(status_line(answer), "HTTP/1.1 200 OK");
    EXPECT_NE(answer.find("\r\n\r\n" + metrics.render()), std::string::npos) << answer.substr(0, 300);
}

TEST(MetricsServer, MalformedAndOversizedRequestsGetTheirErrorAndTheConnectionCloses) {
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    const std::pair<std::string, std::string> cases[] = {
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, "HTTP/1.1 400 Bad Request"},  // TLS hello
        {"GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported"},
        {"GET /metrics HTTP/1.1\r\nBad Field\r\n\r\n", "HTTP/1.1 400 Bad Request"},
        {"GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a'), "HTTP/1.1 431 Request Header Fields Too Large"},
    };
    for (const auto& [request, expected] : cases) {
        sys::UniqueFd c = connect_to(*server);
        send_all(c.get(), request);
        const std::string answer = read_until_closed(c.get());
        EXPECT_EQ(status_line(answer), expected) << answer;
        EXPECT_EQ(answer.find("<error"), std::string::npos) << "the answer arrives whole, before the close";
    }
    EXPECT_EQ(get(*server, "GET", "/metrics").status, 200) << "still serving";
}

TEST(MetricsServer, APostWithALargeBodyGets405WholeNotAReset) {
    // The server answers after the head and never reads a body; it must not
    // close with the body unread, or the kernel's reset could drop the answer.
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    sys::UniqueFd c = connect_to(*server);
    const std::string body(256 * 1024, 'x');
    // Head and body at once: most of the body is still unread in the
    // server's socket when its answer is sent; the client reads it late.
    send_all(c.get(), "POST /metrics HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    std::this_thread::sleep_for(100ms);
    ::shutdown(c.get(), SHUT_WR);
    const std::string answer = read_until_closed(c.get());
    EXPECT_EQ(status_line(answer), "HTTP/1.1 405 Method Not Allowed") << answer;
    EXPECT_NE(answer.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos);
    EXPECT_EQ(answer.find("<error"), std::string::npos) << answer.substr(answer.find("\r\n\r\n"));
}

TEST(MetricsServer, SilentClientsHoldingEverySlotDelayScrapesOnlyUntilTheirTimeout) {
    CapturedLog log;
    HealerMetrics metrics;
    MetricsServerLimits limits;
    limits.max_connections = 4;
    limits.timeout = 300ms;
    Result<std::unique_ptr<MetricsServer>> server =
        MetricsServer::start(ListenAddress{"127.0.0.1", false, 0}, metrics, limits);
    ASSERT_TRUE(server) << server.error().message();
    std::vector<sys::UniqueFd> silent;
    for (std::size_t i = 0; i < limits.max_connections; ++i) silent.push_back(connect_to(**server));
    // One that dribbles a byte every 50 ms: progress does not buy it time.
    sys::UniqueFd dribbler = connect_to(**server);
    std::this_thread::sleep_for(50ms);  // every slot taken
    const auto t0 = std::chrono::steady_clock::now();
    const scrape::HttpResponse scrape = get(**server, "GET", "/metrics");
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(scrape.status, 200);
    EXPECT_GE(waited, 150ms) << "served while every slot was taken";
    for (auto& s : silent) EXPECT_EQ(read_until_closed(s.get()), "") << "closed without an answer";
    const std::string request = "GET /metrics HTTP/1.1\r\n";
    bool closed = false;
    for (std::size_t i = 0; i < 100 && !closed; ++i) {
        closed = ::send(dribbler.get(), request.data() + i % request.size(), 1, MSG_NOSIGNAL) < 0;
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(closed) << "a client dribbling bytes keeps its slot";
    EXPECT_GE(log.count("closing a connection that is too slow"), 5);
}

TEST(MetricsServer, AClientClosingItsSideEarlyStillGetsItsAnswer) {
    HealerMetrics metrics;
    auto server = start_on_loopback(metrics);
    ASSERT_TRUE(server);
    sys::UniqueFd c = connect_to(*server);
    send_all(c.get(), "HEAD /metrics HTTP/1.0\r\n\r\n");
    ::shutdown(c.get(), SHUT_WR);
    const std::string answer = read_until_closed(c.get());
    EXPECT_EQ(status_line(answer), "HTTP/1.1 200 OK");
    EXPECT_NE(answer.find("\r\nContent-Length: " + std::to_string(metrics.render().size()) + "\r\n"), std::string::npos);
    EXPECT_EQ(answer.substr(answer.size() - 4), "\r\n\r\n") << "HEAD: no body";
}

TEST(WriteMetricsTextfile, WritesWorldReadableWhateverTheUmaskAndLeavesNoTempFile) {
    TempDir tmp;
    const std::string path = tmp / "fuse_healer.prom";
    const mode_t old_umask = ::umask(077);  // systemd's UMask= for the unit
    const Status first = write_metrics_textfile(path, "a 1\n");
    const Status second = write_metrics_textfile(path, "a 2\n");
    ::umask(old_umask);
    ASSERT_TRUE(first) << first.error().message();
    ASSERT_TRUE(second) << second.error().message();
    EXPECT_EQ(slurp(path), "a 2\n");
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u) << "node_exporter reads it as another user";
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(tmp.path())) names.push_back(e.path().filename());
    EXPECT_EQ(names, std::vector<std::string>{"fuse_healer.prom"});
}

TEST(WriteMetricsTextfile, AMissingDirectoryIsAnErrorNamingThePath) {
    TempDir tmp;
    const Status s = write_metrics_textfile(tmp / "missing/fuse_healer.prom", "a 1\n");
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message().find(tmp / "missing/fuse_healer.prom"), std::string::npos) << s.error().message();
    EXPECT_EQ(s.error().err, ENOENT);
}

TEST(MetricsTextfile, WritesOnRequestAtMostOncePerIntervalAndCatchesUp) {
    TempDir tmp;
    const std::string path = tmp / "fuse_healer.prom";
    HealerMetrics metrics;
    const auto interval = 300ms;
    MetricsTextfile textfile(path, metrics, interval);
    EXPECT_EQ(textfile.path(), path);
    EXPECT_FALSE(std::filesystem::exists(path)) << "nothing is written before a request";
    textfile.request_write();
    ASSERT_TRUE(eventually([&] { return textfile.writes() == 1; }));
    EXPECT_EQ(slurp(path), metrics.render());

    // A burst inside the interval: folded into one write after it, which
    // has the last state.
    const auto burst_start = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) {
        metrics.record_reconcile();
        textfile.request_write();
    }
    std::this_thread::sleep_for(interval / 3);
    if (std::chrono::steady_clock::now() - burst_start < interval / 2) {
        EXPECT_EQ(textfile.writes(), 1u) << "no second write within the interval";
    }
    ASSERT_TRUE(eventually([&] { return textfile.writes() == 2; }));
    EXPECT_NE(slurp(path).find("fuse_healer_reconciles_total 10\n"), std::string::npos) << slurp(path);
    std::this_thread::sleep_for(interval + 100ms);
    EXPECT_EQ(textfile.writes(), 2u) << "no write without a request";
}

TEST(MetricsTextfile, AFailureIsLoggedOnceUntilAWriteSucceedsAgain) {
    CapturedLog log;
    TempDir tmp;
    const std::string dir = tmp / "textfile";
    HealerMetrics metrics;
    MetricsTextfile textfile(dir + "/fuse_healer.prom", metrics, 10ms);
    for (int i = 0; i < 5; ++i) {
        textfile.request_write();
        std::this_thread::sleep_for(30ms);
    }
    EXPECT_EQ(textfile.writes(), 0u);
    EXPECT_EQ(log.count("failed to write metrics textfile, ignoring: create " + dir + "/fuse_healer.prom.new.tmp: "
                        "No such file or directory"),
              1)
        << log.text();
    std::filesystem::create_directory(dir);
    textfile.request_write();
    ASSERT_TRUE(eventually([&] { return textfile.writes() == 1; }));
    EXPECT_EQ(log.count("metrics textfile " + dir + "/fuse_healer.prom written again"), 1) << log.text();
}

TEST(RecordHealEvent, EachKindFeedsItsMetric) {
    HealerMetrics metrics;
    const auto event = [](HealEvent::Kind kind, std::int64_t outage_us = 0, std::int64_t heal_us = 0) {
        HealEvent e{};
        e.kind = kind;
        e.outage_us = outage_us;
        e.heal_us = heal_us;
        return e;
    };
    record_heal_event(metrics, event(HealEvent::Kind::Broken));
    record_heal_event(metrics, event(HealEvent::Kind::Unresponsive));
    record_heal_event(metrics, event(HealEvent::Kind::Healed, 2'500'000, 400));
    record_heal_event(metrics, event(HealEvent::Kind::HealFailed, 1'000'000, 300));
    record_heal_event(metrics, event(HealEvent::Kind::Skipped));
    record_heal_event(metrics, event(HealEvent::Kind::Recovered, 30'000));
    const MetricRegistry& r = metrics.registry();
    EXPECT_EQ(r.value("fuse_healer_broken_detected_total"), 1);
    EXPECT_EQ(r.value("fuse_healer_unresponsive_detected_total"), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "healed"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "failed"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "skipped"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heal_duration_seconds"), 1) << "the healed event only";
    EXPECT_EQ(r.value("fuse_healer_outage_duration_seconds"), 2) << "healed and recovered";
    const std::string text = metrics.render();
    // Microseconds become seconds: 400 us, 2.5 s + 30 ms.
    EXPECT_NE(text.find("fuse_healer_heal_duration_seconds_sum 0.0004\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_sum 2.53\n"), std::string::npos) << text;
}

} // namespace
} // namespace fh
