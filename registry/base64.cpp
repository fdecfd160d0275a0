#include "registry/base64.h"

#include <nettle/base64.h>

#include <cstdint>

namespace kiln::registry {
namespace {

// nettle skips every kind of white space while decoding; Go skips only line ends.
bool has_blank(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\v' || c == '\f') return true;
  }
  return false;
}

std::optional<std::string> decode_with(base64_decode_ctx& ctx, std::string_view text) {
  std::string out(BASE64_DECODE_LENGTH(text.size()), '\0');
  size_t length = out.size();
  if (!base64_decode_update(&ctx, &length, reinterpret_cast<uint8_t*>(out.data()), text.size(), text.data()))
    return std::nullopt;
  // base64_decode_final refuses input whose last group lacks its padding.
  if (!base64_decode_final(&ctx)) return std::nullopt;
  out.resize(length);
  return out;
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out(BASE64_ENCODE_RAW_LENGTH(data.size()), '\0');
  base64_encode_raw(out.data(), data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (has_blank(text)) return std::nullopt;
  base64_decode_ctx ctx;
  base64_decode_init(&ctx);
  return decode_with(ctx, text);
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (has_blank(text) || text.find_first_of("\r\n") != std::string_view::npos) return std::nullopt;
  std::string padded(text);
  if (padded.size() % 4 != 0) padded.append(4 - padded.size() % 4, '=');
  base64_decode_ctx ctx;
  base64url_decode_init(&ctx);
  return decode_with(ctx, padded);
}

}  // namespace kiln::registry
