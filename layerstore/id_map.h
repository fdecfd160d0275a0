// The ID maps of a user namespace, as plain data: which host IDs stand for which container IDs.
// A rootless container's files are owned on the host by the IDs its namespace maps to; a layer
// must hold the IDs the container sees, so whatever writes one from such a tree maps them back.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace kiln {

// What the kernel shows inside a user namespace for an ID its maps leave out (overflowuid and
// overflowgid, "nobody"), and so what a layer records for such an owner.
inline constexpr uint32_t kOverflowId = 65534;

// One line of /proc/PID/uid_map (or gid_map): container IDs container..container+size-1 are host
// IDs host..host+size-1.
struct IdRange {
  uint32_t container = 0;
  uint32_t host = 0;
  uint32_t size = 0;
};

struct IdMap {
  std::vector<IdRange> uids;
  std::vector<IdRange> gids;

  // The container ID that the host ID stands for, or kOverflowId when no range holds it.
  uint32_t container_uid(uint32_t host_uid) const {
    return to_container(uids, host_uid).value_or(kOverflowId);
  }
  uint32_t container_gid(uint32_t host_gid) const {
    return to_container(gids, host_gid).value_or(kOverflowId);
  }

  // The container ID of `host` in the first range that holds it; nullopt when none does.
  static std::optional<uint32_t> to_container(std::span<const IdRange> ranges, uint32_t host) {
    for (const IdRange& r : ranges) {
      // In 64 bits: host + size may pass 2^32 - 1.
      if (host >= r.host && uint64_t{host} < uint64_t{r.host} + r.size) return r.container + (host - r.host);
    }
    return std::nullopt;
  }
};

}  // namespace kiln
