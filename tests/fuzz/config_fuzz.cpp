// Fuzz target: the config loader (core/config.h, toml++), which reads
// /etc/fuse-healer/fuse-healer.toml at start and on every SIGHUP; a bad file
// must be refused with its place, never crash a running daemon.
//
// Invariants: no exception escapes; every error has a line and a column
// inside the text (errors carry file:line:column) and to_string() starts
// with "file:line:column: "; an accepted config satisfies every documented
// constraint, and written back as TOML (every key, explicitly) it parses to
// the same config.
#include <algorithm>
#include <sys/un.h>

#include "core/config.h"
#include "core/duration.h"
#include "core/listen_address.h"
#include "fuzz_check.h"

namespace {

using namespace std::chrono_literals;
using fh::fuzz::show;

const std::string kFile = "fuzz.toml";

// Returns `s` as a TOML basic string. Control characters as \uXXXX, the
// quote and the backslash escaped; other bytes as they are (toml++ took
// them, so they are valid UTF-8).
std::string toml_string(const std::string& s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04X", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

std::string toml_array(const std::vector<std::string>& items) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + toml_string(items[i]);
    return out + "]";
}

// Returns the config as a TOML file that sets every key.
std::string to_toml(const fh::Config& c) {
    return "[kubelet]\nroot_dir = " + toml_string(c.match.root_dir) +
           "\n[match]\nfs_types = " + toml_array(c.match.fs_types) +
           "\nsource_prefixes = " + toml_array(c.match.source_prefixes) +
           "\n[heal]\nstrategy = " + toml_string(fh::to_string(c.strategy)) +
           "\nread_write = " + (c.read_write ? "true" : "false") +
           "\nnamespaces = " + (c.namespaces ? "true" : "false") +
           "\nsafety_scan_interval = " + toml_string(fh::format_duration(c.safety_scan_interval)) +
           "\nprobe_timeout = " + toml_string(fh::format_duration(c.probe_timeout)) +
           "\nabort_hung_after = " + toml_string(fh::format_duration(c.abort_hung_after)) +
           "\nrestart_grace = " + toml_string(fh::format_duration(c.restart_grace)) +
           "\n[state]\ndir = " + toml_string(c.state_dir) +
           "\n[log]\nlevel = " + toml_string(fh::to_string(c.log_level)) +
           "\n[metrics]\nlisten = " + toml_string(c.metrics.listen) +
           "\ntextfile = " + toml_string(c.metrics.textfile) +
           "\n[control]\nsocket = " + toml_string(c.control_socket) + "\n";
}

bool same(const fh::Config& a, const fh::Config& b) {
    return a.match.root_dir == b.match.root_dir && a.match.fs_types == b.match.fs_types &&
           a.match.source_prefixes == b.match.source_prefixes && a.strategy == b.strategy &&
           a.read_write == b.read_write && a.namespaces == b.namespaces &&
           a.safety_scan_interval == b.safety_scan_interval && a.probe_timeout == b.probe_timeout &&
           a.abort_hung_after == b.abort_hung_after && a.restart_grace == b.restart_grace && a.state_dir == b.state_dir && a.log_level == b.log_level &&
           a.metrics.listen == b.metrics.listen && a.metrics.textfile == b.metrics.textfile &&
           a.control_socket == b.control_socket;
}

// An absolute path without trailing slashes or empty, "." or ".." parts.
bool canonical_path(const std::string& p) {
    if (p.empty() || p.front() != '/') return false;
    if (p == "/") return true;
    if (p.back() == '/') return false;
    for (std::size_t start = 1; start <= p.size();) {
        const std::size_t end = std::min(p.find('/', start), p.size());
        const std::string part = p.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

void check_constraints(const fh::Config& c, const std::string& text) {
    const std::string in = " in a config accepted from " + show(text);
    FH_FUZZ_CHECK(canonical_path(c.match.root_dir) && c.match.root_dir != "/", "root_dir " + show(c.match.root_dir) + in);
    FH_FUZZ_CHECK(!c.match.fs_types.empty(), "no fs_types" + in);
    for (const auto& g : c.match.fs_types) FH_FUZZ_CHECK(!g.empty(), "an empty fs_types glob" + in);
    for (const auto& p : c.match.source_prefixes) FH_FUZZ_CHECK(canonical_path(p), "source prefix " + show(p) + in);
    FH_FUZZ_CHECK(c.safety_scan_interval == 0us || c.safety_scan_interval >= 1s, "safety_scan_interval" + in);
    FH_FUZZ_CHECK(c.probe_timeout > 0us, "probe_timeout" + in);
    FH_FUZZ_CHECK(c.abort_hung_after == 0us || c.abort_hung_after >= 1s, "abort_hung_after" + in);
    FH_FUZZ_CHECK(c.restart_grace <= 5s, "restart_grace" + in);
    FH_FUZZ_CHECK(canonical_path(c.state_dir), "state dir " + show(c.state_dir) + in);
    if (!c.metrics.listen.empty())
        FH_FUZZ_CHECK(fh::parse_listen_address(c.metrics.listen).ok(), "listen " + show(c.metrics.listen) + in);
    if (!c.metrics.textfile.empty())
        FH_FUZZ_CHECK(canonical_path(c.metrics.textfile) && c.metrics.textfile.ends_with(".prom"),
                      "textfile " + show(c.metrics.textfile) + in);
    if (!c.control_socket.empty())
        FH_FUZZ_CHECK(canonical_path(c.control_socket) && c.control_socket != "/" &&
                          c.control_socket.size() < sizeof(sockaddr_un::sun_path),
                      "control socket " + show(c.control_socket) + in);
}

// Returns the number of lines of `text` as an editor counts them (a last
// line without its newline counts).
std::size_t line_count(const std::string& text) {
    return std::count(text.begin(), text.end(), '\n') + 1;
}

fh::ConfigResult parse(const std::string& text) {
    try {
        return fh::parse_config(text, kFile);
    } catch (const std::exception& e) {
        fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("parse_config threw: ") + e.what());
    } catch (...) {
        fh::fuzz::fail(__FILE__, __LINE__, "no exception", "parse_config threw something not a std::exception");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    const fh::ConfigResult result = parse(text);
    if (const auto* error = std::get_if<fh::ConfigError>(&result)) {
        const std::string where = error->to_string() + "\nfor " + show(text);
        FH_FUZZ_CHECK(error->file == kFile, where);
        FH_FUZZ_CHECK(!error->message.empty(), "an error without a message: " + where);
        FH_FUZZ_CHECK(error->line >= 1 && error->column >= 1, "an error without line:column: " + where);
        FH_FUZZ_CHECK(static_cast<std::size_t>(error->line) <= line_count(text), "an error past the last line: " + where);
        const std::string prefix =
            kFile + ":" + std::to_string(error->line) + ":" + std::to_string(error->column) + ": ";
        FH_FUZZ_CHECK(error->to_string().rfind(prefix, 0) == 0, where);
        return 0;
    }
    const fh::Config& config = std::get<fh::Config>(result);
    check_constraints(config, text);
    const std::string written = to_toml(config);
    const fh::ConfigResult again = parse(written);
    if (const auto* error = std::get_if<fh::ConfigError>(&again))
        fh::fuzz::fail(__FILE__, __LINE__, "written back, it parses",
                       error->to_string() + "\nwritten:\n" + written + "from " + show(text));
    FH_FUZZ_CHECK(same(std::get<fh::Config>(again), config),
                  "written back, it parses to another config:\n" + written + "from " + show(text));
    return 0;
}
