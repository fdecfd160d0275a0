#include "builder/dockerignore.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "tests/builder/corpus.h"

using kiln::builder::find_ignore_file;
using kiln::builder::IgnoreRules;

using kiln::test::percent_decode;
using kiln::test::split;

namespace {

std::string parent_of(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// What the context walker sends for a tree of `files` (`a/b` makes `a` a directory; `d/` names an
// empty directory): it walks in order, decides each entry with the state of its directory, reads an
// excluded directory only when may_include_below says so, and keeps an excluded directory only for
// the sake of a kept entry below it. Directories come out with a trailing `/`.
std::vector<std::string> walk(const IgnoreRules& rules, const std::vector<std::string>& files) {
  std::set<std::string> entries;
  std::set<std::string> dirs;
  for (std::string file : files) {
    if (!file.empty() && file.back() == '/') {
      file.pop_back();
      dirs.insert(file);
    }
    entries.insert(file);
    for (std::string dir = parent_of(file); !dir.empty(); dir = parent_of(dir)) {
      entries.insert(dir);
      dirs.insert(dir);
    }
  }
  std::map<std::string, IgnoreRules::DirState> states;  // the directories the walker read
  std::set<std::string> kept;
  for (const auto& path : entries) {  // in byte order, so a directory comes before its entries
    const std::string dir = parent_of(path);
    if (!dir.empty() && !states.count(dir)) continue;  // below a directory that was skipped
    const bool is_dir = dirs.count(path) > 0;
    IgnoreRules::DirState self;
    const bool excluded =
        rules.excluded(path, dir.empty() ? IgnoreRules::DirState{} : states[dir], is_dir ? &self : nullptr);
    if (is_dir && (!excluded || rules.may_include_below(path))) states[path] = std::move(self);
    if (excluded) continue;
    kept.insert(is_dir ? path + "/" : path);
    for (std::string up = dir; !up.empty(); up = parent_of(up)) kept.insert(up + "/");
  }
  return {kept.begin(), kept.end()};
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : " ") + item;
  return out;
}

struct BuildKitCase {
  std::string name;
  std::string dockerignore;
  std::vector<std::string> files;
  std::vector<std::string> kept;
};

// buildkit_cases.txt: `== name`, then `-- .dockerignore`, `-- files`, `-- kept` and the optional
// sections of the builders that differ, each followed by its lines.
std::vector<BuildKitCase> read_buildkit_cases() {
  std::ifstream in(KILN_TESTDATA "/builder/dockerignore/buildkit_cases.txt");
  REQUIRE(in);
  std::vector<BuildKitCase> cases;
  std::string section;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("== ", 0) == 0) {
      cases.push_back({line.substr(3), "", {}, {}});
      section.clear();
    } else if (line.rfind("-- ", 0) == 0) {
      section = line.substr(3);
    } else if (cases.empty() || section.empty()) {
      continue;  // the file's notes, and a case's before its first section
    } else if (section == ".dockerignore") {
      cases.back().dockerignore += line + "\n";
    } else if (section == "files") {
      cases.back().files.push_back(line);
    } else if (section == "kept") {
      if (!line.empty()) cases.back().kept.push_back(line);
    }
  }
  return cases;
}

std::string parse_error(std::string_view text) {
  try {
    IgnoreRules::parse(text, ".dockerignore");
  } catch (const kiln::InvalidInputError& e) {
    return e.what();
  }
  return "(parsed)";
}

}  // namespace

// Checked with Docker 20.10's BuildKit and the 28.2 classic builder as well: the BOM with CRLF,
// the Unicode spaces, `!../..`, `a /.`, `//f` and `../g`.
TEST_CASE("dockerignore: the file as ignorefile.ReadAll reads it", "[builder][dockerignore]") {
  auto patterns = [](std::string_view text) { return IgnoreRules::parse(text, ".dockerignore").patterns(); };
  using List = std::vector<std::string>;
  CHECK(patterns("").empty());
  CHECK(patterns("\n\n  \n\t\n").empty());
  CHECK(patterns("a\nb") == List{"a", "b"});
  CHECK(patterns("a\r\nb\r\n") == List{"a", "b"});
  // A comment is a `#` in the first column only.
  CHECK(patterns("# comment\n  # not one\n#\n") == List{"# not one"});
  // Unicode white space is trimmed (here U+00A0 and U+3000), on both sides of a `!` too.
  const std::string nbsp = "\xc2\xa0";
  const std::string ideographic_space = "\xe3\x80\x80";
  CHECK(patterns("  a  \n" + nbsp + "b" + ideographic_space + "\n!  c \n") == List{"a", "b", "!c"});
  // A BOM goes from the first line only.
  const std::string bom = "\xef\xbb\xbf";
  CHECK(patterns(bom + "a\n" + bom + "b") == List{"a", bom + "b"});
  CHECK(patterns(bom + "a\r\nb \r\n") == List{"a", "b"});
  // filepath.Clean, then a leading `/` goes: `/` alone stays and matches nothing.
  CHECK(patterns("/a/\n./b//c/.\nd/../e\n/\n//f\n../g\n.\n") == List{"a", "b/c", "e", "/", "f", "../g", "."});
  CHECK(patterns("!/a/\n!./b\n") == List{"!a", "!b"});
  // patternmatcher cleans again with the `!` in front: `!../..` becomes the plain pattern `.`.
  CHECK(patterns("!../..\n") == List{"."});
  // ... and trims again: `a /.` cleans to `a `, then to `a`.
  CHECK(patterns("a /.\n") == List{"a"});
}

// Docker (BuildKit 20.10 and the 28.2 classic builder) refuses each of these too; the 65535-byte
// limit was checked with both.
TEST_CASE("dockerignore: what Docker refuses, with file and line", "[builder][dockerignore]") {
  CHECK(parse_error("a\n!\n") == ".dockerignore:2: illegal exclusion pattern: \"!\"");
  CHECK(parse_error("! \n") == ".dockerignore:1: illegal exclusion pattern: \"!\"");
  CHECK(parse_error("!/\n") == ".dockerignore:1: illegal exclusion pattern: \"!\"");
  CHECK(parse_error("ok\n\nfoo[\n") ==
        ".dockerignore:3: syntax error in pattern `foo[`: `[` is never closed");
  CHECK(parse_error("!a\\") ==
        ".dockerignore:1: syntax error in pattern `a\\`: `\\` at the end escapes nothing");
  CHECK(parse_error(std::string(65535, 'a') + "\nb") == "(parsed)");
  CHECK(parse_error("a\n" + std::string(65536, 'a')) ==
        ".dockerignore:2: line is longer than 65535 bytes, which Docker refuses");
  CHECK_THROWS_AS(IgnoreRules::parse("[", "x"), kiln::InvalidInputError);
}

// Go compiles a pattern's regular expression only when a path needs the pattern, so that is when
// Docker fails (checked with both builders for `x*[` and `a\yb`), and when kiln does.
TEST_CASE("dockerignore: a broken regular expression fails the path that needs it",
          "[builder][dockerignore]") {
  auto error_for = [](std::string_view text, std::string_view path) -> std::string {
    auto rules = IgnoreRules::parse(text, ".dockerignore");
    try {
      rules.excluded(path);
    } catch (const kiln::InvalidInputError& e) {
      return e.what();
    }
    return "(decided)";
  };
  // filepath.Match(pattern, ".") never reaches the `[` of `x*[`, so the file is read without error.
  CHECK(error_for("x*[", "b") ==
        ".dockerignore:1: syntax error in pattern `x*[`: Docker reads it as the regular expression "
        "`^x[^/]*[$`: missing closing ]: `[$`");
  CHECK(error_for("ok\n[z-a]", "b") ==
        ".dockerignore:2: syntax error in pattern `[z-a]`: Docker reads it as the regular expression "
        "`^[z-a]$`: invalid character class range: `z-a`");
  CHECK(error_for("a\\yb", "x") ==
        ".dockerignore:1: syntax error in pattern `a\\yb`: Docker reads it as the regular expression "
        "`^a\\yb$`: invalid escape sequence: `\\y`");
  // Go compiles `\pL`; kiln has no Unicode tables, and says so when a path needs the rule.
  CHECK(error_for("\\pL*", "x") ==
        ".dockerignore:1: syntax error in pattern `\\pL*`: Docker reads it as the regular expression "
        "`^\\pL[^/]*$`: Unicode classes are not supported: `\\p`");
  // A path that never needs the rule: everything is excluded before it, and it is no exception.
  CHECK(error_for("*\nx*[", "b") == "(decided)");
  CHECK(error_for("*\nx*[", "a/b") == "(decided)");
}

TEST_CASE("dockerignore: the kinds of match patternmatcher makes", "[builder][dockerignore]") {
  auto excluded = [](std::string_view pattern, std::string_view path) {
    return IgnoreRules::parse(pattern, ".dockerignore").excluded(path);
  };
  // Plain: equal to the path, or to a directory above it.
  CHECK(excluded("a/b", "a/b"));
  CHECK(excluded("a/b", "a/b/c/d"));
  CHECK_FALSE(excluded("a/b", "a"));
  CHECK_FALSE(excluded("a/b", "a/bc"));
  CHECK_FALSE(excluded("a^b*", "a^bc"));  // `^` anchors once there is a wildcard ...
  CHECK(excluded("a^b", "a^b"));          // ... and is a character when there is none
  CHECK(excluded("^a*", "ab"));
  CHECK(excluded("a.b", "a.b"));
  CHECK_FALSE(excluded("a.b*", "axb"));  // `.` is escaped
  // `**` first: a suffix match, also without a `/`.
  CHECK(excluded("**/foo", "foo"));
  CHECK(excluded("**/foo", "a/b/foo"));
  CHECK_FALSE(excluded("**/foo", "afoo"));
  CHECK(excluded("**foo", "afoo"));
  CHECK(excluded("**", "anything/at/all"));
  // `**` last after plain text: a prefix match.
  CHECK(excluded("foo**", "foobar"));
  CHECK(excluded("a/**", "a/b"));
  CHECK_FALSE(excluded("a/**", "a"));
  // Elsewhere a regular expression.
  CHECK(excluded("a/**/b", "a/b"));
  CHECK(excluded("a/**/b", "a/x/y/b"));
  CHECK_FALSE(excluded("a/**/b", "a/xb"));
  CHECK(excluded("a**b", "ab"));
  CHECK(excluded("a**b", "ax/b"));
  CHECK_FALSE(excluded("a**b", "axb"));
  CHECK(excluded("*.go", "main.go"));
  CHECK_FALSE(excluded("*.go", "cmd/main.go"));
  CHECK(excluded("*/*.go", "cmd/main.go"));
  CHECK(excluded("?", "é"));
  CHECK(excluded("[!a]", "!"));  // no negation with `!`, as in Go
  CHECK(excluded("[^a]", "b"));
  CHECK(excluded("f\\d", "f1"));  // a regular expression's digit class
  CHECK_FALSE(excluded("f\\d", "fd"));
  CHECK(excluded("[[:alpha:]]", "z"));
  CHECK(excluded("[*]", "]"));  // `[[^/]*]`: a class of `[`, `^` and `/`, repeated, then `]`
  CHECK_FALSE(excluded("[*]", "*"));
  CHECK(excluded("x*\\", "xa$b"));  // `^x[^/]*\$`: a literal `$` and no end anchor
  CHECK_FALSE(excluded("x*\\", "xa"));
  CHECK(excluded("a\\x62", "ab"));
  CHECK(excluded("\\Qa*", "a[^/]*$tail"));
  // Nothing matches the root or `.`.
  CHECK_FALSE(excluded(".", "a"));
  CHECK_FALSE(excluded("/", "a"));
}

TEST_CASE("dockerignore: the last rule that applies decides, carried down the walk",
          "[builder][dockerignore]") {
  auto rules = IgnoreRules::parse("*.md\n!README*.md\nREADME-secret.md\n", ".dockerignore");
  CHECK(rules.excluded("a.md"));
  CHECK_FALSE(rules.excluded("README.md"));
  CHECK(rules.excluded("README-secret.md"));
  rules = IgnoreRules::parse("*.md\nREADME-secret.md\n!README*.md\n", ".dockerignore");
  CHECK_FALSE(rules.excluded("README-secret.md"));
  // A rule that was skipped on the directory (it could not change the outcome there) is not
  // inherited: [a, !a/c, a] keeps a/c, as Docker 23+ does.
  rules = IgnoreRules::parse("a\n!a/c\na\n", ".dockerignore");
  CHECK(rules.excluded("a"));
  CHECK_FALSE(rules.excluded("a/c"));
  CHECK(rules.excluded("a/d"));
  // The walker's form gives the same, with the directory's state handed down.
  IgnoreRules::DirState a;
  CHECK(rules.excluded("a", {}, &a));
  CHECK_FALSE(rules.excluded("a/c", a, nullptr));
  // Without a state, patternmatcher tries each rule on the ancestors instead (its
  // MatchesOrParentMatches), and the third rule then excludes a/c again.
  CHECK(rules.excluded("a/c", {}, nullptr));
  // A state belongs to the rules that made it.
  IgnoreRules other = IgnoreRules::parse("a\n", ".dockerignore");
  CHECK_THROWS_AS(other.excluded("a/c", a, nullptr), std::invalid_argument);
  // No rules, nothing excluded.
  IgnoreRules none = IgnoreRules::parse("# only a comment\n", ".dockerignore");
  CHECK(none.empty());
  CHECK_FALSE(none.excluded("a"));
}

TEST_CASE("dockerignore: which excluded directories the walker still reads", "[builder][dockerignore]") {
  auto rules = IgnoreRules::parse("a\nb\n", ".dockerignore");
  CHECK_FALSE(rules.may_include_below("a"));  // no exception at all
  rules = IgnoreRules::parse("a\nb\n!a/keep\n!c/**\n", ".dockerignore");
  CHECK(rules.may_include_below("a"));
  CHECK_FALSE(rules.may_include_below("b"));
  CHECK_FALSE(rules.may_include_below("a/k"));
  CHECK(rules.may_include_below("a/keep"));
  CHECK(rules.may_include_below("c"));  // `c/**` counts as `c`
  CHECK_FALSE(rules.may_include_below("ab"));
  // An exception with a wildcard could match anywhere: every excluded directory is read.
  rules = IgnoreRules::parse("*\n!**/*.go\n", ".dockerignore");
  CHECK(rules.may_include_below("b"));
  rules = IgnoreRules::parse("*\n!a/*\n", ".dockerignore");  // a trailing `/*` is no wildcard here
  CHECK_FALSE(rules.may_include_below("b"));
  CHECK(rules.may_include_below("a"));
}

// moby/patternmatcher's own answers (Debian's 0.5.0, Go 1.19) for random ignore files over random
// trees, with fsutil's choice of which excluded directories to read: tests/builder/oracle made it.
TEST_CASE("dockerignore: agrees with patternmatcher and fsutil on a random corpus",
          "[builder][dockerignore]") {
  std::ifstream in(KILN_TESTDATA "/builder/dockerignore/patternmatcher_walk.txt");
  REQUIRE(in);
  std::optional<IgnoreRules> rules;
  std::string text;
  std::map<std::string, IgnoreRules::DirState> states;
  std::size_t cases = 0;
  std::size_t paths = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto fields = split(line, '|');
    if (fields[0] == "case") {
      ++cases;
      text = percent_decode(fields[1]);
      states.clear();
      try {
        rules = IgnoreRules::parse(text, ".dockerignore");
      } catch (const kiln::InvalidInputError&) {
        rules.reset();
      }
      continue;
    }
    INFO(".dockerignore: `" << text << "`");
    if (fields[0] == "error") {
      CHECK_FALSE(rules);
      continue;
    }
    if (fields[0] == "matcherror") {
      // patternmatcher failed on this path: a rule's regular expression does not compile.
      REQUIRE(rules);
      const std::string path = percent_decode(fields[1]);
      INFO("path `" << path << "`");
      CHECK_THROWS_AS(rules->excluded(path), kiln::InvalidInputError);
      rules.reset();  // patternmatcher stops there
      continue;
    }
    REQUIRE(fields[0] == "path");
    REQUIRE(rules);
    ++paths;
    const std::string path = percent_decode(fields[1]);
    INFO("path `" << path << "`, patternmatcher: " << fields[2]);
    const bool excluded = rules->excluded(path);
    CHECK(excluded == (fields[2][0] == 'x'));
    // The walker's form, the paths coming in order with their directories before them.
    const std::string dir = parent_of(path);
    IgnoreRules::DirState self;
    CHECK(rules->excluded(path, dir.empty() ? IgnoreRules::DirState{} : states[dir], &self) == excluded);
    states[path] = std::move(self);
    if (fields[2] == "xd" || fields[2] == "xs") CHECK(rules->may_include_below(path) == (fields[2] == "xd"));
  }
  CHECK(cases >= 600);
  CHECK(paths > 5000);
}

// Each case was built by Docker itself: see buildkit_cases.txt for how, and for the builders that
// keep something else (older BuildKit and the classic builder, where their walkers differ).
TEST_CASE("dockerignore: the contexts Docker builds", "[builder][dockerignore]") {
  const auto cases = read_buildkit_cases();
  REQUIRE(cases.size() >= 30);
  for (const auto& c : cases) {
    INFO("case: " << c.name);
    std::vector<std::string> files = c.files;
    files.push_back("Dockerfile");
    files.push_back(".dockerignore");
    if (c.kept == std::vector<std::string>{"error"}) {
      CHECK_THROWS_AS(walk(IgnoreRules::parse(c.dockerignore, ".dockerignore"), files),
                      kiln::InvalidInputError);
      continue;
    }
    const auto rules = IgnoreRules::parse(c.dockerignore, ".dockerignore");
    CHECK(joined(walk(rules, files)) == joined(c.kept));
  }
}

namespace {

void write(const std::string& path, std::string_view text) {
  kiln::write_file_atomic(path, text);
}

// Which file find_ignore_file took: "<name> <path relative to root> <text>", or "none".
std::string found(const std::string& root, const std::string& context, const std::string& dockerfile) {
  auto file = find_ignore_file(context, dockerfile);
  if (!file) return "none";
  return file->name + " " + file->path.substr(root.size() + 1) + " " + file->text;
}

}  // namespace

// Each situation here was also built with Docker 20.10's BuildKit, which chose the same file.
TEST_CASE("dockerignore: the ignore file beside the Dockerfile wins", "[builder][dockerignore]") {
  kiln::TempDir dir("/tmp", "kiln-dockerignore-test-");
  const std::string root = dir.path();
  const std::string ctx = root + "/ctx";
  kiln::make_dirs(ctx + "/sub");
  kiln::make_dirs(root + "/other");
  write(ctx + "/Dockerfile", "FROM scratch\n");
  write(ctx + "/sub/app.Dockerfile", "FROM scratch\n");
  write(root + "/other/Dockerfile", "FROM scratch\n");

  CHECK(found(root, ctx, ctx + "/Dockerfile") == "none");
  write(ctx + "/.dockerignore", "a\n");
  CHECK(found(root, ctx, ctx + "/Dockerfile") == ".dockerignore ctx/.dockerignore a\n");
  CHECK(found(root, ctx, "") == ".dockerignore ctx/.dockerignore a\n");  // a Dockerfile from stdin

  // `<name>.dockerignore` beside the Dockerfile, inside the context or not.
  write(ctx + "/sub/app.Dockerfile.dockerignore", "b\n");
  CHECK(found(root, ctx, ctx + "/sub/app.Dockerfile") ==
        "app.Dockerfile.dockerignore ctx/sub/app.Dockerfile.dockerignore b\n");
  write(root + "/other/Dockerfile.dockerignore", "c\n");
  CHECK(found(root, ctx, root + "/other/Dockerfile") ==
        "Dockerfile.dockerignore other/Dockerfile.dockerignore c\n");
  // Empty, it still wins: nothing is ignored.
  write(ctx + "/sub/app.Dockerfile.dockerignore", "");
  CHECK(found(root, ctx, ctx + "/sub/app.Dockerfile") ==
        "app.Dockerfile.dockerignore ctx/sub/app.Dockerfile.dockerignore ");

  // Not a regular file: the context's file applies.
  REQUIRE(::unlink((ctx + "/sub/app.Dockerfile.dockerignore").c_str()) == 0);
  kiln::make_dirs(ctx + "/sub/app.Dockerfile.dockerignore");
  CHECK(found(root, ctx, ctx + "/sub/app.Dockerfile") == ".dockerignore ctx/.dockerignore a\n");
  REQUIRE(::rmdir((ctx + "/sub/app.Dockerfile.dockerignore").c_str()) == 0);

  // A symlink resolves with the Dockerfile's directory as its root: one that leaves it, or dangles,
  // counts as absent.
  const std::string link = ctx + "/sub/app.Dockerfile.dockerignore";
  write(ctx + "/sub/x.ignore", "x\n");
  write(ctx + "/cignore", "c\n");
  for (const auto& [target, expected] : std::vector<std::pair<std::string, std::string>>{
           {"x.ignore", "app.Dockerfile.dockerignore ctx/sub/app.Dockerfile.dockerignore x\n"},
           {"../cignore", ".dockerignore ctx/.dockerignore a\n"},
           {root + "/other/Dockerfile.dockerignore", ".dockerignore ctx/.dockerignore a\n"},
           {"nowhere", ".dockerignore ctx/.dockerignore a\n"},
       }) {
    INFO("symlink to " << target);
    REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
    CHECK(found(root, ctx, ctx + "/sub/app.Dockerfile") == expected);
    REQUIRE(::unlink(link.c_str()) == 0);
  }

  // The context's own file: followed inside the context, absent when it leaves it or is a directory.
  REQUIRE(::unlink((ctx + "/.dockerignore").c_str()) == 0);
  REQUIRE(::symlink("cignore", (ctx + "/.dockerignore").c_str()) == 0);
  CHECK(found(root, ctx, ctx + "/Dockerfile") == ".dockerignore ctx/.dockerignore c\n");
  REQUIRE(::unlink((ctx + "/.dockerignore").c_str()) == 0);
  REQUIRE(::symlink("../other/Dockerfile.dockerignore", (ctx + "/.dockerignore").c_str()) == 0);
  CHECK(found(root, ctx, ctx + "/Dockerfile") == "none");
  REQUIRE(::unlink((ctx + "/.dockerignore").c_str()) == 0);
  kiln::make_dirs(ctx + "/.dockerignore");
  CHECK(found(root, ctx, ctx + "/Dockerfile") == "none");

  // The name is the Dockerfile's as requested: with only a lowercase `dockerfile` there, BuildKit
  // still looks for `Dockerfile.dockerignore`.
  write(ctx + "/dockerfile.dockerignore", "lower\n");
  CHECK(found(root, ctx, ctx + "/Dockerfile") == "none");
  write(ctx + "/Dockerfile.dockerignore", "upper\n");
  CHECK(found(root, ctx, ctx + "/Dockerfile") ==
        "Dockerfile.dockerignore ctx/Dockerfile.dockerignore upper\n");
}
