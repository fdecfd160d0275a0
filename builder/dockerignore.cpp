#include "builder/dockerignore.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <stdexcept>

#include "builder/glob.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/io.h"
#include "parser/unicode.h"

namespace kiln::builder {

namespace {

using parser::unicode::append_utf8;
using parser::unicode::decode_utf8;
using parser::unicode::is_space;

// bufio.Scanner's limit, which ignorefile.ReadAll does not raise: a longer line fails the build.
constexpr std::size_t kMaxLine = 65535;
constexpr std::uint64_t kMaxIgnoreFile = 16 << 20;

// strings.TrimSpace: Unicode white space at both ends. A byte that is not UTF-8 decodes as U+FFFD,
// which is no space, so it stops the trimming as it does in Go.
std::string_view trim_space(std::string_view text) {
  while (!text.empty()) {
    auto first = decode_utf8(text, 0);
    if (!is_space(first.rune)) break;
    text.remove_prefix(first.length);
  }
  while (!text.empty()) {
    // The last rune starts at most 3 continuation bytes back; if what starts there does not end at
    // the end, the last byte is one that is not UTF-8.
    std::size_t start = text.size() - 1;
    while (start > 0 && text.size() - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
      --start;
    }
    auto last = decode_utf8(text, start);
    if (start + last.length != text.size() || !is_space(last.rune)) break;
    text.remove_suffix(last.length);
  }
  return text;
}

// Go's path.Clean (filepath.Clean on Linux): the shortest equivalent path, lexically.
std::string clean_path(std::string_view path) {
  if (path.empty()) return ".";
  const bool rooted = path[0] == '/';
  std::vector<std::string_view> parts;
  std::size_t leading_dotdots = 0;  // `..` that cannot be cancelled, in a relative path
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(pos, end - pos);
    pos = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.size() > leading_dotdots) {
        parts.pop_back();
      } else if (!rooted) {
        parts.push_back(part);
        ++leading_dotdots;
      }
      continue;
    }
    parts.push_back(part);
  }
  std::string out = rooted ? "/" : "";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += '/';
    out += parts[i];
  }
  if (out.empty()) return ".";
  return out;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}
bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// patternmatcher's compile: the kind of match, and for a regexp the expression it writes. It reads
// the pattern rune by rune (text/scanner: a byte that is not UTF-8 becomes U+FFFD, a BOM at the very
// start is skipped) and counts its steps, since `**` only makes a suffix match at step 0.
struct Translation {
  bool regexp = false;
  bool prefix = false;
  bool suffix = false;
  std::string expression;
};

Translation translate(std::string_view pattern) {
  std::vector<char32_t> runes;
  for (std::size_t pos = 0; pos < pattern.size();) {
    auto decoded = decode_utf8(pattern, pos);
    runes.push_back(decoded.rune);
    pos += decoded.length;
  }
  std::size_t next = 0;
  if (!runes.empty() && runes[0] == 0xFEFF) next = 1;

  enum class Type { exact, prefix, suffix, regexp } type = Type::exact;
  std::string re = "^";
  auto peek = [&]() -> char32_t { return next < runes.size() ? runes[next] : 0xFFFFFFFF; };
  for (std::size_t step = 0; next < runes.size(); ++step) {
    const char32_t ch = runes[next++];
    if (ch == '*') {
      if (peek() == '*') {
        ++next;
        if (peek() == '/') ++next;  // `**/` reads as `**`
        if (next == runes.size()) {
          // `**` at the end: everything below, a plain prefix match if nothing came before.
          if (type == Type::exact) {
            type = Type::prefix;
          } else {
            re += ".*";
            type = Type::regexp;
          }
        } else {
          re += "(.*/)?";  // any number of directories, none included
          type = Type::regexp;
        }
        if (step == 0) type = Type::suffix;
      } else {
        re += "[^/]*";
        type = Type::regexp;
      }
    } else if (ch == '?') {
      re += "[^/]";
      type = Type::regexp;
    } else if (ch == '.' || ch == '+' || ch == '(' || ch == ')' || ch == '|' || ch == '{' || ch == '}' ||
               ch == '$') {
      re += '\\';
      re += static_cast<char>(ch);
    } else if (ch == '\\') {
      re += '\\';
      if (next < runes.size()) {
        append_utf8(re, runes[next++]);
        type = Type::regexp;
      }
    } else if (ch == '[' || ch == ']') {
      re += static_cast<char>(ch);
      type = Type::regexp;
    } else {
      append_utf8(re, ch);
    }
  }
  Translation out;
  out.regexp = type == Type::regexp;
  out.prefix = type == Type::prefix;
  out.suffix = type == Type::suffix;
  if (out.regexp) out.expression = re + "$";
  return out;
}

// fsutil's patternWithoutTrailingGlob.
std::string_view without_trailing_glob(std::string_view pattern) {
  if (ends_with(pattern, "/**")) pattern.remove_suffix(3);
  if (ends_with(pattern, "/*")) pattern.remove_suffix(2);
  return pattern;
}

}  // namespace

bool IgnoreRules::Rule::matches(std::string_view path) const {
  switch (kind) {
    case Kind::exact:
      return path == text;
    case Kind::prefix:
      return starts_with(path, std::string_view(text).substr(0, text.size() - 2));
    case Kind::suffix: {
      std::string_view suffix = std::string_view(text).substr(2);
      if (ends_with(path, suffix)) return true;
      return !suffix.empty() && suffix[0] == '/' && path == suffix.substr(1);
    }
    case Kind::regexp:
      return regexp->matches(path);
  }
  return false;
}

IgnoreRules IgnoreRules::parse(std::string_view text, std::string_view file_name) {
  IgnoreRules rules;
  std::size_t line_number = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    auto fail = [&](const std::string& why) {
      throw InvalidInputError(fmt::format("{}:{}: {}", file_name, line_number, why));
    };
    if (line.size() > kMaxLine)
      fail(fmt::format("line is longer than {} bytes, which Docker refuses", kMaxLine));
    if (ends_with(line, "\r")) line.remove_suffix(1);
    if (line_number == 1 && starts_with(line, "\xEF\xBB\xBF")) line.remove_prefix(3);
    if (starts_with(line, "#")) continue;

    // ignorefile.ReadAll: trim, split off the `!`, clean, drop a leading `/`.
    std::string_view trimmed = trim_space(line);
    if (trimmed.empty()) continue;
    const bool invert = trimmed[0] == '!';
    if (invert) trimmed = trim_space(trimmed.substr(1));
    std::string pattern(trimmed);
    if (!pattern.empty()) {
      pattern = clean_path(pattern);
      if (pattern.size() > 1 && pattern[0] == '/') pattern.erase(0, 1);
    }
    if (invert) pattern = "!" + pattern;

    // patternmatcher.New: trims and cleans again, this time with the `!` in front (so `!../..`
    // cleans to `.`, an ordinary pattern).
    pattern = std::string(trim_space(pattern));
    if (pattern.empty()) continue;
    pattern = clean_path(pattern);
    Rule rule;
    if (pattern[0] == '!') {
      if (pattern.size() == 1) fail("illegal exclusion pattern: \"!\"");
      rule.exception = true;
      pattern.erase(0, 1);
    }
    // patternmatcher's syntax check is filepath.Match(pattern, "."), which only looks as far as
    // matching "." takes it: `x*[` passes (and fails later, as a regular expression).
    if (GlobPattern glob(pattern); glob.match(".") == GlobPattern::Outcome::malformed) {
      fail(fmt::format("syntax error in pattern `{}`: {}", pattern, glob.malformed_reason()));
    }
    std::string why;
    Translation translation = translate(pattern);
    if (translation.regexp) {
      rule.kind = Kind::regexp;
      rule.regexp = GoRegexp::compile(translation.expression, &why);
      if (!rule.regexp) {
        rule.broken = fmt::format(
            "{}:{}: syntax error in pattern `{}`: Docker reads it as the regular expression `{}`: {}",
            file_name, line_number, pattern, translation.expression, why);
      }
    } else if (translation.prefix) {
      rule.kind = Kind::prefix;
    } else if (translation.suffix) {
      rule.kind = Kind::suffix;
    }
    rule.prefix = std::string(without_trailing_glob(pattern));
    rule.literal_prefix = rule.prefix.find_first_of("*[]?^\\") == std::string::npos;
    rule.text = std::move(pattern);
    if (rule.exception) {
      rules.has_exceptions_ = true;
      if (!rule.literal_prefix) rules.exceptions_are_literal_ = false;
    }
    rules.rules_.push_back(std::move(rule));
  }
  return rules;
}

std::vector<std::string> IgnoreRules::patterns() const {
  std::vector<std::string> out;
  out.reserve(rules_.size());
  for (const Rule& rule : rules_) out.push_back(rule.exception ? "!" + rule.text : rule.text);
  return out;
}

// patternmatcher's MatchesUsingParentResults. A rule is only tried when it could change the
// outcome so far (an exclusion while the path is still kept, an exception while it is excluded);
// one that matched the parent directory counts as matching without being tried.
bool IgnoreRules::decide(std::string_view path, const std::vector<std::uint64_t>* parent,
                         std::vector<std::uint64_t>* self) const {
  if (self) self->assign((rules_.size() + 63) / 64, 0);
  bool excluded = false;
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    bool match = parent && ((*parent)[i / 64] >> (i % 64)) & 1U;
    if (!match) {
      if (rule.exception != excluded) continue;
      if (!rule.broken.empty()) throw InvalidInputError(rule.broken);
      match = rule.matches(path);
      if (!match && !parent) {
        // Without a parent's state, patternmatcher tries the rule on each ancestor instead.
        for (std::size_t slash = path.find('/'); slash != std::string_view::npos && !match;
             slash = path.find('/', slash + 1)) {
          match = rule.matches(path.substr(0, slash));
        }
      }
    }
    if (match) {
      if (self) (*self)[i / 64] |= std::uint64_t{1} << (i % 64);
      excluded = !rule.exception;
    }
  }
  return excluded;
}

bool IgnoreRules::excluded(std::string_view path, const DirState& parent, DirState* self) const {
  if (rules_.empty()) {
    if (self) self->matched_.clear();
    return false;
  }
  const std::vector<std::uint64_t>* inherited = parent.matched_.empty() ? nullptr : &parent.matched_;
  if (inherited && parent.rule_count_ != rules_.size()) {
    throw std::invalid_argument("IgnoreRules::excluded: the DirState comes from other rules");
  }
  if (self) self->rule_count_ = rules_.size();
  return decide(path, inherited, self ? &self->matched_ : nullptr);
}

bool IgnoreRules::excluded(std::string_view path) const {
  if (rules_.empty()) return false;
  std::vector<std::uint64_t> state;
  std::vector<std::uint64_t> next;
  bool have_state = false;
  for (std::size_t slash = path.find('/'); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    decide(path.substr(0, slash), have_state ? &state : nullptr, &next);
    state.swap(next);
    have_state = true;
  }
  return decide(path, have_state ? &state : nullptr, nullptr);
}

bool IgnoreRules::may_include_below(std::string_view dir) const {
  if (!has_exceptions_) return false;
  if (!exceptions_are_literal_) return true;
  for (const Rule& rule : rules_) {
    if (!rule.exception) continue;
    // fsutil asks whether `<prefix>/` starts with `<dir>/`.
    std::string_view prefix = rule.prefix;
    if (prefix == dir ||
        (prefix.size() > dir.size() && starts_with(prefix, dir) && prefix[dir.size()] == '/')) {
      return true;
    }
  }
  return false;
}

namespace {

// The regular file `name` under `root_dirfd` (symlinks resolved inside that root), or nullopt when
// there is none there.
std::optional<std::string> read_if_regular(int root_dirfd, const std::string& name,
                                           const std::string& shown) {
  // O_NONBLOCK: a FIFO of that name must not stall the build; it is not a regular file anyway.
  Fd fd = open_in_root(root_dirfd, name, O_RDONLY | O_NONBLOCK);
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno(fmt::format("open `{}`", shown));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat `{}`", shown));
  if (!S_ISREG(st.st_mode)) return std::nullopt;
  return read_fd_capped(fd.get(), kMaxIgnoreFile, shown);
}

}  // namespace

std::optional<IgnoreFile> find_ignore_file(const std::string& context_dir, const std::string& dockerfile) {
  if (!dockerfile.empty()) {
    const std::size_t slash = dockerfile.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : dockerfile.substr(0, slash);
    const std::string name = dockerfile.substr(slash == std::string::npos ? 0 : slash + 1) + ".dockerignore";
    const std::string shown = dir == "/" ? "/" + name : dir + "/" + name;
    Fd dirfd = open_or_throw(dir, O_PATH | O_DIRECTORY);
    if (auto text = read_if_regular(dirfd.get(), name, shown))
      return IgnoreFile{name, shown, std::move(*text)};
  }
  const std::string shown = context_dir + "/.dockerignore";
  Fd context = open_or_throw(context_dir, O_PATH | O_DIRECTORY);
  if (auto text = read_if_regular(context.get(), ".dockerignore", shown)) {
    return IgnoreFile{".dockerignore", shown, std::move(*text)};
  }
  return std::nullopt;
}

}  // namespace kiln::builder
