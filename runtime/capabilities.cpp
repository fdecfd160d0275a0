#include "runtime/capabilities.h"

#include <fmt/format.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "layerstore/errors.h"

namespace kiln::runtime {
namespace {

// Index = the kernel's capability number.
constexpr std::array<std::string_view, 41> kCapabilityNames = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

// The kernel's highest capability; a newer table entry than the running kernel knows is left out,
// as Docker leaves it out (the bounding-set drop would fail on it).
int last_capability() {
  static const int last = [] {
    for (int cap = static_cast<int>(kCapabilityNames.size()) - 1; cap > 0; --cap) {
      if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0) return cap;
    }
    return 0;
  }();
  return last;
}

std::string normalize(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (upper == "ALL" || upper.starts_with("CAP_")) return upper;
  return "CAP_" + upper;
}

std::vector<std::string> normalize_all(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const std::string& name : names) {
    std::string normal = normalize(name);
    if (normal != "ALL" && capability_number(normal) < 0) {
      throw UsageError(fmt::format("unknown capability: `{}`", name));
    }
    out.push_back(std::move(normal));
  }
  return out;
}

bool contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

std::vector<std::string> all_capabilities() {
  std::vector<std::string> out;
  for (int cap = 0; cap <= last_capability(); ++cap) {
    // Only what kiln itself may grant: a capability outside its own bounding set (CAP_SYS_RESOURCE
    // on some CI hosts) cannot be given, and moby leaves such ones out of "all" too.
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) out.emplace_back(kCapabilityNames[cap]);
  }
  return out;
}

std::vector<std::string> default_capabilities() {
  return {"CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
          "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
          "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
          "CAP_KILL",    "CAP_AUDIT_WRITE"};
}

int capability_number(std::string_view name) {
  auto it = std::find(kCapabilityNames.begin(), kCapabilityNames.end(), name);
  return it == kCapabilityNames.end() ? -1 : static_cast<int>(it - kCapabilityNames.begin());
}

std::vector<std::string> resolve_capabilities(const std::vector<std::string>& base,
                                              const std::vector<std::string>& add,
                                              const std::vector<std::string>& drop, bool privileged) {
  if (privileged) return all_capabilities();
  std::vector<std::string> adds = normalize_all(add);
  std::vector<std::string> drops = normalize_all(drop);
  std::vector<std::string> out;
  auto append_unique = [&](const std::string& cap) {
    if (!contains(out, cap)) out.push_back(cap);
  };
  if (contains(adds, "ALL")) {
    for (const std::string& cap : all_capabilities()) {
      if (!contains(drops, cap)) append_unique(cap);
    }
  } else if (contains(drops, "ALL")) {
    for (const std::string& cap : adds) append_unique(cap);
  } else {
    for (const std::string& cap : base) {
      if (!contains(drops, cap)) append_unique(cap);
    }
    for (const std::string& cap : adds) append_unique(cap);
  }
  return out;
}

std::uint64_t capability_mask(const std::vector<std::string>& names) {
  std::uint64_t mask = 0;
  for (const std::string& name : names) {
    if (int cap = capability_number(name); cap >= 0) mask |= std::uint64_t{1} << cap;
  }
  return mask;
}

int drop_bounding_set(const CapabilitySets& sets) {
  std::uint64_t bounding = capability_mask(sets.bounding);
  for (int cap = 0; cap <= last_capability(); ++cap) {
    if ((bounding >> cap) & 1) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return errno;
  }
  return 0;
}

int apply_capabilities(const CapabilitySets& sets) {
  // libcap is not among the project's libraries; the system call is small enough to make directly.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  auto fill = [&](std::uint64_t effective, std::uint64_t permitted, std::uint64_t inheritable) {
    for (int half = 0; half < 2; ++half) {
      data[half].effective = static_cast<std::uint32_t>(effective >> (32 * half));
      data[half].permitted = static_cast<std::uint32_t>(permitted >> (32 * half));
      data[half].inheritable = static_cast<std::uint32_t>(inheritable >> (32 * half));
    }
  };
  fill(capability_mask(sets.effective), capability_mask(sets.permitted), capability_mask(sets.inheritable));
  if (::syscall(SYS_capset, &header, data.data()) != 0) return errno;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return errno;
  for (const std::string& name : sets.ambient) {
    int cap = capability_number(name);
    if (cap < 0) continue;
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) return errno;
  }
  return 0;
}

}  // namespace kiln::runtime
