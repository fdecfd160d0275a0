#!/usr/bin/env bash
# A build that fails says where and why, and leaves nothing: a failing RUN (its exit code, its last
# output lines, the Dockerfile's lines around it), a missing COPY source, a Dockerfile Docker
# refuses, a base image the store lacks; no tag is written, no image appears, nothing stays mounted
# or staged. Ctrl-C stops a running build with exit 130 the same way.
source "$(dirname "$0")/lib.sh"
need_root_sandbox

busybox_image busybox:latest
kiln build --help >/dev/null
ctx=$WORK/ctx
mkdir -p "$ctx"
echo present >"$ctx/present.txt"
images_before=$(kiln images -q --no-trunc | sort)

cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox
COPY present.txt /
RUN echo "line one" && echo "line two" >&2 && exit 3
RUN echo never
DOCKERFILE
expect_fail 1 'process "/bin/sh -c echo \"line one\" && echo \"line two\" >&2 && exit 3" did not complete successfully: exit code: 3' \
  kiln build --progress plain -t failed:1 "$ctx"
err=$(cat "$WORK/err")
assert_contains "$err" " > [3/4] RUN echo \"line one\" && echo \"line two\" >&2 && exit 3:" "the failed step named"
assert_contains "$err" "line two" "its last output"
assert_contains "$err" "Dockerfile:3" "the Dockerfile line"
assert_contains "$err" " 3 | >>> RUN echo" "the line marked"
assert_not_contains "$err" "[4/4] RUN echo never" "nothing after the failure ran"
assert_eq "$(kiln images -q --no-trunc | sort)" "$images_before" "no image and no tag"

printf 'FROM busybox\nCOPY missing.txt /\n' >"$ctx/Dockerfile"
expect_fail 1 'Dockerfile:2: COPY failed: "/missing.txt": not found' kiln build -t failed:2 "$ctx"

printf 'FROM busybox\nRUNN true\n' >"$ctx/Dockerfile"
expect_fail 1 'Dockerfile:2:1: unknown instruction "RUNN" (did you mean "RUN"?)' kiln build "$ctx"

printf 'FROM nosuch/image:1\nRUN true\n' >"$ctx/Dockerfile"
# Not in the store: pulled, from Docker Hub, which this machine cannot reach.
expect_fail 1 "Dockerfile:1: FROM nosuch/image:1: reach registry docker.io" kiln --retry 0 build "$ctx"

expect_fail 125 'unable to prepare context: path' kiln build "$WORK/no-such-dir"
assert_eq "$(kiln images -q --no-trunc | sort)" "$images_before" "still no image"

# Ctrl-C (SIGINT) while a step runs: exit 130, the step's processes gone, nothing left behind.
printf 'FROM busybox\nRUN echo started && sleep 60\n' >"$ctx/Dockerfile"
"$KILN" build --progress plain -t failed:3 "$ctx" >"$WORK/out" 2>"$WORK/err" &
pid=$!
for _ in $(seq 100); do grep -q started "$WORK/err" && break; sleep 0.1; done
grep -q started "$WORK/err" || fail "the step never started: $(cat "$WORK/err")"
kill -INT "$pid"
rc=0
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "kiln did not stop within 10 s of SIGINT"
wait "$pid" || rc=$?
assert_eq "$rc" "130" "exit code after Ctrl-C"
pgrep -f "sleep 60" >/dev/null && fail "the step's process survived"
assert_eq "$(ls "$KILN_ROOT/tmp")" "" "nothing staged is left"
grep -q "$KILN_ROOT" /proc/mounts && fail "a mount of the build is left"
assert_eq "$(kiln images -q --no-trunc | sort)" "$images_before" "no image after Ctrl-C"
echo ok
