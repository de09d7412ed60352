#!/usr/bin/env bash
# Installs what fuse-healer needs on Debian 12. Everything comes from Debian's
# archive; nothing is downloaded at build time.
#
#   scripts/install-deps.sh             build, test and demo dependencies
#   scripts/install-deps.sh --package   the tools that scripts/package.sh uses
#                                       to build and check the .deb and the
#                                       .rpm (the packages' own build
#                                       dependencies come from debian/control)
#   scripts/install-deps.sh --fuzz      clang and libFuzzer for scripts/fuzz.sh
#   scripts/install-deps.sh --analysis  clang-tidy and cppcheck for scripts/analyze.sh
#                                       (scripts/sanitize.sh needs nothing more than
#                                       the build: gcc's sanitizer runtimes come with g++)
set -euo pipefail

case "${1:-}" in
  "")
    what=build
    packages=(
      build-essential cmake pkg-config
      libmount-dev libuv1-dev libspdlog-dev libtomlplusplus-dev libsystemd-dev
      nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev
      libfuse3-dev fuse3 squashfuse bindfs squashfs-tools util-linux procps
      # tests/system/nspawn-test.sh boots this machine's own root with systemd-nspawn
      # and installs the package there.
      systemd systemd-container jq
    )
    ;;
  --package)
    what=packaging
    # rpm: rpmbuild (and debugedit's find-debuginfo, which needs elfutils'
    # eu-strip, for the -debuginfo packages); rpmlint; file: rpm's brp-strip.
    packages=(
      build-essential debhelper dpkg-dev fakeroot lintian
      rpm rpmlint elfutils file
    )
    ;;
  --fuzz)
    what=fuzzing
    # clang-14 and its runtimes (libclang_rt.fuzzer, asan, ubsan: in
    # libclang-rt-14-dev); llvm-14 for llvm-profdata and llvm-cov
    # (scripts/fuzz.sh --coverage).
    packages=(clang-14 libclang-rt-14-dev llvm-14)
    ;;
  --analysis)
    what=analysis
    # clang-tidy 14 (its clang headers come with it) and cppcheck 2.10:
    # scripts/analyze.sh, docs/ANALYSIS.md.
    packages=(clang-tidy-14 cppcheck)
    ;;
  *) echo "usage: $0 [--package | --fuzz | --analysis]" >&2; exit 64 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} $what packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing $what packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=600
apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
