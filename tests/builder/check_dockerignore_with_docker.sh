#!/usr/bin/env bash
# Builds every case of testdata/builder/dockerignore/buildkit_cases.txt with Docker and compares what
# Docker copies with what the case expects. Not part of the test suite: it needs a Docker daemon
# (DOCKER_HOST) and network-free images only (`FROM scratch`).
#
#   BUILDKIT_DOCKER  client for the BuildKit build (default /usr/bin/docker, Debian's docker.io 20.10,
#                    DOCKER_BUILDKIT=1 and `-o type=local`)
#   LEGACY_DOCKER    client for the classic build (default /usr/local/bin/docker, a 28.x CLI,
#                    DOCKER_BUILDKIT=0); its context filter is today's moby/patternmatcher
#
# A daemon of its own, as shared/bench/bench-buildkit.sh starts one:
#   dockerd --data-root D/data --exec-root D/exec -H unix://D/docker.sock --iptables=false \
#     --bridge=none --storage-driver overlay2 & export DOCKER_HOST=unix://D/docker.sock
set -euo pipefail
cases=${1:-$(dirname "$0")/../../testdata/builder/dockerignore/buildkit_cases.txt}
BUILDKIT_DOCKER=${BUILDKIT_DOCKER:-/usr/bin/docker}
LEGACY_DOCKER=${LEGACY_DOCKER:-/usr/local/bin/docker}
: "${DOCKER_HOST:?set DOCKER_HOST to the daemon to build with}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

listing() { # DIR: the tree as the cases write it, one path per line, directories with a trailing /
  (cd "$1" && find . -mindepth 1 \( -type d -printf '%P/\n' -o -printf '%P\n' \) | LC_ALL=C sort)
}

run_case() { # NAME: builds $work/case with both builders and compares
  local name=$1 ctx=$work/case/ctx got expected builder
  for builder in buildkit-20.10 legacy; do
    rm -rf "$work/out"
    if [[ $builder == buildkit-20.10 ]]; then
      if DOCKER_BUILDKIT=1 "$BUILDKIT_DOCKER" build -q -o "type=local,dest=$work/out" "$ctx" >"$work/log" 2>&1; then
        got=$(listing "$work/out/ctx")
      else
        got=error
      fi
    else
      if id=$(DOCKER_BUILDKIT=0 "$LEGACY_DOCKER" build -q "$ctx" 2>"$work/log"); then
        cid=$("$LEGACY_DOCKER" create "$id" none)
        mkdir -p "$work/out"
        "$LEGACY_DOCKER" export "$cid" | tar -C "$work/out" -x ctx
        "$LEGACY_DOCKER" rm "$cid" >/dev/null
        "$LEGACY_DOCKER" rmi "$id" >/dev/null 2>&1 || true
        got=$(listing "$work/out/ctx")
      else
        got=error
      fi
    fi
    expected=$(cat "$work/case/$builder" 2>/dev/null || cat "$work/case/kept")
    if [[ $got == "$expected" ]]; then
      echo "ok    $builder: $name"
    else
      echo "FAIL  $builder: $name"
      diff <(echo "$expected") <(echo "$got") | sed 's/^/      /' || true
      failures=$((failures + 1))
    fi
  done
}

failures=0
name=""
section=""
start_case() {
  rm -rf "$work/case"
  mkdir -p "$work/case/ctx"
  printf 'FROM scratch\nCOPY . /ctx/\n' >"$work/case/ctx/Dockerfile"
  : >"$work/case/ctx/.dockerignore"
  : >"$work/case/kept"
}
finish_case() {
  [[ -n $name ]] || return 0
  # The kept lists leave out empty lines; so do the listings.
  for f in "$work"/case/kept "$work"/case/buildkit-20.10 "$work"/case/legacy; do
    [[ -f $f ]] && sed -i '/^$/d' "$f"
  done
  run_case "$name"
}
while IFS= read -r line || [[ -n $line ]]; do
  case $line in
    "== "*) finish_case; name=${line#== }; section=""; start_case; continue ;;
    "-- "*) section=${line#-- }; continue ;;
  esac
  [[ -n $name ]] || continue  # the file's notes; a case's notes come before its first section
  case $section in
    .dockerignore) printf '%s\n' "$line" >>"$work/case/ctx/.dockerignore" ;;
    files)
      if [[ $line == */ ]]; then
        mkdir -p "$work/case/ctx/$line"
      else
        mkdir -p "$(dirname "$work/case/ctx/$line")"
        echo x >"$work/case/ctx/$line"
      fi
      ;;
    kept | buildkit-20.10 | legacy) printf '%s\n' "$line" >>"$work/case/$section" ;;
  esac
done <"$cases"
finish_case
echo "$failures failure(s)"
[[ $failures == 0 ]]
