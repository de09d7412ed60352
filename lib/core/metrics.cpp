#include "core/metrics.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace fh {
namespace {

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without ':'.
bool valid_name(const std::string& name, bool allow_colon) {
    if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
    return std::all_of(name.begin(), name.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               (allow_colon && c == ':');
    });
}

// HELP text escapes only \ and newline (quotes are literal there).
std::string escape_help(const std::string& help) {
    std::string out;
    for (char c : help) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

const char* type_name(MetricType type) {
    switch (type) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Histogram: return "histogram";
    }
    return "untyped";
}

// Returns `{a="x",b="y"}` for labels plus an optional trailing `le`, or ""
// when there are none.
std::string label_text(const MetricLabels& labels, const std::string* le = nullptr) {
    if (labels.empty() && le == nullptr) return "";
    std::string out = "{";
    for (const auto& [name, value] : labels) {
        if (out.size() > 1) out += ',';
        out += name + "=\"" + escape_label_value(value) + "\"";
    }
    if (le != nullptr) {
        if (out.size() > 1) out += ',';
        out += "le=\"" + *le + "\"";
    }
    return out + "}";
}

// The order of fuse_healer_targets' state label values.
constexpr std::array<TargetState, 6> kTargetStates{TargetState::Healthy,   TargetState::Broken,
                                                   TargetState::Unresponsive, TargetState::Skipped,
                                                   TargetState::Healing,   TargetState::Unknown};

const char* result_label(HealResult r) {
    switch (r) {
    case HealResult::Healed: return "healed";
    case HealResult::Failed: return "failed";
    case HealResult::Skipped: return "skipped";
    }
    return "unknown";
}

constexpr const char* kTargets = "fuse_healer_targets";
constexpr const char* kHeals = "fuse_healer_heals_total";
constexpr const char* kHealDuration = "fuse_healer_heal_duration_seconds";
constexpr const char* kOutageDuration = "fuse_healer_outage_duration_seconds";
constexpr const char* kBrokenDetected = "fuse_healer_broken_detected_total";
constexpr const char* kUnresponsiveDetected = "fuse_healer_unresponsive_detected_total";
constexpr const char* kMountEvents = "fuse_healer_mount_events_total";
constexpr const char* kReconciles = "fuse_healer_reconciles_total";
constexpr const char* kArmedActions = "fuse_healer_armed_actions_total";
constexpr const char* kServerDeaths = "fuse_healer_server_deaths_total";
constexpr const char* kDetectionLatency = "fuse_healer_detection_latency_seconds";
constexpr const char* kServersWatched = "fuse_healer_servers_watched";
constexpr const char* kHungAborts = "fuse_healer_hung_aborts_total";
constexpr const char* kDegraded = "fuse_healer_degraded";
constexpr const char* kQueueOverflows = "fuse_healer_event_queue_overflows_total";
constexpr const char* kBuildInfo = "fuse_healer_build_info";
constexpr const char* kStartTime = "fuse_healer_start_time_seconds";

} // namespace

std::string format_metric_value(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
    // Counts are whole numbers: written as such, they read as counts. Below
    // 2^53 every integer is exact in a double.
    if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0)
        return std::to_string(static_cast<long long>(value));
    // The shortest digits that read back exactly, written as Go's
    // FormatFloat(v, 'g', -1) does for the magnitudes we produce: "0.0001",
    // not to_chars' shorter "1e-04" (le="1e-04" reads badly in dashboards).
    char buf[64];
    const double magnitude = std::fabs(value);
    const auto format = magnitude >= 1e-4 && magnitude < 1e21 ? std::chars_format::fixed : std::chars_format::general;
    const auto result = std::to_chars(buf, buf + sizeof buf, value, format);
    return std::string(buf, result.ptr);
}

std::string escape_label_value(const std::string& value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

void MetricRegistry::declare(const std::string& name, MetricType type, const std::string& help,
                             std::vector<double> bucket_bounds) {
    if (!valid_name(name, true)) throw std::logic_error("invalid metric name \"" + name + "\"");
    std::lock_guard<std::mutex> lock(mu_);
    for (const Family& f : families_)
        if (f.name == name) throw std::logic_error("metric " + name + " declared twice");
    if (type == MetricType::Histogram) {
        if (bucket_bounds.empty() || !std::is_sorted(bucket_bounds.begin(), bucket_bounds.end()) ||
            std::adjacent_find(bucket_bounds.begin(), bucket_bounds.end()) != bucket_bounds.end() ||
            !std::isfinite(bucket_bounds.back()))
            throw std::logic_error("histogram " + name + " needs finite, strictly ascending bucket bounds");
    } else if (!bucket_bounds.empty()) {
        throw std::logic_error("metric " + name + " has bucket bounds but is not a histogram");
    }
    families_.push_back(Family{name, type, help, std::move(bucket_bounds), {}});
}

MetricRegistry::Family& MetricRegistry::family(const std::string& name, MetricType type) {
    for (Family& f : families_) {
        if (f.name != name) continue;
        if (f.type != type) throw std::logic_error("metric " + name + " is a " + type_name(f.type));
        return f;
    }
    throw std::logic_error("metric " + name + " is not declared");
}

MetricRegistry::Series& MetricRegistry::series(Family& family, const MetricLabels& labels) {
    for (Series& s : family.series)
        if (s.labels == labels) return s;
    for (const auto& [label, value] : labels) {
        // "le" is the bucket label of histograms; "__" names are reserved.
        if (!valid_name(label, false) || label.starts_with("__") ||
            (family.type == MetricType::Histogram && label == "le"))
            throw std::logic_error("invalid label name \"" + label + "\" for " + family.name);
    }
    Series& s = family.series.emplace_back(Series{labels, 0, {}, 0, 0});
    if (family.type == MetricType::Histogram) s.per_bucket.assign(family.bounds.size() + 1, 0);
    return s;
}

void MetricRegistry::ensure(const std::string& name, const MetricLabels& labels) {
    std::lock_guard<std::mutex> lock(mu_);
    for (Family& f : families_) {
        if (f.name != name) continue;
        series(f, labels);
        return;
    }
    throw std::logic_error("metric " + name + " is not declared");
}

void MetricRegistry::add(const std::string& name, const MetricLabels& labels, double delta) {
    // A counter only goes up; a negative delta is a bug in the caller.
    if (!(delta >= 0)) throw std::logic_error("counter " + name + " decremented");
    std::lock_guard<std::mutex> lock(mu_);
    series(family(name, MetricType::Counter), labels).value += delta;
}

void MetricRegistry::set(const std::string& name, const MetricLabels& labels, double value) {
    std::lock_guard<std::mutex> lock(mu_);
    series(family(name, MetricType::Gauge), labels).value = value;
}

void MetricRegistry::replace(const std::string& name, const std::vector<std::pair<MetricLabels, double>>& values) {
    std::lock_guard<std::mutex> lock(mu_);
    Family& f = family(name, MetricType::Gauge);
    f.series.clear();
    for (const auto& [labels, value] : values) series(f, labels).value = value;
}

void MetricRegistry::observe(const std::string& name, const MetricLabels& labels, double value) {
    if (std::isnan(value)) return;
    std::lock_guard<std::mutex> lock(mu_);
    Family& f = family(name, MetricType::Histogram);
    Series& s = series(f, labels);
    // Buckets are "less than or equal": the first bound >= value; past the
    // last bound is the +Inf bucket.
    const auto bucket = std::lower_bound(f.bounds.begin(), f.bounds.end(), value) - f.bounds.begin();
    ++s.per_bucket[static_cast<std::size_t>(bucket)];
    s.sum += value;
    ++s.count;
}

std::optional<double> MetricRegistry::value(const std::string& name, const MetricLabels& labels) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Family& f : families_) {
        if (f.name != name) continue;
        for (const Series& s : f.series)
            if (s.labels == labels) return f.type == MetricType::Histogram ? static_cast<double>(s.count) : s.value;
    }
    return std::nullopt;
}

std::string MetricRegistry::render() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const Family& f : families_) {
        out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
        out += "# TYPE " + f.name + " " + type_name(f.type) + "\n";
        for (const Series& s : f.series) {
            if (f.type != MetricType::Histogram) {
                out += f.name + label_text(s.labels) + " " + format_metric_value(s.value) + "\n";
                continue;
            }
            std::uint64_t cumulative = 0;
            for (std::size_t i = 0; i <= f.bounds.size(); ++i) {
                cumulative += s.per_bucket[i];
                const std::string le = i < f.bounds.size() ? format_metric_value(f.bounds[i]) : "+Inf";
                out += f.name + "_bucket" + label_text(s.labels, &le) + " " + std::to_string(cumulative) + "\n";
            }
            out += f.name + "_sum" + label_text(s.labels) + " " + format_metric_value(s.sum) + "\n";
            out += f.name + "_count" + label_text(s.labels) + " " + std::to_string(s.count) + "\n";
        }
    }
    return out;
}

const std::vector<double> HealerMetrics::kHealDurationBuckets{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
const std::vector<double> HealerMetrics::kOutageDurationBuckets{
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
const std::vector<double> HealerMetrics::kDetectionLatencyBuckets{
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1};

HealerMetrics::HealerMetrics() {
    registry_.declare(kTargets, MetricType::Gauge, "Targets (FUSE mounts in pod volumes) tracked, by state.");
    set_targets({});

    registry_.declare(kHeals, MetricType::Counter,
                      "Heals that ended, by result: healed, failed (will retry) or skipped (policy or "
                      "missing data forbids it).");
    for (HealResult r : {HealResult::Healed, HealResult::Failed, HealResult::Skipped})
        registry_.ensure(kHeals, {{"result", result_label(r)}});

    registry_.declare(kHealDuration, MetricType::Histogram,
                      "Time spent healing one target (its mount syscalls, container copies included), in "
                      "seconds.",
                      kHealDurationBuckets);
    registry_.declare(kOutageDuration, MetricType::Histogram,
                      "Outages that ended (healed, or recovered without a heal), from first seen to the end, "
                      "in seconds.",
                      kOutageDurationBuckets);
    registry_.declare(kBrokenDetected, MetricType::Counter, "Targets found dead (FUSE connection gone).");
    registry_.declare(kUnresponsiveDetected, MetricType::Counter,
                      "Targets whose FUSE daemon stopped answering probes (hung, not dead).");
    registry_.declare(kMountEvents, MetricType::Counter,
                      "Mount table changes received, by relevance: relevant (may concern a target or a source: "
                      "a reconcile follows) or unrelated (dropped).");
    for (const char* relevance : {"relevant", "unrelated"}) registry_.ensure(kMountEvents, {{"relevance", relevance}});
    registry_.declare(kReconciles, MetricType::Counter, "Reconcile steps run (each takes the whole host mount table).");
    registry_.declare(kArmedActions, MetricType::Counter,
                      "Heal actions started from heals armed while their source was down, before the mount table "
                      "was read.");
    registry_.declare(kServerDeaths, MetricType::Counter,
                      "FUSE servers whose exit ended their connection, seen through their pidfd (outage starts).");
    registry_.declare(kDetectionLatency, MetricType::Histogram,
                      "From the event loop waking up on a dead FUSE server's pidfd to the outage start being logged, "
                      "in seconds.",
                      kDetectionLatencyBuckets);
    registry_.declare(kServersWatched, MetricType::Gauge, "FUSE server processes watched through pidfds.");
    registry_.declare(kHungAborts, MetricType::Counter,
                      "Hung FUSE connections aborted ([heal] abort_hung_after).");
    for (const char* name : {kHealDuration, kOutageDuration, kBrokenDetected, kUnresponsiveDetected,
                             kReconciles, kArmedActions, kServerDeaths, kDetectionLatency, kServersWatched,
                             kHungAborts})
        registry_.ensure(name);
    registry_.declare(kDegraded, MetricType::Gauge,
                      "1 while the daemon runs degraded for this reason: inotify_watch_limit (the pod index lacks "
                      "watches and rescans instead), state_not_saved (the state file cannot be written; heals go "
                      "on from memory); else 0.");
    for (Degradation d : {Degradation::InotifyWatchLimit, Degradation::StateNotSaved})
        registry_.set(kDegraded, {{"reason", to_string(d)}}, 0);
    registry_.declare(kQueueOverflows, MetricType::Counter,
                      "Kernel event queues that overflowed (events lost), by queue: inotify (the pods tree; "
                      "rescanned) or fanotify (mount events; the table is listed again).");
    for (EventQueue q : {EventQueue::Inotify, EventQueue::Fanotify})
        registry_.ensure(kQueueOverflows, {{"queue", to_string(q)}});

    // Both are set by the daemon once it knows them; until then they are
    // absent rather than wrong.
    registry_.declare(kBuildInfo, MetricType::Gauge,
                      "Always 1; the labels tell the version, the heal strategy in use and the death detection "
                      "method.");
    registry_.declare(kStartTime, MetricType::Gauge, "When the daemon started, in seconds since the Unix epoch.");
}

void HealerMetrics::set_build_info(const std::string& version, const std::string& strategy,
                                   const std::string& detection) {
    // One series only: an old one left beside it would double-count in joins.
    registry_.replace(kBuildInfo, {{{{"version", version}, {"strategy", strategy}, {"detection", detection}}, 1}});
}

void HealerMetrics::set_start_time(double unix_seconds) { registry_.set(kStartTime, {}, unix_seconds); }

void HealerMetrics::record_broken() { registry_.add(kBrokenDetected); }

void HealerMetrics::record_unresponsive() { registry_.add(kUnresponsiveDetected); }

void HealerMetrics::record_heal(HealResult result, double heal_seconds, double outage_seconds) {
    registry_.add(kHeals, {{"result", result_label(result)}});
    if (result != HealResult::Healed) return;
    registry_.observe(kHealDuration, {}, heal_seconds);
    registry_.observe(kOutageDuration, {}, outage_seconds);
}

void HealerMetrics::record_recovered(double outage_seconds) { registry_.observe(kOutageDuration, {}, outage_seconds); }

void HealerMetrics::record_mount_event(bool relevant) {
    // Built once: this runs for every mount event of the node.
    static const MetricLabels kRelevant{{"relevance", "relevant"}}, kUnrelated{{"relevance", "unrelated"}};
    registry_.add(kMountEvents, relevant ? kRelevant : kUnrelated);
}

void HealerMetrics::record_reconcile(int armed_actions) {
    registry_.add(kReconciles);
    if (armed_actions > 0) registry_.add(kArmedActions, {}, armed_actions);
}

void HealerMetrics::record_server_death(double latency_seconds) {
    registry_.add(kServerDeaths);
    registry_.observe(kDetectionLatency, {}, latency_seconds);
}

void HealerMetrics::set_servers_watched(int n) { registry_.set(kServersWatched, {}, n); }

void HealerMetrics::record_hung_abort() { registry_.add(kHungAborts); }

void HealerMetrics::set_degraded(Degradation reason, bool degraded) {
    registry_.set(kDegraded, {{"reason", to_string(reason)}}, degraded ? 1 : 0);
}

void HealerMetrics::record_queue_overflow(EventQueue queue) { registry_.add(kQueueOverflows, {{"queue", to_string(queue)}}); }

const char* to_string(Degradation d) {
    switch (d) {
    case Degradation::InotifyWatchLimit: return "inotify_watch_limit";
    case Degradation::StateNotSaved: return "state_not_saved";
    }
    return "?";
}

const char* to_string(EventQueue q) { return q == EventQueue::Inotify ? "inotify" : "fanotify"; }

void HealerMetrics::set_targets(const std::vector<TargetState>& states) {
    std::array<int, kTargetStates.size()> counts{};
    for (TargetState s : states) {
        const auto it = std::find(kTargetStates.begin(), kTargetStates.end(), s);
        if (it != kTargetStates.end()) ++counts[static_cast<std::size_t>(it - kTargetStates.begin())];
    }
    std::vector<std::pair<MetricLabels, double>> values;
    for (std::size_t i = 0; i < kTargetStates.size(); ++i)
        values.push_back({{{"state", to_string(kTargetStates[i])}}, static_cast<double>(counts[i])});
    registry_.replace(kTargets, values);
}

} // namespace fh
