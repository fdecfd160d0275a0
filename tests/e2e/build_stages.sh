#!/usr/bin/env bash
# Multi-stage builds: stages the target needs run in dependency order, independent ones at the same
# time (two `sleep 2` stages overlap), stages the target does not need never run,
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
RUN cut -d" " -f1 /proc/uptime > /left.start && sleep 2 && echo "left saw $FROM_BASE" > /left.txt && \
    cut -d" " -f1 /proc/uptime > /left.end

FROM busybox AS right
RUN cut -d" " -f1 /proc/uptime > /right.start && sleep 2 && echo right > /right.txt && \
    cut -d" " -f1 /proc/uptime > /right.end

FROM busybox AS never
RUN echo "this stage must not run" && exit 1

FROM base AS final
COPY --from=left /left.txt /left.start /left.end /
COPY --from=2 /right.txt /right.start /right.end /
RUN mv /left.txt /from-left.txt && mv /right.txt /from-right.txt
RUN cat /base.txt /from-left.txt /from-right.txt > /all.txt
DOCKERFILE

kiln build --progress plain -t stages:final "$ctx" >"$WORK/out" 2>"$WORK/progress" || fail "build failed: $(cat "$WORK/progress")"
# The stages ran at the same time when each started before the other ended (times from the
# host's /proc/uptime, as the steps saw it: wall-clock limits fail on a loaded machine).
times() { kiln run --rm "$1" cat /left.start /left.end /right.start /right.end | tr '\n' ' '; }
overlapped() { read -r ls le rs re <<<"$(times "$1")"; (($(echo "$rs < $le && $ls < $re" | bc))); }
overlapped stages:final || fail "the two sleep stages did not overlap: $(times stages:final)"
assert_not_contains "$(cat "$WORK/progress")" "must not run" "a stage the target does not need"
assert_contains "$(cat "$WORK/progress")" "[left 1/1] RUN cut -d" " -f1 /proc/uptime > /left.start" "stage names in the step names (a stage on a stage does not count its FROM)"
assert_eq "$(kiln run --rm stages:final cat /all.txt)" "$(printf 'base\nleft saw yes\nright')" "COPY --from by name and index, ENV from the base stage"

# --target builds only what that stage needs.
kiln build --progress plain --target right -t stages:right "$ctx" >/dev/null 2>"$WORK/progress" || fail "--target failed"
assert_not_contains "$(cat "$WORK/progress")" "[left" "--target right needs no left"
assert_eq "$(kiln run --rm stages:right cat /right.txt)" "right" "--target"
expect_fail 1 'target stage "rigth" could not be found (did you mean "right"?)' kiln build --target rigth "$ctx"

# --jobs 1: one stage at a time (and no cache: they must run again).
kiln build --progress plain --no-cache --jobs 1 -t stages:serial "$ctx" >/dev/null 2>"$WORK/progress" || fail "--jobs 1 failed"
overlapped stages:serial && fail "--jobs 1 still overlapped the stages: $(times stages:serial)"
echo ok
