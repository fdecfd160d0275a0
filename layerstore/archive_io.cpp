#include "layerstore/archive_io.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <clocale>
#include <cstring>
#include <exception>
#include <mutex>
#include <vector>

#include "layerstore/errors.h"

namespace kiln {
namespace {

constexpr size_t kReadBufferSize = 1 << 20;

// Names in layer tarballs are UTF-8 (PAX). Under the C locale libarchive cannot convert them and
// marks every non-ASCII name hdrcharset=BINARY, which GNU tar warns about; the rest of the locale
// (numbers, messages) stays C. Set the first time kiln touches a tar stream rather than at start:
// loading the locale costs 0.2-0.5 ms, which commands without archives (run, ps, parse) need not
// pay. setlocale is process-wide: a caller that reads or writes archives on several threads calls
// prepare_archive_locale() before it starts them.
void use_utf8_names() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!std::setlocale(LC_CTYPE, "C.UTF-8")) std::setlocale(LC_CTYPE, "C.utf8");
  });
}

struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

}  // namespace

void prepare_archive_locale() {
  use_utf8_names();
}

ArchiveReader::ArchiveReader(Reader& in, std::string what)
    : in_(in), what_(std::move(what)), buffer_(new std::byte[kReadBufferSize]) {
  use_utf8_names();
  archive_ = archive_read_new();
  archive_read_support_format_tar(archive_);
  archive_read_support_format_gnutar(archive_);
  if (archive_read_open(archive_, this, nullptr, &ArchiveReader::read_callback, nullptr) != ARCHIVE_OK) {
    std::string msg = archive_error_string(archive_) ? archive_error_string(archive_) : "cannot open";
    archive_read_free(archive_);
    archive_ = nullptr;
    throw InvalidInputError(fmt::format("{}: {}", what_, msg));
  }
}

ArchiveReader::~ArchiveReader() {
  if (archive_) archive_read_free(archive_);
}

long ArchiveReader::read_callback(archive* a, void* self, const void** buffer) {
  auto* r = static_cast<ArchiveReader*>(self);
  try {
    size_t n = r->in_.read(std::span(r->buffer_.get(), kReadBufferSize));
    *buffer = r->buffer_.get();
    return static_cast<long>(n);
  } catch (const std::exception& e) {
    // libarchive is C: the exception cannot cross it, so its text travels as the archive error.
    archive_set_error(a, EIO, "%s", e.what());
    return -1;
  }
}

archive_entry* ArchiveReader::next() {
  archive_entry* entry = nullptr;
  int rc = archive_read_next_header(archive_, &entry);
  if (rc == ARCHIVE_EOF) return nullptr;
  if (rc == ARCHIVE_OK || rc == ARCHIVE_WARN) return entry;
  const char* msg = archive_error_string(archive_);
  throw InvalidInputError(fmt::format("{}: {}", what_, msg ? msg : "malformed tar archive"));
}

size_t ArchiveReader::read_data(std::span<std::byte> buf) {
  la_ssize_t n = archive_read_data(archive_, buf.data(), buf.size());
  if (n < 0) {
    const char* msg = archive_error_string(archive_);
    throw InvalidInputError(fmt::format("{}: {}", what_, msg ? msg : "truncated tar archive"));
  }
  return static_cast<size_t>(n);
}

ArchiveWriter::ArchiveWriter(Writer& out, std::string what) : out_(out), what_(std::move(what)) {
  use_utf8_names();
  archive_ = archive_write_new();
  archive_write_set_format_pax_restricted(archive_);
  // xattrs as SCHILY.xattr records only, the form Docker and Go's archive/tar read (libarchive
  // would add its own LIBARCHIVE.xattr copy of each).
  archive_write_set_format_option(archive_, "pax", "xattrheader", "SCHILY");
  // The archive is the stream: no block padding beyond the tar format's own.
  archive_write_set_bytes_per_block(archive_, 0);
  if (archive_write_open(archive_, this, nullptr, &ArchiveWriter::write_callback, nullptr) != ARCHIVE_OK) {
    archive_write_free(archive_);
    archive_ = nullptr;
    throw Error(fmt::format("{}: cannot start tar stream", what_));
  }
}

ArchiveWriter::~ArchiveWriter() {
  if (archive_) {
    // Not finished: drop the handle without writing the end-of-archive blocks, so an aborted
    // stream is visibly truncated rather than a valid-looking partial archive.
    if (!finished_) archive_write_fail(archive_);
    archive_write_free(archive_);
  }
}

long ArchiveWriter::write_callback(archive* a, void* self, const void* buffer, size_t length) {
  auto* w = static_cast<ArchiveWriter*>(self);
  try {
    w->out_.write(std::span(static_cast<const std::byte*>(buffer), length));
    return static_cast<long>(length);
  } catch (const std::exception& e) {
    archive_set_error(a, EIO, "%s", e.what());
    return -1;
  }
}

void ArchiveWriter::write_header(archive_entry* entry) {
  // ARCHIVE_WARN: written, with a caveat such as a name that is not valid in the current locale
  // (kept as raw bytes under hdrcharset=BINARY).
  int rc = archive_write_header(archive_, entry);
  if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
    const char* msg = archive_error_string(archive_);
    throw Error(
        fmt::format("{}: write entry `{}`: {}", what_, archive_entry_pathname(entry), msg ? msg : "failed"));
  }
}

void ArchiveWriter::write_data(std::span<const std::byte> data) {
  while (!data.empty()) {
    la_ssize_t n = archive_write_data(archive_, data.data(), data.size());
    if (n < 0) {
      const char* msg = archive_error_string(archive_);
      throw Error(fmt::format("{}: {}", what_, msg ? msg : "write failed"));
    }
    data = data.subspan(static_cast<size_t>(n));
  }
}

void ArchiveWriter::add_file(const std::string& name, std::string_view content, int64_t mtime) {
  StringReader r(content);
  add_file_from(name, r, content.size(), mtime);
}

void ArchiveWriter::add_file_from(const std::string& name, Reader& content, uint64_t size, int64_t mtime) {
  EntryPtr e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
  archive_entry_set_mtime(e.get(), mtime, 0);
  write_header(e.get());
  std::vector<std::byte> buf(1 << 20);
  uint64_t done = 0;
  while (done < size) {
    size_t n = content.read(std::span(buf).first(std::min<uint64_t>(buf.size(), size - done)));
    if (n == 0) throw Error(fmt::format("{}: `{}` ended early ({} of {} bytes)", what_, name, done, size));
    write_data(std::span(buf).first(n));
    done += n;
  }
}

void ArchiveWriter::add_directory(const std::string& name, int64_t mtime) {
  EntryPtr e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_filetype(e.get(), AE_IFDIR);
  archive_entry_set_perm(e.get(), 0755);
  archive_entry_set_mtime(e.get(), mtime, 0);
  write_header(e.get());
}

void ArchiveWriter::finish() {
  if (archive_write_close(archive_) != ARCHIVE_OK) {
    const char* msg = archive_error_string(archive_);
    throw Error(fmt::format("{}: {}", what_, msg ? msg : "cannot finish tar stream"));
  }
  finished_ = true;
}

}  // namespace kiln
