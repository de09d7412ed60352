#include "core/control_protocol.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <initializer_list>
#include <limits>

#include <nlohmann/json.hpp>

namespace fh {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Indexed by the enums' values.
constexpr std::array<const char*, 2> kCommandNames{"status", "heal"};
constexpr std::array<const char*, 8> kErrorCodeNames{"bad-request",       "unknown-command", "request-too-large",
                                                     "permission-denied", "busy",            "unknown-target",
                                                     "timeout",           "internal"};

// Returns one JSON line. Paths are bytes, JSON strings are Unicode: a byte
// sequence that is not UTF-8 becomes U+FFFD rather than an exception that
// would leave the client without an answer.
template <typename Json>
std::string dump_line(const Json& doc) {
    return doc.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

// Returns `s` as a JSON string literal for error messages, cut to 80
// characters so that a huge value does not come back whole.
std::string json_quoted(std::string_view s) {
    constexpr std::size_t kMax = 80;
    std::string text(s.substr(0, kMax));
    if (s.size() > kMax) text += "...";
    return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

ControlError bad_request(std::string message) {
    return ControlError{ControlErrorCode::BadRequest, std::move(message)};
}

// nlohmann's what() starts with "[json.exception.parse_error.101] ": the
// rest says where and why, which is what a client needs.
std::string without_exception_id(const std::string& what) {
    if (what.rfind("[json.exception.", 0) == 0) {
        const auto end = what.find("] ");
        if (end != std::string::npos) return what.substr(end + 2);
    }
    return what;
}

// Escapes control characters and the backslash (and the space when
// `escape_space`) as \ooo octal, as /proc/self/mountinfo does.
std::string escape_text(std::string_view text, bool escape_space) {
    std::string out;
    out.reserve(text.size());
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f || c == '\\' || (escape_space && c == ' ')) {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\%03o", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out;
}

// Returns the width of UTF-8 text in a terminal, counting one column per
// code point (continuation bytes take none); close enough for names.
std::size_t display_width(const std::string& s) {
    return static_cast<std::size_t>(
        std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// Field readers for responses: each returns "" on success, else why the
// field is unusable ("<where>.<key>: ..."). A missing key is an error.
class Fields {
public:
    Fields(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

    std::string string(const char* key, std::string& out) const {
        const json* v = find(key);
        if (v == nullptr) return missing(key);
        if (!v->is_string()) return wrong(key, "a string", *v);
        out = v->get<std::string>();
        return {};
    }

    template <typename Int>
    std::string integer(const char* key, Int& out) const {
        const json* v = find(key);
        if (v == nullptr) return missing(key);
        if (!v->is_number_integer()) return wrong(key, "an integer", *v);
        // get<Int>() would wrap a number out of Int's range silently (heals
        // 4294967298 read as 2): such an answer is malformed.
        using Limits = std::numeric_limits<Int>;
        const bool fits = v->is_number_unsigned()
                              ? v->template get<std::uint64_t>() <= static_cast<std::uint64_t>(Limits::max())
                              : v->template get<std::int64_t>() >= static_cast<std::int64_t>(Limits::min());
        if (!fits)
            return where_ + "." + key + ": expected an integer from " + std::to_string(Limits::min()) + " to " +
                   std::to_string(Limits::max()) + ", got " + v->dump();
        out = v->get<Int>();
        return {};
    }

private:
    const json* find(const char* key) const {
        const auto it = obj_.find(key);
        return it == obj_.end() ? nullptr : &*it;
    }
    std::string missing(const char* key) const { return where_ + "." + key + ": missing"; }
    std::string wrong(const char* key, const char* what, const json& v) const {
        return where_ + "." + key + ": expected " + what + ", got " + v.type_name();
    }

    const json& obj_;
    std::string where_;
};

// Returns the first non-empty reason of `reasons`, or "".
std::string first_error(std::initializer_list<std::string> reasons) {
    for (const auto& r : reasons)
        if (!r.empty()) return r;
    return {};
}

std::string decode_target(const json& j, const std::string& where, ControlTarget& t) {
    if (!j.is_object()) return where + ": expected an object, got " + j.type_name();
    const Fields f(j, where);
    return first_error({f.string("target", t.target), f.string("pod_uid", t.pod_uid), f.string("volume", t.volume),
                        f.string("driver", t.driver), f.string("volume_handle", t.volume_handle),
                        f.string("kind", t.kind), f.string("fstype", t.fstype), f.string("state", t.state),
                        f.string("reason", t.reason), f.integer("heals", t.heals),
                        f.integer("last_outage_us", t.last_outage_us)});
}

// "degraded" is optional: daemons before it was added do not send it.
std::string decode_degraded(const json& j, ControlDaemonSummary& d) {
    const auto it = j.find("degraded");
    if (it == j.end()) return {};
    if (!it->is_array()) return std::string("daemon.degraded: expected an array, got ") + it->type_name();
    for (const json& e : *it) {
        if (!e.is_string()) return std::string("daemon.degraded: expected strings, got ") + e.type_name();
        d.degraded.push_back(e.get<std::string>());
    }
    return {};
}

std::string decode_daemon(const json& j, ControlDaemonSummary& d) {
    if (!j.is_object()) return std::string("daemon: expected an object, got ") + j.type_name();
    const Fields f(j, "daemon");
    // Fields added after the protocol's first version may be absent: a
    // fuse-healerctl reads the status of a daemon older than itself (a
    // package upgrade replaces the tool before the daemon restarts). Present,
    // they are checked like the others.
    const auto added_later = [&](const char* key, std::string reason) {
        return j.contains(key) ? std::move(reason) : std::string();
    };
    return first_error({f.string("version", d.version), f.integer("pid", d.pid), f.string("strategy", d.strategy),
                        f.string("detection", d.detection), f.string("kernel", d.kernel_features),
                        f.integer("targets", d.targets), f.integer("broken", d.broken), f.integer("heals", d.heals),
                        f.integer("mount_events", d.mount_events), f.integer("reconciles", d.reconciles),
                        f.integer("reconcile_running_us", d.reconcile_running_us),
                        added_later("mount_tracking", f.string("mount_tracking", d.mount_tracking)),
                        added_later("unrelated_mount_events",
                                    f.integer("unrelated_mount_events", d.unrelated_mount_events)),
                        decode_degraded(j, d)});
}

ordered_json target_json(const ControlTarget& t) {
    return ordered_json{{"target", t.target},
                        {"pod_uid", t.pod_uid},
                        {"volume", t.volume},
                        {"driver", t.driver},
                        {"volume_handle", t.volume_handle},
                        {"kind", t.kind},
                        {"fstype", t.fstype},
                        {"state", t.state},
                        {"reason", t.reason},
                        {"heals", t.heals},
                        {"last_outage_us", t.last_outage_us}};
}

Error response_error(std::string detail) {
    return Error{"parse control response", {}, 0, std::move(detail)};
}

} // namespace

const char* to_string(ControlCommand c) {
    return kCommandNames[static_cast<std::size_t>(c)];
}

const char* to_string(ControlErrorCode c) {
    return kErrorCodeNames[static_cast<std::size_t>(c)];
}

std::optional<ControlErrorCode> control_error_code_from(std::string_view name) {
    const auto it = std::find(kErrorCodeNames.begin(), kErrorCodeNames.end(), name);
    if (it == kErrorCodeNames.end()) return std::nullopt;
    return static_cast<ControlErrorCode>(it - kErrorCodeNames.begin());
}

std::variant<ControlRequest, ControlError> parse_control_request(std::string_view line) {
    // `nc` and `socat` users may send CRLF.
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxControlRequestBytes)
        return ControlError{ControlErrorCode::RequestTooLarge,
                            "request of " + std::to_string(line.size()) + " bytes is longer than the limit of " +
                                std::to_string(kMaxControlRequestBytes) + " bytes"};
    if (line.find_first_not_of(" \t") == std::string_view::npos)
        return bad_request("empty request: expected a JSON object such as {\"command\":\"status\"}");
    json doc;
    try {
        doc = json::parse(line);
    } catch (const json::exception& e) {
        // Not only parse_error: a number beyond a double ("1e999") throws
        // out_of_range, which would leave the loop and end the daemon.
        return bad_request("invalid JSON: " + without_exception_id(e.what()));
    }
    if (!doc.is_object())
        return bad_request(std::string("a request must be a JSON object such as {\"command\":\"status\"}, got ") +
                           doc.type_name());

    const auto command = doc.find("command");
    if (command == doc.end()) return bad_request("missing \"command\" (status or heal)");
    if (!command->is_string())
        return bad_request(std::string("\"command\" must be a string (status or heal), got ") +
                           command->type_name());
    const std::string name = command->get<std::string>();
    ControlRequest request;
    if (name == to_string(ControlCommand::Status)) {
        request.command = ControlCommand::Status;
    } else if (name == to_string(ControlCommand::Heal)) {
        request.command = ControlCommand::Heal;
    } else {
        return ControlError{ControlErrorCode::UnknownCommand,
                            "unknown command " + json_quoted(name) + ": expected status or heal"};
    }

    for (const auto& [key, value] : doc.items()) {
        if (key == "command" || (request.command == ControlCommand::Heal && key == "target")) continue;
        return bad_request("unknown key " + json_quoted(key) + " in a " + name + " request");
    }
    if (request.command == ControlCommand::Heal) {
        const auto target = doc.find("target");
        if (target == doc.end()) return bad_request("heal needs \"target\": the absolute path of a target");
        if (!target->is_string())
            return bad_request(std::string("\"target\" must be a string (an absolute path), got ") +
                               target->type_name());
        std::string path = target->get<std::string>();
        if (path.empty() || path.front() != '/')
            return bad_request("\"target\" must be an absolute path, got " + json_quoted(path));
        // "\u0000" decodes fine, but no path holds a NUL byte.
        if (path.find('\0') != std::string::npos) return bad_request("\"target\" contains a NUL byte");
        // Targets are compared as strings with mountinfo paths, which have none.
        while (path.size() > 1 && path.back() == '/') path.pop_back();
        request.target = std::move(path);
    }
    return request;
}

std::string encode_control_request(const ControlRequest& request) {
    ordered_json doc{{"command", to_string(request.command)}};
    if (request.command == ControlCommand::Heal) doc["target"] = request.target;
    return dump_line(doc);
}

std::string encode_status_response(const ControlDaemonSummary& d, const std::vector<ControlTarget>& targets) {
    const ordered_json daemon{{"version", d.version},
                              {"pid", d.pid},
                              {"strategy", d.strategy},
                              {"detection", d.detection},
                              {"kernel", d.kernel_features},
                              {"targets", d.targets},
                              {"broken", d.broken},
                              {"heals", d.heals},
                              {"mount_events", d.mount_events},
                              {"reconciles", d.reconciles},
                              {"reconcile_running_us", d.reconcile_running_us},
                              {"mount_tracking", d.mount_tracking},
                              {"unrelated_mount_events", d.unrelated_mount_events},
                              {"degraded", d.degraded}};
    // The targets are dumped one at a time into the text, not gathered into
    // one document first: at 2,000 targets that document held ~4 MiB of
    // heap (each object a vector of key/value nodes) besides the ~1 MiB of
    // text, all of it at once in the daemon's peak RSS (measured with
    // heaptrack in scale_bench). The text is the same as dump_line's.
    std::string text = ordered_json{{"ok", true}, {"daemon", daemon}}.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
    text.pop_back();  // the closing '}', put back after the targets
    text += ",\"targets\":[";
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (i != 0) text += ',';
        text += target_json(targets[i]).dump(-1, ' ', false, ordered_json::error_handler_t::replace);
    }
    text += "]}\n";
    return text;
}

std::string encode_heal_response(const ControlTarget& target) {
    return dump_line(ordered_json{{"ok", true}, {"target", target_json(target)}});
}

std::string encode_error_response(const ControlError& error) {
    return dump_line(
        ordered_json{{"ok", false}, {"error", ordered_json{{"code", to_string(error.code)}, {"message", error.message}}}});
}

Result<ControlResponse> parse_control_response(std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    json doc;
    try {
        doc = json::parse(line);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for "1e999"
        return response_error("invalid JSON: " + without_exception_id(e.what()));
    }
    if (!doc.is_object()) return response_error(std::string("expected a JSON object, got ") + doc.type_name());
    const auto ok = doc.find("ok");
    if (ok == doc.end()) return response_error("ok: missing");
    if (!ok->is_boolean()) return response_error(std::string("ok: expected a boolean, got ") + ok->type_name());

    ControlResponse response;
    if (!ok->get<bool>()) {
        const auto error = doc.find("error");
        if (error == doc.end()) return response_error("error: missing");
        if (!error->is_object())
            return response_error(std::string("error: expected an object, got ") + error->type_name());
        std::string code, message;
        const Fields f(*error, "error");
        if (auto why = first_error({f.string("code", code), f.string("message", message)}); !why.empty())
            return response_error(why);
        // A code this client does not know (from a newer daemon) still
        // carries its message.
        response.error = ControlError{control_error_code_from(code).value_or(ControlErrorCode::Internal), message};
        return response;
    }

    const auto targets = doc.find("targets");
    const auto target = doc.find("target");
    if (targets != doc.end()) {
        const auto daemon = doc.find("daemon");
        if (daemon == doc.end()) return response_error("daemon: missing");
        ControlDaemonSummary summary;
        if (auto why = decode_daemon(*daemon, summary); !why.empty()) return response_error(why);
        response.daemon = summary;
        if (!targets->is_array())
            return response_error(std::string("targets: expected an array, got ") + targets->type_name());
        for (std::size_t i = 0; i < targets->size(); ++i) {
            ControlTarget t;
            if (auto why = decode_target((*targets)[i], "targets[" + std::to_string(i) + "]", t); !why.empty())
                return response_error(why);
            response.targets.push_back(std::move(t));
        }
        return response;
    }
    if (target != doc.end()) {
        ControlTarget t;
        if (auto why = decode_target(*target, "target", t); !why.empty()) return response_error(why);
        response.target = std::move(t);
        return response;
    }
    return response_error("neither \"targets\" (a status answer) nor \"target\" (a heal answer)");
}

std::string escape_control_cell(std::string_view text) {
    if (text.empty()) return "-";
    return escape_text(text, true);
}

std::string format_outage(std::int64_t us) {
    char buf[32];
    if (us <= 0) return "-";
    if (us < 1000) return std::to_string(us) + "us";
    // Each unit is chosen on the rounded value, so that 999.96 ms reads
    // "1.00s", not "1000.0ms". The rounding is done unsigned: near
    // INT64_MAX (any number an answer may carry) "+ 50" would overflow.
    const auto u = static_cast<std::uint64_t>(us);
    const auto tenths_of_ms = static_cast<std::int64_t>((u + 50) / 100);
    if (tenths_of_ms < 10000) {
        std::snprintf(buf, sizeof buf, "%lld.%lldms", static_cast<long long>(tenths_of_ms / 10),
                      static_cast<long long>(tenths_of_ms % 10));
        return buf;
    }
    const auto centis = static_cast<std::int64_t>((u + 5000) / 10000);
    if (centis < 6000) {
        std::snprintf(buf, sizeof buf, "%lld.%02llds", static_cast<long long>(centis / 100),
                      static_cast<long long>(centis % 100));
        return buf;
    }
    const auto seconds = static_cast<std::int64_t>((u + 500000) / 1000000);
    if (seconds < 3600) {
        std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(seconds / 60),
                      static_cast<long long>(seconds % 60));
        return buf;
    }
    const std::int64_t minutes = (seconds + 30) / 60;
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(minutes / 60),
                  static_cast<long long>(minutes % 60));
    return buf;
}

std::string render_status_table(const ControlDaemonSummary& d, const std::vector<ControlTarget>& targets) {
    std::string out = "fuse-healerd " + escape_text(d.version, false) + ", pid " + std::to_string(d.pid) +
                      ": strategy " + escape_text(d.strategy, false) + ", detection " +
                      escape_text(d.detection, false) + ", mount tracking " +
                      (d.mount_tracking.empty() ? std::string("not reported (an older daemon)")
                                                : escape_text(d.mount_tracking, false)) +
                      "\n";
    out += "kernel: " + escape_text(d.kernel_features, false) + "\n";
    out += "targets: " + std::to_string(d.targets) + " tracked, " + std::to_string(d.broken) + " broken; " +
           std::to_string(d.heals) + " healed since start; " + std::to_string(d.mount_events) + " mount events" +
           (d.mount_tracking.empty() ? std::string() : " (" + std::to_string(d.unrelated_mount_events) + " unrelated)") +
           ", " + std::to_string(d.reconciles) + " reconciles";
    if (d.reconcile_running_us > 0) out += "; a reconcile has been running for " + format_outage(d.reconcile_running_us);
    out += "\n";
    for (const auto& why : d.degraded) out += "DEGRADED: " + escape_text(why, false) + "\n";
    out += "\n";
    if (targets.empty()) return out + "no targets tracked\n";

    using Row = std::array<std::string, 7>;
    std::vector<Row> rows{{"POD UID", "VOLUME", "TARGET", "FSTYPE", "STATE", "HEALS", "LAST OUTAGE"}};
    for (const auto& t : targets) {
        rows.push_back({escape_control_cell(t.pod_uid), escape_control_cell(t.volume), escape_control_cell(t.target),
                        escape_control_cell(t.fstype), escape_control_cell(t.state), std::to_string(t.heals),
                        format_outage(t.last_outage_us)});
    }
    std::array<std::size_t, 7> widths{};
    for (const Row& row : rows)
        for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], display_width(row[c]));
    for (const Row& row : rows) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) {
            line += row[c];
            if (c + 1 < row.size()) line += std::string(widths[c] - display_width(row[c]) + 2, ' ');
        }
        out += line + "\n";
    }
    return out;
}

std::string render_heal_result(const ControlTarget& t) {
    std::string out = escape_control_cell(t.target) + ": " + escape_text(t.state, false);
    if (!t.reason.empty()) out += ": " + escape_text(t.reason, false);
    return out + " (heals " + std::to_string(t.heals) + ", last outage " + format_outage(t.last_outage_us) + ")\n";
}

} // namespace fh
