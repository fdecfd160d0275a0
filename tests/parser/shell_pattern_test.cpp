#include "parser/shell_pattern.h"

#include <catch2/catch.hpp>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

using kiln::parser::MatchLength;
using kiln::parser::MatchSubject;
using kiln::parser::ShellPattern;

namespace {

// BuildKit matches by compiling the pattern to a Go regular expression and letting its
// leftmost-first search decide; ECMAScript's backtracking search decides the same way, so
// std::regex serves as the reference for small random cases (ASCII only, and no `\r`, which
// ECMAScript's `.` would not match but Go's does).
struct RandomPattern {
  std::string shell;  // as written in ${var#...}
  std::string regex;  // BuildKit's translation, minus the star flavour
};

RandomPattern random_pattern(std::mt19937& random, std::size_t max_atoms, int max_stars) {
  RandomPattern pattern;
  std::uniform_int_distribution<std::size_t> atom_count(0, max_atoms);
  std::uniform_int_distribution<int> kind(0, 7);
  int stars = 0;
  for (std::size_t i = atom_count(random); i > 0; --i) {
    switch (kind(random)) {
      case 0:
        if (stars++ < max_stars) {
          pattern.shell += "*";
          pattern.regex += "\x01";  // replaced by .* or .*? below
          break;
        }
        [[fallthrough]];
      case 1:
        pattern.shell += "?";
        pattern.regex += ".";
        break;
      case 2:
        pattern.shell += "\\*";
        pattern.regex += "\\*";
        break;
      case 3:
        pattern.shell += "\n";
        pattern.regex += "\\n";
        break;
      case 4:
      case 5:
        pattern.shell += "a";
        pattern.regex += "a";
        break;
      default:
        pattern.shell += "b";
        pattern.regex += "b";
        break;
    }
  }
  return pattern;
}

std::string random_subject(std::mt19937& random, std::size_t max_length) {
  static constexpr char kAlphabet[] = {'a', 'a', 'b', 'b', '*', '\n'};
  std::uniform_int_distribution<std::size_t> length(0, max_length);
  std::uniform_int_distribution<std::size_t> pick(0, sizeof kAlphabet - 1);
  std::string subject;
  for (std::size_t i = length(random); i > 0; --i) subject += kAlphabet[pick(random)];
  return subject;
}

std::regex compile(const std::string& translated, bool greedy, bool anchored) {
  std::string expression = anchored ? "^" : "";
  for (char c : translated) expression += c == '\x01' ? (greedy ? ".*" : ".*?") : std::string(1, c);
  return std::regex(expression, std::regex::ECMAScript);
}

std::string reversed(std::string text) {
  return {text.rbegin(), text.rend()};
}

// The shell pattern and translation with the atoms in reverse order (all atoms are one rune here,
// `\*` being the only two-character one).
RandomPattern reversed(const RandomPattern& pattern) {
  RandomPattern out;
  for (std::size_t i = 0; i < pattern.shell.size(); ++i) {
    if (pattern.shell[i] == '\\') {
      out.shell.insert(0, pattern.shell.substr(i++, 2));
    } else {
      out.shell.insert(0, 1, pattern.shell[i]);
    }
  }
  for (std::size_t i = 0; i < pattern.regex.size(); ++i) {
    if (pattern.regex[i] == '\\') {
      out.regex.insert(0, pattern.regex.substr(i++, 2));
    } else {
      out.regex.insert(0, 1, pattern.regex[i]);
    }
  }
  return out;
}

std::optional<std::size_t> regex_prefix_end(const RandomPattern& pattern, const std::string& subject,
                                            std::size_t start, MatchLength length) {
  std::smatch match;
  const std::regex regex = compile(pattern.regex, length == MatchLength::longest, true);
  if (!std::regex_search(subject.begin() + static_cast<std::ptrdiff_t>(start), subject.end(), match, regex)) {
    return std::nullopt;
  }
  return start + static_cast<std::size_t>(match.length(0));
}

void check_against_regex(const RandomPattern& pattern, const std::string& subject_text) {
  INFO("pattern " << pattern.shell << " (regex " << pattern.regex << "), subject " << subject_text);
  const ShellPattern shell(pattern.shell);
  const MatchSubject subject(subject_text);

  for (const MatchLength length : {MatchLength::shortest, MatchLength::longest}) {
    for (std::size_t start = 0; start <= subject_text.size(); ++start) {
      CHECK(shell.match_at(subject, start, length) == regex_prefix_end(pattern, subject_text, start, length));
    }
    // BuildKit's trimSuffix: the reversed pattern as a prefix of the reversed value.
    const std::optional<std::size_t> reversed_end =
        regex_prefix_end(reversed(pattern), reversed(subject_text), 0, length);
    std::optional<std::size_t> expected_start;
    if (reversed_end) expected_start = subject_text.size() - *reversed_end;
    CHECK(shell.match_suffix(subject, length) == expected_start);
  }

  const std::regex unanchored = compile(pattern.regex, true, false);
  const std::vector<bool> starts = shell.match_starts(subject);
  for (std::size_t from = 0; from <= subject_text.size(); ++from) {
    std::smatch match;
    const auto begin = subject_text.begin() + static_cast<std::ptrdiff_t>(from);
    std::optional<std::size_t> expected;
    if (std::regex_search(begin, subject_text.end(), match, unanchored)) {
      expected = from + static_cast<std::size_t>(match.position(0));
    }
    std::optional<std::size_t> actual;
    for (std::size_t i = from; i <= subject_text.size(); ++i) {
      if (starts[i]) {
        actual = i;
        break;
      }
    }
    CHECK(actual == expected);
  }
}

}  // namespace

TEST_CASE("shell patterns match as BuildKit's regular expressions do", "[words]") {
  std::mt19937 random(20240611);
  for (int i = 0; i < 3'000; ++i)
    check_against_regex(random_pattern(random, 8, 4), random_subject(random, 10));
  // Patterns over several 64-bit words, with the active states spread or narrow.
  for (int i = 0; i < 200; ++i)
    check_against_regex(random_pattern(random, 200, 3), random_subject(random, 40));
}

TEST_CASE("shell pattern escapes follow BuildKit", "[words]") {
  const MatchSubject subject("a}b/c\\d*e?f[g]");
  CHECK(ShellPattern("a\\}b\\/c\\\\d\\*e\\?f[g]").match_at(subject, 0, MatchLength::shortest) ==
        subject.size());
  CHECK_THROWS_WITH(ShellPattern("a\\b"), "invalid escape '\\b'");
  CHECK_THROWS_WITH(ShellPattern("\\"), "invalid escape '\\' at the end of the pattern");
  CHECK_THROWS_WITH(ShellPattern("\\é"), "invalid escape '\\é'");
  // Runes, not bytes; an invalid byte is one rune that a literal U+FFFD matches.
  const MatchSubject unicode("é\xFFz");
  CHECK(ShellPattern("??").match_at(unicode, 0, MatchLength::shortest) == 2);
  CHECK(ShellPattern("é\xEF\xBF\xBD").match_at(unicode, 0, MatchLength::shortest) == 2);
  CHECK(unicode.byte_offset(2) == 3);
}
