#include "builder/source_tree.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "runtime/layer_view.h"

namespace kiln::builder {

std::string clean_relative(std::string_view path) {
  return join_components(normalize_clamped(path));
}

std::string parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (name.empty()) return dir;
  return dir + "/" + name;
}

std::shared_ptr<SourceTree> SourceTree::directory(const std::string& dir, PathFilter filter) {
  std::shared_ptr<SourceTree> tree(new SourceTree());
  tree->host_dir_ = dir;
  tree->root_ = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  tree->filter_ = std::move(filter);
  return tree;
}

std::shared_ptr<SourceTree> SourceTree::layers(const std::vector<std::string>& dirs_top_first) {
  std::shared_ptr<SourceTree> tree(new SourceTree());
  if (dirs_top_first.empty()) {
    tree->empty_ = true;
  } else {
    tree->layers_ = std::make_unique<runtime::LayerView>(dirs_top_first);
  }
  return tree;
}

SourceTree::~SourceTree() = default;

bool SourceTree::excluded(std::string_view path) const {
  return !path.empty() && filter_.excluded && filter_.excluded(path);
}

bool SourceTree::may_include_below(std::string_view dir) const {
  return filter_.may_include_below && filter_.may_include_below(dir);
}

std::optional<SourceTree::Entry> SourceTree::lookup(const std::string& path, bool filtered) const {
  if (filtered && excluded(path)) {
    // Still there as a directory when something under it is let in again.
    if (!may_include_below(path)) return std::nullopt;
    std::optional<Entry> dir = lookup(path, false);
    if (!dir || !S_ISDIR(dir->st.st_mode)) return std::nullopt;
    dir->excluded = true;
    return dir;
  }
  if (empty_) {
    if (!path.empty()) return std::nullopt;
    Entry root{"", {}, 0};
    root.st.st_mode = S_IFDIR | 0755;
    return root;
  }
  if (layers_) {
    auto found = layers_->locate(normalize_clamped(path));
    if (!found) return std::nullopt;
    return Entry{path, found->second, found->first};
  }
  Entry entry{path, {}, 0};
  if (path.empty()) {
    if (::fstat(root_.get(), &entry.st) != 0) throw_errno(fmt::format("stat `{}`", host_dir_));
    return entry;
  }
  // The parent through the root's fd, refusing symlinks on the way: `path` is resolved already.
  Fd parent = open_in_root(root_.get(), parent_of(path), O_PATH | O_DIRECTORY | O_NOFOLLOW);
  if (!parent.valid()) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return std::nullopt;
    throw_errno(fmt::format("open `{}` in `{}`", parent_of(path), host_dir_));
  }
  if (::fstatat(parent.get(), base_of(path).c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno(fmt::format("stat `{}` in `{}`", path, host_dir_));
  }
  return entry;
}

std::vector<std::string> SourceTree::list(const std::string& path) const {
  std::vector<std::string> names;
  if (empty_) return names;
  if (layers_) {
    names = layers_->list(normalize_clamped(path));
  } else {
    Fd dir = open_in_root(root_.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!dir.valid()) {
      if (errno == ENOENT || errno == ENOTDIR) return names;
      throw_errno(fmt::format("open `{}` in `{}`", path, host_dir_));
    }
    names = list_dir_at(dir.get(), path.empty() ? host_dir_ : path);
    std::sort(names.begin(), names.end());
  }
  if (filter_.excluded) {
    std::erase_if(names, [&](const std::string& name) {
      std::string child = join_path(path, name);
      return excluded(child) && !may_include_below(child);
    });
  }
  return names;
}

std::vector<SourceTree::Entry> SourceTree::entries(const std::string& path) const {
  std::vector<Entry> out;
  if (empty_) return out;
  if (layers_) {
    for (std::string& name : list(path)) {
      std::string child = join_path(path, name);
      if (std::optional<Entry> entry = lookup(child)) out.push_back(std::move(*entry));
    }
    return out;
  }
  Fd dir = open_in_root(root_.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dir.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) return out;
    throw_errno(fmt::format("open `{}` in `{}`", path, host_dir_));
  }
  std::vector<std::string> names = list_dir_at(dir.get(), path.empty() ? host_dir_ : path);
  std::sort(names.begin(), names.end());
  out.reserve(names.size());
  for (std::string& name : names) {
    Entry entry{join_path(path, name), {}, 0};
    if (filter_.excluded && excluded(entry.path)) {
      if (!may_include_below(entry.path)) continue;
      entry.excluded = true;
    }
    if (::fstatat(dir.get(), name.c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed while the build reads the context
      throw_errno(fmt::format("stat `{}` in `{}`", entry.path, host_dir_));
    }
    if (entry.excluded && !S_ISDIR(entry.st.st_mode)) continue;
    out.push_back(std::move(entry));
  }
  return out;
}

std::optional<std::string> SourceTree::resolve(std::string_view path, bool follow_last) const {
  return resolve_walk(path, follow_last, false);
}

std::string SourceTree::resolve_for_write(std::string_view path) const {
  return *resolve_walk(path, true, true);
}

std::optional<std::string> SourceTree::resolve_walk(std::string_view path, bool follow_last,
                                                    bool missing_ok) const {
  std::vector<std::string> todo = normalize_clamped(path);
  std::reverse(todo.begin(), todo.end());
  std::vector<std::string> done;
  int links = 0;
  while (!todo.empty()) {
    std::string part = std::move(todo.back());
    todo.pop_back();
    if (part == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    done.push_back(part);
    bool last = todo.empty();
    if (last && !follow_last) break;
    // Unfiltered: a symlink's own name may be ignored while what it points at is not (BuildKit
    // resolves links in the tree as it is).
    std::optional<Entry> entry = lookup(join_components(done), false);
    if (!entry) {
      if (last) break;  // the caller decides what a missing last component means
      if (missing_ok) continue;
      return std::nullopt;
    }
    if (!S_ISLNK(entry->st.st_mode)) continue;
    if (++links > 255) throw InvalidInputError(fmt::format("`{}`: too many levels of symbolic links", path));
    std::string target = read_link(*entry);
    done.pop_back();
    if (target.starts_with("/")) done.clear();
    std::vector<std::string> parts = split_on(target, '/');
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!it->empty() && *it != ".") todo.push_back(std::move(*it));
    }
  }
  return join_components(done);
}

Fd SourceTree::open_file(const Entry& entry) const {
  int root = layers_ ? layers_->layer_fd(entry.layer) : root_.get();
  Fd fd = open_in_root(root, entry.path, O_RDONLY | O_NOFOLLOW);
  if (!fd.valid()) throw_errno(fmt::format("open `{}`", entry.path));
  return fd;
}

std::string SourceTree::read_link(const Entry& entry) const {
  int root = layers_ ? layers_->layer_fd(entry.layer) : root_.get();
  Fd parent = open_in_root(root, parent_of(entry.path), O_PATH | O_DIRECTORY | O_NOFOLLOW);
  if (!parent.valid()) throw_errno(fmt::format("open the directory of `{}`", entry.path));
  char buffer[4096];
  ssize_t n = ::readlinkat(parent.get(), base_of(entry.path).c_str(), buffer, sizeof buffer);
  if (n < 0) throw_errno(fmt::format("read the link `{}`", entry.path));
  return std::string(buffer, static_cast<size_t>(n));
}

}  // namespace kiln::builder
