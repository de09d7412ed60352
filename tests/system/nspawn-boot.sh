#!/usr/bin/env bash
# Helper of tests/system/nspawn-test.sh: boots this machine's own root with
# systemd-nspawn, without writing to it. Run it inside a private mount
# namespace (unshare --mount --propagation private): nothing mounted here
# reaches the host's mount table.
#
#   nspawn-boot.sh MACHINE STAGE_DIR [NSPAWN_OPTION...]
#
# systemd-nspawn refuses --volatile=overlay on the host's root directory
# ("Spawning container on root directory is not supported"), and
# --volatile=yes/state leave /usr or /etc read-only, where a package cannot
# be installed. So the overlay that --volatile=overlay would make is made
# here: / (the root mount alone, without its submounts) as the read-only lower
# layer, a tmpfs as the upper layer; every write of the booted system lands
# in that tmpfs and vanishes with this namespace.
#
# A tmpfs is also mounted on /run of this namespace: systemd-nspawn keeps its
# runtime files under /run/systemd/nspawn*, and /run may be a plain directory
# of the root file system (it is when PID 1 is not systemd).
#
# The container has a network namespace of its own (--private-network: the
# services of the booted root, e.g. a database or sshd, must not listen on
# the host's addresses). systemd-nspawn then gives it a /sys of its own
# without /sys/fs/fuse/connections, so the host's fusectl mount is bound
# there: on a node, fuse-healerd detects dead FUSE connections through it.
# STAGE_DIR is bound read-only at /opt/fh-system-test.
#
# SYSTEMD_SECCOMP=0: systemd-nspawn installs no system call filter of its
# own. Its allow-list (a container runtime's, not a node's) would refuse the
# calls systemd 252 cannot name (statmount, listmount), so the daemon would
# take its fallbacks for a reason a real node does not have. The booted
# systemd does not inherit the variable: fuse-healer.service runs under its
# own SystemCallFilter=, the one under test.
# Execs systemd-nspawn (same pid): SIGTERM to it powers the container off.
set -euo pipefail
machine=$1
stage=$2
shift 2

mount -t tmpfs -o mode=0755,size=64m fh-nspawn-run /run
mkdir -p /run/fh-nspawn/upper /run/fh-nspawn/work /run/fh-nspawn/root
# The upper layer is a tmpfs of its own, sized for the package and the
# journal of one boot.
mount -t tmpfs -o mode=0755,size=1g fh-nspawn-upper /run/fh-nspawn/upper
mkdir -p /run/fh-nspawn/upper/u /run/fh-nspawn/upper/w
mount -t overlay -o lowerdir=/,upperdir=/run/fh-nspawn/upper/u,workdir=/run/fh-nspawn/upper/w \
  fh-nspawn-root /run/fh-nspawn/root

fusectl=()
[ -d /sys/fs/fuse/connections ] && fusectl=(--bind=/sys/fs/fuse/connections)

SYSTEMD_SECCOMP=0 exec systemd-nspawn \
  --directory=/run/fh-nspawn/root \
  --machine="$machine" \
  --boot \
  --register=no \
  --keep-unit \
  --link-journal=no \
  --console=read-only \
  --bind=/dev/fuse \
  --private-network \
  "${fusectl[@]}" \
  --bind-ro="$stage":/opt/fh-system-test \
  "$@"
