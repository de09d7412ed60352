// Prometheus metrics, pure: a small registry of counters, gauges and
// histograms that renders the text exposition format 0.0.4, and the set of
// fuse-healer's own metrics on top of it (docs/METRICS.md lists them).
//
// Thread-safe: the heal worker records while the HTTP server's thread and the
// textfile writer render. Nothing here does I/O; the engine feeds heal events
// in (engine/metrics_server.h) and publishes the text.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/planner.h"

namespace fh {

// The Content-Type of render()'s text (format 0.0.4).
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { Counter, Gauge, Histogram };

// The (name, value) label pairs of one series, rendered in this order. Values
// may hold any text: they are escaped when rendered.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricRegistry {
public:
    // Declares a family, with no series yet; families are rendered in
    // declaration order. For a histogram, `bucket_bounds` are the buckets'
    // upper bounds, ascending, without +Inf (always added). Declaring a name
    // twice, an invalid name or bad bounds is a programming error: throws
    // std::logic_error, as do the methods below for an undeclared name, a
    // family of another type or an invalid label name.
    void declare(const std::string& name, MetricType type, const std::string& help,
                 std::vector<double> bucket_bounds = {});

    // Creates a series at 0 (no observations) when absent, so that it is
    // rendered before its first event.
    void ensure(const std::string& name, const MetricLabels& labels = {});
    // Adds `delta` (>= 0) to a counter's series, created at 0.
    void add(const std::string& name, const MetricLabels& labels = {}, double delta = 1);
    // Sets a gauge's series.
    void set(const std::string& name, const MetricLabels& labels, double value);
    // Replaces every series of a gauge with `values`, atomically: a render
    // sees the old set or the new one, never a mix (e.g. a target counted
    // in two states, or an info metric with no series).
    void replace(const std::string& name, const std::vector<std::pair<MetricLabels, double>>& values);
    // Records one observation in a histogram's series. NaN is ignored.
    void observe(const std::string& name, const MetricLabels& labels, double value);

    // Returns a counter's or gauge's value, or a histogram's observation
    // count; nullopt when the series does not exist.
    std::optional<double> value(const std::string& name, const MetricLabels& labels = {}) const;

    // Returns every family as text in the exposition format 0.0.4: "# HELP"
    // and "# TYPE" lines, then one line per series (per bucket, cumulative,
    // plus _sum and _count for a histogram), ending with a newline.
    std::string render() const;

private:
    struct Series {
        MetricLabels labels;
        double value = 0;                       // counter, gauge
        std::vector<std::uint64_t> per_bucket;  // histogram: not cumulative; last is above every bound
        double sum = 0;
        std::uint64_t count = 0;
    };
    struct Family {
        std::string name;
        MetricType type;
        std::string help;
        std::vector<double> bounds;
        std::vector<Series> series;
    };

    // Returns the family, throwing std::logic_error when it is not declared
    // or not of `type`. Callers hold mu_.
    Family& family(const std::string& name, MetricType type);
    // Returns the series with exactly these labels, created empty if absent.
    static Series& series(Family& family, const MetricLabels& labels);

    mutable std::mutex mu_;
    std::vector<Family> families_;
};

// Returns `value` as Prometheus writes numbers: integers without a decimal
// point, others in the shortest form that reads back exactly, "+Inf",
// "-Inf" or "NaN".
std::string format_metric_value(double value);

// Returns a label value escaped for the text format: \ " and newline become
// \\ \" and \n.
std::string escape_label_value(const std::string& value);

// How a heal attempt ended, as reported by the engine.
enum class HealResult { Healed, Failed, Skipped };

// Why the daemon runs degraded: fuse_healer_degraded's `reason` label.
enum class Degradation {
    InotifyWatchLimit,  // the pod index could not watch every directory; it rescans instead
    StateNotSaved,      // the state file cannot be written; heals go on from memory
};
// Returns "inotify_watch_limit" or "state_not_saved".
const char* to_string(Degradation d);

// A kernel event queue the daemon reads: fuse_healer_event_queue_overflows_total's `queue` label.
enum class EventQueue { Inotify, Fanotify };
// Returns "inotify" or "fanotify".
const char* to_string(EventQueue q);

// fuse-healer's metrics. Every series with a fixed label set (each target
// state, each heal result) exists from the start, at 0, so that rate() and
// absence alerts work before the first event.
class HealerMetrics {
public:
    // Bucket upper bounds in seconds: heal durations (mount syscalls, from
    // 100 us to a minute stuck on a slow FUSE daemon) and outages (from a
    // supervisor's quick restart to an hour-long one).
    static const std::vector<double> kHealDurationBuckets;
    static const std::vector<double> kOutageDurationBuckets;
    // Detection latency (a pidfd's wake-up to the outage start's log line):
    // tens of microseconds normally, up to the loop being busy elsewhere.
    static const std::vector<double> kDetectionLatencyBuckets;

    HealerMetrics();

    // Sets fuse_healer_build_info's labels (strategy and detection may
    // change on a reload).
    void set_build_info(const std::string& version, const std::string& strategy, const std::string& detection);
    // Sets when the daemon started, in seconds since the Unix epoch.
    void set_start_time(double unix_seconds);

    // A target was found dead (broken, waiting for its source or healing).
    void record_broken();
    // A target's FUSE daemon stopped answering probes (hung, not dead).
    void record_unresponsive();
    // A heal ended. `heal_seconds`: time spent acting on the target, recorded
    // for Healed only. `outage_seconds`: since the outage was first seen,
    // recorded for Healed only.
    void record_heal(HealResult result, double heal_seconds = 0, double outage_seconds = 0);
    // A target came back without a heal after `outage_seconds`.
    void record_recovered(double outage_seconds);
    // The mount table changed: one event of mount tracking by fanotify (one
    // mount attached, detached, moved or remounted), `relevant` when it may
    // concern a target or a source (core/mount_relevance.h); or one wake-up
    // of the mountinfo monitor, which does not say what changed (always
    // relevant).
    void record_mount_event(bool relevant);
    // A reconcile step (a full read of the mount table) ran, and started
    // `armed_actions` actions from armed heals before reading it.
    void record_reconcile(int armed_actions = 0);
    // A FUSE server died and its connection with it (the death watch's
    // outage start), reported `latency_seconds` after the loop woke up.
    void record_server_death(double latency_seconds);
    // Sets how many FUSE server processes the death watch watches.
    void set_servers_watched(int n);
    // A hung FUSE connection was aborted ([heal] abort_hung_after).
    void record_hung_abort();
    // Sets whether the daemon runs degraded for `reason`.
    void set_degraded(Degradation reason, bool degraded);
    // A kernel event queue overflowed (events were lost).
    void record_queue_overflow(EventQueue queue);
    // Replaces fuse_healer_targets with the number of targets in each state.
    void set_targets(const std::vector<TargetState>& states);

    // Returns the exposition text (kMetricsContentType).
    std::string render() const { return registry_.render(); }
    // Returns the registry, for reading single values.
    const MetricRegistry& registry() const { return registry_; }

private:
    MetricRegistry registry_;
};

} // namespace fh
