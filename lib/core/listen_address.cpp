#include "core/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>

namespace fh {
namespace {

Error invalid(std::string detail) {
    return Error{"parse listen address", {}, 0, std::move(detail)};
}

// Returns the port of the text after the last ':', or an Error.
Result<std::uint16_t> parse_port(std::string_view digits) {
    if (digits.empty()) return invalid("have a port after the ':'");
    // At most 5 digits: 65535 is the largest port, and a longer string of
    // digits would overflow the accumulator below.
    if (digits.size() > 5 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return invalid("have a port between 1 and 65535, got \"" + std::string(digits) + "\"");
    unsigned port = 0;
    for (char c : digits) port = port * 10 + static_cast<unsigned>(c - '0');
    if (port == 0 || port > 65535)
        return invalid("have a port between 1 and 65535, got \"" + std::string(digits) + "\"");
    return static_cast<std::uint16_t>(port);
}

} // namespace

std::string ListenAddress::to_string() const {
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<ListenAddress> parse_listen_address(std::string_view text) {
    ListenAddress address;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return invalid("close the IPv6 address with ']'");
        if (close + 1 >= text.size() || text[close + 1] != ':')
            return invalid("have \":port\" after the IPv6 address in brackets");
        address.host = std::string(text.substr(1, close - 1));
        address.ipv6 = true;
        port_text = text.substr(close + 2);
        in6_addr parsed{};
        if (::inet_pton(AF_INET6, address.host.c_str(), &parsed) != 1)
            return invalid("have an IPv6 address between the brackets, got \"" + address.host + "\"");
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos)
            return invalid("be \"host:port\", such as \"127.0.0.1:9766\" or \"[::1]:9766\"");
        address.host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
        if (address.host.find(':') != std::string::npos)
            return invalid("put an IPv6 address in brackets, such as \"[::1]:9766\"");
        in_addr parsed{};
        if (::inet_pton(AF_INET, address.host.c_str(), &parsed) != 1)
            return invalid("have an IP address as its host (names are not resolved), such as \"127.0.0.1:9766\", "
                           "got \"" + address.host + "\"");
    }
    const Result<std::uint16_t> port = parse_port(port_text);
    if (!port) return port.error();
    address.port = *port;
    return address;
}

} // namespace fh
