// Go's filepath.Match, which BuildKit applies to the wildcard sources of COPY and ADD (fsutil's
// copy resolves `COPY src/*.go /dst/` by matching each path under `src` against `*.go`). Docker's
// users write these patterns for Go's matcher, so kiln reproduces it exactly, including where it
// is not a textbook glob:
//   - `*` and `?` never match `/`, but a character class may (`a[/]b` matches "a/b");
//   - classes take `^` for negation and nothing else: `[!a]` is the class of `!` and `a`;
//   - a literal, and a `\`-escaped character, is compared byte by byte; `?` and a class consume
//     one rune (a byte that is not valid UTF-8 counts as one rune, U+FFFD);
//   - each `*` takes the shortest stretch after which the rest of its chunk (the text up to the
//     next `*`) matches, and never reconsiders, so `*[/a]*b` does not match "a/b";
//   - a malformed part of the pattern is an error only when matching gets to it: Match("a*[", "b")
//     is false without error, since "a" already fails, while Match("a*[", "ab") is an error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::builder {

class GlobPattern {
 public:
  enum class Outcome : std::uint8_t { no_match, match, malformed };

  // Never fails: a malformed chunk is kept, to report when matching reaches it.
  explicit GlobPattern(std::string_view pattern);

  // filepath.Match(pattern, name) on Linux: whether the whole of `name` matches, or malformed
  // (Go's ErrBadPattern) when the matcher reached a malformed part of the pattern.
  Outcome match(std::string_view name) const;
  // A malformed pattern matches nothing: BuildKit's wildcard resolver ignores Match's error.
  bool matches(std::string_view name) const { return match(name) == Outcome::match; }

  // Why the first malformed part is malformed ("`[` is never closed"), or empty when the whole
  // pattern is well formed. This is the reason behind every Outcome::malformed.
  const std::string& malformed_reason() const { return malformed_reason_; }

  const std::string& text() const { return text_; }

 private:
  // One pattern element that consumes input: a byte, `?` (a rune other than `/`), or a class.
  struct Element {
    enum class Kind : std::uint8_t { byte, any_rune, char_class } kind;
    bool negated = false;
    char byte = 0;
    std::uint32_t first_range = 0;  // the class's ranges are ranges_[first_range, end_range)
    std::uint32_t end_range = 0;
  };
  // Go's unit of matching: the elements between two runs of `*`, and whether a `*` precedes them.
  struct Chunk {
    bool star = false;
    bool malformed = false;
    std::uint32_t first_element = 0;
    std::uint32_t end_element = 0;
  };
  struct Range {
    char32_t low;
    char32_t high;
  };

  // Where in `name` the chunk ends when it matches from `pos`, or nullopt.
  std::optional<std::size_t> match_chunk(const Chunk& chunk, std::string_view name, std::size_t pos) const;
  bool class_contains(const Element& element, char32_t rune) const;

  std::string text_;
  std::string malformed_reason_;
  std::vector<Chunk> chunks_;
  std::vector<Element> elements_;
  std::vector<Range> ranges_;
};

// Whether a COPY or ADD source is a pattern at all, as BuildKit decides before it resolves one: it
// contains `*`, `?` or `[` that is not escaped by a `\` (the character after a `\` is skipped).
bool contains_wildcards(std::string_view path);

}  // namespace kiln::builder
