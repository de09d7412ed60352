// Test helpers for the metrics endpoint, independent of lib/: a tiny HTTP/1.0
// client over a TCP socket (what a Prometheus scrape sends) and a reader of
// the text exposition format's samples. Shared by tests/engine and
// tests/integration, so it uses nothing but libc and the standard library.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>

namespace fh::scrape {

struct HttpResponse {
    int status = 0;                              // e.g. 200
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
};

// Returns the response to `method path` sent to host:port (an IPv4 or IPv6
// literal) as HTTP/1.0 with "Connection: close", read until the server closes;
// nullopt with the reason in *why when connecting, sending or parsing fails
// or the server is silent for `timeout_ms` (milliseconds).
inline std::optional<HttpResponse> http_request(const std::string& host, std::uint16_t port,
                                                const std::string& method, const std::string& path,
                                                std::string* why, int timeout_ms = 5000) {
    const auto fail = [&](const std::string& step, int fd) -> std::optional<HttpResponse> {
        if (why) *why = step + " " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
        if (fd >= 0) ::close(fd);
        return std::nullopt;
    };
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (host.find(':') != std::string::npos) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) return fail("parse", -1);
        length = sizeof *in6;
    } else {
        auto* in4 = reinterpret_cast<sockaddr_in*>(&storage);
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        if (::inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) return fail("parse", -1);
        length = sizeof *in4;
    }
    const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail("socket", -1);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0) return fail("connect", fd);
    const std::string request = method + " " + path + " HTTP/1.0\r\nHost: " + host +
                                "\r\nAccept: text/plain\r\nConnection: close\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
        return fail("send", fd);
    std::string raw;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail("recv", fd);
        if (n == 0) break;
        raw.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);

    const std::size_t head_end = raw.find("\r\n\r\n");
    if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) {
        if (why) *why = "not an HTTP response: \"" + raw.substr(0, 200) + "\"";
        return std::nullopt;
    }
    HttpResponse response;
    std::istringstream head(raw.substr(0, head_end));
    std::string line;
    std::getline(head, line);
    response.status = std::atoi(line.c_str() + line.find(' ') + 1);
    while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::size_t value = colon + 1;
        while (value < line.size() && line[value] == ' ') ++value;
        response.headers[name] = line.substr(value);
    }
    response.body = raw.substr(head_end + 4);
    return response;
}

// Returns every sample of an exposition text, keyed by the series exactly as
// written ("name" or "name{a=\"x\"}"), or nullopt with the offending line in
// *why when a line is neither a "# " comment nor "series value" with a number
// (a float, "+Inf", "-Inf" or "NaN") as the value.
inline std::optional<std::map<std::string, double>> parse_samples(const std::string& text, std::string* why) {
    std::map<std::string, double> samples;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line.rfind("# ", 0) == 0) continue;
        // The value follows the last space: label values may hold spaces,
        // but they sit inside the braces, before it.
        const std::size_t space = line.rfind(' ');
        const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
        char* end = nullptr;
        const double number = std::strtod(value.c_str(), &end);
        if (space == std::string::npos || space == 0 || value.empty() || *end != '\0') {
            if (why) *why = "not a sample: \"" + line + "\"";
            return std::nullopt;
        }
        samples[line.substr(0, space)] = number;
    }
    return samples;
}

} // namespace fh::scrape
