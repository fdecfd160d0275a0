#!/usr/bin/env bash
# A corpus of hostile archives, made here: each is refused by import and by load with a clear error
# naming the problem, and leaves the store exactly as it was.
source "$(dirname "$0")/lib.sh"
need python3 zstd gzip jq

make_busybox_tar "$WORK/bb.tar"
kiln import "$WORK/bb.tar" good:1 >/dev/null
kiln save -o "$WORK/good.tar" good:1
before=$(store_state)

corpus=$WORK/corpus
mkdir -p "$corpus"
python3 - "$corpus" <<'PY'
import io, os, sys, tarfile
out = sys.argv[1]

def make(name, entries):
    with tarfile.open(os.path.join(out, name), "w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            kind, path = e[0], e[1]
            ti = tarfile.TarInfo(path)
            ti.mtime = 0
            data = b""
            if kind == "file":
                data = e[2] if len(e) > 2 else b"x"
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE; ti.linkname = e[2]
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE; ti.linkname = e[2]
            t.addfile(ti, io.BytesIO(data) if data else None)

make("traversal.tar", [("dir", "etc"), ("file", "../evil")])
make("traversal-nested.tar", [("dir", "a"), ("file", "a/../../evil")])
make("symlink-escape.tar", [("symlink", "up", "../../../../../../.."), ("file", "up/tmp/kiln-escape")])
make("hardlink-escape.tar", [("file", "ok"), ("hardlink", "passwd", "../../../../etc/passwd")])
make("hardlink-dangling.tar", [("hardlink", "ghost", "not/in/archive")])
make("whiteout-escape.tar", [("file", "ok"), ("file", "../.wh.victim", b"")])
PY

# A truncated stream: a valid tar.gz cut in half, and a plain tar cut mid-file.
( set +o pipefail; gzip -c "$WORK/bb.tar" | head -c 300000 ) >"$corpus/truncated.tar.gz"
head -c $(( $(stat -c %s "$WORK/bb.tar") / 2 )) "$WORK/bb.tar" >"$corpus/truncated.tar"
# A decompression bomb: 2 GiB of zeros in one tar entry, as a few kB of zstd.
python3 -c '
import sys, tarfile
ti = tarfile.TarInfo("zeros"); ti.size = 2 << 30; ti.mtime = 0
sys.stdout.buffer.write(ti.tobuf(format=tarfile.USTAR_FORMAT))' >"$WORK/bomb-header"
{ cat "$WORK/bomb-header"; head -c $((2 << 30)) /dev/zero; head -c 10240 /dev/zero; } | zstd -q -3 >"$corpus/bomb.tar.zst"
[[ $(stat -c %s "$corpus/bomb.tar.zst") -lt 1000000 ]] || fail "the bomb is not small"

declare -A expect=(
  [traversal.tar]="\`../evil\`"
  [traversal-nested.tar]="\`a/../../evil\`"
  [symlink-escape.tar]="layer entry \`up\`: symlink target"
  [hardlink-escape.tar]="\`passwd\`"
  [hardlink-dangling.tar]="\`ghost\`"
  [whiteout-escape.tar]=".wh.victim"
  [truncated.tar.gz]="unexpected end"
  [truncated.tar]="runcated"
  [bomb.tar.zst]="decompression bomb"
)
for f in "${!expect[@]}"; do
  note "import $f"
  expect_fail 1 "${expect[$f]}" kiln import "$corpus/$f" hostile:1
  assert_contains "$(cat "$WORK/err")" "import \`$corpus/$f\`" "the error names the input"
  assert_eq "$(store_state)" "$before" "store changed by refused import of $f"
done
[[ ! -e /tmp/kiln-escape ]] || fail "an archive wrote outside its root"

# The same layers inside docker-archives are refused by load, naming the layer.
for f in traversal.tar symlink-escape.tar hardlink-escape.tar; do
  d=$WORK/arch-$f
  mkdir -p "$d"
  cp "$corpus/$f" "$d/layer.tar"
  diff_id=sha256:$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$diff_id" >"$d/config.json"
  printf '[{"Config":"config.json","RepoTags":["hostile:load"],"Layers":["layer.tar"]}]' >"$d/manifest.json"
  tar -C "$d" -cf "$WORK/load-$f" manifest.json config.json layer.tar
  note "load $f"
  expect_fail 1 "layer \`layer.tar\`" kiln load -i "$WORK/load-$f"
  assert_eq "$(store_state)" "$before" "store changed by refused load of $f"
done

# Wrong digests: a blob whose content does not match its name, and a layer whose diff ID is wrong.
mkdir "$WORK/x" && tar -C "$WORK/x" -xf "$WORK/good.tar"
layer=$(jq -r '.[0].Layers[0]' "$WORK/x/manifest.json")
cp -r "$WORK/x" "$WORK/y"
printf 'tampered' >>"$WORK/x/$layer"
tar -C "$WORK/x" -cf "$WORK/bad-blob.tar" .
expect_fail 1 "digest mismatch" kiln load -i "$WORK/bad-blob.tar"
assert_eq "$(store_state)" "$before" "store changed by a tampered blob"
config=$(jq -r '.[0].Config' "$WORK/y/manifest.json")
rm -f "$WORK/y/index.json"   # force the manifest.json path, where diff IDs are the check
jq -c '.rootfs.diff_ids = ["sha256:'"$(printf '0%.0s' {1..64})"'"]' "$WORK/y/$config" >"$WORK/y/cfg.json"
jq -c '.[0].Config = "cfg.json"' "$WORK/y/manifest.json" >"$WORK/y/m.json" && mv "$WORK/y/m.json" "$WORK/y/manifest.json"
tar -C "$WORK/y" -cf "$WORK/bad-diffid.tar" .
expect_fail 1 "diff ID mismatch" kiln load -i "$WORK/bad-diffid.tar"
assert_eq "$(store_state)" "$before" "store changed by a wrong diff ID"
head -c 5000 "$WORK/good.tar" >"$WORK/cut.tar"
expect_fail 1 "load" kiln load -i "$WORK/cut.tar"
assert_eq "$(store_state)" "$before" "store changed by a truncated archive"
echo ok
