#!/usr/bin/env bash
# Builds the Debian package of fuse-healer and checks it with lintian.
#
#   scripts/package.sh [--head]
#
# Copies the source tree (the working tree, without build directories; with
# --head: the committed HEAD via git archive) into a temporary directory,
# places packaging/debian there as debian/, runs dpkg-buildpackage -us -uc -b
# and lintian (any error or warning fails the script), and copies the .deb
# files to ./dist/. Missing build dependencies are installed with apt-get when
# run as root. Set KEEP_WORKDIR=1 to keep the temporary directory.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=$top/dist
use_head=0
case "${1:-}" in
  "") ;;
  --head) use_head=1 ;;
  *) echo "usage: $0 [--head]" >&2; exit 64 ;;
esac

tools=(build-essential debhelper dpkg-dev fakeroot lintian)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "package: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
upstream=${version%-*}
work=$(mktemp -d /tmp/fuse-healer-package.XXXXXX)
if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
  echo "package: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
src=$work/fuse-healer-$upstream
mkdir -p "$src"

if [ $use_head = 1 ]; then
  git -C "$top" archive --format=tar HEAD | tar -x -C "$src"
else
  tar -C "$top" -c \
    --exclude=./.git --exclude='./build*' --exclude=./Testing --exclude=./dist --exclude=./out \
    --exclude='*.swp' . | tar -x -C "$src"
fi
[ -d "$src/packaging/debian" ] || { echo "package: $src has no packaging/debian" >&2; exit 1; }
rm -rf "$src/debian"
cp -a "$src/packaging/debian" "$src/debian"

# Build dependencies from debian/control.
if ! (cd "$src" && dpkg-checkbuilddeps >/dev/null 2>&1); then
  if [ "$(id -u)" -ne 0 ]; then
    (cd "$src" && dpkg-checkbuilddeps) || true
    echo "package: missing build dependencies; run as root to install them" >&2
    exit 1
  fi
  echo "package: installing build dependencies"
  export DEBIAN_FRONTEND=noninteractive
  apt-get build-dep -y -qq "$src" >/dev/null
fi

echo "package: building fuse-healer $version in $src"
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
  tail -n 50 "$work/build.log" >&2
  echo "package: dpkg-buildpackage failed (full log: $work/build.log)" >&2
  trap - EXIT
  exit 1
}

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes=$work/fuse-healer_${version}_${arch}.changes
echo "package: lintian $changes"
lintian --info --display-info --fail-on error,warning "$changes"

mkdir -p "$dist"
debs=()
while IFS= read -r f; do debs+=("$f"); done < <(sed -n '/^Files:/,/^[^ ]/s/^ .* \([^ ]*\.deb\)$/\1/p' "$changes")
for f in "${debs[@]}"; do
  cp "$work/$f" "$dist/"
  echo "package: dist/$f"
done
