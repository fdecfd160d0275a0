#!/usr/bin/env bash
# Builds kiln and shows it at work on a busybox root filesystem made from Debian's busybox-static:
# import, images, history, save, load back, export; a container run, changed and committed; an image
# built from testdata/demo's Dockerfile and run, then built again from the cache; then how it reads a
# multi-stage Dockerfile.
# Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")"
source tests/deps.sh
kiln_install_packages "${KILN_BUILD_PACKAGES[@]}" "${KILN_DEMO_PACKAGES[@]}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" --target kiln

work=$(mktemp -d /tmp/kiln-demo.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
export KILN_ROOT=$work/store
kiln=$PWD/build/cli/kiln
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# A root filesystem: /bin/busybox and one symlink per applet.
mkdir -p "$work/rootfs"/{bin,etc,tmp,root}
cp /bin/busybox "$work/rootfs/bin/"
for applet in $(/bin/busybox --list); do [[ $applet == busybox ]] || ln -s busybox "$work/rootfs/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
tar -C "$work/rootfs" --numeric-owner -czf "$work/busybox.tar.gz" .

step "$kiln" import --change 'CMD ["/bin/sh"]' --message "busybox from Debian" "$work/busybox.tar.gz" busybox:demo
step "$kiln" images
step "$kiln" history busybox:demo
step "$kiln" save -o "$work/busybox.tar" busybox:demo
step "$kiln" rmi busybox:demo
step "$kiln" load -i "$work/busybox.tar"
step "$kiln" images
step "$kiln" export -o "$work/rootfs-export.tar" busybox:demo
step tar -tvf "$work/rootfs-export.tar" bin/busybox

# Containers: the image run in kiln's sandbox (needs namespaces; skipped where they cannot be made).
if "$kiln" run --rm busybox:demo true 2>/dev/null; then
  step "$kiln" run --rm --hostname demo busybox:demo sh -c 'echo "PID $$ on $(hostname) as $(id -un)"; grep -E "^(CapEff|Seccomp):" /proc/self/status'
  step "$kiln" run --name changed busybox:demo sh -c 'echo hello > /greeting; rm /bin/vi'
  step "$kiln" ps -a
  step "$kiln" diff changed
  step "$kiln" commit -m "a greeting" -c 'CMD ["cat", "/greeting"]' changed greeting:demo
  step "$kiln" run --rm greeting:demo
  step "$kiln" rm changed

  # A build: testdata/demo's two stages (a cache mount, a heredoc, COPY --from), then the image run.
  step "$kiln" build --progress plain -t site:demo testdata/demo
  step "$kiln" run --rm site:demo
  # Again: every step comes from the cache and the image is the same.
  step "$kiln" build --progress plain -t site:demo testdata/demo
  step "$kiln" history site:demo
else
  echo "(kiln run skipped: this machine cannot create the namespaces it needs)"
fi

# How kiln reads a Dockerfile: stages, arguments as the builder will use them, the build order.
cat >"$work/Dockerfile" <<'EOF'
# syntax=docker/dockerfile:1
ARG BASE=busybox:demo
FROM ${BASE} AS build
ARG GREETING=hello
RUN --mount=type=cache,target=/cache <<SCRIPT
echo "$GREETING" >/greeting
SCRIPT
FROM scratch AS app
COPY --from=build /greeting /greeting
CMD ["/bin/cat", "/greeting"]
EOF
step "$kiln" parse -f "$work/Dockerfile" --build-arg GREETING=bonjour
printf 'FROM scratch\nCOPY --form=build /a /b\n' >"$work/Broken.Dockerfile"
step "$kiln" parse -f "$work/Broken.Dockerfile" || true
echo
echo "The store is an OCI image layout: $KILN_ROOT/oci (removed when the demo ends)."
