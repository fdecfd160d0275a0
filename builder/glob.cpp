#include "builder/glob.h"

#include "parser/unicode.h"

namespace kiln::builder {

namespace {

using parser::unicode::decode_utf8;
using parser::unicode::kReplacementCharacter;

// The end of the chunk that starts at `pos` (after its stars): Go cuts a pattern at each `*` that
// is not inside brackets, where "inside" is tracked loosely ("[" opens, "]" closes, `\` skips the
// next byte), independently of how the class is then parsed. Matching that loose reading is what
// keeps patterns such as `[!]*]` reading as Go reads them (the class `[!]`, a star, then `]`).
std::size_t chunk_end(std::string_view pattern, std::size_t pos) {
  bool in_brackets = false;
  for (; pos < pattern.size(); ++pos) {
    switch (pattern[pos]) {
      case '\\':
        if (pos + 1 < pattern.size()) ++pos;
        break;
      case '[':
        in_brackets = true;
        break;
      case ']':
        in_brackets = false;
        break;
      case '*':
        if (!in_brackets) return pos;
        break;
      default:
        break;
    }
  }
  return pos;
}

}  // namespace

GlobPattern::GlobPattern(std::string_view pattern) : text_(pattern) {
  // A class character as Go's getEsc reads it: not `-` or `]` where a character is due, `\`
  // escapes, valid UTF-8, and the class must go on after it.
  auto class_char = [&](std::string_view chunk, std::size_t& pos, char32_t& rune,
                        bool range_end) -> std::optional<std::string> {
    if (pos >= chunk.size()) return "`[` is never closed";
    if (chunk[pos] == '-' || chunk[pos] == ']') {
      if (range_end) return "a range in a character class has no end";
      return chunk[pos] == '-' ? "`-` where a character class expects a character" : "empty character class";
    }
    if (chunk[pos] == '\\') {
      ++pos;
      if (pos >= chunk.size()) return "`[` is never closed";
    }
    auto decoded = decode_utf8(chunk, pos);
    if (decoded.rune == kReplacementCharacter && decoded.length == 1) {
      return "a character class holds a byte that is not UTF-8";
    }
    rune = decoded.rune;
    pos += decoded.length;
    if (pos >= chunk.size()) return "`[` is never closed";
    return std::nullopt;
  };

  std::size_t pos = 0;
  while (pos < pattern.size()) {
    Chunk chunk;
    // A malformed chunk keeps the elements read so far; matching stops at its start anyway.
    auto fail = [&](std::string reason) {
      chunk.malformed = true;
      if (malformed_reason_.empty()) malformed_reason_ = std::move(reason);
    };
    while (pos < pattern.size() && pattern[pos] == '*') {
      chunk.star = true;
      ++pos;
    }
    std::size_t end = chunk_end(pattern, pos);
    std::string_view text = pattern.substr(0, end);  // indices stay those of the whole pattern
    chunk.first_element = static_cast<std::uint32_t>(elements_.size());
    while (pos < end && !chunk.malformed) {
      Element element{};
      switch (text[pos]) {
        case '[': {
          ++pos;
          element.kind = Element::Kind::char_class;
          if (pos < end && text[pos] == '^') {
            element.negated = true;
            ++pos;
          }
          element.first_range = static_cast<std::uint32_t>(ranges_.size());
          for (bool first = true; !chunk.malformed; first = false) {
            if (!first && pos < end && text[pos] == ']') {
              ++pos;
              break;
            }
            Range range{};
            if (auto error = class_char(text, pos, range.low, false)) {
              fail(*error);
              break;
            }
            range.high = range.low;
            if (text[pos] == '-') {
              ++pos;
              if (auto error = class_char(text, pos, range.high, true)) {
                fail(*error);
                break;
              }
            }
            ranges_.push_back(range);
          }
          element.end_range = static_cast<std::uint32_t>(ranges_.size());
          break;
        }
        case '?':
          element.kind = Element::Kind::any_rune;
          ++pos;
          break;
        case '\\':
          ++pos;
          if (pos >= end) {
            fail("`\\` at the end escapes nothing");
            break;
          }
          element.kind = Element::Kind::byte;
          element.byte = text[pos++];
          break;
        default:
          element.kind = Element::Kind::byte;
          element.byte = text[pos++];
          break;
      }
      elements_.push_back(element);
    }
    pos = end;
    chunk.end_element = static_cast<std::uint32_t>(elements_.size());
    chunks_.push_back(chunk);
  }
}

bool GlobPattern::class_contains(const Element& element, char32_t rune) const {
  bool found = false;
  for (std::uint32_t i = element.first_range; i < element.end_range && !found; ++i) {
    found = ranges_[i].low <= rune && rune <= ranges_[i].high;
  }
  return found != element.negated;
}

std::optional<std::size_t> GlobPattern::match_chunk(const Chunk& chunk, std::string_view name,
                                                    std::size_t pos) const {
  for (std::uint32_t i = chunk.first_element; i < chunk.end_element; ++i) {
    const Element& element = elements_[i];
    if (pos >= name.size()) return std::nullopt;
    switch (element.kind) {
      case Element::Kind::byte:
        if (name[pos] != element.byte) return std::nullopt;
        ++pos;
        break;
      case Element::Kind::any_rune:
        if (name[pos] == '/') return std::nullopt;
        pos += decode_utf8(name, pos).length;
        break;
      case Element::Kind::char_class: {
        auto decoded = decode_utf8(name, pos);
        if (!class_contains(element, decoded.rune)) return std::nullopt;
        pos += decoded.length;
        break;
      }
    }
  }
  return pos;
}

GlobPattern::Outcome GlobPattern::match(std::string_view name) const {
  std::size_t pos = 0;
  for (std::size_t c = 0; c < chunks_.size(); ++c) {
    const Chunk& chunk = chunks_[c];
    const bool last = c + 1 == chunks_.size();
    if (chunk.star && chunk.first_element == chunk.end_element && !chunk.malformed) {
      // A trailing `*` takes the rest of the name, as long as that stays within one component.
      return name.find('/', pos) == std::string_view::npos ? Outcome::match : Outcome::no_match;
    }
    // Go parses a chunk whole each time it tries it, so reaching a malformed one is the error.
    if (chunk.malformed) return Outcome::malformed;
    // The chunk right here; the last one must also reach the end of the name.
    auto end = match_chunk(chunk, name, pos);
    if (end && (!last || *end == name.size())) {
      pos = *end;
      continue;
    }
    if (!chunk.star) return Outcome::no_match;
    // The star takes one more byte at a time (never a `/`) until the chunk matches after it. Go
    // advances by bytes, not runes, so a chunk may start inside a multi-byte character.
    bool found = false;
    for (std::size_t skip = pos; skip < name.size() && name[skip] != '/'; ++skip) {
      end = match_chunk(chunk, name, skip + 1);
      if (end && (!last || *end == name.size())) {
        pos = *end;
        found = true;
        break;
      }
    }
    if (!found) return Outcome::no_match;
  }
  return pos == name.size() ? Outcome::match : Outcome::no_match;
}

bool contains_wildcards(std::string_view path) {
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '\\') {
      ++i;
    } else if (path[i] == '*' || path[i] == '?' || path[i] == '[') {
      return true;
    }
  }
  return false;
}

}  // namespace kiln::builder
