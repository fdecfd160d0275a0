#!/usr/bin/env bash
# Isolation where namespaces are not allowed. Rootless: an unprivileged user the test makes (with a
# subordinate ID range) builds in a user namespace, and the layers hold the IDs the build saw (a
# file chowned to 1000 is 1000 in the layer, not a host ID). Chroot: a build inside a kiln
# container, whose seccomp profile and capabilities forbid new namespaces and mounts, picks chroot
# by itself (--isolation auto says so) and still runs RUN steps, COPY --chown and removals.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need useradd userdel newuidmap newgidmap

busybox_image busybox:latest
make_busybox_tar "$WORK/busybox.tar"
write_context() {
  mkdir -p "$1"
  echo "hello" >"$1/hello.txt"
  cat >"$1/Dockerfile" <<'DOCKERFILE'
FROM busybox
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group
COPY --chown=app:app hello.txt /home/app/hello.txt
RUN mkdir -p /data && touch /data/by-root && chown 1000:1000 /data && rm /bin/vi
USER app
RUN id -u > /data/id.txt && cat /home/app/hello.txt
DOCKERFILE
}
# The numeric owners of a saved image's layers, "path uid/gid" per entry.
layer_owners() {
  rm -rf "$WORK/saved" && mkdir "$WORK/saved" && tar -C "$WORK/saved" -xf "$1"
  for layer in $(jq -r '.[0].Layers[1:][]' "$WORK/saved/manifest.json"); do
    tar -tvzf "$WORK/saved/$layer" | awk '{print $6, $2}'
  done | sort
}
expected_owners="bin/ 0/0
bin/.wh.vi 0/0
data/ 1000/1000
data/ 1000/1000
data/by-root 0/0
data/id.txt 1000/1000
etc/ 0/0
etc/group 0/0
etc/passwd 0/0
home/ 1000/1000
home/app/ 1000/1000
home/app/hello.txt 1000/1000"

# --- rootless, as a user made for the test
user=kilnbuild$$
useradd -M -d "$WORK" -s /bin/sh "$user" || skip "cannot create a user"
trap 'userdel "$user" 2>/dev/null; sed -i "/^$user:/d" /etc/subuid /etc/subgid; cleanup' EXIT
echo "$user:300000:65536" >>/etc/subuid
echo "$user:300000:65536" >>/etc/subgid
mkdir -p "$WORK/rootless"
write_context "$WORK/rootless/ctx"
cp "$WORK/busybox.tar" "$WORK/rootless/"
chown -R "$user" "$WORK/rootless"
chmod 755 "$WORK"
as_user() { su "$user" -s /bin/sh -c "cd $WORK/rootless && KILN_ROOT=$WORK/rootless/store $*"; }
as_user "$KILN import $WORK/rootless/busybox.tar busybox:latest" >/dev/null || fail "rootless import"
as_user "$KILN build --progress plain -t rootless:1 ctx" >"$WORK/out" 2>"$WORK/progress" ||
  fail "rootless build: $(cat "$WORK/progress")"
assert_contains "$(cat "$WORK/progress")" "isolation: rootless" "auto picks rootless for a user"
assert_contains "$(cat "$WORK/progress")" "#6 0.0" "the last RUN ran"
as_user "$KILN save -o $WORK/rootless/image.tar rootless:1" || fail "rootless save"
assert_eq "$(layer_owners "$WORK/rootless/image.tar")" "$expected_owners" "rootless layers hold the build's IDs"
assert_eq "$(as_user "$KILN run --rm rootless:1 cat /data/id.txt")" "1000" "USER app in the rootless build"
expect_fail 125 "--isolation namespace needs root" su "$user" -s /bin/sh -c "KILN_ROOT=$WORK/rootless/store $KILN build --isolation namespace $WORK/rootless/ctx"

# --- chroot, inside a kiln container that may not make namespaces
mkdir -p "$WORK/inner"
write_context "$WORK/inner/ctx"
cp "$WORK/busybox.tar" "$WORK/inner/"
kiln_dir=$(dirname "$KILN")
mounts=(-v "$kiln_dir:/kiln:ro" -v "$WORK/inner:/work")
for lib in /lib/x86_64-linux-gnu /lib64 /usr/lib/x86_64-linux-gnu; do [[ -d $lib ]] && mounts+=(-v "$lib:$lib:ro"); done
inner() { kiln run --rm "${mounts[@]}" busybox /kiln/kiln --root /work/store "$@"; }
inner import /work/busybox.tar busybox:latest >/dev/null || fail "import inside the container"
inner build --progress plain -t inner:1 /work/ctx >"$WORK/out" 2>"$WORK/progress" ||
  fail "build inside the container: $(cat "$WORK/progress")"
assert_contains "$(cat "$WORK/progress")" "isolation: chroot (new namespaces are refused here: unshare(mount, pid): Operation not permitted)" \
  "auto falls back to chroot and says why"
inner save -o /work/image.tar inner:1 || fail "save inside the container"
assert_eq "$(layer_owners "$WORK/inner/image.tar")" "$expected_owners" "chroot layers: the same changes"
KILN_ROOT=$WORK/inner/store "$KILN" run --rm inner:1 cat /data/id.txt >"$WORK/id" 2>&1 || true
assert_eq "$(cat "$WORK/id")" "1000" "the image built under chroot runs (outside, with namespaces)"
echo ok
