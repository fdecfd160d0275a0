#include "builder/checksum_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/io.h"

namespace kiln::builder {
namespace {

// The file: a magic line naming the root, then one record a file, in walk order (walk_order_less):
//   size mtime_ns ctime_ns inode hex path\n     (path last: it may hold spaces, never a newline)
constexpr std::string_view kMagic = "kiln-checksums-2 ";

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

bool walk_order_less(std::string_view a, std::string_view b) {
  const size_t common = std::min(a.size(), b.size());
  for (size_t i = 0; i < common; ++i) {
    if (a[i] == b[i]) continue;
    if (a[i] == '/') return true;
    if (b[i] == '/') return false;
    return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[i]);
  }
  return a.size() < b.size();
}

namespace {

// One record line (without its newline): "size mtime_ns ctime_ns inode hex path". The path is
// last: it may hold spaces, never a newline.
template <typename Entry>
bool parse_record(std::string_view line, std::string_view& path, Entry& entry) {
  size_t fields[5];
  size_t at = 0;
  for (size_t& field : fields) {
    size_t space = line.find(' ', at);
    if (space == std::string_view::npos) return false;
    field = at;
    at = space + 1;
  }
  char* stop = nullptr;
  entry.size = std::strtoull(line.data() + fields[0], &stop, 10);
  entry.mtime_ns = std::strtoll(line.data() + fields[1], &stop, 10);
  entry.ctime_ns = std::strtoll(line.data() + fields[2], &stop, 10);
  entry.inode = std::strtoull(line.data() + fields[3], &stop, 10);
  if (!parse_hex(line.substr(fields[4], at - 1 - fields[4]), entry.digest)) return false;
  path = line.substr(at);
  return !path.empty();
}

// The path of a record line, without decoding the rest (empty when the line is malformed): what
// indexing needs; a block decodes its records in full when it is read.
std::string_view record_path(std::string_view line) {
  size_t at = 0;
  for (int field = 0; field < 5; ++field) {
    size_t space = line.find(' ', at);
    if (space == std::string_view::npos) return {};
    at = space + 1;
  }
  return line.substr(at);
}

template <typename Entry>
std::string format_record(std::string_view path, const Entry& e) {
  return fmt::format("{} {} {} {} {} {}\n", e.size, e.mtime_ns, e.ctime_ns, e.inode, to_hex(e.digest), path);
}

// Calls `line` with each line of `fd` from `offset` on, and the offset where it starts; stops when
// `line` returns false. Reads in pieces: the file is as long as the context is wide.
template <typename OnLine>
void for_each_line(int fd, const std::string& name, uint64_t offset, OnLine&& line) {
  PreadReader reader(fd, name, offset);
  std::string pending;
  constexpr size_t kChunk = 1 << 16;
  auto chunk = std::make_unique_for_overwrite<std::byte[]>(kChunk);
  uint64_t pending_offset = offset;
  for (size_t n; (n = reader.read(std::span(chunk.get(), kChunk))) > 0;) {
    pending.append(reinterpret_cast<const char*>(chunk.get()), n);
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      if (!line(std::string_view(pending.data() + start, newline - start), pending_offset + start)) return;
    }
    pending.erase(0, start);
    pending_offset += start;
  }
}

}  // namespace

void ChecksumCache::set_limits(size_t max_pending, size_t block_records) {
  std::lock_guard lock(mutex_);
  max_pending_ = std::max<size_t>(max_pending, 1);
  block_records_ = std::max<size_t>(block_records, 1);
}

// Indexes the file: one pass that keeps every block's first path. A file that is not this root's,
// not in this format or not in walk order is taken for empty (every file is hashed once more).
void ChecksumCache::load() {
  loaded_ = true;
  data_ = Fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!data_.valid()) return;  // none yet: every file is hashed once
  // Used now: `kiln prune --build-cache --filter until=` goes by this time.
  ::futimens(data_.get(), nullptr);
  bool first = true, good = true;
  size_t records = 0;
  std::string previous;
  uint64_t end = 0;
  try {
    for_each_line(data_.get(), file_, 0, [&](std::string_view line, uint64_t offset) {
      end = offset + line.size() + 1;
      if (first) {
        first = false;
        good = line.starts_with(kMagic) && line.substr(kMagic.size()) == root_;
        return good;
      }
      std::string_view path = record_path(line);
      if (path.empty() || (records > 0 && !walk_order_less(previous, path))) {
        good = false;
        return false;
      }
      if (records % block_records_ == 0) index_.emplace_back(std::string(path), offset);
      previous.assign(path);
      ++records;
      return true;
    });
  } catch (const Error&) {
    good = false;  // unreadable
  }
  if (!good || first) {
    index_.clear();
    data_ = Fd();
    return;
  }
  data_end_ = end;
}

const ChecksumCache::Block& ChecksumCache::block(size_t index) {
  for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
    if (it->index == index) return *it;
  }
  Block block;
  block.index = index;
  const uint64_t end = index + 1 < index_.size() ? index_[index + 1].second : data_end_;
  try {
    for_each_line(data_.get(), file_, index_[index].second, [&](std::string_view line, uint64_t offset) {
      if (offset >= end) return false;
      std::string_view path;
      Entry entry;
      if (parse_record(line, path, entry)) block.records.emplace_back(std::string(path), entry);
      return true;
    });
  } catch (const Error&) {
    block.records.clear();  // unreadable now: its files are hashed again
  }
  // A few blocks: the walks of the COPY steps running at the same time, each reading on.
  constexpr size_t kBlocksKept = 8;
  blocks_.push_front(std::move(block));
  if (blocks_.size() > kBlocksKept) blocks_.pop_back();
  return blocks_.front();
}

std::optional<ChecksumCache::Entry> ChecksumCache::find_on_disk(const std::string& path) {
  auto after = std::upper_bound(
      index_.begin(), index_.end(), path,
      [](const std::string& p, const auto& entry) { return walk_order_less(p, entry.first); });
  if (after == index_.begin()) return std::nullopt;
  const Block& found = block(static_cast<size_t>(after - index_.begin()) - 1);
  auto it = std::lower_bound(
      found.records.begin(), found.records.end(), path,
      [](const auto& record, const std::string& p) { return walk_order_less(record.first, p); });
  if (it == found.records.end() || it->first != path) return std::nullopt;
  return it->second;
}

std::optional<Digest> ChecksumCache::lookup(const std::string& path, const struct stat& st) {
  std::lock_guard lock(mutex_);
  if (!loaded_) load();
  std::optional<Entry> found;
  if (auto it = pending_.find(path); it != pending_.end()) {
    found = it->second;
  } else {
    found = find_on_disk(path);
  }
  if (!found) return std::nullopt;
  const Entry& e = *found;
  if (e.size != static_cast<uint64_t>(st.st_size) || e.mtime_ns != nanos(st.st_mtim) ||
      e.ctime_ns != nanos(st.st_ctim) || e.inode != st.st_ino) {
    return std::nullopt;
  }
  return Digest::from_sha256_hex(to_hex(e.digest));
}

Digest ChecksumCache::file_digest(const std::string& path, const struct stat& st, int fd) {
  if (auto known = lookup(path, st)) return *known;
  Sha256 hash;
  // Not zeroed: clearing 128 KiB for each small file was 7% of a cold build of 300,000 of them.
  constexpr size_t kBufferSize = 1 << 17;
  auto buffer = std::make_unique_for_overwrite<std::byte[]>(kBufferSize);
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buffer.get(), kBufferSize, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("read `{}`", path));
    }
    if (n == 0) break;
    hash.update(std::span(buffer.get(), static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
  }
  Digest digest = hash.finish();
  std::lock_guard lock(mutex_);
  // A file that changed while it was read is not remembered: its stat no longer describes it.
  struct stat after {};
  if (path.find('\n') == std::string::npos && ::fstat(fd, &after) == 0 && after.st_size == st.st_size &&
      nanos(after.st_mtim) == nanos(st.st_mtim)) {
    Entry entry{static_cast<uint64_t>(st.st_size),
                nanos(st.st_mtim),
                nanos(st.st_ctim),
                static_cast<uint64_t>(st.st_ino),
                {}};
    parse_hex(digest.hex(), entry.digest);
    pending_[path] = entry;
    if (pending_.size() >= max_pending_) merge_pending(/*read_back=*/true);
  }
  return digest;
}

void ChecksumCache::merge_pending(bool read_back) {
  if (!loaded_) load();
  make_dirs(file_.substr(0, file_.rfind('/')), 0700);
  AtomicFile out(file_, 0600, Durability::Volatile);
  std::string buffer = fmt::format("{}{}\n", kMagic, root_);
  auto flush_if_full = [&] {
    if (buffer.size() > (1 << 16)) {
      out.write(as_bytes(buffer));
      buffer.clear();
    }
  };
  // The file's records and the pending ones, both in walk order: merged as they come, a pending
  // record replacing the file's for the same path.
  auto next = pending_.begin();
  if (data_.valid() && !index_.empty()) {
    for_each_line(data_.get(), file_, index_.front().second, [&](std::string_view line, uint64_t offset) {
      if (offset >= data_end_) return false;
      std::string_view path;
      Entry entry;
      if (!parse_record(line, path, entry)) return true;
      for (; next != pending_.end() && walk_order_less(next->first, path); ++next) {
        buffer += format_record(next->first, next->second);
        flush_if_full();
      }
      if (next != pending_.end() && next->first == path) {
        entry = next->second;
        ++next;
      }
      buffer += format_record(path, entry);
      flush_if_full();
      return true;
    });
  }
  for (; next != pending_.end(); ++next) {
    buffer += format_record(next->first, next->second);
    flush_if_full();
  }
  out.write(as_bytes(buffer));
  out.commit();
  pending_.clear();
  index_.clear();
  blocks_.clear();
  data_end_ = 0;
  data_ = Fd();
  loaded_ = false;
  // Read back what was just written (or what another build wrote since: as good a cache), unless
  // the build is over.
  if (read_back) load();
}

void ChecksumCache::save() {
  std::lock_guard lock(mutex_);
  if (pending_.empty()) return;
  merge_pending(/*read_back=*/false);
}

}  // namespace kiln::builder
