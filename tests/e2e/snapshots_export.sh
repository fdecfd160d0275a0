#!/usr/bin/env bash
# Layer snapshots: `kiln export` unpacks each layer once per chain ID, applies the upper layers'
# whiteouts (`.wh.NAME`, `.wh..wh..opq`) and files replaced by directories when it flattens them,
# and `kiln prune` removes the snapshots once no image needs them.
source "$(dirname "$0")/lib.sh"
need python3 jq tar sha256sum

make_busybox_tar "$WORK/base.tar"
mkdir -p "$WORK/base" && tar -C "$WORK/base" -xf "$WORK/base.tar"
# Give the base layer what the upper layer deletes and replaces.
python3 - "$WORK" <<'PY'
import io, os, sys, tarfile
work = sys.argv[1]
def add(t, path, kind="file", data=b"", link=""):
    ti = tarfile.TarInfo(path); ti.mtime = 0
    if kind == "dir": ti.type = tarfile.DIRTYPE; ti.mode = 0o755
    elif kind == "symlink": ti.type = tarfile.SYMTYPE; ti.linkname = link
    else: ti.size = len(data)
    t.addfile(ti, io.BytesIO(data) if data else None)
# Lower layer: the busybox tree plus a few things to shadow.
with tarfile.open(os.path.join(work, "base.tar"), "a", format=tarfile.PAX_FORMAT) as t:
    add(t, "opaque", "dir"); add(t, "opaque/old", data=b"old\n")
    add(t, "gone", "dir"); add(t, "gone/deep", data=b"deep\n")
    add(t, "becomes-dir", data=b"file\n")
    add(t, "becomes-file", "dir"); add(t, "becomes-file/child", data=b"child\n")
# Upper layer: whiteouts, an opaque directory, a file replaced by a directory and the reverse.
with tarfile.open(os.path.join(work, "upper.tar"), "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "bin", "dir"); add(t, "bin/.wh.ls")
    add(t, ".wh.gone")
    add(t, "opaque", "dir"); add(t, "opaque/.wh..wh..opq"); add(t, "opaque/new", data=b"new\n")
    add(t, "becomes-dir", "dir"); add(t, "becomes-dir/inside", data=b"inside\n")
    add(t, "becomes-file", data=b"now a file\n")
PY

# A two-layer docker-archive, as `docker save` writes one.
d=$WORK/archive && mkdir -p "$d"
base_id=$(sha256sum "$WORK/base.tar" | cut -d' ' -f1)
upper_id=$(sha256sum "$WORK/upper.tar" | cut -d' ' -f1)
cp "$WORK/base.tar" "$d/$base_id.tar" && cp "$WORK/upper.tar" "$d/$upper_id.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' \
  "$base_id" "$upper_id" >"$d/config.json"
printf '[{"Config":"config.json","RepoTags":["layered:1"],"Layers":["%s.tar","%s.tar"]}]' "$base_id" "$upper_id" >"$d/manifest.json"
tar -C "$d" -cf "$WORK/layered.tar" manifest.json config.json "$base_id.tar" "$upper_id.tar"
kiln load -i "$WORK/layered.tar" >/dev/null

assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" 0 "snapshots are made on demand"
kiln export -o "$WORK/flat.tar" layered:1
assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 -not -name '.*' | wc -l)" 2 "one snapshot per chain ID"
listing=$(tar -tf "$WORK/flat.tar" | sed 's|^\./||; s|/$||' | sort)
assert_contains "$listing" "bin/busybox" "the base layer is exported"
assert_contains "$listing" "bin/cat" "untouched entries stay"
assert_not_contains "$(grep -x 'bin/ls' <<<"$listing" || true)" "bin/ls" "a whiteout removes bin/ls"
assert_not_contains "$listing" ".wh." "whiteouts themselves are not exported"
assert_eq "$(grep -c '^gone' <<<"$listing" || true)" 0 "a whited-out directory goes with its contents"
assert_eq "$(grep '^opaque' <<<"$listing" | tr '\n' ' ')" "opaque opaque/new " "an opaque directory hides the lower contents"
mkdir "$WORK/flat" && tar -C "$WORK/flat" -xf "$WORK/flat.tar"
[[ -d $WORK/flat/becomes-dir && $(cat "$WORK/flat/becomes-dir/inside") == inside ]] || fail "a file replaced by a directory"
[[ -f $WORK/flat/becomes-file && $(cat "$WORK/flat/becomes-file") == "now a file" ]] || fail "a directory replaced by a file"
cmp "$WORK/flat/bin/busybox" /bin/busybox || fail "busybox changed on the way"

# The export is deterministic: a second one (snapshots now exist) writes the same bytes.
kiln export -o "$WORK/flat2.tar" layered:1
cmp "$WORK/flat.tar" "$WORK/flat2.tar" || fail "two exports of one image differ"

# Snapshots stay while an image needs them and go with the last image that does.
kiln prune >/dev/null
assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" 2 "prune keeps snapshots in use"
# rmi frees the space at once, as docker rmi does.
kiln rmi layered:1 >/dev/null
assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" 0 "rmi removes the image's snapshots"
assert_eq "$(find "$KILN_ROOT/oci/blobs/sha256" -type f | wc -l)" 0 "rmi removes the image's blobs"
# ... unless another kiln process has the store open; then prune does it later.
kiln load -i "$WORK/layered.tar" >/dev/null
kiln export -o /dev/null layered:1
mkfifo "$WORK/slow"
"$KILN" import "$WORK/slow" holder:1 >/dev/null 2>&1 &
holder=$!
exec 7>"$WORK/slow"   # the import is now inside the store, waiting for input
sleep 0.5
kiln rmi layered:1 >/dev/null
assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" 2 "rmi does not sweep under a running process"
exec 7>&-
wait "$holder" || true
kiln prune >/dev/null
assert_eq "$(find "$KILN_ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" 0 "prune removes unused snapshots"
assert_eq "$(find "$KILN_ROOT/oci/blobs/sha256" -type f | wc -l)" 0 "prune removes unreferenced blobs"

# UTF-8 names come out as plain PAX UTF-8 names, which GNU tar reads without a warning.
mkdir -p "$WORK/utf8/日本" && echo hi >"$WORK/utf8/héllo wörld.txt" && echo x >"$WORK/utf8/日本/ファイル"
tar -C "$WORK/utf8" --format=pax -cf "$WORK/utf8.tar" .
kiln import "$WORK/utf8.tar" utf8:1 >/dev/null
kiln export -o "$WORK/utf8-out.tar" utf8:1
names=$(tar -tf "$WORK/utf8-out.tar" 2>"$WORK/tar.err")
assert_eq "$(cat "$WORK/tar.err")" "" "GNU tar reads kiln's names without complaint"
assert_contains "$names" "héllo wörld.txt" "a Latin-1 range name"
assert_contains "$names" "日本/ファイル" "a CJK name"
echo ok
