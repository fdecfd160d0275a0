#include "layerstore/digest.h"

// OpenSSL's one-algorithm SHA-256 functions, deprecated in 3.0 in favour of EVP but kept there: they
// run the same assembly as EVP's SHA-256, but EVP's first use initialises the provider machinery
// (configuration file, method store), 1.5-3 ms added to every kiln command that reads a blob, and
// links 4 MiB of libcrypto where these need 40 KiB.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "layerstore/errors.h"

namespace kiln {
namespace {

bool is_lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::optional<Digest> Digest::parse(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view algorithm = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  if (!is_lower_hex(hex)) return std::nullopt;
  if (algorithm == "sha256" && hex.size() == 64) return Digest(Algorithm::Sha256, std::string(hex));
  if (algorithm == "sha512" && hex.size() == 128) return Digest(Algorithm::Sha512, std::string(hex));
  return std::nullopt;
}

Digest Digest::parse_or_throw(std::string_view text, std::string_view what) {
  auto d = parse(text);
  if (!d) throw InvalidInputError(fmt::format("invalid {} `{}`", what, text));
  return *d;
}

std::optional<Digest> Digest::from_sha256_hex(std::string_view hex) {
  if (hex.size() != 64 || !is_lower_hex(hex)) return std::nullopt;
  return Digest(Algorithm::Sha256, std::string(hex));
}

struct Sha256::Ctx {
  SHA256_CTX state;
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  SHA256_Init(&ctx_->state);
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const std::byte> data) {
  if (!data.empty()) SHA256_Update(&ctx_->state, data.data(), data.size());
}

Digest Sha256::finish() {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256_Final(out, &ctx_->state);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * sizeof out);
  for (unsigned char byte : out) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 15]);
  }
  // Reset so that a finished hasher can be reused rather than left in an undefined state.
  SHA256_Init(&ctx_->state);
  return *Digest::from_sha256_hex(hex);
}

Digest sha256_of(std::string_view data) {
  Sha256 h;
  h.update(as_bytes(data));
  return h.finish();
}

}  // namespace kiln
