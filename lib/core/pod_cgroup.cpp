#include "core/pod_cgroup.h"

#include <cctype>

namespace fh {

namespace {

// Returns `s` as a pod UID ('_' read as '-', the systemd driver's escape),
// or "" when it is not one: 8-4-4-4-12 hex digits, or 32 hex digits.
std::string as_pod_uid(std::string_view s) {
    std::string uid(s);
    for (char& c : uid)
        if (c == '_') c = '-';
    const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    if (uid.size() == 32) {
        for (char c : uid)
            if (!hex(c)) return "";
        return uid;
    }
    if (uid.size() != 36) return "";
    for (std::size_t i = 0; i < uid.size(); ++i) {
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? uid[i] != '-' : !hex(uid[i])) return "";
    }
    return uid;
}

// Returns the pod UID a cgroup directory name carries: "pod<uid>"
// (cgroupfs) or "kubepods[-<qos>]-pod<uid>.slice" (systemd), else "".
std::string pod_uid_of_component(std::string_view name) {
    constexpr std::string_view kSlice = ".slice";
    if (name.size() > kSlice.size() && name.substr(name.size() - kSlice.size()) == kSlice) {
        name.remove_suffix(kSlice.size());
        if (name.substr(0, 8) != "kubepods") return "";
        const auto at = name.rfind("-pod");
        return at == std::string_view::npos ? "" : as_pod_uid(name.substr(at + 4));
    }
    return name.substr(0, 3) == "pod" ? as_pod_uid(name.substr(3)) : "";
}

} // namespace

std::string pod_uid_from_cgroup(std::string_view cgroup_file) {
    std::string found;
    while (!cgroup_file.empty()) {
        const auto eol = cgroup_file.find('\n');
        std::string_view line = cgroup_file.substr(0, eol);
        cgroup_file.remove_prefix(eol == std::string_view::npos ? cgroup_file.size() : eol + 1);
        // "id:controllers:path"; the path may itself hold ':'.
        const auto c1 = line.find(':');
        const auto c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) continue;
        std::string_view path = line.substr(c2 + 1);
        std::string here;
        while (!path.empty()) {
            const auto slash = path.find('/');
            const std::string_view name = path.substr(0, slash);
            path.remove_prefix(slash == std::string_view::npos ? path.size() : slash + 1);
            if (std::string uid = pod_uid_of_component(name); !uid.empty()) here = std::move(uid);
        }
        if (here.empty()) continue;
        if (!found.empty() && found != here) return "";
        found = std::move(here);
    }
    return found;
}

} // namespace fh
