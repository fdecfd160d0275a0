// Go regular expressions (the RE2 syntax of Go's regexp.Compile) for the expressions that
// patternmatcher builds out of .dockerignore patterns; dockerignore.cpp is its user.
//
// patternmatcher does not match a pattern with a glob matcher: it rewrites it into a Go regular
// expression (`*` becomes `[^/]*`, `?` becomes `[^/]`, `**/` becomes `(.*/)?`) and passes what it
// does not recognise through as regular expression syntax: `^` is an anchor, `\d` a digit class,
// `[[:alpha:]]` a POSIX class, and `[*]` turns into `[[^/]*]`, a class of `[`, `^` and `/` repeated,
// then `]`. To read such patterns as Docker does, kiln builds the same text and reads it with Go's
// rules: literals, `.`, classes (ranges, negation, POSIX `[:name:]`, Perl `\d\s\w`), escapes (`\n`,
// `\x41`, octal, `\Q...\E`), `^ $ \A \z \b \B`, groups, and `* + ?` (lazy forms included).
// Refused, as nothing patternmatcher writes can contain them unescaped, or kiln has no table for
// them: alternation `|`, counted repetition `{n,m}`, `(?` flags and named groups, and the Unicode
// classes `\p`/`\P`.
//
// Matching runs the expression as an NFA over the text's runes (Go's decoding: a byte that is not
// UTF-8 is one U+FFFD), so it costs O(text length x expression size) and never backtracks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::builder {

class GoRegexp {
 public:
  // nullopt, and Go's reason (or kiln's, for what it refuses) in `*why`, for an expression
  // regexp.Compile rejects, e.g. "invalid character class range: `z-a`".
  static std::optional<GoRegexp> compile(std::string_view expression, std::string* why);

  // regexp.MatchString: whether the expression matches somewhere in `text`.
  bool matches(std::string_view text) const;

 private:
  friend class GoRegexpParser;

  enum class Op : std::uint8_t {
    rune,               // one rune equal to `rune`
    char_class,         // one rune in ranges_[first_range, end_range)
    any_not_newline,    // `.`
    split,              // epsilon to `out` and `out1`
    nop,                // epsilon to `out`
    begin_text,         // `^`, `\A`: only at the start
    end_text,           // `$`, `\z`: only at the end
    word_boundary,      // `\b`
    not_word_boundary,  // `\B`
    match,
  };
  struct State {
    Op op = Op::nop;
    std::uint32_t out = 0;
    std::uint32_t out1 = 0;
    char32_t rune = 0;
    std::uint32_t first_range = 0;
    std::uint32_t end_range = 0;
  };
  struct Range {
    char32_t low;
    char32_t high;
  };

  bool class_contains(const State& state, char32_t rune) const;

  std::vector<State> states_;
  std::vector<Range> ranges_;
  std::uint32_t start_ = 0;
  bool anchored_ = false;  // begins with `^`: a match can only start at offset 0
  // Bytes every match must begin the text with (after a leading `^`), end it with (before a final
  // `$`), and contain (the longest literal run at the top level): most paths fail these, and
  // cheaply, before the NFA runs.
  std::string required_prefix_;
  std::string required_suffix_;
  std::string required_infix_;
};

}  // namespace kiln::builder
