#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs every
# test (unit tests, then the integration tests that mount real FUSE
# filesystems, each inside a private mount namespace of its own), then, as
# root, the package test (scripts/package-test.sh: builds the .deb and the
# .rpm, lints them, installs and purges the .deb without starting the daemon).
#
#   scripts/test.sh [CTEST_ARGS...]
#
# With ctest arguments (e.g. -R unit) only those tests run, not the package
# test. FUSE_HEALER_PACKAGE_TEST=0 skips the package test;
# FUSE_HEALER_PACKAGE_TEST_TIMEOUT (seconds, default 1800) bounds it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
"$top/scripts/build.sh"
build=${BUILD_DIR:-$top/build}
if [ "$(id -u)" -ne 0 ]; then
  echo "test: not root: the integration tests will skip (they need to mount)" >&2
fi
(cd "$build" && ctest --output-on-failure --timeout 300 "$@")

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
