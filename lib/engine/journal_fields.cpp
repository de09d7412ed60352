#include "engine/journal_fields.h"

#include <sys/sysmacros.h>
#include <syslog.h>

namespace fh {

const char* message_id(HealEvent::Kind kind) {
    switch (kind) {
    case HealEvent::Kind::Broken: return kMessageIdBroken;
    case HealEvent::Kind::Healed: return kMessageIdHealed;
    case HealEvent::Kind::HealFailed: return kMessageIdHealFailed;
    case HealEvent::Kind::Skipped: return kMessageIdSkipped;
    case HealEvent::Kind::Unresponsive: return kMessageIdUnresponsive;
    case HealEvent::Kind::Recovered: return kMessageIdRecovered;
    }
    return kMessageIdBroken;
}

int priority_of(HealEvent::Kind kind) {
    switch (kind) {
    case HealEvent::Kind::Healed:
    case HealEvent::Kind::Recovered: return LOG_INFO;
    case HealEvent::Kind::HealFailed: return LOG_ERR;
    case HealEvent::Kind::Broken:
    case HealEvent::Kind::Skipped:
    case HealEvent::Kind::Unresponsive: return LOG_WARNING;
    }
    return LOG_INFO;
}

JournalFields journal_fields(const HealEvent& e) {
    JournalFields f;
    auto add = [&](const char* key, const std::string& value) {
        if (!value.empty()) f.emplace_back(key, value);
    };
    add("MESSAGE_ID", message_id(e.kind));
    add("PRIORITY", std::to_string(priority_of(e.kind)));
    add("EVENT", to_string(e.kind));
    add("TARGET", e.ctx.target);
    add("POD_UID", e.ctx.pod_uid);
    add("VOLUME", e.ctx.volume);
    add("DRIVER", e.ctx.driver);
    add("VOLUME_HANDLE", e.ctx.volume_handle);
    add("SOURCE", e.source);
    add("FSTYPE", e.fstype);
    add("STRATEGY", e.strategy);
    if (e.kind != HealEvent::Kind::Broken) add("OUTAGE_USEC", std::to_string(e.outage_us));
    if (e.kind == HealEvent::Kind::Healed) {
        add("HEAL_USEC", std::to_string(e.heal_us));
        add("HEAL_START_AFTER_EVENT_USEC", std::to_string(e.start_after_event_us));
        add("PROBE_AFTER_EVENT_USEC", std::to_string(e.probe_after_event_us));
        add("SINCE_EVENT_USEC", std::to_string(e.since_event_us));
        add("NAMESPACES_HEALED", std::to_string(e.namespaces_healed));
    }
    add("REASON", e.reason);
    return f;
}

namespace {

std::string device_text(dev_t d) { return std::to_string(::major(d)) + ":" + std::to_string(::minor(d)); }

// Adds SOURCE and TARGET once per value (the journal keeps repeated fields
// as a list: `journalctl TARGET=<path>` finds the entry by any of them) and
// TARGETS with their count.
void add_mounts(JournalFields& f, const std::vector<std::string>& sources, const std::vector<std::string>& targets) {
    for (const auto& s : sources) f.emplace_back("SOURCE", s);
    f.emplace_back("TARGETS", std::to_string(targets.size()));
    for (const auto& t : targets) f.emplace_back("TARGET", t);
}

} // namespace

JournalFields journal_fields(const ServerDeath& d) {
    JournalFields f;
    f.emplace_back("MESSAGE_ID", kMessageIdServerDied);
    f.emplace_back("PRIORITY", std::to_string(LOG_WARNING));
    f.emplace_back("EVENT", "server-died");
    f.emplace_back("CONNECTION", device_text(d.connection));
    f.emplace_back("SERVER_PID", std::to_string(d.pid));
    if (!d.comm.empty()) f.emplace_back("SERVER_COMM", d.comm);
    if (!d.fstype.empty()) f.emplace_back("FSTYPE", d.fstype);
    add_mounts(f, d.sources, d.targets);
    f.emplace_back("OUTAGE_START_REALTIME_USEC",
                   std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                      d.outage_start.time_since_epoch())
                                      .count()));
    f.emplace_back("DETECTION_LATENCY_USEC", std::to_string(d.detection_latency_us));
    return f;
}

JournalFields journal_fields(const HungAbort& a) {
    JournalFields f;
    f.emplace_back("MESSAGE_ID", kMessageIdHungAborted);
    f.emplace_back("PRIORITY", std::to_string(a.result ? LOG_WARNING : LOG_ERR));
    f.emplace_back("EVENT", a.result ? "hung-aborted" : "hung-abort-failed");
    f.emplace_back("CONNECTION", device_text(a.connection));
    if (!a.fstype.empty()) f.emplace_back("FSTYPE", a.fstype);
    add_mounts(f, a.sources, a.targets);
    f.emplace_back("WAITING", std::to_string(a.waiting));
    f.emplace_back("STUCK_USEC", std::to_string(a.stuck_for.count()));
    f.emplace_back("ABORT_HUNG_AFTER_USEC", std::to_string(a.threshold.count()));
    if (!a.result) f.emplace_back("REASON", a.result.error().message());
    return f;
}

} // namespace fh
