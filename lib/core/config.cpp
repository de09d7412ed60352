#include "core/config.h"

#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "core/duration.h"
#include "core/error.h"
#include "core/listen_address.h"

namespace fh {
namespace {

using namespace std::chrono_literals;

// Indexed by the enums' values.
constexpr std::array<const char*, 3> kStrategyNames{"auto", "replace", "stack"};
constexpr std::array<const char*, 5> kLogLevelNames{"trace", "debug", "info", "warn", "error"};

// Bounds of the [heal] durations: "0s" turns an interval off.
constexpr std::chrono::microseconds kNoInterval{0};
constexpr std::chrono::microseconds kOneSecond{1'000'000};
constexpr std::chrono::microseconds kMaxRestartGrace{5'000'000};  // [heal] restart_grace

// Every table and key a config file may hold. Anything else is rejected: a
// misspelt key silently left at its default is worse than a refusal to start.
const std::map<std::string_view, std::vector<std::string_view>> kLayout = {
    {"kubelet", {"root_dir"}},
    {"match", {"fs_types", "source_prefixes"}},
    {"heal", {"strategy", "read_write", "namespaces", "safety_scan_interval", "probe_timeout", "abort_hung_after",
              "restart_grace"}},
    {"state", {"dir"}},
    {"log", {"level"}},
    {"metrics", {"listen", "textfile"}},
    {"control", {"socket"}},
};

// The first invalid key or value. Thrown from the checks and caught in
// parse_config: the first error ends parsing, so each check stays one line.
struct Invalid {
    toml::source_position at;
    std::string message;
};

[[noreturn]] void fail(const toml::source_region& where, std::string message) {
    throw Invalid{where.begin, std::move(message)};
}

const char* type_name(toml::node_type type) {
    switch (type) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    case toml::node_type::none: break;
    }
    return "nothing";
}

std::string quoted(std::string_view s) {
    return '"' + std::string(s) + '"';
}

template <std::size_t N>
std::string join(const std::array<const char*, N>& names) {
    std::string out;
    for (const char* name : names) out += (out.empty() ? "" : ", ") + std::string(name);
    return out;
}

// One value from the file with the name an operator knows it by, e.g.
// "[heal] strategy". Each accessor returns the value or throws Invalid.
class Value {
public:
    Value(const toml::node& node, std::string label) : node_(node), label_(std::move(label)) {}

    // Throws "<label> must <rest>" at the value.
    [[noreturn]] void must(const std::string& rest) const {
        fail(node_.source(), label_ + " must " + rest);
    }

    // Returns the string; `what` describes the expected value for a type error.
    std::string string(const std::string& what) const {
        if (const auto* s = node_.as_string()) return s->get();
        expected(what);
    }

    // Returns the boolean.
    bool boolean() const {
        if (const auto* b = node_.as_boolean()) return b->get();
        expected("a boolean (true or false)");
    }

    // Returns the enum value named by one of `names` (indexed by value).
    template <typename E, std::size_t N>
    E one_of(const std::array<const char*, N>& names) const {
        const std::string s = string("a string (one of " + join(names) + ")");
        const auto it = std::find(names.begin(), names.end(), s);
        if (it == names.end()) must("be one of " + join(names) + ", got " + quoted(s));
        return static_cast<E>(it - names.begin());
    }

    // Returns the path without trailing slashes. It must be absolute and
    // canonical, because mountinfo paths are compared with it as strings.
    std::string path() const {
        const std::string text = string("an absolute path string");
        if (text.empty() || text.front() != '/') must("be an absolute path, got " + quoted(text));
        std::string p = text;
        while (p.size() > 1 && p.back() == '/') p.pop_back();
        for (std::size_t start = 1; start < p.size();) {
            const std::size_t end = std::min(p.find('/', start), p.size());
            const std::string_view part = std::string_view(p).substr(start, end - start);
            if (part.empty() || part == "." || part == "..") {
                must("not contain empty, \".\" or \"..\" components, got " + quoted(text));
            }
            start = end + 1;
        }
        return p;
    }

    // Returns the duration; `example` shows the expected form in errors.
    std::chrono::microseconds duration(std::string_view example) const {
        const std::string text = string("a duration string such as " + quoted(example));
        if (const auto d = parse_duration(text)) return *d;
        must("be a whole number followed by one of us, ms, s, m, h, such as " + quoted(example) +
             ", got " + quoted(text));
    }

    // Returns the array's elements, labelled "<label>[i]".
    std::vector<Value> elements() const {
        const auto* array = node_.as_array();
        if (array == nullptr) expected("an array of strings");
        std::vector<Value> out;
        for (std::size_t i = 0; i < array->size(); ++i) {
            out.emplace_back((*array)[i], label_ + "[" + std::to_string(i) + "]");
        }
        return out;
    }

private:
    [[noreturn]] void expected(const std::string& what) const {
        fail(node_.source(), label_ + ": expected " + what + ", got " + type_name(node_.type()));
    }

    const toml::node& node_;
    std::string label_;
};

// Rejects tables and keys outside kLayout, and sections that are not tables.
void check_layout(const toml::table& root) {
    for (const auto& [name, node] : root) {
        const auto section = kLayout.find(name.str());
        if (section == kLayout.end()) {
            fail(name.source(), node.is_table()
                                    ? "unknown table [" + std::string(name.str()) + "]"
                                    : "unknown key " + quoted(name.str()) + " outside any table");
        }
        const toml::table* table = node.as_table();
        if (table == nullptr) {
            fail(node.source(), quoted(name.str()) + " must be a table, got " + type_name(node.type()));
        }
        for (const auto& [key, value] : *table) {
            const std::vector<std::string_view>& keys = section->second;
            if (std::find(keys.begin(), keys.end(), key.str()) != keys.end()) continue;
            fail(key.source(),
                 value.is_table()
                     ? "unknown table [" + std::string(name.str()) + "." + std::string(key.str()) + "]"
                     : "unknown key " + quoted(key.str()) + " in [" + std::string(name.str()) + "]");
        }
    }
}

// Returns [section] key, or nullopt when the file leaves it at its default.
std::optional<Value> lookup(const toml::table& root, std::string_view section, std::string_view key) {
    const toml::node* node = root[section][key].node();
    if (node == nullptr) return std::nullopt;
    return Value(*node, "[" + std::string(section) + "] " + std::string(key));
}

Config build(const toml::table& root) {
    check_layout(root);
    Config c;

    if (const auto v = lookup(root, "kubelet", "root_dir")) {
        c.match.root_dir = v->path();
        // Sources are told apart from targets by lying outside root_dir;
        // with "/" nothing would.
        if (c.match.root_dir == "/") v->must("not be \"/\"");
    }
    if (const auto v = lookup(root, "match", "fs_types")) {
        const std::vector<Value> globs = v->elements();
        // An empty list would silently match nothing, so nothing would heal.
        if (globs.empty()) v->must("not be empty");
        c.match.fs_types.clear();
        for (const Value& glob : globs) {
            std::string text = glob.string("a string");
            if (text.empty()) glob.must("not be empty");
            c.match.fs_types.push_back(std::move(text));
        }
    }
    if (const auto v = lookup(root, "match", "source_prefixes")) {
        for (const Value& prefix : v->elements()) c.match.source_prefixes.push_back(prefix.path());
    }

    if (const auto v = lookup(root, "heal", "strategy")) {
        c.strategy = v->one_of<StrategySetting>(kStrategyNames);
    }
    if (const auto v = lookup(root, "heal", "read_write")) c.read_write = v->boolean();
    if (const auto v = lookup(root, "heal", "namespaces")) c.namespaces = v->boolean();
    if (const auto v = lookup(root, "heal", "safety_scan_interval")) {
        c.safety_scan_interval = v->duration("30s");
        // Each scan rereads every mount table: below a second, a node with
        // many pods would spend its time scanning. (No 0us/1s literals in
        // these comparisons: cppcheck 2.10 aborts on them, docs/ANALYSIS.md.)
        if (c.safety_scan_interval != kNoInterval && c.safety_scan_interval < kOneSecond) {
            v->must("be at least 1s, or \"0s\" to disable it, got " +
                    quoted(format_duration(c.safety_scan_interval)));
        }
    }
    if (const auto v = lookup(root, "heal", "probe_timeout")) {
        c.probe_timeout = v->duration("2s");
        // A zero timeout would find every FUSE daemon hung.
        if (c.probe_timeout == kNoInterval) v->must("be greater than 0s");
    }
    if (const auto v = lookup(root, "heal", "abort_hung_after")) {
        c.abort_hung_after = v->duration("5m");
        // Aborting kills every request in flight: below a second, a daemon
        // that is merely slow would be killed by a hiccup.
        if (c.abort_hung_after != kNoInterval && c.abort_hung_after < kOneSecond) {
            v->must("be at least 1s, or \"0s\" to disable it, got " + quoted(format_duration(c.abort_hung_after)));
        }
    }
    if (const auto v = lookup(root, "heal", "restart_grace")) {
        c.restart_grace = v->duration("50ms");
        // Every other event's full step waits out the grace too: longer
        // than this, a death no supervisor answers would hold up the node's
        // other heals noticeably.
        if (c.restart_grace > kMaxRestartGrace) {
            v->must("be at most " + format_duration(kMaxRestartGrace) + ", or \"0s\" to disable it, got " +
                    quoted(format_duration(c.restart_grace)));
        }
    }

    if (const auto v = lookup(root, "state", "dir")) c.state_dir = v->path();
    if (const auto v = lookup(root, "log", "level")) c.log_level = v->one_of<LogLevel>(kLogLevelNames);

    if (const auto v = lookup(root, "metrics", "listen")) {
        c.metrics.listen = v->string("a string such as \"127.0.0.1:9766\" (\"\" to disable)");
        if (!c.metrics.listen.empty()) {
            const Result<ListenAddress> address = parse_listen_address(c.metrics.listen);
            if (!address) v->must(address.error().detail);
        }
    }
    if (const auto v = lookup(root, "metrics", "textfile")) {
        // "" is the default (off); anything else is a path.
        if (!v->string("an absolute path string (\"\" to disable)").empty()) {
            c.metrics.textfile = v->path();
            // node_exporter's textfile collector reads *.prom files only: any
            // other name would be written for nobody.
            const std::string name = c.metrics.textfile.substr(c.metrics.textfile.rfind('/') + 1);
            if (name.size() <= 5 || !name.ends_with(".prom"))
                v->must("name a file ending in \".prom\" (node_exporter reads no other), got " +
                        quoted(c.metrics.textfile));
        }
    }
    if (const auto v = lookup(root, "control", "socket")) {
        // Empty turns the control socket off (fuse-healerctl then cannot reach the daemon).
        if (v->string("a path string (empty to disable the control socket)").empty()) {
            c.control_socket.clear();
        } else {
            c.control_socket = v->path();
            if (c.control_socket == "/") v->must("name a socket file, got \"/\"");
            // bind(2) takes the path in sockaddr_un.sun_path, NUL included;
            // a longer one would be cut short, silently, by libuv.
            constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;
            if (c.control_socket.size() > kMaxSocketPath) {
                v->must("be at most " + std::to_string(kMaxSocketPath) +
                        " bytes long (the limit of a unix socket path), got " +
                        std::to_string(c.control_socket.size()));
            }
        }
    }
    return c;
}

// Returns the whole file, or the errno of the failed open or read.
Result<std::string> read_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_error("open", path);
    std::string text;
    char buf[8192];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            text.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0) {
            break;
        } else if (errno != EINTR) {
            Error error = errno_error("read", path);
            ::close(fd);
            return error;
        }
    }
    ::close(fd);
    return text;
}

} // namespace

const char* to_string(StrategySetting s) {
    return kStrategyNames[static_cast<std::size_t>(s)];
}

const char* to_string(LogLevel l) {
    return kLogLevelNames[static_cast<std::size_t>(l)];
}

std::string ConfigError::to_string() const {
    std::string out = file;
    if (line > 0) {
        out += ":" + std::to_string(line);
        if (column > 0) out += ":" + std::to_string(column);
    }
    return out + ": " + message;
}

ConfigResult parse_config(const std::string& text, const std::string& file) {
    try {
        return build(toml::parse(text, file));
    } catch (const toml::parse_error& e) {
        const toml::source_position at = e.source().begin;
        return ConfigError{file, static_cast<int>(at.line), static_cast<int>(at.column),
                           "invalid TOML: " + std::string(e.description())};
    } catch (const Invalid& e) {
        return ConfigError{file, static_cast<int>(e.at.line), static_cast<int>(e.at.column), e.message};
    }
}

ConfigResult load_config(const std::string& path, bool missing_means_defaults) {
    const Result<std::string> text = read_file(path);
    if (!text) {
        if (text.error().err == ENOENT && missing_means_defaults) return Config{};
        return ConfigError{path, 0, 0,
                           std::string("cannot read config file: ") + std::strerror(text.error().err)};
    }
    ConfigResult result = parse_config(*text, path);
    if (auto* config = std::get_if<Config>(&result)) config->loaded_from = path;
    return result;
}

} // namespace fh
