#!/usr/bin/env bash
# Containers kept after they exit (no --rm): listed by ps -a with Docker's short IDs and names,
# names unique, removed by rm; the image they run from cannot be removed under them.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
busybox_image

rc=0
kiln run --name first busybox sh -c 'exit 4' || rc=$?
assert_eq "$rc" 4 "exit code of a kept container"
kiln run busybox true
listing=$(kiln ps -a)
assert_contains "$(head -1 <<<"$listing")" "CONTAINER ID" "ps header"
assert_contains "$listing" "Exited (4)" "status with exit code"
assert_contains "$listing" " first" "the given name"
[[ $(kiln ps -aq | wc -l) -eq 2 ]] || fail "two containers expected: $(kiln ps -aq)"
kiln ps -aq | grep -Eqx '[0-9a-f]{12}' || fail "short IDs are 12 hex digits"
[[ $(kiln ps -q | wc -l) -eq 0 ]] || fail "ps without -a lists only running containers"
generated=$(kiln ps -a | awk 'NR > 1 && $NF != "first" {print $NF}')
[[ $generated =~ ^[a-z]+_[a-z]+[0-9]?$ ]] || fail "generated name looks like Docker's: $generated"
id=$(kiln ps -aq --no-trunc | head -1)
[[ ${#id} -eq 64 ]] || fail "--no-trunc shows the 64-digit ID"

expect_fail 125 'the container name "/first" is already in use by container' kiln run --name first busybox true
expect_fail 125 "invalid container name" kiln run --name '-bad' busybox true

# The image stays while a container uses it.
expect_fail 1 'conflict: unable to remove repository reference "busybox" (must force) - container' kiln rmi busybox
image_id=$(kiln images -q | head -1)
expect_fail 1 "image is being used by stopped container" kiln rmi "$image_id"
kiln rmi -f busybox >/dev/null
assert_eq "$(kiln images -q)" "$image_id" "forced: untagged, kept"
kiln prune >/dev/null
assert_eq "$(kiln run --rm "$image_id" echo runs)" runs "a kept container's image survives prune"

# A running container: listed by ps, refused by rm, killed by rm -f.
"$KILN" run --name sleeper "$image_id" sleep 60 &
runner=$!
for _ in $(seq 50); do kiln ps | grep -q sleeper && break; sleep 0.1; done
assert_contains "$(kiln ps)" "sleeper" "ps lists the running container"
expect_fail 125 "container is running" kiln rm sleeper
kiln rm -f sleeper >/dev/null
rc=0; wait $runner || rc=$?
assert_eq "$rc" 137 "kiln run reports the kill"
# The container lives as long as its kiln: killing kiln kills it, and ps calls it dead.
"$KILN" run --name orphan "$image_id" sleep 60 &
runner=$!
for _ in $(seq 50); do kiln ps | grep -q orphan && break; sleep 0.1; done
kill -9 $runner; wait $runner 2>/dev/null || true
for _ in $(seq 50); do kiln ps -a | grep orphan | grep -q Dead && break; sleep 0.1; done
assert_contains "$(kiln ps -a | grep orphan)" "Dead" "a container whose kiln died is dead"
pgrep -f "sleep 60" >/dev/null && fail "the container outlived its kiln"
kiln rm orphan >/dev/null

# rm by name and by ID prefix; unknown names are errors.
kiln rm first >/dev/null
kiln rm "${id:0:8}" >/dev/null
assert_eq "$(kiln ps -aq)" "" "all removed"
assert_eq "$(ls "$KILN_ROOT/containers")" "" "no container directory left"
expect_fail 1 "no such container: \`first\`" kiln rm first
note "ok"
