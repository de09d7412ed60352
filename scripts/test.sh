#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs every
# test (unit tests, then the integration tests that mount real FUSE
# filesystems, each inside a private mount namespace of its own), then, as
# root, the package test (scripts/package-test.sh: builds the .deb and the
# .rpm, lints them, installs and purges the .deb without starting the daemon)
# and the system test (tests/system/nspawn-test.sh: this machine's own root
# booted with systemd-nspawn, the .deb installed in it, a real heal checked
# through systemd, the journal, fuse-healerctl and /metrics; it prints SKIP
# when it cannot run here unless FH_SYSTEM_TEST_REQUIRED=1, as in CI).
#
#   scripts/test.sh [CTEST_ARGS...]
#
# With ctest arguments (e.g. -R unit) only those tests run, not the package
# and system tests. FUSE_HEALER_PACKAGE_TEST=0 skips the package test;
# FUSE_HEALER_PACKAGE_TEST_TIMEOUT (seconds, default 1800) bounds it.
# FUSE_HEALER_SYSTEM_TEST=0 skips the system test. FUSE_HEALER_FUZZ=0 skips
# the fuzzing (scripts/fuzz.sh), which also runs only without ctest arguments;
# so does the static analysis (scripts/analyze.sh), FUSE_HEALER_ANALYSIS=0,
# and the sanitizer runs (scripts/sanitize.sh), FUSE_HEALER_SANITIZE=0.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
"$top/scripts/build.sh"
build=${BUILD_DIR:-$top/build}
if [ "$(id -u)" -ne 0 ]; then
  echo "test: not root: the integration tests will skip (they need to mount)" >&2
fi
(cd "$build" && ctest --output-on-failure --timeout 300 "$@")

# The suites that follow ctest share one guard, run_block: each runs only
# without ctest arguments (those ask for some tests alone) and unless its
# env switch is 0, and says which of the three it is. With --root WHY it also
# needs root, and says "not root: ... skipped (WHY)" on stderr without it.
# The suite is the command at the end; set -e: its failure fails this script.
#   run_block VAR WHAT SCRIPT [--root WHY] COMMAND...
ctest_argc=$#
run_block() {
  local var=$1 what=$2 script=$3 root_why=
  shift 3
  if [ "$1" = --root ]; then
    root_why=$2
    shift 2
  fi
  if [ "$ctest_argc" -gt 0 ]; then
    echo "test: ctest arguments given: $what not run ($script)"
  elif [ "${!var:-1}" = 0 ]; then
    echo "test: $var=0: $what skipped"
  elif [ -n "$root_why" ] && [ "$(id -u)" -ne 0 ]; then
    echo "test: not root: $what skipped ($root_why)" >&2
  else
    echo "test: $what ($script)"
    "$@"
  fi
}

# Fuzzing: each libFuzzer target of tests/fuzz for 60 s (clang-14, ASan +
# UBSan; about 7 min in all with its build). FUSE_HEALER_FUZZ=0 skips it;
# FH_FUZZ_TIME sets the seconds per target. See docs/FUZZING.md.
run_block FUSE_HEALER_FUZZ fuzzing scripts/fuzz.sh "$top/scripts/fuzz.sh"

# Static analysis: clang-tidy 14 and cppcheck over lib/ daemon/ ctl/ bench/
# tests/tools/, any finding fails (scripts/analyze.sh, docs/ANALYSIS.md; about
# 8 min on 2 idle cores: 15 min of CPU). FUSE_HEALER_ANALYSIS=0 skips it.
run_block FUSE_HEALER_ANALYSIS "static analysis" scripts/analyze.sh \
  env ANALYZE_BUILD_DIR="$build" "$top/scripts/analyze.sh"

# Sanitizers (scripts/sanitize.sh): the whole ctest built with ASan + UBSan,
# then the threaded tests built with TSan, each in a build dir of its own
# (build-asan/, build-tsan/; about 30 min in all on 2 cores, see
# docs/ANALYSIS.md). FUSE_HEALER_SANITIZE=0 skips them.
run_block FUSE_HEALER_SANITIZE sanitizers scripts/sanitize.sh "$top/scripts/sanitize.sh"

# SIGTERM at the limit: the test's cleanup purges the package and puts
# policy-rc.d back (apt-get itself is not interrupted); SIGKILL 5 min later.
run_block FUSE_HEALER_PACKAGE_TEST "package test" scripts/package-test.sh --root "it installs and purges the .deb" \
  timeout --kill-after=300 "${FUSE_HEALER_PACKAGE_TEST_TIMEOUT:-1800}" "$top/scripts/package-test.sh"

system_test() {
  # The package test has just built the .deb: install that one instead of
  # building it a second time.
  local deb
  deb=$(ls "$top"/dist/fuse-healer_*_amd64.deb 2>/dev/null | head -n 1 || true)
  if [ -n "$deb" ] && [ "${FUSE_HEALER_PACKAGE_TEST:-1}" != 0 ]; then
    FH_DEB=$deb BUILD_DIR=$build bash "$top/tests/system/nspawn-test.sh"
  else
    BUILD_DIR=$build bash "$top/tests/system/nspawn-test.sh"
  fi
}
run_block FUSE_HEALER_SYSTEM_TEST "system test" tests/system/nspawn-test.sh system_test
