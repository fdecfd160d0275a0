#!/usr/bin/env bash
# Real peers judge kiln's output: skopeo inspects and copies `kiln save` archives and reads the store
# as an OCI layout; umoci unpacks an image from the store; kiln loads what skopeo writes.
source "$(dirname "$0")/lib.sh"
need skopeo umoci jq

make_busybox_tar "$WORK/bb.tar"
id=$(kiln import -c 'CMD ["/bin/sh"]' -c 'ENV FOO=bar' "$WORK/bb.tar" busybox:peer)
kiln save -o "$WORK/save.tar" busybox:peer
diff_id=$(kiln inspect --format '{{json .RootFS.Layers}}' busybox:peer | jq -r '.[0]')

# skopeo reads the docker-archive half ...
out=$(skopeo inspect --config docker-archive:"$WORK/save.tar")
assert_eq "$(jq -r '.rootfs.diff_ids[0]' <<<"$out")" "$diff_id" "skopeo inspect docker-archive"
assert_eq "$(jq -c '.config.Env' <<<"$out")" '["FOO=bar"]' "skopeo sees the config"
# ... and the OCI half, from the store directly.
out=$(skopeo inspect --config oci:"$KILN_ROOT/oci:docker.io/library/busybox:peer")
assert_eq "$(jq -r '.rootfs.diff_ids[0]' <<<"$out")" "$diff_id" "skopeo inspect oci: of the store"
# skopeo copies them, into formats kiln loads back.
skopeo copy -q docker-archive:"$WORK/save.tar" oci:"$WORK/oci-copy:copied" >/dev/null
skopeo copy -q docker-archive:"$WORK/save.tar" docker-archive:"$WORK/skopeo-docker.tar":skopeo/bb:d >/dev/null
skopeo copy -q oci:"$KILN_ROOT/oci:docker.io/library/busybox:peer" oci-archive:"$WORK/skopeo-oci.tar":skopeo/bb:o >/dev/null

export KILN_ROOT=$WORK/store2
assert_eq "$(kiln load -i "$WORK/skopeo-docker.tar")" "Loaded image: skopeo/bb:d" "load skopeo docker-archive"
assert_eq "$(kiln inspect --format '{{.Id}}' skopeo/bb:d)" "$id" "same image ID through skopeo docker-archive"
out=$(kiln load -i "$WORK/skopeo-oci.tar")
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' "$(kiln images -q | head -1)" | jq -r '.[0]')" \
  "$diff_id" "same diff ID through skopeo oci-archive ($out)"
kiln export -o "$WORK/fs.tar" skopeo/bb:d
grep -qx bin/busybox <(tar -tf "$WORK/fs.tar") || fail "export after skopeo round trip"

# umoci unpacks an image straight out of kiln's store, addressed by its ID (umoci takes only
# tag-shaped names; every image has an index entry whose ref.name is its ID).
export KILN_ROOT=$WORK/store
umoci unpack --image "$KILN_ROOT/oci:${id#sha256:}" "$WORK/bundle" >/dev/null 2>"$WORK/umoci.err" ||
  fail "umoci unpack: $(cat "$WORK/umoci.err")"
cmp /bin/busybox "$WORK/bundle/rootfs/bin/busybox" || fail "umoci's rootfs differs"
assert_eq "$(readlink "$WORK/bundle/rootfs/bin/sh")" busybox "umoci kept the symlink"
assert_eq "$(jq -c '.process.env' "$WORK/bundle/config.json" | grep -c FOO=bar)" 1 "umoci read the config"
echo ok
