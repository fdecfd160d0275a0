// The content digests of a host directory's files (the build context), remembered between builds
// by path, size, mtime, ctime and inode, as BuildKit's checksum cache does: a rebuild whose context
// did not change reads no file, it only stats them. Kept in the store, one file per directory.
//
// Memory does not grow with the context: the file is sorted in the order a COPY walks a tree, and
// only every 256th path is held (an index); a look-up reads the block of records it falls in,
// and a walk's look-ups fall in the same few blocks one after the other. Digests found during a
// build are held until there are 200,000 of them (about 30 MB), then merged into the file: each
// merge rewrites the whole file, so fewer of them keep a cold build of a wide context near linear.
#pragma once

#include <sys/stat.h>

#include <array>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/digest.h"
#include "layerstore/io.h"

namespace kiln::builder {

// The order of a tree walk, each directory's entries by name right after it: paths compared by
// component ("a" < "a/b" < "a.txt"), which is byte order with '/' below every other byte.
bool walk_order_less(std::string_view a, std::string_view b);

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

  // Digests held before they are merged into the file, and records a block of the file holds:
  // settable so that tests reach the merging with a few files.
  void set_limits(size_t max_pending, size_t block_records);

 private:
  // 64 bytes a file besides its path.
  struct Entry {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    uint64_t inode = 0;
    std::array<unsigned char, 32> digest{};
  };
  struct WalkOrder {
    bool operator()(const std::string& a, const std::string& b) const { return walk_order_less(a, b); }
  };
  struct Block {
    size_t index = 0;
    std::vector<std::pair<std::string, Entry>> records;
  };

  void load();
  std::optional<Entry> find_on_disk(const std::string& path);
  const Block& block(size_t index);
  // Writes the file afresh: what it held and what is pending, in walk order.
  void merge_pending(bool read_back);

  std::string file_;
  std::string root_;
  std::mutex mutex_;
  bool loaded_ = false;
  size_t max_pending_ = 200000;
  size_t block_records_ = 256;

  Fd data_;  // the file as loaded: another build replacing it does not change this one
  uint64_t data_end_ = 0;
  std::vector<std::pair<std::string, uint64_t>> index_;  // each block's first path and its offset
  std::deque<Block> blocks_;                             // the blocks read last, the newest first
  std::map<std::string, Entry, WalkOrder> pending_;      // found here, not yet in the file
};

}  // namespace kiln::builder
