#!/usr/bin/env bash
# kiln run against runc, differentially: for several sets of run flags, the same probe runs once in
# kiln's own sandbox (`kiln run --rm`) and once under runc from a bundle kiln writes with the same
# flags (`kiln bundle` + `runc run`). What the process sees — its IDs, capabilities, seccomp and
# no_new_privs state, hostname, working directory and mount table — must be the same.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
need runc
busybox_image

# The probe, a busybox sh script. The mount table comes from /proc/self/mountinfo, one line per
# mount: mount point, fs type, the per-mount options sorted, then the filesystem's own options
# sorted. Left out because they legitimately differ between two containers: mount and device IDs,
# the root within the filesystem, the source, tmpfs size=/nr_inodes= (kiln and runc ask for the
# same size; the field is still left out so that a host's page size or rounding cannot matter), and
# for "/" everything but ro/rw: kiln's root is an overlay of the image's layers, runc's a bind
# mount of the bundle's rootfs directory, which carries the flags of the filesystem the bundle
# lives on (nosuid,nodev on /dev/shm).
cat >"$WORK/probe.sh" <<'EOF'
id -u; id -g; id -G
grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status
hostname; pwd
sortopts() { echo "$1" | tr ',' '\n' | grep -vE '^(size|nr_inodes)=' | sort | tr '\n' ',' | sed 's/,$//'; }
while read -r _id _parent _dev _root point opts rest; do
  fstype=${rest#*- }; fstype=${fstype%% *}
  super=${rest#*- * * }
  if [ "$point" = / ]; then
    case ",$opts," in *,ro,*) echo "/ (root) ro" ;; *) echo "/ (root) rw" ;; esac
  else
    echo "$point $fstype $(sortopts "$opts") $(sortopts "$super")"
  fi
done </proc/self/mountinfo
EOF
probe=$(cat "$WORK/probe.sh")

# kiln's default hostname is a new container's short ID, in each run a different one.
normalize() { sed -E 's/^[0-9a-f]{12}$/<container-id>/'; }

runc_root=$WORK/runc-state
mkdir -p "$runc_root"
n=0
compare() {
  local label=$1; shift
  n=$((n + 1))
  local bundle=$WORK/bundle-$n id=kiln-e2e-$$-$n
  kiln bundle -o "$bundle" "$@" busybox sh -c "$probe"
  runc --root "$runc_root" run --bundle "$bundle" "$id" </dev/null >"$WORK/runc-$n.raw" 2>"$WORK/runc-$n.err" ||
    { runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1 || true
      fail "$label: runc run failed: $(cat "$WORK/runc-$n.err")"; }
  kiln run --rm "$@" busybox sh -c "$probe" >"$WORK/kiln-$n.raw" 2>"$WORK/kiln-$n.err" ||
    fail "$label: kiln run failed: $(cat "$WORK/kiln-$n.err")"
  normalize <"$WORK/runc-$n.raw" >"$WORK/runc-$n"
  normalize <"$WORK/kiln-$n.raw" >"$WORK/kiln-$n"
  [[ -s $WORK/kiln-$n ]] || fail "$label: the probe printed nothing"
  if ! diff -u --label "runc ($label)" --label "kiln run ($label)" "$WORK/runc-$n" "$WORK/kiln-$n" >"$WORK/diff-$n"; then
    cat "$WORK/diff-$n" >&2
    failures+=("$label")
  fi
  rm -rf -- "$bundle"
}

failures=()
compare "default"
compare "-u 65534:65534" -u 65534:65534
compare "--cap-drop ALL --cap-add NET_ADMIN" --cap-drop ALL --cap-add NET_ADMIN
compare "--read-only" --read-only
compare "--hostname h1" --hostname h1
compare "-w /tmp" -w /tmp
[[ ${#failures[@]} -eq 0 ]] || fail "kiln run and runc differ for: ${failures[*]} (diffs above)"

# The issue's form, `kiln bundle IMAGE DIR [COMMAND...]`, writes the same bundle.
kiln bundle --hostname same busybox "$WORK/positional" echo from-runc
assert_eq "$(runc --root "$runc_root" run --bundle "$WORK/positional" "kiln-e2e-$$-p" </dev/null)" from-runc \
  "a bundle written as kiln bundle IMAGE DIR runs under runc"
expect_fail 125 '"bundle" requires a directory' kiln bundle busybox
if grep -q "$WORK" /proc/self/mountinfo; then fail "a mount under the scratch directory leaked to the host"; fi
note "ok"
