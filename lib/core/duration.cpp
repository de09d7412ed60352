#include "core/duration.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <string_view>

namespace fh {
namespace {

struct Unit {
    std::string_view suffix;
    std::int64_t micros;
};

// Largest first: the first unit that divides a duration exactly gives its
// shortest text, since a larger unit never has a longer suffix.
constexpr std::array<Unit, 5> kUnits{{
    {"h", 3'600'000'000},
    {"m", 60'000'000},
    {"s", 1'000'000},
    {"ms", 1'000},
    {"us", 1},
}};

} // namespace

std::optional<std::chrono::microseconds> parse_duration(const std::string& text) {
    // Only digits then a unit: no sign, spaces or fraction, so that every
    // accepted text means exactly one whole number of microseconds.
    const std::size_t digits = text.find_first_not_of("0123456789");
    if (digits == 0 || digits == std::string::npos) return std::nullopt;

    const std::string_view suffix = std::string_view(text).substr(digits);
    for (const Unit& unit : kUnits) {
        if (suffix != unit.suffix) continue;
        std::int64_t count = 0;
        const bool parsed = std::from_chars(text.data(), text.data() + digits, count).ec == std::errc{};
        if (!parsed || count > std::numeric_limits<std::int64_t>::max() / unit.micros) {
            return std::nullopt;
        }
        return std::chrono::microseconds(count * unit.micros);
    }
    return std::nullopt;
}

std::string format_duration(std::chrono::microseconds d) {
    // "0s" rather than "0h": it is how the config spells "off".
    if (d.count() == 0) return "0s";
    // "us" divides every duration, so a unit is always found.
    const Unit& unit = *std::find_if(kUnits.begin(), kUnits.end(),
                                     [&](const Unit& u) { return d.count() % u.micros == 0; });
    return std::to_string(d.count() / unit.micros) + std::string(unit.suffix);
}

} // namespace fh
