#include "layerstore/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "layerstore/errors.h"

namespace kiln {

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Fd::~Fd() {
  reset();
}

void Fd::reset() {
  if (fd_ >= 0) {
    // close() errors after a successful fsync carry no information we could act on.
    ::close(fd_);
    fd_ = -1;
  }
}

Fd open_or_throw(const std::string& path, int flags, unsigned mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno(fmt::format("open `{}`", path));
  return Fd(fd);
}

Fd openat_or_throw(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno(fmt::format("open `{}`", path));
  return Fd(fd);
}

size_t FdReader::read(std::span<std::byte> buf) {
  for (;;) {
    ssize_t n = ::read(fd_, buf.data(), buf.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) throw_errno(fmt::format("read `{}`", name_));
  }
}

size_t PreadReader::read(std::span<std::byte> buf) {
  for (;;) {
    ssize_t n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(offset_));
    if (n >= 0) {
      offset_ += static_cast<uint64_t>(n);
      return static_cast<size_t>(n);
    }
    if (errno != EINTR) throw_errno(fmt::format("read `{}`", name_));
  }
}

void FdWriter::write(std::span<const std::byte> data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("write `{}`", name_));
    }
    data = data.subspan(static_cast<size_t>(n));
  }
}

uint64_t copy_stream(Reader& in, Writer& out) {
  // Not zero-filled: every byte is written by read() before it is used.
  constexpr size_t kSize = 1 << 20;
  auto storage = std::make_unique_for_overwrite<std::byte[]>(kSize);
  std::span<std::byte> buf(storage.get(), kSize);
  uint64_t total = 0;
  for (;;) {
    size_t n = in.read(buf);
    if (n == 0) return total;
    out.write(buf.first(n));
    total += n;
  }
}

size_t read_full(Reader& in, std::span<std::byte> buf) {
  size_t got = 0;
  while (got < buf.size()) {
    size_t n = in.read(buf.subspan(got));
    if (n == 0) break;
    got += n;
  }
  return got;
}

std::span<const std::byte> PeekReader::peek(size_t n) {
  while (buffered_.size() < n) {
    std::byte chunk[64];
    size_t got = in_.read(std::span(chunk).first(std::min(n - buffered_.size(), sizeof chunk)));
    if (got == 0) break;
    buffered_.insert(buffered_.end(), chunk, chunk + got);
  }
  return std::span(buffered_).first(std::min(n, buffered_.size()));
}

size_t PeekReader::read(std::span<std::byte> buf) {
  if (pos_ < buffered_.size()) {
    size_t n = std::min(buf.size(), buffered_.size() - pos_);
    std::memcpy(buf.data(), buffered_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  return in_.read(buf);
}

size_t StringReader::read(std::span<std::byte> buf) {
  size_t n = std::min(buf.size(), rest_.size());
  std::memcpy(buf.data(), rest_.data(), n);
  rest_.remove_prefix(n);
  return n;
}

void StringWriter::write(std::span<const std::byte> data) {
  text.append(reinterpret_cast<const char*>(data.data()), data.size());
}

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("create a pipe");
  return {Fd(fds[0]), Fd(fds[1])};
}

}  // namespace kiln
