#!/usr/bin/env bash
# Builds fuse-healerd, fuse-healerctl, fh_testfs and the scale benchmark into
# ./build-bench (or $BUILD_DIR) and runs it with the sizes of issue 4: one node
# with 1,000 pods, 2,000 targets over 10 FUSE sources and 10,000 mounts.
# Extra arguments go to scale_bench, e.g. a quick run:
#   scripts/scale-bench.sh --pods 100 --filler 1000 --cycles 3 --supervisor-cycles 3 \
#       --events 20 --idle-seconds 5 --churn-seconds 5
# or a fallback path of the daemon:
#   scripts/scale-bench.sh --daemon-args "--disable-kernel-feature statmount"
# Needs root: everything runs in a private mount namespace of its own.
# See docs/PERFORMANCE.md.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build-bench}
if [ "$(id -u)" -ne 0 ]; then
  echo "scale-bench: must run as root (it mounts FUSE filesystems inside a private mount namespace)" >&2
  exit 77
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
cmake --build "$build" -j"$(nproc)" --target scale_bench fuse-healerd fuse-healerctl fh_testfs
# For the record: what was measured, and how busy the machine was.
if command -v git >/dev/null && git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
  echo "scale-bench: fuse-healer $(git -C "$top" describe --always --dirty 2>/dev/null)" >&2
fi
echo "scale-bench: uptime: $(uptime)" >&2
echo "scale-bench: $build/bench/scale_bench $*" >&2
exec "$build/bench/scale_bench" "$@"
