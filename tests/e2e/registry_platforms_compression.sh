#!/usr/bin/env bash
# `kiln pull --all-platforms` and `kiln push --compression` against Debian's docker-registry (no
# auth, plain HTTP on 127.0.0.1), judged by skopeo.
#
# --all-platforms: a two-platform index pushed by skopeo --all (each platform a busybox layer they
# share plus one of its own, and an attestation entry) gives both images, the index blob, the name
# on this machine's image (or --platform's), a shared layer downloaded once; a layer that fails to
# verify in the last platform leaves the store as it was, the first platform included.
# A pull by the index's digest: the image is listed under its repository with that digest, runs,
# builds FROM it, and goes with rmi of the digest (only untagged while a tag names it).
# --compression: a gzip image pushed as zstd has zstd layers (skopeo reads them), the same config
# and diff IDs, runs once pulled; a second push reuses the recompressed blobs, a pruned one (its
# records pruned with it) is made again with the same digest; back to gzip; without the flag, as stored; the memory of a push
# does not grow with its layer.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain
R=$REGISTRY_ADDR
case $(uname -m) in
  x86_64) host=amd64 other=arm64 ;;
  aarch64) host=arm64 other=amd64 ;;
  *) skip "no second architecture chosen for $(uname -m)" ;;
esac
zstd_type=application/vnd.oci.image.layer.v1.tar+zstd
gzip_type=application/vnd.oci.image.layer.v1.tar+gzip

# ------------------------------------------------------------------ an index of two platforms

# busybox as kiln imports it (one gzip layer), in an OCI layout written by skopeo; two random
# layers of 100000 bytes, one for each platform's own.
export KILN_ROOT=$WORK/store-src
make_busybox_tar "$WORK/bb.tar"
kiln import -c 'CMD ["/bin/sh"]' "$WORK/bb.tar" "$R/kiln/bb:v1" >/dev/null
kiln push -q "$R/kiln/bb:v1"
bb_id=$(kiln inspect --format '{{.Id}}' "$R/kiln/bb:v1")
skopeo copy -q --src-tls-verify=false "docker://$R/kiln/bb:v1" "oci:$WORK/bb-oci:bb" >/dev/null
registry_seed_image seeded/extra:1 2 100000
read -r own_host own_other <<<"$SEED_LAYERS"

index_dir=$WORK/index
mkdir -p "$index_dir/blobs/sha256"
cp "$WORK"/bb-oci/blobs/sha256/* "$SEED_LAYOUT"/blobs/sha256/* "$index_dir/blobs/sha256/"
echo '{"imageLayoutVersion":"1.0.0"}' >"$index_dir/oci-layout"
add_blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$index_dir/blobs/sha256/$d"; echo "sha256:$d $(stat -c %s "$index_dir/blobs/sha256/$d")"; }
blob() { cat "$index_dir/blobs/sha256/${1#sha256:}"; }
bb_manifest=$(blob "$(jq -r '.manifests[0].digest' "$WORK/bb-oci/index.json")")
bb_config=$(blob "$(jq -r .config.digest <<<"$bb_manifest")")
seed_manifest=$(blob "$SEED_DIGEST")
seed_config=$(blob "$SEED_CONFIG")
entries=()
# The other platform first: the name must go to this machine's, not to the first.
for role in other host; do
  arch=${!role}
  k=$([[ $role == host ]] && echo 0 || echo 1)  # which seed layer is this platform's own
  jq -c --arg a "$arch" --argjson s "$seed_config" --argjson k "$k" \
    '.architecture=$a | .rootfs.diff_ids += [$s.rootfs.diff_ids[$k]]' <<<"$bb_config" >"$WORK/c.json"
  read -r cd cs < <(add_blob "$WORK/c.json")
  jq -c --arg d "$cd" --argjson s "$cs" --argjson m "$seed_manifest" --argjson k "$k" \
    '.config.digest=$d | .config.size=$s | .layers += [$m.layers[$k]]' <<<"$bb_manifest" >"$WORK/m.json"
  read -r md ms < <(add_blob "$WORK/m.json")
  entries+=("$(jq -cn --arg d "$md" --argjson s "$ms" --arg a "$arch" \
    '{mediaType:"application/vnd.oci.image.manifest.v1+json", digest:$d, size:$s, platform:{os:"linux", architecture:$a}}')")
  eval "config_$role=$cd manifest_$role=$md"
done
# An attestation as BuildKit attaches one: an in-toto layer, platform unknown/unknown.
echo '{"_type":"https://in-toto.io/Statement/v0.1"}' >"$WORK/att.json"
read -r ad as < <(add_blob "$WORK/att.json")
echo '{}' >"$WORK/att-config.json"
read -r acd acs < <(add_blob "$WORK/att-config.json")
jq -cn --arg cd "$acd" --argjson cs "$acs" --arg ld "$ad" --argjson ls "$as" \
  '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
    config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$cd, size:$cs},
    layers:[{mediaType:"application/vnd.in-toto+json", digest:$ld, size:$ls}]}' >"$WORK/att-m.json"
read -r attd atts < <(add_blob "$WORK/att-m.json")
entries+=("$(jq -cn --arg d "$attd" --argjson s "$atts" --arg r "$manifest_host" \
  '{mediaType:"application/vnd.oci.image.manifest.v1+json", digest:$d, size:$s,
    platform:{os:"unknown", architecture:"unknown"},
    annotations:{"vnd.docker.reference.type":"attestation-manifest", "vnd.docker.reference.digest":$r}}')")
jq -cn --argjson m "[$(IFS=,; echo "${entries[*]}")]" \
  '{schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json", manifests:$m}' >"$WORK/i.json"
read -r index_digest index_size < <(add_blob "$WORK/i.json")
jq -cn --arg d "$index_digest" --argjson s "$index_size" \
  '{schemaVersion:2, manifests:[{mediaType:"application/vnd.oci.image.index.v1+json", digest:$d, size:$s,
    annotations:{"org.opencontainers.image.ref.name":"multi"}}]}' >"$index_dir/index.json"
skopeo copy -q --all --dest-tls-verify=false "oci:$index_dir:multi" "docker://$R/multi/img:latest" >/dev/null

# ------------------------------------------------------------------ pull --all-platforms

export KILN_ROOT=$WORK/store-all
out=$(kiln pull --all-platforms "$R/multi/img")
assert_contains "$out" "linux/$other: Pulling $manifest_other (1/2)" "the first platform announced"
assert_contains "$out" "linux/$host: Pulling $manifest_host (2/2)" "the second platform announced"
assert_contains "$out" "${attd:7:12}: Skipped (no platform)" "the attestation is passed over"
assert_contains "$out" "Digest: $index_digest" "the index's digest"
assert_contains "$out" "Status: Downloaded newer image for $R/multi/img:latest"
# Three layers, each downloaded once: busybox's (shared) and each platform's own.
assert_eq "$(grep -c ': Pull complete$' <<<"$out")" 3 "layers downloaded"
assert_eq "$(grep -c ': Already exists$' <<<"$out")" 1 "the shared layer, the second time"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/multi/img")" "$config_host" "the name is on this machine's image"
assert_eq "$(kiln images -q --no-trunc | sort | tr '\n' ' ')" \
  "$(printf '%s\n' "$config_host" "$config_other" | sort | tr '\n' ' ')" "both platforms stored"
assert_eq "$(kiln images --format '{{.Repository}}:{{.Tag}} {{.ID}}' --no-trunc | sort | tr '\n' ' ')" \
  "$(printf '%s\n' "$R/multi/img:latest $config_host" "<none>:<none> $config_other" | sort | tr '\n' ' ')" \
  "the other platform untagged"
assert_eq "$(kiln inspect --format '{{.Architecture}}' "$config_other")" "$other" "the other platform's config"
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' "$config_other" | jq length)" 2 \
  "the other platform's layers"
stored_index=$KILN_ROOT/oci/blobs/sha256/${index_digest#sha256:}
[[ -f $stored_index ]] || fail "the index blob is not in the store"
assert_eq "sha256:$(sha256sum "$stored_index" | cut -d' ' -f1)" "$index_digest" "the index's bytes"
[[ ! -e $KILN_ROOT/oci/blobs/sha256/${attd#sha256:} ]] || fail "the attestation was stored"
assert_eq "$(kiln run --rm "$R/multi/img" sh -c 'echo ok')" "ok" "this machine's image runs"
out=$(kiln pull --all-platforms "$R/multi/img")
assert_not_contains "$out" "Pull complete" "a second pull downloads nothing"
assert_contains "$out" "Status: Image is up to date for $R/multi/img:latest"

# --platform names the platform the name goes to.
export KILN_ROOT=$WORK/store-other
assert_eq "$(kiln pull -q --all-platforms --platform "linux/$other" "$R/multi/img")" "$R/multi/img:latest"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/multi/img")" "$config_other" "--platform with --all-platforms"
assert_eq "$(kiln images -q --no-trunc | wc -l)" 2 "both platforms stored"

# ------------------------------------------------------------------ a pull by the index's digest

# The digest a reference resolved to names the image, as Docker's RepoDigests do: listed under its
# repository with no tag (not dangling), found by run, FROM and inspect, and removed by rmi.
export KILN_ROOT=$WORK/store-digest
by_digest=$R/multi/img@$index_digest
assert_eq "$(kiln pull -q "$by_digest")" "$by_digest"
assert_eq "$(kiln images --digests --no-trunc --format '{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}}')" \
  "$R/multi/img <none> $index_digest $config_host" "listed by its repository and the index's digest"
assert_eq "$(kiln images --format '{{.Repository}} {{.Tag}} {{.Digest}}')" "$R/multi/img <none> <none>" \
  "without --digests, one row and no digest"
assert_eq "$(kiln inspect --format '{{json .RepoDigests}}' "$by_digest")" "[\"$by_digest\"]" "RepoDigests"
assert_eq "$(kiln run --rm "$by_digest" sh -c 'echo ok')" "ok" "the image runs by the index's digest"
mkdir -p "$WORK/from-digest"
printf 'FROM %s\nLABEL pinned=yes\n' "$by_digest" >"$WORK/from-digest/Dockerfile"
kiln build -q -t from-digest "$WORK/from-digest" >/dev/null
assert_eq "$(kiln inspect --format '{{index .Config.Labels "pinned"}} {{json .RootFS.Layers}}' from-digest)" \
  "yes $(kiln inspect --format '{{json .RootFS.Layers}}' "$by_digest")" "FROM the index's digest"
# Pulled by its tag too: one row, the tag with the digest.
kiln pull -q "$R/multi/img" >/dev/null
assert_eq "$(kiln images --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}' "$R/multi/img")" \
  "$R/multi/img:latest $index_digest" "the tag's row shows the digest"
out=$(kiln rmi "$by_digest")
assert_eq "$out" "Untagged: $by_digest" "rmi of the digest while the tag names the image"
expect_fail 125 "no such image: \`$by_digest\`" kiln run --rm "$by_digest" true
kiln rmi from-digest >/dev/null
kiln rmi "$R/multi/img" >/dev/null
kiln pull -q "$by_digest" >/dev/null
out=$(kiln rmi "$by_digest")
assert_eq "$out" "Untagged: $by_digest"$'\n'"Deleted: $config_host" "rmi of the last reference deletes the image"
assert_eq "$(kiln images -q)" "" "no image left"

# A platform the index lacks fails before anything is downloaded.
export KILN_ROOT=$WORK/store-none
kiln images -q >/dev/null
before=$(store_state)
expect_fail 1 "no image for linux/s390x in its index (it has linux/$other, linux/$host, unknown/unknown)" \
  kiln pull --all-platforms --platform linux/s390x "$R/multi/img"
assert_eq "$(store_state)" "$before" "a refused pull leaves the store as it was"
assert_eq "$(ls "$KILN_ROOT/oci/blobs/sha256" | wc -l)" 0 "no blob downloaded"

# A single image: --all-platforms pulls it as without the flag.
export KILN_ROOT=$WORK/store-single
out=$(kiln pull --all-platforms "$R/kiln/bb:v1")
assert_not_contains "$out" "Pulling sha256:" "no platforms for a single image"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/kiln/bb:v1")" "$bb_id" "the single image"
assert_eq "$(kiln images -q --no-trunc)" "$bb_id" "one image"

# ------------------------------------------------------------------ push --compression

export KILN_ROOT=$WORK/store-src
bb_layers=$(kiln inspect --format '{{json .RootFS.Layers}}' "$R/kiln/bb:v1")
bb_manifest_digest=$(kiln inspect --format '{{json .Descriptor}}' "$R/kiln/bb:v1" | jq -r .digest)
src_layer=$(jq -r '.layers[0].digest' "$KILN_ROOT/oci/blobs/sha256/${bb_manifest_digest#sha256:}")

expect_fail 125 "--compression \`xz\`: use gzip or zstd" kiln push --compression xz "$R/kiln/bb:v1"

out=$(kiln push --compression zstd --digestfile "$WORK/zstd-digest" "$R/kiln/bb:v1" "$R/zstd/bb:v1")
zstd_digest=$(cat "$WORK/zstd-digest")
raw=$(skopeo inspect --tls-verify=false --raw "docker://$R/zstd/bb:v1")
zstd_layer=$(jq -r '.layers[0].digest' <<<"$raw")
assert_contains "$out" "${src_layer:7:12}: Recompressed with zstd: ${zstd_layer:7:12}" "push says what it recompressed"
assert_contains "$out" "${zstd_layer:7:12}: Pushed" "the zstd layer is uploaded"
assert_contains "$out" "v1: digest: $zstd_digest size: " "push prints the new manifest's digest"
assert_eq "sha256:$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)" "$zstd_digest" "skopeo's manifest digest"
assert_eq "$(jq -r .mediaType <<<"$raw")" application/vnd.oci.image.manifest.v1+json "an OCI manifest"
assert_eq "$(jq -r '[.layers[].mediaType] | unique | join(",")' <<<"$raw")" "$zstd_type" "zstd layers"
assert_eq "$(jq -r .config.digest <<<"$raw")" "$bb_id" "the config is unchanged"
assert_eq "$(jq -r .config.mediaType <<<"$raw")" application/vnd.oci.image.config.v1+json
skopeo copy -q --src-tls-verify=false "docker://$R/zstd/bb:v1" "oci:$WORK/zstd-oci:bb" >/dev/null ||
  fail "skopeo cannot copy the zstd image"
assert_eq "$(head -c 4 "$WORK/zstd-oci/blobs/sha256/${zstd_layer#sha256:}" | od -An -tx1 | tr -d ' ')" 28b52ffd \
  "the layer skopeo copied is zstd"
# What the store keeps: the blob with its layer record, the conversion record, the manifest.
record=$KILN_ROOT/registry/converted/${src_layer#sha256:}-zstd
assert_eq "$(cat "$record")" "$zstd_layer" "the conversion record"
[[ -f $KILN_ROOT/oci/blobs/sha256/${zstd_layer#sha256:} ]] || fail "the zstd blob is not in the store"
assert_eq "$(jq -r .diff_id "$KILN_ROOT/layers/${zstd_layer#sha256:}.json")" "$(jq -r '.[0]' <<<"$bb_layers")" \
  "the zstd blob's diff ID"
[[ -f $KILN_ROOT/oci/blobs/sha256/${zstd_digest#sha256:} ]] || fail "the new manifest is not in the store"
# The image itself is as it was.
assert_eq "$(kiln inspect --format '{{json .Descriptor}}' "$R/kiln/bb:v1" | jq -r .digest)" "$bb_manifest_digest"

# A second push reuses the zstd blob; the manifest is the same.
mtime=$(stat -c %Y.%i "$KILN_ROOT/oci/blobs/sha256/${zstd_layer#sha256:}")
out=$(kiln push --compression zstd --digestfile "$WORK/zstd-digest2" "$R/kiln/bb:v1" "$R/zstd/bb:v2")
assert_contains "$out" "${src_layer:7:12}: Recompressed with zstd earlier: ${zstd_layer:7:12}" "the conversion reused"
assert_not_contains "$out" "Recompressed with zstd: " "nothing recompressed again"
assert_contains "$out" "${zstd_layer:7:12}: Layer already exists"
assert_eq "$(cat "$WORK/zstd-digest2")" "$zstd_digest" "the same manifest"
assert_eq "$(stat -c %Y.%i "$KILN_ROOT/oci/blobs/sha256/${zstd_layer#sha256:}")" "$mtime" "the blob untouched"
# Once prune has removed the blob (no image names it), its records go too (where it was pushed,
# what it was converted from); the conversion is made again, the same.
[[ -f $KILN_ROOT/registry/sources/${zstd_layer#sha256:} ]] || fail "no record of where the zstd blob lives"
kiln prune >/dev/null
[[ ! -e $KILN_ROOT/oci/blobs/sha256/${zstd_layer#sha256:} ]] || fail "prune kept the zstd blob"
[[ ! -e $record ]] || fail "prune kept the conversion record of a blob it removed"
[[ ! -e $KILN_ROOT/registry/sources/${zstd_layer#sha256:} ]] || fail "prune kept the sources of a blob it removed"
[[ -f $KILN_ROOT/registry/sources/${src_layer#sha256:} ]] || fail "prune removed the sources of a blob it kept"
out=$(kiln push --compression zstd --digestfile "$WORK/zstd-digest3" "$R/kiln/bb:v1" "$R/zstd/bb:v3")
assert_contains "$out" "${src_layer:7:12}: Recompressed with zstd: ${zstd_layer:7:12}" "a stale record is a miss"
assert_eq "$(cat "$WORK/zstd-digest3")" "$zstd_digest" "zstd's output does not change"

# Asked for the compression the layers have: pushed as stored.
out=$(kiln push --compression gzip --digestfile "$WORK/same-digest" "$R/kiln/bb:v1" "$R/same/bb:v1")
assert_not_contains "$out" "Recompressed" "gzip layers pushed as gzip"
assert_eq "$(cat "$WORK/same-digest")" "$bb_manifest_digest" "the stored manifest, byte for byte"

# Pulled into a fresh store: the same image, and it runs.
export KILN_ROOT=$WORK/store-zstd
out=$(kiln pull "$R/zstd/bb:v1")
assert_contains "$out" "Digest: $zstd_digest"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/zstd/bb:v1")" "$bb_id" "the pulled image's ID"
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' "$R/zstd/bb:v1")" "$bb_layers" "the same diff IDs"
assert_eq "$(kiln run --rm "$R/zstd/bb:v1" echo ok)" "ok" "the zstd image runs"
# Without --compression: as stored (zstd).
out=$(kiln push --digestfile "$WORK/asis-digest" "$R/zstd/bb:v1" "$R/asis/bb:v1")
assert_not_contains "$out" "Recompressed"
assert_eq "$(cat "$WORK/asis-digest")" "$zstd_digest" "pushed as stored"
# And back to gzip.
out=$(kiln push --compression gzip --digestfile "$WORK/gzip-digest" "$R/zstd/bb:v1" "$R/gzip/bb:v1")
raw=$(skopeo inspect --tls-verify=false --raw "docker://$R/gzip/bb:v1")
gzip_layer=$(jq -r '.layers[0].digest' <<<"$raw")
assert_contains "$out" "${zstd_layer:7:12}: Recompressed with gzip: ${gzip_layer:7:12}"
assert_eq "$(jq -r '[.layers[].mediaType] | unique | join(",")' <<<"$raw")" "$gzip_type" "gzip layers"
assert_eq "$(jq -r .config.digest <<<"$raw")" "$bb_id" "the config is unchanged"
assert_eq "$(cat "$KILN_ROOT/registry/converted/${zstd_layer#sha256:}-gzip")" "$gzip_layer"
skopeo copy -q --src-tls-verify=false "docker://$R/gzip/bb:v1" "oci:$WORK/gzip-oci:bb" >/dev/null ||
  fail "skopeo cannot copy the gzip image"
export KILN_ROOT=$WORK/store-gzip
kiln pull -q "$R/gzip/bb:v1" >/dev/null
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' "$R/gzip/bb:v1")" "$bb_layers" "gzip again: the same diff IDs"

# Memory: recompressing and pushing a 192 MiB layer holds no layer in memory.
export KILN_ROOT=$WORK/store-big
if [[ -x /usr/bin/time ]]; then
  mkdir -p "$WORK/big"
  head -c $((192 << 20)) /dev/urandom >"$WORK/big/random.bin"
  tar -C "$WORK/big" -cf - . | gzip -1 >"$WORK/big.tar.gz"
  rm -rf -- "$WORK/big"
  kiln import "$WORK/big.tar.gz" "$R/kiln/big:v1" >/dev/null
  rm -f -- "$WORK/big.tar.gz"
  /usr/bin/time -f %M -o "$WORK/rss" "$KILN" push -q --compression zstd "$R/kiln/big:v1" >/dev/null
  rss_kib=$(tail -1 "$WORK/rss")
  note "push --compression zstd of a 192 MiB layer: max RSS $((rss_kib >> 10)) MiB"
  # Under a sanitizer the figure is mostly the sanitizer's (shadow memory, ASan's quarantine of
  # freed buffers): it is shown, not judged.
  libraries=$(ldd "$KILN" 2>/dev/null || true)
  if [[ $libraries != *libasan* && $libraries != *libtsan* ]]; then
    ((rss_kib < 128 << 10)) || fail "push --compression used $((rss_kib >> 10)) MiB for a 192 MiB layer"
  fi
fi

# ------------------------------------------------------------------ nothing before all verifies

# The registry serves other bytes for the layer only this machine's platform has, pulled second:
# the other platform, verified by then, must not be visible either.
export KILN_ROOT=$WORK/store-tampered
kiln images -q >/dev/null
before=$(store_state)
data=$REGISTRY_DATA/docker/registry/v2/blobs/sha256/${own_host:7:2}/${own_host#sha256:}/data
head -c "$(stat -c %s "$data")" /dev/urandom >"$data"
expect_fail 1 "digest mismatch" kiln pull --all-platforms "$R/multi/img"
assert_eq "$(store_state)" "$before" "a refused pull leaves the store as it was"
assert_eq "$(ls "$KILN_ROOT/oci/blobs/sha256" | wc -l)" 0 "no blob published"
echo "ok"
