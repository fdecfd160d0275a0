// Text primitives shared inside the parser. They reproduce Go's string functions where Docker's
// parser relies on their exact behaviour (unicode.IsSpace, strings.TrimSpace, regexp splits).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::parser::text {

// Byte length of the UTF-8 encoded character at `pos` when Go's unicode.IsSpace holds for it
// (ASCII blanks, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000),
// else 0.
std::size_t space_length(std::string_view text, std::size_t pos);

// Go's unicode.IsSpace(rune(byte)): the byte-wise test Docker's flag and HEALTHCHECK splitting use,
// which also counts the Latin-1 bytes 0x85 and 0xA0.
bool is_space_byte(unsigned char byte);

// The ASCII blanks of Docker's `[\t\v\f\r ]+` separator regexp.
inline bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

std::string_view trim_left_space(std::string_view text);  // strings.TrimLeftFunc(s, unicode.IsSpace)
std::string_view trim_space(std::string_view text);       // strings.TrimSpace

// regexp `[\t\v\f\r ]+`.Split(s, limit) (limit <= 0: no limit).
std::vector<std::string_view> split_separators(std::string_view text, int limit = 0);

// `text` in double quotes with `"` and `\` escaped and control or invalid bytes written as \xNN,
// as Go's %q shows a string in messages. Never throws, whatever the bytes.
std::string quote(std::string_view text);

// The whole of `text` as an integer in `base`, with an optional leading + or -, as Go's
// strconv.ParseInt reads it (no blanks, nothing after the digits). nullopt when it is not one or
// does not fit.
std::optional<long long> parse_integer(std::string_view text, int base = 10);

std::string to_lower(std::string_view text);
std::string to_upper(std::string_view text);
bool equals_ignoring_case(std::string_view a, std::string_view b);

// The candidate closest to `word` when it is close enough to be a likely typo, else "".
// Comparison ignores case.
std::string closest_match(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace kiln::parser::text
