#!/usr/bin/env bash
# Docker's container commands on a kept container: diff (its changes as Docker prints them), commit
# (a new image that kiln runs and umoci and skopeo read), export (its whole filesystem), rm, and the
# errors for containers that do not exist.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need skopeo umoci jq
busybox_image

kiln run --name ctr1 busybox sh -c 'echo x > /new; echo y >> /etc/passwd; rm /bin/vi; mkdir -p /d/e'
id=$(kiln ps -a -q --no-trunc | head -1)
[[ $id =~ ^[0-9a-f]{64}$ ]] || fail "no container ID: $id"

# diff: Docker's letters and order; the mount points kiln made (/proc, /etc/hosts, ...) are not
# the container's changes.
expected=$'C /bin\nD /bin/vi\nA /d\nA /d/e\nC /etc\nC /etc/passwd\nA /new'
assert_eq "$(kiln diff ctr1)" "$expected" "kiln diff by name"
assert_eq "$(kiln diff "${id:0:12}")" "$expected" "kiln diff by short ID"
assert_eq "$(kiln diff "${id:0:5}")" "$expected" "kiln diff by ID prefix"
# An opaque directory: what it hid below shows as deleted.
kiln run --name c2 busybox sh -c 'rm -rf /var && mkdir /var && echo z > /var/motd'
assert_eq "$(kiln diff c2)" $'C /var\nD /var/empty\nA /var/motd' "diff of an opaque directory"
kiln run --name c3 busybox true
assert_eq "$(kiln diff c3)" "" "no changes, no lines"

# commit: the container's image plus one layer, the container's config under --change.
new_id=$(kiln commit -m "add new" -a "Kiln Tester <t@example.com>" --change 'CMD ["cat","/new"]' ctr1 committed:1)
[[ $new_id =~ ^sha256:[0-9a-f]{64}$ ]] || fail "commit printed [$new_id]"
assert_eq "$(kiln images -q --no-trunc committed:1)" "$new_id" "the name points at the new image"
assert_eq "$(kiln run --rm committed:1)" x "the committed image runs its new Cmd"
kiln run --rm committed:1 test -e /bin/vi && fail "/bin/vi came back in the committed image"
assert_eq "$(kiln run --rm committed:1 tail -n 1 /etc/passwd)" y "the changed file"
[[ $(kiln run --rm committed:1 ls -d /d/e) == /d/e ]] || fail "the new directory"
history=$(kiln history --no-trunc --format '{{.CreatedBy}}|{{.Comment}}' committed:1)
assert_eq "$(sed -n 1p <<<"$history")" "sh -c echo x > /new; echo y >> /etc/passwd; rm /bin/vi; mkdir -p /d/e|add new" \
  "history: the container's command and the message, newest first"
assert_eq "$(wc -l <<<"$history")" 2 "one layer more than busybox"
config=$(kiln inspect --format '{{json .Config}}' committed:1)
assert_eq "$(jq -c .Cmd <<<"$config")" '["cat","/new"]' "--change CMD"
assert_eq "$(kiln inspect --format '{{.Author}}' committed:1)" "Kiln Tester <t@example.com>" "-a"
# --change expands variables from the config as each change finds it.
expanded=$(kiln commit --change 'ENV A=one' --change 'ENV B=$A-two' --change 'WORKDIR ${HOME:-/home}/x' c3 expanded:1)
assert_eq "$(kiln inspect --format '{{json .Config.Env}}' "$expanded" | jq -c .)" '["A=one","B=one-two"]' "commit --change expands"
assert_eq "$(kiln inspect --format '{{.Config.WorkingDir}}' "$expanded")" "/home/x" "commit --change expands defaults"
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' committed:1 | jq length)" 2 "two diff IDs"
# Without --change the container's own command becomes the Cmd; without a name the image is untagged.
untagged=$(kiln commit c3)
assert_eq "$(kiln inspect --format '{{json .Config.Cmd}}' "$untagged")" '["true"]' "the container's Cmd"
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' "$untagged" | jq length)" 1 \
  "no changes: no layer (Docker's empty_layer)"
assert_contains "$(kiln images --format '{{.Repository}}:{{.Tag}} {{.ID}}')" "<none>:<none> ${untagged:7:12}" "untagged"
expect_fail 125 "CMDD" kiln commit -c 'CMDD x' ctr1 bad:1
# A running container: Docker pauses it while committing; kiln cannot, and refuses unless told.
kiln run --name busy busybox sh -c 'echo 1 > /state; sleep 4' &
runner=$!
for _ in $(seq 50); do [[ $(kiln ps -q | wc -l) -gt 0 ]] && break; sleep 0.1; done
assert_eq "$(kiln ps | awk 'NR > 1 {print $NF}')" busy "kiln ps shows it running"
expect_fail 1 "the container is running and kiln cannot pause it" kiln commit busy
sleep 0.5
live=$(kiln commit --pause=false busy)
assert_eq "$(kiln run --rm "$live" cat /state)" 1 "--pause=false commits a running container as it is"
wait "$runner"

# Peers read the committed image straight out of the store.
out=$(skopeo inspect --config oci:"$KILN_ROOT/oci:docker.io/library/committed:1")
assert_eq "$(jq -r '.history[-1].comment' <<<"$out")" "add new" "skopeo reads the history"
umoci unpack --image "$KILN_ROOT/oci:${new_id#sha256:}" "$WORK/bundle" >/dev/null 2>"$WORK/umoci.err" ||
  fail "umoci unpack: $(cat "$WORK/umoci.err")"
assert_eq "$(cat "$WORK/bundle/rootfs/new")" x "umoci unpacks the new layer"
[[ -e $WORK/bundle/rootfs/bin/vi || -L $WORK/bundle/rootfs/bin/vi ]] && fail "umoci applied no whiteout for /bin/vi"
assert_eq "$(jq -c .process.args "$WORK/bundle/config.json")" '["cat","/new"]' "umoci reads the Cmd"

# export: the container's whole filesystem, whiteouts applied.
kiln export -o "$WORK/ctr1.tar" ctr1
names=$(tar -tf "$WORK/ctr1.tar")
grep -qx new <<<"$names" || fail "export lacks /new"
grep -qx bin/busybox <<<"$names" || fail "export lacks the image's files"
grep -qx bin/vi <<<"$names" && fail "export has the deleted /bin/vi"
assert_eq "$(tar -xOf "$WORK/ctr1.tar" new)" x "exported /new"
assert_eq "$(kiln export ctr1 | tar -tf - | grep -cx d/e/)" 1 "export to a pipe"
if command -v script >/dev/null; then
  out=$(script -qec "$KILN --root $KILN_ROOT export ctr1" /dev/null 2>&1 || true)
  assert_contains "$out" "refusing to write a tar archive to a terminal" "export refuses a terminal"
fi

# rm, and every command's error for a container that does not exist. (Names here are not hex, so
# that export, which falls back to images, cannot take one for an image ID prefix.)
assert_eq "$(kiln rm ctr1)" ctr1 "rm prints the name"
[[ -d $KILN_ROOT/containers/$id ]] && fail "rm left the container's directory"
for cmd in diff export commit rm; do
  expect_fail 1 'no such container: `ctr1`' kiln $cmd ctr1
done
expect_fail 1 'no such container: `nope`' kiln diff nope
echo ok
