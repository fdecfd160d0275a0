#!/usr/bin/env bash
# Builds the Dockerfile parser's libFuzzer target with clang (ASan + UBSan) and runs it, by default
# for 10 minutes, seeded with the parser's table cases. Passes when libFuzzer found no crash, no
# leak and no timeout. Usage: tests/fuzz/run_parser_fuzzer.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/deps.sh
kiln_install_packages "${KILN_BUILD_PACKAGES[@]}" clang libclang-rt-14-dev

seconds=${1:-600}
build=${KILN_FUZZ_BUILD:-build-fuzz}
CXX=clang++ cmake -S . -B "$build" -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" parser_fuzzer

work=$(mktemp -d /tmp/kiln-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
cp testdata/parser/cases/*.dockerfile "$work/corpus/"
# -timeout: one input taking over 10 s is a hang. -rss_limit_mb: an input must not balloon memory.
# The dictionary steers mutations towards instruction keywords and syntax.
status=0
"$build/tests/fuzz/parser_fuzzer" "$work/corpus" -dict=tests/fuzz/dockerfile.dict \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -artifact_prefix="$work/" -print_final_stats=1 >"$work/log" 2>&1 || status=$?
tail -n 40 "$work/log"
if compgen -G "$work/crash-*" >/dev/null || compgen -G "$work/timeout-*" >/dev/null || compgen -G "$work/oom-*" >/dev/null; then
  echo "parser fuzzer: found failing inputs:" >&2
  mkdir -p fuzz-artifacts && cp "$work"/crash-* "$work"/timeout-* "$work"/oom-* fuzz-artifacts/ 2>/dev/null || true
  ls fuzz-artifacts >&2
  exit 1
fi
[[ $status -eq 0 ]] || { echo "parser fuzzer: libFuzzer exited with $status" >&2; exit 1; }
echo "parser fuzzer: ${seconds}s, no crash, no timeout"
