#include "builder/glob.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "tests/builder/corpus.h"

using kiln::builder::contains_wildcards;
using kiln::builder::GlobPattern;

using kiln::test::percent_decode;
using kiln::test::split;

namespace {

bool glob_matches(std::string_view pattern, std::string_view name) {
  return GlobPattern(pattern).matches(name);
}

std::string malformed_reason(std::string_view pattern) {
  return GlobPattern(pattern).malformed_reason();
}

}  // namespace

TEST_CASE("glob: `*` and `?` stay within a path component", "[builder][glob]") {
  CHECK(glob_matches("*", "abc"));
  CHECK(glob_matches("*", ""));
  CHECK_FALSE(glob_matches("*", "a/b"));
  CHECK(glob_matches("*/*", "a/b"));
  CHECK(glob_matches("a*", "a"));
  CHECK(glob_matches("a*b*c", "axxbyyc"));
  CHECK_FALSE(glob_matches("a*b", "a/b"));
  CHECK(glob_matches("?", "a"));
  CHECK_FALSE(glob_matches("?", "/"));
  CHECK_FALSE(glob_matches("?", ""));
  CHECK_FALSE(glob_matches("?", "ab"));
  CHECK(glob_matches("a?c", "abc"));
  // `?` takes a rune, a literal a byte; an invalid byte is one rune.
  CHECK(glob_matches("?", "é"));
  CHECK(glob_matches("?", "\xff"));
  CHECK_FALSE(glob_matches("??", "é"));
  CHECK(glob_matches("é", "é"));
  // The whole name must match.
  CHECK_FALSE(glob_matches("a", "ab"));
  CHECK_FALSE(glob_matches("ab", "a"));
  CHECK(glob_matches("", ""));
  CHECK_FALSE(glob_matches("", "a"));
}

TEST_CASE("glob: character classes as Go reads them", "[builder][glob]") {
  CHECK(glob_matches("[a-c]", "b"));
  CHECK_FALSE(glob_matches("[a-c]", "d"));
  CHECK(glob_matches("[^a-c]", "d"));
  CHECK_FALSE(glob_matches("[^a-c]", "b"));
  // `!` is no negation for Go: the class holds `!` and `a`.
  CHECK(glob_matches("[!a]", "!"));
  CHECK(glob_matches("[!a]", "a"));
  CHECK_FALSE(glob_matches("[!a]", "b"));
  // A class may match `/`, unlike `*` and `?`.
  CHECK(glob_matches("a[/]b", "a/b"));
  CHECK(glob_matches("a[^x]b", "a/b"));
  CHECK(glob_matches("[\\]]", "]"));
  CHECK(glob_matches("[\\-]", "-"));
  CHECK(glob_matches("[é-ê]", "ê"));
  CHECK(glob_matches("[^a]", "\xff"));  // an invalid byte is U+FFFD, which is not `a`
  CHECK(glob_matches("[a-]]", "a]") == false);
  // `[` and `]` elsewhere: a lone `]` is a literal.
  CHECK(glob_matches("a]", "a]"));
  // Go cuts the pattern at `*` outside brackets with its own loose bracket tracking: `[!]*]` is the
  // class of `!`, a star, then `]`.
  CHECK(glob_matches("[!]*]", "!x]"));
  CHECK(glob_matches("[*]", "*"));
}

TEST_CASE("glob: escapes", "[builder][glob]") {
  CHECK(glob_matches("\\*", "*"));
  CHECK_FALSE(glob_matches("\\*", "a"));
  CHECK(glob_matches("\\?", "?"));
  CHECK(glob_matches("\\[", "["));
  CHECK(glob_matches("\\a", "a"));
  CHECK(glob_matches("a\\\\b", "a\\b"));
}

TEST_CASE("glob: each star settles on its first fit, as Go's does", "[builder][glob]") {
  // A backtracking glob would let the first star take "a" and match; Go's takes nothing, since
  // `[/a]` matches "a" right away, and then fails on the rest.
  CHECK_FALSE(glob_matches("*[/a]*b", "a/b"));
  // The last chunk must reach the end, so its star keeps looking.
  CHECK(glob_matches("*a", "aaa"));
  CHECK(glob_matches("a*b*", "abxb"));
  // A star moves by bytes: the chunk may start inside a multi-byte character.
  CHECK(glob_matches("*\xa9", "é"));
}

TEST_CASE("glob: a malformed pattern says why", "[builder][glob]") {
  CHECK(malformed_reason("[") == "`[` is never closed");
  CHECK(malformed_reason("a[b") == "`[` is never closed");
  CHECK(malformed_reason("[]") == "empty character class");
  CHECK(malformed_reason("[^]") == "empty character class");
  CHECK(malformed_reason("[-a]") == "`-` where a character class expects a character");
  CHECK(malformed_reason("[a-]") == "a range in a character class has no end");
  CHECK(malformed_reason("\\") == "`\\` at the end escapes nothing");
  CHECK(malformed_reason("[\xff]") == "a character class holds a byte that is not UTF-8");
  CHECK(malformed_reason("a*b[") == "`[` is never closed");
  CHECK(malformed_reason("a*[b]*c").empty());
}

TEST_CASE("glob: Go reports a malformed part only when matching reaches it", "[builder][glob]") {
  using Outcome = GlobPattern::Outcome;
  CHECK(GlobPattern("a[").match("a") == Outcome::malformed);  // the first chunk is always tried
  CHECK(GlobPattern("a[").match("") == Outcome::malformed);
  // "b" fails the first chunk, so the second is never read; "ab" gets to it.
  CHECK(GlobPattern("a*[").match("b") == Outcome::no_match);
  CHECK(GlobPattern("a*[").match("ab") == Outcome::malformed);
  CHECK(GlobPattern("x*\\").match(".") == Outcome::no_match);
  CHECK(GlobPattern("*[").match(".") == Outcome::malformed);
  // The trailing-star shortcut returns before any later chunk, but a trailing star has none.
  CHECK(GlobPattern("[a]*").match("a") == Outcome::match);
  CHECK_FALSE(GlobPattern("a*[").matches("ab"));
}

TEST_CASE("glob: BuildKit's test for a wildcard source", "[builder][glob]") {
  CHECK(contains_wildcards("*.go"));
  CHECK(contains_wildcards("src/a?c"));
  CHECK(contains_wildcards("[ab]"));
  CHECK_FALSE(contains_wildcards("src/main.go"));
  CHECK_FALSE(contains_wildcards("a]"));
  CHECK_FALSE(contains_wildcards("a\\*b"));  // `\` hides the next character
  CHECK(contains_wildcards("a\\\\*"));
  CHECK_FALSE(contains_wildcards("a\\"));
}

// Go's own answers (filepath.Match, Go 1.19) for random patterns over a small alphabet, with names
// both random and made to fit: generated by tests/builder/oracle.
TEST_CASE("glob: agrees with Go's filepath.Match on a random corpus", "[builder][glob]") {
  std::ifstream in(KILN_TESTDATA "/builder/glob/go_match.txt");
  REQUIRE(in);
  std::size_t cases = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto fields = split(line, '|');
    REQUIRE(fields.size() == 3);
    const std::string pattern = percent_decode(fields[0]);
    const std::string name = percent_decode(fields[1]);
    const auto outcome = GlobPattern(pattern).match(name);
    const std::string got = outcome == GlobPattern::Outcome::malformed ? "bad"
                            : outcome == GlobPattern::Outcome::match   ? "yes"
                                                                       : "no";
    INFO("pattern `" << fields[0] << "` name `" << fields[1] << "`");
    CHECK(got == fields[2]);
    ++cases;
  }
  CHECK(cases > 3000);
}
