// Image references, parsed by the distribution reference grammar (github.com/distribution/reference):
// [domain[:port]/]path[:tag][@digest], with Docker's normalisation (docker.io, library/, latest).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "layerstore/digest.h"

namespace kiln {

class Reference {
 public:
  // Parses and normalises a reference as Docker does ("busybox" → docker.io/library/busybox:latest
  // unless a digest is given). Throws InvalidInputError naming the text and the rule it breaks.
  static Reference parse(std::string_view text);
  // Like parse, but returns nullopt instead of throwing.
  static std::optional<Reference> try_parse(std::string_view text);
  // Parses a repository with an optional tag but no digest (for `tag` and `import` targets).
  static Reference parse_tagged(std::string_view text);

  const std::string& domain() const { return domain_; }
  const std::string& path() const { return path_; }
  const std::optional<std::string>& tag() const { return tag_; }
  const std::optional<Digest>& digest() const { return digest_; }

  // "docker.io/library/busybox"
  std::string repository() const { return domain_ + "/" + path_; }
  // "busybox", "user/app", "localhost:5000/app": what `docker images` shows.
  std::string familiar_repository() const;
  // The full normalised form: "docker.io/library/busybox:latest" or "...@sha256:...".
  std::string str() const;
  // The familiar form: "busybox:latest".
  std::string familiar() const;

  friend bool operator==(const Reference&, const Reference&) = default;

 private:
  std::string domain_;
  std::string path_;
  std::optional<std::string> tag_;
  std::optional<Digest> digest_;
};

}  // namespace kiln
