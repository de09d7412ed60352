#!/usr/bin/env bash
# Checks the shipped unit's SystemCallFilter= against the system calls
# fuse-healerd makes: none of them may be denied. Run by ctest
# (system.unit_syscall_filter); exits 77 (skipped) without systemd-analyze.
#
#   unit-syscall-filter.sh [UNIT_FILE]
#
# The unit uses a deny-list (see the comment above SystemCallFilter= in it
# and docs/SYSTEMD.md, System calls): every "~" line adds names or @groups to
# the deny set. Groups are expanded with `systemd-analyze syscall-filter`,
# recursively (a group lists its nested groups by name). A call that systemd
# cannot name (statmount, listmount on systemd 252) is allowed by a deny-list:
# the check still insists that no line names it.
set -euo pipefail
unit=${1:-$(cd "$(dirname "$0")/../.." && pwd)/systemd/fuse-healer.service}
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }

# What the daemon calls (directly or through glibc, libuv, libmount,
# libsystemd), grouped by purpose.
required=(
  # healing: clones, moves, detaches, flags and propagation of the clone
  mount umount2 open_tree move_mount mount_setattr
  # containers' namespaces: a worker thread with its own fs_struct, pinned pids
  setns unshare pidfd_open pidfd_send_signal
  # looking at mounts without reading the table; fanotify mount notifications
  statx statmount listmount fanotify_init fanotify_mark
  # paths resolved without following symlinks, the state file, /proc walks
  openat openat2 readlinkat getdents64 newfstatat fsync renameat rename fstatfs
  # the loop: libuv's epoll, inotify, signals, timers, the heal worker wake-up
  epoll_create1 epoll_ctl epoll_wait epoll_pwait inotify_init1 inotify_add_watch inotify_rm_watch
  eventfd2 rt_sigaction rt_sigprocmask timerfd_create clone clone3 futex
  # the control socket, sd_notify, the journal, the metrics listener
  socket bind listen accept4 connect sendmsg recvmsg sendto recvfrom shutdown poll getsockopt setsockopt
  # the statx probes' threads give up on a hung FUSE daemon by timing out
  clock_gettime clock_nanosleep
)

mapfile -t lines < <(sed -n 's/^SystemCallFilter=//p' "$unit")
[ ${#lines[@]} -gt 0 ] || { echo "FAIL: $unit has no SystemCallFilter="; exit 1; }
if [[ "${lines[0]}" != "~"* ]]; then
  echo "FAIL: the first SystemCallFilter= of $unit is an allow-list (\"${lines[0]}\"):" \
       "it would refuse statmount/listmount, which systemd 252 cannot name"
  exit 1
fi

declare -A denied=() seen_group=()
expand() { # expand NAME: adds NAME, or every call of the @group NAME, to denied
  local name=$1 item
  if [[ "$name" != @* ]]; then denied[$name]=1; return; fi
  [ -n "${seen_group[$name]:-}" ] && return
  seen_group[$name]=1
  # Output: "@group", an indented description ("# ..."), then one entry per line.
  while read -r item; do
    [ -z "$item" ] || [[ "$item" == "#"* ]] || [ "$item" = "$name" ] && continue
    expand "$item"
  done < <(systemd-analyze syscall-filter "$name")
}
for line in "${lines[@]}"; do
  [[ "$line" == "~"* ]] || { echo "FAIL: allow-list line after a deny-list: \"$line\""; exit 1; }
  for name in ${line#"~"}; do expand "$name"; done
done

bad=()
for call in "${required[@]}"; do
  [ -n "${denied[$call]:-}" ] && bad+=("$call")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "FAIL: $unit denies calls the daemon makes: ${bad[*]}"
  exit 1
fi
# And the deny set must still hold what the unit says it takes away.
for call in init_module kexec_load bpf ptrace process_vm_readv chroot pivot_root setuid swapon settimeofday iopl; do
  [ -n "${denied[$call]:-}" ] || { echo "FAIL: $unit no longer denies $call"; exit 1; }
done
echo "OK: ${#denied[@]} calls denied, none of the ${#required[@]} the daemon makes"
