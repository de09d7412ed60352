// The metrics registry and fuse-healer's metrics (core/metrics.h): the text
// exposition format 0.0.4 as Prometheus parses it.
#include "core/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fh {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

// Returns the sample lines ("name{labels} value") whose series name is `name`.
std::vector<std::string> samples(const std::string& text, const std::string& name) {
    std::vector<std::string> out;
    for (const std::string& line : lines_of(text))
        if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) out.push_back(line);
    return out;
}

// Checks the text as Prometheus' parser would: every line is a HELP, a TYPE
// or a sample with valid name, labels and value; a family's HELP and TYPE come
// before its samples, once; a sample belongs to a declared family (histogram
// samples by their _bucket/_sum/_count suffix). Returns the problems found.
std::vector<std::string> format_problems(const std::string& text) {
    static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*)");
    static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
    static const std::regex sample(
        R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN))");
    std::vector<std::string> problems;
    if (text.empty() || text.back() != '\n') problems.push_back("the text must end with a newline");
    std::map<std::string, std::string> types;
    std::set<std::string> helped;
    std::smatch m;
    for (const std::string& line : lines_of(text)) {
        if (std::regex_match(line, m, help)) {
            if (!helped.insert(m[1]).second) problems.push_back("second HELP: " + line);
        } else if (std::regex_match(line, m, type)) {
            if (!types.emplace(m[1], m[2]).second) problems.push_back("second TYPE: " + line);
        } else if (std::regex_match(line, m, sample)) {
            std::string family = m[1];
            if (!types.count(family)) {
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    const std::string s = suffix;
                    if (family.size() > s.size() && family.ends_with(s) &&
                        types.count(family.substr(0, family.size() - s.size())) &&
                        types[family.substr(0, family.size() - s.size())] == "histogram")
                        family = family.substr(0, family.size() - s.size());
                }
            }
            if (!types.count(family)) problems.push_back("sample before its TYPE: " + line);
            if (!helped.count(family)) problems.push_back("sample before its HELP: " + line);
        } else {
            problems.push_back("not a HELP, TYPE or sample line: \"" + line + "\"");
        }
    }
    return problems;
}

TEST(FormatMetricValue, IntegersFractionsAndSpecials) {
    EXPECT_EQ(format_metric_value(0), "0");
    EXPECT_EQ(format_metric_value(-0.0), "0");
    EXPECT_EQ(format_metric_value(42), "42");
    EXPECT_EQ(format_metric_value(-3), "-3");
    EXPECT_EQ(format_metric_value(1e15), "1000000000000000");
    EXPECT_EQ(format_metric_value(0.0001), "0.0001");
    EXPECT_EQ(format_metric_value(0.00001), "1e-05");
    EXPECT_EQ(format_metric_value(2.5), "2.5");
    EXPECT_EQ(format_metric_value(0.1 + 0.2), "0.30000000000000004") << "shortest form that reads back exactly";
    EXPECT_EQ(format_metric_value(1e300), "1e+300");
    EXPECT_EQ(format_metric_value(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(format_metric_value(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(format_metric_value(std::nan("")), "NaN");
}

TEST(EscapeLabelValue, BackslashQuoteAndNewline) {
    EXPECT_EQ(escape_label_value("plain/path-1"), "plain/path-1");
    EXPECT_EQ(escape_label_value(R"(a\b)"), R"(a\\b)");
    EXPECT_EQ(escape_label_value(R"(say "hi")"), R"(say \"hi\")");
    EXPECT_EQ(escape_label_value("two\nlines"), R"(two\nlines)");
    EXPECT_EQ(escape_label_value("\\\"\n"), R"(\\\"\n)");
    EXPECT_EQ(escape_label_value("tab\tstays"), "tab\tstays");
}

TEST(MetricRegistry, RendersHelpTypeAndEscapedLabels) {
    MetricRegistry r;
    r.declare("demo_total", MetricType::Counter, "Counts things.\nSecond line with a \\ and \"quotes\".");
    r.declare("demo_gauge", MetricType::Gauge, "A gauge.");
    r.add("demo_total", {{"path", "C:\\dir \"x\"\nnext"}}, 2);
    r.add("demo_total", {{"path", "C:\\dir \"x\"\nnext"}});
    r.set("demo_gauge", {}, 2.5);
    EXPECT_EQ(r.render(),
              "# HELP demo_total Counts things.\\nSecond line with a \\\\ and \"quotes\".\n"
              "# TYPE demo_total counter\n"
              "demo_total{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 3\n"
              "# HELP demo_gauge A gauge.\n"
              "# TYPE demo_gauge gauge\n"
              "demo_gauge 2.5\n");
    EXPECT_EQ(format_problems(r.render()), std::vector<std::string>{});
    EXPECT_EQ(r.value("demo_total", {{"path", "C:\\dir \"x\"\nnext"}}), 3);
    EXPECT_EQ(r.value("demo_total"), std::nullopt) << "no unlabelled series was created";
}

TEST(MetricRegistry, SeveralLabelsKeepTheirOrder) {
    MetricRegistry r;
    r.declare("info", MetricType::Gauge, "Info.");
    r.set("info", {{"b", "2"}, {"a", "1"}}, 1);
    EXPECT_EQ(samples(r.render(), "info"), std::vector<std::string>{"info{b=\"2\",a=\"1\"} 1"});
}

TEST(MetricRegistry, HistogramBucketsAreCumulativeWithInfSumAndCount) {
    MetricRegistry r;
    r.declare("lat_seconds", MetricType::Histogram, "Latency.", {0.1, 1, 10});
    r.ensure("lat_seconds");
    EXPECT_EQ(samples(r.render(), "lat_seconds_bucket"),
              (std::vector<std::string>{"lat_seconds_bucket{le=\"0.1\"} 0", "lat_seconds_bucket{le=\"1\"} 0",
                                        "lat_seconds_bucket{le=\"10\"} 0", "lat_seconds_bucket{le=\"+Inf\"} 0"}));
    // 0.1 and 10 are on bounds: "le" means less than or equal.
    for (double v : {0.05, 0.1, 0.5, 10.0, 11.0, 1000.0}) r.observe("lat_seconds", {}, v);
    r.observe("lat_seconds", {}, std::nan(""));  // ignored
    const std::string text = r.render();
    EXPECT_EQ(samples(text, "lat_seconds_bucket"),
              (std::vector<std::string>{"lat_seconds_bucket{le=\"0.1\"} 2", "lat_seconds_bucket{le=\"1\"} 3",
                                        "lat_seconds_bucket{le=\"10\"} 4", "lat_seconds_bucket{le=\"+Inf\"} 6"}));
    EXPECT_EQ(samples(text, "lat_seconds_sum"), std::vector<std::string>{"lat_seconds_sum 1021.65"});
    EXPECT_EQ(samples(text, "lat_seconds_count"), std::vector<std::string>{"lat_seconds_count 6"});
    EXPECT_NE(text.find("# TYPE lat_seconds histogram\n"), std::string::npos);
    EXPECT_EQ(format_problems(text), std::vector<std::string>{});
    EXPECT_EQ(r.value("lat_seconds"), 6);
}

TEST(MetricRegistry, LabelledHistogramPutsLeLast) {
    MetricRegistry r;
    r.declare("h", MetricType::Histogram, "H.", {1});
    r.observe("h", {{"kind", "a\"b"}}, 0.5);
    EXPECT_EQ(samples(r.render(), "h_bucket"),
              (std::vector<std::string>{"h_bucket{kind=\"a\\\"b\",le=\"1\"} 1", "h_bucket{kind=\"a\\\"b\",le=\"+Inf\"} 1"}));
    EXPECT_EQ(samples(r.render(), "h_count"), std::vector<std::string>{"h_count{kind=\"a\\\"b\"} 1"});
}

TEST(MetricRegistry, ReplaceSwapsTheWholeSet) {
    MetricRegistry r;
    r.declare("g", MetricType::Gauge, "G.");
    r.replace("g", {{{{"v", "1"}}, 1}, {{{"v", "2"}}, 2}});
    r.replace("g", {{{{"v", "3"}}, 3}});
    EXPECT_EQ(samples(r.render(), "g"), std::vector<std::string>{"g{v=\"3\"} 3"});
}

TEST(MetricRegistry, MisuseIsAProgrammingError) {
    MetricRegistry r;
    r.declare("c_total", MetricType::Counter, "C.");
    EXPECT_THROW(r.declare("c_total", MetricType::Counter, "again"), std::logic_error);
    EXPECT_THROW(r.declare("bad-name", MetricType::Counter, "x"), std::logic_error);
    EXPECT_THROW(r.declare("h", MetricType::Histogram, "x", {}), std::logic_error);
    EXPECT_THROW(r.declare("h", MetricType::Histogram, "x", {1, 1}), std::logic_error);
    EXPECT_THROW(r.declare("h", MetricType::Histogram, "x", {2, 1}), std::logic_error);
    EXPECT_THROW(r.declare("g", MetricType::Gauge, "x", {1}), std::logic_error);
    EXPECT_THROW(r.add("undeclared_total"), std::logic_error);
    EXPECT_THROW(r.set("c_total", {}, 1), std::logic_error) << "a counter is not set";
    EXPECT_THROW(r.add("c_total", {}, -1), std::logic_error) << "a counter never goes down";
    EXPECT_THROW(r.add("c_total", {{"bad-label", "x"}}), std::logic_error);
    EXPECT_THROW(r.add("c_total", {{"__reserved", "x"}}), std::logic_error);
    r.declare("h", MetricType::Histogram, "H.", {1});
    EXPECT_THROW(r.observe("h", {{"le", "1"}}, 1), std::logic_error) << "le is the bucket label";
}

TEST(HealerMetrics, FreshTextHasEveryFixedSeriesAtZero) {
    const HealerMetrics m;
    const std::string text = m.render();
    EXPECT_EQ(format_problems(text), std::vector<std::string>{}) << text;
    EXPECT_EQ(samples(text, "fuse_healer_targets"),
              (std::vector<std::string>{
                  "fuse_healer_targets{state=\"healthy\"} 0", "fuse_healer_targets{state=\"broken\"} 0",
                  "fuse_healer_targets{state=\"unresponsive\"} 0", "fuse_healer_targets{state=\"skipped\"} 0",
                  "fuse_healer_targets{state=\"healing\"} 0", "fuse_healer_targets{state=\"unknown\"} 0"}));
    EXPECT_EQ(samples(text, "fuse_healer_heals_total"),
              (std::vector<std::string>{"fuse_healer_heals_total{result=\"healed\"} 0",
                                        "fuse_healer_heals_total{result=\"failed\"} 0",
                                        "fuse_healer_heals_total{result=\"skipped\"} 0"}));
    for (const char* name : {"fuse_healer_heal_duration_seconds_count", "fuse_healer_outage_duration_seconds_count",
                             "fuse_healer_broken_detected_total", "fuse_healer_unresponsive_detected_total",
                             "fuse_healer_reconciles_total",
                             "fuse_healer_armed_actions_total", "fuse_healer_server_deaths_total",
                             "fuse_healer_detection_latency_seconds_count", "fuse_healer_servers_watched",
                             "fuse_healer_hung_aborts_total"})
        EXPECT_EQ(samples(text, name), std::vector<std::string>{std::string(name) + " 0"});
    EXPECT_EQ(samples(text, "fuse_healer_mount_events_total"),
              (std::vector<std::string>{"fuse_healer_mount_events_total{relevance=\"relevant\"} 0",
                                        "fuse_healer_mount_events_total{relevance=\"unrelated\"} 0"}));
    for (const char* family : {"fuse_healer_targets", "fuse_healer_heals_total", "fuse_healer_heal_duration_seconds",
                               "fuse_healer_outage_duration_seconds", "fuse_healer_broken_detected_total",
                               "fuse_healer_unresponsive_detected_total", "fuse_healer_mount_events_total",
                               "fuse_healer_reconciles_total", "fuse_healer_build_info",
                               "fuse_healer_start_time_seconds"}) {
        EXPECT_NE(text.find(std::string("# HELP ") + family + " "), std::string::npos) << family;
        EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
    }
    EXPECT_EQ(samples(text, "fuse_healer_build_info"), std::vector<std::string>{}) << "absent until known";
    EXPECT_EQ(samples(text, "fuse_healer_degraded"),
              (std::vector<std::string>{"fuse_healer_degraded{reason=\"inotify_watch_limit\"} 0",
                                        "fuse_healer_degraded{reason=\"state_not_saved\"} 0"}));
    EXPECT_EQ(samples(text, "fuse_healer_event_queue_overflows_total"),
              (std::vector<std::string>{"fuse_healer_event_queue_overflows_total{queue=\"inotify\"} 0",
                                        "fuse_healer_event_queue_overflows_total{queue=\"fanotify\"} 0"}));
}

TEST(HealerMetrics, DegradationAndQueueOverflows) {
    HealerMetrics m;
    m.set_degraded(Degradation::StateNotSaved, true);
    m.record_queue_overflow(EventQueue::Fanotify);
    m.record_queue_overflow(EventQueue::Fanotify);
    EXPECT_EQ(m.registry().value("fuse_healer_degraded", {{"reason", "state_not_saved"}}), 1);
    EXPECT_EQ(m.registry().value("fuse_healer_degraded", {{"reason", "inotify_watch_limit"}}), 0);
    EXPECT_EQ(m.registry().value("fuse_healer_event_queue_overflows_total", {{"queue", "fanotify"}}), 2);
    m.set_degraded(Degradation::StateNotSaved, false);
    EXPECT_EQ(m.registry().value("fuse_healer_degraded", {{"reason", "state_not_saved"}}), 0);
}

TEST(HealerMetrics, BucketsSpanTheDocumentedRanges) {
    EXPECT_EQ(HealerMetrics::kHealDurationBuckets.front(), 0.0001);
    EXPECT_EQ(HealerMetrics::kHealDurationBuckets.back(), 60);
    EXPECT_EQ(HealerMetrics::kOutageDurationBuckets.front(), 0.01);
    EXPECT_EQ(HealerMetrics::kOutageDurationBuckets.back(), 3600);
    const std::string text = HealerMetrics().render();
    EXPECT_EQ(samples(text, "fuse_healer_heal_duration_seconds_bucket").size(),
              HealerMetrics::kHealDurationBuckets.size() + 1);
    EXPECT_NE(text.find("fuse_healer_heal_duration_seconds_bucket{le=\"0.0001\"} 0\n"), std::string::npos);
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_bucket{le=\"3600\"} 0\n"), std::string::npos);
}

TEST(HealerMetrics, TargetsCountEveryState) {
    HealerMetrics m;
    m.set_targets({TargetState::Healthy, TargetState::Healthy, TargetState::Broken, TargetState::Healing,
                   TargetState::Unknown, TargetState::Skipped, TargetState::Unresponsive, TargetState::Healthy});
    const MetricRegistry& r = m.registry();
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "healthy"}}), 3);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "broken"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "healing"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "unknown"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "skipped"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "unresponsive"}}), 1);
    m.set_targets({TargetState::Healthy});
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "healthy"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_targets", {{"state", "broken"}}), 0) << "a state left empty is 0, not absent";
    EXPECT_EQ(samples(m.render(), "fuse_healer_targets").size(), 6u);
}

TEST(HealerMetrics, HealEventsFeedCountersAndHistograms) {
    HealerMetrics m;
    m.record_broken();
    m.record_broken();
    m.record_unresponsive();
    m.record_heal(HealResult::Healed, 0.0004, 3.0);
    m.record_heal(HealResult::Failed, 99, 99);   // durations of a failed heal are not recorded
    m.record_heal(HealResult::Skipped, 99, 99);
    m.record_recovered(0.02);
    m.record_mount_event(true);
    m.record_mount_event(false);
    m.record_mount_event(false);
    m.record_reconcile();
    m.record_reconcile(3);
    const MetricRegistry& r = m.registry();
    EXPECT_EQ(r.value("fuse_healer_broken_detected_total"), 2);
    EXPECT_EQ(r.value("fuse_healer_unresponsive_detected_total"), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "healed"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "failed"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heals_total", {{"result", "skipped"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_heal_duration_seconds"), 1);
    EXPECT_EQ(r.value("fuse_healer_outage_duration_seconds"), 2) << "the healed and the recovered outage";
    EXPECT_EQ(r.value("fuse_healer_mount_events_total", {{"relevance", "relevant"}}), 1);
    EXPECT_EQ(r.value("fuse_healer_mount_events_total", {{"relevance", "unrelated"}}), 2);
    EXPECT_EQ(r.value("fuse_healer_reconciles_total"), 2);
    EXPECT_EQ(r.value("fuse_healer_armed_actions_total"), 3);
    const std::string text = m.render();
    EXPECT_NE(text.find("fuse_healer_heal_duration_seconds_bucket{le=\"0.00025\"} 0\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_heal_duration_seconds_bucket{le=\"0.0005\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_heal_duration_seconds_sum 0.0004\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_bucket{le=\"0.025\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_bucket{le=\"2.5\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_bucket{le=\"5\"} 2\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_outage_duration_seconds_sum 3.02\n"), std::string::npos) << text;
    EXPECT_EQ(format_problems(text), std::vector<std::string>{});
}

TEST(HealerMetrics, ServerDeathsFeedTheDetectionLatencyHistogram) {
    HealerMetrics m;
    m.record_server_death(0.000012);
    m.record_server_death(0.003);
    m.set_servers_watched(4);
    m.set_servers_watched(3);
    m.record_hung_abort();
    const MetricRegistry& r = m.registry();
    EXPECT_EQ(r.value("fuse_healer_server_deaths_total"), 2);
    EXPECT_EQ(r.value("fuse_healer_detection_latency_seconds"), 2);
    EXPECT_EQ(r.value("fuse_healer_servers_watched"), 3);
    EXPECT_EQ(r.value("fuse_healer_hung_aborts_total"), 1);
    const std::string text = m.render();
    EXPECT_EQ(HealerMetrics::kDetectionLatencyBuckets.front(), 0.00001);
    EXPECT_EQ(samples(text, "fuse_healer_detection_latency_seconds_bucket").size(),
              HealerMetrics::kDetectionLatencyBuckets.size() + 1);
    // As Go's client writes bounds below 1e-4 (FormatFloat 'g').
    EXPECT_NE(text.find("fuse_healer_detection_latency_seconds_bucket{le=\"1e-05\"} 0\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_detection_latency_seconds_bucket{le=\"2.5e-05\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_detection_latency_seconds_bucket{le=\"0.0025\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("fuse_healer_detection_latency_seconds_bucket{le=\"0.005\"} 2\n"), std::string::npos) << text;
    EXPECT_EQ(format_problems(text), std::vector<std::string>{});
}

TEST(HealerMetrics, BuildInfoHasOneSeriesWithTheLatestLabels) {
    HealerMetrics m;
    m.set_build_info("0.1.0", "replace", "fusectl");
    m.set_build_info("0.1.0", "stack", "statx");
    m.set_start_time(1700000000.5);
    const std::string text = m.render();
    EXPECT_EQ(samples(text, "fuse_healer_build_info"),
              std::vector<std::string>{
                  "fuse_healer_build_info{version=\"0.1.0\",strategy=\"stack\",detection=\"statx\"} 1"});
    EXPECT_EQ(samples(text, "fuse_healer_start_time_seconds"),
              std::vector<std::string>{"fuse_healer_start_time_seconds 1700000000.5"});
}

// The heal worker records while the HTTP and textfile threads render: no
// update may be lost, and every render must be well-formed.
TEST(HealerMetrics, ConcurrentRecordsAndRendersLoseNothing) {
    HealerMetrics m;
    constexpr int kThreads = 4, kPerThread = 5000;
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t)
        writers.emplace_back([&] {
            for (int i = 0; i < kPerThread; ++i) {
                m.record_heal(HealResult::Healed, 0.001, 1);
                m.set_targets({TargetState::Healthy, TargetState::Broken});
            }
        });
    std::vector<std::string> problems;
    std::thread reader([&] {
        for (int i = 0; i < 50; ++i) {
            const std::string text = m.render();
            // A render sees the targets set whole: 1 healthy and 1 broken, or none yet.
            const auto healthy = samples(text, "fuse_healer_targets{state=\"healthy\"}");
            const auto broken = samples(text, "fuse_healer_targets{state=\"broken\"}");
            if (healthy.size() != 1 || broken.size() != 1 || healthy[0].back() != broken[0].back())
                problems.push_back("targets half-updated: " + text);
        }
    });
    for (auto& w : writers) w.join();
    reader.join();
    EXPECT_EQ(problems, std::vector<std::string>{});
    EXPECT_EQ(m.registry().value("fuse_healer_heals_total", {{"result", "healed"}}), kThreads * kPerThread);
    EXPECT_EQ(m.registry().value("fuse_healer_heal_duration_seconds"), kThreads * kPerThread);
}

} // namespace
} // namespace fh
