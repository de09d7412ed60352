#include "core/duration.h"

#include <gtest/gtest.h>

namespace fh {
namespace {

using namespace std::chrono_literals;
using std::chrono::microseconds;

TEST(ParseDuration, AcceptsEachUnit) {
    EXPECT_EQ(parse_duration("7us"), microseconds(7));
    EXPECT_EQ(parse_duration("250ms"), microseconds(250ms));
    EXPECT_EQ(parse_duration("30s"), microseconds(30s));
    EXPECT_EQ(parse_duration("5m"), microseconds(5min));
    EXPECT_EQ(parse_duration("1h"), microseconds(1h));
    EXPECT_EQ(parse_duration("0s"), microseconds(0));
}

TEST(ParseDuration, RejectsTextNotOfTheForm) {
    for (const char* text : {"", "s", "ms", "5", "-5s", "+5s", " 5s", "5s ", "5 s", "1.5s", "1e3ms",
                             "0x5s", "5sec", "5S", "5d", "5mss", "5s5s"}) {
        EXPECT_EQ(parse_duration(text), std::nullopt) << '"' << text << '"';
    }
}

TEST(ParseDuration, RejectsOverflow) {
    EXPECT_EQ(parse_duration("9223372036854775807us"), microseconds::max());
    EXPECT_EQ(parse_duration("9223372036854775808us"), std::nullopt);
    EXPECT_EQ(parse_duration("9223372036854s"), microseconds(9223372036854s));
    EXPECT_EQ(parse_duration("9223372036855s"), std::nullopt);
    EXPECT_EQ(parse_duration("2562047788h"), microseconds(2562047788h));
    EXPECT_EQ(parse_duration("2562047789h"), std::nullopt);
    EXPECT_EQ(parse_duration("99999999999999999999999999ms"), std::nullopt);
}

TEST(FormatDuration, UsesTheLargestExactUnit) {
    EXPECT_EQ(format_duration(0us), "0s");
    EXPECT_EQ(format_duration(7us), "7us");
    EXPECT_EQ(format_duration(1500ms), "1500ms");
    EXPECT_EQ(format_duration(30s), "30s");
    EXPECT_EQ(format_duration(90s), "90s");
    EXPECT_EQ(format_duration(120s), "2m");
    EXPECT_EQ(format_duration(120min), "2h");
    EXPECT_EQ(format_duration(-5s), "-5s");
}

TEST(FormatDuration, RoundTripsThroughParse) {
    for (const microseconds d :
         {microseconds(0), microseconds(1), microseconds(1001), microseconds(2s), microseconds(90s),
          microseconds(61min), microseconds(48h), microseconds::max()}) {
        EXPECT_EQ(parse_duration(format_duration(d)), d) << format_duration(d);
    }
    for (const char* text :
         {"0s", "1us", "999us", "1ms", "1500ms", "1s", "59s", "1m", "59m", "1h", "100h"}) {
        const auto d = parse_duration(text);
        ASSERT_TRUE(d.has_value()) << text;
        EXPECT_EQ(format_duration(*d), text);
    }
}

} // namespace
} // namespace fh
