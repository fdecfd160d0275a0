#!/usr/bin/env bash
# Where overlayfs cannot be mounted — here the store itself lives on an overlay mount, as when
# kiln runs inside a container whose storage is overlay — kiln run copies the image's layers into
# the container's root instead, and the container behaves the same.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
make_busybox_tar "$WORK/busybox.tar"
mkdir -p "$WORK/ovl"/{lower,upper,work,merged}
mount -t overlay overlay -o "lowerdir=$WORK/ovl/lower,upperdir=$WORK/ovl/upper,workdir=$WORK/ovl/work" "$WORK/ovl/merged" ||
  skip "cannot mount an overlay to put the store on"
at_exit 'umount -l "$WORK/ovl/merged" 2>/dev/null'
export KILN_ROOT=$WORK/ovl/merged/store
kiln import "$WORK/busybox.tar" busybox >/dev/null
out=$(kiln run --rm busybox sh -c 'echo $$; cat /proc/self/mounts | head -1; touch /new && echo wrote; ls /bin/sh')
assert_eq "$(sed -n 1p <<<"$out")" 1 "PID 1"
assert_contains "$(sed -n 2p <<<"$out")" " / " "a root is mounted"
assert_not_contains "$(sed -n 2p <<<"$out")" "snapshots" "the root is the copy, not an overlay of the snapshots"
assert_eq "$(sed -n 3,4p <<<"$out" | tr '\n' ' ')" "wrote /bin/sh " "writable copy of the image"
# Each container gets a fresh copy: the file written above is not there.
assert_eq "$(kiln run --rm busybox sh -c 'ls /new 2>/dev/null || echo fresh')" fresh "containers do not share the copy"
assert_eq "$(ls "$KILN_ROOT/containers")" "" "--rm removed the copy"
note "ok"
