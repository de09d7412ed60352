// What the fuzz targets share: FH_FUZZ_CHECK, an invariant that aborts with
// a message when it does not hold (libFuzzer then saves the input as a crash;
// the gcc replay test fails), and small helpers.
//
// Each target is one LLVMFuzzerTestOneInput, built twice: with clang and
// libFuzzer (+ASan+UBSan) for scripts/fuzz.sh, and with the normal compiler
// and replay_main.cpp for ctest, which feeds it every seed and regression
// input in the repository.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

// Aborts with `what` (anything streamable into a std::string with +) when
// `cond` is false. Not assert(): it must hold in release builds too.
#define FH_FUZZ_CHECK(cond, what)                                                                   \
    do {                                                                                           \
        if (!(cond)) ::fh::fuzz::fail(__FILE__, __LINE__, #cond, std::string(what));               \
    } while (0)

namespace fh::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* cond, const std::string& what) {
    std::fprintf(stderr, "%s:%d: invariant failed: %s\n  %s\n", file, line, cond, what.c_str());
    std::fflush(stderr);
    std::abort();
}

// Returns the input as a string (bytes, NULs included).
inline std::string text_of(const std::uint8_t* data, std::size_t size) {
    return std::string(reinterpret_cast<const char*>(data), size);
}

// Returns true when `s` is valid UTF-8 as nlohmann::json checks it (a
// string that is not is written with U+FFFD in place of its bad bytes).
inline bool is_valid_utf8(const std::string& s) {
    try {
        (void)nlohmann::json(s).dump();
        return true;
    } catch (const nlohmann::json::type_error&) {
        return false;
    }
}

// Returns `s` printable for a failure message: JSON-quoted, cut to 300 bytes.
inline std::string show(std::string_view s) {
    std::string cut(s.substr(0, 300));
    return nlohmann::json(cut).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
           (s.size() > 300 ? "..." : "");
}

} // namespace fh::fuzz
