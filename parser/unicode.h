// The few Unicode facts the Dockerfile lexer needs, with Go's semantics, because BuildKit (written
// in Go) is the reference for what a Dockerfile means: UTF-8 decoding as utf8.DecodeRune does it
// (each byte of an invalid sequence is one U+FFFD), and the character classes behind
// unicode.IsLetter, unicode.IsDigit and unicode.IsSpace (Unicode 15.0, the version of Go 1.21+).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kiln::parser::unicode {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

struct DecodedRune {
  char32_t rune;
  std::size_t length;  // bytes consumed: 1 for an invalid byte, which decodes as U+FFFD
};

// Decodes the rune that starts at `pos` (< text.size()).
DecodedRune decode_utf8(std::string_view text, std::size_t pos);

// Appends the UTF-8 encoding of `rune`; one that is no scalar value is written as U+FFFD.
void append_utf8(std::string& out, char32_t rune);

// `text` with every invalid byte replaced by U+FFFD, as a Go conversion through []rune leaves it.
std::string to_valid_utf8(std::string_view text);

bool is_letter(char32_t rune);  // general category L (Lu, Ll, Lt, Lm, Lo)
bool is_digit(char32_t rune);   // general category Nd
bool is_space(char32_t rune);   // property White_Space, which is what Go's unicode.IsSpace tests

}  // namespace kiln::parser::unicode
