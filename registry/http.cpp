#include "registry/http.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <exception>
#include <mutex>

#include "layerstore/files.h"
#include "registry/curl_api.h"
#include "registry/http_headers.h"

namespace kiln::registry {
namespace {

// libcurl's receive buffer: the store's block size. libcurl keeps none of what it hands over, so a
// download holds this much, and the batch below, however large it is.
constexpr long kBufferSize = 128 << 10;
// libcurl hands a body over in pieces of at most 16 KiB (CURL_MAX_WRITE_SIZE) whatever it read
// from the socket; they are gathered up to this before the Writer sees them, so that a download
// costs one write(2) per 256 KiB rather than per 16 KiB.
constexpr size_t kBodyBatch = 256 << 10;
constexpr long kUploadBufferSize = 1 << 20;
// One response's header fields, at most: a hostile server could otherwise fill memory with them.
constexpr size_t kMaxHeaderBytes = 256 << 10;

template <typename T>
void set_option(const CurlApi& api, CURL* curl, CURLoption option, T value) {
  CURLcode rc = api.easy_setopt(curl, option, value);
  // Only a libcurl older than the one kiln is built against refuses an option kiln sets.
  if (rc != CURLE_OK)
    throw HttpError(fmt::format("libcurl option {}: {}", static_cast<int>(option), api.easy_strerror(rc)),
                    false);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() &&
         (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n'))
    text.remove_suffix(1);
  return text;
}

// What one perform() shares with libcurl's callbacks. The callbacks are C: nothing may be thrown
// through them, so an exception is kept here and thrown again once libcurl has returned.
struct Transfer {
  const CurlApi* api = nullptr;
  CURL* curl = nullptr;
  Writer* body = nullptr;        // null: the body is discarded
  std::vector<std::byte> batch;  // body bytes received, not yet given to `body`
  Reader* upload = nullptr;
  uint64_t upload_left = 0;
  HttpResponse* response = nullptr;
  std::array<int, 2> cancel_fds{-1, -1};  // the client's and the request's (-1: none)

  int responses = 0;  // status lines seen: each redirect (and a 100 Continue) is a response
  size_t header_bytes = 0;
  int checked_response = 0;  // the response whose status the body was last checked against
  bool error_status = false;
  uint64_t skip = 0;  // body bytes still to drop: a Range request answered with the whole body
  uint64_t range_start = 0;
  std::string error_body;
  std::exception_ptr body_error;
  std::string abort_reason;
  bool canceled = false;

  void flush_batch() {
    if (batch.empty()) return;
    body->write(batch);
    batch.clear();
  }
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    // A new response: only the last one's fields describe what is downloaded.
    ++t->responses;
    t->header_bytes = 0;
    t->response->headers.clear();
    return n;
  }
  t->header_bytes += n;
  if (t->header_bytes > kMaxHeaderBytes) {
    t->abort_reason = fmt::format("response header fields larger than {} KiB", kMaxHeaderBytes >> 10);
    return 0;
  }
  size_t colon = line.find(':');
  // The blank line ending the fields, and a folded continuation line (obsolete), carry no field.
  if (colon == std::string_view::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') return n;
  t->response->headers.emplace_back(ascii_lowercase(trim(line.substr(0, colon))),
                                    std::string(trim(line.substr(colon + 1))));
  return n;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  if (t->checked_response != t->responses) {
    long status = 0;
    t->api->easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    t->error_status = status < 200 || status >= 300;
    t->skip = status == 200 ? t->range_start : 0;
    t->checked_response = t->responses;
  }
  if (t->error_status) {
    // Kept for the error message, up to a cap; past it the transfer stops (there is nothing to
    // read for in an error body).
    size_t room = HttpStatusError::kMaxErrorBody - t->error_body.size();
    t->error_body.append(data, std::min(n, room));
    return n <= room ? n : 0;
  }
  size_t dropped = static_cast<size_t>(std::min<uint64_t>(t->skip, n));
  t->skip -= dropped;
  try {
    if (t->body && n > dropped) {
      std::span<const std::byte> piece(reinterpret_cast<const std::byte*>(data) + dropped, n - dropped);
      if (t->batch.size() + piece.size() > kBodyBatch) t->flush_batch();
      if (piece.size() >= kBodyBatch) {
        t->body->write(piece);
      } else {
        if (t->batch.capacity() == 0) t->batch.reserve(kBodyBatch);
        t->batch.insert(t->batch.end(), piece.begin(), piece.end());
      }
    }
  } catch (...) {
    t->body_error = std::current_exception();
    return 0;
  }
  t->response->size += n - dropped;
  return n;
}

size_t on_upload(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t room = std::min<uint64_t>(size * count, t->upload_left);
  if (room == 0) return 0;
  try {
    size_t n = t->upload->read(std::span<std::byte>(reinterpret_cast<std::byte*>(data), room));
    if (n == 0) {
      t->abort_reason = fmt::format("the request body ended {} bytes early", t->upload_left);
      return CURL_READFUNC_ABORT;
    }
    t->upload_left -= n;
    return n;
  } catch (...) {
    t->body_error = std::current_exception();
    return CURL_READFUNC_ABORT;
  }
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  // poll passes over a negative descriptor.
  std::array<pollfd, 2> cancel{pollfd{t->cancel_fds[0], POLLIN, 0}, pollfd{t->cancel_fds[1], POLLIN, 0}};
  if (::poll(cancel.data(), cancel.size(), 0) > 0) {
    t->canceled = true;
    return 1;
  }
  return 0;
}

// The failures another try may cure: the network, the server's load, a connection cut.
bool temporary(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    // A kept-alive connection died under a request body: libcurl would send it again on a new
    // one, but cannot rewind a stream. Another try (from the offset the registry reports) can.
    case CURLE_SEND_FAIL_REWIND:
      return true;
    default:
      return false;
  }
}

// libcurl's sentences start with a capital; kiln's voice does not, unless it is an acronym ("SSL").
std::string first_lower(std::string text) {
  // A name ("OpenSSL/3.0", "SSL") keeps its capitals: only a plain capitalised word is lowered.
  for (size_t i = 1; i < text.size() && text[i] != ' '; ++i)
    if (!std::islower(static_cast<unsigned char>(text[i]))) return text;
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

// The host and port (the scheme's default when the URL names none) a URL connects to.
std::optional<std::pair<std::string, std::string>> host_and_port(const CurlApi& api, const char* url) {
  std::unique_ptr<CURLU, decltype(api.url_cleanup)> parsed(api.url(), api.url_cleanup);
  if (!parsed || api.url_set(parsed.get(), CURLUPART_URL, url, 0) != CURLUE_OK) return std::nullopt;
  char* host = nullptr;
  char* port = nullptr;
  if (api.url_get(parsed.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK) return std::nullopt;
  if (api.url_get(parsed.get(), CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    api.free(host);
    return std::nullopt;
  }
  std::pair<std::string, std::string> out(host, port);
  api.free(host);
  api.free(port);
  return out;
}

// The cause of a failed transfer, in kiln's voice; libcurl's own text where it says more.
std::string describe(CURLcode rc, const char* detail, const Transfer& t, const HttpOptions& options) {
  const CurlApi& api = *t.api;
  CURL* curl = t.curl;
  std::string curl_text = *detail ? detail : api.easy_strerror(rc);
  switch (rc) {
    case CURLE_SEND_FAIL_REWIND:
      return "the connection was lost while the request body was being sent";
    case CURLE_ABORTED_BY_CALLBACK:
      if (t.canceled) return "canceled";
      return t.abort_reason.empty() ? first_lower(curl_text) : t.abort_reason;
    case CURLE_WRITE_ERROR:
    case CURLE_READ_ERROR:
      return t.abort_reason.empty() ? first_lower(curl_text) : t.abort_reason;
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connected = 0;
      api.easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected);
      if (connected == 0) return fmt::format("no connection after {} s", options.connect_timeout.count());
      return fmt::format("stalled: nothing received for {} s", options.stall_timeout.count());
    }
    case CURLE_PARTIAL_FILE: {
      curl_off_t got = 0, length = -1;
      api.easy_getinfo(curl, CURLINFO_SIZE_DOWNLOAD_T, &got);
      api.easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length < 0) return fmt::format("connection closed after {} bytes, before the end of the body", got);
      return fmt::format("connection closed after {} of {} bytes", got, length);
    }
    case CURLE_TOO_MANY_REDIRECTS:
      return fmt::format("stopped after {} redirects", options.max_redirects);
    case CURLE_GOT_NOTHING:
      return "the server closed the connection without answering";
    case CURLE_UNSUPPORTED_PROTOCOL:
      // A response came, so it was a redirect that pointed elsewhere.
      if (t.responses > 0) {
        return fmt::format("redirected to `{}`: only http and https are followed",
                           t.response->header("location").value_or("?"));
      }
      return "only http and https URLs are supported";
    case CURLE_COULDNT_CONNECT: {
      long os_errno = 0;
      char* url = nullptr;
      api.easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
      api.easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &url);  // after redirects: the one tried
      auto where = url ? host_and_port(api, url) : std::nullopt;
      if (os_errno == 0 || !where) return first_lower(curl_text);
      return fmt::format("connect to {} port {}: {}", where->first, where->second,
                         std::strerror(static_cast<int>(os_errno)));
    }
    default:
      return first_lower(curl_text);
  }
}

}  // namespace

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  std::string wanted = ascii_lowercase(name);
  for (const auto& [key, value] : headers) {
    if (key == wanted) return value;
  }
  return std::nullopt;
}

// libcurl's share interface, its locks std::mutexes: one per kind of data shared.
struct SharedHttpState::State {
  const CurlApi* api = nullptr;
  CURLSH* share = nullptr;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> locks;

  static void lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<State*>(user)->locks.at(static_cast<size_t>(data)).lock();
  }
  static void unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<State*>(user)->locks.at(static_cast<size_t>(data)).unlock();
  }
};

SharedHttpState::SharedHttpState() : state_(std::make_unique<State>()) {
  const CurlApi& api = curl_api();
  state_->api = &api;
  state_->share = api.share_init();
  if (!state_->share) throw HttpError("set up libcurl: curl_share_init failed", false);
  auto setopt = [&](CURLSHoption option, auto value) {
    if (api.share_setopt(state_->share, option, value) != CURLSHE_OK)
      throw HttpError(fmt::format("set up libcurl's sharing of DNS answers and TLS sessions (option {})",
                                  static_cast<int>(option)),
                      false);
  };
  setopt(CURLSHOPT_LOCKFUNC, &State::lock);
  setopt(CURLSHOPT_UNLOCKFUNC, &State::unlock);
  setopt(CURLSHOPT_USERDATA, static_cast<void*>(state_.get()));
  setopt(CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  setopt(CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
}

SharedHttpState::~SharedHttpState() {
  if (state_->share) state_->api->share_cleanup(state_->share);
}

struct HttpClient::Handle {
  const CurlApi* api = nullptr;
  CURL* curl = nullptr;
  ~Handle() {
    if (curl) api->easy_cleanup(curl);
  }
};

HttpClient::HttpClient(HttpOptions options)
    : options_(std::move(options)), handle_(std::make_unique<Handle>()) {
  const CurlApi& api = curl_api();
  handle_->api = &api;
  CURL* curl = handle_->curl = api.easy_init();
  if (!curl) throw HttpError("set up libcurl: curl_easy_init failed", false);
  // What every request of this client shares, set once: libcurl refuses a new buffer size once it
  // has allocated its buffer, and curl_easy_reset would forget the rest.
  //
  // Threads: no signals (libcurl's SIGALRM for DNS timeouts, and its SIGPIPE handling, change
  // process-wide state). Debian's libcurl resolves names on a thread of its own; it writes to
  // sockets with MSG_NOSIGNAL, TLS included, so SIGPIPE is not raised either.
  set_option(api, curl, CURLOPT_NOSIGNAL, 1L);
  // The URL and every redirect are http or https, as with BuildKit's Go client: not file://, not
  // the dozen other protocols Debian's libcurl speaks.
  set_option(api, curl, CURLOPT_PROTOCOLS_STR, "http,https");
  set_option(api, curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set_option(api, curl, CURLOPT_FOLLOWLOCATION, 1L);
  set_option(api, curl, CURLOPT_MAXREDIRS, options_.max_redirects);
  set_option(api, curl, CURLOPT_CONNECTTIMEOUT_MS,
             static_cast<long>(options_.connect_timeout.count() * 1000));
  // A stall: fewer than 1 byte a second over stall_timeout seconds, waiting for the answer included.
  // libcurl averages the speed over the last 5 seconds, so a transfer that stops after some bytes
  // is given up a few seconds after the timeout.
  set_option(api, curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  set_option(api, curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_timeout.count()));
  set_option(api, curl, CURLOPT_BUFFERSIZE, kBufferSize);
  // Uploads are read from the blob file in pieces of this size: libcurl's 64 KiB default made a
  // 512 MiB push 8,000 read and send calls more than it needs.
  set_option(api, curl, CURLOPT_UPLOAD_BUFFERSIZE, kUploadBufferSize);
  set_option(api, curl, CURLOPT_USERAGENT, options_.user_agent.c_str());
  set_option(api, curl, CURLOPT_HEADERFUNCTION, &on_header);
  set_option(api, curl, CURLOPT_WRITEFUNCTION, &on_body);
  set_option(api, curl, CURLOPT_READFUNCTION, &on_upload);
  set_option(api, curl, CURLOPT_XFERINFOFUNCTION, &on_progress);
  // HTTP/2 where a TLS server offers it (ALPN); HTTP/1.1 with keep-alive otherwise.
  set_option(api, curl, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  if (options_.shared) set_option(api, curl, CURLOPT_SHARE, options_.shared->state().share);
  const TlsOptions& tls = options_.tls;
  if (!tls.verify) {
    set_option(api, curl, CURLOPT_SSL_VERIFYPEER, 0L);
    set_option(api, curl, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!tls.extra_ca_pem.empty()) {
    // The system's CAs and certs.d's together, as Docker trusts them: libcurl takes one bundle, so
    // the system's is read and the extra ones appended.
    constexpr const char* kSystemBundle = "/etc/ssl/certs/ca-certificates.crt";  // Debian's
    std::string bundle;
    if (::access(kSystemBundle, R_OK) == 0) bundle = read_file_capped(kSystemBundle, 16 << 20, kSystemBundle);
    bundle += "\n";
    bundle += tls.extra_ca_pem;
    curl_blob blob{bundle.data(), bundle.size(), CURL_BLOB_COPY};
    set_option(api, curl, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (!tls.client_cert_file.empty()) {
    set_option(api, curl, CURLOPT_SSLCERT, tls.client_cert_file.c_str());
    set_option(api, curl, CURLOPT_SSLKEY, tls.client_key_file.c_str());
  }
}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::get(const HttpRequest& request, Writer& body) {
  return perform(request, &body);
}

HttpResponse HttpClient::perform(const HttpRequest& request, Writer* body) {
  const CurlApi& api = *handle_->api;
  CURL* curl = handle_->curl;
  std::string what =
      request.what.empty() ? fmt::format("{} `{}`", request.method, request.url) : request.what;
  HttpResponse response;
  Transfer t;
  t.api = &api;
  t.curl = curl;
  t.body = body;
  t.upload = request.upload;
  t.upload_left = request.upload ? request.upload_size : 0;
  t.range_start = request.range_start;
  t.response = &response;
  t.cancel_fds = {options_.cancel_fd, request.cancel_fd};
  char detail[CURL_ERROR_SIZE] = "";

  std::unique_ptr<curl_slist, decltype(api.slist_free_all)> headers(nullptr, api.slist_free_all);
  std::vector<std::string> lines = request.headers;
  if (request.range_start > 0) lines.push_back(fmt::format("Range: bytes={}-", request.range_start));
  bool sends_body = request.method == "PUT" || request.method == "POST" || request.method == "PATCH";
  // No "Expect: 100-continue" wait before a body: registries answer a bad upload after reading it.
  if (sends_body) lines.emplace_back("Expect:");
  for (const std::string& line : lines) {
    curl_slist* more = api.slist_append(headers.get(), line.c_str());
    if (!more) throw std::bad_alloc();
    headers.release();
    headers.reset(more);
  }
  // Every option a request sets, each time, so that nothing of the last request carries over.
  set_option(api, curl, CURLOPT_URL, request.url.c_str());
  set_option(api, curl, CURLOPT_HTTPGET, 1L);  // also clears NOBODY, UPLOAD and POST
  set_option(api, curl, CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
  if (request.method == "HEAD") {
    set_option(api, curl, CURLOPT_NOBODY, 1L);
  } else if (sends_body) {
    set_option(api, curl, CURLOPT_UPLOAD, 1L);
    set_option(api, curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(t.upload_left));
    set_option(api, curl, CURLOPT_READDATA, static_cast<void*>(&t));
    if (request.method != "PUT") set_option(api, curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  } else if (request.method != "GET") {
    set_option(api, curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  set_option(api, curl, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  set_option(api, curl, CURLOPT_HTTPHEADER, headers.get());
  set_option(api, curl, CURLOPT_ACCEPT_ENCODING, request.decode_gzip ? "gzip" : nullptr);
  set_option(api, curl, CURLOPT_ERRORBUFFER, detail);
  set_option(api, curl, CURLOPT_HEADERDATA, static_cast<void*>(&t));
  set_option(api, curl, CURLOPT_WRITEDATA, static_cast<void*>(&t));
  set_option(api, curl, CURLOPT_XFERINFODATA, static_cast<void*>(&t));
  // libcurl calls on_progress at least once a second, stalled or not, while it is on.
  bool cancelable = options_.cancel_fd >= 0 || request.cancel_fd >= 0;
  set_option(api, curl, CURLOPT_NOPROGRESS, cancelable ? 0L : 1L);
  // The error buffer is this call's: libcurl must not write to it once the call has returned.
  struct Detach {
    const CurlApi& api;
    CURL* curl;
    ~Detach() { api.easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr); }
  } detach{api, curl};

  CURLcode rc = api.easy_perform(curl);
  // What arrived is handed over even when the transfer broke off: a retry resumes after it.
  if (!t.body_error) {
    try {
      t.flush_batch();
    } catch (...) {
      t.body_error = std::current_exception();
    }
  }
  if (t.body_error) std::rethrow_exception(t.body_error);
  long status = 0;
  api.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && t.error_status)) {
    throw HttpError(fmt::format("{}: {}", what, describe(rc, detail, t, options_)), temporary(rc));
  }
  if (status != 304 && (status < 200 || status >= 300) && !request.throw_on_error_status) {
    response.error_body = std::move(t.error_body);
  } else if (status != 304 && (status < 200 || status >= 300)) {
    std::string_view text = http_status_text(response.status);
    throw HttpStatusError(fmt::format("{}: HTTP {}{}{}", what, status, text.empty() ? "" : " ", text),
                          response.status, std::move(t.error_body));
  }

  char* final_url = nullptr;
  api.easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &final_url);
  response.final_url = final_url ? final_url : request.url;
  curl_off_t length = -1;
  api.easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (length >= 0) response.content_length = static_cast<uint64_t>(length);
  if (auto value = response.header("last-modified")) {
    response.last_modified_text = *value;
    response.last_modified = parse_http_date(*value);
  }
  response.etag = response.header("etag").value_or("");
  if (auto value = response.header("content-disposition"))
    response.filename = content_disposition_filename(*value);
  return response;
}

}  // namespace kiln::registry
