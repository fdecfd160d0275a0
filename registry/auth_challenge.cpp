#include "registry/auth_challenge.h"

#include <optional>
#include <string_view>

#include "registry/http_headers.h"

namespace kiln::registry {
namespace {

// RFC 7230's tchar (what Go's net/http calls a token): printable ASCII but separators.
bool is_token_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  return std::string_view("()<>@,;:\\\"/[]?={}").find(c) == std::string_view::npos;
}

bool is_token68_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
         std::string_view("-._~+/").find(c) != std::string_view::npos;
}

// distribution's isSpace: line ends count, since a folded header may keep them.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  void advance() { ++pos_; }
  size_t position() const { return pos_; }
  void rewind(size_t pos) { pos_ = pos; }

  void skip_space() {
    while (!at_end() && is_space(text_[pos_])) ++pos_;
  }
  // An HTTP list may have empty elements ("a, , b").
  void skip_space_and_commas() {
    while (!at_end() && (is_space(text_[pos_]) || text_[pos_] == ',')) ++pos_;
  }

  // The longest run of token characters; empty when there is none.
  std::string_view token() {
    size_t start = pos_;
    while (!at_end() && is_token_char(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  // A token68 that is the whole of what the challenge carries: followed only by spaces, then the
  // end or a comma. Otherwise the cursor does not move.
  std::optional<std::string_view> token68() {
    size_t start = pos_;
    size_t end = pos_;
    while (end < text_.size() && is_token68_char(text_[end])) ++end;
    if (end == start) return std::nullopt;
    while (end < text_.size() && text_[end] == '=') ++end;
    size_t after = end;
    while (after < text_.size() && is_space(text_[after])) ++after;
    if (after < text_.size() && text_[after] != ',') return std::nullopt;
    pos_ = end;
    return text_.substr(start, end - start);
  }

  // A quoted-string, the cursor on its opening quote: the text with `\x` read as `x`. nullopt when
  // the closing quote is missing.
  std::optional<std::string> quoted() {
    std::string out;
    for (++pos_; pos_ < text_.size(); ++pos_) {
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        if (++pos_ == text_.size()) break;
        c = text_[pos_];
      }
      out.push_back(c);
    }
    return std::nullopt;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// Reads the challenges of one header line into `out`, stopping at the first malformed element.
void parse_line(std::string_view line, std::vector<AuthChallenge>& out) {
  Cursor in(line);
  for (;;) {
    in.skip_space_and_commas();
    if (in.at_end()) return;
    std::string_view scheme = in.token();
    if (scheme.empty()) return;
    out.push_back(AuthChallenge{ascii_lowercase(scheme), {}, {}});
    AuthChallenge& challenge = out.back();
    // The scheme stands alone ("Basic, Bearer realm=…") or is followed by a space and its params.
    if (in.at_end() || in.peek() == ',') continue;
    if (!is_space(in.peek())) return;
    in.skip_space();
    if (in.at_end() || in.peek() == ',') continue;
    if (auto token68 = in.token68()) {
      challenge.token68 = std::string(*token68);
      continue;
    }
    bool first = true;
    for (;;) {
      size_t start = in.position();
      std::string_view name = in.token();
      if (name.empty()) return;
      in.skip_space();
      if (in.peek() != '=') {
        // After a comma, a token without `=` starts the next challenge; right after the scheme it
        // is malformed.
        if (first) return;
        in.rewind(start);
        break;
      }
      first = false;
      in.advance();
      in.skip_space();
      std::string value;
      if (in.peek() == '"') {
        auto text = in.quoted();
        if (!text) return;
        value = std::move(*text);
      } else {
        value = std::string(in.token());
        if (value.empty()) return;
      }
      challenge.params[ascii_lowercase(name)] = std::move(value);
      in.skip_space();
      if (in.at_end()) return;
      if (in.peek() != ',') return;
      in.skip_space_and_commas();
      if (in.at_end()) return;
    }
  }
}

}  // namespace

std::vector<AuthChallenge> parse_auth_challenges(const std::vector<std::string>& header_values) {
  std::vector<AuthChallenge> out;
  for (const std::string& line : header_values) parse_line(line, out);
  return out;
}

}  // namespace kiln::registry
