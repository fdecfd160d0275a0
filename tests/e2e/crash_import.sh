#!/usr/bin/env bash
# kill -9 in the middle of an import leaves a store that `kiln images` reads, where the import can
# be redone, and whose leftovers `kiln prune` removes.
source "$(dirname "$0")/lib.sh"
need python3

make_busybox_tar "$WORK/bb.tar"
kiln import "$WORK/bb.tar" before:1 >/dev/null
# A 64 MiB layer fed slowly through a fifo, so the import is surely mid-stream when killed.
head -c $((64 << 20)) /dev/urandom >"$WORK/big"
tar -C "$WORK" -cf "$WORK/big.tar" big
for round in 1 2 3; do
  # A fifo per round: a feeder of an earlier round that outlives its kill (its `head` child) must
  # not hand this round's import the middle of a tar.
  fifo=$WORK/fifo$round
  mkfifo "$fifo"
  # The binary itself, not the kiln() function, so that $! is kiln's own PID.
  "$KILN" import "$fifo" crashed:1 >/dev/null 2>"$WORK/import-err" &
  pid=$!
  { head -c $((20 << 20)) "$WORK/big.tar"; sleep 5; } >"$fifo" &
  feeder=$!
  sleep 1.$round
  kill -0 "$pid" 2>/dev/null || fail "the import ended before it was killed (round $round): $(cat "$WORK/import-err")"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pkill -P "$feeder" 2>/dev/null || true
  kill "$feeder" 2>/dev/null || true
  wait "$feeder" 2>/dev/null || true
  out=$(kiln images) || fail "kiln images failed after kill -9 (round $round)"
  assert_contains "$out" "before" "the earlier image survives"
  assert_not_contains "$out" "crashed" "a killed import left an image"
done
kiln import "$WORK/big.tar" crashed:1 >/dev/null
assert_contains "$(kiln images)" "crashed" "the import can be redone"
kiln prune >/dev/null
kiln export -o "$WORK/fs.tar" crashed:1
cmp <(tar -xOf "$WORK/fs.tar" big) "$WORK/big" || fail "the redone import's content differs"
echo ok
