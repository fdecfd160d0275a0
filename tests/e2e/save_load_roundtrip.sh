#!/usr/bin/env bash
# save writes Docker's manifest.json + repositories and an OCI layout in one tar; load takes it
# back; save → load → save keeps every digest and the archive bytes.
source "$(dirname "$0")/lib.sh"
need jq tar xz bzip2

make_busybox_tar "$WORK/bb.tar"
id=$(SOURCE_DATE_EPOCH=1700000000 kiln import -c 'CMD ["/bin/sh"]' "$WORK/bb.tar" busybox:1)
kiln tag busybox:1 example.com/team/bb:2
kiln save -o "$WORK/one.tar" busybox:1 example.com/team/bb:2

mkdir "$WORK/x" && tar -C "$WORK/x" -xf "$WORK/one.tar"
for f in manifest.json index.json oci-layout repositories; do [[ -f $WORK/x/$f ]] || fail "save wrote no $f"; done
assert_eq "$(jq -r '.[0].Config' "$WORK/x/manifest.json")" "blobs/sha256/${id#sha256:}" "manifest.json Config"
assert_eq "$(jq -c '.[0].RepoTags' "$WORK/x/manifest.json")" '["busybox:1","example.com/team/bb:2"]' "RepoTags"
assert_eq "$(jq -r '.busybox["1"]' "$WORK/x/repositories" | wc -c)" 65 "repositories names the top layer"
assert_eq "$(jq -r '.manifests | length' "$WORK/x/index.json")" 2 "one index entry per name"
assert_eq "$(jq -r '.manifests[0].annotations["io.containerd.image.name"]' "$WORK/x/index.json")" \
  "docker.io/library/busybox:1" "full name annotation"
# Every blob is named by its digest.
for b in "$WORK"/x/blobs/sha256/*; do
  assert_eq "$(sha256sum "$b" | cut -d' ' -f1)" "$(basename "$b")" "blob $(basename "$b")"
done

# Load into a fresh store, save again: same bytes.
export KILN_ROOT=$WORK/store2
out=$(kiln load -i "$WORK/one.tar")
assert_contains "$out" "Loaded image: busybox:1" "load output"
assert_contains "$out" "Loaded image: example.com/team/bb:2" "load output"
assert_eq "$(kiln inspect --format '{{.Id}}' busybox:1)" "$id" "image ID after load"
kiln save -o "$WORK/two.tar" busybox:1 example.com/team/bb:2
cmp "$WORK/one.tar" "$WORK/two.tar" || fail "save → load → save changed the archive"

# Compressed archives and stdin load too; loading twice is harmless.
gzip -c "$WORK/one.tar" >"$WORK/one.tar.gz"
export KILN_ROOT=$WORK/store3
kiln load <"$WORK/one.tar.gz" >/dev/null
kiln load -q -i "$WORK/one.tar" >/dev/null
assert_eq "$(kiln images -q | sort -u | wc -l)" 1 "one image after loading twice"

# Saved by ID: no names travel, and load reports the ID.
kiln save -o "$WORK/byid.tar" "${id:7:12}"
export KILN_ROOT=$WORK/store4
assert_eq "$(kiln load -i "$WORK/byid.tar")" "Loaded image ID: $id" "load of an unnamed image"

# The format Docker wrote before 25 (<id>/layer.tar, <hex>.json, layers shared through symlinks)
# and a very old manifest.json without RepoTags load too.
legacy=$WORK/legacy && mkdir -p "$legacy/aaa" "$legacy/bbb"
cp "$WORK/bb.tar" "$legacy/aaa/layer.tar"
ln -s ../aaa/layer.tar "$legacy/bbb/layer.tar"
diff=sha256:$(sha256sum "$WORK/bb.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","created":"2020-01-01T00:00:00Z","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
  "$diff" "$diff" >"$WORK/cfg"
cfg_hex=$(sha256sum "$WORK/cfg" | cut -d' ' -f1)
mv "$WORK/cfg" "$legacy/$cfg_hex.json"
printf '[{"Config":"%s.json","RepoTags":["legacy/app:old"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]' "$cfg_hex" >"$legacy/manifest.json"
printf '{"legacy/app":{"old":"bbb"}}' >"$legacy/repositories"
tar -C "$legacy" -cf "$WORK/legacy.tar" .
export KILN_ROOT=$WORK/store5
assert_eq "$(kiln load -i "$WORK/legacy.tar")" "Loaded image: legacy/app:old" "load of the pre-25 format"
assert_eq "$(kiln inspect --format '{{.Id}}' legacy/app:old)" "sha256:$cfg_hex" "legacy image ID"
# As with Docker, history comes from the config's history, which this config does not have.
assert_eq "$(kiln history -q legacy/app:old)" "" "legacy history"
assert_eq "$(kiln images -q legacy/app)" "${cfg_hex:0:12}" "legacy image listed"

# Layers compressed with xz or bzip2 (which docker load takes) are stored as gzip, the image ID
# unchanged.
xzd=$WORK/xz && mkdir -p "$xzd"
diff_hex=$(sha256sum "$WORK/bb.tar" | cut -d' ' -f1)
xz -c "$WORK/bb.tar" >"$xzd/a.tar.xz" && bzip2 -c "$WORK/bb.tar" >"$xzd/b.tar.bz2"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' \
  "$diff_hex" "$diff_hex" >"$xzd/config.json"
printf '[{"Config":"config.json","RepoTags":["packed:1"],"Layers":["a.tar.xz","b.tar.bz2"]}]' >"$xzd/manifest.json"
tar -C "$xzd" -cf "$WORK/packed.tar" manifest.json config.json a.tar.xz b.tar.bz2
export KILN_ROOT=$WORK/store6
assert_eq "$(kiln load -i "$WORK/packed.tar")" "Loaded image: packed:1" "load of xz and bzip2 layers"
assert_eq "$(kiln inspect --format '{{.Id}}' packed:1)" "sha256:$(sha256sum "$xzd/config.json" | cut -d' ' -f1)" \
  "image ID of a transcoded image"
kiln save -o "$WORK/packed-again.tar" packed:1
mkdir "$WORK/pa" && tar -C "$WORK/pa" -xf "$WORK/packed-again.tar"
for l in $(jq -r '.[0].Layers[]' "$WORK/pa/manifest.json"); do
  assert_eq "$(head -c 2 "$WORK/pa/$l" | od -An -tx1 | tr -d ' ')" "1f8b" "a transcoded layer is gzip"
done
assert_eq "$(ls "$KILN_ROOT/oci/blobs/sha256" | wc -l)" 3 "only the gzip form is kept (config, manifest, one layer)"

# export: the flattened root filesystem.
export KILN_ROOT=$WORK/store2
kiln export -o "$WORK/fs.tar" busybox:1
grep -qx 'bin/busybox' <(tar -tf "$WORK/fs.tar") || fail "export lacks bin/busybox"
assert_eq "$(tar -xOf "$WORK/fs.tar" bin/busybox | sha256sum)" "$(sha256sum </bin/busybox)" "exported busybox"

# -o into a device, a fifo or through a symlink writes there, as Docker does: it never replaces
# the device node or the link with a file of its own.
null_before=$(stat -c '%F %t:%T' /dev/null)
kiln save -o /dev/null busybox:1
kiln export -o /dev/null busybox:1
assert_eq "$(stat -c '%F %t:%T' /dev/null)" "$null_before" "/dev/null is still the null device"
mkfifo "$WORK/pipe"
sha256sum <"$WORK/pipe" >"$WORK/pipe.sum" &
reader=$!
kiln save -o "$WORK/pipe" busybox:1
wait "$reader"
[[ -p $WORK/pipe ]] || fail "the fifo was replaced"
kiln save -o "$WORK/direct.tar" busybox:1
assert_eq "$(cut -d' ' -f1 "$WORK/pipe.sum")" "$(sha256sum <"$WORK/direct.tar" | cut -d' ' -f1)" "save through a fifo"
mkdir "$WORK/real" && ln -s real/linked.tar "$WORK/link.tar"
kiln save -o "$WORK/link.tar" busybox:1
[[ -L $WORK/link.tar ]] || fail "the symlink was replaced by a file"
cmp "$WORK/real/linked.tar" "$WORK/direct.tar" || fail "save through a symlink"
echo ok
