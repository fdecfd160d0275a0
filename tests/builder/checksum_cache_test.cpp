#include "builder/checksum_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>

#include "layerstore/files.h"

using kiln::builder::ChecksumCache;
using kiln::builder::walk_order_less;

namespace {

std::string scratch_parent() {
  return std::filesystem::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

// A context of `count` files spread over nested directories, named so that byte order and walk
// order differ ("d1.x" sorts before "d1/..." by bytes, after it by walk).
struct Context {
  kiln::TempDir dir{scratch_parent(), "kiln-checksum-test-"};
  std::string root = dir.path() + "/ctx";
  std::string cache_file = dir.path() + "/cache/checksums";
  std::vector<std::string> paths;  // relative, in walk order

  explicit Context(int count) {
    for (int i = 0; i < count; ++i) {
      std::string path = i % 3 == 0   ? fmt::format("d{}.x", i % 7)
                         : i % 3 == 1 ? fmt::format("d{}/f{}", i % 7, i)
                                      : fmt::format("d{}/sub dir/f {}", i % 7, i);
      if (std::find(paths.begin(), paths.end(), path) != paths.end()) continue;
      size_t slash = path.rfind('/');
      kiln::make_dirs(slash == std::string::npos ? root : root + "/" + path.substr(0, slash));
      write(path, fmt::format("content of {}", path));
      paths.push_back(path);
    }
    std::sort(paths.begin(), paths.end(), [](const auto& a, const auto& b) { return walk_order_less(a, b); });
  }
  void write(const std::string& path, std::string_view content) const {
    kiln::write_file_atomic(root + "/" + path, content, kiln::Durability::Volatile);
  }
  kiln::Digest digest_through(ChecksumCache& cache, const std::string& path) const {
    kiln::Fd fd(::open((root + "/" + path).c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    return cache.file_digest(path, lstat_of(root + "/" + path), fd.get());
  }
  kiln::Digest expected(const std::string& path) const {
    return kiln::sha256_of(kiln::read_file_capped(root + "/" + path, 1 << 20, path));
  }
  std::optional<kiln::Digest> lookup(ChecksumCache& cache, const std::string& path) const {
    return cache.lookup(path, lstat_of(root + "/" + path));
  }
};

}  // namespace

TEST_CASE("walk order: a directory, then what it holds by name, then its next sibling") {
  CHECK(walk_order_less("a", "a/b"));
  CHECK(walk_order_less("a/b", "a.txt"));  // bytes say otherwise: '.' < '/'
  CHECK(walk_order_less("a/z/z", "a.txt"));
  CHECK(walk_order_less("a.txt", "b"));
  CHECK(walk_order_less("a b", "a/b") == false);
  CHECK_FALSE(walk_order_less("a", "a"));
  CHECK(walk_order_less("é", "z") == false);  // bytes compare unsigned, as the walk sorts names
}

TEST_CASE("the checksum cache answers from the file across builds, through blocks and merges") {
  Context ctx(400);
  {
    ChecksumCache cache(ctx.cache_file, ctx.root);
    cache.set_limits(/*max_pending=*/50, /*block_records=*/7);  // many blocks, several merges
    for (const auto& path : ctx.paths) {
      INFO(path);
      CHECK_FALSE(ctx.lookup(cache, path));
      CHECK(ctx.digest_through(cache, path) == ctx.expected(path));
      CHECK(ctx.lookup(cache, path) == ctx.expected(path));  // pending or already merged
    }
    cache.save();
  }
  // A later build: every file is known by its stat, in walk order and in any other.
  ChecksumCache cache(ctx.cache_file, ctx.root);
  cache.set_limits(50, 7);
  for (const auto& path : ctx.paths) CHECK(ctx.lookup(cache, path) == ctx.expected(path));
  std::vector<std::string> shuffled = ctx.paths;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  for (const auto& path : shuffled) CHECK(ctx.lookup(cache, path) == ctx.expected(path));
  CHECK_FALSE(cache.lookup("no/such/file", lstat_of(ctx.root + "/" + ctx.paths[0])));

  // A changed file is not answered from the cache; its new digest replaces the old one, and the
  // rest stays known.
  const std::string& changed = ctx.paths[ctx.paths.size() / 2];
  ctx.write(changed, "new content, new size");
  CHECK_FALSE(ctx.lookup(cache, changed));
  CHECK(ctx.digest_through(cache, changed) == ctx.expected(changed));
  ctx.write("d0/new file", "a file the first build did not have");
  CHECK(ctx.digest_through(cache, "d0/new file") == ctx.expected("d0/new file"));
  cache.save();
  ChecksumCache again(ctx.cache_file, ctx.root);
  again.set_limits(50, 7);
  CHECK(ctx.lookup(again, changed) == ctx.expected(changed));
  CHECK(ctx.lookup(again, "d0/new file") == ctx.expected("d0/new file"));
  for (const auto& path : ctx.paths) CHECK(ctx.lookup(again, path) == ctx.expected(path));
}

TEST_CASE("a checksum file of another root, another format or out of order is not used") {
  Context ctx(20);
  {
    ChecksumCache cache(ctx.cache_file, ctx.root);
    for (const auto& path : ctx.paths) ctx.digest_through(cache, path);
    cache.save();
  }
  std::string text = kiln::read_file_capped(ctx.cache_file, 1 << 20, "cache");
  REQUIRE(text.starts_with("kiln-checksums-2 " + ctx.root + "\n"));
  {
    ChecksumCache other_root(ctx.cache_file, ctx.root + "-elsewhere");
    CHECK_FALSE(ctx.lookup(other_root, ctx.paths[0]));
  }
  // The records in reverse: not in walk order, so not trusted.
  std::vector<std::string> lines;
  for (size_t at = text.find('\n') + 1, next; (next = text.find('\n', at)) != std::string::npos;
       at = next + 1)
    lines.push_back(text.substr(at, next - at + 1));
  std::string reversed = "kiln-checksums-2 " + ctx.root + "\n";
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) reversed += *it;
  kiln::write_file_atomic(ctx.cache_file, reversed, kiln::Durability::Volatile);
  {
    ChecksumCache cache(ctx.cache_file, ctx.root);
    for (const auto& path : ctx.paths) CHECK_FALSE(ctx.lookup(cache, path));
  }
  // The first format (unsorted records): hashed once more, then written in the new one.
  kiln::write_file_atomic(ctx.cache_file,
                          "kiln-checksums-1 " + ctx.root + "\n" + text.substr(text.find('\n') + 1),
                          kiln::Durability::Volatile);
  ChecksumCache cache(ctx.cache_file, ctx.root);
  CHECK_FALSE(ctx.lookup(cache, ctx.paths[0]));
}
