#include "core/http.h"

#include <cstdio>

namespace fh {
namespace {

// RFC 9110 5.6.2: the characters of a token (a method, a field name).
bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~': return true;
    default: return false;
    }
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (const char c : s)
        if (!is_tchar(static_cast<unsigned char>(c))) return false;
    return true;
}

HttpParse invalid(int status, std::string why) {
    HttpParse p;
    p.state = HttpParse::State::Invalid;
    p.status = status;
    p.why = std::move(why);
    return p;
}

HttpParse too_long() {
    return invalid(431, "the request head is longer than " + std::to_string(kMaxHttpRequestHeadBytes) + " bytes");
}

bool starts_with_ignoring_case(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

// Fills head.method and head.path from a whole request line (its CRLF
// removed); returns an Invalid parse on error, else a Complete one (the
// caller goes on with the fields).
HttpParse parse_request_line(std::string_view line, HttpRequestHead& head) {
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return invalid(400, "the request line is not \"METHOD TARGET HTTP/1.x\"");
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!is_token(method)) return invalid(400, "the request method is not a token");
    if (target.empty()) return invalid(400, "the request target is empty");
    for (const char c : target)
        if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
            return invalid(400, "the request target holds a character that is not visible ASCII");
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
        version[5] > '9' || version[7] < '0' || version[7] > '9')
        return invalid(400, "the request line does not end with an HTTP version (HTTP/1.1)");
    if (version != "HTTP/1.1" && version != "HTTP/1.0")
        return invalid(505, "only HTTP/1.0 and HTTP/1.1 are served");

    std::string_view path = target;
    if (path.front() != '/') {
        // RFC 9112 3.2.2: a server must accept the absolute-form too.
        std::size_t after_scheme = 0;
        if (starts_with_ignoring_case(path, "http://")) after_scheme = 7;
        else if (starts_with_ignoring_case(path, "https://")) after_scheme = 8;
        else if (path == "*") after_scheme = 0;  // OPTIONS *: answered 404 below
        else return invalid(400, "the request target is neither a path nor an absolute URI");
        if (after_scheme != 0) {
            const std::size_t slash = path.find('/', after_scheme);
            path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
        }
    }
    path = path.substr(0, path.find('?'));
    head.method = std::string(method);
    head.path = std::string(path);
    HttpParse ok;
    ok.state = HttpParse::State::Complete;
    return ok;
}

// Returns an Invalid parse when a whole header field line is malformed, a
// Complete one when it is fine (its value is not kept: /metrics reads none).
HttpParse check_field_line(std::string_view line) {
    if (line.front() == ' ' || line.front() == '\t')
        return invalid(400, "a header field is folded onto a second line (obsolete, RFC 9112 5.2)");
    const std::size_t colon = line.find(':');
    // RFC 9112 5.1: no whitespace between the name and the colon.
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
        return invalid(400, "a header field is not \"Name: value\"");
    for (const char c : line.substr(colon + 1)) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && u != '\t') || u == 0x7f) return invalid(400, "a header field value holds a control character");
    }
    HttpParse ok;
    ok.state = HttpParse::State::Complete;
    return ok;
}

}  // namespace

HttpParse parse_http_request_head(std::string_view received) {
    std::size_t pos = 0;
    // RFC 9112 2.2: empty lines before the request line are ignored.
    for (;;) {
        if (received.substr(pos, 2) == "\r\n") pos += 2;
        else if (received.substr(pos, 1) == "\n") pos += 1;
        else break;
    }
    HttpRequestHead head;
    bool have_request_line = false;
    for (;;) {
        const std::size_t newline = received.find('\n', pos);
        if (newline == std::string_view::npos) {
            if (received.size() > kMaxHttpRequestHeadBytes) return too_long();
            // A request line still arriving must at least start with a
            // method: anything else (a TLS hello, binary noise) is refused
            // now rather than after 8 KiB or the idle timeout.
            if (!have_request_line) {
                std::string_view partial = received.substr(pos);
                // Its LF may be on the way: CR alone says nothing yet.
                if (!partial.empty() && partial.back() == '\r') partial.remove_suffix(1);
                const std::string_view method = partial.substr(0, partial.find(' '));
                for (const char c : method)
                    if (!is_tchar(static_cast<unsigned char>(c)))
                        return invalid(400, "the request line is not \"METHOD TARGET HTTP/1.x\"");
            }
            return HttpParse{};
        }
        if (newline + 1 > kMaxHttpRequestHeadBytes) return too_long();
        std::string_view line = received.substr(pos, newline - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        // RFC 9112 2.2: a CR not followed by LF is invalid.
        if (line.find('\r') != std::string_view::npos) return invalid(400, "a line holds a bare CR");
        if (line.find('\0') != std::string_view::npos) return invalid(400, "a line holds a NUL byte");
        pos = newline + 1;
        if (!have_request_line) {
            if (HttpParse p = parse_request_line(line, head); p.state == HttpParse::State::Invalid) return p;
            have_request_line = true;
            continue;
        }
        if (line.empty()) {
            HttpParse done;
            done.state = HttpParse::State::Complete;
            head.length = pos;
            done.head = std::move(head);
            return done;
        }
        if (HttpParse p = check_field_line(line); p.state == HttpParse::State::Invalid) return p;
    }
}

HttpResponse answer_metrics_request(const HttpParse& parsed, const std::function<std::string()>& render_metrics,
                                    const char* metrics_content_type) {
    HttpResponse r;
    if (parsed.state != HttpParse::State::Complete) {
        r.status = parsed.state == HttpParse::State::Invalid ? parsed.status : 400;
        r.body = std::string(http_reason_phrase(r.status)) + ": " + parsed.why + "\n";
        return r;
    }
    if (parsed.head.path != "/metrics") {
        r.status = 404;
        r.body = "not found: fuse-healerd serves /metrics only\n";
        return r;
    }
    if (parsed.head.method != "GET" && parsed.head.method != "HEAD") {
        r.status = 405;
        r.allow = "GET, HEAD";
        r.body = "method not allowed: /metrics answers GET and HEAD\n";
        return r;
    }
    r.content_type = metrics_content_type;
    r.body = render_metrics();
    return r;
}

std::string serialize_http_response(const HttpResponse& response, bool head_only, std::time_t now) {
    // IMF-fixdate, written by hand: strftime's %a and %b follow the locale.
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&now, &tm);
    char date[40];
    std::snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7], tm.tm_mday,
                  kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    std::string out;
    out.reserve(200 + (head_only ? 0 : response.body.size()));
    out += "HTTP/1.1 " + std::to_string(response.status) + " " + http_reason_phrase(response.status) + "\r\n";
    out += "Date: ";
    out += date;
    out += "\r\nContent-Type: " + response.content_type + "\r\n";
    out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    if (!response.allow.empty()) out += "Allow: " + response.allow + "\r\n";
    out += "Connection: close\r\n\r\n";
    if (!head_only) out += response.body;
    return out;
}

const char* http_reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

}  // namespace fh
