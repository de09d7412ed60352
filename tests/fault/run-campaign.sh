#!/usr/bin/env bash
# The fault campaign: fuse-healerd against crashing, crash-looping and hung
# FUSE daemons (fh_testfs, squashfuse, bindfs), 50 targets (CSI staging
# mounts, volumes of a dataset's root and of a subdirectory, subPaths) and 15
# emulated containers reading all the time, and against its own SIGKILL in
# the middle of heals. The driver is tests/fault/campaign (fh_fault_campaign);
# everything runs inside a private mount namespace that it creates.
#
#   tests/fault/run-campaign.sh [--short | --long] [--build-dir DIR] [--no-build]
#                               [--table FILE] [DRIVER ARGS...]
#
#   --short  (default; CI, the ctest test fault.campaign_short): 90 crash-and-
#            restart cycles (30 per FUSE implementation), a crash loop with
#            restarts after 0.1 s, 10 SIGKILLs of fuse-healerd, a 10 s hang with
#            2,000 pending requests. About 3 minutes on 2 cores.
#   --long   the figures of docs/RELIABILITY.md: 1,000 cycles, crash loops with
#            restarts after 0.1 s, 1 s and 10 s, 100 SIGKILLs of fuse-healerd,
#            a 60 s hang with 5,000 pending requests. About 25 minutes.
#
# Driver arguments after the mode override its numbers (e.g. --seed N repeats
# a run's random choices; fh_fault_campaign --help lists them). Without
# --no-build the script installs the build dependencies
# (scripts/install-deps.sh) and builds what it runs into --build-dir (default
# $BUILD_DIR or ./build). Needs root and /dev/fuse; prints SKIP and exits 77
# without them, or when FUSE_HEALER_FAULT=0.
#
# Exit: 0 every check passed, 1 a check failed (the failures are listed after
# the table), 77 skipped, 64 bad arguments.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
mode=short
build=${BUILD_DIR:-$top/build}
do_build=1
table=
driver_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) mode=short ;;
    --long) mode=long ;;
    --build-dir) build=$2; shift ;;
    --no-build) do_build=0 ;;
    --table) table=$2; shift ;;
    *) driver_args+=("$1") ;;
  esac
  shift
done

if [ "${FUSE_HEALER_FAULT:-1}" = 0 ]; then
  echo "SKIP: FUSE_HEALER_FAULT=0"
  exit 77
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the fault campaign needs root (it mounts FUSE filesystems in a private mount namespace)"
  exit 77
fi

if [ "$do_build" = 1 ]; then
  "$top/scripts/install-deps.sh"
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
  cmake --build "$build" -j"$(nproc)" --target fh_fault_campaign fuse-healerd fuse-healerctl fh_testfs fh_test_container
fi
driver=$build/tests/fault/campaign/fh_fault_campaign
if [ ! -x "$driver" ]; then
  echo "run-campaign: $driver is not built (run without --no-build, or build the fh_fault_campaign target)" >&2
  exit 1
fi

case "$mode" in
  short) args=(--cycles 90 --crash-loop 0.1:20 --daemon-kills 10 --hang-seconds 10 --hang-requests 2000) ;;
  long) args=(--cycles 1000 --crash-loop 0.1:100,1:30,10:6 --daemon-kills 100 --hang-seconds 60 --hang-requests 5000) ;;
esac
[ -n "$table" ] && args+=(--table "$table")

echo "run-campaign: $mode mode: $driver ${args[*]} ${driver_args[*]:-}"
start=$(date +%s)
rc=0
"$driver" "${args[@]}" "${driver_args[@]}" || rc=$?
echo "run-campaign: $mode mode took $(( $(date +%s) - start )) s (exit $rc)"
exit $rc
