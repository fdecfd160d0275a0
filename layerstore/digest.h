// A content digest ("sha256:<64 hex>") that can only hold a valid value, and streaming hashers.
#pragma once

#include <fmt/format.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "layerstore/io.h"

namespace kiln {

class Digest {
 public:
  enum class Algorithm { Sha256, Sha512 };

  // Returns nullopt unless text is "<algorithm>:<lowercase hex of the algorithm's length>".
  static std::optional<Digest> parse(std::string_view text);
  // Same, but throws InvalidInputError naming `what` and the bad text.
  static Digest parse_or_throw(std::string_view text, std::string_view what = "digest");
  // Builds a sha256 digest from 64 lowercase hex characters; nullopt otherwise.
  static std::optional<Digest> from_sha256_hex(std::string_view hex);

  Algorithm algorithm() const { return algorithm_; }
  std::string_view algorithm_name() const { return algorithm_ == Algorithm::Sha256 ? "sha256" : "sha512"; }
  const std::string& hex() const { return hex_; }
  std::string str() const { return std::string(algorithm_name()) + ":" + hex_; }
  // The first 12 hex characters, as Docker shows image IDs.
  std::string short_id() const { return hex_.substr(0, 12); }

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  Digest(Algorithm algorithm, std::string hex) : algorithm_(algorithm), hex_(std::move(hex)) {}
  Algorithm algorithm_;
  std::string hex_;
};

// Incremental SHA-256 (nettle's, on SHA-NI where the CPU has it).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const std::byte> data);
  Digest finish();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

Digest sha256_of(std::string_view data);

// Hashes and counts everything that passes through on its way to the next writer.
class HashingWriter : public Writer {
 public:
  explicit HashingWriter(Writer& next) : next_(next) {}
  void write(std::span<const std::byte> data) override {
    hash_.update(data);
    size_ += data.size();
    next_.write(data);
  }
  Digest digest() { return hash_.finish(); }
  uint64_t size() const { return size_; }

 private:
  Writer& next_;
  Sha256 hash_;
  uint64_t size_ = 0;
};

// Hashes and counts everything read through it.
class HashingReader : public Reader {
 public:
  explicit HashingReader(Reader& in) : in_(in) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = in_.read(buf);
    hash_.update(buf.first(n));
    size_ += n;
    return n;
  }
  Digest digest() { return hash_.finish(); }
  uint64_t size() const { return size_; }

 private:
  Reader& in_;
  Sha256 hash_;
  uint64_t size_ = 0;
};

}  // namespace kiln

template <>
struct fmt::formatter<kiln::Digest> : fmt::formatter<std::string> {
  auto format(const kiln::Digest& d, format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.str(), ctx);
  }
};
