#include "engine/journal_fields.h"

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

} // namespace fh
