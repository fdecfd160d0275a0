#!/usr/bin/env bash
# Build benchmark (not a timed test): `kiln build` against its peers, side by side in one run, all files
# (contexts, stores, daemon data, TMPDIR) on /dev/shm:
#   kiln:     a new process per build; cold = a fresh, empty --root for every run;
#   BuildKit: the one inside Debian's docker.io dockerd 20.10, a private daemon this script starts
#             (socket and data in its scratch directory, overlay2 on tmpfs, no bridge and no iptables,
#             so every RUN uses --network host, as kiln's do here); cold = `docker builder prune -af`
#             and every image removed before each run; warm builds are answered by the running daemon;
#   buildah:  `buildah bud --isolation chroot --layers`, vfs storage; cold = fresh --root/--runroot.
# Warm = the identical build again on what the last cold run left, every step a cache hit. Resets
# between runs are hyperfine's --prepare, not timed. Every command runs once untimed first; a command
# that fails is reported with its output, and the other cases go on.
# Cases (CASES=, the Dockerfiles are those of the peer figures in the issue, word for word):
#   small     FROM scratch, ADD busybox tar, three RUN, ENV, WORKDIR, CMD
#   copy      COPY of 5,000 small files (1 and 4 KiB) and one 200 MiB random file
#   multi     two independent stages of `RUN sleep 1`, a final stage copying from both (buildah --jobs 3)
#   i30       thirty instructions: FROM, ADD, 9 x (ENV, LABEL, RUN), CMD
#   parallel  multi with `sleep 5`, cold only: the two stages must overlap (kiln at most 5.4 s)
#   files     COPY of a context of 100,000 small files (1 KiB, 1,000 to a directory), cold and warm,
#             kiln's peak RSS; then kiln alone at each size in FILES= to show the time is linear
# Prints hyperfine's report for each measurement, a RESULT line per median, and one table at the end
# with the medians and the ratios of the issue's goals (BuildKit's time over kiln's: 3x = kiln three
# times faster).
# Usage: tests/bench/build.sh [BUILD_DIR]   (default: build; needs root; installs docker.io, buildah,
#   hyperfine, jq, busybox-static and time)
#   RUNS=5  CASES="small copy multi i30 parallel files"  TOOLS="kiln buildkit buildah"
#   FILES="25000 50000 100000"  BENCH_TMP=/dev/shm  KEEP_TMP=1 keeps the scratch directory
# /tmp is not used: this machine's root file system is ext4 without a journal, where creating files
# slows down by up to 1 ms each after many deletions (ext4's recently_deleted()), and cold builds delete
# a lot; measured on tmpfs the figures do not depend on the disk's history.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "needs root (namespaces, mounts, dockerd)" >&2; exit 1; }
source tests/deps.sh
kiln_install_packages hyperfine jq busybox-static time util-linux procps docker.io buildah

BUILD=${1:-build}
KILN=$(realpath "$BUILD/cli/kiln")
[[ -x $KILN ]] || { echo "no kiln under $BUILD (build it first)" >&2; exit 1; }
RUNS=${RUNS:-5}
CASES=${CASES:-small copy multi i30 parallel files}
TOOLS=${TOOLS:-kiln buildkit buildah}
FILES=${FILES:-25000 50000 100000}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
KEEP_TMP=${KEEP_TMP:-0}
DOCKER=/usr/bin/docker  # the client of docker.io, whose `build` goes to dockerd's BuildKit
has_case() { [[ " $CASES " == *" $1 "* ]]; }
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
for n in $FILES; do
  [[ $n =~ ^[1-9][0-9]*000$ ]] || { echo "FILES: $n is not a multiple of 1,000" >&2; exit 1; }
done
FILES_MAX=$(printf '%s\n' $FILES | sort -n | tail -1)
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || { echo "needs the overlay filesystem" >&2; exit 1; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

WORK=$(mktemp -d "$BENCH_TMP/kiln-bench-build.XXXXXX")
DOCKERD_PID=""
# mounts_under DIR: the mount points at or under DIR, deepest first.
mounts_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}
cleanup() {
  local rc=$? i m pid
  set +e
  trap '' INT TERM  # a second Ctrl-C must not cut the clean-up short
  if [[ -n $DOCKERD_PID ]]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for ((i = 0; i < 200; i++)); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && { log "dockerd did not stop in 20 s: killing it"; kill -KILL "$DOCKERD_PID"; }
    wait "$DOCKERD_PID" 2>/dev/null
    # The containerd that dockerd started outlives a dockerd that had to be killed.
    pid=$(cat "$WORK/docker/exec/containerd/containerd.pid" 2>/dev/null)
    [[ -n $pid ]] && kill "$pid" 2>/dev/null
  fi
  for d in "$WORK"/buildah-*; do
    [[ -d $d/root ]] && buildah --storage-driver vfs --root "$d/root" --runroot "$d/runroot" rm --all >/dev/null 2>&1
  done
  # dockerd's overlays and namespaces, or whatever an interrupted build left.
  for m in $(mounts_under "$WORK"); do umount -l "$m" 2>/dev/null; done
  if [[ -n $(mounts_under "$WORK") ]]; then
    log "mounts remain under $WORK; not removing it"  # never rm -rf through a live mount point
  elif [[ $KEEP_TMP == 1 ]]; then
    log "KEEP_TMP=1: leaving $WORK"
  else
    rm -rf -- "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK"/{bin,df,out,json,tmp}
export TMPDIR=$WORK/tmp  # buildah's and the clients' temporary files go to tmpfs too

# Resets run by hyperfine's --prepare, untimed. A store is deleted only when nothing is mounted in it.
cat >"$WORK/bin/reset-dir" <<'EOF'
#!/bin/sh
# reset-dir DIR: removes DIR, unless something is mounted at or under it.
if awk -v d="$1" '$5 == d || index($5, d "/") == 1 {f = 1} END {exit !f}' /proc/self/mountinfo; then
  echo "reset-dir: mounts remain under $1" >&2
  exit 1
fi
exec rm -rf -- "$1"
EOF
cat >"$WORK/bin/reset-buildkit" <<EOF
#!/bin/sh
# reset-buildkit: BuildKit's cache and every image gone, as in the peers' figures.
set -e
$DOCKER builder prune -af >/dev/null
$DOCKER image prune -af >/dev/null
ids=\$($DOCKER images -q)
[ -z "\$ids" ] || $DOCKER rmi -f \$ids >/dev/null
EOF
chmod +x "$WORK/bin/reset-dir" "$WORK/bin/reset-buildkit"

# ------------------------------------------------------------------------------ contexts, Dockerfiles
# The base: /bin/busybox plus one symlink per applet, owned by root, fixed mtimes (as the peers' lib.sh).
rootfs=$WORK/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,var,run}
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
mkdir -p "$WORK/ctx"
tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --mtime='2024-01-01 00:00:00' -cf "$WORK/ctx/busybox-rootfs.tar" .
rm -rf -- "$rootfs"

cat >"$WORK/df/small" <<'EOF'
FROM scratch
ADD busybox-rootfs.tar /
RUN echo hello > /hello.txt
RUN mkdir -p /app && echo a > /app/a
RUN ls /bin | wc -l > /app/count
ENV APP_MODE=bench
WORKDIR /app
CMD ["/bin/sh", "-c", "cat /app/count"]
EOF

cat >"$WORK/df/copy" <<'EOF'
FROM scratch
ADD busybox-rootfs.tar /
COPY data/ /data/
CMD ["/bin/ls", "/data"]
EOF

cat >"$WORK/df/multi" <<'EOF'
FROM scratch AS a
ADD busybox-rootfs.tar /
RUN sleep 1 && echo a > /a.txt

FROM scratch AS b
ADD busybox-rootfs.tar /
RUN sleep 1 && echo b > /b.txt

FROM scratch
ADD busybox-rootfs.tar /
COPY --from=a /a.txt /a.txt
COPY --from=b /b.txt /b.txt
CMD ["/bin/cat", "/a.txt", "/b.txt"]
EOF
sed 's/sleep 1/sleep 5/' "$WORK/df/multi" >"$WORK/df/parallel"

{ # 30 instructions: FROM + ADD + 9 ENV + 9 LABEL + 9 RUN + CMD
  echo 'FROM scratch'
  echo 'ADD busybox-rootfs.tar /'
  for i in $(seq 1 9); do
    echo "ENV VAR_$i=value_$i"
    echo "LABEL bench.label$i=\"label $i\""
    echo "RUN echo $i > /step$i"
  done
  echo 'CMD ["/bin/sh"]'
} >"$WORK/df/i30"
[[ $(grep -c . "$WORK/df/i30") -eq 30 ]] || { echo "the i30 Dockerfile does not have 30 instructions" >&2; exit 1; }

# The files case has no peer script: it is the copy case's Dockerfile on a context of many small files.
cat >"$WORK/df/files" <<'EOF'
FROM scratch
ADD busybox-rootfs.tar /
COPY files/ /files/
CMD ["/bin/ls", "/files"]
EOF

if has_case copy; then
  # 5,000 small files (2,500 x 1 KiB and 2,500 x 4 KiB in 50 directories) and 200 MiB of random data.
  cc=$WORK/ctx-copy
  mkdir -p "$cc/data"
  cp "$WORK/ctx/busybox-rootfs.tar" "$cc/"
  for d in $(seq -w 0 49); do
    mkdir -p "$cc/data/d$d"
    if ((10#$d % 2 == 0)); then sz=1024; else sz=4096; fi
    head -c $((100 * sz)) /dev/urandom | split -b "$sz" -a 3 -d - "$cc/data/d$d/f"
  done
  head -c $((200 * 1024 * 1024)) /dev/urandom >"$cc/data/big.bin"
  [[ $(find "$cc/data" -type f | wc -l) -eq 5001 ]] || { echo "copy context: not 5,001 files" >&2; exit 1; }
fi
# make_files_context N: busybox tar and N files of 1 KiB random data, 1,000 to a directory.
make_files_context() {
  local n=$1 c=$WORK/ctx-files-$1 d
  mkdir -p "$c/files"
  cp "$WORK/ctx/busybox-rootfs.tar" "$c/"
  for ((d = 0; d < n / 1000; d++)); do
    mkdir "$c/files/d$(printf %03d $d)"
    head -c $((1000 * 1024)) /dev/urandom | split -b 1024 -a 3 -d - "$c/files/d$(printf %03d $d)/f"
  done
  [[ $(find "$c/files" -type f | wc -l) -eq $n ]] || { echo "files context: not $n files" >&2; exit 1; }
}

# ------------------------------------------------------------------------------ BuildKit's daemon
if has_tool buildkit; then
  mkdir -p "$WORK/docker"
  export DOCKER_HOST=unix://$WORK/docker/docker.sock DOCKER_BUILDKIT=1
  dockerd --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" -H "$DOCKER_HOST" \
    --pidfile "$WORK/docker/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver overlay2 >"$WORK/docker/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for ((i = 0; i < 100; i++)); do
    $DOCKER version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  $DOCKER version >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -5 "$WORK/docker/dockerd.log" >&2; exit 1; }
fi

# ------------------------------------------------------------------------------ measuring
declare -A RESULT CPU RSS  # median wall time, mean user + system time, peak RSS in KiB
FAILURES=$WORK/out/failures

# command_for TOOL KEY DOCKERFILE CONTEXT [EXTRA...]: the build command line.
command_for() {
  local tool=$1 key=$2 df=$3 ctx=$4
  shift 4
  case $tool in
    kiln) echo "$KILN --root $WORK/kiln-$key build -q --network host ${*:+$* }-f $df -t bench-$key $ctx" ;;
    buildkit) echo "$DOCKER build -q --network host ${*:+$* }-f $df -t bench-$key $ctx" ;;
    buildah) echo "buildah --storage-driver vfs --root $WORK/buildah-$key/root --runroot $WORK/buildah-$key/runroot bud --isolation chroot --layers ${*:+$* }-f $df -t bench-$key $ctx" ;;
  esac
}
reset_for() {  # reset_for TOOL KEY: the untimed reset to an empty store
  case $1 in
    kiln) echo "$WORK/bin/reset-dir $WORK/kiln-$2" ;;
    buildkit) echo "$WORK/bin/reset-buildkit" ;;
    buildah) echo "$WORK/bin/reset-dir $WORK/buildah-$2" ;;
  esac
}

# record_failure TOOL KEY WHAT CMD OUTPUT_FILE: keeps the command and its output for the report.
record_failure() {
  {
    echo "---- $1 $2 $3 failed"
    echo "\$ $4"
    tail -n 40 "$5"
    echo
  } >>"$FAILURES"
  log "$1 $2 $3 FAILED: $(tail -n 1 "$5")"
}

# hf TOOL KEY MODE CMD [HYPERFINE ARGS...]: hyperfine's median into RESULT[TOOL.KEY.MODE]; on failure
# the command is run once more to capture what it says.
hf() {
  local tool=$1 key=$2 mode=$3 cmd=$4 json=$WORK/json/$1.$2.$3.json
  shift 4
  echo "---- $tool.$key.$mode  (load $(cut -d' ' -f1-3 /proc/loadavg))"
  if hyperfine --style basic --runs "$RUNS" --export-json "$json" "$@" "$cmd"; then
    RESULT[$tool.$key.$mode]=$(jq -r '.results[0].median' "$json")
    CPU[$tool.$key.$mode]=$(jq -r '.results[0].user + .results[0].system' "$json")
    jq -r --arg k "$tool.$key.$mode" '.results[0] |
      "RESULT \($k) median=\(.median * 10000 | round / 10000)s min=\(.min * 10000 | round / 10000)s max=\(.max * 10000 | round / 10000)s runs=\(.times | length)"' "$json"
    return 0
  fi
  RESULT[$tool.$key.$mode]=failed
  local out=$WORK/out/$tool.$key.$mode.rerun
  [[ $mode == cold ]] && { eval "$(reset_for "$tool" "$key")" || true; }
  if eval "$cmd" >"$out" 2>&1; then echo "(hyperfine stopped, but the command passed when run once more)" >>"$out"; fi
  record_failure "$tool" "$key" "$mode" "$cmd" "$out"
  return 1
}

# bench TOOL KEY DOCKERFILE CONTEXT [EXTRA...]: one untimed build (it must pass), RUNS cold builds, then
# RUNS warm ones on what the last cold build left. KIND=cold measures cold builds only; WITH_RSS=1 wraps
# kiln in /usr/bin/time for its peak RSS (the largest of its runs, RUN containers included).
bench() {
  local tool=$1 key=$2 cmd reset out
  cmd=$(command_for "$@")
  reset=$(reset_for "$tool" "$key")
  if [[ $tool == kiln && ${WITH_RSS:-0} == 1 ]]; then cmd="/usr/bin/time -f %M -a -o $WORK/out/rss.$key $cmd"; fi
  echo "==== $tool $key: $cmd"
  out=$WORK/out/$tool.$key.check
  if ! eval "$reset" >"$out" 2>&1; then
    RESULT[$tool.$key.cold]=failed
    record_failure "$tool" "$key" "reset before the first build" "$reset" "$out"
    return 0
  fi
  if ! eval "$cmd" >"$out" 2>&1; then
    RESULT[$tool.$key.cold]=failed
    record_failure "$tool" "$key" "first build" "$cmd" "$out"
    if [[ $tool == kiln ]]; then  # once more with the steps shown
      local plain=${cmd/ build -q / build --progress plain }
      if eval "$reset" >/dev/null 2>&1 && ! eval "$plain" >"$out.plain" 2>&1; then
        record_failure "$tool" "$key" "first build (plain progress)" "$plain" "$out.plain"
      fi
    fi
    eval "$reset" >/dev/null 2>&1 || true
    return 0
  fi
  rm -f "$WORK/out/rss.$key"
  hf "$tool" "$key" cold "$cmd" --prepare "$reset" || true
  if [[ -s $WORK/out/rss.$key ]]; then RSS[$key.cold]=$(sort -n "$WORK/out/rss.$key" | tail -1); fi
  rm -f "$WORK/out/rss.$key"
  if [[ ${KIND:-both} == both && ${RESULT[$tool.$key.cold]} != failed ]]; then
    hf "$tool" "$key" warm "$cmd" --warmup 1 || true
    if [[ -s $WORK/out/rss.$key ]]; then RSS[$key.warm]=$(sort -n "$WORK/out/rss.$key" | tail -1); fi
  fi
  eval "$reset" >/dev/null 2>&1 || true  # the stores hold hundreds of MiB of tmpfs
}
# bench_case KEY DOCKERFILE CONTEXT: each tool in turn.
bench_case() {
  local tool
  for tool in $TOOLS; do
    case $tool in
      buildah) [[ $1 == multi || $1 == parallel ]] && { bench buildah "$@" --jobs 3; continue; } ;;
    esac
    bench "$tool" "$@"
  done
}

echo "date: $(date -u '+%Y-%m-%d %H:%M') UTC  host: $(nproc) cores, $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
versions="$("$KILN" --version)"
if has_tool buildkit; then
  versions+=", BuildKit in dockerd $($DOCKER version --format '{{.Server.Version}}') ($($DOCKER info --format '{{.Driver}}'))"
fi
if has_tool buildah; then versions+=", buildah $(buildah --version | awk '{print $3}') (vfs, chroot isolation)"; fi
echo "$versions, $(hyperfine --version)"
echo "files on $(findmnt -no FSTYPE -T "$WORK" | head -1) ($WORK); RUNS=$RUNS; cases: $CASES; tools: $TOOLS"
echo "load at start: $(uptime)"

has_case small && bench_case small "$WORK/df/small" "$WORK/ctx"
has_case copy && bench_case copy "$WORK/df/copy" "$WORK/ctx-copy"
has_case multi && bench_case multi "$WORK/df/multi" "$WORK/ctx"
has_case i30 && bench_case i30 "$WORK/df/i30" "$WORK/ctx"
has_case parallel && KIND=cold bench_case parallel "$WORK/df/parallel" "$WORK/ctx"
if has_case files; then
  make_files_context "$FILES_MAX"
  WITH_RSS=1 bench_case "files-$FILES_MAX" "$WORK/df/files" "$WORK/ctx-files-$FILES_MAX"
  if has_tool kiln; then
    for n in $FILES; do
      ((n == FILES_MAX)) && continue
      make_files_context "$n"
      WITH_RSS=1 bench kiln "files-$n" "$WORK/df/files" "$WORK/ctx-files-$n"
      rm -rf -- "$WORK/ctx-files-$n"
    done
  fi
fi
echo "load at end: $(uptime)"

# ------------------------------------------------------------------------------ report
[[ -s $FAILURES ]] && { echo; echo "################ FAILURES"; cat "$FAILURES"; }
secs() { [[ -z ${1:-} ]] && { echo "-"; return; }; [[ $1 == failed ]] && { echo failed; return; }; awk -v t="$1" 'BEGIN {printf "%.3f s", t}'; }
# ratio KEY MODE GOAL: BuildKit's median over kiln's, and whether it reaches GOAL (empty: no goal).
ratio() {
  local k=${RESULT[kiln.$1.$2]:-} b=${RESULT[buildkit.$1.$2]:-}
  if [[ -z $k || -z $b || $k == failed || $b == failed ]]; then echo "-"; return; fi
  awk -v k="$k" -v b="$b" -v g="${3:-}" 'BEGIN {
    printf "%.2fx", b / k
    if (g != "") printf " (goal >= %sx: %s)", g, (b / k >= g ? "met" : "NOT met") }'
}
row() {  # row LABEL KEY COLD_GOAL WARM_GOAL
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" \
    "$(secs "${RESULT[kiln.$2.cold]:-}")" "$(secs "${RESULT[buildkit.$2.cold]:-}")" "$(secs "${RESULT[buildah.$2.cold]:-}")" \
    "$(ratio "$2" cold "$3")" \
    "$(secs "${RESULT[kiln.$2.warm]:-}")" "$(secs "${RESULT[buildkit.$2.warm]:-}")" "$(secs "${RESULT[buildah.$2.warm]:-}")" \
    "$(ratio "$2" warm "$4")"
}
echo
echo "################ SUMMARY: medians of $RUNS runs; ratio = BuildKit's time / kiln's (above 1: kiln faster)"
echo "| case | kiln cold | BuildKit cold | buildah cold | cold ratio | kiln warm | BuildKit warm | buildah warm | warm ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
has_case small && row "small" small 1.5 3
has_case copy && row "copy (5,000 files + 200 MiB)" copy 1 2
has_case multi && row "multi (2 x sleep 1; buildah --jobs 3)" multi "" 3
has_case i30 && row "i30 (30 instructions)" i30 1.5 3
if has_case parallel; then
  row "parallel (2 x sleep 5; buildah --jobs 3)" parallel "" ""
  k=${RESULT[kiln.parallel.cold]:-}
  [[ -n $k && $k != failed ]] && awk -v k="$k" 'BEGIN {
    printf "parallel: kiln cold %.2f s; goal at most 5.4 s (the stages overlap): %s\n", k, (k <= 5.4 ? "met" : "NOT met") }'
fi
if has_case files; then
  row "files ($FILES_MAX x 1 KiB)" "files-$FILES_MAX" 1 1
  if has_tool kiln; then
    # /usr/bin/time's %M is in KiB; the goal is in MB (10^6 bytes).
    mb() { if [[ -n ${1:-} ]]; then awk -v r="$1" 'BEGIN {printf "%.1f MB", r * 1024 / 1e6}'; else echo "-"; fi; }
    per() { if [[ -n ${1:-} && $1 != failed ]]; then awk -v t="$1" -v n="$2" 'BEGIN {printf "%.1f ms", t * 1e6 / n}'; else echo "-"; fi; }
    echo
    echo "kiln on contexts of 1 KiB files: median wall time and mean CPU time (user + system) per 1,000 files; peak RSS"
    echo "| files | kiln cold | wall per 1,000 | CPU per 1,000 | kiln warm | wall per 1,000 | CPU per 1,000 | peak RSS cold | peak RSS warm |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for n in $(printf '%s\n' $FILES | sort -n); do
      c=${RESULT[kiln.files-$n.cold]:-} w=${RESULT[kiln.files-$n.warm]:-}
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" \
        "$(secs "$c")" "$(per "$c" "$n")" "$(per "${CPU[kiln.files-$n.cold]:-}" "$n")" \
        "$(secs "$w")" "$(per "$w" "$n")" "$(per "${CPU[kiln.files-$n.warm]:-}" "$n")" \
        "$(mb "${RSS[files-$n.cold]:-}")" "$(mb "${RSS[files-$n.warm]:-}")"
    done
    # Linear: the time per file does not grow with the context, the smallest context against the largest.
    # Wall time on a loaded machine also holds waiting for the cores; CPU time is the work done.
    FILES_MIN=$(printf '%s\n' $FILES | sort -n | head -1)
    for mode in cold warm; do
      a=${RESULT[kiln.files-$FILES_MIN.$mode]:-} b=${RESULT[kiln.files-$FILES_MAX.$mode]:-}
      ca=${CPU[kiln.files-$FILES_MIN.$mode]:-} cb=${CPU[kiln.files-$FILES_MAX.$mode]:-}
      if [[ $FILES_MIN != "$FILES_MAX" && -n $a && -n $b && $a != failed && $b != failed ]]; then
        awk -v a="$a" -v b="$b" -v ca="$ca" -v cb="$cb" -v na="$FILES_MIN" -v nb="$FILES_MAX" -v m="$mode" 'BEGIN {
          printf "files, kiln %s: %d files against %d (%.2fx the files): %.2fx the wall time, %.2fx the CPU time; per file %.2fx and %.2fx (linear: 1)\n",
            m, nb, na, nb / na, b / a, cb / ca, (b / nb) / (a / na), (cb / nb) / (ca / na) }'
      fi
    done
    peak=$(for k in "${!RSS[@]}"; do echo "${RSS[$k]}"; done | sort -n | tail -1)
    if [[ -n $peak ]]; then
      awk -v r="$peak" 'BEGIN {printf "files, kiln peak RSS: %.1f MB; goal under 128 MB: %s\n", r * 1024 / 1e6, (r * 1024 < 128e6 ? "met" : "NOT met")}'
    fi
    # "Whatever the size of the context": RSS that grows with the number of files reaches 128 MB somewhere.
    ra=${RSS[files-$FILES_MIN.cold]:-} rb=${RSS[files-$FILES_MAX.cold]:-}
    if [[ $FILES_MIN != "$FILES_MAX" && -n $ra && -n $rb ]]; then
      awk -v ra="$ra" -v rb="$rb" -v na="$FILES_MIN" -v nb="$FILES_MAX" 'BEGIN {
        slope = (rb - ra) * 1024 / (nb - na)  # bytes per file
        printf "files, kiln peak RSS (cold) grows by %.0f bytes a file from %d to %d files", slope, na, nb
        if (slope > 64) printf ": 128 MB at about %.0f files\n", nb + (128e6 - rb * 1024) / slope
        else printf "\n" }'
    fi
  fi
fi
echo "the goals: warm >= 3x BuildKit on small, multi, i30 and >= 2x on copy; cold >= 1.5x on small and i30, >= 1x on copy;"
echo "parallel at most 5.4 s; files cold and warm >= 1x, linear, peak RSS under 128 MB"
