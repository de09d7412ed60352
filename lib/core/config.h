// The daemon's configuration, from a TOML file (default
// /etc/fuse-healer/fuse-healer.toml). Every key in the file must be known and
// well-typed; errors carry file:line:column.
#pragma once

#include <chrono>
#include <string>
#include <variant>
#include <vector>

#include "core/model.h"

namespace fh {

enum class StrategySetting { Auto, Replace, Stack };
// Returns "auto", "replace" or "stack".
const char* to_string(StrategySetting s);

enum class LogLevel { Trace, Debug, Info, Warn, Error };
// Returns "trace", "debug", "info", "warn" or "error".
const char* to_string(LogLevel l);

inline constexpr const char* kDefaultConfigPath = "/etc/fuse-healer/fuse-healer.toml";
inline constexpr const char* kDefaultControlSocket = "/run/fuse-healer/control.sock";

// [metrics]: where the Prometheus metrics are published.
struct MetricsConfig {
    // "host:port" or "[v6]:port" (validated by parse_listen_address) to serve
    // GET /metrics on; empty: no HTTP listener. 9766 is fuse-healer's port.
    std::string listen = "127.0.0.1:9766";
    // Absolute path of a *.prom file rewritten after each reconcile (at most
    // once per second) for node_exporter's textfile collector; empty: off.
    std::string textfile;
};

struct Config {
    MatchRules match;                           // [kubelet] root_dir, [match] fs_types, source_prefixes
    StrategySetting strategy = StrategySetting::Auto;                // [heal] strategy
    bool read_write = false;                                         // [heal] read_write
    bool namespaces = true;                                          // [heal] namespaces
    std::chrono::microseconds safety_scan_interval = std::chrono::seconds(30);  // [heal] "0s" = off
    std::chrono::microseconds probe_timeout = std::chrono::seconds(2);          // [heal]
    // [heal] abort_hung_after, "0s" = off: abort a FUSE connection whose
    // daemon has answered no request for that long and whose mounts do not
    // answer a probe (see core/hung_abort.h).
    std::chrono::microseconds abort_hung_after{0};
    // [heal] restart_grace, "0s" = off: how long, after fusectl says a
    // source's connection died, the heals planned ahead for its copies in
    // containers wait for a new source before the full step runs (see
    // EngineSettings::plan_ahead). A supervisor that restarts the FUSE
    // daemon at once mounts the source 3-6 ms after the kill (scale_bench);
    // 50 ms covers that on a loaded node. Meanwhile the death's "mount
    // broken" lines and status, and other events' full steps, wait.
    // (Off by default in session 13 for a crash-loop bug, mended in session
    // 14: Engine::copies_ahead_ and stranded_; docs/RELIABILITY.md.)
    std::chrono::microseconds restart_grace{50'000};
    std::string state_dir = "/var/lib/fuse-healer";                  // [state] dir
    LogLevel log_level = LogLevel::Info;                             // [log] level
    MetricsConfig metrics;                                           // [metrics]
    std::string control_socket = kDefaultControlSocket;  // [control] socket, "" = no control socket
    std::string loaded_from;  // the file read, empty for built-in defaults
};

struct ConfigError {
    std::string file;
    int line = 0;    // 1-based, 0 when unknown
    int column = 0;  // 1-based, 0 when unknown
    std::string message;

    // Returns "file:line:column: message" (line/column omitted when 0).
    std::string to_string() const;
};

using ConfigResult = std::variant<Config, ConfigError>;

// Parses config text; `file` names it in errors. Returns the config or the
// first error found.
ConfigResult parse_config(const std::string& text, const std::string& file);

// Loads a config file. A missing file is an error, except that when
// `missing_means_defaults` is true (the default path was not overridden) a
// missing file yields the built-in defaults. Returns the config or an error.
ConfigResult load_config(const std::string& path, bool missing_means_defaults);

} // namespace fh
