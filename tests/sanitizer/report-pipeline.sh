#!/usr/bin/env bash
# The sanitizer builds' alarm, tested (ctest sanitizer.report_pipeline, only
# in builds with -DFUSE_HEALER_SANITIZE): each of the project's executables,
# made to commit an error of each kind its build detects
# (FH_SANITIZER_SELFTEST, cmake/sanitizer_support.c.in), must print the
# report on its stderr, exit with a failure and leave its marker in
# FH_SANITIZER_REPORT_DIR. A build where a report could pass unnoticed fails
# here.
#
#   report-pipeline.sh KINDS EXECUTABLE...     (KINDS: e.g. "address,undefined,leak")
set -uo pipefail
kinds=$1
shift
dir=$(mktemp -d /tmp/fh-sanitizer-pipeline-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
IFS=, read -r -a kind_list <<<"$kinds"
for exe in "$@"; do
  name=$(basename "$exe")
  for kind in "${kind_list[@]}"; do
    rm -f "$dir"/marker/* "$dir"/stderr
    mkdir -p "$dir/marker"
    # --version: every tool exits at once on it or on its usage error; the
    # error happens before main() anyway.
    FH_SANITIZER_SELFTEST=$kind FH_SANITIZER_REPORT_DIR=$dir/marker timeout 60 "$exe" --version \
      >/dev/null 2>"$dir/stderr" </dev/null
    rc=$?
    markers=$(ls "$dir/marker")
    if [ $rc -eq 0 ]; then
      echo "FAIL: $name with a $kind error exited 0"; fail=1
    elif ! grep -qE 'Sanitizer|: runtime error: ' "$dir/stderr"; then
      echo "FAIL: $name with a $kind error (exit $rc) printed no sanitizer report:"; sed 's/^/  /' "$dir/stderr" | head -20; fail=1
    elif [ -z "$markers" ]; then
      echo "FAIL: $name with a $kind error (exit $rc) left no marker in FH_SANITIZER_REPORT_DIR"; fail=1
    else
      echo "ok: $name, $kind: exit $rc, $(grep -m1 -oE '(ERROR|WARNING): [A-Za-z]+Sanitizer: [a-z-]+|runtime error: [a-z ]+' "$dir/stderr"), marker $markers"
    fi
  done
done
exit $fail
