// Log setup: the systemd journal when stderr is connected to it (systemd
// sets JOURNAL_STREAM to stderr's "dev:inode"), else stderr with timestamps.
#pragma once

#include <string>

#include "core/config.h"
#include "engine/death_watch.h"
#include "engine/engine.h"
#include "engine/hung_abort.h"

namespace fh {

// Installs the default logger. Returns "journal" or "stderr".
std::string setup_logging(LogLevel level);

// Changes the level of the default logger.
void set_log_level(LogLevel level);

// Returns true when stderr is the journal stream systemd gave us.
bool stderr_is_journal();

// Logs a config error ("<what>: file:line:column: message"); in the journal
// it carries MESSAGE_ID, CONFIG_FILE= and CONFIG_LINE= (and CONFIG_COLUMN=).
// Works before setup_logging() too (at start, when the config is read).
void log_config_error(const std::string& what, const ConfigError& err);

// Logs one heal event as one line with every field an operator needs:
// target, pod uid, volume, source, fstype, strategy, outage so far and heal
// duration in microseconds.
void log_heal_event(const HealEvent& e);

// Logs a FUSE server's death, the start of an outage, as one warning line:
// connection, the server's comm and pid, fstype, sources, targets (the first
// three and a count), the outage start (UTC) and detection_latency_us; in
// the journal with journal_fields(ServerDeath).
void log_server_death(const ServerDeath& d);

// Logs a hung connection's abort as one warning line (an error when the
// abort failed) with the waiting count, how long it did not go down and the
// threshold; in the journal with journal_fields(HungAbort).
void log_hung_abort(const HungAbort& a);

// Returns the one-line texts of log_server_death and log_hung_abort.
std::string server_death_text(const ServerDeath& d);
std::string hung_abort_text(const HungAbort& a);

} // namespace fh
