#include "layerstore/compress.h"

#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>

#include "layerstore/errors.h"
#include "tests/skip.h"

namespace {

using kiln::Compression;

std::span<const std::byte> bytes_of(const std::string& s) {
  return kiln::as_bytes(s);
}

class StringReader : public kiln::Reader {
 public:
  explicit StringReader(std::string data, size_t max_chunk = SIZE_MAX)
      : data_(std::move(data)), max_chunk_(max_chunk) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = std::min({buf.size(), data_.size() - pos_, max_chunk_});
    std::memcpy(buf.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string data_;
  size_t max_chunk_;
  size_t pos_ = 0;
};

using kiln::StringWriter;

// Yields `size` zero bytes without holding them.
class ZeroReader : public kiln::Reader {
 public:
  explicit ZeroReader(uint64_t size) : left_(size) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), left_));
    std::memset(buf.data(), 0, n);
    left_ -= n;
    return n;
  }

 private:
  uint64_t left_;
};

// Fails once more than `limit` bytes have been written to it, like a full disk.
class FailingWriter : public kiln::Writer {
 public:
  explicit FailingWriter(size_t limit) : limit_(limit) {}
  void write(std::span<const std::byte> data) override {
    written_ += data.size();
    if (written_ > limit_) throw kiln::SystemError("write `blob`", ENOSPC);
  }

 private:
  size_t limit_;
  size_t written_ = 0;
};

std::string random_bytes(size_t n, uint32_t seed = 1) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

// Text-like data that compresses several times over, with enough variety to exercise the matcher.
std::string compressible_bytes(size_t n, uint32_t seed = 2) {
  static const char* kWords[] = {"layer ", "image ", "manifest ", "config ", "digest ",   "sha256 ",   "tar ",
                                 "gzip ",  "zstd ",  "blob ",     "\n",      "/usr/lib/", "{\"a\":1} "};
  std::mt19937 gen(seed);
  std::string s;
  s.reserve(n + 16);
  while (s.size() < n) s += kWords[gen() % std::size(kWords)];
  s.resize(n);
  return s;
}

std::string compress(Compression c, const std::string& data, kiln::CompressOptions options = {},
                     size_t write_chunk = SIZE_MAX) {
  StringWriter out;
  auto compressor = kiln::make_compressor(c, out, options);
  for (size_t pos = 0; pos < data.size(); pos += write_chunk) {
    compressor->write(bytes_of(data).subspan(pos, std::min(write_chunk, data.size() - pos)));
  }
  compressor->finish();
  return out.text;
}

std::string read_all(kiln::Reader& r) {
  StringWriter out;
  kiln::copy_stream(r, out);
  return out.text;
}

std::string decompress(Compression c, const std::string& data, kiln::DecompressLimits limits = {}) {
  StringReader in(data);
  auto reader = kiln::make_decompressor(c, in, limits);
  return read_all(*reader);
}

// Runs a shell command with `input` in a temporary file as $1 and returns its standard output, or
// nullopt when the command failed (including when the tool is missing).
std::optional<std::string> run_on_file(const std::string& command, const std::string& input) {
  char path[] = "/tmp/kiln-compress-test-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path, std::ios::binary) << input;
  std::string full = "set -- " + std::string(path) + "; " + command;
  FILE* p = ::popen(full.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string output;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  int status = ::pclose(p);
  ::unlink(path);
  if (status != 0) return std::nullopt;
  return output;
}

bool have_tool(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// bzip2 and xz test streams come from libarchive's write side, so no external tool is needed.
std::string libarchive_compress(Compression c, const std::string& data) {
  archive* a = archive_write_new();
  REQUIRE(a != nullptr);
  REQUIRE(archive_write_set_format_raw(a) == ARCHIVE_OK);
  REQUIRE((c == Compression::Bzip2 ? archive_write_add_filter_bzip2(a) : archive_write_add_filter_xz(a)) ==
          ARCHIVE_OK);
  std::string out(data.size() + (1 << 16), '\0');
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, out.data(), out.size(), &used) == ARCHIVE_OK);
  archive_entry* entry = archive_entry_new();
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_pathname(entry, "data");
  REQUIRE(archive_write_header(a, entry) == ARCHIVE_OK);
  archive_entry_free(entry);
  if (!data.empty())
    REQUIRE(archive_write_data(a, data.data(), data.size()) == static_cast<la_ssize_t>(data.size()));
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
  out.resize(used);
  return out;
}

const size_t kBlock = 128 << 10;
const std::vector<size_t> kSizes = {0, 1, 100, kBlock - 1, kBlock, kBlock + 1, 5 * kBlock + 12345, 3 << 20};

}  // namespace

TEST_CASE("compression names parse and print", "[compress]") {
  CHECK(kiln::compression_name(Compression::None) == "none");
  CHECK(kiln::compression_name(Compression::Gzip) == "gzip");
  CHECK(kiln::compression_name(Compression::Zstd) == "zstd");
  CHECK(kiln::compression_name(Compression::Bzip2) == "bzip2");
  CHECK(kiln::compression_name(Compression::Xz) == "xz");
  CHECK(kiln::parse_compression("none") == Compression::None);
  CHECK(kiln::parse_compression("uncompressed") == Compression::None);
  CHECK(kiln::parse_compression("gzip") == Compression::Gzip);
  CHECK(kiln::parse_compression("zstd") == Compression::Zstd);
  CHECK_FALSE(kiln::parse_compression("xz"));
  CHECK_FALSE(kiln::parse_compression("bzip2"));
  CHECK_FALSE(kiln::parse_compression("GZIP"));
  CHECK_FALSE(kiln::parse_compression(""));
}

TEST_CASE("detect_compression recognises each magic", "[compress]") {
  auto detect = [](std::string s) { return kiln::detect_compression(bytes_of(s)); };
  CHECK(detect("\x1f\x8b\x08\x00\x00\x00") == Compression::Gzip);
  CHECK(detect("\x1f\x8b") == Compression::Gzip);
  CHECK(detect(std::string("\x28\xb5\x2f\xfd\x04\x00", 6)) == Compression::Zstd);
  CHECK(detect("BZh91AY") == Compression::Bzip2);
  CHECK(detect(std::string("\xfd"
                           "7zXZ\0",
                           6)) == Compression::Xz);
  CHECK(detect(std::string("\xfd"
                           "7zXZ",
                           5)) == Compression::None);  // too short to be sure
  CHECK(detect("\x1f") == Compression::None);
  CHECK(detect("") == Compression::None);
  CHECK(detect("etc/passwd") == Compression::None);
  CHECK(detect(std::string(6, '\0')) == Compression::None);
  // The real encoders' output is recognised, not just hand-written magics.
  CHECK(detect(compress(Compression::Gzip, "x")) == Compression::Gzip);
  CHECK(detect(compress(Compression::Zstd, "x")) == Compression::Zstd);
  CHECK(detect(libarchive_compress(Compression::Bzip2, "x")) == Compression::Bzip2);
  CHECK(detect(libarchive_compress(Compression::Xz, "x")) == Compression::Xz);
}

TEST_CASE("every format round-trips across sizes", "[compress]") {
  for (size_t size : kSizes) {
    for (bool random : {true, false}) {
      const std::string data =
          random ? random_bytes(size, static_cast<uint32_t>(size)) : compressible_bytes(size);
      for (Compression c : {Compression::None, Compression::Gzip, Compression::Zstd}) {
        for (int threads : {1, 3}) {
          INFO(kiln::compression_name(c)
               << " size " << size << (random ? " random" : " text") << " threads " << threads);
          std::string packed = compress(c, data, {.level = -1, .threads = threads});
          CHECK(decompress(c, packed) == data);
          if (!random && size >= kBlock && c != Compression::None) CHECK(packed.size() < data.size() / 2);
        }
      }
    }
  }
}

TEST_CASE("bzip2 and xz streams decompress", "[compress]") {
  for (Compression c : {Compression::Bzip2, Compression::Xz}) {
    for (size_t size : {size_t{0}, size_t{1}, kBlock, size_t{2} << 20}) {
      INFO(kiln::compression_name(c) << " size " << size);
      const std::string data = compressible_bytes(size);
      CHECK(decompress(c, libarchive_compress(c, data)) == data);
    }
    std::string packed = libarchive_compress(c, compressible_bytes(1 << 20));
    CHECK_THROWS_WITH(decompress(c, packed.substr(0, packed.size() / 2)),
                      Catch::Contains("unexpected end of stream"));
    CHECK_THROWS_AS(decompress(c, "not compressed at all"), kiln::InvalidInputError);
  }
  CHECK_THROWS_WITH(decompress(Compression::Bzip2, "BZh9"), "bzip2: unexpected end of stream");
  CHECK_THROWS_WITH(decompress(Compression::Bzip2, libarchive_compress(Compression::Xz, "x")),
                    "bzip2: not bzip2-compressed data");
  CHECK_THROWS_WITH(decompress(Compression::Xz, "plain text"), "xz: not xz-compressed data");
}

TEST_CASE("bzip2 and xz cannot be written", "[compress]") {
  StringWriter out;
  CHECK_THROWS_AS(kiln::make_compressor(Compression::Bzip2, out), kiln::InvalidInputError);
  CHECK_THROWS_AS(kiln::make_compressor(Compression::Xz, out), kiln::InvalidInputError);
  CHECK_THROWS_AS(kiln::make_compressor(Compression::Gzip, out, {.level = 10}), kiln::InvalidInputError);
  CHECK_THROWS_AS(kiln::make_compressor(Compression::Zstd, out, {.level = 99}), kiln::InvalidInputError);
}

TEST_CASE("gzip output has a fixed header and a correct trailer", "[compress][gzip]") {
  const std::string data = compressible_bytes(700000);
  std::string packed = compress(Compression::Gzip, data);
  REQUIRE(packed.size() > 18);
  // magic, deflate, no flags, mtime 0, "fastest" at the default level (1), OS unknown (as Go writes it)
  CHECK(packed.substr(0, 10) == std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff", 10));
  auto le32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
      v = (v << 8) | static_cast<unsigned char>(packed[at + static_cast<size_t>(i)]);
    return v;
  };
  CHECK(le32(packed.size() - 4) == data.size());
  CHECK(le32(packed.size() - 8) == crc32_z(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
  CHECK(compress(Compression::Gzip, "", {.level = 9}).substr(8, 2) == "\x02\xff");
  CHECK(compress(Compression::Gzip, "", {.level = 1}).substr(8, 2) == "\x04\xff");
  CHECK(compress(Compression::Gzip, "", {.level = 6}).substr(8, 2) == std::string("\x00\xff", 2));
}

// zlib's own inflate, not kiln's reader (ISA-L's): every level's output must be standard gzip.
std::string zlib_gunzip(const std::string& packed) {
  z_stream stream{};
  REQUIRE(inflateInit2(&stream, 15 + 16) == Z_OK);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
  stream.avail_in = static_cast<uInt>(packed.size());
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc == Z_OK) {
    stream.next_out = reinterpret_cast<Bytef*>(buf);
    stream.avail_out = sizeof buf;
    rc = inflate(&stream, Z_NO_FLUSH);
    out.append(buf, sizeof buf - stream.avail_out);
  }
  inflateEnd(&stream);
  CHECK(rc == Z_STREAM_END);
  CHECK(stream.avail_in == 0);
  return out;
}

TEST_CASE("every gzip level writes standard gzip, ISA-L's (1-3) and zlib's (0, 4-9)", "[compress][gzip]") {
  const std::string data =
      compressible_bytes(700000) + random_bytes(300000, 5) + compressible_bytes(kBlock + 1, 6);
  std::vector<size_t> sizes;
  for (int level = 0; level <= 9; ++level) {
    INFO("level " << level);
    for (int threads : {1, 2}) {
      const std::string packed = compress(Compression::Gzip, data, {.level = level, .threads = threads});
      CHECK(zlib_gunzip(packed) == data);
      CHECK(decompress(Compression::Gzip, packed) == data);
      if (threads == 1) sizes.push_back(packed.size());
    }
  }
  // Level 0 stores; every other level compresses the text and stores the noise (within 1%).
  CHECK(sizes[0] > data.size());
  for (int level = 1; level <= 9; ++level) {
    INFO("level " << level);
    CHECK(sizes[static_cast<size_t>(level)] < 300000 * 101 / 100 + (data.size() - 300000) / 2);
  }
}

TEST_CASE("reproducible gzip is zlib's level 4, the same bytes on any CPU", "[compress][gzip]") {
  const std::string data = compressible_bytes(1 << 20, 8) + random_bytes(200000, 9);
  const std::string reproducible = compress(Compression::Gzip, data, {.reproducible = true});
  CHECK(reproducible == compress(Compression::Gzip, data, {.level = 4, .threads = 1}));
  CHECK(reproducible != compress(Compression::Gzip, data));
  // An explicit level wins over the reproducible default.
  CHECK(compress(Compression::Gzip, data, {.level = 1, .reproducible = true}) ==
        compress(Compression::Gzip, data, {.level = 1}));
}

TEST_CASE("gzip output is identical whatever the thread count and write sizes", "[compress][gzip]") {
  const std::string data =
      compressible_bytes(3 << 20) + random_bytes(1 << 20) + compressible_bytes(777777, 9);
  const std::string reference = compress(Compression::Gzip, data, {.threads = 1});
  CHECK(compress(Compression::Gzip, data, {.threads = 2}) == reference);
  CHECK(compress(Compression::Gzip, data, {.threads = 4}) == reference);
  CHECK(compress(Compression::Gzip, data, {.threads = 4}, 4093) == reference);
  CHECK(compress(Compression::Gzip, data, {.threads = 0}, 1 << 20) == reference);
}

TEST_CASE("zstd output is identical whatever the thread count", "[compress][zstd]") {
  const std::string data = compressible_bytes(12 << 20);
  const std::string reference = compress(Compression::Zstd, data, {.threads = 1});
  CHECK(compress(Compression::Zstd, data, {.threads = 2}) == reference);
  CHECK(compress(Compression::Zstd, data, {.threads = 4}, 65537) == reference);
}

TEST_CASE("parallel gzip compresses nearly as well as one deflate stream", "[compress][gzip]") {
  const std::string data = compressible_bytes(4 << 20) + random_bytes(256 << 10);
  uLongf single_size = compressBound(static_cast<uLong>(data.size()));
  std::string single(single_size, '\0');
  REQUIRE(compress2(reinterpret_cast<Bytef*>(single.data()), &single_size,
                    reinterpret_cast<const Bytef*>(data.data()), static_cast<uLong>(data.size()), 6) == Z_OK);
  size_t parallel_size = compress(Compression::Gzip, data, {.level = 6, .threads = 2}).size();
  CHECK(static_cast<double>(parallel_size) < 1.01 * static_cast<double>(single_size));
}

TEST_CASE("noise costs almost nothing to store and text beside it still shrinks", "[compress][gzip]") {
  const std::string noise = random_bytes(4 << 20, 7);
  const std::string stored = compress(Compression::Gzip, noise, {.threads = 2});
  // Stored deflate blocks cost 5 bytes per 64 KiB; deflating noise at the default level would cost about the
  // same size but several times the time, which is what the sampling avoids.
  CHECK(stored.size() < noise.size() + noise.size() / 1000);
  StringReader in(stored);
  auto back = kiln::make_decompressor(Compression::Gzip, in);
  CHECK(read_all(*back) == noise);

  // Text between noise is still compressed: the decision is per 128 KiB block.
  const std::string text = compressible_bytes(2 << 20, 5);
  const std::string mixed = noise.substr(0, 1 << 20) + text + noise.substr(1 << 20, 1 << 20);
  const std::string packed = compress(Compression::Gzip, mixed, {.threads = 2});
  CHECK(packed.size() < (2 << 20) + (1 << 20));
  StringReader in2(packed);
  auto back2 = kiln::make_decompressor(Compression::Gzip, in2);
  CHECK(read_all(*back2) == mixed);
}

TEST_CASE("the gzip tool decodes kiln's gzip, and kiln decodes the tool's", "[compress]") {
  if (!have_tool("gzip")) KILN_SKIP("needs the gzip tool");
  const std::string data = compressible_bytes(2 << 20) + random_bytes(300000);
  CHECK(run_on_file("gzip -dc \"$1\"", compress(Compression::Gzip, data, {.threads = 2})) == data);
  CHECK(run_on_file("gzip -dc \"$1\"", compress(Compression::Gzip, "")) == "");
  auto theirs = run_on_file("gzip -c -9 \"$1\"", data);
  REQUIRE(theirs);
  CHECK(decompress(Compression::Gzip, *theirs) == data);
}

TEST_CASE("the zstd tool decodes kiln's zstd, and kiln decodes the tool's", "[compress]") {
  if (!have_tool("zstd")) KILN_SKIP("needs the zstd tool (installed by test.sh)");
  const std::string data = compressible_bytes(2 << 20) + random_bytes(300000);
  CHECK(run_on_file("zstd -q -dc \"$1\"", compress(Compression::Zstd, data, {.threads = 2})) == data);
  auto theirs = run_on_file("zstd -q -c -19 \"$1\"", data);
  REQUIRE(theirs);
  CHECK(decompress(Compression::Zstd, *theirs) == data);
}

TEST_CASE("concatenated gzip members and zstd frames read as one stream", "[compress]") {
  const std::string a = compressible_bytes(300000, 3);
  const std::string b = random_bytes(5000, 4);
  CHECK(decompress(Compression::Gzip, compress(Compression::Gzip, a) + compress(Compression::Gzip, b)) ==
        a + b);
  CHECK(decompress(Compression::Gzip, compress(Compression::Gzip, "") + compress(Compression::Gzip, b)) == b);
  CHECK(decompress(Compression::Zstd, compress(Compression::Zstd, a) + compress(Compression::Zstd, b)) ==
        a + b);
}

TEST_CASE("truncated streams are refused", "[compress]") {
  const std::string data = compressible_bytes(1 << 20);
  const std::string gz = compress(Compression::Gzip, data);
  for (size_t keep :
       {size_t{0}, size_t{1}, size_t{5}, size_t{10}, gz.size() / 2, gz.size() - 4, gz.size() - 1}) {
    INFO("gzip keeping " << keep << " of " << gz.size());
    CHECK_THROWS_WITH(decompress(Compression::Gzip, gz.substr(0, keep)), "gzip: unexpected end of stream");
  }
  const std::string zst = compress(Compression::Zstd, data);
  for (size_t keep : {size_t{0}, size_t{3}, zst.size() / 2, zst.size() - 1}) {
    INFO("zstd keeping " << keep << " of " << zst.size());
    CHECK_THROWS_WITH(decompress(Compression::Zstd, zst.substr(0, keep)), "zstd: unexpected end of stream");
  }
}

TEST_CASE("corrupt streams are refused", "[compress]") {
  const std::string data = compressible_bytes(1 << 20);
  std::string gz = compress(Compression::Gzip, data);
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 0x55;
  CHECK_THROWS_WITH(decompress(Compression::Gzip, bad_crc), "gzip: corrupt data: incorrect data check");
  std::string bad_body = gz;
  for (size_t i = 100; i < 200; ++i) bad_body[i] = '\xff';
  CHECK_THROWS_AS(decompress(Compression::Gzip, bad_body), kiln::InvalidInputError);
  CHECK_THROWS_WITH(decompress(Compression::Gzip, "plain text, not gzip"),
                    "gzip: corrupt data: incorrect header check");

  std::string zst = compress(Compression::Zstd, data);
  std::string bad_zst = zst;
  for (size_t i = zst.size() / 2; i < zst.size() / 2 + 64; ++i) bad_zst[i] ^= 0x5a;
  CHECK_THROWS_WITH(decompress(Compression::Zstd, bad_zst), Catch::StartsWith("zstd: corrupt data: "));
  CHECK_THROWS_WITH(decompress(Compression::Zstd, "plain text, not zstd"),
                    Catch::StartsWith("zstd: corrupt data: "));
}

TEST_CASE("trailing garbage after a gzip member is refused", "[compress][gzip]") {
  const std::string gz = compress(Compression::Gzip, compressible_bytes(10000));
  for (std::string tail :
       {std::string(1, '\0'), std::string(512, '\0'), std::string("\x1f"), std::string("junk")}) {
    INFO("tail of " << tail.size() << " bytes");
    CHECK_THROWS_WITH(decompress(Compression::Gzip, gz + tail),
                      "gzip: trailing garbage after the compressed stream");
  }
  CHECK_THROWS_AS(decompress(Compression::Zstd, compress(Compression::Zstd, "abc") + "junk!"),
                  kiln::InvalidInputError);
}

TEST_CASE("decompression bombs are refused past the grace", "[compress]") {
  const uint64_t size = 200ull << 20;
  auto pack_zeros = [&](Compression c) {
    ZeroReader zeros(size);
    StringWriter out;
    auto compressor = kiln::make_compressor(c, out, {.level = 1, .threads = 2});
    kiln::copy_stream(zeros, *compressor);
    compressor->finish();
    return out.text;
  };
  const std::string zst = pack_zeros(Compression::Zstd);
  const std::string gz = pack_zeros(Compression::Gzip);

  auto drain = [](Compression c, const std::string& packed, kiln::DecompressLimits limits) {
    StringReader in(packed);
    auto reader = kiln::make_decompressor(c, in, limits);
    kiln::NullWriter sink;
    return kiln::copy_stream(*reader, sink);
  };
  // zstd packs zeros far beyond the default ratio; gzip tops out near 1032:1, so it needs a lower one.
  CHECK_THROWS_WITH(
      drain(Compression::Zstd, zst, {.max_ratio = 1100, .grace_bytes = 1 << 20}),
      Catch::StartsWith("zstd: decompression bomb: ") && Catch::EndsWith("exceeds the 1100:1 limit"));
  CHECK_THROWS_WITH(
      drain(Compression::Gzip, gz, {.max_ratio = 100, .grace_bytes = 1 << 20}),
      Catch::StartsWith("gzip: decompression bomb: ") && Catch::EndsWith("exceeds the 100:1 limit"));
  CHECK(drain(Compression::Gzip, gz, {}) == size);  // well-formed gzip passes the default limit
  CHECK(drain(Compression::Zstd, zst, {.max_ratio = 0, .grace_bytes = 0}) == size);
  CHECK(drain(Compression::Gzip, gz, {.max_ratio = 0, .grace_bytes = 0}) == size);
  // Within the grace nothing is refused, however high the ratio.
  CHECK(drain(Compression::Zstd, zst, {.max_ratio = 1100, .grace_bytes = size}) == size);

  const std::string xz = libarchive_compress(Compression::Xz, std::string(32 << 20, '\0'));
  CHECK_THROWS_WITH(drain(Compression::Xz, xz, {.max_ratio = 1100, .grace_bytes = 1 << 20}),
                    Catch::Contains("xz: decompression bomb"));
}

TEST_CASE("open_decompressed sniffs without losing bytes, even one byte at a time", "[compress]") {
  const std::string data = compressible_bytes(400000);
  struct Case {
    Compression c;
    std::string packed;
  };
  const Case cases[] = {
      {Compression::None, data},
      {Compression::Gzip, compress(Compression::Gzip, data)},
      {Compression::Zstd, compress(Compression::Zstd, data)},
      {Compression::Bzip2, libarchive_compress(Compression::Bzip2, data)},
      {Compression::Xz, libarchive_compress(Compression::Xz, data)},
  };
  for (const auto& c : cases) {
    for (size_t chunk : {size_t{1}, size_t{4}, SIZE_MAX}) {
      INFO(kiln::compression_name(c.c) << " chunk " << chunk);
      StringReader in(c.packed, chunk);
      Compression found = Compression::Gzip;
      auto reader = kiln::open_decompressed(in, &found);
      CHECK(found == c.c);
      CHECK(read_all(*reader) == data);
    }
  }
  // Streams shorter than the sniff come through untouched.
  for (std::string tiny : {std::string(), std::string("a"), std::string("abcde")}) {
    StringReader in(tiny, 1);
    Compression found = Compression::Gzip;
    auto reader = kiln::open_decompressed(in, &found);
    CHECK(found == Compression::None);
    CHECK(read_all(*reader) == tiny);
  }
  StringReader in(std::string("\x1f\x8b"), 1);
  Compression found = Compression::None;
  auto reader = kiln::open_decompressed(in, &found);
  CHECK(found == Compression::Gzip);
  CHECK_THROWS_WITH(read_all(*reader), "gzip: unexpected end of stream");
}

TEST_CASE("compressors clean up when never finished or when the output fails", "[compress]") {
  const std::string data = random_bytes(5 << 20);
  for (Compression c : {Compression::Gzip, Compression::Zstd}) {
    INFO(kiln::compression_name(c));
    {
      StringWriter out;
      auto compressor = kiln::make_compressor(c, out, {.threads = 4});
      compressor->write(bytes_of(data));
    }  // destroyed mid-stream: must join its threads, not hang or terminate
    {
      StringWriter out;
      auto compressor = kiln::make_compressor(c, out, {.threads = 4});
    }
    FailingWriter full(1 << 20);
    auto compressor = kiln::make_compressor(c, full, {.threads = 4});
    CHECK_THROWS_AS(
        [&] {
          for (int i = 0; i < 4; ++i) compressor->write(bytes_of(data));
          compressor->finish();
        }(),
        kiln::SystemError);
  }
  // A compressor that has failed refuses further use rather than writing a stream with a hole.
  for (Compression c : {Compression::Gzip, Compression::Zstd}) {
    FailingWriter full(1000);
    auto compressor = kiln::make_compressor(c, full, {.threads = 1});
    CHECK_THROWS_AS(
        [&] {
          compressor->write(bytes_of(data));
          compressor->finish();
        }(),
        kiln::SystemError);
    CHECK_THROWS_WITH(compressor->write(bytes_of(data)), Catch::Contains("after an earlier error"));
  }
}
