#!/usr/bin/env bash
# Where a build comes from and where it goes: a Dockerfile alone on stdin, a context tarball on
# stdin, -f - beside a context directory, a git repository (file://…#branch:subdir, cloned with the
# system's git); --output to an OCI archive and a docker-archive (read by skopeo), to a tar of the
# files and to a local directory. SOURCE_DATE_EPOCH gives the same image digest from two stores.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need skopeo git jq

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx/sub"
echo "context file" >"$ctx/sub/file.txt"
printf 'FROM busybox\nCOPY sub/file.txt /file.txt\nRUN echo built > /built.txt\n' >"$ctx/Dockerfile"

# A Dockerfile on stdin has no context; one that needs none builds.
printf 'FROM busybox\nRUN echo from-stdin > /stdin.txt\n' | kiln build --progress quiet -t ctx:stdin - >/dev/null ||
  fail "Dockerfile on stdin"
assert_eq "$(kiln run --rm ctx:stdin cat /stdin.txt)" "from-stdin" "Dockerfile on stdin"
printf 'FROM busybox\nCOPY x /x\n' | expect_fail 1 "no context" kiln build -
# A context tarball on stdin (compressed too).
tar -C "$ctx" -czf - . | kiln build --progress quiet -t ctx:tar - >/dev/null || fail "context tarball on stdin"
assert_eq "$(kiln run --rm ctx:tar cat /file.txt)" "context file" "context tarball on stdin"
# -f - with a context directory.
printf 'FROM busybox\nCOPY sub/ /sub/\n' | kiln build --progress quiet -f - -t ctx:dashf "$ctx" >/dev/null || fail "-f -"
assert_eq "$(kiln run --rm ctx:dashf cat /sub/file.txt)" "context file" "-f - with a context"

# A git repository: branch and subdirectory.
repo=$WORK/repo
git init -q -b main "$repo"
mkdir -p "$repo/app"
printf 'FROM busybox\nCOPY hello.txt /hello.txt\n' >"$repo/app/Dockerfile"
echo "on main" >"$repo/app/hello.txt"
git -C "$repo" add -A && git -C "$repo" -c user.name=t -c user.email=t@t commit -qm main
git -C "$repo" checkout -q -b feature
echo "on feature" >"$repo/app/hello.txt"
git -C "$repo" -c user.name=t -c user.email=t@t commit -qam feature
git -C "$repo" checkout -q main
kiln build --progress quiet -t ctx:git "file://$repo#feature:app" >/dev/null 2>"$WORK/err" || fail "git context: $(cat "$WORK/err")"
assert_eq "$(kiln run --rm ctx:git cat /hello.txt)" "on feature" "git context at a branch and subdirectory"
expect_fail 1 "git context" kiln build "file://$repo#no-such-branch:app"

# Outputs.
kiln build --progress quiet -t out:1 -o "type=oci,dest=$WORK/oci.tar" "$ctx" >/dev/null || fail "type=oci"
assert_eq "$(skopeo inspect --config "oci-archive:$WORK/oci.tar" | jq -r '.rootfs.diff_ids | length')" "3" "OCI archive read by skopeo"
kiln build --progress quiet -t out:1 -o "type=docker,dest=$WORK/docker.tar" "$ctx" >/dev/null || fail "type=docker"
assert_eq "$(skopeo inspect "docker-archive:$WORK/docker.tar" | jq -r '.Layers | length')" "3" "docker-archive read by skopeo"
kiln build --progress quiet -o "type=tar,dest=-" "$ctx" >"$WORK/files.tar" || fail "type=tar"
# Not grep -q: it stops reading at the match, and tar, cut off, fails the pipeline (pipefail).
tar -tf "$WORK/files.tar" | grep -x built.txt >/dev/null || fail "type=tar lacks built.txt"
kiln build --progress quiet -o "$WORK/local" "$ctx" >/dev/null || fail "local output"
assert_eq "$(cat "$WORK/local/file.txt") $(cat "$WORK/local/built.txt")" "context file built" "type=local"
[[ -x $WORK/local/bin/busybox ]] || fail "type=local lacks the base image's files"
# --output is CSV, as Docker reads it: a quoted field may hold a comma; a stray quote is an error.
kiln build --progress quiet -o "type=local,\"dest=$WORK/lo,cal\"" "$ctx" >/dev/null || fail "quoted --output field"
[[ -f "$WORK/lo,cal/built.txt" ]] || fail "the quoted dest with a comma"
expect_fail 125 'bare " in non-quoted field' kiln build -o "type=local,dest=\"x\"" "$ctx"

# --platform: the image is made for it (no RUN here: kiln does not emulate other architectures),
# and the platform ARGs follow it.
printf 'FROM scratch\nARG TARGETARCH\nCOPY sub/file.txt /file-$TARGETARCH\n' >"$WORK/Platform.Dockerfile"
kiln build --progress quiet --platform linux/arm64 -f "$WORK/Platform.Dockerfile" -t plat:arm64 "$ctx" >/dev/null || fail "--platform"
assert_eq "$(kiln inspect --format '{{.Architecture}}' plat:arm64)" "arm64" "--platform sets the architecture"
kiln export -o "$WORK/plat.tar" plat:arm64
assert_contains "$(tar -tf "$WORK/plat.tar")" "file-arm64" "TARGETARCH follows --platform"
# FROM --platform sets the stage's platform, and a stage built on it inherits it (BuildKit); the
# final stage's decides the image's.
printf 'FROM --platform=linux/arm64 scratch AS a\nCOPY sub/file.txt /f\nFROM a\n' >"$WORK/FromPlatform.Dockerfile"
kiln build --progress quiet -f "$WORK/FromPlatform.Dockerfile" -t plat:from "$ctx" >/dev/null || fail "FROM --platform"
assert_eq "$(kiln inspect --format '{{.Os}}/{{.Architecture}}' plat:from)" "linux/arm64" "FROM --platform sets the platform"
printf 'FROM --platform=$BUILDPLATFORM scratch\nCOPY sub/file.txt /f\n' >"$WORK/BuildPlatform.Dockerfile"
kiln build --progress quiet --platform linux/arm64 -f "$WORK/BuildPlatform.Dockerfile" -t plat:build "$ctx" >/dev/null ||
  fail "FROM --platform=\$BUILDPLATFORM"
assert_eq "$(kiln inspect --format '{{.Architecture}}' plat:build)" "$(kiln inspect --format '{{.Architecture}}' busybox)" \
  "FROM --platform=\$BUILDPLATFORM is the host's platform whatever --platform says"
printf 'FROM scratch\nFROM --platform=linux/arm64/v8/x scratch\n' >"$WORK/BadPlatform.Dockerfile"
expect_fail 1 "BadPlatform.Dockerfile:2:6: FROM: invalid platform \"linux/arm64/v8/x\"" kiln build -f "$WORK/BadPlatform.Dockerfile" "$ctx"

# Reproducible: two stores, one digest.
for store in one two; do
  SOURCE_DATE_EPOCH=1700000000 KILN_ROOT=$WORK/store-$store "$KILN" import "$WORK/busybox.tar" busybox:latest >/dev/null
  SOURCE_DATE_EPOCH=1700000000 KILN_ROOT=$WORK/store-$store "$KILN" build --progress quiet -t repro:1 "$ctx" >"$WORK/id-$store" ||
    fail "reproducible build in store $store"
  sleep 1.1
done
assert_eq "$(cat "$WORK/id-one")" "$(cat "$WORK/id-two")" "the same image ID from two stores"
m1=$(KILN_ROOT=$WORK/store-one "$KILN" inspect --format '{{json .Descriptor}}' repro:1 | jq -r .digest)
m2=$(KILN_ROOT=$WORK/store-two "$KILN" inspect --format '{{json .Descriptor}}' repro:1 | jq -r .digest)
[[ $m1 == sha256:* ]] || fail "no manifest digest: [$m1]"
assert_eq "$m1" "$m2" "the same manifest digest from two stores"
assert_eq "$(KILN_ROOT=$WORK/store-one "$KILN" inspect --format '{{.Created}}' repro:1)" "2023-11-14T22:13:20Z" "created is SOURCE_DATE_EPOCH"
# Reproducible layers come from zlib (level 4: gzip's XFL byte 0), whose bytes do not depend on the
# CPU; other builds from ISA-L (level 1: XFL 4). The XFL byte is the ninth of a gzip blob.
gzip_levels() {
  local blob
  for blob in "$1"/oci/blobs/sha256/*; do
    [[ $(od -An -tx1 -N2 "$blob" | tr -d ' ') == 1f8b ]] && od -An -tu1 -j8 -N1 "$blob" | tr -d ' '
  done | sort -u | tr '\n' ' '
}
assert_eq "$(gzip_levels "$WORK/store-one")" "0 " "reproducible layers deflated by zlib"
assert_contains "$(gzip_levels "$KILN_ROOT")" "4" "other layers deflated by ISA-L"
echo ok
