#!/usr/bin/env bash
# Static analysis of fuse-healer's own code: clang-tidy 14 (.clang-tidy) and
# cppcheck 2.10 (.cppcheck-suppressions), over the translation units of
# lib/ daemon/ ctl/ bench/ tests/tools/ as compile_commands.json builds them.
# Any finding of either fails the run (clang-tidy: every warning is an error;
# cppcheck: --error-exitcode). The check sets, every check turned off with its
# reason, and the findings fixed: docs/ANALYSIS.md, "Static analysis".
#
#   scripts/analyze.sh [--tidy-only | --cppcheck-only] [FILE...]
#
#   FILE...   only these sources (paths from the checkout's root), e.g. while
#             fixing findings; default: every source of the directories above
#
# The gtest files under tests/ (unit, engine, integration, fault, fuzz) are
# not analysed: they are not shipped, gtest's macros drown clang-tidy in
# findings of its own, and they would triple the run's time (docs/ANALYSIS.md).
#
# Environment: ANALYZE_BUILD_DIR (a build dir to configure, or reuse, for its
# compile_commands.json; default $BUILD_DIR, else ./build), ANALYZE_JOBS
# (parallel clang-tidy and cppcheck processes, default 2).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh" --analysis

tidy=1
cppcheck=1
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tidy-only) cppcheck=0; shift ;;
    --cppcheck-only) tidy=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "analyze: unknown option $1" >&2; exit 64 ;;
    *) files+=("$1"); shift ;;
  esac
done

build=${ANALYZE_BUILD_DIR:-${BUILD_DIR:-$top/build}}
jobs=${ANALYZE_JOBS:-2}
start=$SECONDS

# compile_commands.json: configuring is enough (no generated sources);
# CMakeLists.txt sets CMAKE_EXPORT_COMPILE_COMMANDS, said here again for a
# build dir configured before it did. A dir configured already keeps its
# options (tests and benchmarks must be on: their tools and bench/ are
# analysed).
cmake -S "$top" -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
work=$build/analysis
rm -rf "$work"
mkdir -p "$work/tidy"

# The project's own translation units, each once (the fuzz replay main is
# compiled into several targets), as a compilation database of their own:
# both tools read it.
python3 - "$top" "$build/compile_commands.json" "$work/compile_commands.json" "${files[@]}" <<'EOF'
import json, os, sys
top, src, dst, only = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
dirs = ("lib/", "daemon/", "ctl/", "bench/", "tests/tools/")
wanted = {os.path.normpath(f) for f in only}
seen, out = set(), []
for e in json.load(open(src)):
    path = os.path.normpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(path, top)
    if not rel.startswith(dirs) or path in seen or (wanted and rel not in wanted):
        continue
    seen.add(path)
    out.append(e)
missing = wanted - {os.path.relpath(os.path.normpath(os.path.join(e["directory"], e["file"])), top) for e in out}
if missing:
    sys.exit("analyze: not a source of lib/ daemon/ ctl/ bench/ tests/tools/ in the build: " + " ".join(sorted(missing)))
json.dump(out, open(dst, "w"), indent=1)
EOF
# Largest first: with N processes the run ends with the last big file,
# while the others sit idle, unless the big ones start early.
mapfile -t sources < <(python3 -c 'import json,os,sys
files = [e["file"] for e in json.load(open(sys.argv[1]))]
print("\n".join(sorted(files, key=lambda f: -os.path.getsize(f))))' "$work/compile_commands.json")
echo "analyze: ${#sources[@]} translation units, $jobs jobs"

rc=0
if [ "$tidy" = 1 ]; then
  t0=$SECONDS
  # One log per translation unit, printed in order afterwards: two clang-tidy
  # processes writing at once would interleave their findings. Headers: only
  # the project's own (the regex is anchored at this checkout, so that a
  # system header under a path holding "lib/" is never reported).
  header_filter="^$top/(lib|daemon|ctl|bench|tests/tools)/"
  printf '%s\0' "${sources[@]}" |
    xargs -0 -n 1 -P "$jobs" sh -c '
      log="$2/$(printf "%s" "$4" | tr / _).log"
      if clang-tidy-14 -p "$1" --quiet --use-color=false --header-filter="$3" --warnings-as-errors="*" "$4" \
           >"$log" 2>&1; then
        rm -f "$log"
      fi' analyze-tidy "$work" "$work/tidy" "$header_filter"
  failed=$(find "$work/tidy" -name '*.log' | sort)
  if [ -n "$failed" ]; then
    # clang-tidy prints "N warnings generated" and suppressed-warning counts
    # to stderr even with --quiet; keep the findings.
    cat $failed | grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' >&2
    echo "analyze: clang-tidy: findings in $(echo "$failed" | wc -l) translation unit(s)" >&2
    rc=1
  fi
  echo "analyze: clang-tidy: $((SECONDS - t0)) s"
fi

if [ "$cppcheck" = 1 ]; then
  t0=$SECONDS
  # --library=posix: the POSIX calls' contracts (the daemon is mostly
  # syscalls). System headers are not read (-I of /usr/include is not given):
  # cppcheck's own library files describe them, so missingIncludeSystem
  # (information, not enabled) would only be noise.
  # With --quiet cppcheck prints findings only, so any output fails the
  # run: --error-exitcode alone misses its internal errors (cppcheckError,
  # e.g. the std::chrono literal it cannot parse, docs/ANALYSIS.md), after
  # which it has analysed nothing more in that file.
  crc=0
  cppcheck --project="$work/compile_commands.json" -j "$jobs" --quiet \
    --std=c++20 --library=posix \
    --enable=warning,style,performance,portability \
    --inline-suppr --suppressions-list="$top/.cppcheck-suppressions" \
    --error-exitcode=1 \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' >"$work/cppcheck.txt" 2>&1 || crc=$?
  if [ "$crc" != 0 ] || [ -s "$work/cppcheck.txt" ]; then
    cat "$work/cppcheck.txt" >&2
    echo "analyze: cppcheck: findings (exit status $crc)" >&2
    rc=1
  fi
  echo "analyze: cppcheck: $((SECONDS - t0)) s"
fi

echo "analyze: wall time $((SECONDS - start)) s"
if [ "$rc" != 0 ]; then
  echo "analyze: FAILED (fix the finding, or turn the check off with its reason in docs/ANALYSIS.md)" >&2
fi
exit "$rc"
