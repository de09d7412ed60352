#!/usr/bin/env bash
# The README's demo command: installs dependencies, builds, and shows
# fuse-healerd healing a real FUSE mount, inside a private mount namespace
# (nothing is mounted on this machine's own mount table).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it mounts FUSE filesystems inside a private mount namespace)" >&2
  exit 1
fi
"$top/scripts/install-deps.sh"
echo "demo: building..."
"$top/scripts/build.sh" >/dev/null
exec unshare --mount --propagation private bash "$top/scripts/demo-inner.sh" "${BUILD_DIR:-$top/build}"
