#include "layerstore/digest.h"

#include <catch2/catch.hpp>

#include "layerstore/errors.h"

using kiln::Digest;

TEST_CASE("a digest holds only valid values", "[digest]") {
  const std::string hex(64, 'a');
  REQUIRE(Digest::parse("sha256:" + hex));
  CHECK(Digest::parse("sha256:" + hex)->str() == "sha256:" + hex);
  CHECK(Digest::parse("sha256:" + hex)->short_id() == std::string(12, 'a'));
  CHECK_FALSE(Digest::parse("sha256:" + std::string(63, 'a')));
  CHECK_FALSE(Digest::parse("sha256:" + std::string(64, 'A')));  // uppercase hex is not canonical
  CHECK_FALSE(Digest::parse("sha256:" + std::string(63, 'a') + "g"));
  CHECK_FALSE(Digest::parse("md5:" + std::string(32, 'a')));
  CHECK_FALSE(Digest::parse(hex));
  CHECK(Digest::parse("sha512:" + std::string(128, '0')));
  CHECK_THROWS_AS(Digest::parse_or_throw("sha256:xyz"), kiln::InvalidInputError);
  CHECK_THROWS_WITH(Digest::parse_or_throw("sha256:xyz", "layer digest"),
                    "invalid layer digest `sha256:xyz`");
}

TEST_CASE("sha256 of known inputs", "[digest]") {
  CHECK(kiln::sha256_of("").str() ==
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(kiln::sha256_of("abc").str() ==
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Streaming in pieces gives the same digest as one update.
  kiln::Sha256 h;
  h.update(kiln::as_bytes("a"));
  h.update(kiln::as_bytes("bc"));
  CHECK(h.finish() == kiln::sha256_of("abc"));
}
