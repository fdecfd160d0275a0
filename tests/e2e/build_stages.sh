#!/usr/bin/env bash
# Multi-stage builds: stages the target needs run in dependency order, independent ones at the same
# time (two `sleep 2` stages take about 2 s, not 4), stages the target does not need never run,
# COPY --from by name and by index, FROM an earlier stage, --target.
source "$(dirname "$0")/lib.sh"
need_root_sandbox

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox AS base
ENV FROM_BASE=yes
RUN echo base > /base.txt

FROM base AS left
RUN sleep 2 && echo "left saw $FROM_BASE" > /left.txt

FROM busybox AS right
RUN sleep 2 && echo right > /right.txt

FROM busybox AS never
RUN echo "this stage must not run" && exit 1

FROM base AS final
COPY --from=left /left.txt /from-left.txt
COPY --from=2 /right.txt /from-right.txt
RUN cat /base.txt /from-left.txt /from-right.txt > /all.txt
DOCKERFILE

start=$(date +%s.%N)
kiln build --progress plain -t stages:final "$ctx" >"$WORK/out" 2>"$WORK/progress" || fail "build failed: $(cat "$WORK/progress")"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
note "two independent 2 s stages built in ${elapsed}s"
(( $(echo "$elapsed < 3.8" | bc) )) || fail "the two sleep stages did not overlap: ${elapsed}s"
assert_not_contains "$(cat "$WORK/progress")" "must not run" "a stage the target does not need"
assert_contains "$(cat "$WORK/progress")" "[left 1/1] RUN sleep 2" "stage names in the step names (a stage on a stage does not count its FROM)"
assert_eq "$(kiln run --rm stages:final cat /all.txt)" "$(printf 'base\nleft saw yes\nright')" "COPY --from by name and index, ENV from the base stage"

# --target builds only what that stage needs.
kiln build --progress plain --target right -t stages:right "$ctx" >/dev/null 2>"$WORK/progress" || fail "--target failed"
assert_not_contains "$(cat "$WORK/progress")" "[left" "--target right needs no left"
assert_eq "$(kiln run --rm stages:right cat /right.txt)" "right" "--target"
expect_fail 1 'target stage "rigth" could not be found (did you mean "right"?)' kiln build --target rigth "$ctx"

# --jobs 1: one stage at a time (and no cache: they must run again).
start=$(date +%s.%N)
kiln build --progress plain --no-cache --jobs 1 "$ctx" >/dev/null 2>"$WORK/progress" || fail "--jobs 1 failed"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
note "--jobs 1 took ${elapsed}s"
(( $(echo "$elapsed >= 4" | bc) )) || fail "--jobs 1 still overlapped the stages: ${elapsed}s"
echo ok
