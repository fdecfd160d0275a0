# Sourced by the build_copy_* scenarios (after tests/e2e/lib.sh): the build context and the two
# base images the COPY/ADD Dockerfiles in this directory run on. Everything is made with fixed
# modes, owners and mtimes, so that two builds (kiln's, BuildKit's) see the same input.

# copy_context DIR: files with several modes (one setuid), a directory tree with symlinks (relative,
# absolute, leading out of it) and hard links, symlinks at the top (to a file, to a directory,
# dangling), archives in every format ADD unpacks and files that only look like archives. Owned by
# 1000:1000 on the host: COPY must not carry that into the image.
copy_context() {
  local c=$1 a
  mkdir -p "$c" && cd "$c" || return 1
  echo alpha >a.txt && chmod 0644 a.txt
  echo bravo >b.txt && chmod 0600 b.txt
  printf '#!/bin/sh\necho hi\n' >exec.sh && chmod 0755 exec.sh
  echo suid >suid.bin
  mkdir -p dir/sub dir/empty && echo x >dir/sub/x && echo y >dir/y
  ln -s sub/x dir/link && ln -s /etc/passwd dir/abslink && ln -s ../a.txt dir/uplink
  echo hard >dir/hard1 && ln dir/hard1 dir/hard2 && chmod 0640 dir/hard1
  mkdir -p dir2/a dir2/b dir2/c && echo ax >dir2/a/x && echo bx >dir2/b/x && echo cy >dir2/c/y
  ln -s a.txt link-to-a && ln -s dir link-to-dir && ln -s missing dangling
  # Archives: owners 1234:5678, a directory entry, a nested file, a symlink; one in each format.
  a=$(mktemp -d) && mkdir -p "$a/top/inner" && echo one >"$a/top/one" && echo two >"$a/top/inner/two"
  ln -s one "$a/top/l1" && chmod 0700 "$a/top/inner"
  local tarflags=(--numeric-owner --mtime='2020-02-02 00:00:00' --sort=name)
  tar -C "$a" "${tarflags[@]}" --owner=1234 --group=5678 -cf t.tar top
  gzip -9 -n -c t.tar >t.tar.gz && bzip2 -c t.tar >t.tar.bz2 && xz -c t.tar >t.tar.xz && zstd -q -c t.tar >t.tar.zst
  # Only a deep file (its directories are not in the archive), and an archive of "." with owners.
  tar -C "$a" "${tarflags[@]}" --owner=1234 --group=5678 -cf deep.tar top/inner/two
  tar -C "$a/top" "${tarflags[@]}" --owner=4321 --group=8765 -cf dot.tar .
  # Files under directories the image has (data/sub is 2750 1001:1002, tmp 1777), without
  # directory entries: the image's directories must stay as they are.
  mkdir -p "$a/imp/data/sub" "$a/imp/tmp" && echo n >"$a/imp/data/sub/new" && echo t >"$a/imp/tmp/x"
  tar -C "$a/imp" "${tarflags[@]}" --owner=7 --group=8 -cf implicit.tar data/sub/new tmp/x
  rm -rf "$a"
  echo 'not an archive' | gzip -n >fake.gz
  echo 'plain text' >notreally.tar.gz
  head -c 100 /dev/zero >zeros.tar
  : >empty.tar.gz
  chmod 0750 dir && chmod 0700 dir/sub && chmod 0711 dir/empty
  chown -R 1000:1000 . && chown -h 1000:1000 link-to-a
  chmod 4755 suid.bin # after chown, which clears it
  find . -exec touch -h -d '2021-03-04 05:06:07' {} +
  cd - >/dev/null || return 1
}

# copy_base_tar OUT [extra]: the busybox root filesystem with the users the --chown cases name
# (alice 1001, primary group staff 1002; group wheel 1003) and /var/run -> ../run; with `extra`,
# also what the destination cases need: /srv (0700 1001:1002), symlinks to it (relative, absolute)
# and to a file in it, a dangling one, a file where a directory could be, /opt (0775 1001:1003) and
# /data owned by others with a set-group-ID directory and a hard link.
copy_base_tar() {
  local out=$1 extra=${2:-} d
  d=$(mktemp -d "$WORK/base.XXXXXX") && chmod 0755 "$d"
  make_busybox_rootfs "$d"
  mkdir -p "$d/run" "$d/var" && ln -s ../run "$d/var/run"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nalice:x:1001:1002::/home/alice:/bin/sh\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nstaff:x:1002:\nwheel:x:1003:\n' >"$d/etc/group"
  if [[ -n $extra ]]; then
    mkdir -p "$d/srv" "$d/opt" "$d/data/sub"
    echo existing >"$d/srv/existing.txt" && echo f >"$d/afile"
    ln -s srv "$d/lnkdir" && ln -s /srv "$d/abslnkdir" && ln -s /srv/existing.txt "$d/lnkfile"
    ln -s /nonexistent/x "$d/dangle"
    echo owned >"$d/data/owned" && echo sub >"$d/data/sub/s"
    ln "$d/data/owned" "$d/data/owned-hl" && ln -s owned "$d/data/owned-link"
    chown -R 1001:1002 "$d/srv" "$d/data" && chown 1003:1003 "$d/data/sub/s" && chown 1001:1003 "$d/opt"
    chmod 0700 "$d/srv" && chmod 0775 "$d/opt" && chmod 2750 "$d/data/sub"
  fi
  tar -C "$d" --numeric-owner --mtime='2024-01-01 00:00:00' --sort=name -cf "$out" .
  rm -rf -- "$d"
}

# image_tree IMAGE-ARCHIVE [options]: see image_tree.py.
image_tree() { python3 "$KILN_SOURCE_DIR/testdata/builder/copy/image_tree.py" "$@"; }
