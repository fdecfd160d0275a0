# Shared set-up for the end-to-end scenarios (one scenario per file, run by ctest).
# Each scenario gets a private store and scratch directory, removed on exit.
# Exit 77 = skipped (ctest's SKIP_RETURN_CODE); the reason is printed first.
set -euo pipefail

: "${KILN:?KILN must point at the kiln binary (ctest sets it)}"
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
TEST_NAME=$(basename "$0" .sh)
# tmpfs when there is room: /tmp here is ext4 without a journal, slow after many deletes.
SCRATCH_BASE=${KILN_TEST_TMP:-/dev/shm}
[[ -d $SCRATCH_BASE && -w $SCRATCH_BASE ]] || SCRATCH_BASE=/tmp
WORK=$(mktemp -d "$SCRATCH_BASE/kiln-e2e-$TEST_NAME.XXXXXX")
export KILN_ROOT=$WORK/store
# A scenario's own clean-up (users, mounts): `at_exit 'command'`, run before the scratch directory
# goes. Not a trap of its own: one that runs a command before `cleanup` hands cleanup that
# command's status instead of the scenario's, and a failed scenario exits 0.
EXIT_HOOKS=()
at_exit() { EXIT_HOOKS+=("$1"); }
cleanup() {
  local rc=$? hook
  for hook in "${EXIT_HOOKS[@]}"; do eval "$hook" || true; done
  [[ ${KEEP_WORK:-0} == 1 ]] && { echo "kept $WORK" >&2; exit $rc; }
  rm -rf -- "$WORK"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL [$TEST_NAME]: $*" >&2; exit 1; }
skip() { echo "SKIP [$TEST_NAME]: $*" >&2; exit 77; }
note() { echo "[$TEST_NAME] $*" >&2; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null || skip "needs $c (installed by test.sh)"; done; }

kiln() { "$KILN" "$@"; }

assert_eq() { [[ "$1" == "$2" ]] || fail "${3:-values differ}: expected [$2], got [$1]"; }
assert_contains() { [[ "$1" == *"$2"* ]] || fail "${3:-missing text}: [$2] not in [$1]"; }
assert_not_contains() { [[ "$1" != *"$2"* ]] || fail "${3:-unexpected text}: [$2] in [$1]"; }

# expect_fail CODE PATTERN CMD...: CMD must exit with CODE and print PATTERN (a substring) on stderr
# in kiln's error voice.
expect_fail() {
  local code=$1 pattern=$2 rc=0; shift 2
  "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  [[ $rc -eq $code ]] || fail "expected exit $code from [$*], got $rc; stderr: $(cat "$WORK/err")"
  grep -qF -- "kiln: error:" "$WORK/err" || fail "no 'kiln: error:' from [$*]: $(cat "$WORK/err")"
  grep -qF -- "$pattern" "$WORK/err" || fail "stderr of [$*] lacks [$pattern]: $(cat "$WORK/err")"
}

# A snapshot of everything in the store that a failed operation must leave alone.
store_state() {
  (cd "$KILN_ROOT" && find oci layers snapshots -path '*/.*.tmp-*' -prune -o -print0 2>/dev/null | sort -z |
    xargs -0 -r sha256sum 2>/dev/null; kiln images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}')
}

# make_busybox_rootfs DIR: /bin/busybox from Debian's busybox-static plus one symlink per applet.
make_busybox_rootfs() {
  local dir=$1 a
  [[ -x /bin/busybox ]] || skip "needs /bin/busybox (busybox-static)"
  mkdir -p "$dir"/{bin,etc,tmp,root,var/empty}
  chmod 1777 "$dir/tmp"
  cp /bin/busybox "$dir/bin/busybox"
  for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$dir/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

# make_busybox_tar OUT [tar flags]: the rootfs above as a tarball with fixed owners and mtimes.
make_busybox_tar() {
  local out=$1; shift
  local d; d=$(mktemp -d "$WORK/rootfs.XXXXXX")
  make_busybox_rootfs "$d"
  tar -C "$d" --numeric-owner --owner=0 --group=0 --mtime='2024-01-01 00:00:00' --sort=name "$@" -cf "$out" .
  rm -rf -- "$d"
}

# busybox_image [NAME]: imports the busybox rootfs as NAME (default busybox:latest), with a shell
# command as the image's Cmd as Docker's busybox has.
busybox_image() {
  local name=${1:-busybox:latest}
  make_busybox_tar "$WORK/busybox.tar"
  kiln import --change 'CMD ["sh"]' "$WORK/busybox.tar" "$name" >/dev/null
}

# need_root_sandbox: skips unless namespaces and mounts can be made here (root, with overlay).
need_root_sandbox() {
  [[ $(id -u) -eq 0 ]] || skip "needs root for namespaces and mounts (the rootless scenario covers the rest)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "needs the overlay filesystem"
}
