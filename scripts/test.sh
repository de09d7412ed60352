#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs every
# test: the unit tests, then the integration tests that mount real FUSE
# filesystems, each inside a private mount namespace of its own (ctest), then
# the system test that builds the Debian package and installs it in this
# machine's own root booted with systemd-nspawn (tests/system/nspawn-test.sh;
# it prints SKIP when it cannot run here, e.g. not as root; set
# FH_SKIP_SYSTEM_TEST=1 to leave it out).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
"$top/scripts/build.sh"
build=${BUILD_DIR:-$top/build}
if [ "$(id -u)" -ne 0 ]; then
  echo "test: not root: the integration tests will skip (they need to mount)" >&2
fi
cd "$build"
ctest --output-on-failure --timeout 300 "$@"
if [ "${FH_SKIP_SYSTEM_TEST:-0}" != 1 ]; then
  BUILD_DIR=$build bash "$top/tests/system/nspawn-test.sh"
fi
