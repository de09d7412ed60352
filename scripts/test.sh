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

# Fuzzing: each libFuzzer target of tests/fuzz for 60 s (clang-14, ASan +
# UBSan; about 7 min in all with its build). FUSE_HEALER_FUZZ=0 skips it;
# FH_FUZZ_TIME sets the seconds per target. See docs/FUZZING.md.
if [ $# -gt 0 ]; then
  echo "test: ctest arguments given: fuzzing not run (scripts/fuzz.sh)"
elif [ "${FUSE_HEALER_FUZZ:-1}" = 0 ]; then
  echo "test: FUSE_HEALER_FUZZ=0: fuzzing skipped"
else
  echo "test: fuzzing (scripts/fuzz.sh)"
  "$top/scripts/fuzz.sh"
fi

# Static analysis: clang-tidy 14 and cppcheck over lib/ daemon/ ctl/ bench/
# tests/tools/, any finding fails (scripts/analyze.sh, docs/ANALYSIS.md; about
# 8 min on 2 idle cores: 15 min of CPU). FUSE_HEALER_ANALYSIS=0 skips it.
if [ $# -gt 0 ]; then
  echo "test: ctest arguments given: static analysis not run (scripts/analyze.sh)"
elif [ "${FUSE_HEALER_ANALYSIS:-1}" = 0 ]; then
  echo "test: FUSE_HEALER_ANALYSIS=0: static analysis skipped"
else
  echo "test: static analysis (scripts/analyze.sh)"
  ANALYZE_BUILD_DIR=$build "$top/scripts/analyze.sh"
fi

# Sanitizers (scripts/sanitize.sh): the whole ctest built with ASan + UBSan,
# then the threaded tests built with TSan, each in a build dir of its own
# (build-asan/, build-tsan/; about 30 min in all on 2 cores, see
# docs/ANALYSIS.md). FUSE_HEALER_SANITIZE=0 skips them.
if [ $# -gt 0 ]; then
  echo "test: ctest arguments given: sanitizer runs not done (scripts/sanitize.sh)"
elif [ "${FUSE_HEALER_SANITIZE:-1}" = 0 ]; then
  echo "test: FUSE_HEALER_SANITIZE=0: sanitizer runs skipped"
else
  echo "test: sanitizers (scripts/sanitize.sh)"
  "$top/scripts/sanitize.sh"
fi

if [ $# -gt 0 ]; then
  echo "test: ctest arguments given: package test not run (scripts/package-test.sh)"
elif [ "${FUSE_HEALER_PACKAGE_TEST:-1}" = 0 ]; then
  echo "test: FUSE_HEALER_PACKAGE_TEST=0: package test skipped"
elif [ "$(id -u)" -ne 0 ]; then
  echo "test: not root: package test skipped (it installs and purges the .deb)" >&2
else
  echo "test: package test (scripts/package-test.sh)"
  # SIGTERM at the limit: the test's cleanup purges the package and puts
  # policy-rc.d back (apt-get itself is not interrupted); SIGKILL 5 min later.
  timeout --kill-after=300 "${FUSE_HEALER_PACKAGE_TEST_TIMEOUT:-1800}" "$top/scripts/package-test.sh"
fi

if [ $# -gt 0 ]; then
  echo "test: ctest arguments given: system test not run (tests/system/nspawn-test.sh)"
elif [ "${FUSE_HEALER_SYSTEM_TEST:-1}" = 0 ]; then
  echo "test: FUSE_HEALER_SYSTEM_TEST=0: system test skipped"
else
  echo "test: system test (tests/system/nspawn-test.sh)"
  # The package test has just built the .deb: install that one instead of
  # building it a second time.
  deb=$(ls "$top"/dist/fuse-healer_*_amd64.deb 2>/dev/null | head -n 1 || true)
  if [ -n "$deb" ] && [ "${FUSE_HEALER_PACKAGE_TEST:-1}" != 0 ]; then
    FH_DEB=$deb BUILD_DIR=$build bash "$top/tests/system/nspawn-test.sh"
  else
    BUILD_DIR=$build bash "$top/tests/system/nspawn-test.sh"
  fi
fi
