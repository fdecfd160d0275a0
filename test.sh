#!/usr/bin/env bash
# Builds kiln (warnings are errors) and runs the whole test suite: unit tests and end-to-end
# scenarios against the real peers (skopeo, umoci, ...). Installs missing Debian packages first.
#   ./test.sh                        build in build/ and run everything (KILN_SANITIZE=OFF, the default)
#   KILN_SANITIZE=ON ./test.sh       the same with AddressSanitizer + UBSan (build-asan/)
#   KILN_SANITIZE=thread ./test.sh   the same with ThreadSanitizer (build-tsan/)
set -euo pipefail
cd "$(dirname "$0")"
sanitize=${KILN_SANITIZE:-OFF}
case $sanitize in
  OFF) build=build ;;
  ON) build=build-asan ;;
  thread) build=build-tsan ;;
  *) echo "test.sh: KILN_SANITIZE=$sanitize: expected OFF, ON or thread" >&2; exit 2 ;;
esac

source tests/deps.sh
kiln_install_packages "${KILN_BUILD_PACKAGES[@]}" "${KILN_TEST_PACKAGES[@]}"

# KILN_TESTS on explicitly: demo.sh configures build/ without the tests, and the cache keeps that.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_WERROR=ON -DKILN_TESTS=ON \
  -DKILN_SANITIZE="$sanitize" >/dev/null
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure --no-tests=error -j "$(nproc)" --timeout 900
