#include "parser/text.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

#include "parser/unicode.h"

namespace kiln::parser::text {

std::size_t space_length(std::string_view text, std::size_t pos) {
  if (pos >= text.size()) return 0;
  unicode::DecodedRune decoded = unicode::decode_utf8(text, pos);
  // An invalid byte decodes as U+FFFD, which is no space.
  return unicode::is_space(decoded.rune) ? decoded.length : 0;
}

bool is_space_byte(unsigned char byte) {
  return byte == ' ' || (byte >= '\t' && byte <= '\r') || byte == 0x85 || byte == 0xA0;
}

std::string_view trim_left_space(std::string_view text) {
  std::size_t pos = 0;
  while (std::size_t n = space_length(text, pos)) pos += n;
  return text.substr(pos);
}

std::string_view trim_space(std::string_view text) {
  text = trim_left_space(text);
  // Fast path: a line ending in ASCII needs no decoding from the front to find its end.
  while (!text.empty() && static_cast<unsigned char>(text.back()) < 0x80) {
    if (space_length(text, text.size() - 1) == 0) return text;
    text.remove_suffix(1);
  }
  if (text.empty()) return text;
  // Walk forward remembering where the last non-space character ended; UTF-8 cannot be decoded
  // backwards safely when it may be invalid.
  std::size_t end = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    if (std::size_t n = space_length(text, pos)) {
      pos += n;
    } else {
      ++pos;
      end = pos;
    }
  }
  return text.substr(0, end);
}

std::vector<std::string_view> split_separators(std::string_view text, int limit) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (limit > 0 && static_cast<int>(parts.size()) == limit - 1) break;
    if (is_separator(text[pos])) {
      std::size_t end = pos;
      while (pos < text.size() && is_separator(text[pos])) ++pos;
      parts.push_back(text.substr(start, end - start));
      start = pos;
    } else {
      ++pos;
    }
  }
  parts.push_back(text.substr(start));
  return parts;
}

std::string quote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t pos = 0; pos < text.size();) {
    auto byte = static_cast<unsigned char>(text[pos]);
    if (byte >= 0x80) {
      unicode::DecodedRune decoded = unicode::decode_utf8(text, pos);
      if (decoded.rune == unicode::kReplacementCharacter && decoded.length == 1) {
        out += "\\x";
        out += kHex[byte >> 4];
        out += kHex[byte & 0xF];
      } else {
        out.append(text.substr(pos, decoded.length));
      }
      pos += decoded.length;
      continue;
    }
    if (byte == '"' || byte == '\\') {
      out += '\\';
      out += static_cast<char>(byte);
    } else if (byte == '\n') {
      out += "\\n";
    } else if (byte == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xF];
    } else {
      out += static_cast<char>(byte);
    }
    ++pos;
  }
  out += '"';
  return out;
}

std::optional<long long> parse_integer(std::string_view text, int base) {
  bool negative = !text.empty() && text.front() == '-';
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) text.remove_prefix(1);
  // from_chars takes no sign of its own; the magnitude is read unsigned so that the most
  // negative value still fits.
  unsigned long long magnitude = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), magnitude, base);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  constexpr auto kMax = static_cast<unsigned long long>(std::numeric_limits<long long>::max());
  if (magnitude > kMax + (negative ? 1 : 0)) return std::nullopt;
  if (negative)
    return magnitude == kMax + 1 ? std::numeric_limits<long long>::min() : -static_cast<long long>(magnitude);
  return static_cast<long long>(magnitude);
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string to_upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && to_lower(a) == to_lower(b);
}

namespace {

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the commonest typo
// ("buidl" for "build").
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string closest_match(std::string_view word, const std::vector<std::string_view>& candidates) {
  // Only short words are compared: a suggestion for a 10 KB token is noise, and the distance is
  // quadratic in the lengths.
  if (word.empty() || word.size() > 64) return "";
  std::string lowered = to_lower(word);
  std::string best;
  std::size_t best_distance = 0;
  for (std::string_view candidate : candidates) {
    std::size_t distance = edit_distance(lowered, to_lower(candidate));
    if (best.empty() || distance < best_distance) {
      best = std::string(candidate);
      best_distance = distance;
    }
  }
  // A third of the word's length, at least one edit: "RUNN" → "RUN", "CPY" → "COPY", not "X" → "ARG".
  std::size_t allowed = std::max<std::size_t>(1, lowered.size() / 3);
  if (best_distance == 0 || best_distance > allowed) return "";
  return best;
}

}  // namespace kiln::parser::text
