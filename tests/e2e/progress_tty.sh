#!/usr/bin/env bash
# Long operations show progress on a terminal (stderr) and stay quiet otherwise; the result is
# printed on its own line once the progress line is cleared.
source "$(dirname "$0")/lib.sh"
need script tar

head -c $((32 << 20)) /dev/urandom >"$WORK/blob"
tar -C "$WORK" -cf "$WORK/slow.tar" blob
mkfifo "$WORK/fifo"
# Fed in two halves with a pause, so the import surely runs longer than the progress interval.
feed() { { head -c $((16 << 20)) "$WORK/slow.tar"; sleep 1; tail -c +$(((16 << 20) + 1)) "$WORK/slow.tar"; } >"$WORK/fifo"; }

feed &
script -qec "'$KILN' import '$WORK/fifo' tty:1" "$WORK/typescript" >/dev/null </dev/null
wait
shown=$(tr '\r' '\n' <"$WORK/typescript" | sed 's/\x1b\[K//g')
assert_contains "$shown" "Importing " "progress on a terminal"
id_line=$(grep -E '^sha256:[0-9a-f]{64}$' <<<"$shown" || true)
[[ -n $id_line ]] || fail "the image ID is not on a line of its own: $(cat -A "$WORK/typescript" | tail -3)"
assert_eq "$id_line" "$(kiln inspect --format '{{.Id}}' tty:1)" "the printed ID"

feed &
kiln import "$WORK/fifo" quiet:1 >"$WORK/out" 2>"$WORK/err"
wait
assert_eq "$(cat "$WORK/err")" "" "no progress when stderr is not a terminal"

# Archives never go to a terminal, and load does not wait on one for input.
for cmd in "save tty:1" "export tty:1" "load"; do
  rc=0
  script -qec "'$KILN' $cmd" "$WORK/ts-refuse" >/dev/null </dev/null || rc=$?
  assert_eq "$rc" 125 "kiln $cmd on a terminal exits 125"
  assert_contains "$(cat "$WORK/ts-refuse")" "kiln: error:" "kiln $cmd says why"
  assert_contains "$(cat "$WORK/ts-refuse")" "terminal" "kiln $cmd names the terminal"
done
echo ok
