#!/usr/bin/env bash
# The builder and the registry: FROM pulls an image the store lacks, --pull takes the tag's newest
# image, `build --push` pushes what it built (mounting the base's layers); registry-mirrors from
# kiln's config file are tried first for Docker Hub images, and one that is down is passed over; a
# cross build's stages FROM one name for two platforms each get their own.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain
R=$REGISTRY_ADDR
make_busybox_tar "$WORK/bb.tar"
kiln import -c 'CMD ["/bin/sh"]' "$WORK/bb.tar" "$R/base/bb:v1" >/dev/null
kiln push -q "$R/base/bb:v1"

# A fresh store: FROM pulls the base, and the build pushes its result.
export KILN_ROOT=$WORK/store2
mkdir -p "$WORK/ctx"
printf 'FROM %s/base/bb:v1\nRUN echo built > /built\n' "$R" >"$WORK/ctx/Dockerfile"
kiln build --progress plain -t "$R/app/built:1" --push "$WORK/ctx" >"$WORK/out" 2>&1 ||
  fail "build --push: $(cat "$WORK/out")"
out=$(cat "$WORK/out")
assert_contains "$out" "[internal] pull $R/base/bb:v1" "FROM pulls a missing base"
assert_contains "$out" "Mounted from base/bb" "the base's layer is mounted, not uploaded"
assert_contains "$out" "1: digest: sha256:" "build --push"
digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$R/app/built:1")
assert_contains "$out" "1: digest: $digest" "the digest pushed is the registry's"
export KILN_ROOT=$WORK/store3
kiln pull -q "$R/app/built:1" >/dev/null
assert_eq "$(kiln run --rm "$R/app/built:1" cat /built)" "built" "what build --push pushed runs"

# --pull: the tag moved in the registry; a build with --pull uses the new image.
export KILN_ROOT=$WORK/store1b
kiln import -c 'CMD ["/bin/sh"]' -c 'ENV GENERATION=2' "$WORK/bb.tar" "$R/base/bb:v1" >/dev/null
kiln push -q "$R/base/bb:v1"
export KILN_ROOT=$WORK/store2
printf 'FROM %s/base/bb:v1\nRUN echo "gen=$GENERATION" > /gen\n' "$R" >"$WORK/ctx/Dockerfile"
kiln build -q -t old "$WORK/ctx" >/dev/null
assert_eq "$(kiln run --rm old cat /gen)" "gen=" "without --pull the store's base is used"
kiln build -q --pull -t new "$WORK/ctx" >/dev/null
assert_eq "$(kiln run --rm new cat /gen)" "gen=2" "--pull takes the registry's newest"

# A base that no registry has: the error names the FROM line and the registry's answer.
printf 'FROM %s/base/none:v1\n' "$R" >"$WORK/ctx/Dockerfile"
expect_fail 1 "Dockerfile:1: FROM $R/base/none:v1: get manifest" kiln build -q "$WORK/ctx"

# A cross build: two stages FROM one name for two platforms. The store keeps one platform per
# name; each stage gets its own (pulled for it), not the other's with a warning.
case $(uname -m) in
  x86_64) host=amd64 other=arm64 ;;
  aarch64) host=arm64 other=amd64 ;;
esac
registry_seed_image seeded/base:1 1 1000
registry_seed_index multi/base:1 amd64 arm64
manifest_host=INDEX_MANIFEST_$host manifest_other=INDEX_MANIFEST_$other
export KILN_ROOT=$WORK/store-cross
printf 'FROM --platform=linux/%s %s/multi/base:1 AS tools\nFROM %s/multi/base:1\nCOPY --from=tools /file0.bin /tools.bin\n' \
  "$other" "$R" "$R" >"$WORK/ctx/Dockerfile"
kiln build --progress plain -t cross "$WORK/ctx" >"$WORK/out" 2>&1 || fail "cross build: $(cat "$WORK/out")"
assert_not_contains "$(cat "$WORK/out")" "WARNING: the image's platform" "each stage on its own platform"
assert_eq "$(grep -c "\[internal\] pull $R/multi/base:1" "$WORK/out")" 2 "the name pulled for each platform"
assert_eq "$(kiln inspect --format '{{.Architecture}}' cross)" "$host" "the target's platform"
assert_eq "$(kiln inspect --format '{{json .Descriptor}}' "$R/multi/base:1" | jq -r .digest)" \
  "${!manifest_host}" "the name ends on the last pulled, the target's"
[[ -n ${!manifest_other} ]] || fail "no manifest for $other in the seeded index"
export KILN_ROOT=$WORK/store2

# registry-mirrors for Docker Hub: the first is down, the second (this registry) serves.
kiln tag "$R/base/bb:v1" "$R/library/kilntest:v1"
kiln push -q "$R/library/kilntest:v1"
down=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
jq -n --arg a "http://127.0.0.1:$down" --arg b "http://$R" '{"registry-mirrors": [$a, $b]}' >"$WORK/config.json"
export KILN_CONFIG=$WORK/config.json KILN_ROOT=$WORK/store4
kiln pull kilntest:v1 >"$WORK/out" 2>"$WORK/err" || fail "pull through mirrors: $(cat "$WORK/err")"
assert_contains "$(cat "$WORK/err")" "mirror 127.0.0.1:$down failed, trying the next" "the mirror that is down"
assert_contains "$(cat "$WORK/out")" "docker.io/library/kilntest:v1" "pulled as Docker Hub's name"
assert_eq "$(kiln run --rm kilntest:v1 echo mirrored)" "mirrored" "the mirrored image runs"
echo "ok"
