// Resource limits for a container (`kiln run --memory 64m --cpus 0.5 --pids-limit 20`), parsed with
// Docker's syntax and applied as Docker/runc apply them: through cgroup v2 where the host has the
// controllers there, else through the cgroup v1 hierarchies. A requested limit is applied or create()
// throws; it is never silently dropped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/io.h"

namespace kiln::runtime {

struct ResourceLimits {
  std::optional<int64_t> memory_bytes;                 // memory.max / memory.limit_in_bytes
  std::optional<int64_t> cpu_quota_us, cpu_period_us;  // set together (cpu.max / cpu.cfs_*)
  std::optional<int64_t> pids;                         // pids.max
  bool empty() const { return !memory_bytes && !cpu_quota_us && !pids; }
};

// ---- Parsers (Docker's syntax; every error is a UsageError with the whole message shown below) ----

// Docker's RAMInBytes (go-units): a decimal number, an optional space, then an optional unit
// k/m/g/t/p (powers of 1024), case-insensitive, optionally followed by "b" or "ib": "64m", "64MB",
// "1.5g", "512 KiB", "100b", "1048576". Fractions are truncated to whole bytes.
// Throws UsageError "invalid size: `abc`" (no number, a negative one, or one beyond int64) or
// "invalid suffix: `x`". Go's exponent and hexadecimal float forms are not accepted.
int64_t parse_memory_size(std::string_view text);

// --memory: parse_memory_size, 0 meaning no limit (nullopt), and Docker's minimum:
// "--memory: minimum memory limit allowed is 6MB". Size errors read "--memory: invalid size: `x`".
std::optional<int64_t> parse_memory_limit(std::string_view text);

// The CPUs this process may run on (sched_getaffinity, as Docker's sysinfo.NumCPU counts them).
int host_cpu_count();

struct CpuBandwidth {
  int64_t quota_us;
  int64_t period_us;
};
// --cpus as Docker converts NanoCPUs: period 100000 µs, quota = cpus × period ("0.5" → 50000/100000).
// "0" means no limit (nullopt). Throws UsageError:
//   "--cpus: failed to parse `abc` as a rational number"
//   "--cpus: value is too precise" (finer than 1e-9, as Docker)
//   "--cpus: range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
// The lower bound 0.01 (a quota of 1000 µs, the kernel's minimum) is checked here where Docker leaves
// it to the kernel's EINVAL; Docker's message names the same bound.
std::optional<CpuBandwidth> parse_cpus(std::string_view text, int host_cpus);

// --pids-limit: a decimal integer; zero or negative means unlimited (nullopt), as Docker.
// Throws UsageError "--pids-limit: invalid number: `abc`".
std::optional<int64_t> parse_pids_limit(std::string_view text);

// ---- Detection ----

enum class CgroupMode {
  None,     // no cgroup file system mounted
  Unified,  // cgroup2 at /sys/fs/cgroup: all controllers there
  Hybrid,   // v1 controller hierarchies, plus a v2 hierarchy at /sys/fs/cgroup/unified
  Legacy,   // v1 controller hierarchies only
};

// Where this process sits in each hierarchy. Directories are absolute paths under the mount points.
struct CgroupHost {
  CgroupMode mode = CgroupMode::None;
  // This process's cgroup in the v2 hierarchy ("" when there is none) and the controllers that
  // cgroup may hand to its children (its cgroup.controllers).
  std::string unified_dir;
  std::vector<std::string> unified_controllers;
  // v1 only: controller name ("memory", "cpu", "pids", ...) → this process's cgroup directory in the
  // hierarchy that controller is mounted on (co-mounted controllers share a directory).
  std::map<std::string, std::string> v1_dirs;

  // Whether limits go through v2: Unified mode. Hybrid hosts limit through v1, as runc does.
  bool uses_v2() const { return mode == CgroupMode::Unified; }
  // "" when `controller` can take a limit for children of this process's cgroup, else why not
  // ("no memory controller in `/sys/fs/cgroup/x` (controllers: cpu pids)", "`…` is not writable:
  // Permission denied"). Checks presence and write access, not the v2 no-internal-processes rule,
  // which only the attempt in Cgroup::create() can tell.
  std::string controller_problem(std::string_view controller) const;
};

// The host's mode (statfs of /sys/fs/cgroup, as crun tells them apart) and this process's cgroups
// (/proc/self/mountinfo and /proc/self/cgroup, then cgroup.controllers). Throws SystemError when
// those files cannot be read.
CgroupHost detect_cgroup_host();
// The parsing half of detect_cgroup_host(): mount points from `mountinfo`, paths from `self_cgroup`.
// unified_controllers is left empty (reading it needs the file system).
CgroupHost parse_cgroup_host(CgroupMode mode, std::string_view mountinfo, std::string_view self_cgroup);

// ---- The cgroup of one container ----

// A cgroup `kiln/<container_id>` under this process's own cgroup, holding the container's processes
// until destruction. Move-only; the destructor kills what is left inside and removes the directories.
class Cgroup {
 public:
  // Creates the cgroup and writes every limit, or throws naming the flag and the cause:
  //   "--memory: no writable memory cgroup controller (rootless without cgroup delegation?): …"
  //   "set memory limit: write `/sys/fs/cgroup/memory/kiln/ID/memory.limit_in_bytes`: Permission denied"
  // Whatever was created before the failure is removed again.
  // v2: the needed controllers are enabled in the subtree_control of this process's cgroup and of
  // kiln/ (left enabled afterwards, as crun leaves them); the kernel refuses that with EBUSY when this
  // process's cgroup also holds processes (the no-internal-processes rule) unless it is the root.
  // v1: one directory per needed controller (memory, cpu, pids); never cpuset, freezer, devices.
  // Memory as Docker's default --memory-swap (twice --memory): memory.memsw.limit_in_bytes = 2 × memory
  // on v1 and memory.swap.max = memory on v2, where the kernel accounts swap (else memory alone).
  // Empty limits create nothing: the container stays in kiln's cgroup and the calls below do nothing.
  // The kiln/ parent directory goes with its last container (remove()), so that it never keeps the
  // cgroup kiln runs in from being removed.
  static Cgroup create(const std::string& container_id, const ResourceLimits& limits);
  static Cgroup create(const std::string& container_id, const ResourceLimits& limits, const CgroupHost& host);

  Cgroup(Cgroup&& other) noexcept = default;
  Cgroup& operator=(Cgroup&& other) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  // remove(), any failure ignored: a destructor must not throw.
  ~Cgroup();

  // Moves a process (all its threads) into the cgroup: v2 cgroup.procs, v1 every controller's
  // cgroup.procs. Throws SystemError naming the file.
  void add_process(pid_t pid);

  // The v2 directory, for clone3's CLONE_INTO_CGROUP (the child starts inside, no window outside
  // the limits); nullopt on v1 or when nothing was created. Owned by this object.
  std::optional<int> directory_fd_v2() const;

  // Whether the kernel's OOM killer killed a process in the cgroup: v2 memory.events `oom_kill`,
  // v1 memory.oom_control `oom_kill` (kernel 4.13+; older kernels: `under_oom`). false without a
  // memory limit. memory.failcnt is not used: it counts reclaim at the limit, not kills.
  bool oom_killed() const;

  // The directory holding `controller`'s files ("memory", "cpu", "pids"), "" when there is none.
  std::string directory(std::string_view controller) const;
  // Every directory created (v2: one; v1: one per hierarchy).
  const std::vector<std::string>& directories() const { return dirs_; }

  // Kills what is left inside (v2 cgroup.kill where the kernel has it, else SIGKILL to each pid in
  // cgroup.procs), waits up to 5 s for the cgroup to empty and removes the directories. Throws Error
  // when a directory cannot be removed (a later call tries again); once removed, a call does nothing.
  void remove();

 private:
  Cgroup() = default;

  bool v2_ = false;
  std::vector<std::string> dirs_;                   // in creation order
  std::map<std::string, std::string> controllers_;  // controller → directory
  Fd dir_fd_v2_;
};

}  // namespace kiln::runtime
