#!/usr/bin/env bash
# Builds fuse-healer under the sanitizers and runs its tests there:
#
#   1. AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer) in
#      build-asan/: every target (fuse-healerd and fuse-healerctl as the
#      integration tests run them, the test tools, the tests), the whole ctest.
#   2. ThreadSanitizer in build-tsan/: every target, the tests that run
#      threads: engine.* (the liveness prober's threads, the metrics server's
#      thread, the death watch on libuv's thread pool), integration.* but
#      the harness's self-tests (fuse-healerd's loop, heal worker, namespace
#      worker, mount tracker and prober threads; Engine and MountTracker run
#      in the test process), fault.* but the campaign (fuse-healerd under
#      races and resource faults) and sanitizer.report_pipeline. unit.* and
#      fuzz.* are the pure core: one thread. The campaign's short mode runs
#      under ASan only: its fixed waits (status within 2 s, ...) are not
#      made for TSan's 5-15x slowdown, and it adds no thread the fault
#      tests do not run.
#
#   scripts/sanitize.sh [asan|tsan]...     (default: both)
#
# Every sanitizer report is fatal to its process (cmake/sanitizer_support.c
# sets the runtimes' defaults) and leaves a marker file in
# <build>/sanitizer-reports/; the run fails when ctest fails or when any
# marker exists afterwards, and prints them (a report in a child process that
# its test did not notice is not lost: its text is in that process's log,
# which the integration harness checks too). See docs/ANALYSIS.md.
#
# Environment: SANITIZE_ASAN_DIR, SANITIZE_TSAN_DIR (build dirs, default
# ./build-asan, ./build-tsan), SANITIZE_JOBS (ctest -j, default 2),
# SANITIZE_CTEST_TIMEOUT (per test, seconds, default 600).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"

modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(asan tsan)
jobs=${SANITIZE_JOBS:-2}
timeout=${SANITIZE_CTEST_TIMEOUT:-600}
if [ "$(id -u)" -ne 0 ]; then
  echo "sanitize: not root: the integration tests will skip (they need to mount)" >&2
fi

# run_suite NAME SANITIZERS BUILD_DIR [CTEST_ARGS...]
run_suite() {
  local name=$1 sanitizers=$2 build=$3
  shift 3
  local start=$SECONDS
  echo "sanitize: $name: building in $build (-DFUSE_HEALER_SANITIZE=$sanitizers)"
  # No benchmarks: ctest does not run them.
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUSE_HEALER_SANITIZE="$sanitizers" \
    -DFUSE_HEALER_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)"
  local built=$SECONDS
  local reports=$build/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  chmod 1777 "$reports"  # fuse-healerctl runs as nobody in some tests
  local rc=0
  # --repeat until-pass:2: a test that fails on timing under the slowdown
  # (ASan 2-3x, TSan 5-15x, on 2 shared cores) gets a second run; a
  # sanitizer report still fails the run, since its marker stays (below).
  (cd "$build" && FH_SANITIZER_REPORT_DIR=$reports ctest --output-on-failure --timeout "$timeout" -j"$jobs" \
    --repeat until-pass:2 "$@") || rc=$?
  local markers
  markers=$(find "$reports" -type f | sort)
  if [ -n "$markers" ]; then
    echo "sanitize: $name: sanitizer reports (each report's text is in that process's output or log):" >&2
    while IFS= read -r m; do
      echo "  $(basename "$m"): $(cat "$m")" >&2
    done <<<"$markers"
    rc=1
  fi
  echo "sanitize: $name: build $((built - start)) s, tests $((SECONDS - built)) s, $([ $rc -eq 0 ] && echo passed || echo FAILED)"
  return $rc
}

failed=()
for mode in "${modes[@]}"; do
  case "$mode" in
    asan)
      run_suite asan address,undefined "${SANITIZE_ASAN_DIR:-$top/build-asan}" || failed+=(asan) ;;
    tsan)
      run_suite tsan thread "${SANITIZE_TSAN_DIR:-$top/build-tsan}" \
        -R '^(engine|integration|fault|sanitizer)\.' -E '^(integration\.HarnessSelftest\.|fault\.campaign_short$)' ||
        failed+=(tsan) ;;
    *) echo "usage: $0 [asan|tsan]..." >&2; exit 64 ;;
  esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "sanitize: passed: ${modes[*]}"
