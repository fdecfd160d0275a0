#include "layerstore/files.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/fsutil.h"

namespace kiln {
namespace {

std::string dirname_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

namespace {
// flock with EINTR retried. Returns false only when `wait` is off and the lock is held elsewhere.
bool take_flock(int fd, FileLock::Kind kind, bool wait, const std::string& path) {
  int op = (kind == FileLock::Kind::Exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
  while (::flock(fd, op) != 0) {
    if (!wait && errno == EWOULDBLOCK) return false;
    if (errno != EINTR) throw_errno(fmt::format("lock `{}`", path));
  }
  return true;
}
}  // namespace

FileLock::FileLock(const std::string& path, Kind kind) {
  fd_ = open_or_throw(path, O_RDWR | O_CREAT, 0644);
  take_flock(fd_.get(), kind, /*wait=*/true, path);
}

std::optional<FileLock> FileLock::try_acquire(const std::string& path, Kind kind) {
  Fd fd = open_or_throw(path, O_RDWR | O_CREAT, 0644);
  if (!take_flock(fd.get(), kind, /*wait=*/false, path)) return std::nullopt;
  return FileLock(std::move(fd));
}

AtomicFile::AtomicFile(std::string path, unsigned mode, Durability durability)
    : path_(std::move(path)), durability_(durability) {
  auto slash = path_.rfind('/');
  std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  temp_path_ = dirname_of(path_) + "/." + base + ".tmp-" + random_hex(6);
  fd_ = open_or_throw(temp_path_, O_WRONLY | O_CREAT | O_EXCL, mode);
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    fd_.reset();
    ::unlink(temp_path_.c_str());  // cleanup only; the destination was never touched
  }
}

void AtomicFile::write(std::span<const std::byte> data) {
  FdWriter(fd_.get(), temp_path_).write(data);
}

void AtomicFile::commit() {
  bool durable = durability_ == Durability::Durable;
  if (durable && ::fsync(fd_.get()) != 0) throw_errno(fmt::format("fsync `{}`", temp_path_));
  fd_.reset();
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) throw_errno(fmt::format("rename to `{}`", path_));
  committed_ = true;
  if (durable) fsync_dir(dirname_of(path_));
}

void write_file_atomic(const std::string& path, std::string_view content, Durability durability) {
  AtomicFile f(path, 0644, durability);
  f.write(as_bytes(content));
  f.commit();
}

std::string read_fd_capped(int fd, uint64_t max_bytes, std::string_view what) {
  std::string out;
  // A regular file's size is known: read straight into a buffer of that size (plus one byte, to see
  // the end) instead of growing one by copying. Pipes and files that grow take the general path.
  struct stat st {};
  size_t chunk = 65536;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < max_bytes) {
    chunk = static_cast<size_t>(st.st_size) + 1;
  }
  for (;;) {
    size_t used = out.size();
    if (out.capacity() - used < chunk) out.reserve(std::max(used + chunk, out.capacity() * 2));
    out.resize(out.capacity());
    ssize_t n = ::read(fd, out.data() + used, out.size() - used);
    if (n < 0) {
      out.resize(used);
      if (errno == EINTR) continue;
      throw_errno(fmt::format("read {}", what));
    }
    out.resize(used + static_cast<size_t>(n));
    if (n == 0) return out;
    if (out.size() > max_bytes)
      throw InvalidInputError(fmt::format("{}: larger than {} bytes", what, max_bytes));
  }
}

std::string read_file_capped(const std::string& path, uint64_t max_bytes, std::string_view what) {
  Fd fd = open_or_throw(path, O_RDONLY);
  return read_fd_capped(fd.get(), max_bytes, what);
}

std::vector<std::string> read_record_lines(const std::string& path, uint64_t max_bytes,
                                           std::string_view what) {
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return {};
  std::vector<std::string> lines;
  for (std::string& line : split_on(read_file_capped(path, max_bytes, what), '\n'))
    if (!line.empty()) lines.push_back(std::move(line));
  return lines;
}

bool append_record_line(const std::string& path, const std::string& line) {
  try {
    std::vector<std::string> known = read_record_lines(path, 1 << 20, path);
    if (std::find(known.begin(), known.end(), line) != known.end()) return true;
  } catch (const Error&) {
    return false;
  }
  ::mkdir(path.substr(0, path.rfind('/')).c_str(), 0700);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd.valid()) return false;
  std::string text = line + "\n";
  return ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

TempDir::TempDir(const std::string& parent, std::string_view prefix) {
  for (int attempt = 0;; ++attempt) {
    std::string p = fmt::format("{}/{}{}", parent, prefix, random_hex(6));
    if (::mkdir(p.c_str(), 0700) == 0) {
      path_ = p;
      return;
    }
    if (errno != EEXIST || attempt > 100) throw_errno(fmt::format("create directory `{}`", p));
  }
}

TempDir::~TempDir() {
  if (!path_.empty()) {
    try {
      remove_tree(path_);
    } catch (...) {
      // A destructor cannot report; what is left is under the store's tmp/, which prune empties.
    }
  }
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

std::string TempDir::release() {
  return std::exchange(path_, {});
}

void make_dirs(const std::string& path, unsigned mode) {
  if (path.empty()) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      throw Error(fmt::format("create directory `{}`: exists and is not a directory", path));
    return;
  }
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(path.substr(0, slash), mode);
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    throw_errno(fmt::format("create directory `{}`", path));
}

uint64_t remove_tree(const std::string& path) {
  return remove_tree_at(AT_FDCWD, path, path);
}

namespace {
thread_local uint64_t g_tree_bytes = 0;
}

uint64_t tree_size(const std::string& path) {
  g_tree_bytes = 0;
  auto add = [](const char*, const struct stat* s, int, struct FTW*) -> int {
    if (S_ISREG(s->st_mode)) g_tree_bytes += static_cast<uint64_t>(s->st_size);
    return 0;
  };
  nftw(path.c_str(), add, 64, FTW_PHYS);
  return g_tree_bytes;
}

void fsync_dir(const std::string& path) {
  Fd fd = open_or_throw(path, O_RDONLY | O_DIRECTORY);
  if (::fsync(fd.get()) != 0 && errno != EINVAL) throw_errno(fmt::format("fsync `{}`", path));
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string random_hex(size_t bytes) {
  // getrandom, not std::random_device: constructing one probes the CPU (CPUID, which a VM traps)
  // or opens /dev/urandom, for every temporary name of every atomic write.
  std::vector<unsigned char> buffer(bytes);
  for (size_t filled = 0; filled < bytes;) {
    ssize_t n = ::getrandom(buffer.data() + filled, bytes - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read random bytes");
    }
    filled += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (unsigned char byte : buffer) {
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 15]);
  }
  return out;
}

std::string human_size(uint64_t bytes) {
  // Docker uses go-units HumanSize: decimal units with three significant digits (HumanSizeWithPrecision(size,
  // 3)).
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1000.0 && unit < 5) {
    v /= 1000.0;
    ++unit;
  }
  return fmt::format("{:.3g}{}", v, kUnits[unit]);
}

}  // namespace kiln
