// The content digests of a host directory's files (the build context), remembered between builds
// by path, size, mtime, ctime and inode, as BuildKit's checksum cache does: a rebuild whose context
// did not change reads no file, it only stats them. Kept in the store, one file per directory.
#pragma once

#include <sys/stat.h>

#include <array>
#include <mutex>
#include <string>
#include <unordered_map>

#include "layerstore/digest.h"

namespace kiln::builder {

class ChecksumCache {
 public:
  // `file` holds the cache (created on save); `root` is the directory whose files it describes.
  ChecksumCache(std::string file, std::string root);

  // The sha256 of the regular file at `path` (relative to the root) whose lstat is `st`, read from
  // `fd` only when the cache has nothing for this path with this size, mtime, ctime and inode.
  // Safe from several threads.
  Digest file_digest(const std::string& path, const struct stat& st, int fd);
  // As file_digest, opening the file only when it must be read.
  template <typename Open>
  Digest file_digest_lazy(const std::string& path, const struct stat& st, Open&& open) {
    if (auto known = lookup(path, st)) return *known;
    return file_digest(path, st, open().get());
  }
  std::optional<Digest> lookup(const std::string& path, const struct stat& st);

  // Writes the cache back when it changed (atomically; a lost update only costs a re-read).
  void save();

 private:
  // 64 bytes a file besides its path: a context of 100,000 files costs a few megabytes.
  struct Entry {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    uint64_t inode = 0;
    std::array<unsigned char, 32> digest{};
  };
  void load();

  std::string file_;
  std::string root_;
  std::mutex mutex_;
  bool loaded_ = false;
  bool dirty_ = false;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace kiln::builder
