// The registry library's typed errors. An HTTP failure keeps its type all the way to the CLI, so that
// whoever may try again (the registry client's retries, with backoff) can ask the error itself
// whether trying again can help, as go-containerregistry's transport errors answer Temporary().
#pragma once

#include <string>

#include "layerstore/errors.h"

namespace kiln::registry {

// An HTTP exchange that failed: no connection, a TLS failure, a stall, a body cut short, too many
// redirects, or (HttpStatusError) an answer with an error status. The message is in kiln's voice,
// the operation and its object first: "ADD `https://example.com/a.tgz`: HTTP 404 Not Found".
class HttpError : public Error {
 public:
  HttpError(const std::string& what, bool temporary) : Error(what), temporary_(temporary) {}
  // Whether the same request may succeed later: true for connections refused or reset, timeouts,
  // bodies cut short, 5xx and 429; false for what another try would only repeat (404, a bad
  // certificate, a redirect loop).
  bool temporary() const { return temporary_; }

 private:
  bool temporary_;
};

// The server answered with a status that is neither a success nor, for a conditional request, 304.
class HttpStatusError : public HttpError {
 public:
  HttpStatusError(const std::string& what, int status, std::string body)
      : HttpError(what, status >= 500 || status == 429), status_(status), body_(std::move(body)) {}
  int status() const { return status_; }
  // The start of the answer's body (at most kMaxErrorBody bytes): a registry explains its errors
  // there (`{"errors":[{"code":…,"message":…}]}`).
  const std::string& body() const { return body_; }
  static constexpr size_t kMaxErrorBody = 16 << 10;

 private:
  int status_;
  std::string body_;
};

}  // namespace kiln::registry
