#!/usr/bin/env python3
"""image_tree.py ARCHIVE [--layers] [--mtime]: what an image (a docker-archive, as `docker save` and
`kiln save` write it) holds, one line per path: type, mode, numeric owner, size and content hash,
link target. Without --layers the layers are applied in turn (whiteouts too); with --layers every
layer but the first (the base) is listed on its own, numbered among the layers that hold anything
(BuildKit writes an empty layer for a COPY that changed nothing, kiln writes none). --mtime adds
the mtimes of files and symlinks (a directory's depends on when it was filled)."""
import hashlib
import io
import json
import sys
import tarfile

TYPES = {tarfile.REGTYPE: 'f', tarfile.AREGTYPE: 'f', tarfile.DIRTYPE: 'd', tarfile.SYMTYPE: 'l',
         tarfile.LNKTYPE: 'h', tarfile.CHRTYPE: 'c', tarfile.BLKTYPE: 'b', tarfile.FIFOTYPE: 'p'}


def norm(name):
    while name.startswith('./'):
        name = name[2:]
    name = name.strip('/')
    return '' if name == '.' else name


def describe(tf, member, mtime):
    kind = TYPES.get(member.type, '?')
    text = f"{kind} {member.mode & 0o7777:04o} {member.uid}:{member.gid}"
    if kind == 'f':
        text += f" {member.size} {hashlib.sha256(tf.extractfile(member).read()).hexdigest()[:12]}"
    elif kind == 'l':
        text += f" -> {member.linkname}"
    elif kind == 'h':
        text += f" => /{norm(member.linkname)}"
    if mtime and kind != 'd':
        text += f" @{int(member.mtime)}"
    return text


def layers(path):
    outer = tarfile.open(path)
    manifest = json.load(outer.extractfile('manifest.json'))
    for name in manifest[0]['Layers']:
        yield tarfile.open(fileobj=io.BytesIO(outer.extractfile(name).read()))


def main():
    path, mtime = sys.argv[1], '--mtime' in sys.argv
    if '--layers' in sys.argv:
        number = 0
        for tf in list(layers(path))[1:]:
            members = [m for m in tf.getmembers() if norm(m.name)]
            if not members:
                continue
            number += 1
            for m in sorted(members, key=lambda m: norm(m.name)):
                print(f"L{number} /{norm(m.name)} {describe(tf, m, mtime)}")
        return
    tree = {}
    for tf in layers(path):
        for m in tf.getmembers():
            name = norm(m.name)
            parent, _, base = name.rpartition('/')
            prefix = parent + '/' if parent else ''
            if base == '.wh..wh..opq':
                tree = {k: v for k, v in tree.items() if not k.startswith(prefix) or k == parent}
                continue
            if base.startswith('.wh.'):
                hidden = prefix + base[4:]
                tree = {k: v for k, v in tree.items() if k != hidden and not k.startswith(hidden + '/')}
                continue
            tree[name] = describe(tf, m, mtime)
    for name in sorted(tree):
        print(f"/{name} {tree[name]}")


main()
