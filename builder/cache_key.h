// A build step's cache key: a digest of everything its result depends on, fed as named inputs so
// that a miss can be explained by naming the input that changed.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "layerstore/digest.h"

namespace kiln::builder {

class CacheKey {
 public:
  // `kind` names the step ("run", "copy", ...) and the key format's version.
  explicit CacheKey(std::string_view kind);

  void add(std::string_view name, std::string_view value);
  void add_list(std::string_view name, const std::vector<std::string>& values);

  // The key: sha256 over the kind and every input in order, each length-prefixed so that no two
  // different input lists give the same bytes.
  Digest digest() const;
  const std::vector<std::pair<std::string, std::string>>& inputs() const { return inputs_; }

 private:
  std::vector<std::pair<std::string, std::string>> inputs_;
};

}  // namespace kiln::builder
