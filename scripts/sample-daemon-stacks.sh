#!/bin/bash
# Samples the kernel stack of every fuse-healerd thread in D state (uninterruptible sleep), every 50 ms, for
# SECONDS seconds, to stdout: which kernel wait holds the heal worker or a namespace worker (see
# docs/RELIABILITY.md, "Open"). Needs root (/proc/<pid>/task/<tid>/stack).
#   scripts/sample-daemon-stacks.sh SECONDS > stacks.txt
end=$((SECONDS + ${1:?usage: sample-daemon-stacks.sh SECONDS}))
while [ $SECONDS -lt $end ]; do
  for p in $(pgrep -x fuse-healerd); do
    for t in /proc/$p/task/*; do
      st=$(awk '{print $3}' $t/stat 2>/dev/null)
      if [ "$st" = D ]; then
        echo "== $(date +%T.%N) pid $p tid ${t##*/} comm $(cat $t/comm 2>/dev/null) wchan $(cat $t/wchan 2>/dev/null)"
        cat $t/stack 2>/dev/null
      fi
    done
  done
  sleep 0.05
done
