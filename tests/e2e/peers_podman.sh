#!/usr/bin/env bash
# podman judges kiln's archives: `podman load` takes what `kiln save` writes (same image ID, same
# name), and kiln loads what `podman save` writes in both of its formats, keeping the image ID.
source "$(dirname "$0")/lib.sh"
need podman jq
[[ $(id -u) -eq 0 ]] || skip "podman's own store needs root here"

podman_() {
  podman --root "$WORK/podman" --runroot "$WORK/podman-run" --storage-driver vfs --cgroup-manager cgroupfs \
    --events-backend none "$@"
}

make_busybox_tar "$WORK/bb.tar"
id=$(kiln import -c 'CMD ["/bin/sh"]' -c 'ENV FOO=bar' "$WORK/bb.tar" kiln/peer:1)
kiln save -o "$WORK/kiln.tar" kiln/peer:1

podman_ load -i "$WORK/kiln.tar" >"$WORK/podman-load.out" 2>&1 || fail "podman load: $(cat "$WORK/podman-load.out")"
assert_eq "$(podman_ image inspect --format '{{.Id}}' docker.io/kiln/peer:1)" "${id#sha256:}" "podman sees kiln's image ID"
assert_eq "$(podman_ image inspect --format '{{json .Config.Cmd}}' docker.io/kiln/peer:1)" '["/bin/sh"]' "podman reads the config"

podman_ save -o "$WORK/podman-docker.tar" docker.io/kiln/peer:1 2>/dev/null
podman_ save --format oci-archive -o "$WORK/podman-oci.tar" docker.io/kiln/peer:1 2>/dev/null
export KILN_ROOT=$WORK/store2
assert_eq "$(kiln load -i "$WORK/podman-docker.tar")" "Loaded image: kiln/peer:1" "load podman's docker-archive"
assert_eq "$(kiln inspect --format '{{.Id}}' kiln/peer:1)" "$id" "image ID through podman's docker-archive"
kiln load -i "$WORK/podman-oci.tar" >/dev/null
assert_eq "$(kiln inspect --format '{{.Id}}' kiln/peer:1)" "$id" "image ID through podman's oci-archive"
# The two archives hold the same image under two manifests; it is one image, listed once.
assert_eq "$(kiln images --format '{{.Repository}}:{{.Tag}} {{.ID}}')" "kiln/peer:1 ${id:7:12}" "one image, one row"
kiln export -o "$WORK/fs.tar" kiln/peer:1
cmp <(tar -xOf "$WORK/fs.tar" bin/busybox) /bin/busybox || fail "busybox changed through podman"
echo ok
