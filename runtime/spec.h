// The OCI runtime-spec document (config.json) kiln hands to its sandbox, and that `kiln bundle`
// writes for runc: Docker's defaults for namespaces, mounts, masked and read-only paths and
// capabilities, which `kiln run` then fills with the image's process and the user's flags.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/id_map.h"

namespace kiln::runtime {

// The runtime-spec version kiln writes.
inline constexpr const char* kOciVersion = "1.0.2";

// Docker's masked and read-only paths (moby's oci.DefaultSpec).
std::vector<std::string> default_masked_paths();
std::vector<std::string> default_readonly_paths();

// A spec with Docker's defaults and no process arguments yet: root at `root_path` (relative to
// the bundle, as runc expects "rootfs"), new mount, PID, UTS, IPC and network namespaces,
// /proc, /dev (tmpfs with /dev/pts, /dev/shm, /dev/mqueue) and read-only /sys, the default
// capabilities for every set but inheritable and ambient, no_new_privs off (Docker's default),
// process as root in "/" with PATH set.
nlohmann::json default_spec(const std::string& root_path);

// Adds the user namespace with these maps (rootless): each is {containerID, hostID, size}.
void add_user_namespace(nlohmann::json& spec, const nlohmann::json& uid_mappings,
                        const nlohmann::json& gid_mappings);

// Rootless ID maps for one of /etc/subuid or /etc/subgid: container ID 0 is the caller's own ID;
// 1..N are the caller's subordinate range when the file gives it one (what podman does), so that
// an image's other owners stay apart. Without a range, only the single own-ID map.
nlohmann::json rootless_id_mappings(const char* file, uint32_t own_id);

// The ID map of these spec maps (arrays of {containerID, hostID, size}), for writing a user
// namespace's files with the IDs it shows (TarWriteOptions::id_map). Throws InvalidInputError
// naming the map when an entry is not three IDs.
IdMap id_map_of(const nlohmann::json& uid_mappings, const nlohmann::json& gid_mappings);

// The ID map of the spec's user namespace, or nullopt when it has none (the container's IDs are the
// host's). A user namespace without maps gives an empty map: every owner is the overflow ID there.
// Throws InvalidInputError as id_map_of.
std::optional<IdMap> user_namespace_id_map(const nlohmann::json& spec);

// Removes the namespace of this type ("network" for --network host).
void remove_namespace(nlohmann::json& spec, const std::string& type);

// Sets every capability set the process has in a default Docker container: bounding, effective
// and permitted get `capabilities`; inheritable and ambient stay empty (moby since 20.10.14).
void set_capabilities(nlohmann::json& spec, const std::vector<std::string>& capabilities);

}  // namespace kiln::runtime
