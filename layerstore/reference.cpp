#include "layerstore/reference.h"

#include <algorithm>
#include <cctype>

#include "layerstore/errors.h"

namespace kiln {
namespace {

// The distribution grammar (distribution/reference's regexp.go), matched by hand: compiling the
// same patterns with std::regex took a noticeable part of every command that names an image.

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

// [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
bool is_path_component(std::string_view s) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < s.size() && is_lower_alnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      ++i;
      if (i < s.size() && s[i] == '_') ++i;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool is_tag(std::string_view s) {
  if (s.empty() || s.size() > 128 || !(is_alnum(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin() + 1, s.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

// A DNS label: [a-zA-Z0-9] or [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9].
bool is_domain_label(std::string_view s) {
  if (s.empty() || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-'; });
}

// (label(\.label)* | \[[a-fA-F0-9:]+\]) (:[0-9]+)?
bool is_domain(std::string_view s) {
  std::string_view host = s;
  std::string_view port;
  if (s.starts_with('[')) {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = s.substr(1, close - 1);
    if (!std::all_of(host.begin(), host.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':'; })) {
      return false;
    }
    port = s.substr(close + 1);
  } else {
    size_t colon = s.find(':');
    if (colon != std::string_view::npos) {
      host = s.substr(0, colon);
      port = s.substr(colon);
    }
    for (size_t start = 0;;) {
      size_t dot = host.find('.', start);
      if (!is_domain_label(
              host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start))) {
        return false;
      }
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  if (port.empty()) return true;
  return port.size() > 1 && port[0] == ':' &&
         std::all_of(port.begin() + 1, port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

constexpr size_t kMaxNameLength = 255;

[[noreturn]] void invalid(std::string_view text, std::string_view why) {
  throw InvalidInputError(fmt::format("invalid reference format `{}`: {}", text, why));
}

}  // namespace

Reference Reference::parse(std::string_view text) {
  if (text.empty()) invalid(text, "empty reference");
  if (text.size() > 4096) invalid(text.substr(0, 64), "reference too long");
  Reference ref;
  std::string_view rest = text;

  if (auto at = rest.find('@'); at != std::string_view::npos) {
    auto d = Digest::parse(rest.substr(at + 1));
    if (!d) invalid(text, "invalid digest after `@`");
    ref.digest_ = *d;
    rest = rest.substr(0, at);
  }
  // A tag follows the last colon that comes after the last slash (a colon before it is a port).
  auto slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    std::string tag(rest.substr(colon + 1));
    if (!is_tag(tag)) invalid(text, fmt::format("invalid tag `{}`", tag));
    ref.tag_ = tag;
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) invalid(text, "empty repository name");

  std::string_view remainder = rest;
  auto first_slash = rest.find('/');
  if (first_slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, first_slash);
    if (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
        first == "localhost" || first.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string_view::npos) {
      if (!is_domain(first)) {
        invalid(text, fmt::format("invalid registry host `{}`", first));
      }
      ref.domain_ = std::string(first);
      remainder = rest.substr(first_slash + 1);
    }
  }
  if (ref.domain_.empty()) ref.domain_ = "docker.io";
  // index.docker.io is the same registry as docker.io; Docker folds it.
  if (ref.domain_ == "index.docker.io") ref.domain_ = "docker.io";

  std::string path(remainder);
  if (path.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos) {
    invalid(text, "repository name must be lowercase");
  }
  size_t start = 0;
  for (;;) {
    size_t end = path.find('/', start);
    std::string component = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!is_path_component(component)) {
      invalid(text, component.empty() ? "empty path component"
                                      : fmt::format("invalid path component `{}`", component));
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (ref.domain_ == "docker.io" && path.find('/') == std::string::npos) path = "library/" + path;
  ref.path_ = path;
  if (ref.domain_.size() + 1 + ref.path_.size() > kMaxNameLength) {
    invalid(text, "repository name must not be more than 255 characters");
  }
  if (!ref.tag_ && !ref.digest_) ref.tag_ = "latest";
  return ref;
}

std::optional<Reference> Reference::try_parse(std::string_view text) {
  try {
    return parse(text);
  } catch (const InvalidInputError&) {
    return std::nullopt;
  }
}

Reference Reference::parse_tagged(std::string_view text) {
  Reference ref = parse(text);
  if (ref.digest_) {
    throw InvalidInputError(fmt::format("invalid reference `{}`: a digest is not allowed here", text));
  }
  return ref;
}

std::string Reference::familiar_repository() const {
  if (domain_ == "docker.io") {
    if (path_.starts_with("library/") && path_.find('/', 8) == std::string::npos) return path_.substr(8);
    return path_;
  }
  return repository();
}

std::string Reference::str() const {
  std::string s = repository();
  if (tag_) s += ":" + *tag_;
  if (digest_) s += "@" + digest_->str();
  return s;
}

std::string Reference::familiar() const {
  std::string s = familiar_repository();
  if (tag_) s += ":" + *tag_;
  if (digest_) s += "@" + digest_->str();
  return s;
}

}  // namespace kiln
