#!/usr/bin/env bash
# Installs the Debian 12 packages kiln builds with and tests against, when any is missing.
# Sourced by demo.sh and test.sh; safe to run again (it installs nothing when all are present).
set -euo pipefail

# nettle-dev, liblzma-dev and libbz2-dev ship the static archives the static libarchive needs
# (KILN_STATIC_DEPS); Debian's libarchive-dev does not depend on them.
KILN_BUILD_PACKAGES=(cmake ninja-build g++ pkg-config libarchive-dev libssl-dev libcurl4-openssl-dev
  nlohmann-json3-dev tao-pegtl-dev libzstd-dev zlib1g-dev libseccomp-dev catch2 libcli11-dev libfmt-dev
  nettle-dev liblzma-dev libbz2-dev libisal-dev)
KILN_DEMO_PACKAGES=(busybox-static)
# The peers that judge kiln's output, and the tools the tests and benchmarks drive.
KILN_TEST_PACKAGES=(busybox-static skopeo umoci podman runc uidmap buildah docker-registry docker.io jq zstd xz-utils bzip2 pigz
  hyperfine python3 util-linux procps time apache2-utils curl openssl strace)

kiln_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "kiln: these Debian packages are missing: ${missing[*]}" >&2
    echo "kiln: run this script as root (it installs them with apt-get), or install them first" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
