#!/usr/bin/env bash
# Builds the Debian and the RPM package of fuse-healer, checks them with
# lintian and rpmlint, and copies them to ./dist/.
#
#   scripts/package.sh [--head]
#
# Copies the source tree (the working tree, without build directories; with
# --head: the committed HEAD via git archive) into a temporary directory and
#   * makes the RPM source tarball fuse-healer-<version>.tar.gz from it;
#   * places packaging/debian there as debian/ and runs dpkg-buildpackage
#     -us -uc -b, then lintian on the .changes;
#   * runs rpmbuild -ba on packaging/rpm/fuse-healer.spec with that tarball,
#     then rpmlint on the spec, the source RPM and the binary RPMs (with the
#     filters of packaging/rpm/fuse-healer.rpmlintrc).
# Any lintian error or warning, and any rpmlint error or warning that is not
# filtered, fails the script. Missing tools and build dependencies are
# installed with apt-get when run as root (scripts/install-deps.sh --package,
# apt-get build-dep). PACKAGE_JOBS sets the build parallelism (default: the
# number of CPUs). Set KEEP_WORKDIR=1 to keep the temporary directory.
#
# The RPM is built on Debian with Debian's rpm, with --nodeps: its
# BuildRequires are Fedora/RHEL package names (libmount-devel, ...), which
# Debian's empty rpm database cannot satisfy. The same libraries and tools
# are installed as Debian packages (debian/control's Build-Depends, checked
# and installed below for the .deb) and the RPM is built against them.
# packaging/rpm/debian-host.macros makes Debian's rpm do what a Fedora build
# host does for every package (debuginfo packages, compressed man pages).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=$top/dist
jobs=${PACKAGE_JOBS:-$(nproc)}
use_head=0
case "${1:-}" in
  "") ;;
  --head) use_head=1 ;;
  *) echo "usage: $0 [--head]" >&2; exit 64 ;;
esac

"$top/scripts/install-deps.sh" --package

work=$(mktemp -d /tmp/fuse-healer-package.XXXXXX)
if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
  echo "package: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
keep_work() { trap - EXIT; }

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
upstream=${version%-*}
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
spec=$src/packaging/rpm/fuse-healer.spec
[ -f "$spec" ] || { echo "package: $src has no packaging/rpm/fuse-healer.spec" >&2; exit 1; }

# One version everywhere: CMake's project(), debian/changelog, the spec.
cmake_version=$(sed -n 's/^project(fuse-healer VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
rpm_version=$(rpmspec -q --srpm --qf '%{VERSION}' "$spec")
rpm_release=$(rpmspec -q --srpm --qf '%{RELEASE}' "$spec")
if [ "$cmake_version" != "$upstream" ] || [ "$rpm_version" != "$upstream" ]; then
  echo "package: versions differ: CMakeLists.txt $cmake_version, debian/changelog $upstream," \
       "fuse-healer.spec $rpm_version" >&2
  exit 1
fi

# The RPM's source tarball, from the pristine copy (before debian/ is added
# and the .deb build writes into the tree).
rpmtop=$work/rpmbuild
mkdir -p "$rpmtop/SOURCES"
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
  -czf "$rpmtop/SOURCES/fuse-healer-$upstream.tar.gz" "fuse-healer-$upstream"

rm -rf "$src/debian"
cp -a "$src/packaging/debian" "$src/debian"

# Build dependencies from debian/control (also those of the RPM build).
if ! (cd "$src" && dpkg-checkbuilddeps >/dev/null 2>&1); then
  if [ "$(id -u)" -ne 0 ]; then
    (cd "$src" && dpkg-checkbuilddeps) || true
    echo "package: missing build dependencies; run as root to install them" >&2
    exit 1
  fi
  echo "package: installing build dependencies"
  export DEBIAN_FRONTEND=noninteractive
  apt-get build-dep -y -qq -o DPkg::Lock::Timeout=600 "$src" >/dev/null
fi

# --- .deb -------------------------------------------------------------------
echo "package: building fuse-healer $version (.deb) in $src"
(cd "$src" && dpkg-buildpackage -us -uc -b -J"$jobs") >"$work/deb-build.log" 2>&1 || {
  tail -n 50 "$work/deb-build.log" >&2
  echo "package: dpkg-buildpackage failed (full log: $work/deb-build.log)" >&2
  keep_work
  exit 1
}

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes=$work/fuse-healer_${version}_${arch}.changes
echo "package: lintian $changes"
lintian --info --display-info --fail-on error,warning "$changes"
debs=()
while IFS= read -r f; do debs+=("$f"); done < <(sed -n '/^Files:/,/^[^ ]/s/^ .* \([^ ]*\.deb\)$/\1/p' "$changes")

# --- .rpm -------------------------------------------------------------------
echo "package: building fuse-healer $rpm_version-$rpm_release (.rpm) in $rpmtop"
rpmbuild -ba --nodeps \
  --load "$src/packaging/rpm/debian-host.macros" \
  --define "_topdir $rpmtop" \
  --define "_smp_build_ncpus $jobs" \
  --define "packager fuse-healer developers <fuse-healer@example.org>" \
  "$spec" >"$work/rpm-build.log" 2>&1 || {
  tail -n 50 "$work/rpm-build.log" >&2
  echo "package: rpmbuild failed (full log: $work/rpm-build.log)" >&2
  keep_work
  exit 1
}
rpms=()
while IFS= read -r f; do rpms+=("$f"); done < <(sed -n 's#^Wrote: ##p' "$work/rpm-build.log")
[ ${#rpms[@]} -gt 0 ] || { echo "package: rpmbuild wrote no package" >&2; keep_work; exit 1; }
# rpmlint checks the spec and every package in one run: its filters that
# match nothing are errors (unused-rpmlintrc-filter), so none goes stale.
echo "package: rpmlint ${rpms[*]##*/}"
rpmlint -r "$src/packaging/rpm/fuse-healer.rpmlintrc" "$spec" "${rpms[@]}"

# --- dist/ ------------------------------------------------------------------
mkdir -p "$dist"
rm -f "$dist"/fuse-healer_*.deb "$dist"/fuse-healer-*.deb "$dist"/fuse-healer-*.rpm
for f in "${debs[@]}"; do
  cp "$work/$f" "$dist/"
  echo "package: dist/$f"
done
for f in "${rpms[@]}"; do
  cp "$f" "$dist/"
  echo "package: dist/${f##*/}"
done
