// TCP addresses to listen on, as written in the config: "host:port" with an
// IPv4 literal, or "[host]:port" with an IPv6 literal. Host names are not
// accepted: resolving one is an effect (DNS, /etc/hosts) that the pure config
// code must not have, and a metrics listener bound to whatever a name
// resolves to at start is a surprise waiting to happen.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace fh {

struct ListenAddress {
    std::string host;        // the IP literal, without brackets
    bool ipv6 = false;       // host is an IPv6 literal
    std::uint16_t port = 0;  // 1..65535

    // Returns "host:port", or "[host]:port" for IPv6.
    std::string to_string() const;

    bool operator==(const ListenAddress&) const = default;
};

// Returns the address written as "a.b.c.d:port" or "[v6]:port", or an Error
// whose detail says what is wrong as the end of a sentence "<key> must ...",
// e.g. "have a port between 1 and 65535, got \"0\"".
Result<ListenAddress> parse_listen_address(std::string_view text);

} // namespace fh
