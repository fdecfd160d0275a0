#!/usr/bin/env bash
# kiln build on a terminal: the live view (`[+] Building …`, a line per step with its time, the
# last lines of a running step under it) redrawn in place, ending FINISHED, and the image ID on a
# line of its own after it. --progress plain on a terminal, and quiet, as asked.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need script

busybox_image busybox:latest
mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox
RUN for i in 1 2 3 4 5 6 7 8; do echo "working on part $i"; sleep 0.2; done
RUN echo done > /done.txt
DOCKERFILE
TERM=xterm script -qec "'$KILN' build -t tty:1 '$WORK/ctx'" "$WORK/typescript" >/dev/null </dev/null ||
  fail "build on a terminal: $(tail -5 "$WORK/typescript")"
shown=$(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/typescript" | tr '\r' '\n')
assert_contains "$shown" "[+] Building" "the live view's header"
assert_contains "$shown" "FINISHED" "the final picture"
assert_contains "$shown" " => [2/3] RUN for i in 1 2 3 4 5 6 7 8" "a step's line"
assert_contains "$shown" " => => # working on part 3" "a running step's last lines"
grep -q $'\x1b\[[0-9]*A' "$WORK/typescript" || fail "the view is not redrawn in place"
id_line=$(grep -aE '^sha256:[0-9a-f]{64}' <<<"$shown" | tr -d '\r' || true)
assert_eq "$id_line" "$(kiln inspect --format '{{.Id}}' tty:1)" "the image ID on a line of its own"

# Plain on a terminal: the lines, no redrawing.
TERM=xterm script -qec "'$KILN' build --progress plain --no-cache '$WORK/ctx'" "$WORK/plain" >/dev/null </dev/null
assert_contains "$(cat "$WORK/plain")" "#3 0." "plain lines"
grep -q $'\x1b\[[0-9]*A' "$WORK/plain" && fail "--progress plain redrew on a terminal"
# Quiet: only the ID.
out=$(kiln build -q "$WORK/ctx" 2>"$WORK/err")
assert_eq "$(cat "$WORK/err")" "" "quiet prints no progress"
[[ $out =~ ^sha256:[0-9a-f]{64}$ ]] || fail "quiet prints the ID: [$out]"
echo ok
