#!/usr/bin/env bash
# System test of fuse-healer under a real systemd (issue 3, "Tests on real
# tools"). Boots this machine's own root with systemd-nspawn (writes go to a
# tmpfs overlay, see nspawn-boot.sh), installs the Debian package in the
# booted system and checks, each printed as PASS or FAIL:
#
#   1. start: after `dpkg -i` (whose postinst enables and starts the unit) the
#      unit is active/running, Type=notify, WatchdogUSec set; it became active
#      only after the daemon was ready: the daemon's "ready" journal entry was
#      sent before systemd's "Started", and the control socket and the metrics
#      listener answer at once when the start job has returned;
#   2. reload: `systemctl reload` with a valid config is applied (the metrics
#      listener moves); with an invalid one the daemon stays active on the old
#      config and the journal has the config error with CONFIG_FILE= and
#      CONFIG_LINE=;
#   3. heal: a FUSE source (tests/tools/fh_testfs) bound into a pod volume
#      like a CSI driver does is killed with SIGKILL, unmounted and mounted
#      again; the pod volume reads the new generation, and the heal is in
#      `journalctl -u fuse-healer -o json` with its structured fields, in
#      `fuse-healerctl status` (and --json) and in /metrics;
#   4. watchdog and stop: systemd took a WATCHDOG=1 ping from the daemon;
#      `systemctl stop` takes less than 1 s and leaves the unit inactive, not
#      failed;
#   then, after the container is powered off: nothing is left on the host (no
#   mount in /proc/1/mountinfo, no process, no file written to the host's
#   root, no cgroup).
#
# Usage (as root): bash tests/system/nspawn-test.sh
# Environment:
#   FH_DEB=PATH                  the .deb to install (default: build it with
#                                scripts/package.sh, into dist/)
#   BUILD_DIR=DIR                build tree holding tests/tools/fh_testfs
#                                (default: build/; built if missing)
#   FH_SYSTEM_TEST_TIMEOUT=SECS  bound of the boot-to-teardown part (default 240)
#   FH_SYSTEM_TEST_REQUIRED=1    a SKIP (not root, no systemd-nspawn, the
#                                container does not boot) is a failure (CI)
#   KEEP_WORKDIR=1               keep the logs directory
# Exit status: 0 all PASS (or SKIP), 1 a FAIL.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
timeout_s=${FH_SYSTEM_TEST_TIMEOUT:-240}
required=${FH_SYSTEM_TEST_REQUIRED:-0}

# In the booted system.
ct_tools=/opt/fh-system-test            # STAGE_DIR, bound read-only
ct_base=/run/fh-system-test             # a shared tmpfs, like the integration tests' Sandbox
ct_root_dir=$ct_base/kubelet            # [kubelet] root_dir
ct_src=$ct_base/runtime/fh-ds/fuse      # where the dataset's FUSE daemon mounts
pod_uid=6f1c2a3e-0b7d-4c59-9a2e-5d0c4e8b7a11
volume=pvc-fh-system-test
ct_target=$ct_root_dir/pods/$pod_uid/volumes/kubernetes.io~csi/$volume/mount
ct_config=/etc/fuse-healer/fuse-healer.toml
port_a=19766 port_b=19767 port_c=19768   # [metrics] listen; the container has a network namespace of its own

mid_started=39f53479d3a045ac8e11786248231fbf   # systemd: unit started
mid_healed=d3c632f47f424b5cbf6d079e93e312b3
mid_broken=fe6a29b72507404b8ae18fbeb3d766c5
mid_config_error=00282c9a2a664631939b22e2bf92c80f

passes=0
fails=0
say() { printf 'nspawn-test: %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; passes=$((passes + 1)); }
fail() { printf 'FAIL  %s\n' "$*"; fails=$((fails + 1)); }
check() { # check CONDITION-EXIT-STATUS DESCRIPTION
  if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2"; fi
}
skip() {
  if [ "$required" = 1 ]; then
    printf 'FAIL  nspawn-test: cannot run (FH_SYSTEM_TEST_REQUIRED=1): %s\n' "$*"
    exit 1
  fi
  printf 'SKIP  nspawn-test: %s\n' "$*"
  exit 0
}
now_ms() { date +%s%3N; }
# Seconds with 3 decimals between two now_ms values.
secs() { printf '%d.%03d' $((($2 - $1) / 1000)) $((($2 - $1) % 1000)); }

# ---- can it run here? -------------------------------------------------------

[ "$(id -u)" -eq 0 ] || skip "not root (systemd-nspawn and FUSE need root)"
for tool in systemd-nspawn nsenter unshare jq dpkg-parsechangelog; do
  command -v "$tool" >/dev/null ||
    skip "$tool is not installed (scripts/install-deps.sh installs systemd-container, jq)"
done
[ -x /lib/systemd/systemd ] || skip "this machine's root has no /lib/systemd/systemd to boot"
[ -c /dev/fuse ] || skip "no /dev/fuse"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "the kernel has no overlay file system"
unshare --mount --propagation private true 2>/dev/null || skip "cannot create a mount namespace"

# ---- the package and the test tools ----------------------------------------

work=$(mktemp -d /tmp/fh-nspawn-test.XXXXXX)
trap 'rm -rf "$work"' EXIT # until the teardown below takes over
machine=fh-system-test-$$
stage=$work/stage
mkdir -p "$stage"

deb=${FH_DEB:-}
if [ -z "$deb" ]; then
  version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
  arch=$(dpkg --print-architecture)
  deb=$top/dist/fuse-healer_${version}_${arch}.deb
  say "building $deb (scripts/package.sh, log: $work/package.log)"
  t0=$(now_ms)
  if ! DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-parallel=$(nproc)} \
      timeout 1800 bash "$top/scripts/package.sh" >"$work/package.log" 2>&1; then
    tail -n 40 "$work/package.log"
    fail "scripts/package.sh builds the package"
    exit 1
  fi
  say "package built in $(secs "$t0" "$(now_ms)") s"
fi
[ -f "$deb" ] || { fail "the package $deb exists"; exit 1; }
testfs=$build/tests/tools/fh_testfs
if [ ! -x "$testfs" ]; then
  say "building fh_testfs in $build"
  { cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} &&
    cmake --build "$build" -j2 --target fh_testfs; } >"$work/testfs-build.log" 2>&1 ||
    { tail -n 20 "$work/testfs-build.log"; fail "fh_testfs builds"; exit 1; }
fi
cp "$deb" "$stage/fuse-healer.deb"
cp "$testfs" "$stage/fh_testfs"

# ---- the host before ---------------------------------------------------------

# Paths on the host that systemd-nspawn or the booted system would write to,
# were it not for the overlay and the private /run. Those absent now must
# still be absent at the end. (Only absent ones are checked: another user of
# this machine may install or remove the package on the host meanwhile.)
host_paths=(/run/systemd/nspawn /run/systemd/nspawn-root /var/lib/machines /etc/systemd/nspawn
  /etc/fuse-healer /usr/sbin/fuse-healerd /usr/sbin/fuse-healerctl /lib/systemd/system/fuse-healer.service
  /etc/systemd/system/multi-user.target.wants/fuse-healer.service /var/lib/fuse-healer
  "/var/tmp/$machine.created")
absent_before=()
for p in "${host_paths[@]}"; do [ -e "$p" ] || [ -L "$p" ] || absent_before+=("$p"); done
dpkg_status() { dpkg-query -W -f='${db:Status-Abbrev}' fuse-healer 2>/dev/null | tr -d ' '; }
pkg_before=$(dpkg_status)
mountinfo_before=$(cat /proc/1/mountinfo)
sentinel=/var/tmp/$machine.sentinel
echo "host" >"$sentinel"

# ---- teardown -----------------------------------------------------------------

nspawn_pid=
leader=
leader_pidns=
cg_dirs=()
watchdog=
finished=0
timed_out=0

poweroff_container() {
  [ -n "$nspawn_pid" ] || return 0
  if kill -0 "$nspawn_pid" 2>/dev/null; then
    local t0 i
    t0=$(now_ms)
    kill -TERM "$nspawn_pid" 2>/dev/null # systemd-nspawn: SIGRTMIN+3 to the container's PID 1 (poweroff)
    for ((i = 0; i < 300; i++)); do
      kill -0 "$nspawn_pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      fail "container powered off within 15 s (killing it)"
      [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
      kill -KILL "$nspawn_pid" 2>/dev/null
    else
      say "container powered off in $(secs "$t0" "$(now_ms)") s"
    fi
  fi
  wait "$nspawn_pid" 2>/dev/null
  nspawn_pid=
}

check_host_after() {
  local p i found=0 d left=0
  # Processes: the container's PID namespace is gone (and with it every
  # process of the booted system, FUSE daemons included).
  if [ -n "$leader_pidns" ]; then
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$leader_pidns" ] && found=$((found + 1))
    done
    check $((found != 0)) "host: no process left in the container's PID namespace ($found)"
  fi
  # Cgroups made for systemd-nspawn (and the ones it made below them).
  for d in "${cg_dirs[@]}"; do
    for ((i = 0; i < 40; i++)); do
      [ -d "$d" ] || break
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$d" ] || break
      sleep 0.05
    done
    [ -d "$d" ] && left=$((left + 1))
  done
  [ ${#cg_dirs[@]} -eq 0 ] ||
    check "$left" "host: the cgroups made for the container are removed (${cg_dirs[*]})"
  # Mounts.
  local mountinfo_after
  mountinfo_after=$(cat /proc/1/mountinfo)
  if [ "$mountinfo_after" = "$mountinfo_before" ]; then
    pass "host: /proc/1/mountinfo unchanged ($(wc -l <<<"$mountinfo_after") lines)"
  else
    fail "host: /proc/1/mountinfo unchanged ($(wc -l <<<"$mountinfo_before") lines before, $(wc -l <<<"$mountinfo_after") after)"
    diff <(echo "$mountinfo_before") <(echo "$mountinfo_after") | sed 's/^/      /'
  fi
  # Files: the sentinel the booted system overwrote, the file it created, the
  # package it installed, the dpkg database, systemd-nspawn's paths.
  check "$([ "$(cat "$sentinel" 2>/dev/null)" = host ]; echo $?)" \
    "host: a file the booted system overwrote is unchanged on the host ($sentinel)"
  local appeared=() pkg_after
  for p in "${absent_before[@]}"; do [ -e "$p" ] || [ -L "$p" ] && appeared+=("$p"); done
  pkg_after=$(dpkg_status)
  check "$([ ${#appeared[@]} -eq 0 ]; echo $?)" \
    "host: none of the ${#absent_before[@]} paths absent before appeared (the package's files, systemd-nspawn's state, a file the booted system created)${appeared[*]:+: ${appeared[*]}}"
  check "$([ "$pkg_before" = ii ] || [ "$pkg_after" != ii ]; echo $?)" \
    "host: the package is not installed in the host's dpkg database (status '${pkg_before:-none}' before, '${pkg_after:-none}' after)"
}

finish() {
  [ "$finished" = 1 ] && return
  finished=1
  trap - EXIT INT TERM
  if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
  [ "$timed_out" = 1 ] && fail "the test finished within FH_SYSTEM_TEST_TIMEOUT=${timeout_s}s"
  if [ "$fails" -gt 0 ] && [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
    say "---- fuse-healer's journal in the container (last 40 lines)"
    timeout 10 nsenter -t "$leader" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      journalctl -u fuse-healer.service --no-pager -n 40 -o short-monotonic 2>&1 | sed 's/^/      /'
    say "---- console (last 15 lines)"
    tail -n 15 "$work/console.log" 2>/dev/null | sed 's/^/      /'
  fi
  poweroff_container
  [ -n "${boot_t0:-}" ] && say "boot to powered off: $(secs "$boot_t0" "$(now_ms)") s"
  check_host_after
  rm -f "$sentinel"
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
  say "$passes passed, $fails failed"
  [ "$fails" -eq 0 ] && exit 0
  exit 1
}
trap finish EXIT
trap 'timed_out=1; finish' TERM
trap 'finish' INT

# The whole boot-to-teardown part is bounded: after timeout_s, SIGTERM to
# this script, which powers the container off and reports.
bash -c 'sleep "$1" & s=$!; trap "kill $s; exit 0" TERM; wait $s; kill -TERM "$2"' _ "$timeout_s" $$ &
watchdog=$!

# ---- boot ---------------------------------------------------------------------

launcher=()
if [ -d /run/systemd/system ]; then
  # PID 1 is systemd: a scope of its own, delegated, for systemd-nspawn
  # --keep-unit (the booted systemd manages the cgroups below it).
  launcher=(systemd-run --quiet --scope --unit="$machine" --property=Delegate=yes --)
else
  # No systemd on the host: systemd-nspawn --keep-unit makes "payload" and
  # "supervisor" cgroups below its own; give it cgroups of its own in the
  # systemd hierarchies (cgroup2, and the v1 name=systemd one of a hybrid
  # layout), removed at the end.
  while IFS= read -r line; do
    pre=${line%% - *}
    post=${line#* - }
    read -r _ _ _ _ mp _ <<<"$pre"
    read -r fstype _ superopts <<<"$post"
    if [ "$fstype" = cgroup2 ] || { [ "$fstype" = cgroup ] && [[ ",$superopts," == *,name=systemd,* ]]; }; then
      mkdir "$mp/$machine" && cg_dirs+=("$mp/$machine")
    fi
  done </proc/self/mountinfo
fi

say "booting this machine's root: systemd-nspawn --machine=$machine (console: $work/console.log)"
boot_t0=$(now_ms)
(
  for d in "${cg_dirs[@]}"; do echo "$BASHPID" >"$d/cgroup.procs"; done
  exec "${launcher[@]}" unshare --mount --propagation private -- \
    bash "$here/nspawn-boot.sh" "$machine" "$stage" systemd.firstboot=off
) </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!

# The container's PID 1: the child of systemd-nspawn that is pid 1 in its
# own PID namespace.
for ((i = 0; i < 200; i++)); do
  for c in $(pgrep -P "$nspawn_pid"); do
    if grep -Eq '^NSpid:[[:space:]]+[0-9]+[[:space:]]+1$' /proc/"$c"/status 2>/dev/null; then
      leader=$c
      break 2
    fi
  done
  kill -0 "$nspawn_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$leader" ]; then
  tail -n 20 "$work/console.log"
  finished=1 # nothing booted: report as a skip, after cleaning up
  poweroff_container
  check_host_after >/dev/null
  rm -f "$sentinel"
  rm -rf "$work"
  kill "$watchdog" 2>/dev/null
  skip "systemd-nspawn could not start a container here (see its messages above)"
fi
leader_pidns=$(readlink /proc/"$leader"/ns/pid)

# Runs a command in the booted system (its namespaces, its root), bounded.
in_ct() { # in_ct SECONDS COMMAND...
  local t=$1
  shift
  timeout -k 2 "$t" nsenter -t "$leader" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# Booted: systemctl is-system-running --wait answers once the boot is over
# (it fails at once while the manager does not listen yet). 60 s at most.
state=
boot_deadline=$((boot_t0 + 60000))
while [ "$(now_ms)" -lt "$boot_deadline" ]; do
  state=$(in_ct $(((boot_deadline - $(now_ms)) / 1000 + 1)) systemctl is-system-running --wait 2>/dev/null)
  case "$state" in running | degraded) break ;; esac
  kill -0 "$nspawn_pid" 2>/dev/null || break
  sleep 0.1
done
boot_ms=$(($(now_ms) - boot_t0))
for ((i = 0; i < 50; i++)); do
  grep -q ' login: ' "$work/console.log" && break
  sleep 0.1
done
login_ms=$(($(now_ms) - boot_t0))
case "$state" in
  running | degraded) ;;
  *)
    tail -n 30 "$work/console.log"
    fail "boot: the container reached multi-user (is-system-running: '${state:-no answer}')"
    exit 1
    ;;
esac
if grep -q ' login: ' "$work/console.log"; then
  pass "boot: systemd booted this machine's root: system $state after $(secs 0 "$boot_ms") s, login prompt seen on the console after $(secs 0 "$login_ms") s"
else
  fail "boot: a login prompt on the console (system $state after $(secs 0 "$boot_ms") s)"
fi
[ "$state" = degraded ] &&
  say "note: failed units in the booted system: $(in_ct 10 systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
say "booted: $(in_ct 10 systemd-analyze time 2>/dev/null | head -n 1)"

# The booted system writes to the sentinel and creates a file: both must stay
# in its overlay.
in_ct 10 sh -c "echo container > '$sentinel' && touch '/var/tmp/$machine.created'"

# ---- install ------------------------------------------------------------------

write_config() { # write_config PORT [EXTRA_HEAL_LINE]
  in_ct 10 sh -c "cat > $ct_config" <<EOF
# tests/system/nspawn-test.sh
[kubelet]
root_dir = "$ct_root_dir"
[heal]
${2:-# (nothing more)}
[metrics]
listen = "127.0.0.1:$1"
EOF
}
# The host's root may have the package installed (and enabled: it then
# started at boot with the host's config): purge it from the booted system,
# so that the test's install is a first install.
if [ -n "$(in_ct 10 dpkg-query -W -f='${db:Status-Abbrev}' fuse-healer 2>/dev/null | tr -d ' ' | grep -v '^un$')" ]; then
  in_ct 60 dpkg --purge fuse-healer >"$work/purge.log" 2>&1 ||
    { sed 's/^/      /' "$work/purge.log"; fail "the package found in the host's root purged from the booted system"; }
  say "note: the host's root has fuse-healer installed; purged it from the booted system first"
fi
# The test's node: a shared tmpfs holding kubelet/pods and the FUSE source
# (mounts made below it propagate between peers, as on a node).
in_ct 10 sh -c "mkdir -p $ct_base && mount -t tmpfs -o mode=0755 fh-system-test $ct_base &&
  mount --make-shared $ct_base && mkdir -p $ct_root_dir/pods $ct_src /etc/fuse-healer"
write_config $port_a

metrics() { # metrics PORT: GET /metrics from inside the booted system
  in_ct 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3; timeout 5 cat <&3" 2>/dev/null
}
show() { in_ct 10 systemctl show fuse-healer.service "$@"; }
# The unit's journal entries since the install (a package already in the
# host's root may have run at boot), one JSON object per line.
journal_since=0
journal_json() {
  in_ct 20 journalctl -u fuse-healer.service -o json --no-pager "$@" |
    jq -c --argjson since "$journal_since" 'select((.__REALTIME_TIMESTAMP | tonumber) >= $since)'
}

# An image built for containers may forbid starting services from maintainer
# scripts (policy-rc.d exits 101); a booted node does not.
if in_ct 5 test -e /usr/sbin/policy-rc.d; then
  in_ct 5 mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.fh-system-test
  say "note: moved /usr/sbin/policy-rc.d aside in the booted system (it forbids starting services)"
fi
# --force-confold: keep the config written above (the package ships one).
journal_since=$(in_ct 5 date +%s%6N)
t0=$(now_ms)
in_ct 120 dpkg -i --force-confold --force-confdef "$ct_tools/fuse-healer.deb" >"$work/dpkg.log" 2>&1
rc=$?
t1=$(now_ms)
# Right after the start job returned (postinst: deb-systemd-invoke start):
# a notify service is active only once READY=1 came, after the daemon had
# armed its control socket and metrics listener; they must answer at once.
in_ct 10 fuse-healerctl status >"$work/status0.txt" 2>&1
ctl_rc=$?
metrics $port_a >"$work/metrics0.txt"
met_rc=$?
if [ $rc -ne 0 ]; then sed 's/^/      /' "$work/dpkg.log"; fi
check $rc "install: dpkg -i fuse-healer.deb in the booted system (offline; $(secs "$t0" "$t1") s, enables and starts the unit)"

# ---- 1. start -----------------------------------------------------------------

props=$(show -p ActiveState -p SubState -p Type -p WatchdogUSec -p NRestarts -p UnitFileState -p MainPID)
prop() { sed -n "s/^$1=//p" <<<"$props"; }
check "$([ "$(prop ActiveState)/$(prop SubState)" = active/running ]; echo $?)" \
  "start: ActiveState=$(prop ActiveState) SubState=$(prop SubState) (active/running), UnitFileState=$(prop UnitFileState)"
check "$([ "$(prop Type)" = notify ]; echo $?)" "start: Type=$(prop Type) (notify)"
wd=$(prop WatchdogUSec)
check "$([ -n "$wd" ] && [ "$wd" != 0 ] && [ "$wd" != infinity ]; echo $?)" "start: WatchdogUSec=$wd (set)"
check "$([ "$(prop NRestarts)" = 0 ]; echo $?)" "start: NRestarts=$(prop NRestarts) (started once, no crash)"
# Set when the unit became active, then on each WATCHDOG=1 (checked before
# the stop, once the daemon has pinged).
watchdog_ts0=$(show -p WatchdogTimestampMonotonic --value)

journal_json >"$work/journal1.json"
start_line=$(jq -rs '[.[] | select((.MESSAGE|type)=="string" and (.MESSAGE|contains(" starting: ")))] | first | .MESSAGE // "no start-up line"' "$work/journal1.json")
say "daemon: $start_line"
# The host's fusectl is bound into the container (nspawn-boot.sh): under the
# unit's hardening the daemon must still detect dead connections with it.
if [ "$(stat -f -c %T /sys/fs/fuse/connections 2>/dev/null)" = fusectl ]; then
  # pidfd: the death watch (fuse_fdinfo, Linux 6.16+), which confirms each
  # death with fusectl; fusectl alone on older kernels.
  check "$([[ "$start_line" == *"death detection=pidfd"* || "$start_line" == *"death detection=fusectl"* ]]; echo $?)" \
    "start: under the unit the daemon detects dead FUSE connections through fusectl (death detection=pidfd or fusectl)"
fi
# The unit's SystemCallFilter= is a deny-list so that calls systemd 252
# cannot name stay allowed: on a kernel with a usable statmount (6.13+: fs
# subtype and mount source), the daemon must use it under the unit too.
kernel=$(uname -r)
if printf '6.13\n%s\n' "${kernel%%-*}" | sort -V -C; then
  check "$([[ "$start_line" == *"statmount=yes"* ]]; echo $?)" \
    "start: under the unit's system call filter statmount is allowed (kernel $kernel: statmount=yes, heals armed)"
else
  say "note: kernel $kernel < 6.13: statmount not checked"
fi
# fanotify mount notifications (6.14+): fanotify_init/fanotify_mark are in
# @privileged, which the unit does not deny as a whole, and listmount is
# unknown to systemd 252 like statmount.
if printf '6.14\n%s\n' "${kernel%%-*}" | sort -V -C; then
  check "$([[ "$start_line" == *"fanotify_mount=yes"* && "$start_line" == *"mount tracking=fanotify"* ]]; echo $?)" \
    "start: under the unit the daemon tracks mounts through fanotify (fanotify_mount=yes, mount tracking=fanotify)"
fi
ready_ts=$(jq -rs '[.[] | select((.MESSAGE|type)=="string" and (.MESSAGE|startswith("ready: watching")))]
  | first | (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP) // empty' "$work/journal1.json")
started_ts=$(jq -rs --arg id "$mid_started" '[.[] | select(.MESSAGE_ID==$id)]
  | first | (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP) // empty' "$work/journal1.json")
if [ -n "$ready_ts" ] && [ -n "$started_ts" ] && [ "$ready_ts" -lt "$started_ts" ]; then
  pass "start: active only after READY: the daemon's \"ready: watching\" entry was sent $((started_ts - ready_ts)) us before systemd's \"Started\" entry"
else
  fail "start: active only after READY: \"ready: watching\" (${ready_ts:-none}) before \"Started\" (${started_ts:-none}) in journalctl -u fuse-healer -o json"
fi
check $ctl_rc "start: fuse-healerctl status answers as soon as the start job returned"
check "$([ $met_rc -eq 0 ] && grep -q '^fuse_healer_build_info{' "$work/metrics0.txt"; echo $?)" \
  "start: GET /metrics on 127.0.0.1:$port_a answers as soon as the start job returned"

# ---- 2. reload ----------------------------------------------------------------

count_json() { # count_json JQ_SELECT: entries of the unit's journal that match
  journal_json | jq -s "[.[] | select($1)] | length"
}
wait_count() { # wait_count JQ_SELECT MIN: waits (5 s) until count_json >= MIN
  local i n=0
  for ((i = 0; i < 50; i++)); do
    n=$(count_json "$1")
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
main_pid=$(prop MainPID)
sel_reloaded='(.MESSAGE|type)=="string" and (.MESSAGE|startswith("config reloaded from '$ct_config'"))'
sel_config_error='.MESSAGE_ID=="'$mid_config_error'"'

write_config $port_b
in_ct 20 systemctl reload fuse-healer.service
rc=$?
wait_count "$sel_reloaded" 1
reloaded=$?
props=$(show -p ActiveState -p SubState -p MainPID)
check "$([ $rc -eq 0 ] && [ $reloaded -eq 0 ]; echo $?)" \
  "reload (valid config): systemctl reload exits 0 and the journal has \"config reloaded from $ct_config\""
check "$([ "$(prop ActiveState)/$(prop SubState)" = active/running ] && [ "$(prop MainPID)" = "$main_pid" ]; echo $?)" \
  "reload (valid config): still active/running, same MainPID $main_pid"
sleep 0.2
metrics $port_b | grep -q '^fuse_healer_build_info{'
b_ok=$?
metrics $port_a >/dev/null
a_gone=$?
check "$([ $b_ok -eq 0 ] && [ $a_gone -ne 0 ]; echo $?)" \
  "reload (valid config): the new config is in use (metrics moved from :$port_a to :$port_b)"

bad_key=no_such_key
write_config $port_c "$bad_key = true"
bad_line=$(in_ct 5 grep -n "^$bad_key = " "$ct_config" | cut -d: -f1)
in_ct 20 systemctl reload fuse-healer.service
rc=$?
wait_count "$sel_config_error" 1
logged=$?
err=$(journal_json | jq -c -s "[.[] | select($sel_config_error)] | last
  | {MESSAGE, PRIORITY, CONFIG_FILE, CONFIG_LINE, CONFIG_COLUMN, _SYSTEMD_UNIT}")
props=$(show -p ActiveState -p SubState -p MainPID)
check "$([ "$(prop ActiveState)/$(prop SubState)" = active/running ] && [ "$(prop MainPID)" = "$main_pid" ]; echo $?)" \
  "reload (invalid config): still active/running, same MainPID $main_pid (systemctl reload exit $rc)"
check "$([ $logged -eq 0 ] &&
  [ "$(jq -r .CONFIG_FILE <<<"$err")" = "$ct_config" ] &&
  [ "$(jq -r .CONFIG_LINE <<<"$err")" = "$bad_line" ] &&
  [ "$(jq -r .PRIORITY <<<"$err")" = 3 ] &&
  [ "$(jq -r ._SYSTEMD_UNIT <<<"$err")" = fuse-healer.service ] &&
  jq -e '.MESSAGE | contains("keeping the old one")' <<<"$err" >/dev/null; echo $?)" \
  "reload (invalid config): journal entry MESSAGE_ID=$mid_config_error CONFIG_FILE=$ct_config CONFIG_LINE=$bad_line: $err"
sleep 0.2
metrics $port_b | grep -q '^fuse_healer_build_info{'
b_ok=$?
metrics $port_c >/dev/null
c_used=$?
check "$([ $b_ok -eq 0 ] && [ $c_used -ne 0 ]; echo $?)" \
  "reload (invalid config): the old config stays in use (metrics still on :$port_b, not on :$port_c)"
write_config $port_b
in_ct 20 systemctl reload fuse-healer.service
wait_count "$sel_reloaded" 2
check $? "reload: the valid config restored and reloaded"

# ---- 3. heal ------------------------------------------------------------------

# The dataset's FUSE daemon as a service of the booted system, like a CSI
# node plugin's; the pod volume bound from it read-only, like the CSI driver
# does (and kubelet's vol_data.json beside it).
start_fuse() { # start_fuse GENERATION
  in_ct 10 systemd-run --quiet --collect --unit="fh-system-test-fuse$1" \
    "$ct_tools/fh_testfs" "$ct_src" --generation "$1" -f || return 1
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(in_ct 5 cat "$ct_src/generation" 2>/dev/null)" = "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
start_fuse 1
check $? "heal: fh_testfs (generation 1) mounted at $ct_src by a service of the booted system"
vol_dir=$(dirname "$ct_target")
in_ct 10 sh -c "mkdir -p '$ct_target' &&
  printf '%s' '{\"driverName\":\"fuse.csi.fh-system-test.io\",\"specVolID\":\"$volume\",\"volumeHandle\":\"default-fh-ds\",\"volumeLifecycleMode\":\"Persistent\"}' > '$vol_dir/vol_data.json' &&
  mount --bind '$ct_src' '$ct_target' && mount -o remount,bind,ro '$ct_target'"
check $? "heal: pod volume bound read-only from the source at $ct_target"

learned=1
for ((i = 0; i < 100; i++)); do
  if in_ct 5 grep -qF "\"$ct_target\"" /var/lib/fuse-healer/origins.json 2>/dev/null; then learned=0; break; fi
  sleep 0.1
done
check $learned "heal: the daemon learned the target's origin (/var/lib/fuse-healer/origins.json)"

fuse1_pid=$(in_ct 5 systemctl show -p MainPID --value fh-system-test-fuse1.service)
if [[ "$start_line" == *"death detection=pidfd"* ]]; then
  # The walk of /proc that finds the server follows the reconcile that
  # learned the target by a few milliseconds.
  wait_count '(.MESSAGE|type)=="string" and (.MESSAGE|contains("watching FUSE server fh_testfs (pid '"$fuse1_pid"')"))' 1
  check $? "heal: the daemon watches the FUSE server (\"watching FUSE server fh_testfs (pid $fuse1_pid)\")"
fi
in_ct 5 kill -9 "$fuse1_pid"
dead=1
for ((i = 0; i < 50; i++)); do
  out=$(in_ct 5 cat "$ct_target/generation" 2>&1)
  if [[ "$out" == *"Transport endpoint is not connected"* ]]; then dead=0; break; fi
  sleep 0.1
done
check $dead "heal: kill -9 of the FUSE daemon (pid $fuse1_pid): the pod volume fails with ENOTCONN"
# With the death watch the kill is logged at once, before any mount event:
# the /proc walk (CAP_SYS_PTRACE) and pidfd_open (@process) work under the
# unit's hardening.
if [[ "$start_line" == *"death detection=pidfd"* ]]; then
  mid_server_died=c24be80fe7524603884b84ffac4c3bf0
  sel_died='.MESSAGE_ID=="'$mid_server_died'" and .SERVER_PID=="'$fuse1_pid'"'
  wait_count "$sel_died" 1
  got_died=$?
  died_json=$(journal_json | jq -c -s "[.[] | select($sel_died)] | last")
  say "journal \"FUSE server died\": $(jq -c '{MESSAGE_ID, EVENT, CONNECTION, SERVER_PID, SERVER_COMM, SOURCE, TARGET, OUTAGE_START_REALTIME_USEC, DETECTION_LATENCY_USEC}' <<<"$died_json")"
  check "$([ $got_died -eq 0 ] && [ "$(jq -r '.SERVER_COMM // empty' <<<"$died_json")" = fh_testfs ] &&
    [ "$(jq -r '.TARGET // empty' <<<"$died_json")" = "$ct_target" ]; echo $?)" \
    "heal: the kill -9 is in the journal as \"FUSE server died\" (MESSAGE_ID=$mid_server_died SERVER_PID=$fuse1_pid SERVER_COMM=fh_testfs TARGET) before the stale source is unmounted"
fi
# What a restarted FUSE daemon's entrypoint does: drop the stale source, mount again.
in_ct 5 umount -l "$ct_src"
sel_broken='.MESSAGE_ID=="'$mid_broken'" and .TARGET=="'$ct_target'"'
wait_count "$sel_broken" 1
check $? "heal: \"mount broken\" (MESSAGE_ID=$mid_broken) in the journal once the stale source is unmounted"

t0=$(now_ms)
start_fuse 2
check $? "heal: fh_testfs (generation 2) mounted again at $ct_src"
healed=1
for ((i = 0; i < 100; i++)); do
  [ "$(in_ct 5 cat "$ct_target/generation" 2>/dev/null)" = 2 ] && { healed=0; break; }
  sleep 0.05
done
check $healed "heal: the pod volume reads generation 2 (within $(secs "$t0" "$(now_ms)") s of starting the new FUSE daemon, nsenter polls included)"

sel_healed='.MESSAGE_ID=="'$mid_healed'" and .TARGET=="'$ct_target'"'
wait_count "$sel_healed" 1
got_healed=$?
healed_json=$(journal_json | jq -c -s "[.[] | select($sel_healed)] | last")
broken_json=$(journal_json | jq -c -s "[.[] | select($sel_broken)] | last")
say "journal \"mount healed\": $(jq -c '{MESSAGE_ID, EVENT, TARGET, POD_UID, VOLUME, DRIVER, VOLUME_HANDLE, SOURCE, FSTYPE, STRATEGY, OUTAGE_USEC, HEAL_USEC, PROBE_AFTER_EVENT_USEC, HEAL_START_AFTER_EVENT_USEC, SINCE_EVENT_USEC, NAMESPACES_HEALED, _SYSTEMD_UNIT}' <<<"$healed_json")"
field() { jq -r ".$2 // empty" <<<"$1"; }
bad_fields=()
[ "$(field "$healed_json" TARGET)" = "$ct_target" ] || bad_fields+=(TARGET)
[ "$(field "$healed_json" POD_UID)" = "$pod_uid" ] || bad_fields+=(POD_UID)
[ "$(field "$healed_json" VOLUME)" = "$volume" ] || bad_fields+=(VOLUME)
[ "$(field "$healed_json" DRIVER)" = fuse.csi.fh-system-test.io ] || bad_fields+=(DRIVER)
[ "$(field "$healed_json" VOLUME_HANDLE)" = default-fh-ds ] || bad_fields+=(VOLUME_HANDLE)
[ "$(field "$healed_json" SOURCE)" = "$ct_src" ] || bad_fields+=(SOURCE)
[ "$(field "$healed_json" FSTYPE)" = fuse.fh_testfs ] || bad_fields+=(FSTYPE)
[[ "$(field "$healed_json" STRATEGY)" =~ ^(replace|stack)$ ]] || bad_fields+=(STRATEGY)
[ "$(field "$healed_json" EVENT)" = healed ] || bad_fields+=(EVENT)
[[ "$(field "$healed_json" OUTAGE_USEC)" =~ ^[1-9][0-9]*$ ]] || bad_fields+=(OUTAGE_USEC)
[[ "$(field "$healed_json" HEAL_USEC)" =~ ^[0-9]+$ ]] || bad_fields+=(HEAL_USEC)
[ "$(field "$healed_json" _SYSTEMD_UNIT)" = fuse-healer.service ] || bad_fields+=(_SYSTEMD_UNIT)
check "$([ $got_healed -eq 0 ] && [ ${#bad_fields[@]} -eq 0 ]; echo $?)" \
  "heal: journalctl -u fuse-healer -o json has \"mount healed\" MESSAGE_ID=$mid_healed with TARGET POD_UID VOLUME DRIVER VOLUME_HANDLE SOURCE FSTYPE STRATEGY OUTAGE_USEC HEAL_USEC${bad_fields[*]:+ (wrong or missing: ${bad_fields[*]})}"
bad_fields=()
[ "$(field "$broken_json" POD_UID)" = "$pod_uid" ] || bad_fields+=(POD_UID)
[ "$(field "$broken_json" FSTYPE)" = fuse.fh_testfs ] || bad_fields+=(FSTYPE)
[ -n "$(field "$broken_json" REASON)" ] || bad_fields+=(REASON)
[ "$(field "$broken_json" _SYSTEMD_UNIT)" = fuse-healer.service ] || bad_fields+=(_SYSTEMD_UNIT)
check "${#bad_fields[@]}" \
  "heal: \"mount broken\" entry has TARGET POD_UID FSTYPE REASON (REASON=\"$(field "$broken_json" REASON)\")${bad_fields[*]:+ (wrong or missing: ${bad_fields[*]})}"

status_txt=$(in_ct 10 fuse-healerctl status 2>&1)
rc=$?
row=$(awk -v t="$ct_target" '$3 == t' <<<"$status_txt")
say "fuse-healerctl status: $row"
check "$([ $rc -eq 0 ] && [ "$(awk '{print $5}' <<<"$row")" = healthy ] && [ "$(awk '{print $6}' <<<"$row")" = 1 ]; echo $?)" \
  "heal: fuse-healerctl status lists the target healthy with HEALS 1"
status_json=$(in_ct 10 fuse-healerctl status --json 2>&1)
check "$(jq -e --arg t "$ct_target" --arg u "$pod_uid" \
  '.ok == true and .daemon.heals >= 1 and ([.targets[] | select(.target == $t and .pod_uid == $u and .state == "healthy" and .heals == 1)] | length) == 1' \
  <<<"$status_json" >/dev/null; echo $?)" \
  "heal: fuse-healerctl status --json agrees (target healthy, heals 1; daemon heals $(jq -r .daemon.heals <<<"$status_json" 2>/dev/null))"

m=$(metrics $port_b)
say "metrics: $(grep -E '^fuse_healer_(heals_total\{result="healed"\}|targets\{state="healthy"\}|broken_detected_total|heal_duration_seconds_count) ' <<<"$m" | tr '\n' ' ')"
check "$(grep -Eq '^fuse_healer_heals_total\{result="healed"\} [1-9][0-9]*$' <<<"$m" &&
  grep -Eq '^fuse_healer_targets\{state="healthy"\} 1$' <<<"$m" &&
  grep -Eq '^fuse_healer_broken_detected_total [1-9]' <<<"$m"; echo $?)" \
  "heal: /metrics shows fuse_healer_heals_total{result=\"healed\"} >= 1, one healthy target, broken_detected_total >= 1"

# ---- 4. stop ------------------------------------------------------------------

# The daemon pings WATCHDOG=1 every WatchdogUSec/2 (5 s): systemd must have
# taken one by now or within the next 6 s.
pinged=1
for ((i = 0; i < 60; i++)); do
  watchdog_ts=$(show -p WatchdogTimestampMonotonic --value)
  if [ -n "$watchdog_ts" ] && [ "$watchdog_ts" != "$watchdog_ts0" ]; then pinged=0; break; fi
  sleep 0.1
done
check $pinged "watchdog: systemd took a WATCHDOG=1 from the daemon (WatchdogTimestampMonotonic $watchdog_ts0 -> $watchdog_ts)"

out=$(in_ct 20 bash -c 's=$(date +%s%N); systemctl stop fuse-healer.service; rc=$?; e=$(date +%s%N)
  echo "$rc $(( (e - s) / 1000 ))"')
read -r rc stop_us <<<"$out"
check "$([ "$rc" = 0 ] && [ "${stop_us:-999999999}" -lt 1000000 ]; echo $?)" \
  "stop: systemctl stop took $(printf '%d.%03d' $((${stop_us:-0} / 1000000)) $((${stop_us:-0} % 1000000 / 1000))) s (< 1 s), exit $rc"
props=$(show -p ActiveState -p SubState -p Result -p ExecMainStatus -p ExecMainCode)
check "$([ "$(prop ActiveState)/$(prop SubState)/$(prop Result)" = inactive/dead/success ] && [ "$(prop ExecMainStatus)" = 0 ]; echo $?)" \
  "stop: ActiveState=$(prop ActiveState) SubState=$(prop SubState) Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus) (inactive, not failed)"
in_ct 10 fuse-healerctl status >/dev/null 2>&1
rc=$?
check "$([ $rc -eq 69 ] && ! in_ct 5 test -e /run/fuse-healer; echo $?)" \
  "stop: fuse-healerctl says not running (exit $rc), /run/fuse-healer removed"
check "$([ "$(in_ct 5 cat "$ct_target/generation" 2>/dev/null)" = 2 ]; echo $?)" \
  "stop: the healed pod volume still reads generation 2"

finish
