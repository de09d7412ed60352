#!/usr/bin/env bash
# Installs what fuse-healer needs to build, test and run its demo on Debian 12.
# Everything comes from Debian's archive; nothing is downloaded at build time.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libmount-dev libuv1-dev libspdlog-dev libtomlplusplus-dev libsystemd-dev libmicrohttpd-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  libfuse3-dev fuse3 squashfuse bindfs squashfs-tools util-linux procps
  # tests/system/nspawn-test.sh boots this machine's own root with systemd-nspawn
  # and installs the package there (scripts/package.sh installs its own tools).
  systemd systemd-container jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
