// Tests of core/http.h: the request heads a scrape (and a hostile local
// client) may send, the metrics endpoint's answers, and their bytes.
#include "core/http.h"

#include <gtest/gtest.h>

#include <string>

namespace fh {
namespace {

using namespace std::string_literals;

constexpr const char* kScrape =
    "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9766\r\nUser-Agent: Prometheus/2.45.0\r\n"
    "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
    "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

HttpParse parse(std::string_view s) { return parse_http_request_head(s); }

TEST(HttpRequestHead, APrometheusScrapeIsCompleteOnlyWithItsBlankLine) {
    const std::string scrape = kScrape;
    const HttpParse p = parse(scrape);
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.method, "GET");
    EXPECT_EQ(p.head.path, "/metrics");
    EXPECT_EQ(p.head.length, scrape.size());
    // Every shorter prefix is still arriving, never wrong.
    for (std::size_t n = 0; n < scrape.size(); ++n)
        EXPECT_EQ(parse(scrape.substr(0, n)).state, HttpParse::State::Incomplete) << n;
    // What follows the head (a body, the next request) is not part of it.
    const HttpParse more = parse(scrape + "POST / HTTP/1.1\r\n");
    ASSERT_EQ(more.state, HttpParse::State::Complete);
    EXPECT_EQ(more.head.length, scrape.size());
}

TEST(HttpRequestHead, AcceptsBareLfLeadingEmptyLinesQueriesAndTheAbsoluteForm) {
    HttpParse p = parse("GET /metrics HTTP/1.0\n\n");
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.path, "/metrics");
    p = parse("\r\n\nHEAD /metrics?x=1&y=2 HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.method, "HEAD");
    EXPECT_EQ(p.head.path, "/metrics") << "the query is not part of the path";
    p = parse("GET HTTP://127.0.0.1:9766/metrics HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.path, "/metrics");
    p = parse("GET http://host HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.path, "/");
    p = parse("OPTIONS * HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.state, HttpParse::State::Complete) << p.why;
    EXPECT_EQ(p.head.path, "*");
    // A CR whose LF has not arrived yet, before the request line.
    EXPECT_EQ(parse("\r").state, HttpParse::State::Incomplete);
    EXPECT_EQ(parse("GET /metrics HTTP/1.1\r").state, HttpParse::State::Incomplete);
}

struct BadHead {
    const char* name;
    std::string text;
    int status;
};

class HttpRequestHeadErrors : public testing::TestWithParam<BadHead> {};

TEST_P(HttpRequestHeadErrors, AreAnsweredWithTheirStatusAndAReason) {
    const HttpParse p = parse(GetParam().text);
    ASSERT_EQ(p.state, HttpParse::State::Invalid);
    EXPECT_EQ(p.status, GetParam().status);
    EXPECT_FALSE(p.why.empty());
    // More bytes never make it valid again.
    const HttpParse more = parse(GetParam().text + "GET /metrics HTTP/1.1\r\n\r\n");
    EXPECT_EQ(more.state, HttpParse::State::Invalid);
    EXPECT_EQ(more.status, p.status);
}

INSTANTIATE_TEST_SUITE_P(
    All, HttpRequestHeadErrors,
    testing::Values(
        BadHead{"TlsHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, 400},
        BadHead{"NoTarget", "GET\r\n", 400}, BadHead{"TwoSpaces", "GET  /metrics HTTP/1.1\r\n\r\n", 400},
        BadHead{"NoVersion", "GET /metrics\r\n\r\n", 400},
        BadHead{"Http09Style", "GET /metrics HTTP/1\r\n\r\n", 400},
        BadHead{"Http2", "GET /metrics HTTP/2.0\r\n\r\n", 505},
        BadHead{"Http10Lowercase", "GET /metrics http/1.0\r\n\r\n", 400},
        BadHead{"MethodNotAToken", "G(T /metrics HTTP/1.1\r\n\r\n", 400},
        BadHead{"TargetWithControl", std::string("GET /met\x01rics HTTP/1.1\r\n\r\n"), 400},
        BadHead{"TargetNotAPath", "GET metrics HTTP/1.1\r\n\r\n", 400},
        BadHead{"BareCr", "GET /metrics HTTP/1.1\rHost: a\r\n\r\n", 400},
        BadHead{"Nul", "GET /metrics HTTP/1.1\r\nHost: a\0b\r\n\r\n"s, 400},
        BadHead{"Folded", "GET /metrics HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400},
        BadHead{"SpaceBeforeColon", "GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        BadHead{"NoColon", "GET /metrics HTTP/1.1\r\nHost\r\n\r\n", 400},
        BadHead{"ControlInValue", "GET /metrics HTTP/1.1\r\nHost: a\x1b[2J\r\n\r\n", 400},
        BadHead{"TooLongWithoutEnd", "GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxHttpRequestHeadBytes, 'a'), 431},
        BadHead{"TooLongRequestLine", "GET /" + std::string(kMaxHttpRequestHeadBytes, 'a'), 431},
        BadHead{"TooLongComplete",
                "GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxHttpRequestHeadBytes, 'a') + "\r\n\r\n", 431}),
    [](const testing::TestParamInfo<BadHead>& info) { return std::string(info.param.name); });

TEST(HttpRequestHead, AHeadOfExactlyTheLimitIsRead) {
    std::string head = "GET /metrics HTTP/1.1\r\nX: ";
    head += std::string(kMaxHttpRequestHeadBytes - head.size() - 4, 'a') + "\r\n\r\n";
    ASSERT_EQ(head.size(), kMaxHttpRequestHeadBytes);
    EXPECT_EQ(parse(head).state, HttpParse::State::Complete);
    EXPECT_EQ(parse("\n" + head).state, HttpParse::State::Invalid) << "one byte more";
}

HttpResponse answer(std::string_view request) {
    return answer_metrics_request(parse(request), [] { return std::string("a_metric 1\n"); }, "text/x-metrics");
}

TEST(MetricsAnswer, GetAndHeadOfMetricsAreTheRenderingOtherPathsAndMethodsAreNot) {
    HttpResponse r = answer("GET /metrics HTTP/1.1\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/x-metrics");
    EXPECT_EQ(r.body, "a_metric 1\n");
    EXPECT_EQ(answer("HEAD /metrics HTTP/1.0\r\n\r\n").body, "a_metric 1\n") << "its length is the GET's";
    for (const char* path : {"/", "/metrics/", "/metricsx", "/Metrics", "*"}) {
        r = answer(std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
        EXPECT_EQ(r.status, 404) << path;
        EXPECT_EQ(r.body, "not found: fuse-healerd serves /metrics only\n");
    }
    r = answer("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.allow, "GET, HEAD");
    EXPECT_EQ(answer("get /metrics HTTP/1.1\r\n\r\n").status, 405) << "methods are case-sensitive";
    r = answer("GET /metrics HTTP/3.0\r\n\r\n");
    EXPECT_EQ(r.status, 505);
    EXPECT_EQ(r.body, "HTTP Version Not Supported: only HTTP/1.0 and HTTP/1.1 are served\n");
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
}

TEST(MetricsAnswer, AnInvalidRequestIsNotEchoedBack) {
    const HttpResponse r = answer("GET /<script>alert(1)</script>\x01 HTTP/1.1\r\n\r\n");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body.find("script"), std::string::npos) << r.body;
}

TEST(HttpResponseBytes, StatusLineFieldsAndBodyHeadOnlyKeepsTheLength) {
    HttpResponse r;
    r.status = 405;
    r.allow = "GET, HEAD";
    r.body = "no\n";
    // 2026-11-26 21:50:07 UTC, a Thursday.
    const std::time_t when = 1795729807;
    EXPECT_EQ(serialize_http_response(r, false, when),
              "HTTP/1.1 405 Method Not Allowed\r\nDate: Thu, 26 Nov 2026 21:50:07 GMT\r\n"
              "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nAllow: GET, HEAD\r\n"
              "Connection: close\r\n\r\nno\n");
    r.status = 200;
    r.allow.clear();
    EXPECT_EQ(serialize_http_response(r, true, 0),
              "HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 3\r\nConnection: close\r\n\r\n");
    EXPECT_STREQ(http_reason_phrase(431), "Request Header Fields Too Large");
    EXPECT_STREQ(http_reason_phrase(599), "Unknown");
}

}  // namespace
}  // namespace fh
