// libarchive over kiln's streams: a tar reader pulling from a Reader and a tar writer pushing to a
// Writer, owning their archive handles. Only tar framing goes through libarchive; compression is
// done by compress.h so that digests can be taken on both sides of it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "layerstore/io.h"

struct archive;
struct archive_entry;

namespace kiln {

// Sets the UTF-8 character type archives' names need (a process-wide setlocale, done once). Every
// reader and writer does it on first use; a process that will use them on several threads calls
// this before it starts them, so that the locale never changes while another thread runs.
void prepare_archive_locale();

class ArchiveReader {
 public:
  // `what` names the stream in errors ("load `img.tar`").
  ArchiveReader(Reader& in, std::string what);
  ~ArchiveReader();
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;

  // The next entry, or nullptr at the end of the archive. Throws InvalidInputError on a malformed
  // or truncated archive.
  archive_entry* next();
  // Reads the current entry's data; 0 at its end.
  size_t read_data(std::span<std::byte> buf);
  archive* handle() { return archive_; }

 private:
  static long read_callback(archive*, void* self, const void** buffer);
  Reader& in_;
  std::string what_;
  archive* archive_ = nullptr;
  std::unique_ptr<std::byte[]> buffer_;
};

class ArchiveWriter {
 public:
  ArchiveWriter(Writer& out, std::string what);
  ~ArchiveWriter();
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;

  void write_header(archive_entry* entry);
  void write_data(std::span<const std::byte> data);
  // Convenience: a regular file with fixed metadata (mode 0644, uid/gid 0, the given mtime).
  void add_file(const std::string& name, std::string_view content, int64_t mtime = 0);
  void add_file_from(const std::string& name, Reader& content, uint64_t size, int64_t mtime = 0);
  void add_directory(const std::string& name, int64_t mtime = 0);
  // Writes the end-of-archive blocks. Must be called; the destructor only frees.
  void finish();

 private:
  static long write_callback(archive*, void* self, const void* buffer, size_t length);
  Writer& out_;
  std::string what_;
  archive* archive_ = nullptr;
  bool finished_ = false;
};

}  // namespace kiln
