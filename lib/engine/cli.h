// The fuse-healerd command line.
#pragma once

namespace fh {

// Exit codes of fuse-healerd (documented in the README and the man page).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;   // a runtime failure (e.g. the loop could not start)
inline constexpr int kExitUsage = 64;    // bad command line (sysexits EX_USAGE)
inline constexpr int kExitConfig = 78;   // bad config file (sysexits EX_CONFIG)

// Parses the command line and runs the daemon (or --check-config,
// --version, --help). Returns the process exit code.
int run_fuse_healerd(int argc, char** argv);

} // namespace fh
