#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang-14 (ASan + UBSan) in a
# build dir of their own and fuzzes each for a bounded time. CI runs it from
# scripts/test.sh with the defaults (60 s per target). See docs/FUZZING.md.
#
#   scripts/fuzz.sh [--time SECONDS] [--long] [--update-corpus] [TARGET...]
#
#   --time S         fuzz each target for S seconds (default 60, or
#                    FH_FUZZ_TIME)
#   --long           one hour per target (overnight: --time 28800)
#   --update-corpus  afterwards, merge into tests/fuzz/corpus/<target> the
#                    inputs found that add coverage (libFuzzer -merge=1), to
#                    commit as seeds
#   TARGET...        some of: mountinfo config voldata control state http
#                    (default: all)
#
# The inputs found are kept in $FUZZ_BUILD_DIR/corpus/<target> (default
# build-fuzz/), so a second run goes on from them. A crash, a leak, undefined
# behaviour, a failed invariant or a hang (-timeout, 10 s) fails the run; the
# input is saved as build-fuzz/artifacts/<target>/crash-* (or leak-,
# timeout-, oom-) and the log says how to replay it. A fixed crash's input
# goes to tests/fuzz/regressions/<target>/ (ctest replays it every run).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$top/build-fuzz}
time_per_target=${FH_FUZZ_TIME:-60}
update_corpus=0
targets=()
all_targets=(mountinfo config voldata control state http)

while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_per_target=$2; shift 2 ;;
    --time=*) time_per_target=${1#--time=}; shift ;;
    --long) time_per_target=3600; shift ;;
    --update-corpus) update_corpus=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 64 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (${all_targets[*]})" >&2; exit 64; }
done

"$top/scripts/install-deps.sh"
"$top/scripts/install-deps.sh" --fuzz

# Per target: its dictionary and the longest input tried (bytes). Real
# mount tables are long (a node has thousands of mounts); the others are a
# line or a small file.
# An HTTP request head may be up to 8 KiB: http tries a little more, to
# reach the limit's answer.
dict_of() { case "$1" in mountinfo) echo mountinfo ;; config) echo config ;; http) echo http ;; *) echo json ;; esac; }
max_len_of() { case "$1" in mountinfo) echo 32768 ;; config) echo 8192 ;; http) echo 9000 ;; *) echo 4096 ;; esac; }

started=$(date +%s)
echo "fuzz: building ${targets[*]} in $build (clang-14, ASan + UBSan, libFuzzer)"
# -O1 with line tables only: libFuzzer's usual choice, and a quicker build
# than -O2 -g (the CI budget counts the build).
CC=clang-14 CXX=clang++-14 cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DFUSE_HEALER_FUZZ=ON -DFUSE_HEALER_BUILD_TESTS=OFF -DFUSE_HEALER_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >"$build/build.log" 2>&1 \
  || { tail -n 50 "$build/build.log" >&2; echo "fuzz: build failed ($build/build.log)" >&2; exit 1; }
built=$(date +%s)
echo "fuzz: built in $((built - started)) s; fuzzing each target for $time_per_target s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t
  artifacts=$build/artifacts/$t
  log=$build/fuzz-$t.log
  mkdir -p "$corpus" "$artifacts"
  rm -f "$artifacts"/*  # only this run's findings are reported
  rc=0
  # The regression inputs first, each run once whole (some are longer than
  # -max_len) under the sanitizers and the hang timeout.
  regressions=()
  for f in "$top/tests/fuzz/regressions/$t"/*; do [ -f "$f" ] && regressions+=("$f"); done
  if [ ${#regressions[@]} -gt 0 ]; then
    "$build/tests/fuzz/fuzz_$t" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
      "${regressions[@]}" >"$log" 2>&1 || rc=$?
  fi
  # Then fuzzing: the first directory receives the new inputs; the repo's
  # seeds and regression inputs are read only.
  [ "$rc" -ne 0 ] || "$build/tests/fuzz/fuzz_$t" -max_total_time="$time_per_target" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$(max_len_of "$t")" -dict="$top/tests/fuzz/dict/$(dict_of "$t").dict" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 -print_pcs=0 \
    "$corpus" "$top/tests/fuzz/corpus/$t" "$top/tests/fuzz/regressions/$t" >>"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -n 1 || true)
  line=$(printf '%-10s %10s runs %7s exec/s  %-34s peak RSS %s MB' "$t" "${runs:-?}" "${speed:-?}" "${cov:-cov: ?}" "${rss:-?}")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    line+="  FAILED (exit $rc)"
    echo "fuzz: $t FAILED; the end of $log:" >&2
    tail -n 60 "$log" >&2
    for a in "$artifacts"/*; do
      [ -e "$a" ] || continue
      echo "fuzz: input saved as $a; replay it with: $build/tests/fuzz/fuzz_$t $a" >&2
    done
  fi
  echo "fuzz: $line"
  summary+=("$line")
done

if [ "$update_corpus" = 1 ]; then
  for t in "${targets[@]}"; do
    before=$(ls "$top/tests/fuzz/corpus/$t" | wc -l)
    "$build/tests/fuzz/fuzz_$t" -merge=1 -max_len="$(max_len_of "$t")" \
      "$top/tests/fuzz/corpus/$t" "$build/corpus/$t" >"$build/merge-$t.log" 2>&1
    echo "fuzz: $t: tests/fuzz/corpus/$t: $before -> $(ls "$top/tests/fuzz/corpus/$t" | wc -l) inputs"
  done
fi

echo "fuzz: ${#targets[@]} targets, $time_per_target s each; $(( $(date +%s) - started )) s in all (build $((built - started)) s)"
printf 'fuzz:   %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
