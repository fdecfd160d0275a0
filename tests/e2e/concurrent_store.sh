#!/usr/bin/env bash
# Several kiln processes on one store at once: parallel imports, loads, tags and prunes lose
# nothing and leave a consistent store.
source "$(dirname "$0")/lib.sh"

make_busybox_tar "$WORK/bb.tar"
for i in 1 2 3 4; do
  mkdir -p "$WORK/extra$i" && head -c $((i * 300000)) /dev/urandom >"$WORK/extra$i/data"
  tar -C "$WORK/extra$i" -cf "$WORK/in$i.tar" data
done
kiln import "$WORK/bb.tar" seed:1 >/dev/null
kiln save -o "$WORK/seed.tar" seed:1

pids=()
for i in 1 2 3 4; do
  ( for r in 1 2 3; do kiln import "$WORK/in$i.tar" "img$i:$r" >/dev/null; kiln tag "img$i:$r" "alias$i:$r"; done ) &
  pids+=($!)
done
( for r in 1 2 3 4 5; do kiln prune >/dev/null; done ) & pids+=($!)
( for r in 1 2 3; do KILN_ROOT=$KILN_ROOT kiln load -q -i "$WORK/seed.tar"; done ) & pids+=($!)
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent kiln process failed"; done

names=$(kiln images --format '{{.Repository}}:{{.Tag}}' | sort)
for i in 1 2 3 4; do
  for r in 1 2 3; do
    grep -qx "img$i:$r" <<<"$names" || fail "img$i:$r lost"
    grep -qx "alias$i:$r" <<<"$names" || fail "alias$i:$r lost"
  done
done
kiln prune >/dev/null
for i in 1 2 3 4; do
  kiln export -o "$WORK/out$i.tar" "alias$i:3"
  cmp <(tar -xOf "$WORK/out$i.tar" data) "$WORK/extra$i/data" || fail "content of img$i damaged"
done
echo ok
