// toml++'s configuration header in the fuzz build (TOML_CONFIG_HEADER, see
// the FUSE_HEALER_FUZZ block of CMakeLists.txt): its internal assertions off,
// as in Debian's library, which the daemon runs. toml++ 3.3.0 asserts a
// precondition of parse_key() that input such as "[=" breaks (fixed
// upstream, tomlplusplus PR #301), then reports the parse error properly;
// the fuzzer must see what ships. Not NDEBUG: with NDEBUG and clang the
// assertion becomes __builtin_assume, i.e. undefined behaviour.
#pragma once
#define TOML_ASSERT(expr) ((void)0)
