#include "parser/shell_pattern.h"

#include <algorithm>
#include <utility>

#include "parser/unicode.h"

namespace kiln::parser {

namespace {

constexpr char32_t kByteOrderMark = 0xFEFF;

template <class T>
std::vector<T> reversed(std::vector<T> items) {
  std::reverse(items.begin(), items.end());
  return items;
}

void set_bit(std::vector<std::uint64_t>& bits, std::size_t index) {
  bits[index / 64] |= std::uint64_t{1} << (index % 64);
}

}  // namespace

MatchSubject::MatchSubject(std::string_view text) : text_(text) {
  runes_.reserve(text.size());
  offsets_.reserve(text.size() + 1);
  for (std::size_t pos = 0; pos < text.size();) {
    const unicode::DecodedRune decoded = unicode::decode_utf8(text, pos);
    runes_.push_back(decoded.rune);
    offsets_.push_back(pos);
    pos += decoded.length;
  }
  offsets_.push_back(text.size());
}

std::vector<ShellPattern::Atom> ShellPattern::parse(std::string_view pattern) {
  std::vector<Atom> atoms;
  std::size_t pos = 0;
  const auto next_rune = [&] {
    const unicode::DecodedRune decoded = unicode::decode_utf8(pattern, pos);
    pos += decoded.length;
    return decoded.rune;
  };
  // BuildKit reads the pattern with Go's text/scanner, which skips a byte order mark at the start.
  if (pattern.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;
  while (pos < pattern.size()) {
    const char32_t rune = next_rune();
    if (rune == '*') {
      // `**` matches what `*` matches; one star keeps the automaton free of star-to-star steps.
      if (atoms.empty() || atoms.back().kind != AtomKind::any_run) atoms.push_back({AtomKind::any_run, 0});
      continue;
    }
    if (rune == '?') {
      atoms.push_back({AtomKind::any_rune, 0});
      continue;
    }
    if (rune != '\\') {
      atoms.push_back({AtomKind::literal, rune});
      continue;
    }
    // `}` and `/` had to be escaped to get past the end of `${...}`; the escape is not the pattern's.
    if (pos < pattern.size() && (pattern[pos] == '}' || pattern[pos] == '/')) continue;
    if (pos >= pattern.size()) throw std::invalid_argument("invalid escape '\\' at the end of the pattern");
    const char32_t escaped = next_rune();
    if (escaped != '*' && escaped != '?' && escaped != '\\') {
      std::string message = "invalid escape '\\";
      unicode::append_utf8(message, escaped);
      throw std::invalid_argument(message + "'");
    }
    atoms.push_back({AtomKind::literal, escaped});
  }
  return atoms;
}

ShellPattern::ShellPattern(std::string_view pattern) : ShellPattern(parse(pattern)) {}

ShellPattern::ShellPattern(std::vector<Atom> atoms)
    : forward_(atoms), backward_(reversed(std::move(atoms))) {}

ShellPattern::Automaton::Automaton(const std::vector<Atom>& atoms)
    : accept_state_(atoms.size()),
      word_count_(atoms.size() / 64 + 1),
      any_rune_(word_count_),
      any_run_(word_count_) {
  for (std::size_t state = 0; state < atoms.size(); ++state) {
    switch (atoms[state].kind) {
      case AtomKind::literal:
        literals_[atoms[state].rune].states.push_back(static_cast<std::uint32_t>(state));
        break;
      case AtomKind::any_rune:
        set_bit(any_rune_, state);
        break;
      case AtomKind::any_run:
        set_bit(any_run_, state);
        break;
    }
  }
  // Setting a rune's states one by one costs what a mask costs once they outnumber the words;
  // fewer than 64 runes can, which bounds the masks' memory by the pattern's size.
  for (auto& [rune, literal] : literals_) {
    if (literal.states.size() <= word_count_) continue;
    literal.mask.assign(word_count_, 0);
    for (std::uint32_t state : literal.states) set_bit(literal.mask, state);
  }
  Bits start(word_count_);
  set_bit(start, 0);
  close_over_stars(start, 0, 0);
  start_word_ = start[0];
}

ShellPattern::Automaton::Active ShellPattern::Automaton::start() const {
  Active active{Bits(word_count_), 0, 0, Bits(word_count_)};
  active.bits[0] = start_word_;
  return active;
}

void ShellPattern::Automaton::restart(Active& active) const {
  active.bits[0] |= start_word_;
  active.low = 0;
}

void ShellPattern::Automaton::close_over_stars(Bits& bits, std::size_t low, std::size_t high) const {
  // A star may match nothing, so its state also waits for the next atom. Stars never follow each
  // other (parse merges them), so one pass reaches everything.
  std::uint64_t carry = 0;
  for (std::size_t i = low; i <= high; ++i) {
    const std::uint64_t at_star = bits[i] & any_run_[i];
    bits[i] |= (at_star << 1) | carry;
    carry = at_star >> 63;
  }
}

bool ShellPattern::Automaton::step(Active& active, char32_t rune) const {
  // States move up by at most one, and a star's successor by one more; that may reach two words
  // past the highest active one.
  const std::size_t low = active.low;
  const std::size_t high = std::min(active.high + 2, word_count_ - 1);
  const std::size_t begin_state = low * 64;
  const std::size_t end_state = (high + 1) * 64;

  // Go's `.` matches anything but a newline; so do `?` and each rune of `*`.
  const bool newline = rune == '\n';
  Bits& consumable = active.consumable;
  for (std::size_t i = low; i <= high; ++i) consumable[i] = newline ? 0 : any_rune_[i];
  if (auto found = literals_.find(rune); found != literals_.end()) {
    const LiteralAtoms& literal = found->second;
    if (literal.mask.empty()) {
      auto state = std::lower_bound(literal.states.begin(), literal.states.end(), begin_state);
      for (; state != literal.states.end() && *state < end_state; ++state) set_bit(consumable, *state);
    } else {
      for (std::size_t i = low; i <= high; ++i) consumable[i] |= literal.mask[i];
    }
  }
  Bits& bits = active.bits;
  std::uint64_t carry = 0;
  for (std::size_t i = low; i <= high; ++i) {
    const std::uint64_t consumed = bits[i] & consumable[i];
    const std::uint64_t staying = newline ? 0 : bits[i] & any_run_[i];
    bits[i] = (consumed << 1) | carry | staying;
    carry = consumed >> 63;
  }
  close_over_stars(bits, low, high);

  std::size_t new_low = low;
  while (new_low <= high && bits[new_low] == 0) ++new_low;
  if (new_low > high) {
    active.low = active.high = 0;
    return false;
  }
  std::size_t new_high = high;
  while (bits[new_high] == 0) --new_high;
  active.low = new_low;
  active.high = new_high;
  return true;
}

std::optional<std::size_t> ShellPattern::match_at(const MatchSubject& subject, std::size_t start,
                                                  MatchLength length) const {
  Automaton::Active active = forward_.start();
  std::optional<std::size_t> end;
  if (forward_.accepts(active)) {
    end = start;
    if (length == MatchLength::shortest) return end;
  }
  for (std::size_t i = start; i < subject.size(); ++i) {
    if (!forward_.step(active, subject.rune(i))) break;
    if (forward_.accepts(active)) {
      end = i + 1;
      if (length == MatchLength::shortest) break;
    }
  }
  return end;
}

std::optional<std::size_t> ShellPattern::match_suffix(const MatchSubject& subject, MatchLength length) const {
  Automaton::Active active = backward_.start();
  std::optional<std::size_t> start;
  if (backward_.accepts(active)) {
    start = subject.size();
    if (length == MatchLength::shortest) return start;
  }
  for (std::size_t i = subject.size(); i > 0; --i) {
    if (!backward_.step(active, subject.rune(i - 1))) break;
    if (backward_.accepts(active)) {
      start = i - 1;
      if (length == MatchLength::shortest) break;
    }
  }
  return start;
}

std::vector<bool> ShellPattern::match_starts(const MatchSubject& subject) const {
  // Running the reversed pattern from the end, with a fresh start at every position, reaches its
  // accepting state exactly at the positions where a match of the pattern begins.
  std::vector<bool> starts(subject.size() + 1);
  Automaton::Active active = backward_.start();
  starts[subject.size()] = backward_.accepts(active);
  for (std::size_t i = subject.size(); i > 0; --i) {
    backward_.step(active, subject.rune(i - 1));
    backward_.restart(active);
    starts[i - 1] = backward_.accepts(active);
  }
  return starts;
}

}  // namespace kiln::parser
