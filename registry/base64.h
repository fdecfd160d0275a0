// Base64 as Docker's config files and JWTs use it, on nettle's codec. Internal to the registry
// library (the auth file, the credential helpers, a bearer token's claims).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiln::registry {

// The standard alphabet with `=` padding (Go's base64.StdEncoding, which Docker's config.json
// uses for an `auth` field).
std::string base64_encode(std::string_view data);

// Decodes Go's base64.StdEncoding: padding is required, `\r` and `\n` are skipped, any other
// character outside the alphabet (a space included) makes the input invalid. Unlike Go, pad bits
// that are not zero are refused too ("YR=="): no encoder writes them. Returns nullopt when the
// input is not valid base64.
std::optional<std::string> base64_decode(std::string_view text);

// Decodes the URL-safe alphabet (`-` and `_`) with or without padding, as JWT libraries read a
// token's segments (golang-jwt pads what is missing, then decodes). nullopt when invalid.
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace kiln::registry
