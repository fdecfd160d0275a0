#!/usr/bin/env bash
# Benchmark: `kiln import` + `kiln save` against `skopeo copy` (docker-archive → oci and back), on a
# 512 MB incompressible layer and on a 512 MB tarball of /usr, side by side in one run; and the
# machine's limit for the same work (sha256 of the tar + gzip on both cores + sha256 of the gzip).
# Prints MB/s and peak RSS for each, and the ratios. Not a timed test: run it by hand.
#   tests/bench/import_save.sh [path/to/kiln]      (RUNS=3 SIZE_MB=512 BENCH_TMP=/dev/shm)
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${1:-$PWD/build/cli/kiln}
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-512}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
for c in skopeo pigz jq /usr/bin/time openssl; do command -v "$c" >/dev/null || { echo "needs $c (tests/deps.sh)"; exit 1; }; done
[[ -x $KILN ]] || { echo "no kiln binary at $KILN (./test.sh builds it)"; exit 1; }

work=$(mktemp -d "$BENCH_TMP/kiln-bench.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
bytes=$((SIZE_MB * 1000 * 1000))

# Inputs: one tar holding one incompressible file, and the first SIZE_MB of a tar of /usr.
head -c "$bytes" /dev/urandom >"$work/random.bin"
tar -C "$work" -cf "$work/random.tar" random.bin && rm "$work/random.bin"
( set +o pipefail; tar -C / -cf - usr 2>/dev/null | head -c "$bytes" >"$work/usr.raw" )
# Cut at an entry boundary is not needed: the tar is re-made from the partial stream's entries.
mkdir "$work/usr-tree" && (tar -C "$work/usr-tree" -xf "$work/usr.raw" 2>/dev/null || true) && rm "$work/usr.raw"
tar -C "$work/usr-tree" -cf "$work/usr.tar" . && rm -rf "$work/usr-tree"

# A docker-archive of each tar (what skopeo starts from), made with jq and sha256sum.
make_docker_archive() {
  local tarball=$1 out=$2 d diff
  d=$(mktemp -d "$work/da.XXXXXX")
  diff=$(sha256sum "$tarball" | cut -d' ' -f1)
  ln "$tarball" "$d/$diff.tar"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >"$d/config.json"
  printf '[{"Config":"config.json","RepoTags":["bench:1"],"Layers":["%s.tar"]}]' "$diff" >"$d/manifest.json"
  tar -C "$d" -cf "$out" manifest.json config.json "$diff.tar"
  rm -rf "$d"
}

source tests/bench/measure.sh

echo "== kiln import + save vs skopeo copy, ${SIZE_MB} MB layers, median of $RUNS, $(date -u +%F), $(nproc) cores"
echo "   kiln $("$KILN" --version | awk '{print $3}'), $(skopeo --version), tmp on $BENCH_TMP"
for input in random usr; do
  make_docker_archive "$work/$input.tar" "$work/$input-docker.tar"
  echo "-- $input"
  prepare() { rm -rf "$work/store" "$work/out.tar"; }
  measure "kiln-$input" bash -c "KILN_ROOT=$work/store '$KILN' import '$work/$input.tar' bench:1 && KILN_ROOT=$work/store '$KILN' save -o '$work/out.tar' bench:1"
  measure "kiln-import-$input" bash -c "KILN_ROOT=$work/store '$KILN' import '$work/$input.tar' bench:1"
  kiln_layer=$(find "$work/store/oci/blobs" -type f -printf '%s\n' | sort -n | tail -1)
  prepare() { rm -rf "$work/oci" "$work/out.tar"; }
  measure "skopeo-$input" bash -c "skopeo copy -q docker-archive:'$work/$input-docker.tar' oci:'$work/oci:bench' && skopeo copy -q oci:'$work/oci:bench' docker-archive:'$work/out.tar':bench:1"
  measure "skopeo-import-$input" skopeo copy -q docker-archive:"$work/$input-docker.tar" oci:"$work/oci:bench"
  skopeo_layer=$(find "$work/oci/blobs" -type f -printf '%s\n' | sort -n | tail -1)
  prepare() { :; }
  # The limit: hash the tar, gzip it on both cores at kiln's default level (4), hash the result.
  measure "limit-sha+pigz4+sha-$input" bash -c "tee >(openssl dgst -sha256 >/dev/null) <'$work/$input.tar' | pigz -p 2 -4 | openssl dgst -sha256 >/dev/null"
  echo "   kiln vs skopeo: $(ratio "kiln-$input" "skopeo-$input")x skopeo's throughput (import alone: $(ratio "kiln-import-$input" "skopeo-import-$input")x); kiln import vs limit: $(ratio "kiln-import-$input" "limit-sha+pigz4+sha-$input")x"
  echo "   gzip layer: kiln $kiln_layer bytes, skopeo $skopeo_layer bytes ($(awk -v a="$kiln_layer" -v b="$skopeo_layer" 'BEGIN {printf "%+.1f%%", (a - b) * 100 / b}'))"
done
