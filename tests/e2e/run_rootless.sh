#!/usr/bin/env bash
# kiln run as an unprivileged user: a user namespace maps container root to the caller and
# container IDs 1..65536 to its /etc/subuid range (newuidmap/newgidmap); a user without a range
# gets a single-ID map; limits that need cgroups are refused clearly; --rm and rm remove files
# of subordinate IDs. The test makes its own users (and removes them).
source "$(dirname "$0")/lib.sh"
[[ $(id -u) -eq 0 ]] || skip "needs root to create the unprivileged test users"
need useradd userdel newuidmap newgidmap runuser
grep -qw overlay /proc/filesystems || skip "needs the overlay filesystem"

with_range=kilnrl$$
without_range=kilnrn$$
cleanup_users() {
  userdel -r "$with_range" >/dev/null 2>&1 || true
  userdel -r "$without_range" >/dev/null 2>&1 || true
  sed -i "/^$with_range:/d; /^$without_range:/d" /etc/subuid /etc/subgid 2>/dev/null || true
}
at_exit cleanup_users
useradd -M -s /bin/sh "$with_range"
useradd -M -s /bin/sh "$without_range"
# useradd may have given both users subordinate ranges already (SUB_UID_COUNT in login.defs).
# The first user needs one: give it one past every range given out, unless it has one. The
# second must have none.
sed -i "/^$without_range:/d" /etc/subuid /etc/subgid
if ! grep -q "^$with_range:" /etc/subuid || ! grep -q "^$with_range:" /etc/subgid; then
  sed -i "/^$with_range:/d" /etc/subuid /etc/subgid
  start=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN {m = 300000} {e = $2 + $3; if (e > m) m = e} END {print m}')
  echo "$with_range:$start:65536" >>/etc/subuid
  echo "$with_range:$start:65536" >>/etc/subgid
fi
start=$(awk -F: -v u="$with_range" '$1 == u {print $2; exit}' /etc/subuid)
count=$(awk -F: -v u="$with_range" '$1 == u {print $3; exit}' /etc/subuid)

# Everything the users touch lives in the scratch directory, which they must be able to enter.
chmod 755 "$WORK"
install -m 755 "$KILN" "$WORK/kiln"
make_busybox_tar "$WORK/busybox.tar"
chmod 644 "$WORK/busybox.tar"
for user in "$with_range" "$without_range"; do install -d -o "$user" -m 700 "$WORK/store-$user"; done
as_user() {
  local user=$1; shift
  runuser -u "$user" -- env KILN_ROOT="$WORK/store-$user" HOME="$WORK" "$WORK/kiln" "$@"
}
unshare --user true 2>/dev/null && runuser -u "$with_range" -- unshare --user true 2>/dev/null ||
  skip "unprivileged user namespaces are disabled on this host"
as_user "$with_range" import "$WORK/busybox.tar" busybox:latest >/dev/null
as_user "$without_range" import "$WORK/busybox.tar" busybox:latest >/dev/null

uid=$(id -u "$with_range")
out=$(as_user "$with_range" run --rm busybox sh -c 'id -u; cat /proc/self/uid_map; grep -E "^(CapEff|Seccomp):" /proc/self/status; echo $$')
assert_eq "$(sed -n 1p <<<"$out")" 0 "root inside"
assert_eq "$(sed -n 2p <<<"$out" | tr -s ' ' | sed 's/^ //')" "0 $uid 1" "container root is the caller"
assert_eq "$(sed -n 3p <<<"$out" | tr -s ' ' | sed 's/^ //')" "1 $start $count" "1..N are the caller's subordinate range"
assert_contains "$out" $'CapEff:\t00000000a80425fb' "Docker's capabilities inside the user namespace"
assert_contains "$out" $'Seccomp:\t2' "seccomp"
assert_eq "$(sed -n 6p <<<"$out")" 1 "PID 1"

# Files of other container IDs are written and removed again, with --rm and with rm.
assert_eq "$(as_user "$with_range" run --rm busybox sh -c 'touch /f && chown 5:5 /f && mkdir -p /d/e && chown -R 7 /d && stat -c %u /f')" 5 "chown inside the range"
as_user "$with_range" run --name keep busybox sh -c 'chown 9 /etc/passwd; touch /x' >/dev/null
as_user "$with_range" rm keep >/dev/null
assert_eq "$(ls "$WORK/store-$with_range/containers")" "" "rm removed the container, subordinate-ID files included"

# A layer that deletes and hides, unpacked by the user itself: whiteouts as 0:0 devices (which
# Linux lets anyone make since 5.8) and the opaque mark in user.overlay.opaque, read by overlay's
# userxattr mode.
python3 - "$WORK" <<'PY'
import io, json, hashlib, os, sys, tarfile
work = sys.argv[1]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    def add(path, kind="file", data=b""):
        ti = tarfile.TarInfo(path); ti.mtime = 0
        if kind == "dir": ti.type = tarfile.DIRTYPE; ti.mode = 0o755
        else: ti.size = len(data)
        t.addfile(ti, io.BytesIO(data) if data else None)
    add("bin", "dir"); add("bin/.wh.vi")
    add("etc", "dir"); add("etc/.wh..wh..opq"); add("etc/only", data=b"only\n")
upper = buf.getvalue()
base = open(os.path.join(work, "busybox.tar"), "rb").read()
ids = [hashlib.sha256(b).hexdigest() for b in (base, upper)]
config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + i for i in ids]}}
with tarfile.open(os.path.join(work, "layered.tar"), "w") as t:
    def put(name, data):
        ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    put("config.json", json.dumps(config).encode())
    put("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["layered:1"],
                                      "Layers": [ids[0] + ".tar", ids[1] + ".tar"]}]).encode())
    put(ids[0] + ".tar", base); put(ids[1] + ".tar", upper)
PY
chmod 644 "$WORK/layered.tar"
as_user "$with_range" load -i "$WORK/layered.tar" >/dev/null
assert_eq "$(as_user "$with_range" run --rm layered:1 sh -c 'ls /etc; ls /bin/vi 2>&1 || true')" \
  "$(printf 'hostname\nhosts\nonly\nresolv.conf\nls: /bin/vi: No such file or directory')" \
  "the upper layer's whiteout and opaque directory apply rootless"

# Without a range: only the caller's own ID is mapped.
out=$(as_user "$without_range" run --rm busybox sh -c 'id -u; cat /proc/self/uid_map | wc -l; chown 5 /etc/passwd 2>&1 || echo refused')
assert_eq "$(sed -n 1,2p <<<"$out" | tr '\n' ' ')" "0 1 " "a single-ID map"
assert_contains "$out" refused "IDs outside the map cannot be used"

# A limit that needs a cgroup the user may not write is refused, not ignored.
rc=0
as_user "$with_range" run --rm -m 32m busybox true >"$WORK/out" 2>"$WORK/err" || rc=$?
assert_eq "$rc" 125 "--memory refused rootless"
assert_contains "$(cat "$WORK/err")" "kiln: error: --memory: no writable memory cgroup controller" "the refusal says why"
note "ok"
