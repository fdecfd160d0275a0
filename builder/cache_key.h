// A build step's cache key: a digest of everything its result depends on, fed as named inputs so
// that a miss can be explained by naming the input that changed.
#pragma once

#include <nlohmann/json.hpp>
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
  // The inputs by name, lists kept as lists and a name given twice as a list of its values: what a
  // later miss is explained against (explain_miss).
  const nlohmann::json& inputs() const { return named_; }

 private:
  std::vector<std::pair<std::string, std::string>> inputs_;
  nlohmann::json named_ = nlohmann::json::object();
};

// Why a step's key is not the one it had when it was last built, from the two inputs() records and
// the names of the build args in scope: "src/main.c changed", "build arg VERSION changed", "the
// command changed", "an earlier step changed". `files` are the COPY sources' per-file digests, now
// and then (path to digest), when the step has them.
std::string explain_miss(const nlohmann::json& before, const nlohmann::json& now,
                         const std::vector<std::string>& arg_names);

}  // namespace kiln::builder
