#include "runtime/layer_view.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <set>

#include "layerstore/errors.h"
#include "layerstore/fsutil.h"

namespace kiln::runtime {

bool is_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

bool is_opaque_dir(int dirfd) {
  // Rootless overlay (userxattr) keeps its marks under user.; a root mount under trusted.
  for (const char* name : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
    char value[2] = {};
    if (::fgetxattr(dirfd, name, value, sizeof value) == 1 && value[0] == 'y') return true;
  }
  return false;
}

LayerView::LayerView(const std::vector<std::string>& dirs_top_first) {
  for (const std::string& dir : dirs_top_first) layers_.push_back(open_or_throw(dir, O_RDONLY | O_DIRECTORY));
}

LayerView::Step LayerView::find_in_layer(int layer_fd, const std::vector<std::string>& parts) const {
  Step step;
  Fd held;
  int dir = layer_fd;
  if (is_opaque_dir(dir)) step.stop_below = true;
  if (parts.empty()) {
    if (::fstat(dir, &step.st) != 0) throw_errno("stat a layer root");
    step.found = Found::Entry;
    return step;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    auto st = stat_at(dir, parts[i]);
    if (!st) {
      if (errno != ENOENT && errno != ENOTDIR) throw_errno(fmt::format("stat `{}` in a layer", parts[i]));
      step.found = Found::Missing;
      return step;
    }
    if (is_whiteout(*st)) {
      step.found = Found::Hidden;
      return step;
    }
    if (i + 1 == parts.size()) {
      step.found = Found::Entry;
      step.st = *st;
      if (S_ISDIR(st->st_mode)) {
        Fd last(::openat(dir, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (last.valid() && is_opaque_dir(last.get())) step.stop_below = true;
      }
      return step;
    }
    if (!S_ISDIR(st->st_mode)) {
      // A file where the path needs a directory hides whatever lower layers hold below it.
      step.found = Found::Hidden;
      return step;
    }
    Fd next(::openat(dir, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) throw_errno(fmt::format("open `{}` in a layer", parts[i]));
    if (is_opaque_dir(next.get())) step.stop_below = true;
    held = std::move(next);
    dir = held.get();
  }
  return step;  // not reached: the loop returns at the last component
}

std::optional<struct stat> LayerView::lookup(const std::vector<std::string>& parts) const {
  auto found = locate(parts);
  if (!found) return std::nullopt;
  return found->second;
}

std::optional<std::pair<size_t, struct stat>> LayerView::locate(const std::vector<std::string>& parts) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    Step step = find_in_layer(layers_[i].get(), parts);
    if (step.found == Found::Entry) return std::make_pair(i, step.st);
    if (step.found == Found::Hidden || step.stop_below) return std::nullopt;
  }
  return std::nullopt;
}

std::vector<std::string> LayerView::list(const std::vector<std::string>& parts) const {
  std::set<std::string> seen;     // every name met, whiteouts included: lower layers cannot add them
  std::set<std::string> visible;  // the names the view shows
  bool any_dir = false;
  for (const Fd& layer : layers_) {
    Step step = find_in_layer(layer.get(), parts);
    if (step.found == Found::Hidden) break;
    if (step.found == Found::Entry) {
      if (!S_ISDIR(step.st.st_mode)) break;  // a non-directory here hides the layers below
      any_dir = true;
      std::string path = join_components(parts);
      Fd dir = open_in_root(layer.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!dir.valid()) throw_errno(fmt::format("open `/{}` in a layer", path));
      for (std::string& name : list_dir_at(dir.get(), "/" + path)) {
        if (!seen.insert(name).second) continue;
        auto st = stat_at(dir.get(), name);
        if (st && !is_whiteout(*st)) visible.insert(std::move(name));
      }
    }
    if (step.stop_below) break;
  }
  if (!any_dir) return {};
  return {visible.begin(), visible.end()};
}

}  // namespace kiln::runtime
