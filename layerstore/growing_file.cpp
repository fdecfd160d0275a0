#include "layerstore/growing_file.h"

#include <fmt/format.h>

#include <algorithm>

#include "layerstore/errors.h"

namespace kiln {

void GrowingFile::grew(uint64_t size) {
  {
    std::lock_guard lock(mutex_);
    size_ = size;
  }
  changed_.notify_all();
}

void GrowingFile::finish() {
  end(finished_);
}
void GrowingFile::abandon() {
  end(abandoned_);
}

void GrowingFile::end(bool& flag) {
  {
    std::lock_guard lock(mutex_);
    flag = true;
  }
  changed_.notify_all();
}

size_t GrowingFile::Reader::read(std::span<std::byte> buf) {
  uint64_t available = 0;
  {
    std::unique_lock lock(file_.mutex_);
    file_.changed_.wait(lock, [&] { return offset_ < file_.size_ || file_.finished_ || file_.abandoned_; });
    if (file_.abandoned_) throw Error(fmt::format("{}: the download stopped", what_));
    available = file_.size_ - offset_;
  }
  if (available == 0) return 0;
  size_t n =
      PreadReader(file_.fd_, what_, offset_).read(buf.first(std::min<uint64_t>(buf.size(), available)));
  offset_ += n;
  return n;
}

}  // namespace kiln
