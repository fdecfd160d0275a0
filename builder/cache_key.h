// A build step's cache key: a digest of everything its result depends on, fed as named inputs so
// that a miss can be explained by naming the input that changed.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
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

// The files a COPY took, as its key saw them: each path with a digest of what the key took of it.
// Given as a walk so that a context of any size is never held as a list.
using FileVisitor = std::function<void(std::string_view path, std::string_view digest)>;
using FileWalk = std::function<void(const FileVisitor&)>;

struct FileChanges {
  std::vector<std::string> changed, added, removed;
};
// Writes the walk's files to `path` ("path\tdigest" lines), atomically.
void save_files(const std::string& path, const FileWalk& walk);
// The files of `walk` against those `saved` holds (from save_files); nullopt when there is no such
// file. Memory: a pair of 64-bit hashes per saved file, not the paths.
std::optional<FileChanges> compare_files(const std::string& saved, const FileWalk& walk);

// Why a step's key is not the one it had when it was last built, from the two inputs() records, the
// names of the build args in scope and the file changes (when the step has files): "src/main.c
// changed", "build arg VERSION changed", "the command changed", "an earlier step changed".
std::string explain_miss(const nlohmann::json& before, const nlohmann::json& now,
                         const std::vector<std::string>& arg_names, const FileChanges* files);

}  // namespace kiln::builder
