#!/usr/bin/env bash
# kiln run --memory/--pids-limit/--cpus: limits applied through the host's cgroups (v1 or v2),
# enforced on the process, refused clearly when they cannot be, and nothing left behind.
source "$(dirname "$0")/lib.sh"
need_root_sandbox
busybox_image
# A host whose cgroups kiln may not write (no delegation, v2's no-internal-processes rule) refuses
# every limit with its reason: that refusal is the behaviour there, and this scenario cannot run.
if ! probe=$(kiln run --rm -m 64m --pids-limit 50 busybox true 2>&1); then
  skip "this host refuses cgroup limits: $probe"
fi
cgroup_dirs() { find /sys/fs/cgroup -maxdepth 6 -type d -name 'kiln' 2>/dev/null | sort; }
before=$(cgroup_dirs)

# A process allocating past --memory is killed by the kernel (137, as Docker reports an OOM kill
# of PID 1).
rc=0
kiln run --rm -m 32m busybox sh -c 'exec tail /dev/zero' >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 137 "the memory limit killed the allocating process"
assert_eq "$(kiln run --rm -m 64m busybox sh -c 'head -c 8m /dev/zero | wc -c')" 8388608 "under the limit it runs"

# --pids-limit: forks past the limit fail.
out=$(kiln run --rm --pids-limit 5 busybox sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 2 & done 2>&1; wait' 2>&1 || true)
assert_contains "$out" "can't fork" "forks past --pids-limit fail"

# --cpus within the host's CPUs runs; beyond them it is refused before anything runs.
assert_eq "$(kiln run --rm --cpus 0.5 busybox echo ok)" ok "--cpus 0.5"
expect_fail 125 "range of CPUs is from 0.01" kiln run --rm --cpus 999 busybox true
expect_fail 125 "minimum memory limit allowed is 6MB" kiln run --rm -m 1m busybox true
expect_fail 125 "invalid size" kiln run --rm -m lots busybox true

# No cgroup of kiln's is left.
assert_eq "$(cgroup_dirs)" "$before" "cgroups removed"
note "ok"
