// The patterns of `${var#pattern}`, `${var%pattern}` and `${var/pattern/replacement}`, matched the
// way BuildKit matches them. BuildKit turns a pattern into a Go regular expression: `*` is any run
// of characters and `?` any one character, neither of them matching a newline (Go's `.`); `\` makes
// `*`, `?` and `\` literal and is dropped before `}` and `/`; any other escape is an error. There are
// no bracket expressions: `[` is an ordinary character. Matching is by rune; a byte that is not
// valid UTF-8 counts as one rune, U+FFFD.
//
// Instead of backtracking, a pattern runs as a bit-parallel NFA over its atoms, so a match costs
// O(value runes x pattern atoms / 64) at worst, whatever the pattern.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::parser {

// A value cut into runes once, with the byte offset of each, for the matcher to walk both ways.
class MatchSubject {
 public:
  explicit MatchSubject(std::string_view text);
  std::string_view text() const { return text_; }
  std::size_t size() const { return runes_.size(); }
  char32_t rune(std::size_t index) const { return runes_[index]; }
  // Byte offset of rune `index`; index == size() gives the length of the text.
  std::size_t byte_offset(std::size_t index) const { return offsets_[index]; }

 private:
  std::string_view text_;
  std::vector<char32_t> runes_;
  std::vector<std::size_t> offsets_;
};

enum class MatchLength { shortest, longest };

class ShellPattern {
 public:
  // Throws std::invalid_argument with BuildKit's reason, e.g. "invalid escape '\x'".
  explicit ShellPattern(std::string_view pattern);

  // The end (a rune index) of the shortest or longest match that starts at rune `start`.
  std::optional<std::size_t> match_at(const MatchSubject& subject, std::size_t start,
                                      MatchLength length) const;
  // The start (a rune index) of the shortest or longest match that ends at the end of the subject.
  std::optional<std::size_t> match_suffix(const MatchSubject& subject, MatchLength length) const;
  // For every rune index 0..size(), whether some match starts there.
  std::vector<bool> match_starts(const MatchSubject& subject) const;

 private:
  enum class AtomKind : std::uint8_t { literal, any_rune, any_run };
  struct Atom {
    AtomKind kind;
    char32_t rune;  // for literal
  };
  static std::vector<Atom> parse(std::string_view pattern);
  explicit ShellPattern(std::vector<Atom> atoms);

  // The NFA of a sequence of atoms: state i waits for atom i, state atoms.size() accepts.
  class Automaton {
   public:
    using Bits = std::vector<std::uint64_t>;
    // The active states, one bit each. Words outside [low, high] are zero, so that a step costs
    // what the active states span rather than the whole pattern.
    struct Active {
      Bits bits;
      std::size_t low = 0;
      std::size_t high = 0;
      Bits consumable;  // scratch for step: the states the current rune advances
    };

    explicit Automaton(const std::vector<Atom>& atoms);

    // State 0 and what an empty run of `*` reaches from it.
    Active start() const;
    // Adds the start states to `active`, to look for a match beginning here too.
    void restart(Active& active) const;
    // Advances `active` over one rune. Returns whether any state is still active.
    bool step(Active& active, char32_t rune) const;
    bool accepts(const Active& active) const {
      return (active.bits[accept_state_ / 64] >> (accept_state_ % 64)) & 1U;
    }

   private:
    void close_over_stars(Bits& bits, std::size_t low, std::size_t high) const;

    struct LiteralAtoms {
      std::vector<std::uint32_t> states;  // the states waiting for this rune, ascending
      Bits mask;                          // the same as bits, kept only for runes that recur often
    };
    std::size_t accept_state_ = 0;
    std::size_t word_count_ = 0;
    std::uint64_t start_word_ = 0;  // the start states all lie in word 0
    Bits any_rune_;
    Bits any_run_;
    std::unordered_map<char32_t, LiteralAtoms> literals_;
  };

  Automaton forward_;
  Automaton backward_;  // the atoms in reverse order, run over the subject from its end
};

}  // namespace kiln::parser
