// Filesystem primitives for the store: advisory locks, atomic publication of files, temporary
// directories that clean up after themselves. Publication is always explicit (commit()); a
// destructor only cleans up and never makes anything visible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/io.h"

namespace kiln {

// An flock(2) held until destruction. The constructor blocks until granted.
class FileLock {
 public:
  enum class Kind { Shared, Exclusive };
  FileLock(const std::string& path, Kind kind);
  FileLock(FileLock&&) = default;
  FileLock& operator=(FileLock&&) = default;

  // Takes the lock only if no other process holds it in a conflicting mode; never waits.
  static std::optional<FileLock> try_acquire(const std::string& path, Kind kind);

 private:
  explicit FileLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// A file written under a temporary name in the destination's directory and renamed over the
// destination by commit(), after fsync of the file and then of the directory. Until commit() the
// destination is untouched; if commit() is never called the temporary file is removed.
// Whether a published file must survive a crash (fsynced, with its directory) or only has to
// appear whole (renamed into place): a running container's scratch files need no disk flush.
enum class Durability { Durable, Volatile };

class AtomicFile : public Writer {
 public:
  explicit AtomicFile(std::string path, unsigned mode = 0644, Durability durability = Durability::Durable);
  ~AtomicFile() override;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::byte> data) override;
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  Fd fd_;
  bool committed_ = false;
  Durability durability_;
};

// Writes `content` to `path` atomically (AtomicFile).
void write_file_atomic(const std::string& path, std::string_view content,
                       Durability durability = Durability::Durable);

// Reads a whole file, refusing files larger than max_bytes (InvalidInputError naming `what`).
std::string read_file_capped(const std::string& path, uint64_t max_bytes, std::string_view what);
std::string read_fd_capped(int fd, uint64_t max_bytes, std::string_view what);

// Line records (ROOT/registry/...): small files of short lines, appended to by several processes.
// The non-empty lines of `path`, none when it does not exist; throws like read_file_capped.
std::vector<std::string> read_record_lines(const std::string& path, uint64_t max_bytes,
                                           std::string_view what);
// Appends `line` unless `path` holds it already, creating the file (0600) and its directory (0700,
// whose parent must exist). One short O_APPEND write: concurrent appenders do not mix their lines.
// Returns false when it could not write.
bool append_record_line(const std::string& path, const std::string& line);

// A directory created with a unique name under `parent`, removed with its contents on destruction
// unless release()d.
class TempDir {
 public:
  TempDir(const std::string& parent, std::string_view prefix);
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Gives up ownership: the directory will no longer be removed.
  std::string release();

 private:
  std::string path_;
};

// mkdir -p; throws SystemError.
void make_dirs(const std::string& path, unsigned mode = 0755);
// rm -rf without following symlinks; a missing path is not an error. Returns bytes freed (st_size
// of regular files counted once per inode link removed).
uint64_t remove_tree(const std::string& path);
// Sum of st_size of regular files under path (not following symlinks).
uint64_t tree_size(const std::string& path);
void fsync_dir(const std::string& path);
bool path_exists(const std::string& path);

// Docker's human sizes: decimal units, three significant digits ("2.14MB", "512B", "1.2GB").
// `bytes` random bytes from the kernel, as 2 * bytes lower-case hex digits.
std::string random_hex(size_t bytes);

std::string human_size(uint64_t bytes);

}  // namespace kiln
