#include "parser/unicode.h"

#include <catch2/catch.hpp>
#include <string>

namespace unicode = kiln::parser::unicode;

TEST_CASE("UTF-8 decodes as Go decodes it", "[words]") {
  const auto decoded = [](std::string_view text) {
    const unicode::DecodedRune rune = unicode::decode_utf8(text, 0);
    return std::pair<std::uint32_t, std::size_t>{rune.rune, rune.length};
  };
  using Result = std::pair<std::uint32_t, std::size_t>;
  CHECK(decoded("a") == Result{'a', 1});
  CHECK(decoded("é") == Result{0xE9, 2});
  CHECK(decoded("한") == Result{0xD55C, 3});
  CHECK(decoded("😀") == Result{0x1F600, 4});
  // Each invalid sequence is one U+FFFD of one byte: a stray continuation, a truncated sequence,
  // an overlong form, a surrogate, a code point past U+10FFFF, a lead byte that is never valid.
  for (std::string_view invalid : {"\x80", "\xE2\x82", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80",
                                   "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xFF"}) {
    CHECK(decoded(invalid) == Result{0xFFFD, 1});
  }
  CHECK(unicode::to_valid_utf8("a\xFF\xC3\xA9\xE2\x82") == "a\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD");

  std::string out;
  for (char32_t rune : {U'a', U'é', U'한', U'😀', char32_t{0xD800}, char32_t{0x110000}})
    unicode::append_utf8(out, rune);
  CHECK(out == "aé한😀\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("character classes are Go's, of Unicode 15.0", "[words]") {
  CHECK(unicode::is_letter(U'a'));
  CHECK(unicode::is_letter(0xAA));    // ª, Lo
  CHECK(unicode::is_letter(0x01C5));  // ǅ, Lt
  CHECK(unicode::is_letter(0x02B0));  // ʰ, Lm
  CHECK(unicode::is_letter(U'한'));
  CHECK(unicode::is_letter(0x11F04));  // Kawi, new in 15.0
  CHECK_FALSE(unicode::is_letter(U'_'));
  CHECK_FALSE(unicode::is_letter(U'1'));
  CHECK_FALSE(unicode::is_letter(0x2160));  // Ⅰ, a letter number (Nl), not a letter
  CHECK_FALSE(unicode::is_letter(0x0301));  // combining acute, a mark

  CHECK(unicode::is_digit(U'0'));
  CHECK(unicode::is_digit(0x0661));        // Arabic-Indic one
  CHECK(unicode::is_digit(0x1E4F0));       // Nag Mundari zero, new in 15.0
  CHECK_FALSE(unicode::is_digit(0x00B2));  // superscript two is No
  CHECK_FALSE(unicode::is_digit(U'a'));

  for (char32_t space : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', char32_t{0x85}, char32_t{0xA0},
                         char32_t{0x1680}, char32_t{0x2000}, char32_t{0x200A}, char32_t{0x2028},
                         char32_t{0x2029}, char32_t{0x202F}, char32_t{0x205F}, char32_t{0x3000}}) {
    CHECK(unicode::is_space(space));
  }
  for (char32_t not_space : {char32_t{0x200B}, char32_t{0x180E}, char32_t{0xFEFF}, U'a', char32_t{0}}) {
    CHECK_FALSE(unicode::is_space(not_space));
  }
}
