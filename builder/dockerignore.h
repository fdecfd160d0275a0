// .dockerignore as Docker's BuildKit applies it to a build context: the file read as moby's
// ignorefile.ReadAll reads it, each pattern compiled as moby/patternmatcher compiles it, and paths
// decided as fsutil's context walker (the sender of every `docker build`) decides them.
//
// The file: one pattern per line (LF or CRLF), a UTF-8 BOM dropped; a line whose first byte is `#`
// is a comment (`  # x` is the pattern `# x`); Unicode white space trimmed; a leading `!` makes an
// exception; the rest goes through filepath.Clean and loses a leading `/`.
// A pattern, matched against a path relative to the context root (`a/b/c`):
//   - without `*`, `?`, `[`, `]` or `\` it must equal the path;
//   - `**` at the very start is a suffix match (`**/foo` matches `foo` and `x/foo`; `**foo`
//     matches `xfoo` too); `**` at the end of an otherwise plain pattern a prefix match (`a/**`
//     matches everything under `a/`, `foo**` everything starting with `foo`);
//   - anything else becomes a Go regular expression (see go_regexp.h): `*` and `?` stay within one
//     component, `**` elsewhere spans any number of them (zero included), and characters that
//     mean something to a regular expression keep that meaning (`^` anchors, `\d` is a digit).
// The last pattern that matches decides; a pattern that matches a directory matches everything
// under it. As in fsutil, that inheritance is carried down the walk: a rule that did not have to
// be tried on a directory (its outcome was already settled) is not inherited by the entries, so
// [`a`, `!a/c`, `a`] keeps `a/c`, as today's patternmatcher does (BuildKit 0.8, in Docker 20.10,
// matched each path on its own and did not).
//
// The Dockerfile and the ignore file are read by the builder whatever the patterns say; if the
// patterns exclude them, they are not in the context that COPY and ADD see (BuildKit reads both
// through separate transfers; the context transfer applies the patterns to everything), so
// `COPY Dockerfile /x` then fails, with BuildKit and with the classic builder alike.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/go_regexp.h"

namespace kiln::builder {

class IgnoreRules {
 public:
  IgnoreRules() = default;

  // Reads the text of an ignore file. `file_name` is used in messages. Throws InvalidInputError
  // "<file_name>:<line>: ..." for what Docker refuses when it reads the file: a line longer than
  // 65535 bytes, a lone `!`, a pattern that filepath.Match(pattern, ".") calls malformed.
  static IgnoreRules parse(std::string_view text, std::string_view file_name);

  bool empty() const { return rules_.empty(); }

  // The patterns as Docker keeps them after cleaning, exceptions with their `!`.
  std::vector<std::string> patterns() const;

  // What a directory hands down to its entries: which rules matched it. Default-constructed, it
  // stands for "no directory" (the entries at the root of the context).
  class DirState {
   public:
    DirState() = default;

   private:
    friend class IgnoreRules;
    std::vector<std::uint64_t> matched_;  // one bit per rule; empty for "no directory"
    std::size_t rule_count_ = 0;          // of the rules that filled it
  };

  // For the context walker: whether `path` (relative, `/`-separated, no leading `/` or `./`) is
  // excluded, given the state of the directory that holds it. For a directory, pass `self` to
  // receive the state its own entries need; for a file pass nullptr (nothing is allocated then).
  // With a default `parent` and a path below the root, the rules are also tried on the path's
  // ancestors, as patternmatcher does when it has no state. A `parent` filled by other rules is a
  // programming error: std::invalid_argument.
  // Throws InvalidInputError "<file_name>:<line>: syntax error in pattern ..." when the path needs
  // a rule whose regular expression Go would not compile (Docker fails the build then too, and
  // only then), or one of the few forms go_regexp.h does not support.
  bool excluded(std::string_view path, const DirState& parent, DirState* self) const;

  // The same for a single path, deciding each ancestor on the way down as the walker would.
  bool excluded(std::string_view path) const;

  // For an excluded directory: whether the walker must still read it, because an exception could
  // keep something below it. It answers as fsutil does: no when there is no exception; yes when an
  // exception has a wildcard (other than a trailing `/*` or `/**`); otherwise yes only when an
  // exception names a path below `dir`. The entries are still decided by excluded(); a directory
  // that is excluded but read is part of the context only if some entry below it is.
  bool may_include_below(std::string_view dir) const;

 private:
  enum class Kind : std::uint8_t { exact, prefix, suffix, regexp };
  struct Rule {
    std::string text;  // the cleaned pattern without its `!`, as patternmatcher keeps it
    bool exception = false;
    Kind kind = Kind::exact;
    std::optional<GoRegexp> regexp;
    bool literal_prefix = false;  // no wildcard once a trailing `/*` or `/**` is cut off
    std::string prefix;           // the text with that trailing `/*` or `/**` cut off
    // Why its regular expression cannot be run ("<file>:<line>: ..."), for when a path needs it:
    // Docker compiles it only then, and a context whose paths never need it builds.
    std::string broken;
    bool matches(std::string_view path) const;
  };

  bool decide(std::string_view path, const std::vector<std::uint64_t>* parent,
              std::vector<std::uint64_t>* self) const;

  std::vector<Rule> rules_;
  bool has_exceptions_ = false;
  bool exceptions_are_literal_ = true;
};

// The ignore file that applies to a build, as BuildKit chooses it: `<Dockerfile name>.dockerignore`
// beside the Dockerfile when there is one, else `.dockerignore` at the root of the context.
struct IgnoreFile {
  std::string name;  // for messages, as BuildKit names it: "Dockerfile.dockerignore", ".dockerignore"
  std::string path;  // where it was read from
  std::string text;
};

// `dockerfile` is the Dockerfile as the build names it (`-f`, or `<context>/Dockerfile` by
// default; pass that name even when the builder falls back to a lowercase `dockerfile`, since
// BuildKit looks for `Dockerfile.dockerignore` then), or empty for a Dockerfile from stdin. A
// symlink is followed, with the Dockerfile's directory (or the context) as its root, as BuildKit's
// transfers follow it. A candidate that is not a regular file counts as absent, as BuildKit fails
// to read it and goes on. Returns nullopt when neither file exists; throws SystemError when one
// cannot be read, InvalidInputError when it is larger than 16 MiB.
std::optional<IgnoreFile> find_ignore_file(const std::string& context_dir, const std::string& dockerfile);

}  // namespace kiln::builder
