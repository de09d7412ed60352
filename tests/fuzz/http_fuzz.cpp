// Fuzz target: the metrics endpoint's HTTP (core/http.h). Any local user can
// connect to the port and send anything; the server feeds the bytes received
// so far to parse_http_request_head after each read.
//
// Invariants: no exception escapes; a Complete head is a method token and a
// path, no longer than the input or the limit, and the same head is read
// from exactly its own bytes; every shorter prefix of a Complete head is
// Incomplete (the server never answers a request that is still arriving); an
// Invalid input stays Invalid, with the same status, whatever follows it; an
// Incomplete input is never over the limit; the answer to any of them is
// well-formed and its Content-Length is its body's.
#include <string>

#include "core/http.h"
#include "fuzz_check.h"

namespace {

using fh::HttpParse;
using fh::fuzz::show;

HttpParse parse(std::string_view s) {
    try {
        return fh::parse_http_request_head(s);
    } catch (const std::exception& e) {
        fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("parse_http_request_head threw: ") + e.what());
    }
}

void check_answer(const HttpParse& parsed) {
    const fh::HttpResponse r =
        fh::answer_metrics_request(parsed, [] { return std::string("m 1\n"); }, "text/plain; version=0.0.4");
    FH_FUZZ_CHECK(r.status == 200 || r.status == 400 || r.status == 404 || r.status == 405 || r.status == 431 ||
                      r.status == 505,
                  "status " + std::to_string(r.status));
    const std::string bytes = fh::serialize_http_response(r, false, 0);
    const std::size_t end = bytes.find("\r\n\r\n");
    FH_FUZZ_CHECK(end != std::string::npos && bytes.substr(end + 4) == r.body, "body not after the head");
    FH_FUZZ_CHECK(bytes.find("Content-Length: " + std::to_string(r.body.size()) + "\r\n") < end, "length");
    for (const char c : r.body)
        FH_FUZZ_CHECK(c == '\n' || (static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f),
                      "the answer's body holds a byte the client sent? " + show(r.body));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    const HttpParse p = parse(text);
    check_answer(p);
    switch (p.state) {
    case HttpParse::State::Incomplete:
        FH_FUZZ_CHECK(text.size() <= fh::kMaxHttpRequestHeadBytes, "incomplete beyond the limit");
        break;
    case HttpParse::State::Complete: {
        const fh::HttpRequestHead& h = p.head;
        FH_FUZZ_CHECK(h.length <= text.size() && h.length <= fh::kMaxHttpRequestHeadBytes,
                      "length " + std::to_string(h.length));
        FH_FUZZ_CHECK(!h.method.empty() && h.method.find_first_of(" \r\n:/") == std::string::npos,
                      "method " + show(h.method));
        FH_FUZZ_CHECK(h.path == "*" || (!h.path.empty() && h.path.front() == '/'), "path " + show(h.path));
        FH_FUZZ_CHECK(h.path.find_first_of(" ?\r\n") == std::string::npos, "path " + show(h.path));
        const HttpParse own = parse(std::string_view(text).substr(0, h.length));
        FH_FUZZ_CHECK(own.state == HttpParse::State::Complete && own.head.method == h.method &&
                          own.head.path == h.path && own.head.length == h.length,
                      "its own bytes read otherwise");
        for (const std::size_t cut : {h.length - 1, h.length / 2, std::size_t{1}})
            if (cut < h.length)
                FH_FUZZ_CHECK(parse(std::string_view(text).substr(0, cut)).state == HttpParse::State::Incomplete,
                              "a prefix of " + std::to_string(cut) + " bytes is not incomplete");
        break;
    }
    case HttpParse::State::Invalid: {
        FH_FUZZ_CHECK(!p.why.empty(), "no reason");
        for (const char* more : {"", "\r\n\r\n", "GET /metrics HTTP/1.1\r\n\r\n"}) {
            const HttpParse later = parse(text + more);
            FH_FUZZ_CHECK(later.state == HttpParse::State::Invalid && later.status == p.status,
                          "valid again, or another status, after " + show(more));
        }
        break;
    }
    }
    return 0;
}
