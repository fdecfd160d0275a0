// Byte streams and file descriptors. Layers are streamed, never held whole in memory: every stage of
// a pipeline (read, hash, decompress, compress, write) is a Reader or a Writer around the next one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln {

// Pull side. read() returns the number of bytes placed in buf; 0 means end of stream. Errors throw.
class Reader {
 public:
  virtual ~Reader() = default;
  virtual size_t read(std::span<std::byte> buf) = 0;
};

// Push side. write() takes all of data or throws. finish() ends the stream (trailers, flushes); it
// does not finish the writer downstream, whose owner does that.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual void write(std::span<const std::byte> data) = 0;
  virtual void finish() {}
};

// A move-only owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset();

 private:
  int fd_ = -1;
};

// A pipe's two ends, both close-on-exec. Throws SystemError.
struct Pipe {
  Fd read, write;
};
Pipe make_pipe();

// Opens with O_CLOEXEC added; throws SystemError naming the path on failure.
Fd open_or_throw(const std::string& path, int flags, unsigned mode = 0644);
Fd openat_or_throw(int dirfd, const std::string& path, int flags, unsigned mode = 0644);

// Reads from an fd (which it does not own). Retries EINTR.
class FdReader : public Reader {
 public:
  FdReader(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  size_t read(std::span<std::byte> buf) override;

 private:
  int fd_;
  std::string name_;
};

// Reads an fd (which it does not own) from an offset with pread, leaving the file position alone.
class PreadReader : public Reader {
 public:
  PreadReader(int fd, std::string name, uint64_t offset = 0)
      : fd_(fd), name_(std::move(name)), offset_(offset) {}
  size_t read(std::span<std::byte> buf) override;

 private:
  int fd_;
  std::string name_;
  uint64_t offset_;
};

// A PreadReader that owns its descriptor: a stream that outlives the code that opened the file (an
// upload's body, opened again at an offset for each try).
class OwnedPreadReader : public Reader {
 public:
  OwnedPreadReader(Fd fd, std::string name, uint64_t offset = 0)
      : fd_(std::move(fd)), reader_(fd_.get(), std::move(name), offset) {}
  size_t read(std::span<std::byte> buf) override { return reader_.read(buf); }

 private:
  Fd fd_;
  PreadReader reader_;
};

// Reads through `in` and copies every byte read to `copy` (a tee).
class TeeReader : public Reader {
 public:
  TeeReader(Reader& in, Writer& copy) : in_(in), copy_(copy) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = in_.read(buf);
    copy_.write(buf.first(n));
    return n;
  }

 private:
  Reader& in_;
  Writer& copy_;
};

// Lets the first bytes of a stream be looked at (to sniff its format) and then read again.
class PeekReader : public Reader {
 public:
  explicit PeekReader(Reader& in) : in_(in) {}
  // Up to n bytes from the head of the stream (fewer only if it is shorter), not consumed.
  std::span<const std::byte> peek(size_t n);
  size_t read(std::span<std::byte> buf) override;

 private:
  Reader& in_;
  std::vector<std::byte> buffered_;
  size_t pos_ = 0;
};

// Writes to an fd (which it does not own). Retries EINTR and short writes.
class FdWriter : public Writer {
 public:
  FdWriter(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  void write(std::span<const std::byte> data) override;

 private:
  int fd_;
  std::string name_;
};

// Counts bytes on their way to another writer.
class CountingWriter : public Writer {
 public:
  explicit CountingWriter(Writer& next) : next_(next) {}
  void write(std::span<const std::byte> data) override {
    next_.write(data);
    count_ += data.size();
  }
  uint64_t count() const { return count_; }

 private:
  Writer& next_;
  uint64_t count_ = 0;
};

// Discards everything (used to drain a stream whose bytes only need hashing).
class NullWriter : public Writer {
 public:
  void write(std::span<const std::byte>) override {}
};

// Reads a string the caller keeps alive (an archive member written from memory, a context that
// came on stdin).
class StringReader : public Reader {
 public:
  explicit StringReader(std::string_view text) : rest_(text) {}
  size_t read(std::span<std::byte> buf) override;

 private:
  std::string_view rest_;
};

// Collects what is written, in memory (tests, and small documents built as streams).
class StringWriter : public Writer {
 public:
  void write(std::span<const std::byte> data) override;
  std::string text;
};

// Copies a reader to a writer until end of stream; returns the byte count.
uint64_t copy_stream(Reader& in, Writer& out);

// Reads until buf is full or end of stream; returns bytes read.
size_t read_full(Reader& in, std::span<std::byte> buf);

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace kiln
