#include "core/fuse_servers.h"

#include <sys/sysmacros.h>

#include <charconv>
#include <sstream>

namespace fh {

namespace {

constexpr std::string_view kConnectionKey = "fuse_connection:";

// Returns the leading unsigned number of `s` after spaces and tabs, or
// nullopt when there is none or it overflows.
template <typename T>
std::optional<T> leading_number(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    T value{};
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc() || ptr == s.data()) return std::nullopt;
    return value;
}

} // namespace

std::optional<std::uint32_t> parse_fuse_fdinfo(std::string_view text) {
    // fdinfo is "key:\tvalue" lines; the generic ones (pos, flags, mnt_id,
    // ino) come first, then the file type's own.
    while (!text.empty()) {
        const std::size_t end = text.find('\n');
        std::string_view line = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
        if (line.substr(0, kConnectionKey.size()) != kConnectionKey) continue;
        line.remove_prefix(kConnectionKey.size());
        const std::size_t start = line.find_first_not_of(" \t");
        if (start == std::string_view::npos) return std::nullopt;
        line.remove_prefix(start);
        std::uint32_t id = 0;
        const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), id);
        if (ec != std::errc() || ptr == line.data()) return std::nullopt;
        // Nothing but blanks may follow: "40x" is not a connection.
        const std::string_view rest(ptr, static_cast<std::size_t>(line.data() + line.size() - ptr));
        if (rest.find_first_not_of(" \t\r") != std::string_view::npos) return std::nullopt;
        return id;
    }
    return std::nullopt;
}

std::optional<std::uint32_t> parse_fuse_fdinfo(std::istream& in) {
    std::ostringstream ss;
    ss << in.rdbuf();
    return parse_fuse_fdinfo(std::string_view(ss.str()));
}

dev_t connection_device(std::uint32_t id) {
    // The kernel's internal dev_t: MINORBITS = 20.
    return ::makedev(id >> 20, id & 0xfffffU);
}

std::uint32_t connection_id(dev_t device) {
    return static_cast<std::uint32_t>((::major(device) << 20) | (::minor(device) & 0xfffffU));
}

std::set<int> servers_to_watch(const ServerMap& servers, const std::set<dev_t>& wanted) {
    std::set<int> out;
    for (const auto& [pid, s] : servers)
        for (dev_t c : s.connections)
            if (wanted.count(c)) {
                out.insert(pid);
                break;
            }
    return out;
}

std::vector<dev_t> connections_orphaned_by(const ServerMap& servers, int pid) {
    std::vector<dev_t> out;
    const auto it = servers.find(pid);
    if (it == servers.end()) return out;
    for (dev_t c : it->second.connections) {
        bool other = false;
        for (const auto& [p, s] : servers)
            if (p != pid && s.connections.count(c)) {
                other = true;
                break;
            }
        if (!other) out.push_back(c);
    }
    return out;
}

std::set<dev_t> connections_to_scan(const std::set<dev_t>& wanted, const std::set<dev_t>& scanned) {
    std::set<dev_t> out;
    for (dev_t d : wanted)
        if (!scanned.count(d)) out.insert(d);
    return out;
}

const char* to_string(FdinfoSupport s) {
    switch (s) {
    case FdinfoSupport::Unknown: return "unknown";
    case FdinfoSupport::Yes: return "yes";
    case FdinfoSupport::No: return "no";
    }
    return "unknown";
}

bool kernel_release_has_fuse_fdinfo(std::string_view release) {
    const auto major = leading_number<int>(release);
    if (!major) return false;
    const std::size_t dot = release.find('.');
    if (dot == std::string_view::npos) return *major > 6;
    const auto minor = leading_number<int>(release.substr(dot + 1));
    if (!minor) return *major > 6;
    return *major > 6 || (*major == 6 && *minor >= 16);
}

FdinfoSupport judge_fdinfo_support(FdinfoSupport current, const FdinfoEvidence& evidence,
                                   std::size_t wanted_connections) {
    if (current == FdinfoSupport::Yes || evidence.with_connection > 0) return FdinfoSupport::Yes;
    if (evidence.dev_fuse_files > 0 && wanted_connections > 0) return FdinfoSupport::No;
    return current;
}

} // namespace fh
