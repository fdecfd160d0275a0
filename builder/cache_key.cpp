#include "builder/cache_key.h"

#include <fmt/format.h>

namespace kiln::builder {

namespace {
// Raised whenever what a step produces for the same inputs changes, so old records stop matching.
constexpr std::string_view kKeyVersion = "kiln-build-cache-1";
}  // namespace

CacheKey::CacheKey(std::string_view kind) {
  inputs_.emplace_back(std::string(kKeyVersion), std::string(kind));
}

void CacheKey::add(std::string_view name, std::string_view value) {
  inputs_.emplace_back(std::string(name), std::string(value));
}

void CacheKey::add_list(std::string_view name, const std::vector<std::string>& values) {
  std::string joined;
  for (const std::string& value : values) joined += fmt::format("{}:{};", value.size(), value);
  add(name, joined);
}

Digest CacheKey::digest() const {
  Sha256 hash;
  for (const auto& [name, value] : inputs_) {
    std::string framed = fmt::format("{}:{}={}:", name.size(), name, value.size());
    hash.update(as_bytes(framed));
    hash.update(as_bytes(value));
  }
  return hash.finish();
}

}  // namespace kiln::builder
