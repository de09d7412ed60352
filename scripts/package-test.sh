#!/usr/bin/env bash
# Package test: builds the .deb and the .rpm (scripts/package.sh: lintian and
# rpmlint included), checks the .rpm's contents, then installs the .deb on
# this machine, checks what it installed, purges it and checks that nothing is
# left. Run by scripts/test.sh after ctest (as root).
#
#   scripts/package-test.sh [--no-build]
#
# --no-build tests the packages already in dist/ (made by scripts/package.sh).
# Needs root: it installs and purges the fuse-healer package. It refuses to
# run where fuse-healer is already installed (by dpkg or by hand).
#
# The daemon is never started: it would mount fusectl on this machine and
# watch its real /var/lib/kubelet. While the package is installed and purged,
# a temporary /usr/sbin/policy-rc.d denies every service action (exit 101;
# dh_installsystemd's maintainer scripts start and stop the unit through
# deb-systemd-invoke, which obeys it). An existing policy-rc.d is moved aside
# and put back on exit, whatever happens (a run killed before it could clean
# up is repaired by the next run). The test then checks that no fuse-healerd
# process runs and that PID 1's mount table has not changed.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=$top/dist
build=1
case "${1:-}" in
  "") ;;
  --no-build) build=0 ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 64 ;;
esac

log() { echo "package-test: $*"; }
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs and purges the .deb)"

t0=$SECONDS
if [ $build = 1 ]; then
  "$top/scripts/package.sh"
fi
t_build=$((SECONDS - t0))

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
upstream=${version%-*}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=$dist/fuse-healer_${version}_${arch}.deb
rpm_release=$(rpmspec -q --srpm --qf '%{RELEASE}' "$top/packaging/rpm/fuse-healer.spec")
rpmfile=$dist/fuse-healer-$upstream-$rpm_release.$(rpm --eval '%{_arch}').rpm
[ -f "$deb" ] || fail "$deb not found (run scripts/package.sh)"
[ -f "$rpmfile" ] || fail "$rpmfile not found (run scripts/package.sh)"

tmp=$(mktemp -d /tmp/fuse-healer-package-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# --- the expected content ----------------------------------------------------
# Both packages must ship exactly the same files, after this normalization:
# the unit directory is @unitdir@ (/lib/systemd/system in the .deb,
# /usr/lib/systemd/system in the .rpm), man pages and documents lose their .gz
# (dpkg compresses documents, rpm does not), and the format's own metadata is
# dropped (the .deb's changelog.Debian.gz, copyright and lintian overrides; the
# .rpm's /usr/lib/.build-id links). Every expected file must be there; besides
# them only more fuse-healer programs and man pages are accepted; anything
# else fails the test.
expected=(
  /etc/fuse-healer/fuse-healer.toml
  /usr/sbin/fuse-healerd
  /usr/sbin/fuse-healerctl
  @unitdir@/fuse-healer.service
  /usr/share/man/man5/fuse-healer.toml.5
  /usr/share/man/man8/fuse-healerd.8
  /usr/share/man/man8/fuse-healerctl.8
  /usr/share/doc/fuse-healer/README.md
  /usr/share/doc/fuse-healer/PERFORMANCE.md
  /usr/share/doc/fuse-healer/SYSTEMD.md
  /usr/share/doc/fuse-healer/METRICS.md
)

# stdin: paths of a package's files (not directories); stdout: normalized.
normalize() {
  sed -e '\#^/usr/share/doc/fuse-healer/changelog\.Debian\.gz$#d' \
      -e '\#^/usr/share/doc/fuse-healer/copyright$#d' \
      -e '\#^/usr/share/lintian/overrides/fuse-healer$#d' \
      -e '\#^/usr/lib/\.build-id/#d' \
      -e 's#^\(/usr\)\{0,1\}/lib/systemd/system/#@unitdir@/#' \
      -e 's#^\(/usr/share/\(man\|doc\)/.*\)\.gz$#\1#' | sort -u
}

# $1: name of the package; $2: file with its normalized list.
check_content() {
  local what=$1 list=$2 f
  for f in "${expected[@]}"; do
    grep -qxF -- "$f" "$list" || fail "$what: $f is missing"
  done
  while IFS= read -r f; do
    case " ${expected[*]} " in *" $f "*) continue ;; esac
    case "$f" in
      /usr/sbin/fuse-healer*|/usr/bin/fuse-healer*|/usr/share/man/man[1-8]/fuse-healer*) ;;
      *) fail "$what: unexpected file $f (add it to the expected list of scripts/package-test.sh)" ;;
    esac
  done <"$list"
}

# --- the .rpm ------------------------------------------------------------------
log "checking ${rpmfile##*/} (rpm -qlp)"
rpm -qp --qf '[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILENAMES}\n]' "$rpmfile" >"$tmp/rpm-files"
rpm -qlp "$rpmfile" >"$tmp/rpm-qlp"
# rpm -qlp lists directories too: leave out those the package owns.
awk -F'|' '$2 ~ /^d/ { print $3 }' "$tmp/rpm-files" >"$tmp/rpm-dirs"
grep -vxFf "$tmp/rpm-dirs" "$tmp/rpm-qlp" | normalize >"$tmp/rpm-list"
check_content "${rpmfile##*/}" "$tmp/rpm-list"
grep -qxF 'cn|-rw-r--r--|/etc/fuse-healer/fuse-healer.toml' "$tmp/rpm-files" \
  || fail "rpm: /etc/fuse-healer/fuse-healer.toml is not %config(noreplace) 0644"
[ "$(rpm -qpc "$rpmfile")" = /etc/fuse-healer/fuse-healer.toml ] || fail "rpm: config files: $(rpm -qpc "$rpmfile")"
grep -qxF '|drwx------|/var/lib/fuse-healer' "$tmp/rpm-files" || fail "rpm: no state dir /var/lib/fuse-healer (0700)"
grep -qxF '|-rwxr-xr-x|/usr/sbin/fuse-healerd' "$tmp/rpm-files" || fail "rpm: /usr/sbin/fuse-healerd is not 0755"
rpm -qp --scripts "$rpmfile" >"$tmp/rpm-scripts"
grep -q 'systemctl.*preset.*fuse-healer\.service\|systemd-update-helper install-system-units fuse-healer\.service' \
  "$tmp/rpm-scripts" || fail "rpm: no systemd preset in %post"
! grep -q '%' "$tmp/rpm-scripts" || fail "rpm: unexpanded macro in the scriptlets: $(grep '%' "$tmp/rpm-scripts")"

# --- installing the .deb ---------------------------------------------------------
# One package test at a time on a machine (several worktrees may run theirs).
exec 9>/run/lock/fuse-healer-package-test.lock
flock -w 3600 9 || fail "another package test holds /run/lock/fuse-healer-package-test.lock"

policy=/usr/sbin/policy-rc.d
backup=/usr/sbin/policy-rc.d.fuse-healer-package-test
marker="# fuse-healer package test: temporary policy-rc.d"
# Repair what a killed earlier run left behind.
if [ -e "$backup" ] || [ -L "$backup" ]; then
  if [ -e "$policy" ] && ! grep -qxF "$marker" "$policy"; then
    fail "$backup (left by an earlier run) is next to a $policy that is not the test's: restore it by hand"
  fi
  mv -f "$backup" "$policy"
  log "restored $policy left aside by an earlier run"
elif [ -f "$policy" ] && grep -qxF "$marker" "$policy"; then
  rm -f "$policy"
  log "removed the temporary $policy left by an earlier run"
fi

status=$(dpkg-query -W -f='${db:Status-Status}' fuse-healer 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] \
  || fail "fuse-healer is on this machine (dpkg status: $status); the test would purge it: refusing" \
          "(if an earlier test run was killed: apt-get purge fuse-healer; FUSE_HEALER_PACKAGE_TEST=0 skips" \
          "this test in scripts/test.sh)"
for p in /usr/sbin/fuse-healerd /etc/fuse-healer /var/lib/fuse-healer /lib/systemd/system/fuse-healer.service \
         /etc/systemd/system/fuse-healer.service; do
  if [ -e "$p" ]; then
    fail "$p exists (installed by hand?); the test would overwrite or remove it: refusing" \
         "(FUSE_HEALER_PACKAGE_TEST=0 skips this test in scripts/test.sh)"
  fi
done

# apt-get runs in a session of its own: a signal sent to the test's process
# group (Ctrl-C, timeout(1)) must not interrupt dpkg halfway through an
# unpack. The test stops, its cleanup purges the package after apt-get is done
# (dpkg's lock), then restores policy-rc.d.
apt() { DEBIAN_FRONTEND=noninteractive setsid -w apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"; }

installed=0
had_policy=0
exec 7>&1 8>&2  # the cleanup may run inside a redirected command (apt ... >log)
cleanup() {
  local rc=$?
  set +e
  exec 1>&7 2>&8
  if [ $installed = 1 ]; then
    echo "package-test: purging fuse-healer after a failure" >&2
    if ! apt purge fuse-healer >"$tmp/cleanup-purge.log" 2>&1; then
      cat "$tmp/cleanup-purge.log" >&2
      dpkg --purge --force-remove-reinstreq fuse-healer >&2
    fi
  fi
  if [ -f "$policy" ] && grep -qxF "$marker" "$policy"; then rm -f "$policy"; fi
  if [ $had_policy = 1 ]; then mv -f "$backup" "$policy"; fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -e "$policy" ] || [ -L "$policy" ]; then
  had_policy=1
  mv "$policy" "$backup"
fi
printf '#!/bin/sh\n%s\n# (scripts/package-test.sh): no service starts while fuse-healer is installed and purged.\nexit 101\n' \
  "$marker" >"$policy.new"
chmod 0755 "$policy.new"
mv -f "$policy.new" "$policy"
rc=0; "$policy" fuse-healer.service start || rc=$?
[ $rc = 101 ] || fail "$policy does not deny (exit $rc)"

# No fuse-healerd of the package may run (fuse-healerd processes of build trees,
# e.g. tests of other worktrees, are not the package's and are ignored).
daemon_pids() {
  # Only processes of this system: same PID and mount namespace as PID 1 as
  # we see it. A container on this machine (e.g. the systemd-nspawn system
  # test, or a node image under test) may run its own /usr/sbin/fuse-healerd,
  # which this package's installation did not start.
  local d exe our_pidns our_mntns
  our_pidns=$(readlink /proc/self/ns/pid)
  our_mntns=$(readlink /proc/1/ns/mnt 2>/dev/null || true)
  for d in /proc/[0-9]*; do
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    case "$exe" in /usr/sbin/fuse-healerd|"/usr/sbin/fuse-healerd (deleted)") ;; *) continue ;; esac
    [ "$(readlink "$d/ns/pid" 2>/dev/null)" = "$our_pidns" ] || continue
    [ -z "$our_mntns" ] || [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$our_mntns" ] || continue
    echo "${d#/proc/}"
  done
}
# $1: when.
check_not_running() {
  local pids
  pids=$(daemon_pids)
  [ -z "$pids" ] || fail "$1: /usr/sbin/fuse-healerd runs (pid $pids)"
  if [ -d /run/systemd/system ]; then
    ! systemctl -q is-active fuse-healer.service || fail "$1: fuse-healer.service is active"
  fi
  # (read into a file first: cmp takes the size 0 of a /proc file for real)
  cat /proc/1/mountinfo >"$tmp/mountinfo.now"
  cmp -s "$tmp/mountinfo.now" "$tmp/mountinfo.before" || {
    diff "$tmp/mountinfo.before" "$tmp/mountinfo.now" >&2
    fail "$1: PID 1's mount table changed"
  }
}

cat /proc/1/mountinfo >"$tmp/mountinfo.before"
# man(1), run by systemd-analyze verify, may cache formatted pages; those the
# test causes are removed after the purge.
find /var/cache/man -name 'fuse-healer*' 2>/dev/null | sort >"$tmp/catman.before"
t1=$SECONDS
log "apt-get install ${deb#"$top"/} (policy-rc.d: no service starts)"
installed=1
apt install --no-install-recommends "$deb" >"$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log" >&2
  fail "apt-get install failed"
}
[ "$(dpkg-query -W -f='${db:Status-Status} ${Version}' fuse-healer)" = "installed $version" ] \
  || fail "dpkg status after install: $(dpkg-query -W -f='${Status} ${Version}' fuse-healer)"
check_not_running "after install"

# Installed files (dpkg -L), against the expected list and the .rpm's.
dpkg -L fuse-healer >"$tmp/deb-paths"
while IFS= read -r p; do
  if [ -d "$p" ]; then continue; fi
  [ -e "$p" ] || fail "dpkg -L lists $p but it is not there"
  echo "$p"
done <"$tmp/deb-paths" >"$tmp/deb-files"
normalize <"$tmp/deb-files" >"$tmp/deb-list"
check_content "fuse-healer (dpkg -L)" "$tmp/deb-list"
diff -u "$tmp/deb-list" "$tmp/rpm-list" >"$tmp/list.diff" || {
  cat "$tmp/list.diff" >&2
  fail "the .deb (-) and the .rpm (+) ship different files"
}
log "dpkg -L: $(wc -l <"$tmp/deb-files") files, the same as the .rpm's: $(tr '\n' ' ' <"$tmp/deb-list")"

# The conffile: registered with dpkg, with the md5sum of conf/fuse-healer.toml.
conffiles=$(dpkg-query -W -f='${Conffiles}' fuse-healer | sed '/^$/d')
want=" /etc/fuse-healer/fuse-healer.toml $(md5sum <"$top/conf/fuse-healer.toml" | cut -d' ' -f1)"
[ "$conffiles" = "$want" ] || fail "conffiles: got \"$conffiles\", want \"$want\""
cmp -s /etc/fuse-healer/fuse-healer.toml "$top/conf/fuse-healer.toml" || fail "/etc/fuse-healer/fuse-healer.toml differs from conf/"
log "conffile: $conffiles"

# The daemon's command line (no side effects: --version, --check-config).
out=$(/usr/sbin/fuse-healerd --version)
[ "$out" = "fuse-healerd $upstream" ] || fail "fuse-healerd --version: \"$out\""
out=$(/usr/sbin/fuse-healerd --config /etc/fuse-healer/fuse-healer.toml --check-config)
[ "$out" = "config OK: /etc/fuse-healer/fuse-healer.toml" ] || fail "--check-config: \"$out\""
out=$(/usr/sbin/fuse-healerd --check-config)
[ "$out" = "config OK: /etc/fuse-healer/fuse-healer.toml" ] || fail "--check-config (default path): \"$out\""
printf '[heal]\nstrategy = "sideways"\n' >"$tmp/bad.toml"
rc=0; /usr/sbin/fuse-healerd --config "$tmp/bad.toml" --check-config >/dev/null 2>&1 || rc=$?
[ $rc = 78 ] || fail "--check-config of a bad config: exit $rc, want 78"
out=$(/usr/sbin/fuse-healerctl --version)
[ "$out" = "fuse-healerctl $upstream" ] || fail "fuse-healerctl --version: \"$out\""
log "fuse-healerd --version: fuse-healerd $upstream; --check-config: OK (78 for a bad config);" \
    "fuse-healerctl --version: fuse-healerctl $upstream"

# The unit: the project's, verified by systemd with the installed man pages.
unit=/lib/systemd/system/fuse-healer.service
cmp -s "$unit" "$top/systemd/fuse-healer.service" || fail "$unit differs from systemd/fuse-healer.service"
man_opt=--man=yes
if ! command -v man >/dev/null; then
  man_opt=--man=no
  log "man(1) is not installed: systemd-analyze verify does not check Documentation="
fi
out=$(systemd-analyze verify "$man_opt" "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
[ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
[ -L /etc/systemd/system/multi-user.target.wants/fuse-healer.service ] \
  || fail "fuse-healer.service is not enabled (dh_installsystemd enables it on installation)"
log "unit: $unit, systemd-analyze verify $man_opt clean, enabled (not started)"

# Man pages: every page the package ships is found by man and is valid gzip.
while IFS= read -r p; do
  case "$p" in /usr/share/man/man*/*.gz) ;; *) continue ;; esac
  gzip -t "$p" || fail "$p: bad gzip"
  page=${p##*/}; page=${page%.gz}
  if command -v man >/dev/null; then
    [ "$(man -w "${page##*.}" "${page%.*}")" = "$p" ] || fail "man -w ${page##*.} ${page%.*} does not find $p"
  fi
  log "man page: $p"
done <"$tmp/deb-files"
check_not_running "after the checks"

# --- purging ---------------------------------------------------------------------
# A state file, as the daemon would leave one: the purge must remove it too.
install -d -m 0700 /var/lib/fuse-healer
echo '{}' >/var/lib/fuse-healer/package-test-state.json
log "apt-get purge fuse-healer"
apt purge fuse-healer >"$tmp/purge.log" 2>&1 || {
  cat "$tmp/purge.log" >&2
  fail "apt-get purge failed"
}
installed=0
status=$(dpkg-query -W -f='${db:Status-Status}' fuse-healer 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "dpkg status after purge: $status"
while IFS= read -r p; do
  if [ -e "$p" ] || [ -L "$p" ]; then fail "$p is still there after the purge"; fi
done <"$tmp/deb-files"
for p in /etc/fuse-healer /var/lib/fuse-healer /usr/share/doc/fuse-healer \
         /etc/systemd/system/multi-user.target.wants/fuse-healer.service \
         /var/lib/systemd/deb-systemd-helper-enabled/fuse-healer.service.dsh-also \
         /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/fuse-healer.service; do
  if [ -e "$p" ] || [ -L "$p" ]; then fail "$p is still there after the purge"; fi
done
check_not_running "after purge"
find /var/cache/man -name 'fuse-healer*' 2>/dev/null | sort | comm -13 "$tmp/catman.before" - | xargs -r rm -f
log "purged: no file, conffile, state or enablement link left; no fuse-healerd ran; PID 1's mounts unchanged"

log "OK (build and lint $((t_build))s, rpm checks + install + checks + purge $((SECONDS - t0 - t_build))s)"
