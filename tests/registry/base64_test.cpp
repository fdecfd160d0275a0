#include "registry/base64.h"

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using kiln::registry::base64_decode;
using kiln::registry::base64_encode;
using kiln::registry::base64url_decode;

TEST_CASE("base64 encodes with the standard alphabet and padding", "[base64]") {
  // RFC 4648's test vectors, and the bytes that differ between the two alphabets.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
      {"user:p@ss", "dXNlcjpwQHNz"},
      {std::string("\xfb\xff\xbf", 3), "+/+/"},
  };
  for (const auto& [plain, encoded] : cases) {
    INFO(encoded);
    CHECK(base64_encode(plain) == encoded);
    CHECK(base64_decode(encoded) == plain);
  }
}

// What Go's base64.StdEncoding.DecodeString, which Docker's config file reader uses, refuses.
TEST_CASE("base64 decoding refuses what Docker's reader refuses", "[base64]") {
  const std::vector<std::string> invalid = {
      "Zg",        // padding required
      "Zm8",       //
      "Zg=",       //
      "Zg===",     //
      "Z",         //
      "Zg==Zg==",  // nothing after padding
      "====",      //
      "Zm9v!",     // outside the alphabet
      "-_-_",      // the URL alphabet
      "Zm 9v",     // a space
      "Zm9v\t",    //
      "Zh==",      // pad bits that are not zero (Go accepts these; no encoder writes them)
  };
  for (const std::string& text : invalid) {
    INFO(text);
    CHECK(base64_decode(text) == std::nullopt);
  }
  // Go skips line ends.
  CHECK(base64_decode("Zm9v\r\nYmFy") == "foobar");
  CHECK(base64_decode("Zm9vYg==\n") == "foob");
}

TEST_CASE("base64url decodes JWT segments, padded or not", "[base64]") {
  CHECK(base64url_decode("eyJzdWIiOiIxMjM0NTY3ODkwIn0") == R"({"sub":"1234567890"})");
  CHECK(base64url_decode("Zg") == "f");
  CHECK(base64url_decode("Zg==") == "f");
  CHECK(base64url_decode("Zm8") == "fo");
  CHECK(base64url_decode("-_-_") == std::string("\xfb\xff\xbf", 3));
  CHECK(base64url_decode("") == "");
  CHECK(base64url_decode("+/+/") == std::nullopt);
  CHECK(base64url_decode("Z") == std::nullopt);
  CHECK(base64url_decode("Zm8 ") == std::nullopt);
  CHECK(base64url_decode("Zm\n8") == std::nullopt);
}
