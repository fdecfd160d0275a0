#include "layerstore/reference.h"

#include <regex>

#include "layerstore/errors.h"

namespace kiln {
namespace {

// The distribution grammar, written out once. std::regex is fine here: references are short and
// the patterns have no nested quantifiers that backtrack badly on them (length is capped first).
const std::regex& path_component_re() {
  static const std::regex re("[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*");
  return re;
}
const std::regex& domain_re() {
  static const std::regex re(
      "(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
      "(?:\\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?");
  return re;
}
const std::regex& tag_re() {
  static const std::regex re("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
  return re;
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
    if (!std::regex_match(tag, tag_re())) invalid(text, fmt::format("invalid tag `{}`", tag));
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
      if (!std::regex_match(std::string(first), domain_re())) {
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
    if (!std::regex_match(component, path_component_re())) {
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
