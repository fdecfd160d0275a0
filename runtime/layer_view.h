// The merged view of overlay-style layer directories (whiteouts as 0:0 character devices, opaque
// directories marked by the trusted. or user.overlay.opaque xattr), read as overlayfs reads them,
// without mounting anything: what a container's lower layers show it.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "layerstore/io.h"

namespace kiln::runtime {

// True for overlayfs's whiteout: a character device 0:0.
bool is_whiteout(const struct stat& st);
// True when the directory open at `dirfd` hides what lower layers hold at its path.
bool is_opaque_dir(int dirfd);

class LayerView {
 public:
  // `dirs_top_first`: the layer directories, the topmost first. Throws SystemError when one
  // cannot be opened.
  explicit LayerView(const std::vector<std::string>& dirs_top_first);

  // lstat of the entry at `parts` (path components from the root) in the merged view; nullopt when
  // the view has nothing there: never created, whited out, or hidden by an opaque directory or a
  // non-directory in a higher layer. The root itself (empty `parts`) is the top layer's root.
  std::optional<struct stat> lookup(const std::vector<std::string>& parts) const;

  // The names in the directory at `parts` of the merged view, sorted by bytes; empty when there is
  // no directory there.
  std::vector<std::string> list(const std::vector<std::string>& parts) const;

  // Like lookup, with the index (0 = top) of the layer that holds the entry.
  std::optional<std::pair<size_t, struct stat>> locate(const std::vector<std::string>& parts) const;
  // The directory of layer `index` (0 = top), open for reading.
  int layer_fd(size_t index) const { return layers_.at(index).get(); }
  size_t layer_count() const { return layers_.size(); }

 private:
  enum class Found { Missing, Hidden, Entry };
  struct Step {
    Found found = Found::Missing;
    struct stat st {};
    bool stop_below = false;  // an opaque directory on the way: lower layers add nothing here
  };
  // Looks `parts` up in one layer.
  Step find_in_layer(int layer_fd, const std::vector<std::string>& parts) const;

  std::vector<Fd> layers_;
};

}  // namespace kiln::runtime
