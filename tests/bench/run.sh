#!/usr/bin/env bash
# Container start latency benchmark (not a timed test): /bin/true in a busybox image, side by side in
# one run, on /dev/shm:
#   kiln:   `kiln run --rm IMAGE /bin/true` (overlay root on the store's snapshot, Docker's mounts,
#           seccomp, capabilities, container record made and removed);
#   runc:   `runc run` on a `kiln bundle` of the same image and flags (process args /bin/true), so
#           both start the same spec; runc's root is a plain directory, not an overlay;
#   floor:  `unshare --mount --pid --fork --ipc --uts --net --mount-proc=ROOTFS/proc chroot ROOTFS
#           /bin/true`: the same namespaces and a proc mount, nothing else;
#   overlay mount cost: mount + umount of an overlay of the image's layers (a fresh upper and work
#           directory as kiln uses), timed per call inside one private mount namespace.
# Each command: hyperfine's median of RUNS runs, and the wall time of 100 sequential runs; then kiln
# and the floor once more by turns (RUNS of each), whose pairwise differences are what the second
# goal is judged on. Prints medians, kiln/runc, and kiln minus floor minus overlay cost, against the
# issue's goals: kiln at most half of runc, and within 3 ms of the floor plus the overlay mount.
# Usage: tests/bench/run.sh [BUILD_DIR]   (default: build; RUNS=50 SEQ=100 to change the counts)
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "needs root (namespaces, mounts, runc)" >&2; exit 1; }
source tests/deps.sh
kiln_install_packages hyperfine runc jq python3 util-linux busybox-static

BUILD=${1:-build}
KILN=$(realpath "$BUILD/cli/kiln")
RUNS=${RUNS:-50}
SEQ=${SEQ:-100}
[[ -x $KILN ]] || { echo "no kiln under $BUILD (build first)" >&2; exit 1; }
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || { echo "needs the overlay filesystem" >&2; exit 1; }

WORK=$(mktemp -d /dev/shm/kiln-bench-run.XXXXXX)
export KILN_ROOT=$WORK/store
RUNC_ROOT=$WORK/runc-state
ID=kiln-bench-true-$$
cleanup() {
  local rc=$?
  runc --root "$RUNC_ROOT" delete --force "$ID" >/dev/null 2>&1 || true  # not there after a clean run
  # Never rm -rf through a live mount point.
  if grep -qF " $WORK" /proc/self/mountinfo; then
    echo "mounts remain under $WORK; not removing it" >&2
  else
    rm -rf -- "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The image: /bin/busybox from busybox-static plus one symlink per applet, one layer.
rootfs_src=$WORK/src
mkdir -p "$rootfs_src"/{bin,etc,tmp,root}
chmod 1777 "$rootfs_src/tmp"
cp /bin/busybox "$rootfs_src/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$rootfs_src/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs_src/etc/passwd"
printf 'root:x:0:\n' >"$rootfs_src/etc/group"
tar -C "$rootfs_src" --numeric-owner --owner=0 --group=0 -cf "$WORK/busybox.tar" .
rm -rf -- "$rootfs_src"
"$KILN" import --change 'CMD ["sh"]' "$WORK/busybox.tar" bench-busybox:1 >/dev/null

BUNDLE=$WORK/bundle
ROOTFS=$BUNDLE/rootfs
"$KILN" bundle -o "$BUNDLE" bench-busybox:1 /bin/true
mkdir -p "$ROOTFS/proc" "$RUNC_ROOT"  # runc makes its mount points itself; the floor's unshare does not

# Every command must work before it is timed (this also unpacks the image's snapshot).
kiln_cmd="$KILN run --rm bench-busybox:1 /bin/true"
runc_cmd="runc --root $RUNC_ROOT run --bundle $BUNDLE $ID"
floor_cmd="unshare --mount --pid --fork --ipc --uts --net --mount-proc=$ROOTFS/proc chroot $ROOTFS /bin/true"
for cmd in "$kiln_cmd" "$runc_cmd" "$floor_cmd"; do
  $cmd </dev/null || { echo "failed: $cmd" >&2; exit 1; }
done

# The overlay kiln mounts for a container: the image's snapshots as lowerdir (top first), a new
# upper and work directory. One layer here; the lower dirs are taken from the store either way.
lowers=$(ls -d "$KILN_ROOT"/snapshots/*/diff | tac | paste -sd:)
mkdir -p "$WORK/ovl"/{upper,work,merged}
overlay_us=$(unshare --mount --propagation private python3 - "$lowers" "$WORK/ovl" <<'EOF'
import ctypes, os, statistics, sys, time
libc = ctypes.CDLL(None, use_errno=True)
lowers, base = sys.argv[1], sys.argv[2]
target = f"{base}/merged".encode()
data = f"lowerdir={lowers},upperdir={base}/upper,workdir={base}/work".encode()
samples = []
for i in range(300):
    start = time.perf_counter_ns()
    if libc.mount(b"overlay", target, b"overlay", 0, data) != 0:
        sys.exit(f"mount overlay: {os.strerror(ctypes.get_errno())}")
    if libc.umount2(target, 0) != 0:
        sys.exit(f"umount overlay: {os.strerror(ctypes.get_errno())}")
    if i >= 20:  # the first ones warm the dentry cache
        samples.append(time.perf_counter_ns() - start)
print(f"{statistics.median(samples) / 1000:.0f}")
EOF
)

median_ms() { jq -r '.results[0].median * 1000' "$1"; }
# seq_ms CMD: wall time of SEQ sequential runs, in ms.
seq_ms() {
  local start end i
  start=$(date +%s%N)
  for ((i = 0; i < SEQ; i++)); do $1 </dev/null >/dev/null || { echo "failed: $1" >&2; exit 1; }; done
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}

echo "date: $(date -u +%Y-%m-%d)  kiln: $("$KILN" --version)  $(runc --version | head -1)  host: $(nproc) cores, $(uname -r)"
echo "files on /dev/shm; hyperfine -N, $RUNS runs after 5 warm-ups; then $SEQ sequential runs of each"
declare -A med total
for name in kiln runc floor; do
  var=${name}_cmd
  # Every run leaves the kernel namespaces to free in the background (a network namespace's
  # teardown outlives its last process): let that settle so it does not bill the next command.
  sleep 2
  hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$WORK/$name.json" "${!var}" >/dev/null
  med[$name]=$(median_ms "$WORK/$name.json")
  total[$name]=$(seq_ms "${!var}")
done

# kiln against the floor once more, in alternation, one run of each by turns: the machine's drift
# (this VM's timings wander by a few ms over minutes) then touches both alike. Prints the two
# medians and the median of the pairwise differences, in ms.
sleep 2
read -r pair_kiln pair_floor pair_diff < <(python3 - "$RUNS" "$kiln_cmd" "$floor_cmd" <<'PY'
import shlex, statistics, subprocess, sys, time
runs, kiln, floor = int(sys.argv[1]), shlex.split(sys.argv[2]), shlex.split(sys.argv[3])
def timed(cmd):
    start = time.perf_counter_ns()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter_ns() - start) / 1e6
for _ in range(5):
    timed(kiln), timed(floor)
pairs = [(timed(kiln), timed(floor)) for _ in range(runs)]
print(f"{statistics.median(k for k, _ in pairs):.2f} {statistics.median(f for _, f in pairs):.2f} "
      f"{statistics.median(k - f for k, f in pairs):.2f}")
PY
)

overlay_ms=$(awk -v u="$overlay_us" 'BEGIN {printf "%.3f", u / 1000}')
printf '%-36s %12s %16s\n' "" "median ms" "${SEQ} runs, ms"
printf '%-36s %12.2f %16d\n' "kiln run --rm /bin/true" "${med[kiln]}" "${total[kiln]}"
printf '%-36s %12.2f %16d\n' "runc run (kiln bundle)" "${med[runc]}" "${total[runc]}"
printf '%-36s %12.2f %16d\n' "floor: unshare + chroot" "${med[floor]}" "${total[floor]}"
printf '%-36s %12.3f\n' "overlay mount + umount" "$overlay_ms"
printf '%-36s %12s %12s\n' "alternating, $RUNS runs each" "kiln" "floor"
printf '%-36s %12.2f %12.2f\n' "  median ms" "$pair_kiln" "$pair_floor"
awk -v k="${med[kiln]}" -v r="${med[runc]}" -v f="${med[floor]}" -v o="$overlay_ms" -v n="$SEQ" \
  -v tk="${total[kiln]}" -v tr="${total[runc]}" -v tf="${total[floor]}" -v pd="$pair_diff" 'BEGIN {
  over = pd - o
  printf "kiln / runc: %.2fx (medians), %.2fx (%d sequential runs); goal at most 0.5x: %s\n", k / r, tk / tr, n, (k / r <= 0.5 ? "met" : "NOT met")
  printf "kiln - floor - overlay: %.2f ms (alternating runs, median of the differences); %.2f ms (separate medians), %.2f ms a run (sequential)\n", over, k - f - o, (tk - tf) / n - o
  printf "goal at most 3 ms (on the alternating runs): %s\n", (over <= 3 ? "met" : "NOT met")
}'
