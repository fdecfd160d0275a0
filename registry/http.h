// kiln's HTTP client, on libcurl: what ADD's URL sources use now and what the registry client
// (pull, push, the registry build cache) grows on. A body streams through fixed buffers into a
// kiln Writer, so memory does not grow with the download.
//
// libcurl is loaded and set up (curl_global_init, and OpenSSL's TLS with it) the first time an
// HttpClient is made, never at start-up: commands that make no request pay nothing for it
// (registry/curl_api.h says how, and how libcurl's libcrypto and kiln's stay apart).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "layerstore/io.h"
#include "registry/errors.h"

namespace kiln::registry {

class SharedHttpState;

// How a client's TLS connections are checked. Docker's model: the system's CAs plus those of
// certs.d; a client certificate when the registry asks for one; or no verification at all for a
// registry the user named insecure.
struct TlsOptions {
  bool verify = true;
  // PEM CA certificates trusted besides the system's (the contents of certs.d's *.crt files).
  std::string extra_ca_pem;
  std::string client_cert_file;  // PEM
  std::string client_key_file;   // PEM
};

struct HttpOptions {
  // Go's net.Dialer in http.DefaultTransport gives up connecting after 30 s; so does kiln.
  std::chrono::seconds connect_timeout{30};
  // A response that sends nothing for this long (headers or body) is abandoned: without it a
  // server that stops sending would hold a build for ever.
  std::chrono::seconds stall_timeout{60};
  // Go's http.Client stops after 10 redirects.
  long max_redirects = 10;
  // When this descriptor becomes readable (an eventfd the caller writes), the transfer stops with
  // an HttpError "…: canceled". -1: never.
  int cancel_fd = -1;
  std::string user_agent = "kiln";
  TlsOptions tls;
  // DNS answers and TLS sessions shared with the other clients of the same SharedHttpState, so
  // that the threads of one pull resolve once and resume each other's TLS sessions. Null: the
  // client's own.
  std::shared_ptr<SharedHttpState> shared;
};

// DNS answers and TLS sessions that several HttpClients (one per thread) share. Not connections:
// each client keeps its own alive, and callers reuse clients (RegistryClient keeps idle ones).
// libcurl's shared connection cache closes its connections through an internal handle that
// ignores CURLOPT_NOSIGNAL: every curl_easy_cleanup then set SIGPIPE to SIG_IGN and back, a
// process-wide change racing with the builder's other threads.
class SharedHttpState {
 public:
  SharedHttpState();
  ~SharedHttpState();
  SharedHttpState(const SharedHttpState&) = delete;
  SharedHttpState& operator=(const SharedHttpState&) = delete;
  struct State;
  State& state() { return *state_; }

 private:
  std::unique_ptr<State> state_;
};

struct HttpRequest {
  // GET, HEAD, PUT, POST, PATCH or DELETE.
  std::string method = "GET";
  std::string url;
  // How messages name the operation and its object: "ADD `https://…`". Empty: "GET `<url>`".
  std::string what;
  // Extra request header lines, "Name: value" (If-None-Match now; Accept, Authorization and Range
  // for the registry).
  std::vector<std::string> headers;
  // Ask for gzip and store what it decodes to, as Go's transport does for a request that does not
  // set Accept-Encoding itself (BuildKit's downloads). Never for registry blobs, whose digest is of
  // the bytes as sent.
  bool decode_gzip = false;
  // The request body, streamed from `upload` (PUT, POST, PATCH): exactly `upload_size` bytes.
  // Without one, a PUT, POST or PATCH sends an empty body.
  Reader* upload = nullptr;
  uint64_t upload_size = 0;
  // Whether an answer with an error status throws HttpStatusError (the default) or is returned, its
  // body (the start of it) in HttpResponse::error_body: the registry client reads 401s and 404s.
  bool throw_on_error_status = true;
  bool follow_redirects = true;
  // A GET from this offset on ("Range: bytes=N-"). A server that ignores Range answers 200 with the
  // whole body, whose first range_start bytes are then skipped: `body` sees bytes from the offset
  // on either way.
  uint64_t range_start = 0;
  // This request's own cancel descriptor, watched besides HttpOptions::cancel_fd. -1: none.
  int cancel_fd = -1;
};

struct HttpResponse {
  int status = 0;         // 2xx, or 304 for a conditional request whose copy is current
  std::string final_url;  // the URL that answered, after redirects
  // The final response's header fields, names in lowercase, in the order received.
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t size = 0;                       // body bytes written (decoded, with decode_gzip)
  std::optional<uint64_t> content_length;  // as announced, when it was
  // What BuildKit reads from the answer: Last-Modified (raw, and parsed as http.ParseTime parses
  // it: nullopt when absent or malformed), ETag, and Content-Disposition's file name.
  std::string last_modified_text;
  std::optional<int64_t> last_modified;
  std::string etag;
  std::optional<std::string> filename;
  // With throw_on_error_status off: the start of an error answer's body (at most
  // HttpStatusError::kMaxErrorBody bytes).
  std::string error_body;

  // The first header field of that name (any case), or nullopt.
  std::optional<std::string> header(std::string_view name) const;
};

// One client reuses its connections (keep-alive) from one request to the next; it is not to be
// used by two threads at once (make one per thread).
class HttpClient {
 public:
  explicit HttpClient(HttpOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // GETs request.url, following redirects (to http and https URLs only, at most max_redirects),
  // and writes the final response's body into `body` when its status is 2xx. A 304 is returned
  // with nothing written. `body` is not finish()ed: its owner does that.
  //
  // Throws HttpStatusError for any other status ("…: HTTP 404 Not Found"); HttpError when the
  // exchange fails (a connection or TLS failure, a connect timeout or stall, a body shorter than
  // its Content-Length, too many redirects, a canceled transfer); and whatever `body` throws,
  // unchanged. What was written to `body` before a failure stays written: the caller discards it.
  HttpResponse get(const HttpRequest& request, Writer& body);

  // Sends request (any method), writing a 2xx answer's body into `body` (discarded when null).
  // Throws as get() does; with throw_on_error_status off, an error status is returned instead.
  HttpResponse perform(const HttpRequest& request, Writer* body);

 private:
  HttpOptions options_;
  struct Handle;
  std::unique_ptr<Handle> handle_;
};

}  // namespace kiln::registry
