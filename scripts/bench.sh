#!/usr/bin/env bash
# Builds fuse-healerd and the heal benchmark into ./build-bench (or
# $BUILD_DIR) and runs it with the defaults of the issue:
#   heal latency for 1, 100 and 1000 targets (20 cycles each, plus 1 warm-up)
#   and fuse-healerd's CPU over 60 s idle with 1000 targets.
# Extra arguments go to heal_bench (e.g. --targets 1,100 --cycles 5).
# Needs root: everything runs in a private mount namespace of its own.
# See docs/PERFORMANCE.md.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build-bench}
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: must run as root (it mounts FUSE filesystems inside a private mount namespace)" >&2
  exit 77
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
cmake --build "$build" -j"$(nproc)" --target heal_bench fuse-healerd fh_testfs
# For the record: what was measured.
if command -v git >/dev/null && git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
  echo "bench: fuse-healer $(git -C "$top" describe --always --dirty 2>/dev/null)" >&2
fi
echo "bench: $build/bench/heal_bench $*" >&2
exec "$build/bench/heal_bench" "$@"
