#include "core/listen_address.h"

#include <gtest/gtest.h>

namespace fh {
namespace {

ListenAddress parsed(const std::string& text) {
    Result<ListenAddress> r = parse_listen_address(text);
    if (!r) {
        ADD_FAILURE() << text << ": " << r.error().detail;
        return {};
    }
    return *r;
}

// Returns the error detail ("... must <detail>").
std::string error_of(const std::string& text) {
    Result<ListenAddress> r = parse_listen_address(text);
    if (r) {
        ADD_FAILURE() << text << " parsed";
        return {};
    }
    return r.error().detail;
}

TEST(ParseListenAddress, Ipv4AndBracketedIpv6) {
    EXPECT_EQ(parsed("127.0.0.1:9766"), (ListenAddress{"127.0.0.1", false, 9766}));
    EXPECT_EQ(parsed("0.0.0.0:1"), (ListenAddress{"0.0.0.0", false, 1}));
    EXPECT_EQ(parsed("[::1]:65535"), (ListenAddress{"::1", true, 65535}));
    EXPECT_EQ(parsed("[::]:9766"), (ListenAddress{"::", true, 9766}));
    EXPECT_EQ(parsed("[fd00::1:2]:80"), (ListenAddress{"fd00::1:2", true, 80}));
}

TEST(ParseListenAddress, ToStringRoundTrips) {
    for (const char* text : {"127.0.0.1:9766", "[::1]:9766", "[fd00::1:2]:80"})
        EXPECT_EQ(parsed(text).to_string(), text);
}

TEST(ParseListenAddress, RejectsWhatCannotBeBound) {
    EXPECT_EQ(error_of("9766"), "be \"host:port\", such as \"127.0.0.1:9766\" or \"[::1]:9766\"");
    EXPECT_EQ(error_of("localhost:9766"),
              "have an IP address as its host (names are not resolved), such as \"127.0.0.1:9766\", got \"localhost\"");
    EXPECT_EQ(error_of(":9766"),
              "have an IP address as its host (names are not resolved), such as \"127.0.0.1:9766\", got \"\"");
    EXPECT_EQ(error_of("256.0.0.1:9766"),
              "have an IP address as its host (names are not resolved), such as \"127.0.0.1:9766\", got \"256.0.0.1\"");
    EXPECT_EQ(error_of("::1:9766"), "put an IPv6 address in brackets, such as \"[::1]:9766\"");
    EXPECT_EQ(error_of("[::1:9766"), "close the IPv6 address with ']'");
    EXPECT_EQ(error_of("[::1]9766"), "have \":port\" after the IPv6 address in brackets");
    EXPECT_EQ(error_of("[::1]"), "have \":port\" after the IPv6 address in brackets");
    EXPECT_EQ(error_of("[127.0.0.1]:9766"), "have an IPv6 address between the brackets, got \"127.0.0.1\"");
    EXPECT_EQ(error_of("127.0.0.1:"), "have a port after the ':'");
    EXPECT_EQ(error_of("127.0.0.1:0"), "have a port between 1 and 65535, got \"0\"");
    EXPECT_EQ(error_of("127.0.0.1:65536"), "have a port between 1 and 65535, got \"65536\"");
    EXPECT_EQ(error_of("127.0.0.1:123456"), "have a port between 1 and 65535, got \"123456\"");
    EXPECT_EQ(error_of("127.0.0.1:+80"), "have a port between 1 and 65535, got \"+80\"");
    EXPECT_EQ(error_of("127.0.0.1:http"), "have a port between 1 and 65535, got \"http\"");
    EXPECT_EQ(error_of("127.0.0.1:97 66"), "have a port between 1 and 65535, got \"97 66\"");
}

} // namespace
} // namespace fh
