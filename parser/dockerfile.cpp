// Reading a Dockerfile into instructions. The file's structure — directives, comments, blank lines,
// instructions continued over several lines, heredoc bodies — is a PEGTL grammar. Inside one
// instruction, splitting follows Docker's own parser rule by rule (flags, then the arguments split
// the way that instruction's arguments are split), because "reads every Dockerfile Docker reads, the
// same way" includes Docker's quirks: quotes kept in words, invalid JSON taken as shell form.
#include "parser/dockerfile.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <tao/pegtl.hpp>

#include "parser/instruction_rules.h"
#include "parser/text.h"
#include "parser/word_expansion.h"

namespace kiln::parser {

namespace pg = tao::pegtl;

namespace {

constexpr std::array<std::pair<std::string_view, Keyword>, 18> kKeywords{{
    {"add", Keyword::kAdd},
    {"arg", Keyword::kArg},
    {"cmd", Keyword::kCmd},
    {"copy", Keyword::kCopy},
    {"entrypoint", Keyword::kEntrypoint},
    {"env", Keyword::kEnv},
    {"expose", Keyword::kExpose},
    {"from", Keyword::kFrom},
    {"healthcheck", Keyword::kHealthcheck},
    {"label", Keyword::kLabel},
    {"maintainer", Keyword::kMaintainer},
    {"onbuild", Keyword::kOnbuild},
    {"run", Keyword::kRun},
    {"shell", Keyword::kShell},
    {"stopsignal", Keyword::kStopsignal},
    {"user", Keyword::kUser},
    {"volume", Keyword::kVolume},
    {"workdir", Keyword::kWorkdir},
}};

std::optional<Keyword> find_keyword(std::string_view word) {
  std::string lowered = text::to_lower(word);
  for (const auto& [name, keyword] : kKeywords) {
    if (name == lowered) return keyword;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// The file grammar. E is the escape character chosen by the `# escape=` directive; the grammar is
// instantiated for both possible characters.

// One character for which Go's unicode.IsSpace holds, other than the newline that ends a line.
struct line_space {
  using rule_t = line_space;
  using subs_t = pg::empty_list;
  template <pg::apply_mode, pg::rewind_mode, template <typename...> class Action,
            template <typename...> class Control, typename ParseInput, typename... States>
  static bool match(ParseInput& in, States&&... /*unused*/) {
    if (in.empty() || in.peek_char() == '\n') return false;
    std::size_t length = text::space_length(std::string_view(in.current(), in.size()), 0);
    if (length == 0) return false;
    in.bump(length);
    return true;
  }
};

// Docker trims every "\r" and "\n" at the end of a physical line.
struct line_end : pg::seq<pg::star<pg::one<'\r'>>, pg::sor<pg::one<'\n'>, pg::eof>> {};
struct horizontal_blank : pg::one<' ', '\t'> {};
// A run of "\r" that does not end the line is text, taken whole: testing line_end at each "\r" of
// a long run would scan the rest of the run every time (quadratic on hostile input).
struct inner_carriage_returns
    : pg::seq<pg::plus<pg::one<'\r'>>, pg::not_at<pg::sor<pg::one<'\n'>, pg::eof>>> {};
struct line_char : pg::sor<pg::not_one<'\r', '\n'>, inner_carriage_returns> {};

// Escape, then blanks, at the end of a line: the instruction goes on. A run of two or more escape
// characters is text, which is why `RUN echo \\` ends its line (Docker's `([^\\])\\[ \t]*$`).
template <char E>
struct continuation_mark : pg::seq<pg::one<E>, pg::star<horizontal_blank>, pg::at<line_end>> {};
template <char E>
struct segment_char : pg::sor<pg::seq<pg::one<E>, pg::plus<pg::one<E>>>, inner_carriage_returns,
                              pg::seq<pg::not_at<continuation_mark<E>>, pg::not_at<line_end>, pg::any>> {};
// The text of one physical line of an instruction.
template <char E>
struct segment : pg::star<segment_char<E>> {};

struct comment_line
    : pg::seq<pg::not_at<pg::eof>, pg::star<line_space>, pg::one<'#'>, pg::star<line_char>, line_end> {};
struct blank_line : pg::seq<pg::not_at<pg::eof>, pg::star<line_space>, line_end> {};
// Inside a continued instruction, comment lines are dropped and whitespace-only lines are skipped
// (Docker warns about the latter).
struct empty_continuation_line : blank_line {};
template <char E>
struct continued : pg::seq<continuation_mark<E>, line_end,
                           pg::star<pg::sor<comment_line, empty_continuation_line>>, segment<E>> {};
template <char E>
struct instruction_lines : pg::seq<pg::star<line_space>, segment<E>, pg::star<continued<E>>, line_end> {};
template <char E>
struct file_item : pg::sor<comment_line, blank_line, instruction_lines<E>> {};

// One raw line of a heredoc body, newline included.
struct body_line : pg::seq<pg::not_at<pg::eof>, pg::until<pg::at<pg::sor<pg::one<'\n'>, pg::eof>>>> {};

// A directive line at the top of the file: `# name = value` (Docker's
// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, where \s is [\t\n\f\r ]).
struct directive_blank : pg::one<' ', '\t', '\f', '\r'> {};
struct directive_name : pg::seq<pg::alpha, pg::star<pg::alnum>> {};
struct directive_value : pg::plus<pg::not_one<'\n'>> {};
struct directive_line
    : pg::seq<pg::star<line_space>, pg::one<'#'>, pg::star<directive_blank>, directive_name,
              pg::star<directive_blank>, pg::one<'='>, pg::star<directive_blank>, directive_value> {};

// The name and the value of a directive line, the value without the blanks that end it (the
// regexp's lazy `(.+?)\s*$`).
struct DirectiveParts {
  std::string_view name;
  std::string_view value;
};

template <typename Rule>
struct DirectiveAction : pg::nothing<Rule> {};

template <>
struct DirectiveAction<directive_name> {
  template <typename ActionInput>
  static void apply(const ActionInput& in, DirectiveParts& parts) {
    parts.name = std::string_view(in.begin(), in.size());
  }
};

template <>
struct DirectiveAction<directive_value> {
  template <typename ActionInput>
  static void apply(const ActionInput& in, DirectiveParts& parts) {
    std::string_view value(in.begin(), in.size());
    while (!value.empty() &&
           (value.back() == ' ' || value.back() == '\t' || value.back() == '\f' || value.back() == '\r')) {
      value.remove_suffix(1);
    }
    parts.value = value;
  }
};

// ---------------------------------------------------------------------------------------------
// A logical line: the segments of an instruction joined, with where each came from.

struct Segment {
  std::size_t logical_offset;
  std::size_t file_offset;
};

class SourceMap {
 public:
  explicit SourceMap(const std::vector<std::uint32_t>& line_starts) : line_starts_(line_starts) {}
  Position position(std::size_t file_offset) const {
    // Positions are asked for mostly in file order: the line of the last answer, or the next one,
    // is checked before searching.
    std::size_t index = hint_;
    auto on_line = [&](std::size_t i) {
      return i < line_starts_.size() && line_starts_[i] <= file_offset &&
             (i + 1 == line_starts_.size() || file_offset < line_starts_[i + 1]);
    };
    if (!on_line(index)) {
      if (on_line(index + 1)) {
        ++index;
      } else {
        auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), file_offset);
        index = it == line_starts_.begin() ? 0 : static_cast<std::size_t>(it - line_starts_.begin()) - 1;
      }
    }
    hint_ = index;
    // A byte-order mark is not a column: the first line's columns count from after it.
    if (file_offset < line_starts_[index]) file_offset = line_starts_[index];
    return {static_cast<int>(index + 1), static_cast<int>(file_offset - line_starts_[index] + 1)};
  }

 private:
  const std::vector<std::uint32_t>& line_starts_;
  mutable std::size_t hint_ = 0;
};

struct LogicalLine {
  std::string text;
  std::vector<Segment> segments;
  std::size_t end_offset = 0;  // file offset just past the instruction's last line
  bool had_empty_continuation_line = false;

  std::size_t file_offset(std::size_t logical_offset) const {
    auto it =
        std::upper_bound(segments.begin(), segments.end(), logical_offset,
                         [](std::size_t offset, const Segment& s) { return offset < s.logical_offset; });
    if (it == segments.begin()) return segments.empty() ? 0 : segments.front().file_offset;
    --it;
    return it->file_offset + (logical_offset - it->logical_offset);
  }
};

struct ScanState {
  const char* file_begin = nullptr;
  LogicalLine line;
  bool is_instruction = false;
};

template <typename Rule>
struct ScanAction : pg::nothing<Rule> {};

template <char E>
struct ScanAction<segment<E>> {
  template <typename ActionInput>
  static void apply(const ActionInput& in, ScanState& state) {
    state.line.segments.push_back(
        {state.line.text.size(), static_cast<std::size_t>(in.begin() - state.file_begin)});
    state.line.text.append(in.begin(), in.size());
  }
};

template <>
struct ScanAction<empty_continuation_line> {
  template <typename ActionInput>
  static void apply(const ActionInput& /*in*/, ScanState& state) {
    state.line.had_empty_continuation_line = true;
  }
};

template <char E>
struct ScanAction<instruction_lines<E>> {
  template <typename ActionInput>
  static void apply(const ActionInput& in, ScanState& state) {
    state.is_instruction = true;
    state.line.end_offset = static_cast<std::size_t>(in.end() - state.file_begin);
  }
};

// ---------------------------------------------------------------------------------------------
// Splitting one instruction, rule for rule as Docker's parser does.

struct Word {
  std::string text;
  std::size_t offset;  // in the logical line
};

class InstructionReader {
 public:
  InstructionReader(const LogicalLine& line, const SourceMap& map, const Dockerfile& file)
      : line_(line), map_(map), file_(file) {}

  Position position(std::size_t logical_offset) const {
    return map_.position(line_.file_offset(logical_offset));
  }

  [[noreturn]] void fail(std::size_t logical_offset, const std::string& message) const {
    Position where = position(logical_offset);
    throw ParseError(message, where, std::string(file_.line_text(where.line)));
  }

  // Docker's splitCommand + dispatch: `text` starts at `offset` in the logical line.
  Instruction read(std::string_view text, std::size_t offset, bool is_trigger = false) const {
    Instruction instruction;
    read_into(instruction, text, offset, is_trigger);
    return instruction;
  }

  // Fills `instruction` in place, so that the file's instructions are built where they are stored.
  void read_into(Instruction& instruction, std::string_view text, std::size_t offset,
                 bool is_trigger = false) const {
    std::string_view trimmed = text::trim_space(text);
    offset += static_cast<std::size_t>(trimmed.data() - text.data());
    std::size_t keyword_end = 0;
    while (keyword_end < trimmed.size() && !text::is_separator(trimmed[keyword_end])) ++keyword_end;
    std::string_view keyword_text = trimmed.substr(0, keyword_end);
    std::size_t rest_start = keyword_end;
    while (rest_start < trimmed.size() && text::is_separator(trimmed[rest_start])) ++rest_start;

    instruction.keyword_as_written = std::string(keyword_text);
    instruction.start = position(offset);
    instruction.original = std::string(trimmed);
    std::optional<Keyword> keyword = find_keyword(keyword_text);
    if (!keyword) {
      std::vector<std::string_view> names;
      for (const auto& entry : kKeywords) names.push_back(entry.first);
      std::string suggestion = text::closest_match(keyword_text, names);
      std::string message = fmt::format("unknown instruction \"{}\"", keyword_text);
      if (!suggestion.empty()) message += fmt::format(" (did you mean \"{}\"?)", text::to_upper(suggestion));
      fail(offset, message);
    }
    instruction.keyword = *keyword;
    // Checked here rather than with the other rules so that `ONBUILD ONBUILD ONBUILD …` cannot
    // recurse once per word.
    if (is_trigger &&
        (*keyword == Keyword::kOnbuild || *keyword == Keyword::kFrom || *keyword == Keyword::kMaintainer)) {
      fail(offset, *keyword == Keyword::kOnbuild
                       ? std::string("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
                       : fmt::format("{} isn't allowed as an ONBUILD trigger", text::to_upper(keyword_text)));
    }

    std::string_view rest = trimmed.substr(rest_start);
    std::size_t rest_offset = offset + rest_start;
    if (!rest.empty()) {
      std::size_t args_start = extract_flags(rest, rest_offset, instruction);
      rest = rest.substr(args_start);
      rest_offset += args_start;
    }
    read_arguments(instruction, rest, rest_offset);
  }

 private:
  // Docker's extractBuilderFlags: leading words starting with "--" are flags; quotes in them are
  // removed and `\` escapes the next character. Returns where the arguments start in `text`.
  std::size_t extract_flags(std::string_view text, std::size_t offset, Instruction& instruction) const {
    std::size_t pos = 0;
    for (;;) {
      while (pos < text.size() && text::is_space_byte(static_cast<unsigned char>(text[pos]))) ++pos;
      if (pos >= text.size()) return pos;
      if (text.compare(pos, 2, "--") != 0) return pos;
      std::size_t word_start = pos;
      std::string word;
      bool blank_ok = false;
      char quote = 0;
      for (; pos < text.size(); ++pos) {
        char c = text[pos];
        if (quote != 0) {
          if (c == quote) {
            quote = 0;
            continue;
          }
        } else {
          if (text::is_space_byte(static_cast<unsigned char>(c))) break;
          if (c == '\'' || c == '"') {
            quote = c;
            blank_ok = true;
            continue;
          }
        }
        if (c == '\\') {
          if (pos + 1 == text.size()) {
            quote = 0;
            continue;
          }
          c = text[++pos];
        }
        word += c;
      }
      // A lone "--" ends the flags. Docker trims the blanks after it with the arguments
      // (splitCommand's TrimSpace), so they never make an empty first word or a leading blank.
      if (word == "--") return text.size() - text::trim_left_space(text.substr(pos)).size();
      if (blank_ok || !word.empty()) {
        instruction.flags.push_back({word, position(offset + word_start)});
      }
    }
  }

  void read_arguments(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    switch (instruction.keyword) {
      case Keyword::kRun:
      case Keyword::kCmd:
      case Keyword::kEntrypoint:
      case Keyword::kShell:
        read_maybe_json(instruction, rest, offset, false);
        break;
      case Keyword::kAdd:
      case Keyword::kCopy:
      case Keyword::kVolume:
        read_maybe_json(instruction, rest, offset, true);
        break;
      case Keyword::kExpose:
      case Keyword::kFrom:
        read_separated_words(instruction, rest, offset);
        break;
      case Keyword::kMaintainer:
      case Keyword::kStopsignal:
      case Keyword::kUser:
      case Keyword::kWorkdir:
        if (!rest.empty()) {
          instruction.form = ArgumentForm::kString;
          instruction.arguments.emplace_back(rest);
          instruction.argument_positions.push_back(position(offset));
        }
        break;
      case Keyword::kEnv:
      case Keyword::kLabel:
        read_name_values(instruction, rest, offset);
        break;
      case Keyword::kArg:
        read_arg(instruction, rest, offset);
        break;
      case Keyword::kHealthcheck:
        read_healthcheck(instruction, rest, offset);
        break;
      case Keyword::kOnbuild:
        if (!rest.empty()) {
          std::size_t word_end = 0;
          while (word_end < rest.size() && !text::is_separator(rest[word_end])) ++word_end;
          if (!find_keyword(rest.substr(0, word_end))) {
            // Docker keeps a trigger it does not know: only a child image's build fails on it.
            instruction.form = ArgumentForm::kString;
            instruction.arguments.emplace_back(rest);
            instruction.argument_positions.push_back(position(offset));
            break;
          }
          instruction.form = ArgumentForm::kWords;
          instruction.trigger = std::make_unique<Instruction>(read(rest, offset, true));
          instruction.arguments.push_back(instruction.trigger->keyword_as_written);
          instruction.argument_positions.push_back(instruction.trigger->start);
        }
        break;
    }
  }

  // Docker's parseJSON: an array of strings, or not JSON at all (then the caller falls back).
  // A valid array with a non-string element is an error, not a fallback.
  bool read_json(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    std::string_view trimmed = text::trim_left_space(rest);
    if (trimmed.empty() || trimmed.front() != '[') return false;
    std::size_t bracket = offset + static_cast<std::size_t>(trimmed.data() - rest.data());
    nlohmann::json array = nlohmann::json::parse(trimmed, nullptr, /*allow_exceptions=*/false);
    if (array.is_discarded() || !array.is_array()) {
      instruction.invalid_json = position(bracket);
      return false;
    }
    for (const nlohmann::json& element : array) {
      if (!element.is_string()) {
        fail(bracket,
             fmt::format("{}: when using JSON array syntax, arrays must be comprised of strings only",
                         text::to_upper(keyword_name(instruction.keyword))));
      }
    }
    instruction.form = ArgumentForm::kExec;
    for (const nlohmann::json& element : array) {
      instruction.arguments.push_back(element.get<std::string>());
      instruction.argument_positions.push_back(position(bracket));
    }
    return true;
  }

  void read_maybe_json(Instruction& instruction, std::string_view rest, std::size_t offset,
                       bool as_list) const {
    if (rest.empty()) return;
    if (read_json(instruction, rest, offset)) return;
    if (as_list) {
      read_separated_words(instruction, rest, offset);
      return;
    }
    instruction.form = ArgumentForm::kShell;
    instruction.arguments.emplace_back(rest);
    instruction.argument_positions.push_back(position(offset));
  }

  // Docker's parseStringsWhitespaceDelimited: split at ASCII blanks, quotes mean nothing.
  void read_separated_words(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    if (rest.empty()) return;
    instruction.form = ArgumentForm::kWords;
    for (std::string_view word : text::split_separators(rest)) {
      instruction.arguments.emplace_back(word);
      instruction.argument_positions.push_back(
          position(offset + static_cast<std::size_t>(word.data() - rest.data())));
    }
  }

  // Docker's parseWords: words at unicode whitespace; quotes are kept in the word, and the escape
  // character keeps itself and the character after it (a trailing one is dropped).
  std::vector<Word> words(std::string_view rest, std::size_t offset) const {
    const char escape = file_.escape;
    std::vector<Word> result;
    std::size_t pos = 0;
    while (pos < rest.size()) {
      if (std::size_t n = text::space_length(rest, pos)) {
        pos += n;
        continue;
      }
      Word word{{}, offset + pos};
      bool blank_ok = false;
      char quote = 0;
      while (pos < rest.size()) {
        char c = rest[pos];
        if (quote == 0) {
          if (text::space_length(rest, pos) != 0) break;
          if (c == '\'' || c == '"') {
            quote = c;
            blank_ok = true;
          } else if (c == escape) {
            if (pos + 1 == rest.size()) {
              ++pos;
              continue;
            }
            word.text += c;
            c = rest[++pos];
          }
        } else {
          if (c == quote) {
            quote = 0;
          } else if (c == escape && quote != '\'') {
            if (pos + 1 == rest.size()) {
              quote = 0;
              ++pos;
              continue;
            }
            word.text += c;
            c = rest[++pos];
          }
        }
        word.text += c;
        ++pos;
      }
      if (blank_ok || !word.text.empty()) result.push_back(std::move(word));
    }
    return result;
  }

  // Docker's parseNameVal: `KEY value` (the legacy form, one pair, the value is the rest of the line)
  // when the first word has no "=", else `k=v` words.
  void read_name_values(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    std::vector<Word> all = words(rest, offset);
    if (all.empty()) return;
    std::string name = text::to_upper(keyword_name(instruction.keyword));
    instruction.form = ArgumentForm::kKeyValues;
    if (all.front().text.find('=') == std::string::npos) {
      std::vector<std::string_view> parts = text::split_separators(rest, 2);
      if (parts.size() < 2) fail(offset, fmt::format("{} must have two arguments", name));
      instruction.pairs.push_back({std::string(parts[0]), std::string(parts[1]), true});
      instruction.argument_positions.push_back(position(offset));
      return;
    }
    for (Word& word : all) {
      std::size_t equals = word.text.find('=');
      if (equals == std::string::npos) {
        fail(word.offset,
             fmt::format("{}: syntax error - can't find = in \"{}\"; must be of the form: name=value", name,
                         word.text));
      }
      instruction.pairs.push_back({word.text.substr(0, equals), word.text.substr(equals + 1), false});
      instruction.argument_positions.push_back(position(word.offset));
    }
  }

  void read_arg(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    for (Word& word : words(rest, offset)) {
      instruction.form = ArgumentForm::kKeyValues;
      std::size_t equals = word.text.find('=');
      if (equals == std::string::npos) {
        instruction.pairs.push_back({word.text, std::nullopt, false});
      } else {
        instruction.pairs.push_back({word.text.substr(0, equals), word.text.substr(equals + 1), false});
      }
      instruction.argument_positions.push_back(position(word.offset));
    }
  }

  // Docker's parseHealthConfig: the kind (NONE or CMD) up to the first blank, then the command
  // in shell or exec form.
  void read_healthcheck(Instruction& instruction, std::string_view rest, std::size_t offset) const {
    std::size_t kind_end = 0;
    while (kind_end < rest.size() && !text::is_space_byte(static_cast<unsigned char>(rest[kind_end])))
      ++kind_end;
    if (kind_end == 0) return;
    instruction.healthcheck_kind = std::string(rest.substr(0, kind_end));
    std::size_t command_start = kind_end;
    while (command_start < rest.size() &&
           text::is_space_byte(static_cast<unsigned char>(rest[command_start]))) {
      ++command_start;
    }
    read_maybe_json(instruction, rest.substr(command_start), offset + command_start, false);
  }

  const LogicalLine& line_;
  const SourceMap& map_;
  const Dockerfile& file_;
};

// ---------------------------------------------------------------------------------------------
// Heredocs.

// Docker's ParseHeredoc on one word: `[fd]<<[-]name`, the name one word without `<`; quoting any
// part of the name turns off expansion of the body.
std::optional<Heredoc> heredoc_from_word(std::string_view word) {
  std::size_t pos = 0;
  while (pos < word.size() && word[pos] >= '0' && word[pos] <= '9') ++pos;
  std::string_view digits = word.substr(0, pos);
  if (word.compare(pos, 2, "<<") != 0) return std::nullopt;
  pos += 2;
  bool chomp = pos < word.size() && word[pos] == '-';
  if (chomp) ++pos;
  std::string_view rest = word.substr(pos);
  if (rest.empty() || rest.find('<') != std::string_view::npos) return std::nullopt;

  VariableLookup unset = [](std::string_view) { return std::optional<std::string>(); };
  ExpandOptions options;
  options.skip_unset = true;
  std::vector<std::string> plain = expand_words(rest, unset, options);
  if (plain.size() != 1) return std::nullopt;
  options.raw_quotes = true;
  std::vector<std::string> raw = expand_words(rest, unset, options);
  if (raw.size() != 1) return std::nullopt;
  auto quotes = [](const std::string& s) {
    return std::count(s.begin(), s.end(), '\'') + std::count(s.begin(), s.end(), '"');
  };

  Heredoc heredoc;
  heredoc.name = plain.front();
  heredoc.expand = quotes(plain.front()) == quotes(raw.front());
  heredoc.chomp = chomp;
  // A descriptor number too large for an int is kept as -1 (no descriptor can have it).
  if (!digits.empty())
    heredoc.file_descriptor = digits.size() > 9 ? -1 : static_cast<int>(*text::parse_integer(digits));
  return heredoc;
}

bool can_contain_heredoc(const Instruction& instruction) {
  switch (instruction.keyword) {
    case Keyword::kRun:
    case Keyword::kCopy:
    case Keyword::kAdd:
      return true;
    case Keyword::kOnbuild:
      return instruction.trigger && can_contain_heredoc(*instruction.trigger);
    default:
      return false;
  }
}

// Docker's heredocsFromLine: the whole line is split into words the way the shell lexer splits
// them, quotes and escapes kept, and every word shaped like `<<NAME` is a heredoc. A heredoc word
// that does not lex (`<<"EOF`) is an error, as in Docker; `reader` reports it at the word.
std::vector<std::pair<Heredoc, std::size_t>> heredocs_in_line(std::string_view line,
                                                              const InstructionReader& reader) {
  std::vector<std::pair<Heredoc, std::size_t>> found;
  if (line.find("<<") == std::string_view::npos) return found;
  VariableLookup unset = [](std::string_view) { return std::optional<std::string>(); };
  ExpandOptions options;
  options.raw_quotes = true;
  options.raw_escapes = true;
  options.skip_unset = true;
  std::vector<std::string> words;
  try {
    words = expand_words(line, unset, options);
  } catch (const WordError&) {
    return found;  // Docker ignores lexing errors of the whole line: such a line has no heredocs.
  }
  std::size_t search_from = 0;
  for (const std::string& word : words) {
    if (word.find("<<") == std::string::npos) continue;
    // Where the word was, for diagnostics: the next "<<" in the line.
    std::size_t at = line.find("<<", search_from);
    if (at == std::string_view::npos) at = search_from;
    search_from = at + 2;
    while (at > 0 && line[at - 1] >= '0' && line[at - 1] <= '9') --at;
    std::optional<Heredoc> heredoc;
    try {
      heredoc = heredoc_from_word(word);
    } catch (const WordError& error) {
      reader.fail(at, fmt::format("invalid heredoc {}: {}", text::quote(word), error.what()));
    }
    if (heredoc) found.emplace_back(std::move(*heredoc), at);
  }
  return found;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

bool is_heredoc_word(std::string_view word) {
  try {
    return heredoc_from_word(word).has_value();
  } catch (const WordError&) {
    return false;
  }
}

std::string_view keyword_name(Keyword keyword) {
  for (const auto& [name, value] : kKeywords) {
    if (value == keyword) return name;
  }
  return "";
}

bool keyword_expands_words(Keyword keyword) {
  switch (keyword) {
    case Keyword::kAdd:
    case Keyword::kCopy:
    case Keyword::kEnv:
    case Keyword::kExpose:
    case Keyword::kFrom:
    case Keyword::kLabel:
    case Keyword::kStopsignal:
    case Keyword::kUser:
    case Keyword::kVolume:
    case Keyword::kWorkdir:
    case Keyword::kArg:
      return true;
    default:
      return false;
  }
}

std::string_view Flag::name() const {
  std::string_view body = std::string_view(text).substr(text.rfind("--", 0) == 0 ? 2 : 0);
  return body.substr(0, body.find('='));
}

std::optional<std::string_view> Flag::value() const {
  std::size_t equals = text.find('=');
  if (equals == std::string::npos) return std::nullopt;
  return std::string_view(text).substr(equals + 1);
}

const Flag* Instruction::find_flag(std::string_view name) const {
  const Flag* found = nullptr;
  for (const Flag& flag : flags) {
    if (flag.name() == name) found = &flag;
  }
  return found;
}

std::vector<const Flag*> Instruction::find_flags(std::string_view name) const {
  std::vector<const Flag*> found;
  for (const Flag& flag : flags) {
    if (flag.name() == name) found.push_back(&flag);
  }
  return found;
}

const Directive* Dockerfile::find_directive(std::string_view name) const {
  for (const Directive& directive : directives) {
    if (directive.name == name) return &directive;
  }
  return nullptr;
}

int Dockerfile::line_count() const {
  if (!source || line_starts.empty()) return 0;
  // A newline at the very end starts no further line.
  bool trailing_start = line_starts.size() > 1 && std::size_t{line_starts.back()} == source->size();
  return static_cast<int>(line_starts.size() - (trailing_start ? 1 : 0)) -
         (source->size() <= line_starts[0] ? 1 : 0);
}

std::string_view Dockerfile::line_text(int line) const {
  if (line < 1 || line > line_count()) return {};
  auto index = static_cast<std::size_t>(line) - 1;
  std::size_t start = line_starts[index];
  std::size_t end = index + 1 < line_starts.size() ? line_starts[index + 1] - 1 : source->size();
  std::string_view text = std::string_view(*source).substr(start, end - start);
  while (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  return text;
}

std::string format_diagnostic(std::string_view file_name, const ParseError& error) {
  if (error.position.line <= 0) return fmt::format("{}: {}\n", file_name, error.what());
  std::string out =
      fmt::format("{}:{}:{}: {}\n", file_name, error.position.line, error.position.column, error.what());
  // The caret sits under the column; tabs are copied so that it lines up however tabs render, and
  // UTF-8 continuation bytes take no width.
  std::string caret;
  std::size_t column = static_cast<std::size_t>(std::max(error.position.column, 1));
  for (std::size_t i = 0; i + 1 < column && i < error.source_line.size(); ++i) {
    char c = error.source_line[i];
    if ((static_cast<unsigned char>(c) & 0xC0u) == 0x80u) continue;
    caret += c == '\t' ? '\t' : ' ';
  }
  out += fmt::format("    {}\n    {}^\n", error.source_line, caret);
  return out;
}

namespace {

std::vector<Directive> read_directives(std::string_view text, std::size_t base_offset, const SourceMap& map,
                                       Dockerfile& file) {
  std::vector<Directive> directives;
  std::size_t pos = 0;
  int line_number = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
    ++line_number;
    // A shebang on the first line is skipped, as Docker's syntax detection skips it.
    if (!(line_number == 1 && line.substr(0, 2) == "#!")) {
      pg::memory_input<pg::tracking_mode::lazy> in(line.data(), line.size(), "");
      DirectiveParts parts;
      if (!pg::parse<pg::seq<directive_line, pg::eof>, DirectiveAction>(in, parts)) break;
      std::string_view value = parts.value;
      std::string key = text::to_lower(parts.name);
      if (key != "syntax" && key != "escape" && key != "check") break;
      for (const Directive& seen : directives) {
        if (seen.name == key) {
          Position where = map.position(base_offset + pos);
          throw ParseError(fmt::format("only one {} parser directive can be used", key), where,
                           std::string(file.line_text(where.line)));
        }
      }
      if (key == "escape" && value != "\\" && value != "`") {
        Position where =
            map.position(base_offset + pos + static_cast<std::size_t>(value.data() - line.data()));
        throw ParseError(fmt::format("invalid escape character '{}': it must be ` or \\", value), where,
                         std::string(file.line_text(where.line)));
      }
      directives.push_back({key, std::string(value), line_number});
    }
    pos = end + 1;
  }
  return directives;
}

template <char E>
void read_instructions(std::string_view text, std::size_t base_offset, const SourceMap& map,
                       Dockerfile& file) {
  pg::memory_input<pg::tracking_mode::lazy> in(text.data(), text.size(), "Dockerfile");
  // One scan state for the whole file: its buffers keep their capacity from line to line.
  ScanState state;
  state.file_begin = text.data() - base_offset;
  while (!in.empty()) {
    state.line.text.clear();
    state.line.segments.clear();
    state.line.had_empty_continuation_line = false;
    state.is_instruction = false;
    if (!pg::parse<file_item<E>, ScanAction>(in, state)) {
      // Unreachable: a blank, comment or instruction line always matches a non-empty input.
      Position where = map.position(base_offset + static_cast<std::size_t>(in.current() - text.data()));
      throw ParseError("cannot read this line", where, std::string(file.line_text(where.line)));
    }
    if (!state.is_instruction) continue;

    LogicalLine& line = state.line;
    // A line holding only an escape character and nothing after it is no instruction.
    if (text::trim_space(line.text).empty()) continue;
    InstructionReader reader(line, map, file);
    // Built in place; on a ParseError the whole file is discarded, so a half-filled one is harmless.
    Instruction& instruction = file.instructions.emplace_back();
    reader.read_into(instruction, line.text, 0);
    if (line.had_empty_continuation_line) {
      file.warnings.emplace_back(instruction.start.line, "empty continuation line");
    }
    std::size_t end_offset = line.end_offset;
    Instruction* owner = instruction.trigger ? instruction.trigger.get() : &instruction;
    if (can_contain_heredoc(instruction)) {
      for (auto& [heredoc, word_offset] : heredocs_in_line(line.text, reader)) {
        bool terminated = false;
        while (!in.empty()) {
          const char* line_begin = in.current();
          pg::parse<body_line>(in);
          std::string_view raw(line_begin, static_cast<std::size_t>(in.current() - line_begin));
          if (!in.empty()) in.bump(1);  // the newline
          std::string_view candidate = raw;
          while (!candidate.empty() && (candidate.back() == '\r' || candidate.back() == '\n'))
            candidate.remove_suffix(1);
          if (heredoc.chomp) {
            while (!candidate.empty() && candidate.front() == '\t') candidate.remove_prefix(1);
          }
          end_offset = base_offset + static_cast<std::size_t>(in.current() - text.data());
          if (candidate == heredoc.name) {
            terminated = true;
            break;
          }
          heredoc.body.append(line_begin, static_cast<std::size_t>(in.current() - line_begin));
        }
        if (!terminated) {
          reader.fail(word_offset, fmt::format("unterminated heredoc: no line \"{}\" ends it", heredoc.name));
        }
        owner->heredocs.push_back(std::move(heredoc));
      }
    }
    // The last line is the one holding the last character read (not the next line's start).
    instruction.end_line = map.position(end_offset > 0 ? end_offset - 1 : 0).line;
    if (instruction.trigger) instruction.trigger->end_line = instruction.end_line;
    check_instruction(instruction, file);
  }
}

}  // namespace

Dockerfile parse_dockerfile(std::string input) {
  Dockerfile file;
  file.source = std::make_shared<const std::string>(std::move(input));
  std::string_view text = *file.source;
  std::size_t base_offset = 0;
  // A UTF-8 byte-order mark is dropped, as Docker drops it.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") base_offset = 3;
  if (text.size() >= UINT32_MAX) throw ParseError("the Dockerfile is 4 GiB or larger", {0, 0}, "");
  file.line_starts.push_back(static_cast<std::uint32_t>(base_offset));
  for (std::size_t pos = text.find('\n'); pos != std::string_view::npos; pos = text.find('\n', pos + 1)) {
    file.line_starts.push_back(static_cast<std::uint32_t>(pos + 1));
  }
  SourceMap map(file.line_starts);
  // No file has more instructions than lines, nor more than one per four bytes ("CMD\n"). Reserving
  // that many costs address space only (pages are touched as instructions are stored) and saves
  // moving every instruction as the vector grows; the cap keeps a huge file of blank lines from
  // asking for gigabytes of address space.
  constexpr std::size_t kMaxReserved = 1 << 20;
  file.instructions.reserve(std::min({file.line_starts.size(), text.size() / 4 + 1, kMaxReserved}));
  std::string_view body = text.substr(base_offset);
  file.directives = read_directives(body, base_offset, map, file);
  if (const Directive* escape = file.find_directive("escape")) file.escape = escape->value.front();
  if (file.escape == '`') {
    read_instructions<'`'>(body, base_offset, map, file);
  } else {
    read_instructions<'\\'>(body, base_offset, map, file);
  }
  if (file.instructions.empty()) {
    std::string message = text::trim_space(body).empty()
                              ? "the Dockerfile is empty"
                              : "the Dockerfile has no instructions, only comments and blank lines";
    int last = std::max(1, file.line_count());
    throw ParseError(message, {last, 1}, std::string(file.line_text(last)));
  }
  return file;
}

}  // namespace kiln::parser
