#include "layerstore/digest.h"

#include <openssl/evp.h>

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
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1) {
    throw Error("sha256: cannot initialise OpenSSL digest");
  }
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const std::byte> data) {
  if (!data.empty()) EVP_DigestUpdate(ctx_->md, data.data(), data.size());
}

Digest Sha256::finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md, out, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    hex.push_back(kHex[out[i] >> 4]);
    hex.push_back(kHex[out[i] & 15]);
  }
  // Reset so that a finished hasher can be reused rather than left in an undefined state.
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
  return *Digest::from_sha256_hex(hex);
}

Digest sha256_of(std::string_view data) {
  Sha256 h;
  h.update(as_bytes(data));
  return h.finish();
}

}  // namespace kiln
