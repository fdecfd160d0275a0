// BuildKit's shell lexer (frontend/dockerfile/shell/lex.go) is the reference for every rule here,
// including its quirks; the comments point out the ones a reader would otherwise take for bugs.
#include "parser/word_expansion.h"

#include <algorithm>
#include <utility>

#include "parser/shell_pattern.h"
#include "parser/unicode.h"

namespace kiln::parser {

namespace {

// BuildKit recurses once per nested `${...}` without a bound (Go stacks grow); ours do not, so a
// word like `${a:-${a:-...}}` a million levels deep gets an error instead of a stack overflow.
constexpr int kMaxNesting = 64;

// Go's text/scanner returns -1 at the end; no rune has this value.
constexpr char32_t kEndOfInput = 0xFFFFFFFF;

constexpr const char* kMissingBrace = "syntax error: missing '}'";

// POSIX's special parameters. BuildKit reads them as one-character names, so `$@` or `${#}` look up
// a variable named "@" or "#": nothing is set by that name, and they expand to nothing.
bool is_special_parameter(char32_t rune) {
  switch (rune) {
    case '@':
    case '*':
    case '#':
    case '?':
    case '-':
    case '$':
    case '!':
    case '0':
      return true;
    default:
      return false;
  }
}

bool is_name_rune(char32_t rune) {
  return unicode::is_letter(rune) || unicode::is_digit(rune) || rune == '_';
}

std::string unsupported_modifier(const std::string& modifier) {
  return "unsupported modifier (" + modifier + ") in substitution";
}

// ProcessWords' splitting. Unquoted text and variable values split at whitespace; quoted text,
// escaped characters and escapes kept by raw_escapes never do. An empty word ("" alone) is dropped,
// as BuildKit drops it.
class WordSplitter {
 public:
  void add_char(char32_t rune) {
    if (unicode::is_space(rune)) {
      end_word();
    } else {
      add_raw_char(rune);
    }
  }
  void add_raw_char(char32_t rune) { unicode::append_utf8(current_, rune); }
  void add_split(std::string_view text) {
    for (std::size_t pos = 0; pos < text.size();) {
      const unicode::DecodedRune decoded = unicode::decode_utf8(text, pos);
      add_char(decoded.rune);
      pos += decoded.length;
    }
  }
  void add_raw(std::string_view text) { current_.append(text); }
  std::vector<std::string> finish() {
    end_word();
    return std::move(words_);
  }

 private:
  void end_word() {
    if (current_.empty()) return;
    words_.push_back(std::move(current_));
    current_.clear();
  }

  std::string current_;
  std::vector<std::string> words_;
};

// `${var//pattern/replacement}` is Go's Regexp.ReplaceAllString, which expands `$` in the replacement
// as regexp.Expand does: `$$` is `$`, `$0` and `${0}` are the matched text, every other `$name` or
// `${name}` is empty (the pattern has no groups), and a `$` that starts no name stays literal. The
// template is cut into pieces once, so that each match costs what it writes, not the template's size.
class ReplacementTemplate {
 public:
  explicit ReplacementTemplate(std::string_view text) {
    std::size_t pos = 0;
    while (true) {
      const std::size_t dollar = text.find('$', pos);
      if (dollar == std::string_view::npos) {
        add_literal(text.substr(pos));
        break;
      }
      add_literal(text.substr(pos, dollar - pos));
      pos = dollar + 1;
      if (pos < text.size() && text[pos] == '$') {
        add_literal("$");
        ++pos;
        continue;
      }
      std::size_t cursor = pos;
      const bool braced = cursor < text.size() && text[cursor] == '{';
      if (braced) ++cursor;
      const std::size_t name_start = cursor;
      while (cursor < text.size()) {
        const unicode::DecodedRune decoded = unicode::decode_utf8(text, cursor);
        if (!is_name_rune(decoded.rune)) break;
        cursor += decoded.length;
      }
      const std::string_view name = text.substr(name_start, cursor - name_start);
      if (name.empty() || (braced && (cursor >= text.size() || text[cursor] != '}'))) {
        add_literal("$");
        continue;
      }
      if (braced) ++cursor;
      pos = cursor;
      // Go refuses leading zeros in group numbers, so only "0" itself names the whole match.
      if (name == "0") ++current_.match_copies;
    }
    if (!current_.literal.empty() || current_.match_copies != 0) pieces_.push_back(std::move(current_));
  }

  void append_to(std::string& out, std::string_view match) const {
    for (const Piece& piece : pieces_) {
      out.append(piece.literal);
      // Skipped for an empty match, so that a million `$0` cost nothing at each empty match.
      if (match.empty()) continue;
      for (std::size_t i = 0; i < piece.match_copies; ++i) out.append(match);
    }
  }

 private:
  struct Piece {
    std::string literal;           // written first,
    std::size_t match_copies = 0;  // then this many copies of the matched text
  };

  void add_literal(std::string_view literal) {
    if (literal.empty()) return;
    if (current_.match_copies != 0) {
      pieces_.push_back(std::move(current_));
      current_ = {};
    }
    current_.literal.append(literal);
  }

  std::vector<Piece> pieces_;
  Piece current_;
};

// One pass over one input, mirroring BuildKit's recursive descent: process_until is processStopOn,
// and the other functions carry the names of theirs.
class Lexer {
 public:
  Lexer(std::string_view input, const VariableLookup& lookup, const ExpandOptions& options,
        VariableUsage* usage)
      : input_(input), lookup_(lookup), options_(options), usage_(usage) {
    // Go's text/scanner skips a byte order mark at the very start.
    if (input_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
  }

  std::string run(WordSplitter* words) { return process_until(kEndOfInput, options_.raw_escapes, words); }

 private:
  class NestingGuard {
   public:
    NestingGuard(int& depth, std::size_t dollar) : depth_(depth) {
      if (depth_ >= kMaxNesting) {
        throw WordError(
            "syntax error: ${...} nested more than " + std::to_string(kMaxNesting) + " levels deep", dollar);
      }
      ++depth_;
    }
    ~NestingGuard() { --depth_; }
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;

   private:
    int& depth_;
  };

  bool at_end() const { return pos_ >= input_.size(); }

  char32_t peek() const {
    if (at_end()) return kEndOfInput;
    const auto byte = static_cast<unsigned char>(input_[pos_]);
    if (byte < 0x80) return byte;
    return unicode::decode_utf8(input_, pos_).rune;
  }

  char32_t next() {
    if (at_end()) return kEndOfInput;
    const unicode::DecodedRune decoded = unicode::decode_utf8(input_, pos_);
    pos_ += decoded.length;
    return decoded.rune;
  }

  char32_t escape() const { return static_cast<unsigned char>(options_.escape); }

  std::optional<std::string> lookup(const std::string& name) {
    std::optional<std::string> value = lookup_ ? lookup_(name) : std::nullopt;
    if (usage_ != nullptr) (value ? usage_->matched : usage_->unmatched).insert(name);
    return value;
  }

  // Reads up to `stop` (consumed) or, for kEndOfInput, to the end. Only the top level splits words.
  std::string process_until(char32_t stop, bool raw_escapes, WordSplitter* words) {
    std::string result;
    // The whole input's result is usually about as long as the input: one allocation, not a few.
    if (stop == kEndOfInput && words == nullptr) result.reserve(input_.size() - pos_);
    while (!at_end()) {
      char32_t rune = peek();
      if (stop != kEndOfInput && rune == stop) {
        next();
        return result;
      }
      if (rune == '$') {
        const std::string value = expand_dollar();
        result.append(value);
        if (words != nullptr) words->add_split(value);
        continue;
      }
      if (rune == '\'' || rune == '"') {
        const std::string quoted = rune == '\'' ? single_quote() : double_quote(raw_escapes);
        result.append(quoted);
        if (words != nullptr) words->add_raw(quoted);
        continue;
      }
      rune = next();
      if (rune == escape()) {
        if (raw_escapes) {
          unicode::append_utf8(result, rune);
          if (words != nullptr) words->add_raw_char(rune);
        }
        // An escape at the very end escapes nothing and is dropped.
        if (at_end()) break;
        rune = next();
        if (words != nullptr) words->add_raw_char(rune);
      } else if (words != nullptr) {
        words->add_char(rune);
      }
      unicode::append_utf8(result, rune);
    }
    if (stop != kEndOfInput) {
      // Every caller that passes a stop rune turns this into its own message, as BuildKit does.
      std::string message = "unexpected end of statement while looking for matching ";
      unicode::append_utf8(message, stop);
      throw WordError(message, pos_);
    }
    return result;
  }

  // Nothing is special between single quotes, not even the escape character.
  std::string single_quote() {
    const std::size_t open = pos_;
    std::string result;
    next();
    if (options_.raw_quotes) result.push_back('\'');
    while (true) {
      if (at_end()) {
        throw WordError("unexpected end of statement while looking for matching single-quote", open);
      }
      const char32_t rune = next();
      if (rune == '\'') {
        if (options_.raw_quotes) result.push_back('\'');
        return result;
      }
      unicode::append_utf8(result, rune);
    }
  }

  // Variables expand between double quotes, and the escape character escapes only `"`, `$` and
  // itself; before anything else it is kept. With raw escapes, an escape that escapes nothing is
  // written twice: BuildKit writes the kept escape and then the character, which is the escape.
  std::string double_quote(bool raw_escapes) {
    const std::size_t open = pos_;
    std::string result;
    next();
    if (options_.raw_quotes) result.push_back('"');
    while (true) {
      if (at_end()) {
        throw WordError("unexpected end of statement while looking for matching double-quote", open);
      }
      char32_t rune = peek();
      if (rune == '"') {
        next();
        if (options_.raw_quotes) result.push_back('"');
        return result;
      }
      if (rune == '$') {
        result.append(expand_dollar());
        continue;
      }
      rune = next();
      if (rune == escape()) {
        if (raw_escapes) unicode::append_utf8(result, rune);
        // An escape right before the end escapes nothing; the missing quote is reported next.
        if (at_end()) continue;
        const char32_t escaped = peek();
        if (escaped == '"' || escaped == '$' || escaped == escape()) rune = next();
      }
      unicode::append_utf8(result, rune);
    }
  }

  // A name is letters, digits and `_` (Unicode ones too); one starting with a digit is all digits
  // (`$12x` is $12 then x), and a special parameter is a name of its own.
  std::string read_name() {
    std::string name;
    while (!at_end()) {
      const char32_t rune = peek();
      if (name.empty() && unicode::is_digit(rune)) {
        while (!at_end() && unicode::is_digit(peek())) unicode::append_utf8(name, next());
        return name;
      }
      if (name.empty() && is_special_parameter(rune)) {
        unicode::append_utf8(name, next());
        return name;
      }
      if (!is_name_rune(rune)) break;
      unicode::append_utf8(name, next());
    }
    return name;
  }

  std::string expand_dollar() {
    const std::size_t dollar = pos_;
    next();
    if (peek() != '{') {
      const std::string name = read_name();
      // A `$` that starts no name is literal: `$.`, `$ `, a `$` at the end.
      if (name.empty()) return "$";
      std::optional<std::string> value = lookup(name);
      if (!value && options_.skip_unset) return "$" + name;
      return value ? std::move(*value) : std::string();
    }
    next();
    return expand_braces(dollar);
  }

  // After `${`.
  std::string expand_braces(std::size_t dollar) {
    const NestingGuard guard(depth_, dollar);
    if (at_end()) throw WordError(kMissingBrace, dollar);
    const char32_t first = peek();
    if (first == '{' || first == '}' || first == ':')
      throw WordError("syntax error: bad substitution", dollar);
    const std::string name = read_name();
    // BuildKit reports an input ending here as "unsupported modifier (\uFFFD)", the modifier being
    // its end-of-input rune; what is missing is the brace, as for every other unterminated `${`.
    if (at_end()) throw WordError(kMissingBrace, dollar);
    char32_t op = next();
    std::string modifier;
    unicode::append_utf8(modifier, op);
    switch (op) {
      case '}': {
        std::optional<std::string> value = lookup(name);
        if (!value && options_.skip_unset) return "${" + name + "}";
        return value ? std::move(*value) : std::string();
      }
      case '/':
        return substitute_replacement(name, dollar);
      case ':':
        // Whatever follows the colon is taken as the operator; unknown ones fail after the word.
        if (at_end()) throw WordError(kMissingBrace, dollar);
        op = next();
        unicode::append_utf8(modifier, op);
        return substitute_with_word(name, op, modifier, true, dollar);
      case '-':
      case '+':
      case '?':
      case '#':
      case '%':
        return substitute_with_word(name, op, modifier, false, dollar);
      default:
        throw WordError(unsupported_modifier(modifier), dollar);
    }
  }

  // The word of a `${...}` up to `stop`. An error with the input used up means this `${` was never
  // closed, and that is what BuildKit reports, even when a quote inside it is the unclosed thing.
  std::string nested_word(char32_t stop, bool raw_escapes, std::size_t dollar, const char* missing_message) {
    try {
      return process_until(stop, raw_escapes, nullptr);
    } catch (const WordError&) {
      if (at_end()) throw WordError(missing_message, dollar);
      throw;
    }
  }

  static ShellPattern compile_pattern(const std::string& text, std::size_t dollar) {
    try {
      return ShellPattern(text);
    } catch (const std::invalid_argument& error) {
      throw WordError("invalid pattern (" + text + ") in substitution: " + error.what(), dollar);
    }
  }

  // `${name-word}`, `${name+word}`, `${name?word}`, `${name#pattern}`, `${name%pattern}` and, with
  // null_is_unset, the `:` forms, which treat an empty value as unset.
  std::string substitute_with_word(const std::string& name, char32_t op, const std::string& modifier,
                                   bool null_is_unset, std::size_t dollar) {
    // Patterns keep their escapes, for the pattern to interpret.
    const bool takes_pattern = op == '#' || op == '%';
    if (null_is_unset && takes_pattern) throw WordError(unsupported_modifier(modifier), dollar);
    std::string word = nested_word('}', takes_pattern, dollar, kMissingBrace);
    std::optional<std::string> value = lookup(name);
    if (!value && options_.skip_unset) return "${" + name + modifier + word + "}";
    const bool counts_as_unset = !value || (null_is_unset && value->empty());
    switch (op) {
      case '-':
        return counts_as_unset ? word : std::move(*value);
      case '+':
        return counts_as_unset ? std::string() : word;
      case '?':
        if (counts_as_unset) {
          const char* default_message = value ? "is not allowed to be empty" : "is not allowed to be unset";
          throw WordError(name + ": " + (word.empty() ? std::string(default_message) : word), dollar);
        }
        return std::move(*value);
      case '#':
      case '%':
        return trim(value.value_or(""), op, std::move(word), dollar);
      default:
        throw WordError(unsupported_modifier(modifier), dollar);
    }
  }

  // `#`/`%` remove the shortest matching prefix/suffix, `##`/`%%` the longest. The doubling is
  // seen after expansion, as in BuildKit: `${v#$p}` with p="#x" removes the longest match of x.
  static std::string trim(const std::string& value, char32_t op, std::string pattern_text,
                          std::size_t dollar) {
    MatchLength length = MatchLength::shortest;
    if (!pattern_text.empty() && static_cast<unsigned char>(pattern_text[0]) == op) {
      length = MatchLength::longest;
      pattern_text.erase(0, 1);
    }
    const ShellPattern pattern = compile_pattern(pattern_text, dollar);
    const MatchSubject subject(value);
    if (op == '#') {
      const std::optional<std::size_t> end = pattern.match_at(subject, 0, length);
      return end ? value.substr(subject.byte_offset(*end)) : value;
    }
    const std::optional<std::size_t> start = pattern.match_suffix(subject, length);
    // BuildKit matches suffixes on the reversed value, and reversing through Go's []rune replaces
    // every invalid byte with U+FFFD, match or no match.
    return unicode::to_valid_utf8(start ? std::string_view(value).substr(0, subject.byte_offset(*start))
                                        : std::string_view(value));
  }

  // `${name/pattern/replacement}` replaces the leftmost longest match, `${name//pattern/replacement}`
  // every one. Both pattern and replacement keep their escapes: `${p//\//\/}` writes `\/`.
  std::string substitute_replacement(const std::string& name, std::size_t dollar) {
    const bool replace_all = peek() == '/';
    if (replace_all) next();
    const std::string pattern_text = nested_word('/', true, dollar, "syntax error: missing '/' in ${}");
    const std::string replacement = nested_word('}', true, dollar, kMissingBrace);
    std::optional<std::string> value = lookup(name);
    if (!value && options_.skip_unset) {
      // BuildKit writes a single `/` back even for `//`, which would change the meaning when the
      // text is expanded again; we write back what was there.
      return "${" + name + (replace_all ? "//" : "/") + pattern_text + "/" + replacement + "}";
    }
    const ShellPattern pattern = compile_pattern(pattern_text, dollar);
    return replace_all ? substitute_all(value.value_or(""), pattern, replacement)
                       : substitute_first(value.value_or(""), pattern, replacement);
  }

  static std::string substitute_first(const std::string& value, const ShellPattern& pattern,
                                      const std::string& replacement) {
    const MatchSubject subject(value);
    const std::vector<bool> starts = pattern.match_starts(subject);
    for (std::size_t start = 0; start <= subject.size(); ++start) {
      if (!starts[start]) continue;
      const std::size_t end = pattern.match_at(subject, start, MatchLength::longest).value_or(start);
      return value.substr(0, subject.byte_offset(start)) + replacement +
             value.substr(subject.byte_offset(end));
    }
    return value;
  }

  // Go's replaceAll loop: after a match, search on from its end (at least one rune further), and
  // skip an empty match right where the previous match ended.
  static std::string substitute_all(const std::string& value, const ShellPattern& pattern,
                                    const std::string& replacement) {
    const MatchSubject subject(value);
    const std::vector<bool> starts = pattern.match_starts(subject);
    const ReplacementTemplate expansion(replacement);
    const std::string_view text(value);
    std::string out;
    std::size_t last_match_end = 0;
    std::size_t search = 0;
    std::size_t start = 0;
    while (search <= subject.size()) {
      start = std::max(start, search);
      while (start <= subject.size() && !starts[start]) ++start;
      if (start > subject.size()) break;
      const std::size_t end = pattern.match_at(subject, start, MatchLength::longest).value_or(start);
      const std::size_t start_byte = subject.byte_offset(start);
      out.append(
          text.substr(subject.byte_offset(last_match_end), start_byte - subject.byte_offset(last_match_end)));
      if (end > last_match_end || start == 0) {
        expansion.append_to(out, text.substr(start_byte, subject.byte_offset(end) - start_byte));
      }
      last_match_end = end;
      search = std::max(search + 1, end);
    }
    out.append(text.substr(subject.byte_offset(last_match_end)));
    return out;
  }

  std::string_view input_;
  const VariableLookup& lookup_;
  const ExpandOptions& options_;
  VariableUsage* usage_;
  std::size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string expand_word(std::string_view word, const VariableLookup& lookup, const ExpandOptions& options,
                        VariableUsage* usage) {
  return Lexer(word, lookup, options, usage).run(nullptr);
}

std::vector<std::string> expand_words(std::string_view text, const VariableLookup& lookup,
                                      const ExpandOptions& options, VariableUsage* usage) {
  WordSplitter words;
  Lexer(text, lookup, options, usage).run(&words);
  return words.finish();
}

}  // namespace kiln::parser
