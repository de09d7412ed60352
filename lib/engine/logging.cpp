#include "engine/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

namespace fh {

namespace {

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

void log_heal_event(const HealEvent& e) {
    const auto& c = e.ctx;
    std::string who = "target=" + c.target + " pod=" + (c.pod_uid.empty() ? "-" : c.pod_uid) +
                      " volume=" + (c.volume.empty() ? "-" : c.volume);
    if (!c.driver.empty()) who += " driver=" + c.driver;
    if (!c.volume_handle.empty()) who += " volume_handle=" + c.volume_handle;
    const std::string src = " source=" + (e.source.empty() ? std::string("-") : e.source) + " fstype=" + e.fstype;
    switch (e.kind) {
    case HealEvent::Kind::Broken:
        spdlog::warn("mount broken: {}{} reason=\"{}\"", who, src, e.reason);
        break;
    case HealEvent::Kind::Healed:
        spdlog::info("mount healed: {}{} strategy={} namespaces_healed={} outage_us={} heal_us={} "
                     "start_after_event_us={} since_event_us={}",
                     who, src, e.strategy, e.namespaces_healed, e.outage_us, e.heal_us, e.start_after_event_us,
                     e.since_event_us);
        break;
    case HealEvent::Kind::HealFailed:
        spdlog::error("failed to heal, will retry: {}{} strategy={} outage_us={} error=\"{}\"", who, src, e.strategy,
                      e.outage_us, e.reason);
        break;
    case HealEvent::Kind::Skipped:
        spdlog::warn("heal skipped: {}{} reason=\"{}\"", who, src, e.reason);
        break;
    case HealEvent::Kind::Unresponsive:
        spdlog::warn("mount unresponsive: {}{} reason=\"{}\"", who, src, e.reason);
        break;
    case HealEvent::Kind::Recovered:
        spdlog::info("mount recovered: {}{} outage_us={} reason=\"{}\"", who, src, e.outage_us, e.reason);
        break;
    }
}

} // namespace fh
