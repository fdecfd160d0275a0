#include "runtime/spec.h"

#include <pwd.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "runtime/capabilities.h"

namespace kiln::runtime {
namespace {

constexpr uint64_t kMaxIdFileBytes = 1 << 20;

// The subordinate range of /etc/subuid or /etc/subgid for this user, as newuidmap reads them.
std::optional<std::pair<uint64_t, uint64_t>> subordinate_range(const char* file, uint32_t id) {
  std::string text;
  try {
    text = read_file_capped(file, kMaxIdFileBytes, file);
  } catch (const Error&) {
    return std::nullopt;
  }
  std::string name;
  if (passwd* entry = ::getpwuid(id)) name = entry->pw_name;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    size_t first = line.find(':');
    size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    std::string who = line.substr(0, first);
    if (who != name && who != std::to_string(id)) continue;
    try {
      return std::make_pair(std::stoull(line.substr(first + 1, second - first - 1)),
                            std::stoull(line.substr(second + 1)));
    } catch (const std::exception&) {
      continue;  // a malformed line is newuidmap's business to refuse; keep looking
    }
  }
  return std::nullopt;
}

std::vector<IdRange> id_ranges(const nlohmann::json& mappings, const char* what) {
  std::vector<IdRange> ranges;
  if (mappings.is_null()) return ranges;
  auto id = [&](const nlohmann::json& entry, const char* key) {
    auto it = entry.find(key);
    // Parsed text gives unsigned numbers, a spec built in C++ from int signed ones: both are IDs.
    bool valid = it != entry.end() && it->is_number_integer() &&
                 (it->is_number_unsigned() ? it->get<uint64_t>() <= UINT32_MAX
                                           : it->get<int64_t>() >= 0 && it->get<int64_t>() <= UINT32_MAX);
    if (!valid)
      throw InvalidInputError(fmt::format("{}: entry {}: {} is not an ID", what, entry.dump(), key));
    return it->get<uint32_t>();
  };
  if (!mappings.is_array()) throw InvalidInputError(fmt::format("{}: not an array", what));
  for (const auto& entry : mappings) {
    if (!entry.is_object())
      throw InvalidInputError(fmt::format("{}: entry {} is not an object", what, entry.dump()));
    ranges.push_back(IdRange{id(entry, "containerID"), id(entry, "hostID"), id(entry, "size")});
  }
  return ranges;
}

}  // namespace

nlohmann::json rootless_id_mappings(const char* file, uint32_t own_id) {
  nlohmann::json mappings = nlohmann::json::array({{{"containerID", 0}, {"hostID", own_id}, {"size", 1}}});
  if (auto range = subordinate_range(file, own_id)) {
    mappings.push_back({{"containerID", 1}, {"hostID", range->first}, {"size", range->second}});
  }
  return mappings;
}

IdMap id_map_of(const nlohmann::json& uid_mappings, const nlohmann::json& gid_mappings) {
  return IdMap{id_ranges(uid_mappings, "uidMappings"), id_ranges(gid_mappings, "gidMappings")};
}

std::optional<IdMap> user_namespace_id_map(const nlohmann::json& spec) {
  auto linux_section = spec.find("linux");
  if (linux_section == spec.end() || !linux_section->is_object()) return std::nullopt;
  auto namespaces = linux_section->find("namespaces");
  if (namespaces == linux_section->end() || !namespaces->is_array()) return std::nullopt;
  bool has_user = std::any_of(namespaces->begin(), namespaces->end(), [](const nlohmann::json& ns) {
    return ns.is_object() && ns.contains("type") && ns["type"] == "user";
  });
  if (!has_user) return std::nullopt;
  return id_map_of(linux_section->value("uidMappings", nlohmann::json()),
                   linux_section->value("gidMappings", nlohmann::json()));
}

std::vector<std::string> default_masked_paths() {
  return {"/proc/asound",
          "/proc/acpi",
          "/proc/kcore",
          "/proc/keys",
          "/proc/latency_stats",
          "/proc/timer_list",
          "/proc/timer_stats",
          "/proc/sched_debug",
          "/proc/scsi",
          "/sys/firmware",
          "/sys/devices/virtual/powercap"};
}

std::vector<std::string> default_readonly_paths() {
  return {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
}

nlohmann::json default_spec(const std::string& root_path) {
  using nlohmann::json;
  auto mount = [](const char* destination, const char* type, const char* source, json options) {
    return json{
        {"destination", destination}, {"type", type}, {"source", source}, {"options", std::move(options)}};
  };
  json spec = {
      {"ociVersion", kOciVersion},
      {"process",
       {{"terminal", false},
        {"user", {{"uid", 0}, {"gid", 0}}},
        {"args", json::array()},
        {"env", {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
        {"cwd", "/"},
        {"noNewPrivileges", false}}},
      {"root", {{"path", root_path}, {"readonly", false}}},
      {"hostname", ""},
      {"mounts",
       {mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
        mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
        mount("/dev/pts", "devpts", "devpts",
              {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
        mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
        mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
        mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"})}},
      {"linux",
       {{"namespaces",
         {{{"type", "pid"}},
          {{"type", "network"}},
          {{"type", "ipc"}},
          {{"type", "uts"}},
          {{"type", "mount"}}}},
        {"maskedPaths", default_masked_paths()},
        {"readonlyPaths", default_readonly_paths()}}},
  };
  set_capabilities(spec, default_capabilities());
  return spec;
}

void add_user_namespace(nlohmann::json& spec, const nlohmann::json& uid_mappings,
                        const nlohmann::json& gid_mappings) {
  nlohmann::json& linux_section = spec["linux"];
  linux_section["namespaces"].push_back({{"type", "user"}});
  linux_section["uidMappings"] = uid_mappings;
  linux_section["gidMappings"] = gid_mappings;
}

void remove_namespace(nlohmann::json& spec, const std::string& type) {
  nlohmann::json& namespaces = spec["linux"]["namespaces"];
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& ns : namespaces) {
    if (ns.value("type", "") != type) kept.push_back(ns);
  }
  namespaces = std::move(kept);
}

void set_capabilities(nlohmann::json& spec, const std::vector<std::string>& capabilities) {
  spec["process"]["capabilities"] = {{"bounding", capabilities},
                                     {"effective", capabilities},
                                     {"permitted", capabilities},
                                     {"inheritable", nlohmann::json::array()},
                                     {"ambient", nlohmann::json::array()}};
}

}  // namespace kiln::runtime
