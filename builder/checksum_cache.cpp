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

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool parse_hex(std::string_view hex, std::array<unsigned char, 32>& out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int high = hex_value(hex[2 * i]), low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<unsigned char>(high * 16 + low);
  }
  return true;
}

std::string to_hex(const std::array<unsigned char, 32>& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    out[2 * i] = kDigits[digest[i] >> 4];
    out[2 * i + 1] = kDigits[digest[i] & 15];
  }
  return out;
}

}  // namespace

void ChecksumCache::load() {
  loaded_ = true;
  Fd fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return;  // none yet: every file is hashed once
  // Read in pieces: the file is as long as the context is wide, and only the entries are kept.
  FdReader reader(fd.get(), file_);
  std::string pending;
  std::vector<std::byte> chunk(1 << 16);
  bool first = true;
  for (;;) {
    size_t n = 0;
    try {
      n = reader.read(chunk);
    } catch (const Error&) {
      entries_.clear();
      return;  // unreadable: every file is hashed once more
    }
    if (n == 0) break;
    pending.append(reinterpret_cast<const char*>(chunk.data()), n);
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      std::string_view line(pending.data() + start, newline - start);
      if (first) {
        first = false;
        // Another directory's cache (a hash collision of its name) or another format: ignored.
        if (!line.starts_with(kMagic) || line.substr(kMagic.size()) != root_) return;
        continue;
      }
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
      if (!ok || at > line.size()) continue;
      char* stop = nullptr;
      entry.size = std::strtoull(line.data() + fields[0], &stop, 10);
      entry.mtime_ns = std::strtoll(line.data() + fields[1], &stop, 10);
      entry.ctime_ns = std::strtoll(line.data() + fields[2], &stop, 10);
      entry.inode = std::strtoull(line.data() + fields[3], &stop, 10);
      if (!parse_hex(line.substr(fields[4], at - 1 - fields[4]), entry.digest)) continue;
      entries_.emplace(std::string(line.substr(at)), entry);
    }
    pending.erase(0, start);
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
  return Digest::from_sha256_hex(to_hex(e.digest));
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
    Entry entry{static_cast<uint64_t>(st.st_size),
                nanos(st.st_mtim),
                nanos(st.st_ctim),
                static_cast<uint64_t>(st.st_ino),
                {}};
    parse_hex(digest.hex(), entry.digest);
    entries_[path] = entry;
    dirty_ = true;
  }
  return digest;
}

void ChecksumCache::save() {
  std::lock_guard lock(mutex_);
  if (!dirty_) return;
  make_dirs(file_.substr(0, file_.rfind('/')), 0700);
  // Written in pieces, as it is read.
  AtomicFile out(file_, 0600, Durability::Volatile);
  std::string buffer = fmt::format("{}{}\n", kMagic, root_);
  for (const auto& [path, e] : entries_) {
    if (path.find('\n') != std::string::npos) continue;
    buffer +=
        fmt::format("{} {} {} {} {} {}\n", e.size, e.mtime_ns, e.ctime_ns, e.inode, to_hex(e.digest), path);
    if (buffer.size() > (1 << 16)) {
      out.write(as_bytes(buffer));
      buffer.clear();
    }
  }
  out.write(as_bytes(buffer));
  out.commit();
  dirty_ = false;
}

}  // namespace kiln::builder
