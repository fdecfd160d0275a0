#include "builder/checksum_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/io.h"

namespace kiln::builder {
namespace {

// The file: a magic line naming the root, then one record a file:
//   size mtime_ns ctime_ns inode hex path\n     (path last: it may hold spaces, never a newline)
constexpr std::string_view kMagic = "kiln-checksums-1 ";

int64_t nanos(const struct timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

}  // namespace

ChecksumCache::ChecksumCache(std::string file, std::string root)
    : file_(std::move(file)), root_(std::move(root)) {}

void ChecksumCache::load() {
  loaded_ = true;
  std::string text;
  try {
    text = read_file_capped(file_, uint64_t{1} << 30, "checksum cache");
  } catch (const Error&) {
    return;  // none yet, or unreadable: every file is hashed once more
  }
  size_t newline = text.find('\n');
  if (newline == std::string::npos || text.compare(0, kMagic.size(), kMagic) != 0 ||
      text.substr(kMagic.size(), newline - kMagic.size()) != root_) {
    return;
  }
  size_t pos = newline + 1;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    Entry entry;
    size_t fields[5];
    size_t at = 0;
    bool ok = true;
    for (size_t& field : fields) {
      size_t space = line.find(' ', at);
      if (space == std::string_view::npos) {
        ok = false;
        break;
      }
      field = at;
      at = space + 1;
    }
    if (!ok) continue;
    char* stop = nullptr;
    entry.size = std::strtoull(line.data() + fields[0], &stop, 10);
    entry.mtime_ns = std::strtoll(line.data() + fields[1], &stop, 10);
    entry.ctime_ns = std::strtoll(line.data() + fields[2], &stop, 10);
    entry.inode = std::strtoull(line.data() + fields[3], &stop, 10);
    entry.digest_hex = std::string(line.substr(fields[4], 64));
    if (entry.digest_hex.size() != 64 || at > line.size()) continue;
    entries_.emplace(std::string(line.substr(at)), std::move(entry));
  }
}

std::optional<Digest> ChecksumCache::lookup(const std::string& path, const struct stat& st) {
  std::lock_guard lock(mutex_);
  if (!loaded_) load();
  auto it = entries_.find(path);
  if (it == entries_.end()) return std::nullopt;
  const Entry& e = it->second;
  if (e.size != static_cast<uint64_t>(st.st_size) || e.mtime_ns != nanos(st.st_mtim) ||
      e.ctime_ns != nanos(st.st_ctim) || e.inode != st.st_ino) {
    return std::nullopt;
  }
  return Digest::from_sha256_hex(e.digest_hex);
}

Digest ChecksumCache::file_digest(const std::string& path, const struct stat& st, int fd) {
  if (auto known = lookup(path, st)) return *known;
  Sha256 hash;
  std::vector<std::byte> buffer(1 << 17);
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("read `{}`", path));
    }
    if (n == 0) break;
    hash.update(std::span(buffer.data(), static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
  }
  Digest digest = hash.finish();
  std::lock_guard lock(mutex_);
  // A file that changed while it was read is not remembered: its stat no longer describes it.
  struct stat after {};
  if (::fstat(fd, &after) == 0 && after.st_size == st.st_size && nanos(after.st_mtim) == nanos(st.st_mtim)) {
    entries_[path] = Entry{static_cast<uint64_t>(st.st_size), nanos(st.st_mtim), nanos(st.st_ctim),
                           static_cast<uint64_t>(st.st_ino), digest.hex()};
    dirty_ = true;
  }
  return digest;
}

void ChecksumCache::save() {
  std::lock_guard lock(mutex_);
  if (!dirty_) return;
  std::string out;
  out.reserve(entries_.size() * 120);
  out += kMagic;
  out += root_;
  out += '\n';
  for (const auto& [path, e] : entries_) {
    if (path.find('\n') != std::string::npos) continue;
    out += fmt::format("{} {} {} {} {} {}\n", e.size, e.mtime_ns, e.ctime_ns, e.inode, e.digest_hex, path);
  }
  make_dirs(file_.substr(0, file_.rfind('/')), 0700);
  write_file_atomic(file_, out, Durability::Volatile);
  dirty_ = false;
}

}  // namespace kiln::builder
