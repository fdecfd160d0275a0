#include "registry/config.h"

#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "layerstore/errors.h"
#include "layerstore/files.h"

namespace kiln::registry {

std::string config_file_path() {
  if (const char* path = std::getenv("KILN_CONFIG"); path && *path) return path;
  if (::geteuid() == 0) return "/etc/kiln/config.json";
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return std::string(xdg) + "/kiln/config.json";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.config/kiln/config.json";
  return "";
}

RegistryConfig read_registry_config(const std::string& path) {
  RegistryConfig config;
  if (path.empty() || ::access(path.c_str(), F_OK) != 0) return config;
  std::string text = read_file_capped(path, 1 << 20, fmt::format("config file `{}`", path));
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (!doc.is_object()) throw InvalidInputError(fmt::format("config file `{}`: not a JSON object", path));
  auto strings = [&](const char* field, std::vector<std::string>& out) {
    auto it = doc.find(field);
    if (it == doc.end()) return;
    if (!it->is_array())
      throw InvalidInputError(fmt::format("config file `{}`: `{}` is not a list", path, field));
    for (const auto& item : *it) {
      if (!item.is_string())
        throw InvalidInputError(
            fmt::format("config file `{}`: `{}` holds a value that is not a string", path, field));
      out.push_back(item.get<std::string>());
    }
  };
  strings("registry-mirrors", config.mirrors);
  strings("insecure-registries", config.insecure_registries);
  return config;
}

std::string mirror_host(const std::string& url) {
  std::string host = url;
  if (auto scheme = host.find("://"); scheme != std::string::npos) host = host.substr(scheme + 3);
  if (auto slash = host.find('/'); slash != std::string::npos) host = host.substr(0, slash);
  return host;
}

}  // namespace kiln::registry
