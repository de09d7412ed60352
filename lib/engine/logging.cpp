#include "engine/logging.h"

#include "engine/journal_fields.h"

#include "core/control_protocol.h"

#include <sys/stat.h>
#include <unistd.h>

#include <sys/sysmacros.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <ctime>

#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

namespace fh {

namespace {

// True when logs go to the journal: heal events are then sent with
// sd_journal_sendv to carry their structured fields.
bool journal_direct = false;

// The %* flag: the message with control characters (newline, tab, ...)
// written as \ooo octal escapes, as mountinfo writes them, so that one
// log call is one line whatever a path or a vol_data.json field holds (a
// name with a newline cannot split a line or forge the next one).
class EscapedMessageFlag : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
        const auto* p = msg.payload.data();
        for (std::size_t i = 0; i < msg.payload.size(); ++i) {
            const auto c = static_cast<unsigned char>(p[i]);
            if (c < 0x20 || c == 0x7f) {
                char buf[5];
                std::snprintf(buf, sizeof buf, "\\%03o", c);
                dest.append(buf, buf + 4);
            } else {
                dest.push_back(static_cast<char>(c));
            }
        }
    }
    std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedMessageFlag>(); }
};

// Returns a formatter for `pattern`, where %* is the escaped message.
std::unique_ptr<spdlog::formatter> escaping_formatter(const std::string& pattern) {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<EscapedMessageFlag>('*').set_pattern(pattern);
    return f;
}

// Returns `s` as one word of a log line: space, tab, newline, backslash and
// the other control characters as \ooo escapes (escape_control_cell, the
// same as fuse-healerctl's table); "-" when empty.
std::string word(const std::string& s) { return escape_control_cell(s); }

spdlog::level::level_enum to_spdlog(LogLevel l) {
    switch (l) {
    case LogLevel::Trace: return spdlog::level::trace;
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

} // namespace

bool stderr_is_journal() {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (!js) return false;
    // "DEV:INO" in decimal. from_chars, not sscanf: sscanf's %llu takes an
    // overflowing number silently (cert-err34-c).
    const std::string_view s(js);
    unsigned long long dev = 0, ino = 0;
    const auto colon = s.find(':');
    if (colon == std::string_view::npos) return false;
    const auto d = std::from_chars(s.data(), s.data() + colon, dev);
    const auto i = std::from_chars(s.data() + colon + 1, s.data() + s.size(), ino);
    if (d.ec != std::errc{} || d.ptr != s.data() + colon || i.ec != std::errc{} || i.ptr != s.data() + s.size()) {
        return false;
    }
    struct stat st {};
    return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

std::string setup_logging(LogLevel level) {
    std::shared_ptr<spdlog::logger> logger;
    std::string where;
    if (stderr_is_journal()) {
        // The journal adds its own timestamp and priority.
        logger = std::make_shared<spdlog::logger>(
            "fuse-healer", std::make_shared<spdlog::sinks::systemd_sink_mt>("fuse-healer"));
        logger->set_formatter(escaping_formatter("%*"));
        where = "journal";
        journal_direct = true;
    } else {
        logger = std::make_shared<spdlog::logger>("fuse-healer", std::make_shared<spdlog::sinks::stderr_sink_mt>());
        logger->set_formatter(escaping_formatter("%Y-%m-%dT%H:%M:%S.%f %l %*"));
        where = "stderr";
    }
    logger->set_level(to_spdlog(level));
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
    return where;
}

void set_log_level(LogLevel level) { spdlog::default_logger()->set_level(to_spdlog(level)); }

// Returns the one-line text of a heal event and its spdlog level.
static std::pair<std::string, spdlog::level::level_enum> heal_event_text(const HealEvent& e) {
    // Names come from the mount table and vol_data.json: each is one word.
    const auto& c = e.ctx;
    std::string who = "target=" + word(c.target) + " pod=" + word(c.pod_uid) + " volume=" + word(c.volume);
    if (!c.driver.empty()) who += " driver=" + word(c.driver);
    if (!c.volume_handle.empty()) who += " volume_handle=" + word(c.volume_handle);
    const std::string src = " source=" + word(e.source) + " fstype=" + word(e.fstype);
    const std::string reason = " reason=\"" + e.reason + "\"";
    switch (e.kind) {
    case HealEvent::Kind::Broken: return {"mount broken: " + who + src + reason, spdlog::level::warn};
    case HealEvent::Kind::Healed:
        return {fmt::format("mount healed: {}{} strategy={} namespaces_healed={} outage_us={} heal_us={} "
                            "probe_after_event_us={} start_after_event_us={} since_event_us={}",
                            who, src, e.strategy, e.namespaces_healed, e.outage_us, e.heal_us,
                            e.probe_after_event_us, e.start_after_event_us, e.since_event_us),
                spdlog::level::info};
    case HealEvent::Kind::HealFailed:
        return {fmt::format("failed to heal, will retry: {}{} strategy={} outage_us={} error=\"{}\"", who, src,
                            e.strategy, e.outage_us, e.reason),
                spdlog::level::err};
    case HealEvent::Kind::Skipped: return {"heal skipped: " + who + src + reason, spdlog::level::warn};
    case HealEvent::Kind::Unresponsive: return {"mount unresponsive: " + who + src + reason, spdlog::level::warn};
    case HealEvent::Kind::Recovered:
        return {fmt::format("mount recovered: {}{} outage_us={}{}", who, src, e.outage_us, reason),
                spdlog::level::info};
    }
    return {who, spdlog::level::info};
}

void log_config_error(const std::string& what, const ConfigError& err) {
    const std::string text = what + ": " + err.to_string();
    if (stderr_is_journal()) {
        if (sd_journal_send("MESSAGE=%s", text.c_str(), "PRIORITY=%d", LOG_ERR, "MESSAGE_ID=%s", kMessageIdConfigError,
                            "SYSLOG_IDENTIFIER=fuse-healer", "CONFIG_FILE=%s", err.file.c_str(), "CONFIG_LINE=%d",
                            err.line, "CONFIG_COLUMN=%d", err.column, nullptr) == 0)
            return;
    }
    if (spdlog::default_logger()) spdlog::error("{}", text);
}

// Logs `text` at `level`: straight to the journal with `fields` when logs go
// there, else through spdlog.
static void log_event(const std::string& text, spdlog::level::level_enum level, const JournalFields& fields) {
    if (journal_direct && spdlog::default_logger()->should_log(level)) {
        // Straight to the journal, with the structured fields operators
        // query (journalctl MESSAGE_ID=..., POD_UID=...).
        std::vector<std::string> lines{"MESSAGE=" + text, "SYSLOG_IDENTIFIER=fuse-healer"};
        lines.reserve(lines.size() + fields.size());
        for (const auto& [k, v] : fields) lines.push_back(k + "=" + v);
        std::vector<struct iovec> iov;
        iov.reserve(lines.size());
        for (auto& f : lines) iov.push_back({f.data(), f.size()});
        if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) == 0) return;
    }
    spdlog::log(level, "{}", text);
}

void log_heal_event(const HealEvent& e) {
    auto [text, level] = heal_event_text(e);
    log_event(text, level, journal_fields(e));
}

namespace {

std::string device_text(dev_t d) { return std::to_string(major(d)) + ":" + std::to_string(minor(d)); }

// Returns " fstype=F source=S[,S...] targets=N [target=T1,T2,T3[,...]]": the
// first three targets only, a node may have hundreds per source (the
// journal entry carries every one).
std::string mounts_text(const std::string& fstype, const std::vector<std::string>& sources,
                        const std::vector<std::string>& targets) {
    std::string out = " fstype=" + word(fstype) + " source=";
    if (sources.empty()) out += "-";
    for (std::size_t i = 0; i < sources.size(); ++i) out += (i ? "," : "") + word(sources[i]);
    out += " targets=" + std::to_string(targets.size());
    if (targets.empty()) return out;
    out += " target=";
    for (std::size_t i = 0; i < targets.size() && i < 3; ++i) out += (i ? "," : "") + word(targets[i]);
    if (targets.size() > 3) out += ",...";
    return out;
}

// Returns a wall-clock time as "2025-11-26T10:56:01.123456Z".
std::string utc_text(std::chrono::system_clock::time_point t) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(us / 1000000);
    std::tm tm {};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us % 1000000));
    return buf;
}

} // namespace

std::string server_death_text(const ServerDeath& d) {
    return fmt::format("FUSE server died: connection={} pid={} comm={}{} outage_start={} detection_latency_us={}",
                       device_text(d.connection), d.pid, d.comm.empty() ? std::string("-") : d.comm,
                       mounts_text(d.fstype, d.sources, d.targets), utc_text(d.outage_start),
                       d.detection_latency_us);
}

std::string hung_abort_text(const HungAbort& a) {
    const std::string what = fmt::format(
        "connection={}{} waiting={} stuck_us={} abort_hung_after_us={}", device_text(a.connection),
        mounts_text(a.fstype, a.sources, a.targets), a.waiting, a.stuck_for.count(), a.threshold.count());
    if (!a.result) return "failed to abort hung FUSE connection: " + what + " error=\"" + a.result.error().message() + "\"";
    return "aborted hung FUSE connection: " + what +
           " reason=\"no request answered for longer than abort_hung_after and a probe timed out\"";
}

void log_server_death(const ServerDeath& d) { log_event(server_death_text(d), spdlog::level::warn, journal_fields(d)); }

void log_hung_abort(const HungAbort& a) {
    log_event(hung_abort_text(a), a.result ? spdlog::level::warn : spdlog::level::err, journal_fields(a));
}

} // namespace fh
