#include "registry/copy.h"

#include <poll.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/errors.h"

using kiln::Error;
using kiln::UsageError;
using kiln::Writer;
using kiln::registry::BlobPipe;
using kiln::registry::ImageLocation;

namespace {

// Byte i of a test stream: a pattern that shows a lost, repeated or reordered byte.
std::byte pattern(uint64_t i) {
  return static_cast<std::byte>((i * 131 + (i >> 11)) & 0xff);
}

// Writes `total` bytes of the pattern in writes of varying length (1 byte to ~70 KiB).
void write_pattern(Writer& out, uint64_t total) {
  std::vector<std::byte> chunk(70000);
  uint64_t done = 0;
  for (size_t round = 0; done < total; ++round) {
    size_t n = std::min<uint64_t>(total - done, 1 + (round * 7919) % chunk.size());
    for (size_t k = 0; k < n; ++k) chunk[k] = pattern(done + k);
    out.write(std::span(chunk).first(n));
    done += n;
  }
}

// Reads to the end in reads of varying length, checking every byte; returns the count.
uint64_t read_and_check(BlobPipe& pipe) {
  std::vector<std::byte> buf(50000);
  uint64_t done = 0;
  for (size_t round = 0;; ++round) {
    size_t want = 1 + (round * 104729) % buf.size();
    size_t n = pipe.read(std::span(buf).first(want));
    if (n == 0) return done;
    for (size_t k = 0; k < n; ++k)
      if (buf[k] != pattern(done + k)) FAIL("byte " << done + k << " differs");
    done += n;
  }
}

// Waits (bounded) until `pred` holds.
template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

}  // namespace

TEST_CASE("BlobPipe passes a stream through unchanged, in order", "[copy]") {
  for (uint64_t total : {uint64_t{0}, uint64_t{1}, uint64_t{4096}, uint64_t{4097}, uint64_t{10} << 20}) {
    BlobPipe pipe([total](Writer& out, int) { write_pattern(out, total); }, 4, 4096);
    CHECK(read_and_check(pipe) == total);
    std::byte b{};
    CHECK(pipe.read(std::span(&b, 1)) == 0);  // the end stays the end
  }
}

TEST_CASE("BlobPipe holds at most its buffers: a producer ahead of its reader waits", "[copy]") {
  std::atomic<uint64_t> written{0};
  std::atomic<bool> stopped_by_close{false};
  {
    BlobPipe pipe(
        [&](Writer& out, int) {
          std::byte one{};
          try {
            for (;;) {
              out.write(std::span(&one, 1));
              ++written;
            }
          } catch (...) {
            stopped_by_close = true;
            throw;
          }
        },
        4, 1024);
    // Nothing is read: the producer fills the four buffers and waits for room.
    REQUIRE(eventually([&] { return written.load() >= 4 * 1024 - 1; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(written.load() <= 4 * 1024);
    // Reading a buffer's worth lets it go on by about as much, no more.
    std::vector<std::byte> buf(1024);
    size_t got = 0;
    while (got < 1024) got += pipe.read(std::span(buf).first(1024 - got));
    REQUIRE(eventually([&] { return written.load() >= 5 * 1024 - 1; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(written.load() <= 5 * 1024);
  }  // closing the pipe stops the waiting producer, and the destructor joins it
  CHECK(stopped_by_close);
}

TEST_CASE("BlobPipe gives the reader the producer's error", "[copy]") {
  BlobPipe pipe(
      [](Writer& out, int) {
        write_pattern(out, 3000);
        throw Error("get blob sha256:ab: HTTP 500 Internal Server Error");
      },
      4, 1024);
  std::vector<std::byte> buf(1 << 16);
  auto drain = [&] {
    while (pipe.read(buf) > 0) {
    }
  };
  CHECK_THROWS_WITH(drain(), "get blob sha256:ab: HTTP 500 Internal Server Error");
  // And again at the next read: a failed stream does not turn into an end of stream.
  CHECK_THROWS_AS(pipe.read(buf), Error);
}

TEST_CASE("BlobPipe stops its producer when the reader gives up mid-stream", "[copy]") {
  std::atomic<bool> producer_returned{false};
  std::atomic<bool> saw_close{false};
  {
    BlobPipe pipe(
        [&](Writer& out, int) {
          try {
            write_pattern(out, uint64_t{1} << 30);  // far more than is ever read
          } catch (...) {
            saw_close = true;
            producer_returned = true;
            throw;
          }
          producer_returned = true;
        },
        4, 1 << 16);
    std::vector<std::byte> buf(100000);
    CHECK(pipe.read(buf) > 0);
  }
  CHECK(producer_returned);
  CHECK(saw_close);
}

TEST_CASE("BlobPipe tells a producer waiting on its own source that the reader has gone", "[copy]") {
  std::atomic<bool> waiting{false};
  std::atomic<bool> told{false};
  auto start = std::chrono::steady_clock::now();
  {
    BlobPipe pipe(
        [&](Writer& out, int cancel_fd) {
          write_pattern(out, 2048);  // two full buffers: the reader gets them
          // A stalled download: nothing comes for a minute, unless the pipe's reader goes.
          waiting = true;
          pollfd cancel{cancel_fd, POLLIN, 0};
          told = ::poll(&cancel, 1, 60'000) == 1;
        },
        4, 1024);
    std::vector<std::byte> buf(100);
    CHECK(pipe.read(buf) > 0);
    REQUIRE(eventually([&] { return waiting.load(); }));
  }  // the reader gives up: the destructor returns once the producer has seen it
  CHECK(told);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("BlobPipe joins a producer that fails before writing anything", "[copy]") {
  BlobPipe pipe([](Writer&, int) { throw Error("manifest unknown"); });
  std::byte b{};
  CHECK_THROWS_WITH(pipe.read(std::span(&b, 1)), "manifest unknown");
}

TEST_CASE("ImageLocation reads skopeo's transports", "[copy]") {
  ImageLocation r = ImageLocation::parse("docker://busybox");
  CHECK(r.kind == ImageLocation::Kind::Registry);
  CHECK(r.reference->str() == "docker.io/library/busybox:latest");
  r = ImageLocation::parse("127.0.0.1:5000/a/b@sha256:" + std::string(64, 'a'));
  CHECK(r.kind == ImageLocation::Kind::Registry);
  CHECK(r.reference->domain() == "127.0.0.1:5000");
  CHECK(!r.reference->tag());

  ImageLocation o = ImageLocation::parse("oci:/tmp/lay:docker.io/library/busybox:latest");
  CHECK(o.kind == ImageLocation::Kind::OciLayout);
  CHECK(o.path == "/tmp/lay");
  CHECK(o.tag == "docker.io/library/busybox:latest");
  o = ImageLocation::parse("oci:rel/dir");
  CHECK(o.path == "rel/dir");
  CHECK(o.tag.empty());

  ImageLocation a = ImageLocation::parse("oci-archive:/tmp/x.tar:v1");
  CHECK(a.kind == ImageLocation::Kind::OciArchive);
  CHECK(a.path == "/tmp/x.tar");
  CHECK(a.tag == "v1");
  CHECK(a.is_archive());

  ImageLocation d = ImageLocation::parse("docker-archive:/tmp/d.tar:app:2");
  CHECK(d.kind == ImageLocation::Kind::DockerArchive);
  CHECK(d.path == "/tmp/d.tar");
  CHECK(d.reference->str() == "docker.io/library/app:2");
  d = ImageLocation::parse("docker-archive:/tmp/d.tar");
  CHECK(!d.reference);

  CHECK_THROWS_WITH(ImageLocation::parse("dir:/tmp/x"),
                    "`dir:/tmp/x`: transport dir: is not supported (docker://, oci:, oci-archive:, "
                    "docker-archive:)");
  CHECK_THROWS_WITH(ImageLocation::parse("docker:busybox"),
                    "`docker:busybox`: a docker: reference starts with // (docker://NAME[:TAG])");
  CHECK_THROWS_WITH(ImageLocation::parse("oci::tag"), "`oci::tag`: no directory (oci:DIR[:TAG])");
  CHECK_THROWS_AS(ImageLocation::parse("docker://has space:1"), UsageError);
  CHECK_THROWS_AS(ImageLocation::parse("docker-archive:/x.tar:@1"), UsageError);
}
