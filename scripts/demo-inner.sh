#!/usr/bin/env bash
# Runs inside a private mount namespace (see demo.sh). It builds a node in
# miniature: a kubelet tree, a FUSE dataset daemon, two pods' volumes bound
# from it by "CSI", and two "containers" (one HostToContainer, one with no
# propagation) that read the volume every millisecond. Then it kills the FUSE
# daemon and restarts it the way a container entrypoint does.
set -euo pipefail
build=$1
testfs=$build/tests/tools/fh_testfs
container=$build/tests/tools/fh_test_container
daemon=$build/fuse-healerd

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pod_sees() {  # the last state each container reported
  printf '   pod A (HostToContainer) sees: %s\n' "$(tail -n 1 "$work/podA.log" | cut -d' ' -f2-)"
  printf '   pod B (no propagation)  sees: %s\n' "$(tail -n 1 "$work/podB.log" | cut -d' ' -f2-)"
}
wait_mount() {  # wait until a FUSE mount of a superblock other than $2 (major:minor) is at $1
  for _ in $(seq 500); do
    dev=$(awk -v p="$1" '$5 == p && $0 ~ / - fuse/ { print $3 }' /proc/self/mountinfo | tail -n 1)
    if [ -n "$dev" ] && [ "$dev" != "${2:-}" ]; then echo "$dev"; return; fi
    sleep 0.01
  done
  echo "demo: no FUSE mount appeared at $1" >&2; exit 1
}

mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
work=$(mktemp -d /tmp/fuse-healer-demo.XXXXXX)
mount -t tmpfs demo "$work"
mount --make-shared "$work"   # like a systemd host, where / is shared
pids=()
cleanup() {
  exec 2>/dev/null  # the shell's "Killed" notices are noise here
  kill "${pids[@]}" 2>/dev/null || true
  pkill -9 -f "$work" 2>/dev/null || true
  umount -l "$work" 2>/dev/null || true
  rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT

kubelet=$work/kubelet
source=$work/runtime/dataset/fuse
volA=$kubelet/pods/pod-a/volumes/kubernetes.io~csi/pvc-data/mount
volB=$kubelet/pods/pod-b/volume-subpaths/pvc-data/app/0
mkdir -p "$source" "$volA" "$volB" "$work/state"

bold "1. A FUSE dataset daemon mounts at $source (generation 1)"
"$testfs" "$source" --generation 1 -f 2>/dev/null & fuse_pid=$!
src_dev=$(wait_mount "$source")
echo "   fh_testfs pid $fuse_pid, superblock $src_dev"

bold "2. CSI binds it into two pods (pod B takes the subdirectory sub/), read-only"
mount --bind "$source" "$volA"; mount -o remount,bind,ro "$volA"
mount --bind "$source/sub" "$volB"; mount -o remount,bind,ro "$volB"
# The containers run until their stdin closes: hold a FIFO open for them.
mkfifo "$work/stdin"; exec 7<>"$work/stdin"
"$container" --volume "$volA" --propagation slave --file generation <&7 > "$work/podA.log" & pids+=($!)
"$container" --volume "$volB" --propagation private --file inner <&7 > "$work/podB.log" & pids+=($!)
for _ in $(seq 200); do [ "$(wc -l < "$work/podA.log")" -ge 2 ] && [ "$(wc -l < "$work/podB.log")" -ge 2 ] && break; sleep 0.01; done
pod_sees

bold "3. fuse-healerd starts, watching $kubelet"
cat > "$work/fuse-healer.toml" <<EOC
[kubelet]
root_dir = "$kubelet"
[state]
dir = "$work/state"
EOC
"$daemon" --config "$work/fuse-healer.toml" 2> "$work/daemon.log" & daemon_pid=$!; pids+=($daemon_pid)
for _ in $(seq 200); do grep -q "ready" "$work/daemon.log" && break; sleep 0.01; done
grep -o "starting.*" "$work/daemon.log" | sed 's/^/   /'

bold "4. The FUSE daemon is OOM-killed (kill -9)"
kill -9 "$fuse_pid"; wait "$fuse_pid" 2>/dev/null || true; echo "   killed fh_testfs pid $fuse_pid"
sleep 0.3
pod_sees

bold "5. Its supervisor restarts it: umount -l the stale source, mount generation 2 at the same path"
umount -l "$source"
t_restart=$(date +%s%N)
"$testfs" "$source" --generation 2 -f 2>/dev/null & fuse_pid=$!; pids+=($fuse_pid)
wait_mount "$source" "$src_dev" >/dev/null
sleep 0.3
pod_sees
echo
grep -E "mount (broken|healed)|failed" "$work/daemon.log" | sed -e 's/^[^ ]* //' -e "s|$work|<demo>|g" -e 's/^/   /'

bold "6. What each pod saw, millisecond by millisecond (state changes only)"
for pod in A B; do
  echo "   pod $pod:"
  awk 'NR > 1 { if (prev) printf "     %-45s for %8.1f ms\n", state, ($1 - prev) / 1000; prev = $1; $1 = ""; state = substr($0, 2) }
       END { printf "     %-45s (now)\n", state }' "$work/pod$pod.log"
done
outA=$(awk '/error/ && !s { s = $1 } /file=2/ && s { print ($1 - s) / 1000; exit }' "$work/podA.log")
echo
echo "   pod A outage (first error to generation 2): ${outA} ms, which includes the supervisor's restart"
healed=$(grep -o 'heal_us=[0-9]*' "$work/daemon.log" | head -n 2 | tr '\n' ' ')
since=$(grep -o 'since_event_us=[0-9]*' "$work/daemon.log" | head -n 2 | tr '\n' ' ')
echo "   fuse-healerd: time acting per target: $healed; from the mount event to healed: $since"

bold "7. Mounts afterwards: one per mountpoint, none dead"
grep -E " - fuse(\.| )" /proc/self/mountinfo | awk '{ print "   host:  " $5 "  (" $3 ", " $NF ")" }' | sed "s|$work|<demo>|g"
for pid in $(pgrep -f "fh_test_container"); do
  awk -v p="$pid" '/ - fuse/ { print "   pod (pid " p "): " $5 "  (" $3 ", " ($7 ~ /master/ ? $7 : "private") ")" }' "/proc/$pid/mountinfo"
done
echo
echo "demo: done (the namespace and everything in it goes away now)"
