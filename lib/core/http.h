// The little HTTP/1.x the metrics endpoint speaks (RFC 9112), as pure
// functions: reading a request head from the bytes received so far, choosing
// the answer to it, and writing that answer out. engine/metrics_server.cpp
// moves the bytes.
//
// Why not a library: libmicrohttpd, which served /metrics before, links
// GnuTLS and its chain (p11-kit, nettle, hogweed, gmp, libtasn1, libidn2,
// libunistring, libffi): ~2.4 MiB of the daemon's RSS on every node for an
// endpoint that is plain HTTP on the loopback (measured with smaps in
// scale_bench, docs/PERFORMANCE.md). A scrape is one GET; the server answers
// it and closes the connection ("Connection: close"), so there is no
// keep-alive, no pipelining, no request body and no chunked coding to get
// right. What any client may send is bounded: kMaxHttpRequestHeadBytes.
#pragma once

#include <cstddef>
#include <ctime>
#include <functional>
#include <string>
#include <string_view>

namespace fh {

// The longest request head read (request line and header fields, with its
// blank line): a Prometheus scrape sends ~250 bytes. Longer is answered 431.
inline constexpr std::size_t kMaxHttpRequestHeadBytes = 8192;

struct HttpRequestHead {
    std::string method;      // as sent: methods are case-sensitive (RFC 9110 9.1)
    std::string path;        // the target's path: origin-form, or absolute-form's path; no "?query"
    std::size_t length = 0;  // bytes of the head, its blank line included
};

struct HttpParse {
    enum class State {
        Incomplete,  // no whole head yet, and nothing wrong so far: read more
        Complete,    // `head` holds the request
        Invalid,     // answer `status` (400, 431, 505) with `why`, then close
    };
    State state = State::Incomplete;
    HttpRequestHead head;
    int status = 0;
    std::string why;
};

// Returns the request head at the start of `received` (the bytes read so far
// from a connection), Incomplete while it may still become one, or Invalid
// with the status to answer: 400 for a malformed request line or header
// field (a bare LF ends a line as CRLF does, RFC 9112 2.2; obsolete line
// folding is refused), 431 when no head ends within kMaxHttpRequestHeadBytes,
// 505 for an HTTP version other than 1.0 and 1.1. A request line is checked
// as soon as its line ends, so garbage (a TLS hello) is refused at once.
HttpParse parse_http_request_head(std::string_view received);

struct HttpResponse {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string allow;  // the Allow field's value, for 405; "" for none
    std::string body;
};

// Returns the answer of the metrics endpoint to `parsed` (Complete or
// Invalid): /metrics answers GET and HEAD with render_metrics() in
// `metrics_content_type`; another path is 404, another method 405 (Allow:
// GET, HEAD); an Invalid head gets its status and reason. render_metrics is
// called only for a GET or HEAD of /metrics.
HttpResponse answer_metrics_request(const HttpParse& parsed, const std::function<std::string()>& render_metrics,
                                    const char* metrics_content_type);

// Returns the bytes of `response`: status line, Date (of `now`, RFC 9110
// 5.6.7's IMF-fixdate), Content-Type, Content-Length (of the body, also
// for HEAD), Allow when set, Connection: close, then the body unless
// `head_only`.
std::string serialize_http_response(const HttpResponse& response, bool head_only, std::time_t now);

// Returns the reason phrase of the statuses this server sends ("OK", "Not
// Found", ...), or "Unknown".
const char* http_reason_phrase(int status);

}  // namespace fh
