#!/usr/bin/env bash
# kiln run: the process inside sees what a Docker container sees — PID 1, its own hostname,
# Docker's default capabilities, masked and read-only paths, Docker's /dev — and exit codes and
# signals come back out.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
busybox_image

# PID 1, hostname = the short container ID, root, in "/".
out=$(kiln run --rm busybox sh -c 'echo $$; hostname; id -u; pwd')
assert_eq "$(sed -n 1p <<<"$out")" 1 "the process is PID 1"
[[ $(sed -n 2p <<<"$out") =~ ^[0-9a-f]{12}$ ]] || fail "hostname is not a short container ID: $out"
assert_eq "$(sed -n 3,4p <<<"$out" | tr '\n' ' ')" "0 / " "root in /"
assert_eq "$(kiln run --rm --hostname box1 busybox hostname)" box1 "--hostname"
assert_eq "$(kiln run --rm --hostname box3 busybox cat /etc/hostname)" box3 "/etc/hostname follows --hostname"

# Docker's default capabilities for root; none effective for another user; the bounding set stays.
status=$(kiln run --rm busybox cat /proc/self/status)
assert_contains "$status" $'CapEff:\t00000000a80425fb' "root's effective capabilities"
assert_contains "$status" $'CapBnd:\t00000000a80425fb' "bounding set"
assert_contains "$status" $'CapInh:\t0000000000000000' "no inheritable capabilities"
status=$(kiln run --rm -u 65534 busybox cat /proc/self/status)
assert_contains "$status" $'CapEff:\t0000000000000000' "a non-root user has no effective capabilities"
status=$(kiln run --rm --cap-drop ALL --cap-add NET_ADMIN busybox cat /proc/self/status)
assert_contains "$status" $'CapEff:\t0000000000001000' "--cap-drop ALL --cap-add NET_ADMIN"
host_bounding=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
assert_contains "$(kiln run --rm --privileged busybox cat /proc/self/status)" "CapEff:	$host_bounding" \
  "--privileged grants every capability kiln has"
expect_fail 125 "unknown capability" kiln run --rm --cap-add SYS_EVERYTHING busybox true

# Docker's default seccomp profile: mode 2, namespaces and mounts refused; off when unconfined or
# privileged; a profile file of the user's own.
assert_contains "$(kiln run --rm busybox cat /proc/self/status)" $'Seccomp:\t2' "seccomp filter installed"
expect_code() { local want=$1 rc=0; shift; "$@" >/dev/null 2>&1 || rc=$?; [[ $rc -eq $want ]] || fail "[$*] exited $rc, not $want"; }
assert_contains "$(kiln run --rm busybox unshare -u true 2>&1 || true)" "Operation not permitted" "unshare refused"
assert_contains "$(kiln run --rm busybox mount -t tmpfs x /mnt 2>&1 || true)" "permission denied" "mount refused"
assert_contains "$(kiln run --rm --security-opt seccomp=unconfined busybox cat /proc/self/status)" $'Seccomp:\t0' "seccomp=unconfined"
assert_contains "$(kiln run --rm --privileged busybox cat /proc/self/status)" $'Seccomp:\t0' "--privileged has no filter"
expect_code 0 kiln run --rm --cap-add SYS_ADMIN busybox unshare -u true
status=$(kiln run --rm --security-opt no-new-privileges busybox cat /proc/self/status)
assert_contains "$status" $'NoNewPrivs:\t1' "no-new-privileges"
cat >"$WORK/deny-mkdir.json" <<'EOF'
{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
EOF
assert_contains "$(kiln run --rm --security-opt "seccomp=$WORK/deny-mkdir.json" busybox mkdir /x 2>&1 || true)" \
  "Permission denied" "a user's profile applies (mkdir gets EACCES)"
echo '{"defaultAction": "SCMP_ACT_MAYBE"}' >"$WORK/bad.json"
expect_fail 125 "bad.json" kiln run --rm --security-opt "seccomp=$WORK/bad.json" busybox true

# Masked paths read empty; read-only paths refuse writes; /sys is read-only.
assert_eq "$(kiln run --rm busybox cat /proc/timer_list | wc -c)" 0 "/proc/timer_list is masked"
assert_eq "$(kiln run --rm busybox sh -c 'ls /sys/firmware | wc -l')" 0 "/sys/firmware is masked"
kiln run --rm busybox sh -c 'echo 1 > /proc/sys/kernel/domainname' 2>/dev/null && fail "/proc/sys is writable"
kiln run --rm busybox touch /sys/kernel/x 2>/dev/null && fail "/sys is writable"
assert_contains "$(kiln run --rm busybox cat /proc/self/mountinfo)" " /proc/sys ro," "/proc/sys mounted read-only"

# Docker's /dev: the six nodes, pts, shm, mqueue; nothing of the host's.
devs=$(kiln run --rm busybox ls /dev | tr '\n' ' ')
assert_eq "$devs" "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero " "/dev"
assert_eq "$(kiln run --rm busybox sh -c 'head -c 4 /dev/zero | od -An -tx1')" " 00 00 00 00" "/dev/zero works"
mounts=$(kiln run --rm busybox cat /proc/self/mounts)
for m in "proc /proc proc" "tmpfs /dev tmpfs" "devpts /dev/pts devpts" "sysfs /sys sysfs ro" "shm /dev/shm tmpfs" "mqueue /dev/mqueue mqueue"; do
  assert_contains "$mounts" "$m" "mount $m"
done
assert_contains "$(kiln run --rm busybox cat /etc/resolv.conf)" "nameserver" "resolv.conf provided"
assert_contains "$(kiln run --rm busybox cat /etc/hosts)" "localhost" "hosts provided"

# Only loopback, up, without --network host; with it, the host's interfaces.
assert_eq "$(kiln run --rm busybox sh -c 'ls /sys/class/net')" lo "only loopback"
assert_contains "$(kiln run --rm busybox ip link show lo)" "UP" "loopback is up"
assert_eq "$(kiln run --rm --network host busybox sh -c 'ls /sys/class/net | sort' | tr '\n' ' ')" \
  "$(ls /sys/class/net | sort | tr '\n' ' ')" "--network host sees the host's interfaces"

# No fd of kiln's reaches the process.
assert_eq "$(kiln run --rm busybox sh -c 'ls /proc/self/fd' 3</dev/null 4</dev/null | sort -n | tr '\n' ' ')" "0 1 2 3 " \
  "only the standard fds (and ls's own directory fd) are open"

# Read-only root, writable tmpfs.
expect_code 1 kiln run --rm --read-only busybox touch /x
expect_code 0 kiln run --rm --read-only --tmpfs /scratch busybox touch /scratch/x
assert_contains "$(kiln run --rm --tmpfs /scratch busybox cat /proc/self/mounts)" "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec" "--tmpfs defaults"

# Bind mounts, :ro enforced.
mkdir -p "$WORK/vol" && echo from-host >"$WORK/vol/f"
assert_eq "$(kiln run --rm -v "$WORK/vol:/data" busybox sh -c 'cat /data/f; echo back > /data/g')" from-host "bind mount visible"
assert_eq "$(cat "$WORK/vol/g")" back "bind mount writable"
expect_code 1 kiln run --rm -v "$WORK/vol:/data:ro" busybox sh -c 'echo x > /data/h'
[[ ! -e $WORK/vol/h ]] || fail ":ro bind mount was written"
expect_fail 125 "named volumes are not supported" kiln run --rm -v myvol:/data busybox true

# Exit codes: the process's, 126 not executable, 127 not found, 128+N for a signal.
expect_code 7 kiln run --rm busybox sh -c 'exit 7'
expect_fail 127 'exec: "nosuchcmd": executable file not found in $PATH' kiln run --rm busybox nosuchcmd
expect_fail 126 'exec: "/etc/passwd": permission denied' kiln run --rm busybox /etc/passwd
expect_code 137 kiln run --rm --init busybox sh -c 'kill -9 $$'

# Signals are forwarded: TERM to a shell that traps it, and through --init to a plain sleep. (kiln
# itself runs in the background, not the shell function, so that the signal reaches kiln.)
"$KILN" run --rm busybox sh -c 'trap "exit 42" TERM; while :; do sleep 0.1; done' &
pid=$!
sleep 1; kill -TERM $pid; rc=0; wait $pid || rc=$?
assert_eq "$rc" 42 "SIGTERM forwarded to the process"
"$KILN" run --rm --init busybox sleep 30 &
pid=$!
sleep 1; kill -INT $pid; rc=0; wait $pid || rc=$?
assert_eq "$rc" 130 "SIGINT forwarded through --init"

# --init reaps orphans: a zombie's parent dies, init collects it.
out=$(kiln run --rm --init busybox sh -c '(sleep 0.2 &) ; sleep 1; ps -o pid,stat,comm | grep -c " Z " || true')
assert_eq "$out" 0 "no zombies under --init"
assert_eq "$(kiln run --rm --init busybox sh -c 'cat /proc/1/comm')" init "--init is PID 1"

# -i passes stdin; without it the process reads nothing.
assert_eq "$(echo piped | kiln run --rm -i busybox cat)" piped "-i"
assert_eq "$(echo piped | kiln run --rm busybox cat)" "" "stdin not attached without -i"

# -t: a pty of the container's own devpts, its exit code passed through; -it takes keyboard input.
if command -v script >/dev/null; then
  rc=0
  out=$(script -qec "$KILN run --rm -t busybox sh -c 'tty; exit 3'" /dev/null) || rc=$?
  assert_eq "$rc" 3 "exit code through -t"
  assert_contains "$out" "/dev/pts/0" "the process's terminal is the container's /dev/pts/0"
  out=$(printf 'echo typed-$((6*7))\nexit\n' | script -qec "$KILN run --rm -it busybox sh" /dev/null)
  assert_contains "$out" "typed-42" "-it: input reaches the shell"
else
  note "no script(1): -t not tested"
fi

# Environment, working directory, user, entrypoint.
out=$(kiln run --rm -e A=1 -e B -w /made/here -u 65534:65534 busybox sh -c 'echo "$A/$B/$HOME"; pwd; id -u; id -g')
assert_eq "$(sed -n 1p <<<"$out")" "1///" "-e A=1 set, -e B (unset on the host) left out, HOME from the passwd entry of 65534"
assert_eq "$(sed -n 2,4p <<<"$out" | tr '\n' ' ')" "/made/here 65534 65534 " "workdir created, user set"
assert_eq "$(kiln run --rm --entrypoint echo busybox hello)" hello "--entrypoint"
expect_fail 125 "unable to find user nosuch" kiln run --rm -u nosuch busybox true

# The host cannot be reached through kiln's own process or descriptors: PID 1 under --init is
# kiln, not dumpable, so /proc/1/exe neither reads nor writes (runc's CVE-2019-5736 class), even
# with every capability the binary is busy; a working directory through /proc/self/fd/N is refused
# (CVE-2024-21626).
out=$(kiln run --rm --init busybox sh -c 'cat /proc/1/exe >/dev/null 2>&1 && echo READ; (echo x >>/proc/1/exe) 2>/dev/null && echo WROTE; true')
assert_eq "$out" "" "/proc/1/exe is out of reach"
out=$(kiln run --rm --init --privileged busybox sh -c '(echo x >>/proc/1/exe) 2>&1 || true')
assert_contains "$out" "Text file busy" "kiln's binary cannot be written through /proc/1/exe"
sha_before=$(sha256sum "$KILN")
for n in 3 4 5 6 7 8 9; do
  rc=0
  kiln run --rm -w "/proc/self/fd/$n" busybox ls / >/dev/null 2>&1 || rc=$?
  assert_eq "$rc" 125 "working directory /proc/self/fd/$n refused"
done
assert_eq "$(sha256sum "$KILN")" "$sha_before" "kiln's binary unchanged"

# Nothing is left mounted on the host.
if grep -q "$KILN_ROOT" /proc/self/mountinfo; then fail "a mount under the store leaked to the host"; fi
note "ok"
