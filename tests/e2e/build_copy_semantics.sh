#!/usr/bin/env bash
# COPY and ADD where current BuildKit is the reference but the BuildKit that Debian's Docker embeds
# (0.8) differs or cannot read the Dockerfile (--chmod's set-id bits and the directories it makes,
# symbolic --chmod, zstd and --chown for ADD's archives, --parents, --exclude, --link, heredocs):
# testdata/builder/copy/current.Dockerfile says, instruction by instruction, what BuildKit's
# current source does and why; current.expected is each layer it adds, as image_tree.py lists it.
source "$(dirname "$0")/lib.sh"
source "$KILN_SOURCE_DIR/testdata/builder/copy/make_context.sh"
[[ $(id -u) -eq 0 ]] || skip "needs root for the owners the Dockerfile sets"
need python3 tar gzip bzip2 xz zstd

data=$KILN_SOURCE_DIR/testdata/builder/copy
copy_context "$WORK/ctx"
copy_base_tar "$WORK/base2.tar" extra
kiln import "$WORK/base2.tar" copy-base:2 >/dev/null
kiln build --progress plain -t copy-current -f "$data/current.Dockerfile" "$WORK/ctx" >"$WORK/build.log" 2>&1 ||
  fail "kiln did not build current.Dockerfile: $(tail -5 "$WORK/build.log")"
kiln save -o "$WORK/current.tar" copy-current
image_tree "$WORK/current.tar" --layers >"$WORK/current.txt"
diff -u "$data/current.expected" "$WORK/current.txt" >"$WORK/current.diff" ||
  fail "the layers differ from current.expected (- expected, + kiln):
$(grep '^[-+]L' "$WORK/current.diff" | head -40)"

# A file keeps its mtime; a heredoc's file is made for the build; a directory the copy makes is
# made now (or at SOURCE_DATE_EPOCH).
image_tree "$WORK/current.tar" --layers --mtime >"$WORK/mtimes.txt"
assert_contains "$(grep '^L6 /s2/a.txt ' "$WORK/mtimes.txt")" "@$(date -d '2021-03-04 05:06:07' +%s)" "a.txt's mtime"

# The same build again is all cache hits, and the image is the same.
first=$(kiln inspect --format '{{.Id}}' copy-current)
kiln build --progress plain -t copy-current -f "$data/current.Dockerfile" "$WORK/ctx" >"$WORK/again.log" 2>&1 ||
  fail "the second build failed: $(tail -5 "$WORK/again.log")"
assert_eq "$(kiln inspect --format '{{.Id}}' copy-current)" "$first" "image ID of a rebuild from the cache"
