// Durations in config files are strings with a unit: "500ms", "30s", "5m".
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace fh {

// Returns the duration written as <digits><unit> with unit one of us, ms, s,
// m, h (e.g. "0s", "250ms", "1h"), or nullopt when the text is not of that
// form or overflows.
std::optional<std::chrono::microseconds> parse_duration(const std::string& text);

// Returns the shortest exact text for a duration, e.g. "30s", "1500ms".
std::string format_duration(std::chrono::microseconds d);

} // namespace fh
