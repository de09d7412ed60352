#include "core/config.h"

#include <gtest/gtest.h>
#include <toml++/toml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fh {
namespace {

using namespace std::chrono_literals;

const std::string kShippedConfig = FH_TEST_DATA_DIR "/../../conf/fuse-healer.toml";

Config parsed(const std::string& text) {
    ConfigResult result = parse_config(text, "test.toml");
    if (const auto* error = std::get_if<ConfigError>(&result)) {
        ADD_FAILURE() << "unexpected error: " << error->to_string();
        return {};
    }
    return std::get<Config>(result);
}

// Returns the error's "file:line:column: message".
std::string error_of(const ConfigResult& result) {
    if (const auto* error = std::get_if<ConfigError>(&result)) return error->to_string();
    ADD_FAILURE() << "parsed, expected an error";
    return {};
}

// Compares every field that comes from the file (not loaded_from).
void expect_same_settings(const Config& actual, const Config& expected) {
    EXPECT_EQ(actual.match.root_dir, expected.match.root_dir);
    EXPECT_EQ(actual.match.fs_types, expected.match.fs_types);
    EXPECT_EQ(actual.match.source_prefixes, expected.match.source_prefixes);
    EXPECT_EQ(actual.strategy, expected.strategy);
    EXPECT_EQ(actual.read_write, expected.read_write);
    EXPECT_EQ(actual.namespaces, expected.namespaces);
    EXPECT_EQ(actual.safety_scan_interval, expected.safety_scan_interval);
    EXPECT_EQ(actual.probe_timeout, expected.probe_timeout);
    EXPECT_EQ(actual.abort_hung_after, expected.abort_hung_after);
    EXPECT_EQ(actual.restart_grace, expected.restart_grace);
    EXPECT_EQ(actual.state_dir, expected.state_dir);
    EXPECT_EQ(actual.log_level, expected.log_level);
    EXPECT_EQ(actual.metrics.listen, expected.metrics.listen);
    EXPECT_EQ(actual.metrics.textfile, expected.metrics.textfile);
    EXPECT_EQ(actual.control_socket, expected.control_socket);
}

// A fresh temporary directory, removed with its files.
class TempDir {
public:
    TempDir() {
        path_ = std::filesystem::temp_directory_path() / "config_test.XXXXXX";
        if (::mkdtemp(path_.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    std::string write(const std::string& name, const std::string& text) const {
        const std::string file = path_ + "/" + name;
        std::ofstream(file) << text;
        return file;
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

TEST(Config, BuiltInDefaults) {
    const Config c;
    EXPECT_EQ(c.match.root_dir, "/var/lib/kubelet");
    EXPECT_EQ(c.match.fs_types, (std::vector<std::string>{"fuse", "fuse.*"}));
    EXPECT_TRUE(c.match.source_prefixes.empty());
    EXPECT_EQ(c.strategy, StrategySetting::Auto);
    EXPECT_FALSE(c.read_write);
    EXPECT_TRUE(c.namespaces);
    EXPECT_EQ(c.safety_scan_interval, 30s);
    EXPECT_EQ(c.probe_timeout, 2s);
    EXPECT_EQ(c.abort_hung_after, 0s);
    EXPECT_EQ(c.restart_grace, 50ms);
    EXPECT_EQ(c.state_dir, "/var/lib/fuse-healer");
    EXPECT_EQ(c.log_level, LogLevel::Info);
    EXPECT_EQ(c.metrics.listen, "127.0.0.1:9766");
    EXPECT_EQ(c.metrics.textfile, "");
    EXPECT_EQ(c.control_socket, "/run/fuse-healer/control.sock");
    EXPECT_EQ(c.loaded_from, "");
}

TEST(Config, MissingKeysTakeDefaults) {
    expect_same_settings(parsed(""), Config{});
    expect_same_settings(parsed("# nothing set\n"), Config{});
    expect_same_settings(parsed("[kubelet]\n[match]\n[heal]\n[state]\n[log]\n[metrics]\n"), Config{});
    EXPECT_EQ(parsed("").loaded_from, "");
}

TEST(Config, FullFile) {
    const Config c = parsed(R"(
[kubelet]
root_dir = "/data/kubelet/"
[match]
fs_types = ["fuse.juicefs", "fuse.s3*"]
source_prefixes = ["/var/lib/juicefs//", "/mnt"]
[heal]
strategy = "stack"
read_write = true
namespaces = false
safety_scan_interval = "5m"
probe_timeout = "500ms"
abort_hung_after = "5m"
restart_grace = "200ms"
[state]
dir = "/run/fuse-healer/"
[log]
level = "debug"
)");
    EXPECT_EQ(c.match.root_dir, "/data/kubelet");
    EXPECT_EQ(c.match.fs_types, (std::vector<std::string>{"fuse.juicefs", "fuse.s3*"}));
    EXPECT_EQ(c.match.source_prefixes, (std::vector<std::string>{"/var/lib/juicefs", "/mnt"}));
    EXPECT_EQ(c.strategy, StrategySetting::Stack);
    EXPECT_TRUE(c.read_write);
    EXPECT_FALSE(c.namespaces);
    EXPECT_EQ(c.safety_scan_interval, 5min);
    EXPECT_EQ(c.probe_timeout, 500ms);
    EXPECT_EQ(c.abort_hung_after, 5min);
    EXPECT_EQ(c.restart_grace, 200ms);
    EXPECT_EQ(c.state_dir, "/run/fuse-healer");
    EXPECT_EQ(c.log_level, LogLevel::Debug);
}

TEST(Config, DottedKeysAndInlineTables) {
    const Config c = parsed("heal.strategy = \"replace\"\nlog = { level = \"error\" }\n");
    EXPECT_EQ(c.strategy, StrategySetting::Replace);
    EXPECT_EQ(c.log_level, LogLevel::Error);
}

TEST(Config, SafetyScanZeroDisablesAndOneSecondIsTheMinimum) {
    EXPECT_EQ(parsed("[heal]\nsafety_scan_interval = \"0s\"\n").safety_scan_interval, 0s);
    EXPECT_EQ(parsed("[heal]\nsafety_scan_interval = \"0ms\"\n").safety_scan_interval, 0s);
    EXPECT_EQ(parsed("[heal]\nsafety_scan_interval = \"1000ms\"\n").safety_scan_interval, 1s);
    EXPECT_EQ(parsed("[heal]\nprobe_timeout = \"1us\"\n").probe_timeout, 1us);
}

TEST(Config, AbortHungAfterZeroDisablesAndOneSecondIsTheMinimum) {
    EXPECT_EQ(parsed("[heal]\nabort_hung_after = \"0s\"\n").abort_hung_after, 0s);
    EXPECT_EQ(parsed("[heal]\nabort_hung_after = \"1s\"\n").abort_hung_after, 1s);
    EXPECT_EQ(parsed("[heal]\nabort_hung_after = \"2h\"\n").abort_hung_after, 2h);
}

TEST(Config, RestartGraceZeroDisablesAndFiveSecondsIsTheMaximum) {
    EXPECT_EQ(parsed("[heal]\nrestart_grace = \"0s\"\n").restart_grace, 0s);
    EXPECT_EQ(parsed("[heal]\nrestart_grace = \"1us\"\n").restart_grace, 1us);
    EXPECT_EQ(parsed("[heal]\nrestart_grace = \"5000ms\"\n").restart_grace, 5s);
}

TEST(Config, EveryStrategyAndLevelNameRoundTrips) {
    for (StrategySetting s :
         {StrategySetting::Auto, StrategySetting::Replace, StrategySetting::Stack}) {
        EXPECT_EQ(parsed(std::string("[heal]\nstrategy = \"") + to_string(s) + "\"\n").strategy, s);
    }
    for (LogLevel l :
         {LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error}) {
        EXPECT_EQ(parsed(std::string("[log]\nlevel = \"") + to_string(l) + "\"\n").log_level, l);
    }
}

TEST(Config, ControlSocketIsAPathOrEmptyToDisable) {
    expect_same_settings(parsed("[control]\n"), Config{});
    EXPECT_EQ(parsed("[control]\nsocket = \"/run/fh/ctl.sock/\"\n").control_socket, "/run/fh/ctl.sock");
    EXPECT_EQ(parsed("[control]\nsocket = \"\"\n").control_socket, "");
    // 107 bytes is the longest path sockaddr_un holds with its NUL.
    const std::string longest = "/" + std::string(106, 'a');
    EXPECT_EQ(parsed("[control]\nsocket = \"" + longest + "\"\n").control_socket, longest);
    EXPECT_EQ(error_of(parse_config("[control]\nsocket = \"" + longest + "a\"\n", "test.toml")),
              "test.toml:2:10: [control] socket must be at most 107 bytes long (the limit of a unix socket path), "
              "got 108");
}

TEST(Config, ShippedFileIsTheDefaults) {
    const ConfigResult result = load_config(kShippedConfig, false);
    ASSERT_TRUE(std::holds_alternative<Config>(result)) << error_of(result);
    expect_same_settings(std::get<Config>(result), Config{});
    EXPECT_EQ(std::get<Config>(result).loaded_from, kShippedConfig);
}

TEST(Config, ShippedFileSetsEveryKey) {
    const toml::table file = toml::parse_file(kShippedConfig);
    const std::vector<std::pair<std::string, std::vector<std::string>>> layout = {
        {"kubelet", {"root_dir"}},
        {"match", {"fs_types", "source_prefixes"}},
        {"heal",
         {"strategy", "read_write", "namespaces", "safety_scan_interval", "probe_timeout", "abort_hung_after",
          "restart_grace"}},
        {"state", {"dir"}},
        {"log", {"level"}},
        {"metrics", {"listen", "textfile"}},
        {"control", {"socket"}},
    };
    for (const auto& [section, keys] : layout) {
        for (const std::string& key : keys) {
            EXPECT_TRUE(file[section][key]) << "[" << section << "] " << key;
        }
    }
}

TEST(Config, Metrics) {
    const Config c = parsed("[metrics]\nlisten = \"[::]:9100\"\ntextfile = \"/var/lib/node-exporter/fuse_healer.prom\"\n");
    EXPECT_EQ(c.metrics.listen, "[::]:9100");
    EXPECT_EQ(c.metrics.textfile, "/var/lib/node-exporter/fuse_healer.prom");
    EXPECT_EQ(parsed("[metrics]\nlisten = \"0.0.0.0:9766\"\n").metrics.listen, "0.0.0.0:9766");
}

TEST(Config, MetricsEmptyStringsDisable) {
    const Config c = parsed("[metrics]\nlisten = \"\"\ntextfile = \"\"\n");
    EXPECT_EQ(c.metrics.listen, "");
    EXPECT_EQ(c.metrics.textfile, "");
}

TEST(ConfigError, ToStringOmitsUnknownPosition) {
    EXPECT_EQ((ConfigError{"a.toml", 3, 7, "bad"}).to_string(), "a.toml:3:7: bad");
    EXPECT_EQ((ConfigError{"a.toml", 3, 0, "bad"}).to_string(), "a.toml:3: bad");
    EXPECT_EQ((ConfigError{"a.toml", 0, 0, "bad"}).to_string(), "a.toml: bad");
}

struct ErrorCase {
    const char* name;
    const char* text;
    const char* error; // expected "file:line:column: message"
};

class ConfigErrors : public testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrors, PointAtTheOffendingKeyOrValue) {
    EXPECT_EQ(error_of(parse_config(GetParam().text, "test.toml")), GetParam().error);
}

const ErrorCase kErrorCases[] = {
    // TOML syntax.
    {"MissingValue", "[heal]\nstrategy =\n",
     "test.toml:2:11: invalid TOML: Error while parsing key-value pair: expected value, saw '\\n'"},
    {"DuplicateKey", "[heal]\nread_write = true\nread_write = false\n",
     "test.toml:3:14: invalid TOML: Error while parsing key-value pair: "
     "cannot redefine existing boolean 'read_write'"},
    // Found by fuzz_config (tests/fuzz/regressions/config): toml++ 3.3.0 breaks
    // an assertion of its own here (fixed upstream, tomlplusplus PR #301);
    // Debian's library, built without them, reports the error.
    {"TableHeaderWithoutAName", "[heal]\n[=x]\n",
     "test.toml:2:2: invalid TOML: Error while parsing key: expected bare key starting character or string "
     "delimiter, saw '='"},
    // Layout.
    {"UnknownTable", "[heal]\n\n[healing]\n", "test.toml:3:2: unknown table [healing]"},
    {"UnknownKey", "[heal]\nread_write = true\n  stratgy = \"auto\"\n",
     "test.toml:3:3: unknown key \"stratgy\" in [heal]"},
    {"UnknownSubtable", "[heal.extra]\n", "test.toml:1:7: unknown table [heal.extra]"},
    {"TopLevelKey", "strategy = \"auto\"\n",
     "test.toml:1:1: unknown key \"strategy\" outside any table"},
    {"SectionNotATable", "log = \"info\"\n", "test.toml:1:7: \"log\" must be a table, got string"},
    {"SectionIsAnArrayOfTables", "[[log]]\nlevel = \"info\"\n",
     "test.toml:1:1: \"log\" must be a table, got array"},
    // Types.
    {"DurationNotAString", "[heal]\nprobe_timeout = 2\n",
     "test.toml:2:17: [heal] probe_timeout: expected a duration string such as \"2s\", got integer"},
    {"BooleanNotABoolean", "[heal]\nread_write = \"yes\"\n",
     "test.toml:2:14: [heal] read_write: expected a boolean (true or false), got string"},
    {"PathNotAString", "[kubelet]\nroot_dir = 1.5\n",
     "test.toml:2:12: [kubelet] root_dir: expected an absolute path string, got float"},
    {"EnumNotAString", "[log]\nlevel = 3\n",
     "test.toml:2:9: [log] level: "
     "expected a string (one of trace, debug, info, warn, error), got integer"},
    {"ArrayNotAnArray", "[match]\nfs_types = \"fuse\"\n",
     "test.toml:2:12: [match] fs_types: expected an array of strings, got string"},
    {"ArrayElementNotAString", "[match]\nfs_types = [\"fuse\", true]\n",
     "test.toml:2:21: [match] fs_types[1]: expected a string, got boolean"},
    {"PathElementNotAString", "[match]\nsource_prefixes = [[\"/a\"]]\n",
     "test.toml:2:20: [match] source_prefixes[0]: expected an absolute path string, got array"},
    // Values.
    {"UnknownStrategy", "[heal]\nstrategy = \"fast\"\n",
     "test.toml:2:12: [heal] strategy must be one of auto, replace, stack, got \"fast\""},
    {"UnknownLevel", "[log]\nlevel = \"INFO\"\n",
     "test.toml:2:9: [log] level must be one of trace, debug, info, warn, error, got \"INFO\""},
    {"RelativeRootDir", "[kubelet]\nroot_dir = \"var/lib/kubelet\"\n",
     "test.toml:2:12: [kubelet] root_dir must be an absolute path, got \"var/lib/kubelet\""},
    {"EmptyRootDir", "[kubelet]\nroot_dir = \"\"\n",
     "test.toml:2:12: [kubelet] root_dir must be an absolute path, got \"\""},
    {"RootDirIsSlash", "[kubelet]\nroot_dir = \"//\"\n",
     "test.toml:2:12: [kubelet] root_dir must not be \"/\""},
    {"RootDirDotDot", "[kubelet]\nroot_dir = \"/var/lib/kubelet/..\"\n",
     "test.toml:2:12: [kubelet] root_dir must not contain empty, \".\" or \"..\" components, got "
     "\"/var/lib/kubelet/..\""},
    {"StateDirDot", "[state]\ndir = \"/var/./lib\"\n",
     "test.toml:2:7: [state] dir must not contain empty, \".\" or \"..\" components, "
     "got \"/var/./lib\""},
    {"StateDirEmptyComponent", "[state]\ndir = \"/var//lib\"\n",
     "test.toml:2:7: [state] dir must not contain empty, \".\" or \"..\" components, "
     "got \"/var//lib\""},
    {"RelativeSourcePrefix", "[match]\nsource_prefixes = [\"/mnt\", \"mnt\"]\n",
     "test.toml:2:28: [match] source_prefixes[1] must be an absolute path, got \"mnt\""},
    {"EmptyFsTypes", "[match]\nfs_types = []\n", "test.toml:2:12: [match] fs_types must not be empty"},
    {"EmptyFsType", "[match]\nfs_types = [\"\"]\n",
     "test.toml:2:13: [match] fs_types[0] must not be empty"},
    {"DurationWithoutUnit", "[heal]\nprobe_timeout = \"2\"\n",
     "test.toml:2:17: [heal] probe_timeout must be a whole number followed by "
     "one of us, ms, s, m, h, such as \"2s\", got \"2\""},
    {"FractionalDuration", "[heal]\nsafety_scan_interval = \"1.5s\"\n",
     "test.toml:2:24: [heal] safety_scan_interval must be a whole number followed by "
     "one of us, ms, s, m, h, such as \"30s\", got \"1.5s\""},
    {"NegativeDuration", "[heal]\nsafety_scan_interval = \"-1s\"\n",
     "test.toml:2:24: [heal] safety_scan_interval must be a whole number followed by "
     "one of us, ms, s, m, h, such as \"30s\", got \"-1s\""},
    {"ZeroProbeTimeout", "[heal]\nprobe_timeout = \"0ms\"\n",
     "test.toml:2:17: [heal] probe_timeout must be greater than 0s"},
    {"SubSecondAbortHungAfter", "[heal]\nabort_hung_after = \"500ms\"\n",
     "test.toml:2:20: [heal] abort_hung_after must be at least 1s, or \"0s\" to disable it, got \"500ms\""},
    {"AbortHungAfterNotAString", "[heal]\n  abort_hung_after = 300\n",
     "test.toml:2:22: [heal] abort_hung_after: expected a duration string such as \"5m\", got integer"},
    {"AbortHungAfterWithoutUnit", "[heal]\nabort_hung_after = \"300\"\n",
     "test.toml:2:20: [heal] abort_hung_after must be a whole number followed by one of us, ms, s, m, h, such as "
     "\"5m\", got \"300\""},
    {"LongRestartGrace", "[heal]\nrestart_grace = \"5001ms\"\n",
     "test.toml:2:17: [heal] restart_grace must be at most 5s, or \"0s\" to disable it, got \"5001ms\""},
    {"RestartGraceNotAString", "[heal]\nrestart_grace = 50\n",
     "test.toml:2:17: [heal] restart_grace: expected a duration string such as \"50ms\", got integer"},
    {"SubSecondSafetyScan", "[heal]\nsafety_scan_interval = \"999ms\"\n",
     "test.toml:2:24: [heal] safety_scan_interval must be at least 1s, "
     "or \"0s\" to disable it, got \"999ms\""},
    // [metrics]
    {"UnknownMetricsKey", "[metrics]\nport = 9766\n", "test.toml:2:1: unknown key \"port\" in [metrics]"},
    {"ListenNotAString", "[metrics]\nlisten = 9766\n",
     "test.toml:2:10: [metrics] listen: expected a string such as \"127.0.0.1:9766\" (\"\" to disable), got integer"},
    {"ListenWithoutPort", "[metrics]\nlisten = \"127.0.0.1\"\n",
     "test.toml:2:10: [metrics] listen must be \"host:port\", such as \"127.0.0.1:9766\" or \"[::1]:9766\""},
    {"ListenHostName", "[metrics]\n  listen = \"localhost:9766\"\n",
     "test.toml:2:12: [metrics] listen must have an IP address as its host (names are not resolved), such as "
     "\"127.0.0.1:9766\", got \"localhost\""},
    {"ListenIpv6WithoutBrackets", "[metrics]\nlisten = \"::1:9766\"\n",
     "test.toml:2:10: [metrics] listen must put an IPv6 address in brackets, such as \"[::1]:9766\""},
    {"ListenPortZero", "[metrics]\nlisten = \"127.0.0.1:0\"\n",
     "test.toml:2:10: [metrics] listen must have a port between 1 and 65535, got \"0\""},
    {"ListenPortTooLarge", "[metrics]\nlisten = \"[::1]:70000\"\n",
     "test.toml:2:10: [metrics] listen must have a port between 1 and 65535, got \"70000\""},
    {"TextfileNotAString", "[metrics]\ntextfile = true\n",
     "test.toml:2:12: [metrics] textfile: expected an absolute path string (\"\" to disable), got boolean"},
    {"TextfileRelative", "[metrics]\ntextfile = \"fuse_healer.prom\"\n",
     "test.toml:2:12: [metrics] textfile must be an absolute path, got \"fuse_healer.prom\""},
    {"TextfileNotProm", "[metrics]\ntextfile = \"/var/lib/node-exporter/fuse_healer.txt\"\n",
     "test.toml:2:12: [metrics] textfile must name a file ending in \".prom\" (node_exporter reads no other), "
     "got \"/var/lib/node-exporter/fuse_healer.txt\""},
    {"TextfileDirectory", "[metrics]\ntextfile = \"/var/lib/node-exporter/\"\n",
     "test.toml:2:12: [metrics] textfile must name a file ending in \".prom\" (node_exporter reads no other), "
     "got \"/var/lib/node-exporter\""},
    {"MetricsNotATable", "metrics = \"127.0.0.1:9766\"\n",
     "test.toml:1:11: \"metrics\" must be a table, got string"},
    {"ControlSocketNotAString", "[control]\nsocket = false\n",
     "test.toml:2:10: [control] socket: expected a path string (empty to disable the control socket), got boolean"},
    {"ControlSocketRelative", "[control]\nsocket = \"control.sock\"\n",
     "test.toml:2:10: [control] socket must be an absolute path, got \"control.sock\""},
    {"ControlSocketDotDot", "[control]\nsocket = \"/run/../control.sock\"\n",
     "test.toml:2:10: [control] socket must not contain empty, \".\" or \"..\" components, got "
     "\"/run/../control.sock\""},
    {"ControlSocketIsRoot", "[control]\nsocket = \"///\"\n",
     "test.toml:2:10: [control] socket must name a socket file, got \"/\""},
    {"UnknownControlKey", "[control]\npath = \"/run/x.sock\"\n",
     "test.toml:2:1: unknown key \"path\" in [control]"},
};

INSTANTIATE_TEST_SUITE_P(Config, ConfigErrors, testing::ValuesIn(kErrorCases),
                         [](const testing::TestParamInfo<ErrorCase>& param_info) {
                             return param_info.param.name;
                         });

TEST(LoadConfig, MissingFileMeansDefaultsOnlyWhenAllowed) {
    const TempDir dir;
    const std::string path = dir.path() + "/absent.toml";

    const ConfigResult defaults = load_config(path, true);
    ASSERT_TRUE(std::holds_alternative<Config>(defaults)) << error_of(defaults);
    expect_same_settings(std::get<Config>(defaults), Config{});
    EXPECT_EQ(std::get<Config>(defaults).loaded_from, "");

    EXPECT_EQ(error_of(load_config(path, false)),
              path + ": cannot read config file: No such file or directory");
}

TEST(LoadConfig, UnreadablePathIsAnErrorEvenWhenMissingMeansDefaults) {
    const TempDir dir;
    EXPECT_EQ(error_of(load_config(dir.path(), true)),
              dir.path() + ": cannot read config file: Is a directory");
}

TEST(LoadConfig, ReadsTheFileAndNamesItInErrors) {
    const TempDir dir;
    const std::string good = dir.write("good.toml", "[log]\nlevel = \"warn\"\n");
    const ConfigResult result = load_config(good, false);
    ASSERT_TRUE(std::holds_alternative<Config>(result)) << error_of(result);
    EXPECT_EQ(std::get<Config>(result).log_level, LogLevel::Warn);
    EXPECT_EQ(std::get<Config>(result).loaded_from, good);

    const std::string bad = dir.write("bad.toml", "[log]\nlevel = \"loud\"\n");
    EXPECT_EQ(error_of(load_config(bad, true)),
              bad + ":2:9: [log] level must be one of trace, debug, info, warn, error, got \"loud\"");
}

} // namespace
} // namespace fh
