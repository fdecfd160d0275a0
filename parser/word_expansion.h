// Dockerfile word processing: quote removal, escapes and variable substitution, exactly as
// BuildKit's shell lexer does it (the `${var:-w}` family, `#`/`%` trimming, `/` replacement).
// It is not a shell: no command substitution, no globbing, no arithmetic.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::parser {

// Looks a variable up by its exact (case-sensitive) name; nullopt when it is not set.
// A variable set to the empty string is set.
using VariableLookup = std::function<std::optional<std::string>(std::string_view name)>;

struct ExpandOptions {
  // The Dockerfile's escape character: `\` or the backtick chosen by `# escape=`.
  char escape = '\\';
  // Keep quote characters in the result instead of removing them (heredoc detection uses this).
  bool raw_quotes = false;
  // Keep escape characters in the result instead of removing them.
  bool raw_escapes = false;
  // Leave `$name` and `${name}` untouched when name is not set, instead of substituting "".
  bool skip_unset = false;
};

// Which variables a word referred to, for build checks (an undefined variable is a warning).
struct VariableUsage {
  std::set<std::string, std::less<>> matched;    // referenced and set
  std::set<std::string, std::less<>> unmatched;  // referenced and not set
};

// Malformed input: an unterminated quote or `${`, a bad substitution, or `${var:?msg}` on an
// unset variable; also `${...}` nested more than 64 deep, which BuildKit allows but which would
// take a stack as deep as the input here. `offset` is the byte offset in the input where the
// offending construct began, so callers can point a caret at it. The message is BuildKit's, without
// its `failed to process "<word>": ` prefix, which callers add if they want it.
class WordError : public std::runtime_error {
 public:
  WordError(const std::string& message, std::size_t at) : std::runtime_error(message), offset(at) {}
  std::size_t offset;
};

// Processes `word` as one word: whitespace is kept, quotes and escapes are removed, variables are
// substituted. Throws WordError.
std::string expand_word(std::string_view word, const VariableLookup& lookup,
                        const ExpandOptions& options = {}, VariableUsage* usage = nullptr);

// Processes `text` and splits it into words at unquoted whitespace, the way BuildKit's ProcessWords
// does (a variable's value is split too, unless it is quoted). Throws WordError.
std::vector<std::string> expand_words(std::string_view text, const VariableLookup& lookup,
                                      const ExpandOptions& options = {}, VariableUsage* usage = nullptr);

}  // namespace kiln::parser
