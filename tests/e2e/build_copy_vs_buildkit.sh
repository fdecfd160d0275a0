#!/usr/bin/env bash
# COPY and ADD judged by BuildKit itself: the Dockerfiles in testdata/builder/copy/compare are built
# by Debian's dockerd (20.10, BuildKit 0.8 built in; a private daemon on tmpfs, started and stopped
# here) and by kiln on the same busybox base and context, and the images must hold the same thing:
# paths, types, modes, numeric owners, sizes and content, symlink targets, hard links, the mtimes
# of files and symlinks, layer by layer. What current BuildKit does differently from 0.8 is judged
# in build_copy_semantics.sh instead.
source "$(dirname "$0")/lib.sh"
source "$KILN_SOURCE_DIR/testdata/builder/copy/make_context.sh"
[[ $(id -u) -eq 0 ]] || skip "needs root: dockerd, and the owners the Dockerfiles set"
need python3 tar gzip bzip2 xz zstd
command -v dockerd >/dev/null || skip "needs dockerd (Debian's docker.io)"
# Debian's client has BuildKit's client built in; a newer docker CLI wants a buildx plugin instead.
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker) || skip "needs the docker client (Debian's docker.io)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "needs the overlay filesystem"

# The daemon's state on tmpfs under $WORK, its own socket, no networking of its own (nothing here
# pulls or runs anything). Stopped, and its mounts undone, on every way out.
export DOCKER_HOST=unix://$WORK/docker.sock DOCKER_BUILDKIT=1
DOCKER_PID=
stop_dockerd() {
  if [[ -n $DOCKER_PID ]]; then
    kill "$DOCKER_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DOCKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DOCKER_PID" 2>/dev/null
    wait "$DOCKER_PID" 2>/dev/null
  fi
  # Deepest first, so that rm -rf never walks into a mount.
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  return 0
}
at_exit stop_dockerd
dockerd --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" -H "$DOCKER_HOST" \
  --pidfile "$WORK/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver overlay2 >"$WORK/dockerd.log" 2>&1 &
DOCKER_PID=$!
for _ in $(seq 150); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.2; done
$DOCKER version >/dev/null 2>&1 || skip "dockerd did not start here: $(tail -3 "$WORK/dockerd.log")"

copy_context "$WORK/ctx"
copy_base_tar "$WORK/base1.tar"
copy_base_tar "$WORK/base2.tar" extra
for n in 1 2; do
  kiln import "$WORK/base$n.tar" "copy-base:$n" >/dev/null
  $DOCKER import "$WORK/base$n.tar" "copy-base:$n" >/dev/null
done
$DOCKER build -q -f - "$WORK/ctx" <<<'FROM copy-base:1' >/dev/null 2>"$WORK/probe.err" ||
  skip "this docker client cannot build with BuildKit: $(tail -1 "$WORK/probe.err")"

for df in "$KILN_SOURCE_DIR"/testdata/builder/copy/compare/*.Dockerfile; do
  name=$(basename "$df" .Dockerfile)
  $DOCKER build --progress plain -t "copy-$name" -f "$df" "$WORK/ctx" >"$WORK/$name.docker.log" 2>&1 ||
    fail "$name: BuildKit did not build it: $(tail -5 "$WORK/$name.docker.log")"
  $DOCKER save "copy-$name" >"$WORK/$name.docker.tar"
  kiln build --progress plain -t "copy-$name" -f "$df" "$WORK/ctx" >"$WORK/$name.kiln.log" 2>&1 ||
    fail "$name: kiln did not build it: $(tail -5 "$WORK/$name.kiln.log")"
  kiln save -o "$WORK/$name.kiln.tar" "copy-$name"
  for view in "" --layers; do
    image_tree "$WORK/$name.docker.tar" $view --mtime >"$WORK/$name.docker$view.txt"
    image_tree "$WORK/$name.kiln.tar" $view --mtime >"$WORK/$name.kiln$view.txt"
    [[ -s $WORK/$name.docker$view.txt ]] || fail "$name: nothing listed from BuildKit's image"
    diff -u "$WORK/$name.docker$view.txt" "$WORK/$name.kiln$view.txt" >"$WORK/$name$view.diff" ||
      fail "$name${view:+ ($view)}: kiln's image differs from BuildKit's (- BuildKit, + kiln):
$(grep '^[-+]/\|^[-+]L' "$WORK/$name$view.diff" | head -40)"
  done
  note "$name: $(grep -c . "$WORK/$name.kiln--layers.txt") entries in the layers it adds, as BuildKit's"
done
