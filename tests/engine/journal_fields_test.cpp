// The structured journal fields of heal events (engine/journal_fields.h).
#include "engine/journal_fields.h"

#include "engine/logging.h"

#include <sys/sysmacros.h>
#include <syslog.h>

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace fh {
namespace {

HealEvent healed_event() {
    HealEvent e{HealEvent::Kind::Healed, TargetContext{"/k/pods/u1/volumes/kubernetes.io~csi/pv1/mount", "u1", "pv1",
                                                        "fuse.csi.fluid.io", "default-ds"}};
    e.source = "/runtime/ds/fuse";
    e.fstype = "fuse.juicefs";
    e.strategy = "replace";
    e.outage_us = 912345;
    e.heal_us = 410;
    e.start_after_event_us = 733;
    e.probe_after_event_us = 412;
    e.since_event_us = 1630;
    e.namespaces_healed = 2;
    return e;
}

std::map<std::string, std::string> as_map(const JournalFields& f) {
    std::map<std::string, std::string> m;
    for (const auto& [k, v] : f) EXPECT_TRUE(m.emplace(k, v).second) << "duplicate field " << k;
    return m;
}

TEST(JournalFields, HealedCarriesEveryFieldAnOperatorQueries) {
    auto m = as_map(journal_fields(healed_event()));
    EXPECT_EQ(m["MESSAGE_ID"], kMessageIdHealed);
    EXPECT_EQ(m["PRIORITY"], std::to_string(LOG_INFO));
    EXPECT_EQ(m["EVENT"], "healed");
    EXPECT_EQ(m["TARGET"], "/k/pods/u1/volumes/kubernetes.io~csi/pv1/mount");
    EXPECT_EQ(m["POD_UID"], "u1");
    EXPECT_EQ(m["VOLUME"], "pv1");
    EXPECT_EQ(m["DRIVER"], "fuse.csi.fluid.io");
    EXPECT_EQ(m["VOLUME_HANDLE"], "default-ds");
    EXPECT_EQ(m["SOURCE"], "/runtime/ds/fuse");
    EXPECT_EQ(m["FSTYPE"], "fuse.juicefs");
    EXPECT_EQ(m["STRATEGY"], "replace");
    EXPECT_EQ(m["OUTAGE_USEC"], "912345");
    EXPECT_EQ(m["HEAL_USEC"], "410");
    EXPECT_EQ(m["HEAL_START_AFTER_EVENT_USEC"], "733");
    EXPECT_EQ(m["PROBE_AFTER_EVENT_USEC"], "412");
    EXPECT_EQ(m["SINCE_EVENT_USEC"], "1630");
    EXPECT_EQ(m["NAMESPACES_HEALED"], "2");
    EXPECT_EQ(m.count("REASON"), 0u);  // empty values are left out
}

TEST(JournalFields, BrokenHasNoOutageYetButAReason) {
    HealEvent e = healed_event();
    e.kind = HealEvent::Kind::Broken;
    e.reason = "source /runtime/ds/fuse is not mounted yet";
    auto m = as_map(journal_fields(e));
    EXPECT_EQ(m["MESSAGE_ID"], kMessageIdBroken);
    EXPECT_EQ(m["PRIORITY"], std::to_string(LOG_WARNING));
    EXPECT_EQ(m["REASON"], e.reason);
    EXPECT_EQ(m.count("OUTAGE_USEC"), 0u);
    EXPECT_EQ(m.count("HEAL_USEC"), 0u);
}

TEST(JournalFields, FailedIsAnErrorWithItsOutageSoFar) {
    HealEvent e = healed_event();
    e.kind = HealEvent::Kind::HealFailed;
    e.reason = "open_tree /runtime/ds/fuse/sub: No such file or directory";
    auto m = as_map(journal_fields(e));
    EXPECT_EQ(m["MESSAGE_ID"], kMessageIdHealFailed);
    EXPECT_EQ(m["PRIORITY"], std::to_string(LOG_ERR));
    EXPECT_EQ(m["OUTAGE_USEC"], "912345");
    EXPECT_EQ(m.count("HEAL_USEC"), 0u);
}

TEST(JournalFields, EveryKindHasItsOwnFixedMessageId) {
    std::set<std::string> ids;
    for (auto k : {HealEvent::Kind::Broken, HealEvent::Kind::Healed, HealEvent::Kind::HealFailed,
                   HealEvent::Kind::Skipped, HealEvent::Kind::Unresponsive, HealEvent::Kind::Recovered}) {
        std::string id = message_id(k);
        EXPECT_EQ(id.size(), 32u);
        EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
        ids.insert(id);
    }
    ids.insert(kMessageIdConfigError);
    ids.insert(kMessageIdServerDied);
    ids.insert(kMessageIdHungAborted);
    EXPECT_EQ(ids.size(), 9u);
    // The IDs are an interface: pin them.
    EXPECT_STREQ(message_id(HealEvent::Kind::Healed), "d3c632f47f424b5cbf6d079e93e312b3");
    EXPECT_STREQ(message_id(HealEvent::Kind::Broken), "fe6a29b72507404b8ae18fbeb3d766c5");
    EXPECT_STREQ(kMessageIdServerDied, "c24be80fe7524603884b84ffac4c3bf0");
    EXPECT_STREQ(kMessageIdHungAborted, "101d7d99603a4c7c9d86033df2e0dfa4");
}

// Fields repeated per value (SOURCE, TARGET) are kept as lists.
std::multimap<std::string, std::string> as_multimap(const JournalFields& f) {
    return std::multimap<std::string, std::string>(f.begin(), f.end());
}
std::vector<std::string> values(const std::multimap<std::string, std::string>& m, const std::string& key) {
    std::vector<std::string> out;
    for (auto [it, end] = m.equal_range(key); it != end; ++it) out.push_back(it->second);
    return out;
}

ServerDeath death() {
    ServerDeath d;
    d.connection = ::makedev(0, 946);
    d.pid = 4242;
    d.comm = "juicefs";
    d.fstype = "fuse.juicefs";
    d.sources = {"/runtime/ds/fuse"};
    d.targets = {"/k/pods/u1/volumes/kubernetes.io~csi/pv1/mount", "/k/pods/u2/volumes/kubernetes.io~csi/pv1/mount"};
    d.outage_start = std::chrono::system_clock::time_point(std::chrono::microseconds(1764150961123456));
    d.detection_latency_us = 37;
    return d;
}

TEST(JournalFields, ServerDeathCarriesTheOutageStartAndTheServer) {
    const auto m = as_multimap(journal_fields(death()));
    auto one = [&](const std::string& key) {
        EXPECT_EQ(m.count(key), 1u) << key;
        return m.count(key) ? m.find(key)->second : std::string();
    };
    EXPECT_EQ(one("MESSAGE_ID"), kMessageIdServerDied);
    EXPECT_EQ(one("PRIORITY"), std::to_string(LOG_WARNING));
    EXPECT_EQ(one("EVENT"), "server-died");
    EXPECT_EQ(one("CONNECTION"), "0:946");
    EXPECT_EQ(one("SERVER_PID"), "4242");
    EXPECT_EQ(one("SERVER_COMM"), "juicefs");
    EXPECT_EQ(one("FSTYPE"), "fuse.juicefs");
    EXPECT_EQ(one("TARGETS"), "2");
    EXPECT_EQ(one("OUTAGE_START_REALTIME_USEC"), "1764150961123456");
    EXPECT_EQ(one("DETECTION_LATENCY_USEC"), "37");
    EXPECT_EQ(values(m, "SOURCE"), (std::vector<std::string>{"/runtime/ds/fuse"}));
    EXPECT_EQ(values(m, "TARGET"), death().targets) << "journalctl TARGET=<path> finds the entry by any target";
}

TEST(JournalFields, ServerDeathLogLineIsOneLineWithTheFirstTargets) {
    ServerDeath d = death();
    for (int i = 3; i <= 5; ++i) d.targets.push_back("/k/pods/u" + std::to_string(i) + "/v");
    const std::string text = server_death_text(d);
    EXPECT_EQ(text,
              "FUSE server died: connection=0:946 pid=4242 comm=juicefs fstype=fuse.juicefs source=/runtime/ds/fuse "
              "targets=5 target=/k/pods/u1/volumes/kubernetes.io~csi/pv1/mount,"
              "/k/pods/u2/volumes/kubernetes.io~csi/pv1/mount,/k/pods/u3/v,... "
              "outage_start=2025-11-26T09:56:01.123456Z detection_latency_us=37");
    d.targets.clear();
    d.sources.clear();
    d.comm.clear();
    EXPECT_EQ(server_death_text(d), "FUSE server died: connection=0:946 pid=4242 comm=- fstype=fuse.juicefs source=- "
                                    "targets=0 outage_start=2025-11-26T09:56:01.123456Z detection_latency_us=37");
}

TEST(JournalFields, HungAbortCarriesTheNumbers) {
    HungAbort a;
    a.connection = ::makedev(0, 40);
    a.waiting = 3;
    a.stuck_for = std::chrono::seconds(301);
    a.threshold = std::chrono::minutes(5);
    a.fstype = "fuse.s3fs";
    a.sources = {"/runtime/s3/fuse"};
    a.targets = {"/k/pods/u1/v"};
    auto m = as_map(journal_fields(a));
    EXPECT_EQ(m["MESSAGE_ID"], kMessageIdHungAborted);
    EXPECT_EQ(m["PRIORITY"], std::to_string(LOG_WARNING));
    EXPECT_EQ(m["EVENT"], "hung-aborted");
    EXPECT_EQ(m["CONNECTION"], "0:40");
    EXPECT_EQ(m["WAITING"], "3");
    EXPECT_EQ(m["STUCK_USEC"], "301000000");
    EXPECT_EQ(m["ABORT_HUNG_AFTER_USEC"], "300000000");
    EXPECT_EQ(m["SOURCE"], "/runtime/s3/fuse");
    EXPECT_EQ(m["TARGET"], "/k/pods/u1/v");
    EXPECT_EQ(m["TARGETS"], "1");
    EXPECT_EQ(m.count("REASON"), 0u);
    EXPECT_EQ(hung_abort_text(a),
              "aborted hung FUSE connection: connection=0:40 fstype=fuse.s3fs source=/runtime/s3/fuse targets=1 "
              "target=/k/pods/u1/v waiting=3 stuck_us=301000000 abort_hung_after_us=300000000 reason=\"no request "
              "answered for longer than abort_hung_after and a probe timed out\"");

    a.result = Error{"open", "/sys/fs/fuse/connections/40/abort", EACCES, {}};
    auto failed = as_map(journal_fields(a));
    EXPECT_EQ(failed["PRIORITY"], std::to_string(LOG_ERR));
    EXPECT_EQ(failed["EVENT"], "hung-abort-failed");
    EXPECT_EQ(failed["REASON"], "open /sys/fs/fuse/connections/40/abort: Permission denied");
    EXPECT_EQ(hung_abort_text(a).rfind("failed to abort hung FUSE connection: connection=0:40 ", 0), 0u)
        << hung_abort_text(a);
}

} // namespace
} // namespace fh
