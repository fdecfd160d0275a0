// kiln's config file, for what it says of registries. It uses the names of Docker's daemon.json:
//   {"registry-mirrors": ["https://mirror.example.com"], "insecure-registries": ["10.0.0.0/8", "r:5000"]}
// Path: $KILN_CONFIG, else /etc/kiln/config.json for root, else $XDG_CONFIG_HOME/kiln/config.json
// (~/.config/kiln/config.json). A missing file is an empty one.
#pragma once

#include <string>
#include <vector>

namespace kiln::registry {

struct RegistryConfig {
  std::vector<std::string> mirrors;              // registry-mirrors: hosts tried first for docker.io
  std::vector<std::string> insecure_registries;  // insecure-registries
};

std::string config_file_path();
// Throws InvalidInputError naming the file and the field when it is malformed.
RegistryConfig read_registry_config(const std::string& path);

// "https://mirror.gcr.io/" → "mirror.gcr.io": the host[:port] a mirror URL names.
std::string mirror_host(const std::string& url);

}  // namespace kiln::registry
