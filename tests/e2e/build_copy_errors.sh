#!/usr/bin/env bash
# COPY and ADD failures, each with the whole message: what is missing is named as BuildKit names it
# (the path a symlink led to, the directory a wildcard could not be searched in), a file that would
# land on a directory and a directory that would land on a file are refused as fsutil refuses them,
# and the --chown and --chmod values BuildKit refuses are refused with its words. Each build fails
# with exit code 1, leaves no image, and a failing instruction never half-writes a layer.
source "$(dirname "$0")/lib.sh"
source "$KILN_SOURCE_DIR/testdata/builder/copy/make_context.sh"
[[ $(id -u) -eq 0 ]] || skip "needs root for the context's owners"
need python3 tar gzip bzip2 xz zstd

copy_context "$WORK/ctx"
mkdir -p "$WORK/ctx/conflict" && echo file >"$WORK/ctx/conflict/sub"
copy_base_tar "$WORK/base2.tar" extra
kiln import "$WORK/base2.tar" copy-base:2 >/dev/null

# fails_with 'INSTRUCTION' 'MESSAGE': a Dockerfile of that one instruction on copy-base:2 fails
# with `kiln: error: Dockerfile:2: MESSAGE`.
fails_with() {
  printf 'FROM copy-base:2\n%s\n' "$1" >"$WORK/Dockerfile"
  expect_fail 1 "kiln: error: Dockerfile:2: $2" kiln build --progress plain -t copy-error -f "$WORK/Dockerfile" "$WORK/ctx"
  kiln images -q copy-error | grep -q . && fail "[$1] left an image behind"
  return 0
}
# BuildKit: `failed to calculate checksum of ref ...: "/missing": not found`.
fails_with 'COPY missing /x' 'COPY failed: "/missing": not found'
fails_with 'ADD a.txt missing.tar /x/' 'ADD failed: "/missing.tar": not found'
# A symlink named as a source is followed: BuildKit names where it led.
fails_with 'COPY dangling /x' 'COPY failed: "/missing": not found'
fails_with 'COPY dir/abslink /x' 'COPY failed: "/etc/passwd": not found'
fails_with 'COPY link-to-dir/* /x/' 'COPY failed: "/etc/passwd": not found'
# BuildKit's wildcard walk cannot start: `lstat .../nosuchdir: no such file or directory`.
fails_with 'COPY nosuchdir/*.txt /x/' 'COPY failed: "/nosuchdir": not found'
fails_with 'COPY --parents dir/./nope /p/' 'COPY failed: "/dir/nope": not found'
# fsutil: `cannot copy to non-directory: <dest>` and `mkdir <dest>: not a directory`.
fails_with 'COPY dir /afile' 'COPY: cannot copy to non-directory: /afile'
fails_with 'COPY a.txt /srv/existing.txt/' 'COPY: cannot copy to non-directory: /srv/existing.txt'
fails_with 'COPY a.txt dir2 /x' 'COPY: cannot copy to non-directory: /x'
# fsutil: `cannot replace to directory <dest> with file`.
fails_with 'COPY conflict /data/' 'COPY: cannot replace the directory /data/sub with a file'
# BuildKit's own words for names the image does not have and modes it cannot read.
fails_with 'COPY --chown=nosuch a.txt /x' \
  'COPY: unable to convert uid/gid chown string to host mapping: can'"'"'t find uid for user nosuch: no such user: nosuch'
fails_with 'ADD --chown=1:nosuch a.txt /x' \
  'ADD: unable to convert uid/gid chown string to host mapping: can'"'"'t find gid for group nosuch: no such group: nosuch'
fails_with 'COPY --chmod=999 a.txt /x' \
  "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"
fails_with 'COPY --chmod=17777 a.txt /x' \
  "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777"
fails_with 'COPY --chmod=u+z a.txt /x' "invalid chmod parameter: 'u+z': invalid syntax"

# What is no error in BuildKit: a wildcard without a match (nothing is made), several sources onto
# a path without a trailing slash (the last one stays).
printf 'FROM copy-base:2\nCOPY nomatch* /w/\nCOPY a.txt b.txt /one\n' >"$WORK/Dockerfile"
kiln build --progress plain -t copy-fine -f "$WORK/Dockerfile" "$WORK/ctx" >"$WORK/fine.log" 2>&1 || fail "$(tail -3 "$WORK/fine.log")"
kiln save -o "$WORK/fine.tar" copy-fine
image_tree "$WORK/fine.tar" >"$WORK/fine.txt"
grep -q '^/w ' "$WORK/fine.txt" && fail "a wildcard without a match made its destination"
assert_eq "$(grep '^/one ' "$WORK/fine.txt")" "/one f 0600 0:0 6 5da8f23decf3" "several sources onto /one: b.txt last"
