#!/usr/bin/env bash
# kiln copy, judged by skopeo: between two registries (blobs streamed through, no store, nothing on
# disk), within one (blobs mounted, as the registry's log shows), a multi-platform index with
# --all-platforms (its digest unchanged) and without (the host's image only); OCI layouts, OCI
# archives and docker-archives in both directions; a connection cut mid-blob on either side; a blob
# over the chunk size read in one download; and the errors: a tampered blob leaves no tag behind.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain src
A=$REGISTRY_ADDR A_LOG=$REGISTRY_LOG A_DATA=$REGISTRY_DATA
registry_seed_image lib/app:1 3 300000
app_digest=$SEED_DIGEST app_config=$SEED_CONFIG app_layout=$SEED_LAYOUT
read -r layer1 _ <<<"$SEED_LAYERS"
registry_start plain dst
B=$REGISTRY_ADDR

sk() { skopeo inspect --tls-verify=false "$@"; }
raw_digest() { echo "sha256:$(sk --raw "$1" | sha256sum | cut -d' ' -f1)"; }
config_digest() { echo "sha256:$(sk --config --raw "$1" | sha256sum | cut -d' ' -f1)"; }

# Registry to registry, two registries: the manifest arrives byte for byte, every blob through.
out=$(kiln copy "docker://$A/lib/app:1" "docker://$B/copied/app:1")
assert_contains "$out" "Copying blob ${layer1:7:12} done" "a layer is sent"
assert_contains "$out" "Copying config ${app_config:7:12} done" "the config is sent"
assert_contains "$out" "Copied $app_digest" "the digest is printed"
assert_eq "$(raw_digest "docker://$B/copied/app:1")" "$app_digest" "manifest digest on the destination"
assert_eq "$(config_digest "docker://$B/copied/app:1")" "$app_config" "config on the destination"
skopeo copy -q --src-tls-verify=false "docker://$B/copied/app:1" "oci:$WORK/check:1" >/dev/null
[[ ! -e $KILN_ROOT ]] || fail "a copy between registries made a store"
# Bare references, -q and --digestfile; a second copy finds everything there.
assert_eq "$(kiln copy -q --digestfile "$WORK/digest" "$A/lib/app:1" "$B/copied/app:2")" "" "copy -q"
assert_eq "$(cat "$WORK/digest")" "$app_digest" "--digestfile"
out=$(kiln copy "docker://$A/lib/app:1" "docker://$B/copied/app:3")
assert_contains "$out" "Copying blob ${layer1:7:12} skipped: already exists" "second copy"

# Within one registry: the blobs are mounted from the source repository, not sent.
out=$(kiln copy "docker://$A/lib/app:1" "docker://$A/other/app:1")
assert_contains "$out" "Copying blob ${layer1:7:12} mounted from lib/app" "copy mounts the layers"
grep -q "POST /v2/other/app/blobs/uploads/?mount=$layer1&from=lib/app\|POST /v2/other/app/blobs/uploads/?mount=$layer1&from=lib%2Fapp" \
  "$A_LOG" || fail "no mount in the registry's log: $(grep POST "$A_LOG" | tail -3)"
grep -q "PATCH /v2/other/app/\|PUT /v2/other/app/blobs/uploads" "$A_LOG" && fail "a blob was uploaded instead of mounted"
assert_eq "$(raw_digest "docker://$A/other/app:1")" "$app_digest" "manifest digest after a mount"

# A multi-platform index (amd64 and arm64 images of the seed), pushed by skopeo --all.
registry_use src
registry_seed_index multi/img:latest amd64 arm64
registry_use dst
index_dir=$INDEX_LAYOUT index_digest=$INDEX_DIGEST
manifest_amd64=$INDEX_MANIFEST_amd64 manifest_arm64=$INDEX_MANIFEST_arm64
# --all-platforms: every image, then the index, byte for byte.
out=$(kiln copy --all-platforms "docker://$A/multi/img" "docker://$B/multi/img:all")
assert_contains "$out" "Copied $index_digest" "--all-platforms prints the index digest"
assert_eq "$(raw_digest "docker://$B/multi/img:all")" "$index_digest" "the index's digest is unchanged"
for arch in amd64 arm64; do
  md=manifest_$arch
  assert_eq "$(raw_digest "docker://$B/multi/img@${!md}")" "${!md}" "the $arch image is there"
done
# Without it, the host's image only, named by the tag.
case $(uname -m) in x86_64) host=amd64 ;; aarch64) host=arm64 ;; *) host= ;; esac
if [[ -n $host ]]; then
  md=manifest_$host
  out=$(kiln copy "docker://$A/multi/img" "docker://$B/multi/one:1")
  assert_contains "$out" "Copied ${!md}" "the host's manifest is copied"
  assert_eq "$(raw_digest "docker://$B/multi/one:1")" "${!md}" "the tag names the host's image"
  other=$([[ $host == amd64 ]] && echo arm64 || echo amd64)
  od=manifest_$other
  sk --raw "docker://$B/multi/one@${!od}" >/dev/null 2>&1 && fail "the $other image was copied too"
fi

# OCI layouts: from a registry (created when missing, a second tag added beside the first), to
# a registry, and layout to layout; skopeo reads what kiln wrote.
kiln copy -q "docker://$A/lib/app:1" "oci:$WORK/lay:app"
kiln copy -q "docker://$A/multi/img" "oci:$WORK/lay:second"
kiln copy -q "docker://$A/lib/app:1" "oci:$WORK/lay:app"   # the same name again: one entry, not two
assert_eq "$(jq -r '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | sort | join(" ")' "$WORK/lay/index.json")" \
  "app second" "index.json's names"
assert_eq "$(raw_digest "oci:$WORK/lay:app")" "$app_digest" "skopeo reads the layout"
assert_eq "$(config_digest "oci:$WORK/lay:app")" "$app_config" "config in the layout"
skopeo copy -q "oci:$WORK/lay:app" "oci:$WORK/lay-check:x" >/dev/null
kiln copy -q "oci:$app_layout:1" "docker://$B/fromoci/app:1"
assert_eq "$(raw_digest "docker://$B/fromoci/app:1")" "$app_digest" "layout to registry"
kiln copy -q --all-platforms "oci:$index_dir:index" "oci:$WORK/lay2:all"
assert_eq "$(jq -r '.manifests[0].digest' "$WORK/lay2/index.json")" "$index_digest" "layout to layout, an index"
skopeo copy -q --all "oci:$WORK/lay2:all" "oci:$WORK/lay2-check:x" >/dev/null

# OCI archives, both ways.
kiln copy -q "docker://$A/lib/app:1" "oci-archive:$WORK/app-oci.tar:v1"
assert_eq "$(raw_digest "oci-archive:$WORK/app-oci.tar:v1")" "$app_digest" "skopeo reads the OCI archive"
assert_eq "$(config_digest "oci-archive:$WORK/app-oci.tar:v1")" "$app_config" "config in the OCI archive"
skopeo copy -q "oci:$app_layout:1" "oci-archive:$WORK/skopeo-oci.tar:t" >/dev/null
kiln copy -q "oci-archive:$WORK/skopeo-oci.tar:t" "docker://$B/fromociarchive/app:1"
assert_eq "$(raw_digest "docker://$B/fromociarchive/app:1")" "$app_digest" "OCI archive to registry"
compgen -G "$KILN_ROOT/tmp/copy-*" >/dev/null && fail "the archive's staging directory stayed"

# docker-archives, both ways: the image (its config) survives; the name goes in RepoTags.
kiln copy -q "docker://$A/lib/app:1" "docker-archive:$WORK/app-docker.tar:team/app:1"
assert_eq "$(config_digest "docker-archive:$WORK/app-docker.tar")" "$app_config" "skopeo reads the docker-archive"
assert_eq "$(tar -xOf "$WORK/app-docker.tar" manifest.json | jq -r '.[0].RepoTags[0]')" "team/app:1" "RepoTags"
skopeo copy -q "oci:$app_layout:1" "docker-archive:$WORK/skopeo-docker.tar:sk/app:1" >/dev/null
kiln copy -q "docker-archive:$WORK/skopeo-docker.tar" "docker://$B/fromdocker/app:1"
assert_eq "$(config_digest "docker://$B/fromdocker/app:1")" "$app_config" "docker-archive to registry"
skopeo copy -q --src-tls-verify=false "docker://$B/fromdocker/app:1" "oci:$WORK/check:2" >/dev/null
kiln copy -q "docker-archive:$WORK/skopeo-docker.tar:sk/app:1" "oci:$WORK/lay3:x"
assert_eq "$(config_digest "oci:$WORK/lay3:x")" "$app_config" "docker-archive chosen by name to a layout"
assert_eq "$(kiln load -i "$WORK/app-docker.tar")" "Loaded image: team/app:1" "kiln loads the docker-archive"
assert_eq "$(kiln inspect --format '{{.Id}}' team/app:1)" "$app_config" "image ID through the docker-archive"

# A connection cut mid-blob, on the way out of the source and on the way into the destination:
# the copy resumes (a Range request to the source, the upload where the registry stopped) and
# finishes.
registry_use src
registry_seed_image big/img:1 1 3000000
big_digest=$SEED_DIGEST big_layer=$SEED_LAYERS
fault_proxy_start "$A" from
fault_proxy_arm "cut:/blobs/$big_layer:1000000"
out=$(kiln copy "docker://$PROXY_ADDR/big/img:1" "docker://$B/big/img:1" 2>&1)
assert_contains "$out" "Copied $big_digest" "copy after a cut download"
grep -q "GET /v2/big/img/blobs/$big_layer range=bytes=1000000-" "$PROXY_LOG" ||
  fail "no Range request after the cut: $(grep "blobs/$big_layer" "$PROXY_LOG")"
assert_eq "$(raw_digest "docker://$B/big/img:1")" "$big_digest" "manifest after a cut download"
skopeo copy -q --src-tls-verify=false "docker://$B/big/img:1" "oci:$WORK/check:3" >/dev/null
# With no retries, the cut download is the answer: the upload it fed stops, and no tag is made.
fault_proxy_arm "cut:/blobs/$big_layer:1000000"
expect_fail 1 "get blob $big_layer of \`$PROXY_ADDR/big/img\`" \
  kiln --retry 0 copy "docker://$PROXY_ADDR/big/img:1" "docker://$B/big/fail:1"
sk --raw "docker://$B/big/fail:1" >/dev/null 2>&1 && fail "a failed copy made the tag"
registry_use dst
fault_proxy_start "$B" to
fault_proxy_arm "cut-request:^PUT /v2/cut/img/blobs/uploads/.*digest=$big_layer:1000000"
out=$(kiln copy "docker://$A/big/img:1" "docker://$PROXY_ADDR/cut/img:1" 2>&1)
assert_contains "$out" "Copied $big_digest" "copy after a cut upload"
grep -q "request body cut" "$PROXY_LOG" || fail "the upload was not cut: $(grep PUT "$PROXY_LOG")"
skopeo copy -q --src-tls-verify=false "docker://$B/cut/img:1" "oci:$WORK/check:4" >/dev/null

# A blob above the upload's chunk size (64 MiB) goes up in two PATCHes fed by one download.
registry_use src
registry_seed_image huge/img:1 1 $((70 << 20))
huge_digest=$SEED_DIGEST huge_layer=$SEED_LAYERS
kiln copy -q "docker://$A/huge/img:1" "docker://$B/huge/img:1"
assert_eq "$(raw_digest "docker://$B/huge/img:1")" "$huge_digest" "a chunked copy"
registry_use dst
assert_eq "$(grep -c "\"PATCH /v2/huge/img/blobs/uploads/" "$REGISTRY_LOG")" "2" "two chunks"
assert_eq "$(grep -c "\"GET /v2/huge/img/blobs/$huge_layer" "$A_LOG")" "1" "one download for both chunks"

# Errors, in kiln's voice, naming the copy and what failed.
expect_fail 1 "copy \`docker://$A/lib/app:nope\` to \`oci:$WORK/err:x\`: get manifest \`$A/lib/app:nope\`: manifest unknown" \
  kiln copy "docker://$A/lib/app:nope" "oci:$WORK/err:x"
expect_fail 125 "\`dir:$WORK/x\`: transport dir: is not supported" kiln copy "dir:$WORK/x" "oci:$WORK/err:x"
expect_fail 1 "a docker-archive holds a single image" \
  kiln copy --all-platforms "docker://$A/multi/img" "docker-archive:$WORK/multi.tar"
[[ ! -e $WORK/multi.tar ]] || fail "a failed copy left a docker-archive"
expect_fail 1 "has no image named \`nope\`" kiln copy "oci:$WORK/lay:nope" "oci:$WORK/err:x"
# A tampered blob: the registry serves other bytes under the layer's digest. Copied to a layout,
# the copy fails and index.json is as it was; copied to a registry, the blob is never completed
# and the tag never made.
registry_use src
registry_seed_image tamper/img:1 1 200000
data=$A_DATA/docker/registry/v2/blobs/sha256/${SEED_LAYERS:7:2}/${SEED_LAYERS#sha256:}/data
size=$(stat -c %s "$data")
head -c "$size" /dev/urandom >"$data"
before=$(sha256sum "$WORK/lay/index.json")
expect_fail 1 "copy \`docker://$A/tamper/img:1\` to \`oci:$WORK/lay:bad\`: \`oci:$WORK/lay\`: blob $SEED_LAYERS: digest mismatch" \
  kiln copy "docker://$A/tamper/img:1" "oci:$WORK/lay:bad"
assert_eq "$(sha256sum "$WORK/lay/index.json")" "$before" "a failed copy leaves index.json alone"
expect_fail 1 "blob $SEED_LAYERS: digest mismatch" kiln copy "docker://$A/tamper/img:1" "docker://$B/tamper/img:1"
sk --raw "docker://$B/tamper/img:1" >/dev/null 2>&1 && fail "a failed copy made the tag"
registry_use dst
sk --raw "docker://$B/tamper/img@$SEED_DIGEST" >/dev/null 2>&1 && fail "a failed copy stored the manifest"
echo "ok"
