#include "parser/word_expansion.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

using kiln::parser::expand_word;
using kiln::parser::expand_words;
using kiln::parser::ExpandOptions;
using kiln::parser::VariableLookup;
using kiln::parser::VariableUsage;
using kiln::parser::WordError;

namespace {

using Environment = std::map<std::string, std::string, std::less<>>;
using Names = std::set<std::string, std::less<>>;

VariableLookup lookup_in(const Environment& env) {
  return [&env](std::string_view name) -> std::optional<std::string> {
    const auto found = env.find(name);
    if (found == env.end()) return std::nullopt;
    return found->second;
  };
}

// The tokens of testdata/parser/words/README.md, for what a line of text cannot show.
std::string decode_tokens(std::string_view text) {
  std::string out;
  for (std::size_t pos = 0; pos < text.size();) {
    const auto token = [&](std::string_view name) { return text.substr(pos, name.size()) == name; };
    if (token("<SP>")) {
      out += ' ';
      pos += 4;
    } else if (token("<TAB>")) {
      out += '\t';
      pos += 5;
    } else if (token("<NL>")) {
      out += '\n';
      pos += 4;
    } else if (token("<CR>")) {
      out += '\r';
      pos += 4;
    } else if (token("<BOM>")) {
      out += "\xEF\xBB\xBF";
      pos += 5;
    } else if (token("<x") && pos + 5 <= text.size() && text[pos + 4] == '>') {
      out += static_cast<char>(std::stoi(std::string(text.substr(pos + 2, 2)), nullptr, 16));
      pos += 5;
    } else if (token("<U+")) {
      const std::size_t close = text.find('>', pos);
      const auto code_point = std::stoul(std::string(text.substr(pos + 3, close - pos - 3)), nullptr, 16);
      // Only what the tables use: up to three bytes.
      if (code_point < 0x80) {
        out += static_cast<char>(code_point);
      } else if (code_point < 0x800) {
        out += static_cast<char>(0xC0 | (code_point >> 6));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
      } else {
        out += static_cast<char>(0xE0 | (code_point >> 12));
        out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
      }
      pos = close + 1;
    } else {
      out += text[pos++];
    }
  }
  return out;
}

std::vector<std::string> split_words(const std::string& expected) {
  std::vector<std::string> words;
  if (expected == "(none)") return words;
  const std::string separator = " ¦ ";
  std::size_t pos = 0;
  while (true) {
    const std::size_t next = expected.find(separator, pos);
    words.push_back(decode_tokens(expected.substr(pos, next - pos)));
    if (next == std::string::npos) return words;
    pos = next + separator.size();
  }
}

enum class Function { expand_word, expand_words };

// Runs every case of one table (format: testdata/parser/words/README.md) and returns their number.
int run_table(const std::string& name, Function function) {
  const std::string relative = "testdata/parser/words/" + name;
  std::ifstream in(std::string(KILN_TESTDATA) + "/parser/words/" + name);
  REQUIRE(in);
  Environment env;
  ExpandOptions options;
  int cases = 0;
  int line_number = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    INFO(relative << ":" << line_number << ": " << line);
    if (line.starts_with("env ")) {
      const std::size_t equals = line.find('=');
      REQUIRE(equals != std::string::npos);
      env[line.substr(4, equals - 4)] = decode_tokens(line.substr(equals + 1));
      continue;
    }
    if (line.starts_with("unset ")) {
      env.erase(line.substr(6));
      continue;
    }
    if (line == "options" || line.starts_with("options ")) {
      options = {};
      std::size_t pos = 7;
      while (pos < line.size()) {
        const std::size_t start = line.find_first_not_of(' ', pos);
        if (start == std::string::npos) break;
        const std::size_t end = std::min(line.find(' ', start), line.size());
        const std::string option = line.substr(start, end - start);
        if (option == "raw_quotes") {
          options.raw_quotes = true;
        } else if (option == "raw_escapes") {
          options.raw_escapes = true;
        } else if (option == "skip_unset") {
          options.skip_unset = true;
        } else if (option.starts_with("escape=") && option.size() == 8) {
          options.escape = option[7];
        } else {
          FAIL("unknown option " << option);
        }
        pos = end;
      }
      continue;
    }

    const std::size_t arrow = line.starts_with("=>") ? 0 : line.find(" =>");
    REQUIRE(arrow != std::string::npos);
    const std::string input = decode_tokens(line.substr(0, arrow));
    std::string expected = line.substr(arrow == 0 ? 2 : arrow + 3);
    if (expected.starts_with(' ')) expected.erase(0, 1);
    ++cases;
    const VariableLookup lookup = lookup_in(env);
    const auto run = [&]() -> std::string {
      if (function == Function::expand_word) return expand_word(input, lookup, options);
      std::string shown;
      for (const std::string& word : expand_words(input, lookup, options)) shown += "[" + word + "]";
      return shown;
    };

    if (expected.starts_with("error")) {
      std::optional<std::size_t> offset;
      std::size_t colon = expected.find(':');
      REQUIRE(colon != std::string::npos);
      if (expected[5] == '@') offset = std::stoul(expected.substr(6, colon - 6));
      const std::string message = decode_tokens(expected.substr(colon + 2));
      try {
        const std::string result = run();
        FAIL_CHECK("expected an error, got " << result);
      } catch (const WordError& error) {
        CHECK_THAT(error.what(), Catch::Matchers::Contains(message));
        if (offset) CHECK(error.offset == *offset);
      }
      continue;
    }
    try {
      if (function == Function::expand_word) {
        CHECK(expand_word(input, lookup, options) == decode_tokens(expected));
      } else {
        CHECK(expand_words(input, lookup, options) == split_words(expected));
      }
    } catch (const WordError& error) {
      FAIL_CHECK("unexpected error at " << error.offset << ": " << error.what());
    }
  }
  return cases;
}

std::string repeat(std::string_view text, std::size_t times) {
  std::string out;
  out.reserve(text.size() * times);
  for (std::size_t i = 0; i < times; ++i) out += text;
  return out;
}

// Runs `work` and returns how long it took, in seconds.
template <class Work>
double seconds_taken(Work work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Generous, so that sanitizer builds pass too; a quadratic path would take minutes, not seconds.
constexpr double kQuick = 10.0;

}  // namespace

TEST_CASE("expand_word table: quotes, escapes, variables", "[words]") {
  CHECK(run_table("expand_word.txt", Function::expand_word) > 230);
}

TEST_CASE("expand_word table: trimming and replacing patterns", "[words]") {
  CHECK(run_table("patterns.txt", Function::expand_word) > 140);
}

TEST_CASE("expand_word table: raw quotes, raw escapes, unset kept, backtick escape", "[words]") {
  CHECK(run_table("modes.txt", Function::expand_word) > 80);
}

TEST_CASE("expand_words table: splitting into words", "[words]") {
  CHECK(run_table("expand_words.txt", Function::expand_words) > 65);
}

TEST_CASE("variable usage records what was set and what was not", "[words]") {
  const Environment env{{"FOO", "xxx"}, {"BAR", ""}};
  const VariableLookup lookup = lookup_in(env);
  VariableUsage usage;

  CHECK(expand_word("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", lookup, {}, &usage) == "xxx  ccc");
  CHECK(usage.matched == Names{"BAR", "FOO"});
  CHECK(usage.unmatched == Names{"BAZ"});

  // Nested and quoted references count; quoted, escaped and non-names do not; special parameters
  // are names like any other.
  usage = {};
  CHECK(expand_word(R"("${A:-${FOO}}" '$NOPE' \$NOPE $. $1 ${FOO#$BAR})", lookup, {}, &usage) ==
        "xxx $NOPE $NOPE $.  xxx");
  CHECK(usage.matched == Names{"BAR", "FOO"});
  CHECK(usage.unmatched == Names{"1", "A"});

  // The sets accumulate over calls, and hold what was seen before an error.
  CHECK_THROWS_AS(expand_word("${FOO:+x} ${BAZ?ccc} $LATER", lookup, {}, &usage), WordError);
  CHECK(usage.unmatched == Names{"1", "A", "BAZ"});
  CHECK_FALSE(usage.unmatched.contains("LATER"));

  // Kept unset references are still references.
  usage = {};
  ExpandOptions keep;
  keep.skip_unset = true;
  CHECK(expand_word("$NOPE ${FOO:-$NADA}", lookup, keep, &usage) == "$NOPE xxx");
  CHECK(usage.matched == Names{"FOO"});
  CHECK(usage.unmatched == Names{"NADA", "NOPE"});

  usage = {};
  CHECK(expand_words("a $FOO ${NOPE}", lookup, {}, &usage) == std::vector<std::string>{"a", "xxx"});
  CHECK(usage.matched == Names{"FOO"});
  CHECK(usage.unmatched == Names{"NOPE"});

  usage = {};
  CHECK(expand_word("no variables here", lookup, {}, &usage) == "no variables here");
  CHECK(usage.matched.empty());
  CHECK(usage.unmatched.empty());
}

TEST_CASE("an unset variable and one set to empty are told apart by the lookup", "[words]") {
  int calls = 0;
  const VariableLookup lookup = [&calls](std::string_view name) -> std::optional<std::string> {
    ++calls;
    if (name == "EMPTY") return std::string();
    return std::nullopt;
  };
  CHECK(expand_word("${EMPTY-a}${UNSET-b}${EMPTY:-c}", lookup) == "bc");
  CHECK(calls == 3);
}

TEST_CASE("errors point at the construct that is wrong", "[words]") {
  const Environment env{{"SET", "x"}, {"EMPTY", ""}};
  const VariableLookup lookup = lookup_in(env);
  // "offset: message", or "no error".
  const auto error_at = [&](std::string_view word) -> std::string {
    try {
      expand_word(word, lookup);
    } catch (const WordError& error) {
      return std::to_string(error.offset) + ": " + error.what();
    }
    return "no error";
  };

  CHECK(error_at("abc'def") == "3: unexpected end of statement while looking for matching single-quote");
  CHECK(error_at("ab\"cd") == "2: unexpected end of statement while looking for matching double-quote");
  CHECK(error_at("x${") == "1: syntax error: missing '}'");
  CHECK(error_at("x${}") == "1: syntax error: bad substitution");
  CHECK(error_at("${SET:-${x}") == "0: syntax error: missing '}'");
  CHECK(error_at("x${SET:-${}}") == "8: syntax error: bad substitution");
  CHECK(error_at("ab${EMPTY:?}") == "2: EMPTY: is not allowed to be empty");
  CHECK(error_at("ab${NOPE?}") == "2: NOPE: is not allowed to be unset");
  CHECK(error_at("ab${NOPE:?go away}") == "2: NOPE: go away");
  CHECK(error_at("${SET/a") == "0: syntax error: missing '/' in ${}");
  CHECK(error_at("${SET=a}") == "0: unsupported modifier (=) in substitution");
  CHECK(error_at("-${SET#\\q}") == "1: invalid pattern (\\q) in substitution: invalid escape '\\q'");
  // Offsets count bytes, and a quote left open inside ${ is reported as the ${ left open.
  CHECK(error_at("한${") == "3: syntax error: missing '}'");
  CHECK(error_at("\"${SET:-'x}\"") == "1: syntax error: missing '}'");
  CHECK(error_at("\"${SET:-x}\" '") ==
        "12: unexpected end of statement while looking for matching single-quote");
  // A leading byte order mark is skipped but still counted.
  CHECK(error_at("\xEF\xBB\xBF'") ==
        "3: unexpected end of statement while looking for matching single-quote");
}

TEST_CASE("nesting is capped instead of overflowing the stack", "[words]") {
  const Environment env;
  const VariableLookup lookup = lookup_in(env);
  const auto nested = [](std::size_t depth) { return repeat("${a:-", depth) + "x" + repeat("}", depth); };

  CHECK(expand_word(nested(64), lookup) == "x");
  CHECK(expand_word("\"" + repeat("${a:-\"", 63) + "x" + repeat("\"}", 63) + "\"", lookup) == "x");

  try {
    expand_word(nested(65), lookup);
    FAIL("65 levels were accepted");
  } catch (const WordError& error) {
    CHECK(error.offset == 64 * 5);
    CHECK_THAT(error.what(), Catch::Matchers::Contains("nested more than 64 levels deep"));
  }

  // A megabyte of openings, closed or not, ends at the 65th.
  for (const std::string& hostile : {repeat("${a:-", 200'000), nested(200'000), repeat("\"${a:-", 200'000)}) {
    const double taken = seconds_taken([&] {
      try {
        expand_word(hostile, lookup);
        FAIL("accepted");
      } catch (const WordError& error) {
        CHECK_THAT(error.what(), Catch::Matchers::Contains("nested more than 64 levels deep"));
      }
    });
    CHECK(taken < kQuick);
  }
}

TEST_CASE("a megabyte word takes linear time", "[words]") {
  const Environment env{{"V", "value"}, {"S", "a b"}, {"A", std::string(20'000, 'a')}};
  const VariableLookup lookup = lookup_in(env);
  constexpr std::size_t kMegabyte = 1 << 20;

  const std::string references = repeat("$V ${V}-", kMegabyte / 8);
  std::string expected_references = repeat("value value-", kMegabyte / 8);
  std::string result;
  CHECK(seconds_taken([&] { result = expand_word(references, lookup); }) < kQuick);
  CHECK(result == expected_references);

  const std::string quoted = repeat(R"('a'"b"\c$S)", kMegabyte / 11);
  std::vector<std::string> words;
  CHECK(seconds_taken([&] { words = expand_words(quoted, lookup); }) < kQuick);
  CHECK(words.size() == kMegabyte / 11 + 1);

  CHECK(seconds_taken([&] {
          CHECK(expand_word("${NOPE:-" + std::string(kMegabyte, 'x') + "}", lookup).size() == kMegabyte);
        }) < kQuick);
  CHECK(seconds_taken([&] {
          CHECK_THROWS_AS(expand_word("'" + std::string(kMegabyte, 'x'), lookup), WordError);
        }) < kQuick);
  CHECK(seconds_taken([&] { CHECK_THROWS_AS(expand_word(repeat("${", kMegabyte / 2), lookup), WordError); }) <
        kQuick);
  // `$$` is a special parameter (empty), `$.` a dollar kept.
  CHECK(seconds_taken([&] { CHECK(expand_word(repeat("$$", kMegabyte / 2), lookup).empty()); }) < kQuick);
  CHECK(seconds_taken([&] { CHECK(expand_word(repeat("$.", kMegabyte / 2), lookup).size() == kMegabyte); }) <
        kQuick);
}

TEST_CASE("patterns that make a backtracking matcher explode are quick", "[words]") {
  const Environment env{{"A", std::string(20'000, 'a')}, {"AB", std::string(20'000, 'a') + "b"}};
  const VariableLookup lookup = lookup_in(env);

  // Many stars and no match: exponential for naive backtracking.
  const std::string stars = repeat("*a", 2'000) + "*c";
  std::string result;
  CHECK(seconds_taken([&] { result = expand_word("${A##" + stars + "}", lookup); }) < kQuick);
  CHECK(result == env.at("A"));
  CHECK(seconds_taken([&] { result = expand_word("${A%%" + stars + "}", lookup); }) < kQuick);
  CHECK(result == env.at("A"));
  CHECK(seconds_taken([&] { result = expand_word("${A//" + stars + "/x}", lookup); }) < kQuick);
  CHECK(result == env.at("A"));

  // A match at the very end only.
  CHECK(seconds_taken([&] { result = expand_word("${AB#" + repeat("*a", 2'000) + "*b}", lookup); }) < kQuick);
  CHECK(result.empty());
  // Every position matches: replace-all stays linear in the matches.
  CHECK(seconds_taken([&] { result = expand_word("${A//a/bb}", lookup); }) < kQuick);
  CHECK(result == std::string(40'000, 'b'));
  CHECK(seconds_taken([&] { result = expand_word("${A///-}", lookup); }) < kQuick);
  CHECK(result.size() == 40'001);

  // A long replacement template at every one of many empty matches.
  CHECK(seconds_taken([&] { result = expand_word("${A///'" + repeat("$0$x", 100'000) + "'}", lookup); }) <
        kQuick);
  CHECK(result == env.at("A"));

  // A pattern half a megabyte long.
  const std::string long_pattern = repeat("?", 1 << 19);
  CHECK(seconds_taken([&] { result = expand_word("${A#" + long_pattern + "}", lookup); }) < kQuick);
  CHECK(result == env.at("A"));
  CHECK(seconds_taken([&] { result = expand_word("${A/" + repeat("a", 1 << 19) + "/x}", lookup); }) < kQuick);
  CHECK(result == env.at("A"));
}
