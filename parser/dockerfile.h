// The Dockerfile syntax tree: what a Dockerfile says, instruction by instruction, split the way
// Docker's own parser splits it, with every argument kept as written and the source position of
// everything. parse_dockerfile() reads text into it; build_graph.h turns it into stages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::parser {

// A 1-based line and byte column in the source file.
struct Position {
  int line = 0;
  int column = 0;
};

// A malformed Dockerfile. what() is the bare message ("unknown instruction \"RUNN\" (did you mean
// \"RUN\"?)"); format_diagnostic() adds the file, position, source line and caret.
class ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& message, Position where, std::string line)
      : std::runtime_error(message), position(where), source_line(std::move(line)) {}
  Position position;
  std::string source_line;  // the physical line the position is on, without its newline
};

// "Dockerfile:12:5: message\n    RUNN make\n    ^\n" — the compiler-style text users see.
std::string format_diagnostic(std::string_view file_name, const ParseError& error);

enum class Keyword {
  kAdd,
  kArg,
  kCmd,
  kCopy,
  kEntrypoint,
  kEnv,
  kExpose,
  kFrom,
  kHealthcheck,
  kLabel,
  kMaintainer,
  kOnbuild,
  kRun,
  kShell,
  kStopsignal,
  kUser,
  kVolume,
  kWorkdir,
};

// The lowercase name Docker's parse tree uses ("run", "healthcheck").
std::string_view keyword_name(Keyword keyword);

// Whether Docker substitutes variables in this instruction's arguments.
bool keyword_expands_words(Keyword keyword);

// How the arguments were written.
enum class ArgumentForm {
  kNone,       // no arguments (`CMD` alone, an empty ENTRYPOINT)
  kWords,      // whitespace-separated words (FROM, EXPOSE, COPY/ADD/VOLUME in shell form, ONBUILD)
  kString,     // the rest of the line as one string (USER, WORKDIR, STOPSIGNAL, MAINTAINER)
  kShell,      // shell form: one string, continuations joined
  kExec,       // a JSON array of strings
  kKeyValues,  // ENV, LABEL, ARG
};

struct KeyValue {
  std::string key;
  std::optional<std::string> value;  // only ARG may lack a value
  // ENV and LABEL written `KEY value` (the legacy form) rather than `KEY=value`.
  bool legacy_form = false;
};

struct Heredoc {
  std::string name;         // the delimiter word, quotes removed
  std::string body;         // every line between the instruction and the delimiter, newlines kept
  bool expand = true;       // false when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`)
  bool chomp = false;       // `<<-`: leading tabs are stripped from the body and the delimiter line
  int file_descriptor = 0;  // `3<<EOF`; 0 when not given
};

// A flag as written before the arguments (`--from=build`), quotes already removed as Docker
// removes them, and where it was.
struct Flag {
  std::string text;  // "--from=build"
  Position position;
  std::string_view name() const;                  // "from"
  std::optional<std::string_view> value() const;  // "build"; nullopt for `--link`
};

// A heap-held value that copies as a value: what an instruction holds its ONBUILD trigger in, so
// that Instruction keeps the compiler's own copy and move.
template <typename T>
class Boxed {
 public:
  Boxed() = default;
  Boxed(std::unique_ptr<T> value) : value_(std::move(value)) {}  // NOLINT: implicit, like unique_ptr
  Boxed(const Boxed& other) : value_(other.value_ ? std::make_unique<T>(*other.value_) : nullptr) {}
  Boxed(Boxed&&) noexcept = default;
  Boxed& operator=(Boxed other) noexcept {
    value_ = std::move(other.value_);
    return *this;
  }
  ~Boxed() = default;

  explicit operator bool() const { return value_ != nullptr; }
  T* get() const { return value_.get(); }
  T& operator*() const { return *value_; }
  T* operator->() const { return value_.get(); }

 private:
  std::unique_ptr<T> value_;
};

struct Instruction {
  Keyword keyword = Keyword::kRun;
  std::string keyword_as_written;  // "Run"
  std::vector<Flag> flags;
  ArgumentForm form = ArgumentForm::kNone;
  // kWords: the words; kString/kShell: one string; kExec: the array's strings. Quotes and escapes
  // are kept, as Docker's parse tree keeps them.
  std::vector<std::string> arguments;
  std::vector<KeyValue> pairs;  // kKeyValues
  // HEALTHCHECK: "NONE" or "CMD" as written (its command is in form/arguments).
  std::string healthcheck_kind;
  std::vector<Heredoc> heredocs;
  // ONBUILD: the trigger instruction, kept unexpanded for the builder of a child image.
  Boxed<Instruction> trigger;
  // The logical line with continuations joined (Docker's "original"), without heredoc bodies.
  std::string original;
  Position start;    // where the keyword is
  int end_line = 0;  // the last physical line, heredoc terminators included
  // Position of each argument (same order as arguments or pairs), for diagnostics.
  std::vector<Position> argument_positions;
  // Where an argument list began that looked like a JSON array but was not valid JSON, so Docker
  // took it as shell form (a build check reports it).
  std::optional<Position> invalid_json;

  const Flag* find_flag(std::string_view name) const;  // the last one given, or null
  std::vector<const Flag*> find_flags(std::string_view name) const;
};

struct Directive {
  std::string name;  // lowercase: "syntax", "escape", "check"
  std::string value;
  int line = 0;
};

struct Dockerfile {
  std::vector<Directive> directives;
  char escape = '\\';
  std::vector<Instruction> instructions;
  // Docker's parser warnings (an empty line inside a continued instruction), with their line.
  std::vector<std::pair<int, std::string>> warnings;
  // The text as read, shared so that copies of the tree stay cheap, and where each physical line
  // starts in it (the first after any byte-order mark), so diagnostics can quote lines.
  std::shared_ptr<const std::string> source;
  std::vector<std::uint32_t> line_starts;  // 32 bits: parse_dockerfile refuses 4 GiB and more

  const Directive* find_directive(std::string_view name) const;
  int line_count() const;
  std::string_view line_text(int line) const;  // without its line ending; empty when out of range
};

// Whether an ADD/COPY argument names a heredoc (`<<EOF`, `<<-"EOF"`, `3<<EOF`), as Docker's
// MustParseHeredoc decides: a word that does not lex is no heredoc.
bool is_heredoc_word(std::string_view word);

// Parses a whole Dockerfile. Throws ParseError for anything Docker would refuse: an unknown
// instruction, a malformed flag or argument list, an unterminated heredoc or JSON array, a file
// with no instructions. Runs in time linear in the input. The text is kept (Dockerfile::source)
// for diagnostics.
Dockerfile parse_dockerfile(std::string text);

}  // namespace kiln::parser
