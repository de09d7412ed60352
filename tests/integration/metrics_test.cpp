// fuse-healerd's Prometheus metrics, end to end: a real heal (kill -9 of a
// FUSE daemon, restart by its supervisor) seen through GET /metrics on a
// loopback port and in the node_exporter textfile; the listener and the
// textfile follow a SIGHUP reload; a port in use is not fatal.
//
// The daemon shares the test's network namespace (only the mount namespace
// is private), so each test listens on a port that was free a moment before.
#include "heal_fixture.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "../scrape.h"

namespace fh::test {
namespace {

// A listening TCP socket on 127.0.0.1 at a port the kernel picks; closed on
// destruction. Holding it makes the port "in use"; closing it frees a port
// that no other test has.
class LoopbackListener {
public:
    LoopbackListener() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 1) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
            throw std::runtime_error(std::string("loopback listener: ") + std::strerror(errno));
        port_ = ntohs(a.sin_port);
    }
    ~LoopbackListener() { close(); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    std::uint16_t port() const { return port_; }

private:
    int fd_ = -1;
    std::uint16_t port_ = 0;
};

// Returns a loopback port free a moment ago (a tiny race with other programs
// binding port 0 meanwhile; the kernel hands ports out in turn, not again).
std::uint16_t free_port() {
    LoopbackListener l;
    return l.port();
}

std::string listen_on(std::uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

std::string metrics_toml(const std::string& listen, const std::string& textfile) {
    return "[metrics]\nlisten = \"" + listen + "\"\ntextfile = \"" + textfile + "\"\n";
}

// GET path from the daemon; fails the test (and returns an empty response)
// when the request fails.
scrape::HttpResponse get(std::uint16_t port, const std::string& path = "/metrics") {
    std::string why;
    auto r = scrape::http_request("127.0.0.1", port, "GET", path, &why);
    if (!r) {
        ADD_FAILURE() << why;
        return {};
    }
    return *r;
}

// Returns the samples of an exposition text; fails the test when it does
// not parse.
std::map<std::string, double> samples_of(const std::string& text) {
    std::string why;
    auto s = scrape::parse_samples(text, &why);
    if (!s) {
        ADD_FAILURE() << why << "\n" << text;
        return {};
    }
    return *s;
}

// Returns the value of `series`, or -1 when absent.
double value(const std::map<std::string, double>& samples, const std::string& series) {
    const auto it = samples.find(series);
    return it == samples.end() ? -1 : it->second;
}

// Returns how many times `needle` occurs in `text`.
int occurrences(const std::string& text, const std::string& needle) {
    int n = 0;
    for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
}

const char* const kTargetStates[] = {"healthy", "broken", "unresponsive", "skipped", "healing", "unknown"};

class Metrics : public DaemonTest {
protected:
    Sandbox sb;
};

// One dataset bound into a pod volume and a subPath; the FUSE daemon is
// killed and restarted; both targets are healed. The scrape and the textfile
// then count those heals, their durations and the outages.
TEST_F(Metrics, ScrapeAndTextfileCountARealHeal) {
    FuseDaemon fuse{sb, sb.runtime() + "/ds/fuse"};
    fuse.start(1);
    const std::string vol = sb.make_pod_volume("pod-1", "pvc-1");
    csi_bind(fuse.source(), "", vol, true);
    const std::string sub = sb.pod_subpath_path("pod-1", "pvc-1", "app", 0);
    csi_bind(fuse.source(), "sub", sub, true);
    const std::uint16_t port = free_port();
    const std::string textfile = sb.path("node-exporter/fuse_healer.prom");
    sb.make_dirs(sb.path("node-exporter"));
    Daemon d{sb};
    d.start(metrics_toml(listen_on(port), textfile));
    ASSERT_TRUE(d.wait_for_log("serving metrics on http://" + listen_on(port) + "/metrics")) << d.log();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    ASSERT_TRUE(daemon_learned(sb, vol) && daemon_learned(sb, sub)) << d.log();

    // Before the crash: two healthy targets, every state present, no heal.
    std::map<std::string, double> before;
    ASSERT_TRUE(wait_until(
        [&] {
            before = samples_of(get(port).body);
            return value(before, "fuse_healer_targets{state=\"healthy\"}") == 2;
        },
        5000ms, 10ms))
        << get(port).body;
    for (const char* state : kTargetStates)
        EXPECT_NE(value(before, std::string("fuse_healer_targets{state=\"") + state + "\"}"), -1) << state;
    EXPECT_EQ(value(before, "fuse_healer_heals_total{result=\"healed\"}"), 0);
    EXPECT_EQ(value(before, "fuse_healer_heal_duration_seconds_count"), 0);

    fuse.kill9();
    ASSERT_TRUE(wait_until([&] { return read_errno(vol + "/generation") == ENOTCONN; }, 5000ms));
    fuse.supervisor_restart(2);
    ASSERT_TRUE(host_reads(vol + "/generation", "2\n")) << d.log();
    ASSERT_TRUE(host_reads(sub + "/inner", "inner 2\n")) << d.log();
    ASSERT_TRUE(d.wait_for_log("mount healed: target=" + vol)) << d.log();
    ASSERT_TRUE(d.wait_for_log("mount healed: target=" + sub)) << d.log();
    const int healed_logged = occurrences(d.log(), "mount healed: target=");

    // The heal events are recorded right after they are logged, and the
    // reconcile count and the targets' states after the reconcile ends: poll
    // for all three. (The states alone do not say it ended: a step that saw
    // the death only once the source was back heals at once, and the
    // states stay "healthy" from before the crash. CI once scraped in that
    // step, before its count.)
    scrape::HttpResponse response;
    std::map<std::string, double> after;
    ASSERT_TRUE(wait_until(
        [&] {
            response = get(port);
            after = samples_of(response.body);
            return value(after, "fuse_healer_heals_total{result=\"healed\"}") >= healed_logged &&
                   value(after, "fuse_healer_reconciles_total") > value(before, "fuse_healer_reconciles_total") &&
                   value(after, "fuse_healer_targets{state=\"healthy\"}") == 2;
        },
        5000ms, 10ms))
        << response.body << "\n" << d.log();
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");

    const double healed = value(after, "fuse_healer_heals_total{result=\"healed\"}");
    EXPECT_GE(healed, 1);
    EXPECT_EQ(healed, healed_logged) << "one count per \"mount healed\" line";
    EXPECT_EQ(value(after, "fuse_healer_heals_total{result=\"failed\"}"), occurrences(d.log(), "failed to heal"));
    // One heal duration per healed target; every observation is in +Inf;
    // the buckets never decrease.
    EXPECT_EQ(value(after, "fuse_healer_heal_duration_seconds_count"), healed);
    EXPECT_EQ(value(after, "fuse_healer_heal_duration_seconds_bucket{le=\"+Inf\"}"), healed);
    EXPECT_GT(value(after, "fuse_healer_heal_duration_seconds_sum"), 0);
    double previous = 0;
    for (const char* le : {"0.0001", "0.001", "0.01", "0.1", "1", "10", "60", "+Inf"}) {
        const double bucket = value(after, std::string("fuse_healer_heal_duration_seconds_bucket{le=\"") + le + "\"}");
        EXPECT_GE(bucket, previous) << "le=" << le;
        previous = bucket;
    }
    // Each healed target's outage ended; it lasted from the kill to the heal.
    EXPECT_GE(value(after, "fuse_healer_outage_duration_seconds_count"), healed);
    EXPECT_EQ(value(after, "fuse_healer_outage_duration_seconds_bucket{le=\"+Inf\"}"),
              value(after, "fuse_healer_outage_duration_seconds_count"));
    EXPECT_GT(value(after, "fuse_healer_outage_duration_seconds_sum"), 0);
    EXPECT_GE(value(after, "fuse_healer_broken_detected_total"), 1);
    const std::string relevant = "fuse_healer_mount_events_total{relevance=\"relevant\"}";
    EXPECT_GT(value(after, relevant), value(before, relevant)) << "the unmount and the new mount are relevant mount events";
    EXPECT_GT(value(after, "fuse_healer_reconciles_total"), value(before, "fuse_healer_reconciles_total"));
    for (const char* state : {"broken", "unresponsive", "skipped", "healing", "unknown"})
        EXPECT_EQ(value(after, std::string("fuse_healer_targets{state=\"") + state + "\"}"), 0) << state;
    int build_info = 0;
    for (const auto& [series, v] : after) {
        if (series.rfind("fuse_healer_build_info{", 0) != 0) continue;
        ++build_info;
        EXPECT_EQ(series.rfind(std::string("fuse_healer_build_info{version=\"") + FUSE_HEALER_VERSION + "\",strategy=\"", 0), 0u)
            << series;
        EXPECT_EQ(v, 1);
    }
    EXPECT_EQ(build_info, 1);

    EXPECT_EQ(get(port, "/other").status, 404);

    // The textfile catches up within a second of the last reconcile; it is
    // complete exposition text, readable by node_exporter's user.
    std::map<std::string, double> from_file;
    ASSERT_TRUE(wait_until(
        [&] {
            const auto text = read_file(textfile);
            if (!text) return false;
            std::string why;
            const auto parsed = scrape::parse_samples(*text, &why);
            if (!parsed) return false;
            from_file = *parsed;
            return value(from_file, "fuse_healer_heals_total{result=\"healed\"}") == healed;
        },
        5000ms, 20ms))
        << read_file(textfile).value_or("(no textfile)");
    EXPECT_EQ(value(from_file, "fuse_healer_heal_duration_seconds_count"), healed);
    EXPECT_EQ(value(from_file, "fuse_healer_targets{state=\"healthy\"}"), 2);
    EXPECT_NE(read_file(textfile)->find("# TYPE fuse_healer_heal_duration_seconds histogram\n"), std::string::npos);
    struct stat st {};
    ASSERT_EQ(::stat(textfile.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u);

    EXPECT_EQ(d.terminate(), 0) << d.log();
    std::string why;
    EXPECT_FALSE(scrape::http_request("127.0.0.1", port, "GET", "/metrics", &why)) << "served after the stop";
    EXPECT_EQ(d.log().find("failed to write metrics textfile"), std::string::npos) << d.log();
}

// SIGHUP applies a changed [metrics]: the listener moves to the new port
// (the old one is closed), a textfile turned off is removed, and listen = ""
// stops serving.
TEST_F(Metrics, ReloadMovesTheListenerAndTurnsTheTextfileOff) {
    const std::uint16_t first_port = free_port();
    const std::string textfile = sb.path("fuse_healer.prom");
    Daemon d{sb};
    d.start(metrics_toml(listen_on(first_port), textfile));
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    EXPECT_EQ(get(first_port).status, 200);
    ASSERT_TRUE(wait_until([&] { return read_file(textfile).has_value(); }, 5000ms)) << d.log();

    const std::uint16_t second_port = free_port();
    write_file(d.config_path(), d.config_text(metrics_toml(listen_on(second_port), "")));
    std::size_t from = d.log().size();
    kill(d.pid(), SIGHUP);
    ASSERT_TRUE(d.wait_for_log("config reloaded", 5000ms, from)) << d.log();
    EXPECT_TRUE(d.wait_for_log("stopped serving metrics on " + listen_on(first_port), 0ms, from)) << d.log();
    EXPECT_TRUE(d.wait_for_log("serving metrics on http://" + listen_on(second_port) + "/metrics", 0ms, from))
        << d.log();
    EXPECT_TRUE(d.wait_for_log("stopped writing metrics to " + textfile, 0ms, from)) << d.log();
    std::string why;
    EXPECT_FALSE(scrape::http_request("127.0.0.1", first_port, "GET", "/metrics", &why)) << "old port still served";
    EXPECT_EQ(get(second_port).status, 200);
    EXPECT_FALSE(read_file(textfile).has_value()) << "a textfile no longer written is removed";

    write_file(d.config_path(), d.config_text(metrics_toml("", "")));
    from = d.log().size();
    kill(d.pid(), SIGHUP);
    ASSERT_TRUE(d.wait_for_log("config reloaded", 5000ms, from)) << d.log();
    EXPECT_TRUE(d.wait_for_log("stopped serving metrics on " + listen_on(second_port), 0ms, from)) << d.log();
    EXPECT_FALSE(scrape::http_request("127.0.0.1", second_port, "GET", "/metrics", &why)) << "listen = \"\" serves";
    EXPECT_EQ(d.terminate(), 0) << d.log();
}

// A port already in use costs the metrics, not the healing: the daemon logs
// it, runs on, and binds on the next reload once the port is free.
TEST_F(Metrics, APortInUseIsLoggedAndRetriedOnReload) {
    LoopbackListener squatter;
    const std::uint16_t port = squatter.port();
    Daemon d{sb};
    d.start(metrics_toml(listen_on(port), ""));
    ASSERT_TRUE(d.wait_for_log("failed to serve metrics, ignoring: bind " + listen_on(port) +
                               ": Address already in use"))
        << d.log();
    ASSERT_TRUE(d.wait_for_log("ready")) << d.log();
    EXPECT_FALSE(d.poll_exit().has_value()) << d.log();

    squatter.close();
    const std::size_t from = d.log().size();
    kill(d.pid(), SIGHUP);
    ASSERT_TRUE(d.wait_for_log("serving metrics on http://" + listen_on(port) + "/metrics", 5000ms, from))
        << d.log();
    EXPECT_EQ(get(port).status, 200);
    EXPECT_EQ(d.terminate(), 0) << d.log();
}

} // namespace
} // namespace fh::test
