#!/usr/bin/env bash
# Benchmark: `kiln push` / `kiln pull` against `skopeo copy` to and from one local docker-registry
# (plain HTTP on 127.0.0.1), side by side in one run, on the peer harness's two images: one layer
# of 512 MiB of random bytes, and 50 layers of 1 MiB (gzip -1, so nothing is recompressed).
# Pushes go to a registry emptied and restarted before each run; pulls into an empty store (kiln)
# or OCI directory (skopeo). kiln's pull does more than skopeo's: it also decompresses every layer
# to check its diff ID and scan it as hostile input. Prints MB/s (compressed blob bytes), peak RSS,
# the ratios, the machine's limit for the same bytes (sha256 of them plus writing them), and
# the registry's own bounds: curl fetching the blobs (4 at a time) into /dev/null, and for the big
# push curl streaming the blob in one PUT.
# Then the registry build cache: a build whose every step is in a --cache-from cache, against the
# same build from the local cache plus a pull of its steps' layers (what it must download anyway).
#   tests/bench/registry.sh [path/to/kiln]      (RUNS=5 BIG_MIB=512 BENCH_TMP=/dev/shm)
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${1:-$PWD/build/cli/kiln}
RUNS=${RUNS:-5}
BIG_MIB=${BIG_MIB:-512}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
for c in skopeo docker-registry pigz jq /usr/bin/time sha256sum; do
  command -v "$c" >/dev/null || { echo "needs $c (tests/deps.sh)"; exit 1; }
done
[[ -x $KILN ]] || { echo "no kiln binary at $KILN (./test.sh builds it)"; exit 1; }

work=$(mktemp -d "$BENCH_TMP/kiln-bench-registry.XXXXXX")
registry_pid=
stop_registry() {
  [[ -n $registry_pid ]] || return 0
  kill "$registry_pid" 2>/dev/null || true
  wait "$registry_pid" 2>/dev/null || true
  registry_pid=
}
trap 'stop_registry; rm -rf -- "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
R=127.0.0.1:$port
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $work/registry-data}
http: {addr: $R}
EOF
# An empty registry, started afresh (its blob descriptor cache forgets what was deleted).
reset_registry() {
  stop_registry
  rm -rf "$work/registry-data"
  env -u REGISTRY_HTTP_ADDR docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do curl -sf "http://$R/v2/" >/dev/null && return 0; sleep 0.05; done
  echo "the registry did not start: $(cat "$work/registry.log")"; exit 1
}

# make_image LAYOUT NLAYERS LAYER_BYTES: an OCI layout with NLAYERS gzip -1 layers of random data.
add_blob() {
  local d s; d=$(sha256sum "$2" | cut -d' ' -f1); s=$(stat -c %s "$2")
  mv "$2" "$1/blobs/sha256/$d"
  jq -cn --arg m "$3" --arg d "sha256:$d" --argjson s "$s" '{mediaType:$m, digest:$d, size:$s}'
}
make_image() {
  local layout=$1 n=$2 size=$3 i diffs=() descs=()
  mkdir -p "$layout/blobs/sha256" "$work/l"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  for ((i = 0; i < n; i++)); do
    head -c "$size" /dev/urandom >"$work/l/blob$i.bin"
    tar -C "$work/l" --numeric-owner --owner=0 --group=0 --mtime=2024-01-01 -cf "$work/l.tar" "blob$i.bin"
    rm "$work/l/blob$i.bin"
    diffs+=("\"sha256:$(sha256sum "$work/l.tar" | cut -d' ' -f1)\"")
    pigz -1 -n "$work/l.tar"
    descs+=("$(add_blob "$layout" "$work/l.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)")
  done
  jq -cn --argjson d "[$(IFS=,; echo "${diffs[*]}")]" \
    '{architecture:"amd64", os:"linux", config:{Cmd:["/bin/sh"]}, rootfs:{type:"layers", diff_ids:$d}}' >"$work/c.json"
  local config; config=$(add_blob "$layout" "$work/c.json" application/vnd.oci.image.config.v1+json)
  jq -cn --argjson c "$config" --argjson l "[$(IFS=,; echo "${descs[*]}")]" \
    '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json", config:$c, layers:$l}' >"$work/m.json"
  local manifest; manifest=$(add_blob "$layout" "$work/m.json" application/vnd.oci.image.manifest.v1+json)
  jq -cn --argjson m "$manifest" \
    '{schemaVersion:2, manifests:[$m + {annotations:{"org.opencontainers.image.ref.name":"latest"}}]}' >"$layout/index.json"
}

source tests/bench/measure.sh

# raw_put LAYOUT: every blob of LAYOUT uploaded with curl (POST, then one PUT of the whole blob).
raw_put() {
  local f location
  for f in "$1"/blobs/sha256/*; do
    location=$(curl -sSf -X POST -D - -o /dev/null "http://$R/v2/bench/raw/blobs/uploads/" |
      tr -d '\r' | sed -n 's/^location: //Ip')
    [[ $location == *\?* ]] && location+="&" || location+="?"
    curl -sSf -o /dev/null -T "$f" -H 'Content-Type: application/octet-stream' "${location}digest=sha256:${f##*/}"
  done
}
# raw_get LAYOUT NAME: the config and layers of LAYOUT's image downloaded by curl from
# bench/NAME, 4 at a time over kept-alive connections, into /dev/null: the registry's cost of
# serving them and nothing else.
raw_get() {
  local d urls=() manifest
  manifest=$(jq -r '.manifests[0].digest' "$1/index.json")
  for d in $(jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${manifest#sha256:}"); do
    urls+=(-o /dev/null "http://$R/v2/bench/$2/blobs/$d")
  done
  curl -sSf --no-progress-meter --parallel --parallel-max 4 "${urls[@]}"
}
export -f raw_put raw_get
export R

echo "== kiln push/pull vs skopeo copy, median of $RUNS, $(date -u +%F), $(nproc) cores, tmp on $BENCH_TMP"
echo "   kiln $("$KILN" --version | awk '{print $3}'), $(skopeo --version), docker-registry $(docker-registry --version | awk '{print $3}')"
make_image "$work/img-big" 1 $((BIG_MIB << 20))
make_image "$work/img-many" 50 $((1 << 20))
for img in big many; do
  layout=$work/img-$img
  bytes=$(find "$layout/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
  echo "-- $img: $(find "$layout/blobs" -type f | wc -l) blobs, $bytes bytes"
  # The image in kiln's store, as loaded from the same layout (its layers kept as they are).
  tar -C "$layout" -cf "$work/img-$img.tar" .
  seed_store=$work/store-$img
  KILN_ROOT=$seed_store "$KILN" load -q -i "$work/img-$img.tar" >/dev/null
  KILN_ROOT=$seed_store "$KILN" tag "$(KILN_ROOT=$seed_store "$KILN" images -q | head -1)" "$R/bench/$img:latest"
  rm "$work/img-$img.tar"

  prepare() { reset_registry; }
  measure "skopeo-push-$img" skopeo copy -q --retry-times 0 --dest-tls-verify=false "oci:$layout:latest" "docker://$R/bench/$img:latest"
  # What the registry alone costs to take the blobs: one streamed PUT each by curl, nothing read
  # or hashed on the client's side beyond sending. No client's push can be faster.
  [[ $img == big ]] && measure "registry-bound-put-$img" bash -c 'raw_put "$0"' "$layout"
  # kiln's push last: the pulls below read what it pushed.
  measure "kiln-push-$img" env KILN_ROOT="$seed_store" "$KILN" push -q "$R/bench/$img:latest"
  prepare() { rm -rf "$work/pull-oci" "$work/pull-store"; }
  measure "skopeo-pull-$img" skopeo copy -q --retry-times 0 --src-tls-verify=false "docker://$R/bench/$img:latest" "oci:$work/pull-oci:latest"
  measure "kiln-pull-$img" env KILN_ROOT="$work/pull-store" "$KILN" pull -q "$R/bench/$img:latest"
  # What the registry alone costs to serve the blobs (curl keeping nothing): no pull is faster.
  measure "registry-bound-get-$img" bash -c 'raw_get "$0" "$1"' "$layout" "$img"
  # The limit for these bytes: hashing them (OpenSSL's SHA-NI code; coreutils' sha256sum has none),
  # then writing them once, on this file system.
  prepare() { rm -rf "$work/copy"; mkdir "$work/copy"; }
  measure "limit-sha256+write-$img" bash -c "openssl dgst -sha256 '$layout'/blobs/sha256/* >/dev/null && cp '$layout'/blobs/sha256/* '$work/copy/'"
  # A pull that verifies must hash twice: the blob (its digest) and the tar inside (the diff ID,
  # here about as many bytes, the layers being incompressible). The same, on one core.
  measure "limit-2xsha256+write-$img" bash -c "openssl dgst -sha256 '$layout'/blobs/sha256/* '$layout'/blobs/sha256/* >/dev/null && cp '$layout'/blobs/sha256/* '$work/copy/'"
  echo "   pull: kiln at $(ratio "kiln-pull-$img" "registry-bound-get-$img")x of the registry's own bound, skopeo at $(ratio "skopeo-pull-$img" "registry-bound-get-$img")x"
  [[ $img == big ]] && echo "   push: kiln at $(ratio "kiln-push-$img" "registry-bound-put-$img")x of the registry's own bound, skopeo at $(ratio "skopeo-push-$img" "registry-bound-put-$img")x"
  echo "   push: kiln $(ratio "kiln-push-$img" "skopeo-push-$img")x skopeo's throughput;" \
    "pull: kiln $(ratio "kiln-pull-$img" "skopeo-pull-$img")x skopeo's;" \
    "kiln pull vs limit: $(ratio "kiln-pull-$img" "limit-sha256+write-$img")x (with the diff ID's hash: $(ratio "kiln-pull-$img" "limit-2xsha256+write-$img")x)"
  rm -rf "$seed_store" "$work/pull-oci" "$work/pull-store" "$work/copy"
done

# ---- the registry build cache
reset_registry
bb=$work/bb
mkdir -p "$bb/bin" "$work/ctx"
cp /bin/busybox "$bb/bin/busybox"
for applet in sh head cat; do ln -sf busybox "$bb/bin/$applet"; done
tar -C "$bb" -cf "$work/bb.tar" .
base_store=$work/store-base
KILN_ROOT=$base_store "$KILN" import "$work/bb.tar" "$R/bench/base:1" >/dev/null
KILN_ROOT=$base_store "$KILN" push -q "$R/bench/base:1"
head -c $((32 << 20)) /dev/urandom >"$work/ctx/data.bin"
cat >"$work/ctx/Dockerfile" <<EOF
FROM $R/bench/base:1
COPY data.bin /data.bin
RUN head -c 67108864 /dev/urandom > /a
RUN head -c 67108864 /dev/urandom > /b
RUN cat /a /b > /c
EOF
first=$work/store-first
KILN_ROOT=$first "$KILN" build -q -t "$R/bench/app:1" --cache-to "type=registry,ref=$R/bench/cache:1" "$work/ctx" >/dev/null
KILN_ROOT=$first "$KILN" push -q "$R/bench/app:1"
bytes=$(skopeo inspect --tls-verify=false --raw "docker://$R/bench/cache:1" | jq '[.layers[].size] | add')
echo "-- build cache: 4 steps, $bytes bytes of layers in the cache"
# A second machine: the base pulled (untimed), every step from the registry cache.
prepare() { rm -rf "$work/second"; KILN_ROOT=$work/second "$KILN" pull -q "$R/bench/base:1" >/dev/null; }
measure "kiln-build-cache-from" env KILN_ROOT="$work/second" "$KILN" build -q --cache-from "type=registry,ref=$R/bench/cache:1" "$work/ctx"
# The reference: the build from its own local cache, plus the download of the steps' layers.
# Twice: on the context the first build saw (its file checksums remembered), and on a fresh
# checkout of it (new files, as a CI job has: hashed again, as the --cache-from build hashes them).
prepare() { :; }
measure "kiln-build-local-cache" env KILN_ROOT="$first" "$KILN" build -q "$work/ctx"
prepare() { rm -rf "$work/ctx-fresh"; cp -r "$work/ctx" "$work/ctx-fresh"; }
measure "kiln-build-local-cache-fresh" env KILN_ROOT="$first" "$KILN" build -q "$work/ctx-fresh"
prepare() { rm -rf "$work/third"; KILN_ROOT=$work/third "$KILN" pull -q "$R/bench/base:1" >/dev/null; }
measure "kiln-pull-step-layers" env KILN_ROOT="$work/third" "$KILN" pull -q "$R/bench/app:1"
result() { cut -d' ' -f1 "$work/result-$1"; }
awk -v c="$(result kiln-build-cache-from)" -v l="$(result kiln-build-local-cache)" \
  -v f="$(result kiln-build-local-cache-fresh)" -v p="$(result kiln-pull-step-layers)" \
  'BEGIN {printf "   cache-from build %.2f s vs local-cache build + pull of the layers %.2f s: %.2fx; on a fresh checkout %.2f s: %.2fx\n", c, l + p, (l + p) / c, f + p, (f + p) / c}'
