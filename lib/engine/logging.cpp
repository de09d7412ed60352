#include "engine/logging.h"

#include "engine/journal_fields.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

namespace fh {

namespace {

// True when logs go to the journal: heal events are then sent with
// sd_journal_sendv to carry their structured fields.
bool journal_direct = false;

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
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
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
        logger->set_pattern("%v");
        where = "journal";
        journal_direct = true;
    } else {
        logger = std::make_shared<spdlog::logger>("fuse-healer", std::make_shared<spdlog::sinks::stderr_sink_mt>());
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f %l %v");
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
    const auto& c = e.ctx;
    std::string who = "target=" + c.target + " pod=" + (c.pod_uid.empty() ? "-" : c.pod_uid) +
                      " volume=" + (c.volume.empty() ? "-" : c.volume);
    if (!c.driver.empty()) who += " driver=" + c.driver;
    if (!c.volume_handle.empty()) who += " volume_handle=" + c.volume_handle;
    const std::string src = " source=" + (e.source.empty() ? std::string("-") : e.source) + " fstype=" + e.fstype;
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

void log_heal_event(const HealEvent& e) {
    auto [text, level] = heal_event_text(e);
    if (journal_direct && spdlog::default_logger()->should_log(level)) {
        // Straight to the journal, with the structured fields operators
        // query (journalctl MESSAGE_ID=..., POD_UID=...).
        std::vector<std::string> fields{"MESSAGE=" + text, "SYSLOG_IDENTIFIER=fuse-healer"};
        for (const auto& [k, v] : journal_fields(e)) fields.push_back(k + "=" + v);
        std::vector<struct iovec> iov;
        for (auto& f : fields) iov.push_back({f.data(), f.size()});
        if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) == 0) return;
    }
    spdlog::log(level, "{}", text);
}

} // namespace fh
