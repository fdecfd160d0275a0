#!/usr/bin/env bash
# A registry behind a proxy that breaks things (tests/registry_env/fault_proxy.py): a connection
# cut mid-blob, 500s, a 429 with Retry-After, a stall, an upload cut mid-body, and kiln killed with
# SIGKILL mid-download. kiln finishes every time, resuming where it stopped instead of starting over.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain
# One layer of 20 MB, incompressible: big enough for its hash to run on a thread of its own
# (download_layer), which the faults below must not confuse.
registry_seed_image big/img:v1 1 20000000
layer=$SEED_LAYERS
fault_proxy_start "$REGISTRY_ADDR"
P=$PROXY_ADDR
requests() { grep -c " $1 .*$2" "$PROXY_LOG" || true; }

# A connection cut after 1 MB of the layer: the retry asks for the rest only.
fault_proxy_arm "cut:/blobs/$layer:1000000"
out=$(kiln pull "$P/big/img:v1" 2>&1)
assert_contains "$out" "Digest: $SEED_DIGEST" "pull after a cut"
grep -q "GET /v2/big/img/blobs/$layer range=bytes=1000000-" "$PROXY_LOG" ||
  fail "no Range request after the cut: $(grep "blobs/$layer" "$PROXY_LOG")"
assert_eq "$(kiln inspect --format '{{.Id}}' "$P/big/img:v1")" "$SEED_CONFIG" "image after a cut"

# 500 twice, then a 429 asking for 2 s: kiln waits as asked and gets there.
export KILN_ROOT=$WORK/store2
fault_proxy_arm "status:/manifests/:500:2"
fault_proxy_arm "status:/blobs/$layer:429:1:2"
start=$(date +%s%N)
kiln pull -q "$P/big/img:v1" >/dev/null 2>"$WORK/retries"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
(( elapsed_ms >= 2000 )) || fail "Retry-After: 2 not honoured (done in $elapsed_ms ms)"
assert_contains "$(cat "$WORK/retries")" "HTTP 500" "the retries are told"
assert_contains "$(cat "$WORK/retries")" "HTTP 429" "the 429 is told"
# With --retry 0 the first 500 is the answer, with the registry's words.
export KILN_ROOT=$WORK/store3
fault_proxy_arm "status:/manifests/:500:1"
expect_fail 1 "(HTTP 500)" kiln --retry 0 pull "$P/big/img:v1"

# A stall of 3 s mid-body is waited out (the stall limit is 60 s).
fault_proxy_arm "stall:/blobs/$layer:500000:3"
kiln pull -q "$P/big/img:v1" >/dev/null

# kill -9 during a pull: the partial layer stays on disk, and the next pull resumes from it. The
# answer stalls after 2,000,000 bytes; kiln gathers up to 256 KiB before it writes, so the file
# stops a little short of that.
export KILN_ROOT=$WORK/store4
fault_proxy_arm "stall:/blobs/$layer:2000000:30"
"$KILN" pull -q "$P/big/img:v1" >/dev/null 2>&1 &
pid=$!
partial=$KILN_ROOT/tmp/partial/${layer#sha256:}
for _ in $(seq 100); do
  [[ -f $partial && $(stat -c %s "$partial") -ge $((2000000 - (256 << 10))) ]] && break
  sleep 0.1
done
sleep 0.3
have=$(stat -c %s "$partial" 2>/dev/null || echo 0)
(( have >= 2000000 - (256 << 10) && have <= 2000000 )) || fail "the partial file holds $have bytes, not what arrived before the stall"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
fault_proxy_reset
before=$(requests GET "blobs/$layer range=bytes=$have-")
out=$(kiln pull "$P/big/img:v1")
assert_contains "$out" "Resuming download at $have of" "the pull says it resumes"
assert_eq "$(requests GET "blobs/$layer range=bytes=$have-")" "$((before + 1))" "a Range request from the partial file"
[[ ! -e $partial ]] || fail "the partial file outlived the finished pull"
assert_eq "$(kiln inspect --format '{{.Id}}' "$P/big/img:v1")" "$SEED_CONFIG" "image after kill -9"

# An upload cut mid-body: the push starts again and finishes; what the registry holds is right.
fault_proxy_arm "cut-request:/blobs/uploads/:1000000"
out=$(kiln push "$P/big/img:v1" "$P/copy/img:v1" 2>&1)
assert_contains "$out" "digest: $SEED_DIGEST" "push after a cut upload"
assert_eq "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY_ADDR/copy/img:v1")" "$SEED_DIGEST"
skopeo copy -q --src-tls-verify=false "docker://$REGISTRY_ADDR/copy/img:v1" "oci:$WORK/check:v1" >/dev/null
echo "ok"
