// A file one thread appends to while others read it from the start as it grows: a download checked
// (hashed, decompressed) on other threads as its bytes land, without holding them in memory.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "layerstore/io.h"

namespace kiln {

class GrowingFile {
 public:
  // `fd` is read with pread (it must stay open while readers read); `size`: bytes it holds already.
  GrowingFile(int fd, uint64_t size) : fd_(fd), size_(size) {}

  // The writer's side: the file holds `size` bytes now; no more will come; it gave up (the
  // readers' next read throws).
  void grew(uint64_t size);
  void finish();
  void abandon();

  // Reads the file from `offset` on, waiting for bytes not written yet; 0 once the writer has
  // finished and everything is read. Throws Error naming `what` once the writer has given up.
  class Reader : public kiln::Reader {
   public:
    Reader(GrowingFile& file, std::string what, uint64_t offset = 0)
        : file_(file), what_(std::move(what)), offset_(offset) {}
    size_t read(std::span<std::byte> buf) override;

   private:
    GrowingFile& file_;
    std::string what_;
    uint64_t offset_;
  };

 private:
  void end(bool& flag);

  int fd_;
  std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t size_;
  bool finished_ = false;
  bool abandoned_ = false;
};

}  // namespace kiln
