#!/usr/bin/env bash
# Pull and push against Debian's docker-registry (no auth, plain HTTP on 127.0.0.1), judged by
# skopeo: what kiln pushes skopeo reads with the same digests, what skopeo pushes kiln pulls with
# the same digests; an index resolves to the platform asked for; a blob mounted across
# repositories shows in the registry's log; inspect's RepoDigests name what was pushed and pulled; a
# tampered blob is refused and leaves the store alone; push --all-tags; an artifact is no image to
# pull.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl strace
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain
R=$REGISTRY_ADDR

# kiln push: a busybox image imported into the store.
make_busybox_tar "$WORK/bb.tar"
kiln import -c 'CMD ["/bin/sh"]' "$WORK/bb.tar" "$R/kiln/bb:v1" >/dev/null
out=$(kiln push --digestfile "$WORK/digest" "$R/kiln/bb:v1")
pushed=$(cat "$WORK/digest")
assert_contains "$out" "v1: digest: $pushed size: " "push prints the manifest digest"
assert_contains "$out" ": Pushed" "push lists its layers"
# skopeo sees the same manifest, byte for byte, and the same config.
raw=$(skopeo inspect --tls-verify=false --raw "docker://$R/kiln/bb:v1")
assert_eq "sha256:$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)" "$pushed" "skopeo's manifest digest"
assert_eq "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$R/kiln/bb:v1")" "$pushed"
id=$(kiln inspect --format '{{.Id}}' "$R/kiln/bb:v1")
assert_eq "$(jq -r .config.digest <<<"$raw")" "$id" "config digest as pushed"
skopeo copy -q --src-tls-verify=false "docker://$R/kiln/bb:v1" "oci:$WORK/oci:bb" >/dev/null
# A second push has nothing to upload.
out=$(kiln push "$R/kiln/bb:v1")
assert_contains "$out" "Layer already exists" "second push"
# `kiln manifest inspect` and `kiln tags`.
assert_eq "$(kiln manifest inspect "$R/kiln/bb:v1" | jq -c .)" "$(jq -c . <<<"$raw")" "manifest inspect"
kiln tag "$R/kiln/bb:v1" "$R/kiln/bb:v2"
kiln push -q "$R/kiln/bb:v2"
assert_eq "$(kiln tags "$R/kiln/bb" | sort | tr '\n' ' ')" "v1 v2 " "tags"

# Cross-repository mount: the same image pushed to another repository of the registry.
kiln tag "$R/kiln/bb:v1" "$R/other/bb:v1"
out=$(kiln push "$R/other/bb:v1")
assert_contains "$out" "Mounted from kiln/bb" "push mounts the layer"
# RepoDigests, as docker inspect shows them: each repository pushed to, with the manifest's digest.
assert_eq "$(kiln inspect --format '{{json .RepoDigests}}' "$R/kiln/bb:v1")" \
  "[\"$R/kiln/bb@$pushed\",\"$R/other/bb@$pushed\"]" "RepoDigests after two pushes"
grep -q "POST /v2/other/bb/blobs/uploads/?mount=sha256:[0-9a-f]*&from=kiln%2Fbb\|POST /v2/other/bb/blobs/uploads/?mount=sha256:[0-9a-f]*&from=kiln/bb" \
  "$REGISTRY_LOG" || fail "no mount in the registry's log: $(grep -c POST "$REGISTRY_LOG") POSTs"

# kiln pull into a fresh store: the image runs, and has the same ID and digest.
export KILN_ROOT=$WORK/store2
out=$(kiln pull "$R/kiln/bb:v1")
assert_contains "$out" "Digest: $pushed" "pull prints the digest"
assert_contains "$out" "Status: Downloaded newer image for $R/kiln/bb:v1" "pull status"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/kiln/bb:v1")" "$id" "pulled image ID"
assert_eq "$(kiln inspect --format '{{json .RepoDigests}}' "$R/kiln/bb:v1")" "[\"$R/kiln/bb@$pushed\"]" \
  "RepoDigests after a pull"
assert_eq "$(kiln run --rm "$R/kiln/bb:v1" echo pulled)" "pulled" "the pulled image runs"
out=$(kiln pull "$R/kiln/bb:v1")
assert_contains "$out" "Already exists" "second pull"
assert_contains "$out" "Image is up to date" "second pull status"
assert_eq "$(kiln pull -q "$R/kiln/bb:v1")" "$R/kiln/bb:v1" "pull -q"

# What skopeo pushes, kiln pulls, digests equal; layers checked against the config's diff IDs.
# Its threads leave signal dispositions alone (the builder's stages share the process): strace
# sees no rt_sigaction of SIGPIPE, which libcurl's shared connection cache made at each clean-up.
registry_seed_image seeded/img:t1 3 200000
# (LeakSanitizer cannot run under ptrace: off for this run of a sanitized build.)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
  strace -f -qq -e trace=rt_sigaction -o "$WORK/sigactions" "$KILN" pull -q "$R/seeded/img:t1" >/dev/null
! grep SIGPIPE "$WORK/sigactions" || fail "the pull changed SIGPIPE's disposition"
kiln rmi "$R/seeded/img:t1" >/dev/null
out=$(kiln pull "$R/seeded/img:t1")
assert_contains "$out" "Digest: $SEED_DIGEST" "digest of skopeo's image"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/seeded/img:t1")" "$SEED_CONFIG" "config of skopeo's image"
assert_eq "$(kiln inspect --format '{{json .Descriptor}}' "$R/seeded/img:t1" | jq -r .digest)" "$SEED_DIGEST"
# By digest: stored untagged, as Docker does.
export KILN_ROOT=$WORK/store3
kiln pull -q "$R/seeded/img@$SEED_DIGEST" >/dev/null
assert_eq "$(kiln images -q --no-trunc)" "$SEED_CONFIG" "pull by digest"
assert_eq "$(kiln images --format '{{.Tag}}')" "<none>" "pull by digest is untagged"

# A multi-platform index (pushed by skopeo --all): the host's platform by default, another on
# request, and a clear error for one the index lacks.
registry_seed_index multi/img:latest amd64 arm64
index_digest=$INDEX_DIGEST config_amd64=$INDEX_CONFIG_amd64 config_arm64=$INDEX_CONFIG_arm64
export KILN_ROOT=$WORK/store4
out=$(kiln pull "$R/multi/img")
assert_eq "$(head -1 <<<"$out")" "Using default tag: latest" "a name without a tag, said as Docker says it"
assert_contains "$out" "Digest: $index_digest" "an index's pull prints the index digest"
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/multi/img")" "$config_amd64" "host platform chosen"
assert_eq "$(kiln inspect --format '{{index .RepoDigests 0}}' "$R/multi/img")" "$R/multi/img@$index_digest" \
  "an index's pull: RepoDigests name the index"
kiln pull -q --platform linux/arm64 "$R/multi/img" >/dev/null
assert_eq "$(kiln inspect --format '{{.Id}}' "$R/multi/img")" "$config_arm64" "--platform linux/arm64"
expect_fail 1 "no image for linux/s390x in its index (it has linux/amd64, linux/arm64)" \
  kiln pull --platform linux/s390x "$R/multi/img"

# A tampered blob: the registry serves other bytes under the layer's digest. The pull fails with a
# digest error, and the store is exactly as before.
export KILN_ROOT=$WORK/store5
kiln pull -q "$R/kiln/bb:v1" >/dev/null
before=$(store_state)
layer=$(echo "$SEED_LAYERS" | cut -d' ' -f1)
data=$REGISTRY_DATA/docker/registry/v2/blobs/sha256/${layer:7:2}/${layer#sha256:}/data
size=$(stat -c %s "$data")
head -c "$size" /dev/urandom >"$data"
expect_fail 1 "digest mismatch" kiln pull "$R/seeded/img:t1"
assert_eq "$(store_state)" "$before" "a refused pull leaves the store as it was"
[[ ! -e $KILN_ROOT/tmp/partial/${layer#sha256:} ]] || fail "the refused blob stays in tmp/partial"

# push --all-tags: every tag of the repository, each to its name, the shared layer uploaded once.
export KILN_ROOT=$WORK/store-tags
kiln import "$WORK/bb.tar" "$R/kiln/tags:one" >/dev/null
kiln tag "$R/kiln/tags:one" "$R/kiln/tags:two"
kiln tag "$R/kiln/tags:one" "$R/kiln/other:three"
out=$(kiln push --all-tags "$R/kiln/tags")
assert_eq "$(grep -c ': Pushed$' <<<"$out")" 1 "the layer uploaded once"
assert_eq "$(grep -c ': digest: sha256:' <<<"$out")" 2 "a manifest for each tag"
assert_eq "$(skopeo list-tags --tls-verify=false "docker://$R/kiln/tags" | jq -r '.Tags | sort | join(" ")')" \
  "one two" "the repository's tags, and only them"
expect_fail 125 "name a repository, without a tag or digest" kiln push -a "$R/kiln/tags:one"
expect_fail 1 "no tag of \`$R/kiln/none\` in the store" kiln push -a "$R/kiln/none"

# An artifact (here a Helm chart: its own config and layer media types) is no image to pull: said
# so, nothing stored. kiln copy moves it.
upload() {
  local location digest
  digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -D - -o /dev/null "http://$R/v2/art/chart/blobs/uploads/" | tr -d '\r' |
    sed -n 's/^location: //Ip')
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$1" "$location&digest=$digest"
  jq -cn --arg m "$2" --arg d "$digest" --argjson s "$(stat -c %s "$1")" '{mediaType:$m, digest:$d, size:$s}'
}
echo '{"name":"chart","version":"1.0.0"}' >"$WORK/chart-config.json"
head -c 1000 /dev/urandom >"$WORK/chart.tgz"
jq -cn --argjson c "$(upload "$WORK/chart-config.json" application/vnd.cncf.helm.config.v1+json)" \
  --argjson l "$(upload "$WORK/chart.tgz" application/vnd.cncf.helm.chart.content.v1.tar+gzip)" \
  '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json", config:$c, layers:[$l]}' \
  >"$WORK/chart-manifest.json"
curl -sSf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$WORK/chart-manifest.json" "http://$R/v2/art/chart/manifests/1"
export KILN_ROOT=$WORK/store-artifact
kiln images -q >/dev/null
before=$(store_state)
expect_fail 1 "pull \`$R/art/chart:1\`: not a container image: its config is \`application/vnd.cncf.helm.config.v1+json\`" \
  kiln pull "$R/art/chart:1"
assert_eq "$(store_state)" "$before" "a refused artifact leaves the store as it was"
kiln copy -q "$R/art/chart:1" "$R/art/copied:1"
assert_eq "$(skopeo inspect --tls-verify=false --raw "docker://$R/art/copied:1")" "$(cat "$WORK/chart-manifest.json")" \
  "the artifact copied byte for byte"

# Errors name what is missing.
expect_fail 1 "manifest unknown" kiln pull "$R/kiln/bb:nope"
expect_fail 1 "connect to 127.0.0.1 port 1" kiln --retry 0 pull 127.0.0.1:1/x/y:z
echo "ok"
