// The state file: {"version":1,"origins":[{...}, ...]}, one object per target.
#include "core/state_codec.h"

#include <exception>

#include <nlohmann/json.hpp>

namespace fh {
namespace {

using nlohmann::json;

constexpr int kStateVersion = 1;

// JSON strings are Unicode, Linux paths are bytes: a string that is not valid
// UTF-8 cannot be stored without loss.
bool is_valid_utf8(const std::string& s) {
    try {
        (void)json(s).dump();  // throws type_error 316 on invalid UTF-8
        return true;
    } catch (const json::type_error&) {
        return false;
    }
}

bool storable(const std::string& target, const Origin& o) {
    return is_valid_utf8(target) && is_valid_utf8(o.source_path) && is_valid_utf8(o.root) &&
           is_valid_utf8(o.fstype) && is_valid_utf8(o.source);
}

Error decode_error(std::string detail) {
    return Error{"decode state", {}, 0, std::move(detail)};
}

// Field readers: each returns "" on success, else why the field is unusable.
std::string get_string(const json& obj, const char* key, const std::string& where,
                       std::string& out) {
    auto it = obj.find(key);
    if (it == obj.end()) return where + "." + key + ": missing";
    if (!it->is_string()) return where + "." + key + ": not a string";
    out = it->get<std::string>();
    return {};
}

std::string get_path(const json& obj, const char* key, const std::string& where,
                     std::string& out) {
    if (auto why = get_string(obj, key, where, out); !why.empty()) return why;
    if (out.empty() || out.front() != '/') return where + "." + key + ": not an absolute path";
    // "\u0000" decodes fine but no path holds a NUL byte.
    if (out.find('\0') != std::string::npos) return where + "." + key + ": contains a NUL byte";
    return {};
}

std::string get_bool(const json& obj, const char* key, const std::string& where, bool& out) {
    auto it = obj.find(key);
    if (it == obj.end()) return where + "." + key + ": missing";
    if (!it->is_boolean()) return where + "." + key + ": not a boolean";
    out = it->get<bool>();
    return {};
}

// get_path, and the path must be normalized: the daemon writes target and
// source paths as the kernel prints mountpoints, so "..", "." or "//" mean
// the file was edited, and such a path is not one the kernel shows (a target
// would never match; a source would resolve elsewhere). (A root may end in
// "//deleted", see core/mountinfo.h; it is never cloned from: the stale
// mount's own root is.)
std::string get_mountpoint(const json& obj, const char* key, const std::string& where, std::string& out) {
    if (auto why = get_path(obj, key, where, out); !why.empty()) return why;
    if (!is_normalized_path(out)) return where + "." + key + ": not a normalized absolute path: " + out;
    return {};
}

// Reads one element of "origins" into `target` and `o`.
std::string decode_origin(const json& j, const std::string& where, std::string& target,
                          Origin& o) {
    if (!j.is_object()) return where + ": not an object";
    for (auto why : {get_mountpoint(j, "target", where, target),
                     get_mountpoint(j, "source_path", where, o.source_path),
                     get_path(j, "root", where, o.root),
                     get_string(j, "fstype", where, o.fstype),
                     get_string(j, "source", where, o.source)})
        if (!why.empty()) return why;
    auto flags = j.find("flags");
    if (flags == j.end()) return where + ".flags: missing";
    if (!flags->is_object()) return where + ".flags: not an object";
    const std::string fw = where + ".flags";
    for (auto why : {get_bool(*flags, "read_only", fw, o.flags.read_only),
                     get_bool(*flags, "nosuid", fw, o.flags.nosuid),
                     get_bool(*flags, "nodev", fw, o.flags.nodev),
                     get_bool(*flags, "noexec", fw, o.flags.noexec)})
        if (!why.empty()) return why;
    return {};
}

Result<OriginMap> decode(const std::string& text) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for "1e999"
        return decode_error(std::string("bad JSON: ") + e.what());
    }
    if (!doc.is_object()) return decode_error("not a JSON object");
    auto version = doc.find("version");
    if (version == doc.end()) return decode_error("version: missing");
    if (!version->is_number_integer()) return decode_error("version: not an integer");
    if (version->get<long long>() != kStateVersion)
        return decode_error("version " + version->dump() + " is not " +
                            std::to_string(kStateVersion));
    auto list = doc.find("origins");
    if (list == doc.end()) return decode_error("origins: missing");
    if (!list->is_array()) return decode_error("origins: not an array");

    OriginMap origins;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string where = "origins[" + std::to_string(i) + "]";
        std::string target;
        Origin o;
        if (auto why = decode_origin((*list)[i], where, target, o); !why.empty())
            return decode_error(why);
        // Two origins for one target: the file is not one we wrote.
        if (!origins.emplace(target, std::move(o)).second)
            return decode_error(where + ".target: duplicate " + target);
    }
    return origins;
}

} // namespace

// An origin whose strings are not valid UTF-8 is left out rather than stored
// altered: after a restart the daemon then learns it again from the table
// (as for any target it never saw), instead of cloning a wrong path.
std::string encode_origins(const OriginMap& origins) {
    // ordered_json keeps the fields in this order, for people reading the file.
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& [target, o] : origins) {
        if (!storable(target, o)) continue;
        list.push_back({
            {"target", target},
            {"source_path", o.source_path},
            {"root", o.root},
            {"fstype", o.fstype},
            {"source", o.source},
            {"flags",
             {{"read_only", o.flags.read_only},
              {"nosuid", o.flags.nosuid},
              {"nodev", o.flags.nodev},
              {"noexec", o.flags.noexec}}},
        });
    }
    nlohmann::ordered_json doc = {{"version", kStateVersion}, {"origins", std::move(list)}};
    return doc.dump(2) + "\n";
}

Result<OriginMap> decode_origins(const std::string& text) {
    // The checks above leave nothing to throw but allocation; callers are
    // promised an Error, never an exception.
    try {
        return decode(text);
    } catch (const std::exception& e) {
        return decode_error(e.what());
    }
}

} // namespace fh
