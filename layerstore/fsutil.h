// Directory-fd primitives for working inside a root filesystem that an archive controls: paths are
// resolved relative to a root fd and never leave it, nothing is found by joining host paths.
// Shared with runtime, which mounts inside a container's root the same way.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/io.h"

namespace kiln {

// Splits `path` into components, dropping empty ones and `.` and applying `..` lexically.
// Leading `/` is ignored (an absolute name means the root). Returns nullopt when a `..` would
// climb above the root. An empty result names the root itself.
std::optional<std::vector<std::string>> normalize_in_root(std::string_view path);
// The same, except that a `..` at the root stays at the root, as the kernel resolves `/..`
// (Docker's filepath.Clean for WORKDIR and the like).
std::vector<std::string> normalize_clamped(std::string_view path);

// Go's strings.Split(text, sep): every piece, empty ones too ("" gives one empty piece).
std::vector<std::string> split_on(std::string_view text, char separator);

// Components joined with `/` (a path relative to the root; "" for the root itself).
std::string join_components(const std::vector<std::string>& parts, size_t count);
inline std::string join_components(const std::vector<std::string>& parts) {
  return join_components(parts, parts.size());
}

// Opens `relative` (normalized, relative) under `root_dirfd` with `flags` (O_CLOEXEC added).
// Symlinks met on the way are resolved as if `root_dirfd` were `/`, so they never lead out of
// it; pass O_NOFOLLOW to refuse a symlink as the last component. An empty `relative` opens the
// root itself. Returns an invalid Fd with errno set on failure.
Fd open_in_root(int root_dirfd, const std::string& relative, int flags);

// lstat of `name` in `dirfd`; nullopt with errno set when it cannot be stat'ed.
std::optional<struct stat> stat_at(int dirfd, const std::string& name);

// Removes `name` in `dirfd` and, for a directory, everything under it, never following symlinks.
// A missing entry is not an error. Throws SystemError naming `shown` (the path for messages).
// Returns the bytes freed: st_size of the regular files whose last link went.
uint64_t remove_tree_at(int dirfd, const std::string& name, const std::string& shown);

// Names in the directory `dirfd` (not `.` and `..`), in readdir order. Throws SystemError.
std::vector<std::string> list_dir_at(int dirfd, const std::string& shown);
// Sorted names in the directory `path`; none when it does not exist. Throws SystemError.
std::vector<std::string> list_dir(const std::string& path);

// A path through /proc that reaches `name` in `dirfd` without resolving any host path: for the
// l*xattr calls, which have no *at form.
std::string proc_path(int dirfd, const std::string& name);

}  // namespace kiln
