// Fuzz target: the control protocol (core/control_protocol.h). The daemon
// parses whatever root writes to its socket; fuse-healerctl parses whatever
// answers it. The input is both: split into lines as the server splits its
// stream, each line is a request, and the whole input is a response.
//
// Invariants, requests: no exception escapes; a request re-encodes to one
// line that parses to the same request; an error's answer is one line of
// JSON that the client decodes to the same code and (valid UTF-8) message;
// a line over the limit is request-too-large, whatever it holds.
// Responses: a decoded response re-encodes to one that decodes the same;
// every decoded number is the number in the JSON (nothing silently wrapped);
// the human renderings hold no control character but their newlines.
#include <nlohmann/json.hpp>

#include "core/control_protocol.h"
#include "fuzz_check.h"

namespace {

using fh::fuzz::show;
using nlohmann::json;

void check_request_line(std::string_view line) {
    std::variant<fh::ControlRequest, fh::ControlError> parsed = [&] {
        try {
            return fh::parse_control_request(line);
        } catch (const std::exception& e) {
            fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("parse_control_request threw: ") + e.what());
        }
    }();
    std::string_view body = line;
    if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
    if (const auto* error = std::get_if<fh::ControlError>(&parsed)) {
        FH_FUZZ_CHECK(!error->message.empty(), "an error without a message for " + show(line));
        FH_FUZZ_CHECK((error->code == fh::ControlErrorCode::RequestTooLarge) ==
                          (body.size() > fh::kMaxControlRequestBytes),
                      std::string("code ") + fh::to_string(error->code) + " for a line of " +
                          std::to_string(line.size()) + " bytes");
        const std::string answer = fh::encode_error_response(*error);
        FH_FUZZ_CHECK(answer.find('\n') == answer.size() - 1, "an error answer is not one line: " + show(answer));
        const fh::Result<fh::ControlResponse> decoded = fh::parse_control_response(answer);
        FH_FUZZ_CHECK(decoded.ok(), "the client cannot read the error answer " + show(answer));
        FH_FUZZ_CHECK(decoded->error.has_value() && decoded->error->code == error->code,
                      "the client reads another answer from " + show(answer));
        if (fh::fuzz::is_valid_utf8(error->message))
            FH_FUZZ_CHECK(decoded->error->message == error->message, "message changed: " + show(answer));
        return;
    }
    const auto& request = std::get<fh::ControlRequest>(parsed);
    FH_FUZZ_CHECK(body.size() <= fh::kMaxControlRequestBytes, "an oversized line was accepted");
    if (request.command == fh::ControlCommand::Heal) {
        FH_FUZZ_CHECK(!request.target.empty() && request.target.front() == '/', "target " + show(request.target));
        FH_FUZZ_CHECK(request.target.find('\0') == std::string::npos, "target holds a NUL: " + show(request.target));
        FH_FUZZ_CHECK(request.target == "/" || request.target.back() != '/', "trailing slash: " + show(request.target));
    } else {
        FH_FUZZ_CHECK(request.target.empty(), "a status request with a target");
    }
    const std::string encoded = fh::encode_control_request(request);
    FH_FUZZ_CHECK(!encoded.empty() && encoded.find('\n') == encoded.size() - 1, "not one line: " + show(encoded));
    const auto again = fh::parse_control_request(std::string_view(encoded).substr(0, encoded.size() - 1));
    const auto* same = std::get_if<fh::ControlRequest>(&again);
    FH_FUZZ_CHECK(same != nullptr, "a re-encoded request is refused: " + show(encoded));
    FH_FUZZ_CHECK(same->command == request.command && same->target == request.target,
                  "round trip changed the request " + show(line) + " -> " + show(encoded));
}

// Returns the JSON number at doc[key] (doc an object), for comparison with
// what the decoder made of it.
bool same_number(const json& obj, const char* key, std::int64_t got) {
    const auto it = obj.find(key);
    if (it == obj.end()) return false;
    if (it->is_number_unsigned()) return got >= 0 && it->get<std::uint64_t>() == static_cast<std::uint64_t>(got);
    return it->is_number_integer() && it->get<std::int64_t>() == got;
}
bool same_number_u(const json& obj, const char* key, std::uint64_t got) {
    const auto it = obj.find(key);
    if (it == obj.end()) return false;
    if (it->is_number_unsigned()) return it->get<std::uint64_t>() == got;
    return it->is_number_integer() && it->get<std::int64_t>() >= 0 && static_cast<std::uint64_t>(it->get<std::int64_t>()) == got;
}

// Fields added after the protocol's first version may be absent (an older
// daemon); the decoder then gives their zero.
bool same_number_u_or_absent(const json& obj, const char* key, std::uint64_t got) {
    return obj.contains(key) ? same_number_u(obj, key, got) : got == 0;
}

void check_target_numbers(const json& j, const fh::ControlTarget& t) {
    FH_FUZZ_CHECK(same_number(j, "heals", t.heals), "heals " + std::to_string(t.heals) + " from " + j.dump());
    FH_FUZZ_CHECK(same_number(j, "last_outage_us", t.last_outage_us),
                  "last_outage_us " + std::to_string(t.last_outage_us) + " from " + j.dump());
}

// The renderings are for a terminal: a name must not move the cursor or
// forge a line, so no control character but the newlines they put there.
void check_printable(const std::string& out, const std::string& what) {
    for (const char ch : out) {
        const auto c = static_cast<unsigned char>(ch);
        FH_FUZZ_CHECK(c == '\n' || (c >= 0x20 && c != 0x7f), what + " holds control byte " + std::to_string(c) +
                                                                 ": " + show(out));
    }
}

void check_response(std::string_view text) {
    fh::Result<fh::ControlResponse> r = [&] {
        try {
            return fh::parse_control_response(text);
        } catch (const std::exception& e) {
            fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("parse_control_response threw: ") + e.what());
        }
    }();
    if (!r) {
        FH_FUZZ_CHECK(r.error().what == "parse control response" && !r.error().detail.empty(),
                      "error without context: " + r.error().message());
        return;
    }
    const fh::ControlResponse& resp = *r;
    const int kinds = int(resp.error.has_value()) + int(resp.daemon.has_value()) + int(resp.target.has_value());
    FH_FUZZ_CHECK(kinds == 1, "a response is exactly one of error, status and heal, got " + std::to_string(kinds));
    FH_FUZZ_CHECK(resp.daemon.has_value() || resp.targets.empty(), "targets without a status");

    // The decoder took it, so it is JSON: compare its numbers with ours.
    std::string_view body = text;
    if (!body.empty() && body.back() == '\n') body.remove_suffix(1);
    const json doc = json::parse(body);
    std::string encoded;
    if (resp.error) {
        encoded = fh::encode_error_response(*resp.error);
    } else if (resp.daemon) {
        const fh::ControlDaemonSummary& d = *resp.daemon;
        const json& dj = doc["daemon"];
        FH_FUZZ_CHECK(same_number(dj, "pid", d.pid) && same_number(dj, "targets", d.targets) &&
                          same_number(dj, "broken", d.broken) && same_number(dj, "heals", d.heals) &&
                          same_number_u(dj, "mount_events", d.mount_events) &&
                          same_number_u(dj, "reconciles", d.reconciles) &&
                          same_number(dj, "reconcile_running_us", d.reconcile_running_us) &&
                          same_number_u_or_absent(dj, "unrelated_mount_events", d.unrelated_mount_events),
                      "a daemon number changed in decoding: " + dj.dump());
        for (std::size_t i = 0; i < resp.targets.size(); ++i) check_target_numbers(doc["targets"][i], resp.targets[i]);
        encoded = fh::encode_status_response(d, resp.targets);
        check_printable(fh::render_status_table(d, resp.targets), "the status table");
    } else {
        check_target_numbers(doc["target"], *resp.target);
        encoded = fh::encode_heal_response(*resp.target);
        check_printable(fh::render_heal_result(*resp.target), "the heal line");
    }
    FH_FUZZ_CHECK(encoded.find('\n') == encoded.size() - 1, "not one line: " + show(encoded));
    const fh::Result<fh::ControlResponse> again = fh::parse_control_response(encoded);
    FH_FUZZ_CHECK(again.ok(), "a re-encoded response does not decode: " + again.error().message());
    // Decoded strings came from JSON (valid UTF-8), so nothing was replaced.
    const fh::ControlResponse& a = *again;
    FH_FUZZ_CHECK(a.error.has_value() == resp.error.has_value() && a.daemon == resp.daemon &&
                      a.targets == resp.targets && a.target == resp.target,
                  "round trip changed the response " + show(text));
    if (resp.error)
        FH_FUZZ_CHECK(a.error->code == resp.error->code && a.error->message == resp.error->message,
                      "round trip changed the error " + show(text));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    // As the server does: each '\n' ends a request; a last line without one
    // is a request too (answered at EOF).
    std::string_view rest = text;
    while (!rest.empty()) {
        const std::size_t nl = rest.find('\n');
        check_request_line(rest.substr(0, nl));
        rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    }
    // fuse-healerctl reads one line.
    check_response(std::string_view(text).substr(0, text.find('\n') == std::string::npos ? text.size()
                                                                                          : text.find('\n') + 1));
    // Each number through the table's duration format.
    if (size >= sizeof(std::int64_t)) {
        std::int64_t us = 0;
        std::memcpy(&us, data, sizeof us);
        const std::string shown = fh::format_outage(us);
        FH_FUZZ_CHECK(!shown.empty() && shown.size() < 32, "format_outage(" + std::to_string(us) + ") = " + show(shown));
    }
    return 0;
}
