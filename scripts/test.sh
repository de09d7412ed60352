#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs every
# test (unit tests, then the integration tests that mount real FUSE
# filesystems, each inside a private mount namespace of its own).
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
