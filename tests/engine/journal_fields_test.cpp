// The structured journal fields of heal events (engine/journal_fields.h).
#include "engine/journal_fields.h"

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
    EXPECT_EQ(ids.size(), 7u);
    // The IDs are an interface: pin them.
    EXPECT_STREQ(message_id(HealEvent::Kind::Healed), "d3c632f47f424b5cbf6d079e93e312b3");
    EXPECT_STREQ(message_id(HealEvent::Kind::Broken), "fe6a29b72507404b8ae18fbeb3d766c5");
}

} // namespace
} // namespace fh
