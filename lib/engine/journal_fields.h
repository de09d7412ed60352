// The structured journal fields of heal events. Each kind of event has a
// fixed MESSAGE_ID, so `journalctl MESSAGE_ID=<id>` lists every event of that
// kind and `journalctl POD_UID=<uid>` one pod's story. The IDs are part of
// the interface (documented in the README); never change them.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/death_watch.h"
#include "engine/engine.h"
#include "engine/hung_abort.h"

namespace fh {

inline constexpr const char* kMessageIdBroken = "fe6a29b72507404b8ae18fbeb3d766c5";
inline constexpr const char* kMessageIdHealed = "d3c632f47f424b5cbf6d079e93e312b3";
inline constexpr const char* kMessageIdHealFailed = "36494524bf624365a376df5e07343a73";
inline constexpr const char* kMessageIdSkipped = "544361a822aa47e6bd98ef22b60290ab";
inline constexpr const char* kMessageIdUnresponsive = "fb3e974b0cd14ef9a1776ccc4a27dc48";
inline constexpr const char* kMessageIdRecovered = "4b87eeee66a94c1794fa5c3d149738d1";
inline constexpr const char* kMessageIdConfigError = "00282c9a2a664631939b22e2bf92c80f";
inline constexpr const char* kMessageIdServerDied = "c24be80fe7524603884b84ffac4c3bf0";
inline constexpr const char* kMessageIdHungAborted = "101d7d99603a4c7c9d86033df2e0dfa4";

// Returns the MESSAGE_ID of a kind of heal event.
const char* message_id(HealEvent::Kind kind);

// Returns the syslog priority (LOG_INFO, LOG_WARNING, LOG_ERR) of a kind.
int priority_of(HealEvent::Kind kind);

using JournalFields = std::vector<std::pair<std::string, std::string>>;

// Returns the fields of one heal event, MESSAGE excluded: MESSAGE_ID,
// PRIORITY, EVENT, TARGET, POD_UID, VOLUME, DRIVER, VOLUME_HANDLE, SOURCE,
// FSTYPE, STRATEGY, and per kind OUTAGE_USEC, HEAL_USEC,
// HEAL_START_AFTER_EVENT_USEC, SINCE_EVENT_USEC, NAMESPACES_HEALED, REASON.
// Empty values are left out.
JournalFields journal_fields(const HealEvent& e);

// Returns the fields of a FUSE server's death (the outage start), MESSAGE
// excluded: MESSAGE_ID, PRIORITY (warning), EVENT=server-died, CONNECTION
// (major:minor), SERVER_PID, SERVER_COMM, FSTYPE, SOURCE (each source, one
// field per value), TARGETS (their count), TARGET (each target),
// OUTAGE_START_REALTIME_USEC (microseconds since the epoch) and
// DETECTION_LATENCY_USEC. Empty values are left out.
JournalFields journal_fields(const ServerDeath& d);

// Returns the fields of a hung connection's abort, MESSAGE excluded:
// MESSAGE_ID, PRIORITY (warning; error when the abort failed),
// EVENT=hung-aborted (or hung-abort-failed), CONNECTION, FSTYPE, SOURCE
// (each), TARGETS, TARGET (each), WAITING, STUCK_USEC, ABORT_HUNG_AFTER_USEC,
// REASON (the error, when it failed).
JournalFields journal_fields(const HungAbort& a);

} // namespace fh
