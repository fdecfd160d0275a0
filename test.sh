#!/usr/bin/env bash
# Builds kiln (warnings are errors) and runs the whole test suite: unit tests and end-to-end
# scenarios against the real peers (skopeo, umoci, ...). Installs missing Debian packages first.
#   ./test.sh                 build in build/ and run everything
#   KILN_SANITIZE=ON ./test.sh   the same with AddressSanitizer + UBSan (build-asan/)
set -euo pipefail
cd "$(dirname "$0")"
source tests/deps.sh
kiln_install_packages "${KILN_BUILD_PACKAGES[@]}" "${KILN_TEST_PACKAGES[@]}"

sanitize=${KILN_SANITIZE:-OFF}
build=build
[[ $sanitize == ON ]] && build=build-asan
# KILN_TESTS on explicitly: demo.sh configures build/ without the tests, and the cache keeps that.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_WERROR=ON -DKILN_TESTS=ON \
  -DKILN_SANITIZE="$sanitize" >/dev/null
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure --no-tests=error -j "$(nproc)" --timeout 900
