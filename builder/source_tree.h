// Where COPY and ADD take files from, read in place: the build context (a host directory, with its
// .dockerignore), a named build context, or a stage or image (its layer snapshots, merged the way
// overlayfs merges them). Paths are relative to the tree's root, `/`-separated, "" for the root,
// and never lead out of it: symlinks are resolved as if the root were `/`.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/io.h"

namespace kiln::runtime {
class LayerView;
}

namespace kiln::builder {

// Which paths of a host directory the build may read (.dockerignore).
struct PathFilter {
  // The path (relative, no leading `/`) is left out.
  std::function<bool(std::string_view path)> excluded;
  // Something under the excluded directory `dir` may still be let in by a later `!` rule.
  std::function<bool(std::string_view dir)> may_include_below;
};

class SourceTree {
 public:
  struct Entry {
    std::string path;
    struct stat st {};
    size_t layer = 0;  // which layer holds it (0: the top, or the directory itself)
    // A directory the filter leaves out, there only as the way to what a later `!` rule lets in
    // (as in the context BuildKit receives, which holds the directories above every file it sends).
    bool excluded = false;
  };

  // A host directory, filtered. Throws SystemError when it cannot be opened.
  static std::shared_ptr<SourceTree> directory(const std::string& dir, PathFilter filter = {});
  // Layer snapshot directories, the top one first (empty: an empty tree, FROM scratch).
  static std::shared_ptr<SourceTree> layers(const std::vector<std::string>& dirs_top_first);

  ~SourceTree();
  SourceTree(const SourceTree&) = delete;
  SourceTree& operator=(const SourceTree&) = delete;

  // The host directory for a directory tree; empty for layers.
  const std::string& host_dir() const { return host_dir_; }

  // lstat of `path` (normalized, symlinks not followed); nullopt when the tree has nothing there
  // or (when `filtered`) the filter leaves it out, unless it is a directory a later `!` rule
  // reaches into (then marked `excluded`).
  std::optional<Entry> lookup(const std::string& path, bool filtered = true) const;
  // The names in the directory `path` that the filter lets through, sorted by bytes.
  std::vector<std::string> list(const std::string& path) const;
  // What list() names, with each one's lstat (as lookup() gives it), sorted by name: for a host
  // directory one open of `path` and one fstatat per name, where list() and a lookup() per name
  // resolve the path again for every name.
  std::vector<Entry> entries(const std::string& path) const;
  // `path` with every symlink on the way resolved inside the tree (the last component's too when
  // `follow_last`), normalized; nullopt when a component is missing. Throws InvalidInputError on a
  // symlink loop.
  std::optional<std::string> resolve(std::string_view path, bool follow_last) const;
  // As resolve(path, true), except that a missing component does not end the walk: it is taken
  // as a directory still to be made (containerd's fs.RootPath, which BuildKit resolves a COPY's
  // destination with), so `/link/new/dir` goes where `link` points.
  std::string resolve_for_write(std::string_view path) const;
  // Opens a regular file for reading. Throws SystemError.
  Fd open_file(const Entry& entry) const;
  std::string read_link(const Entry& entry) const;

  // Whether the filter leaves `path` out, and whether a walk must still look under an excluded
  // directory.
  bool excluded(std::string_view path) const;
  bool may_include_below(std::string_view dir) const;

 private:
  SourceTree() = default;
  std::optional<std::string> resolve_walk(std::string_view path, bool follow_last, bool missing_ok) const;

  std::string host_dir_;
  Fd root_;                                     // the directory tree's root
  std::unique_ptr<runtime::LayerView> layers_;  // or the layers
  bool empty_ = false;
  PathFilter filter_;
};

// Splits on `/`, dropping empty and `.` components and applying `..` without climbing above the
// root; joined again with `/`.
std::string clean_relative(std::string_view path);
// The parent of a cleaned relative path ("" for a top-level name) and its last component.
std::string parent_of(const std::string& path);
std::string base_of(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);

}  // namespace kiln::builder
