#include "registry/client.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/image.h"
#include "registry/auth_challenge.h"
#include "registry/base64.h"
#include "registry/curl_api.h"
#include "registry/http.h"
#include "registry/http_headers.h"

namespace kiln::registry {
namespace {

// Above this a blob goes up in chunks (PATCH with Content-Range), each resumable on its own; below
// it one PUT carries it, saving the round trips.
constexpr uint64_t kMonolithicMax = 32 << 20;
constexpr uint64_t kChunkSize = 64 << 20;
// The longest Retry-After kiln waits; a registry asking for more is given up on.
constexpr std::chrono::seconds kMaxRetryAfter{60};
// Docker's token lifetime when the token server names none (the spec's default), and its floor.
constexpr std::chrono::seconds kDefaultTokenLifetime{60};

using Clock = std::chrono::steady_clock;

// Docker's rule for a registry nobody configured: loopback is insecure (plain http allowed).
bool is_loopback_host(std::string_view host_port) {
  std::string host(host_port);
  if (host.starts_with("[")) {
    host = host.substr(1, host.find(']') - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    host = host.substr(0, colon);
  }
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// Whether `host_port` falls under an insecure-registries entry: the same name, or an IPv4 CIDR
// holding its address.
bool matches_insecure_entry(std::string_view host_port, std::string_view entry) {
  if (entry == host_port) return true;
  auto slash = entry.find('/');
  if (slash == std::string_view::npos) return false;
  std::string net(entry.substr(0, slash));
  int bits = std::atoi(std::string(entry.substr(slash + 1)).c_str());
  std::string host(host_port.substr(
      0, host_port.rfind(':') == std::string_view::npos ? host_port.size() : host_port.rfind(':')));
  in_addr a{}, n{};
  if (bits < 0 || bits > 32 || ::inet_pton(AF_INET, host.c_str(), &a) != 1 ||
      ::inet_pton(AF_INET, net.c_str(), &n) != 1)
    return false;
  uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (ntohl(a.s_addr) & mask) == (ntohl(n.s_addr) & mask);
}

std::optional<std::chrono::seconds> parse_retry_after(const HttpResponse& response) {
  auto value = response.header("retry-after");
  if (!value) return std::nullopt;
  char* end = nullptr;
  long seconds = std::strtol(value->c_str(), &end, 10);
  if (end != value->c_str() && *end == '\0' && seconds >= 0) return std::chrono::seconds(seconds);
  if (auto when = parse_http_date(*value)) {
    int64_t wait = *when - static_cast<int64_t>(std::time(nullptr));
    return std::chrono::seconds(std::max<int64_t>(wait, 0));
  }
  return std::nullopt;
}

[[noreturn]] void throw_registry_error(const std::string& what, const HttpResponse& response) {
  auto [text, code] = registry_error_text(response.error_body);
  // A HEAD's answer has no body: Docker's words for the statuses that need them.
  if (text.empty() && response.status == 401) text = "unauthorized: authentication required";
  if (text.empty() && response.status == 403) text = "denied: requested access to the resource is denied";
  std::string_view reason = http_status_text(response.status);
  std::string message =
      text.empty() ? fmt::format("{}: HTTP {}{}{}", what, response.status, reason.empty() ? "" : " ", reason)
                   : fmt::format("{}: {} (HTTP {})", what, text, response.status);
  throw RegistryError(message, response.status, response.error_body, code, parse_retry_after(response));
}

bool is_success(int status) {
  return status >= 200 && status < 300;
}

// A writer that refuses more than `cap` bytes (manifests and configs are read into memory).
class CappedStringWriter : public Writer {
 public:
  CappedStringWriter(uint64_t cap, std::string what) : cap_(cap), what_(std::move(what)) {}
  void write(std::span<const std::byte> data) override {
    if (text.size() + data.size() > cap_)
      throw InvalidInputError(fmt::format("{}: larger than {} bytes", what_, cap_));
    text.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  std::string text;

 private:
  uint64_t cap_;
  std::string what_;
};

// Counts what passes, so that a retry knows where the last try stopped.
class ProgressWriter : public Writer {
 public:
  ProgressWriter(Writer& next, uint64_t& done) : next_(next), done_(done) {}
  void write(std::span<const std::byte> data) override {
    next_.write(data);
    done_ += data.size();
  }

 private:
  Writer& next_;
  uint64_t& done_;
};

// The CA files and client certificate of a registry's certs.d directory.
void add_cert_dir(const std::string& dir, TlsOptions& tls) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = dir + "/" + name;
    if (name.ends_with(".crt")) {
      tls.extra_ca_pem += read_file_capped(path, 1 << 20, path);
      tls.extra_ca_pem += "\n";
    } else if (name.ends_with(".cert")) {
      std::string key = path.substr(0, path.size() - 5) + ".key";
      if (::access(key.c_str(), R_OK) != 0)
        throw InvalidInputError(fmt::format("client certificate `{}`: no matching `{}`", path, key));
      tls.client_cert_file = path;
      tls.client_key_file = key;
    }
  }
}

struct Token {
  std::string value;
  Clock::time_point expires;
};

}  // namespace

std::pair<std::string, std::string> registry_error_text(std::string_view body) {
  auto doc = nlohmann::json::parse(body, nullptr, false);
  if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array() || doc["errors"].empty())
    return {};
  std::string text, first_code;
  for (const auto& e : doc["errors"]) {
    if (!e.is_object()) continue;
    std::string code = e.value("code", "");
    std::string message =
        e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
    if (first_code.empty()) first_code = code;
    std::string words = ascii_lowercase(code);
    std::replace(words.begin(), words.end(), '_', ' ');
    if (!text.empty()) text += "; ";
    text += words.empty() ? message : message.empty() ? words : words + ": " + message;
  }
  return {text, first_code};
}

bool registry_is_insecure(std::string_view domain, const RegistryOptions& options) {
  if (options.tls_verify) return !*options.tls_verify;
  std::string api_host = domain == "docker.io" ? "registry-1.docker.io" : std::string(domain);
  if (is_loopback_host(api_host)) return true;
  for (const std::string& entry : options.insecure_registries)
    if (matches_insecure_entry(api_host, entry) || matches_insecure_entry(domain, entry)) return true;
  return false;
}

std::string manifest_accept_header() {
  return fmt::format("Accept: {}, {}, {}, {}", media::kOciIndex, media::kOciManifest,
                     media::kDockerManifestList, media::kDockerManifest);
}

struct RegistryClient::Impl {
  std::string domain;
  std::string api_host;  // what URLs name: registry-1.docker.io for docker.io
  RegistryOptions options;
  HttpOptions http_options;
  bool insecure = false;

  std::mutex ping_mutex;
  std::mutex mutex;  // guards everything below
  std::vector<std::unique_ptr<HttpClient>> idle_clients;
  std::string base_url;          // "https://host" once the ping has found the scheme
  std::string challenge_scheme;  // "", "basic" or "bearer"
  std::map<std::string, std::string> challenge;
  std::map<std::string, Token> tokens;  // by scope
  bool credential_loaded = false;
  std::optional<Credential> credential;
  std::mt19937 jitter{std::random_device{}()};

  // An HTTP client for one request, returned to the idle list after it with its kept-alive
  // connection: one per thread at a time.
  class Lease {
   public:
    explicit Lease(Impl& impl) : impl_(impl) {
      std::lock_guard lock(impl.mutex);
      if (!impl.idle_clients.empty()) {
        client_ = std::move(impl.idle_clients.back());
        impl.idle_clients.pop_back();
      }
      if (!client_) client_ = std::make_unique<HttpClient>(impl.http_options);
    }
    ~Lease() {
      std::lock_guard lock(impl_.mutex);
      impl_.idle_clients.push_back(std::move(client_));
    }
    HttpClient& operator*() { return *client_; }

   private:
    Impl& impl_;
    std::unique_ptr<HttpClient> client_;
  };

  std::string credential_description() { return fmt::format("the credentials for {}", domain); }

  const std::optional<Credential>& load_credential() {
    std::lock_guard lock(mutex);
    if (!credential_loaded) {
      if (options.credential) {
        credential = options.credential;
      } else if (auto found = find_credential(options.credential_paths, domain)) {
        credential = found->credential;
      }
      credential_loaded = true;
    }
    return credential;
  }

  // GET /v2/: which scheme answers, and which auth it asks for. Once per client.
  std::string ensure_base() {
    // One ping, even when several threads start at once.
    std::lock_guard ping_lock(ping_mutex);
    {
      std::lock_guard lock(mutex);
      if (!base_url.empty()) return base_url;
    }
    std::vector<std::string> schemes = {"https"};
    if (insecure) schemes.push_back("http");
    std::optional<HttpError> last;
    for (size_t i = 0; i < schemes.size(); ++i) {
      std::string base = fmt::format("{}://{}", schemes[i], api_host);
      HttpRequest request;
      request.url = base + "/v2/";
      request.what = fmt::format("reach registry {}", domain);
      request.throw_on_error_status = false;
      HttpResponse response;
      auto ping = [&] {
        Lease client(*this);
        return (*client).perform(request, nullptr);
      };
      try {
        // https first for an insecure registry, once: a plain-http server fails the handshake at
        // once, and is then spoken to in plain http.
        response = i + 1 < schemes.size() ? ping() : with_retries(ping);
      } catch (const HttpStatusError&) {
        throw;
      } catch (const HttpError& e) {
        // An insecure registry that speaks plain http fails the TLS handshake: try http next.
        if (i + 1 < schemes.size()) {
          last = e;
          continue;
        }
        throw;
      }
      if (response.status == 401) {
        record_challenge(response);
      } else if (!is_success(response.status)) {
        if (response.status == 404)
          throw HttpError(fmt::format("{}: `{}` is not a registry (no /v2/ API)", request.what, base), false);
        throw_registry_error(request.what, response);
      }
      std::lock_guard lock(mutex);
      base_url = base;
      return base_url;
    }
    throw *last;
  }

  void record_challenge(const HttpResponse& response) {
    std::vector<std::string> values;
    for (const auto& [name, value] : response.headers)
      if (name == "www-authenticate") values.push_back(value);
    std::lock_guard lock(mutex);
    for (const AuthChallenge& c : parse_auth_challenges(values)) {
      if (c.scheme == "bearer" || (c.scheme == "basic" && challenge_scheme != "bearer")) {
        challenge_scheme = c.scheme;
        challenge = c.params;
      }
    }
  }

  // Tries fn again on temporary failures, waiting longer each time (exponential, with jitter, or as
  // long as Retry-After asks).
  template <typename F>
  auto with_retries(F&& fn) -> decltype(fn()) {
    for (int attempt = 0;; ++attempt) {
      try {
        return fn();
      } catch (const HttpError& e) {
        if (!e.temporary() || attempt >= options.retries) throw;
        std::chrono::milliseconds wait = options.retry_base_delay * (1 << std::min(attempt, 6));
        {
          std::lock_guard lock(mutex);
          wait = std::chrono::milliseconds(
              std::uniform_int_distribution<int64_t>(wait.count() / 2, wait.count())(jitter));
        }
        if (const auto* registry_error = dynamic_cast<const RegistryError*>(&e);
            registry_error && registry_error->retry_after()) {
          if (*registry_error->retry_after() > kMaxRetryAfter) throw;
          wait = std::max<std::chrono::milliseconds>(wait, *registry_error->retry_after());
        }
        if (options.notice)
          options.notice(fmt::format("{} (retrying in {:.1f} s, {} of {})", e.what(), wait.count() / 1000.0,
                                     attempt + 1, options.retries));
        std::this_thread::sleep_for(wait);
      }
    }
  }

  std::string fetch_token(const std::string& scope) {
    std::map<std::string, std::string> params;
    {
      std::lock_guard lock(mutex);
      params = challenge;
    }
    auto realm = params.find("realm");
    if (realm == params.end() || realm->second.empty())
      throw HttpError(fmt::format("log in to {}: the registry's Bearer challenge names no realm", domain),
                      false);
    const std::optional<Credential>& cred = load_credential();
    const CurlApi& api = curl_api();
    std::unique_ptr<CURLU, decltype(api.url_cleanup)> url(api.url(), api.url_cleanup);
    if (api.url_set(url.get(), CURLUPART_URL, realm->second.c_str(), 0) != CURLUE_OK)
      throw HttpError(fmt::format("log in to {}: bad token realm `{}`", domain, realm->second), false);
    auto add_query = [&](const std::string& name, const std::string& value) {
      std::string part = name + "=" + value;
      api.url_set(url.get(), CURLUPART_QUERY, part.c_str(), CURLU_APPENDQUERY | CURLU_URLENCODE);
    };
    if (auto service = params.find("service"); service != params.end()) add_query("service", service->second);
    for (const std::string& one : split_on(scope, ' '))
      if (!one.empty()) add_query("scope", one);
    if (cred && !cred->username.empty() && cred->identity_token.empty()) add_query("account", cred->username);
    char* text = nullptr;
    api.url_get(url.get(), CURLUPART_URL, &text, 0);
    std::string token_url = text ? text : realm->second;
    api.free(text);

    HttpRequest request;
    request.url = token_url;
    request.what = fmt::format("get a token from `{}` for {}", realm->second, scope.empty() ? domain : scope);
    request.throw_on_error_status = false;
    std::string form;
    StringReader form_reader(form);
    if (cred && !cred->identity_token.empty()) {
      // An identity token (a refresh token, from `docker login` to Docker Hub): OAuth2's grant.
      request.method = "POST";
      std::string query = token_url.substr(std::min(token_url.size(), token_url.find('?') + 1));
      request.url = realm->second;
      form = fmt::format("grant_type=refresh_token&client_id=kiln&refresh_token={}&{}",
                         url_escape(cred->identity_token), query);
      form_reader = StringReader(form);
      request.upload = &form_reader;
      request.upload_size = form.size();
      request.headers.emplace_back("Content-Type: application/x-www-form-urlencoded");
    } else if (cred && !cred->username.empty()) {
      request.headers.push_back("Authorization: Basic " +
                                base64_encode(cred->username + ":" + cred->password));
    }
    CappedStringWriter body(1 << 20, request.what);
    HttpResponse response = with_retries([&] {
      body.text.clear();
      form_reader = StringReader(form);
      Lease client(*this);
      HttpResponse r = (*client).perform(request, &body);
      if (!is_success(r.status) && (r.status >= 500 || r.status == 429))
        throw_registry_error(request.what, r);
      return r;
    });
    if (response.status == 401 || response.status == 403) {
      throw RegistryError(fmt::format("log in to {}: {} (HTTP {})", domain,
                                      cred ? "unauthorized: incorrect username or password"
                                           : "unauthorized: authentication required (run `kiln login`)",
                                      response.status),
                          response.status, response.error_body, "UNAUTHORIZED", std::nullopt);
    }
    if (!is_success(response.status)) throw_registry_error(request.what, response);
    auto doc = nlohmann::json::parse(body.text, nullptr, false);
    std::string token;
    if (doc.is_object()) {
      if (doc.contains("token") && doc["token"].is_string()) token = doc["token"].get<std::string>();
      if (token.empty() && doc.contains("access_token") && doc["access_token"].is_string())
        token = doc["access_token"].get<std::string>();
    }
    if (token.empty()) throw HttpError(fmt::format("{}: the answer holds no token", request.what), false);
    std::chrono::seconds lifetime = kDefaultTokenLifetime;
    if (doc.contains("expires_in") && doc["expires_in"].is_number_integer())
      lifetime = std::max(kDefaultTokenLifetime, std::chrono::seconds(doc["expires_in"].get<int64_t>()));
    std::lock_guard lock(mutex);
    // Refreshed a little before the server's expiry, so that no request carries a dying token.
    tokens[scope] = Token{token, Clock::now() + lifetime - std::chrono::seconds(10)};
    return token;
  }

  static std::string url_escape(std::string_view text) {
    const CurlApi& api = curl_api();
    char* escaped = api.easy_escape(nullptr, text.data(), static_cast<int>(text.size()));
    std::string out = escaped ? escaped : "";
    api.free(escaped);
    return out;
  }

  // The Authorization header line for a request needing `scope`, or "" when none is due.
  std::string authorization(const std::string& scope, bool refresh) {
    std::string scheme;
    {
      std::lock_guard lock(mutex);
      scheme = challenge_scheme;
      if (scheme == "bearer" && !refresh) {
        auto it = tokens.find(scope);
        if (it != tokens.end() && it->second.expires > Clock::now())
          return "Authorization: Bearer " + it->second.value;
      }
    }
    if (scheme == "basic") {
      const std::optional<Credential>& cred = load_credential();
      if (!cred || cred->username.empty()) return "";
      return "Authorization: Basic " + base64_encode(cred->username + ":" + cred->password);
    }
    if (scheme == "bearer") return "Authorization: Bearer " + fetch_token(scope);
    return "";
  }

  // One request with auth: a 401 is answered once (a new challenge, a token for the scope).
  HttpResponse send(HttpRequest request, const std::string& scope, Writer* body,
                    const std::function<void(HttpRequest&)>& rewind = {}) {
    ensure_base();
    request.throw_on_error_status = false;
    std::vector<std::string> plain_headers = request.headers;
    for (int attempt = 0;; ++attempt) {
      request.headers = plain_headers;
      if (std::string auth = authorization(scope, attempt > 0); !auth.empty())
        request.headers.push_back(auth);
      if (rewind) rewind(request);
      HttpResponse response;
      {
        Lease client(*this);
        response = (*client).perform(request, body);
      }
      if (response.status == 401 && attempt == 0) {
        record_challenge(response);
        std::lock_guard lock(mutex);
        if (!challenge_scheme.empty()) continue;
      }
      if (response.status == 401 && attempt > 0) refuse_scope(request.what, response, scope);
      if (response.status >= 500 || response.status == 429) throw_registry_error(request.what, response);
      return response;
    }
  }

  // A token that the registry finds too narrow (its challenge says insufficient_scope): the token
  // server did not grant what was asked, which is about the account, not the request.
  void refuse_scope(const std::string& what, const HttpResponse& response, const std::string& scope) {
    std::vector<std::string> values;
    for (const auto& [name, value] : response.headers)
      if (name == "www-authenticate") values.push_back(value);
    for (const AuthChallenge& c : parse_auth_challenges(values)) {
      auto error = c.params.find("error");
      if (error == c.params.end() || error->second != "insufficient_scope") continue;
      const std::optional<Credential>& cred = load_credential();
      bool anonymous = !cred || cred->username.empty();
      std::string who = anonymous ? "anonymous access" : fmt::format("user `{}`", cred->username);
      throw RegistryError(fmt::format("{}: denied: {} is not granted `{}` by the registry's token server{}",
                                      what, who, scope, anonymous ? " (log in with `kiln login`)" : ""),
                          401, response.error_body, "DENIED", std::nullopt);
    }
  }

  std::string url(const std::string& path) { return ensure_base() + path; }

  // An upload's Location, which may be relative, made absolute.
  std::string absolute(const std::string& location) {
    if (location.starts_with("http://") || location.starts_with("https://")) return location;
    std::string base = ensure_base();
    if (location.starts_with("/")) return base + location;
    return base + "/" + location;
  }
};

RegistryClient::RegistryClient(std::string domain, RegistryOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& impl = *impl_;
  impl.domain = std::move(domain);
  impl.api_host = impl.domain == "docker.io" ? "registry-1.docker.io" : impl.domain;
  impl.options = std::move(options);
  impl.insecure = registry_is_insecure(impl.domain, impl.options);
  impl.http_options.stall_timeout = impl.options.stall_timeout;
  impl.http_options.shared = std::make_shared<SharedHttpState>();
  impl.http_options.user_agent = "kiln/" KILN_VERSION;
  TlsOptions& tls = impl.http_options.tls;
  tls.verify = !impl.insecure;
  if (!impl.options.cert_dir.empty()) {
    add_cert_dir(impl.options.cert_dir, tls);
  } else {
    for (const std::string& root : impl.options.certs_d_roots) add_cert_dir(root + "/" + impl.domain, tls);
  }
}

RegistryClient::~RegistryClient() = default;

const std::string& RegistryClient::domain() const {
  return impl_->domain;
}

void RegistryClient::check_login() {
  Impl& impl = *impl_;
  HttpRequest request;
  request.url = impl.url("/v2/");
  request.what = fmt::format("log in to {}", impl.domain);
  HttpResponse response = impl.with_retries([&] { return impl.send(request, "", nullptr); });
  if (response.status == 401) {
    const std::optional<Credential>& cred = impl.load_credential();
    throw RegistryError(fmt::format("{}: {} (HTTP 401)", request.what,
                                    cred ? "unauthorized: incorrect username or password"
                                         : "unauthorized: authentication required"),
                        401, response.error_body, "UNAUTHORIZED", std::nullopt);
  }
  if (!is_success(response.status)) throw_registry_error(request.what, response);
}

namespace {
std::string pull_scope(const std::string& repository) {
  return fmt::format("repository:{}:pull", repository);
}
std::string push_scope(const std::string& repository) {
  return fmt::format("repository:{}:pull,push", repository);
}
}  // namespace

FetchedManifest RegistryClient::get_manifest(const std::string& repository,
                                             const std::string& tag_or_digest) {
  Impl& impl = *impl_;
  std::string what = fmt::format("get manifest `{}/{}{}{}`", impl.domain, repository,
                                 tag_or_digest.starts_with("sha256:") ? "@" : ":", tag_or_digest);
  return impl.with_retries([&] {
    HttpRequest request;
    request.url = impl.url(fmt::format("/v2/{}/manifests/{}", repository, tag_or_digest));
    request.what = what;
    request.headers.push_back(manifest_accept_header());
    CappedStringWriter body(kMaxManifestBytes, what);
    HttpResponse response = impl.send(request, pull_scope(repository), &body);
    if (!is_success(response.status)) throw_registry_error(what, response);
    Digest digest = sha256_of(body.text);
    FetchedManifest out{std::move(body.text), "", digest};
    if (auto asked = Digest::parse(tag_or_digest); asked && *asked != out.digest) {
      throw InvalidInputError(fmt::format(
          "{}: the registry sent a manifest whose digest is {}, not the one asked for", what, out.digest));
    }
    if (auto reported = response.header("docker-content-digest")) {
      if (auto d = Digest::parse(*reported); d && *d != out.digest)
        throw InvalidInputError(fmt::format("{}: the manifest's digest is {}, the registry says {}", what,
                                            out.digest, *reported));
    }
    auto doc = nlohmann::json::parse(out.bytes, nullptr, false);
    if (doc.is_object() && doc.contains("mediaType") && doc["mediaType"].is_string())
      out.media_type = doc["mediaType"].get<std::string>();
    if (out.media_type.empty()) {
      std::string type = response.header("content-type").value_or("");
      out.media_type = type.substr(0, type.find(';'));
    }
    if (out.media_type.empty() && doc.is_object())
      out.media_type = doc.contains("manifests") ? media::kOciIndex : media::kOciManifest;
    return out;
  });
}

std::optional<Digest> RegistryClient::head_manifest(const std::string& repository,
                                                    const std::string& tag_or_digest) {
  Impl& impl = *impl_;
  std::string what = fmt::format("check manifest `{}/{}:{}`", impl.domain, repository, tag_or_digest);
  return impl.with_retries([&]() -> std::optional<Digest> {
    HttpRequest request;
    request.method = "HEAD";
    request.url = impl.url(fmt::format("/v2/{}/manifests/{}", repository, tag_or_digest));
    request.what = what;
    request.headers.push_back(manifest_accept_header());
    HttpResponse response = impl.send(request, pull_scope(repository), nullptr);
    if (response.status == 404) return std::nullopt;
    if (!is_success(response.status)) throw_registry_error(what, response);
    if (auto reported = response.header("docker-content-digest")) return Digest::parse(*reported);
    return std::nullopt;
  });
}

std::string RegistryClient::get_blob_bytes(const std::string& repository, const Digest& digest,
                                           uint64_t max_bytes) {
  Impl& impl = *impl_;
  std::string what = fmt::format("get blob {} of `{}/{}`", digest, impl.domain, repository);
  CappedStringWriter body(max_bytes, what);
  get_blob(repository, digest, 0, body);
  if (sha256_of(body.text) != digest)
    throw InvalidInputError(fmt::format("{}: content hashes to {}", what, sha256_of(body.text)));
  return std::move(body.text);
}

void RegistryClient::get_blob(const std::string& repository, const Digest& digest, uint64_t offset,
                              Writer& out, int cancel_fd) {
  Impl& impl = *impl_;
  std::string what = fmt::format("get blob {} of `{}/{}`", digest, impl.domain, repository);
  uint64_t done = offset;
  ProgressWriter counted(out, done);
  impl.with_retries([&] {
    HttpRequest request;
    request.url = impl.url(fmt::format("/v2/{}/blobs/{}", repository, digest));
    request.what = what;
    request.range_start = done;
    request.cancel_fd = cancel_fd;
    HttpResponse response = impl.send(request, pull_scope(repository), &counted);
    if (response.status == 416 && done > 0) return;  // nothing after the offset: all is there
    if (!is_success(response.status)) throw_registry_error(what, response);
  });
}

std::optional<uint64_t> RegistryClient::blob_size(const std::string& repository, const Digest& digest) {
  Impl& impl = *impl_;
  std::string what = fmt::format("check blob {} in `{}/{}`", digest, impl.domain, repository);
  return impl.with_retries([&]() -> std::optional<uint64_t> {
    HttpRequest request;
    request.method = "HEAD";
    request.url = impl.url(fmt::format("/v2/{}/blobs/{}", repository, digest));
    request.what = what;
    HttpResponse response = impl.send(request, pull_scope(repository), nullptr);
    if (response.status == 404) return std::nullopt;
    if (!is_success(response.status)) throw_registry_error(what, response);
    return response.content_length.value_or(0);
  });
}

BlobUpload RegistryClient::put_blob(const std::string& repository, const Digest& digest, uint64_t size,
                                    const std::function<std::unique_ptr<Reader>(uint64_t offset)>& open,
                                    const std::optional<std::string>& mount_from) {
  Impl& impl = *impl_;
  std::string what = fmt::format("push blob {} to `{}/{}`", digest, impl.domain, repository);
  std::string scope = push_scope(repository);
  // A mount needs pull access to the source too, in the same token.
  if (mount_from && *mount_from != repository) scope += " " + pull_scope(*mount_from);

  // HEAD: a blob the repository has is not sent again.
  {
    HttpRequest request;
    request.method = "HEAD";
    request.url = impl.url(fmt::format("/v2/{}/blobs/{}", repository, digest));
    request.what = what;
    HttpResponse response = impl.with_retries([&] { return impl.send(request, scope, nullptr); });
    if (is_success(response.status)) return BlobUpload::Existed;
    if (response.status != 404) throw_registry_error(what, response);
  }

  // POST: start an upload session, or mount the blob from another repository of the registry.
  auto start = [&](bool mount) -> std::pair<bool, std::string> {
    HttpRequest request;
    request.method = "POST";
    request.url = impl.url(fmt::format("/v2/{}/blobs/uploads/", repository));
    if (mount) request.url += fmt::format("?mount={}&from={}", digest, *mount_from);
    request.what = what;
    HttpResponse response = impl.with_retries([&] { return impl.send(request, scope, nullptr); });
    if (response.status == 201 && mount) return {true, ""};
    if (response.status != 202) throw_registry_error(what, response);
    auto location = response.header("location");
    if (!location)
      throw HttpError(fmt::format("{}: the registry started an upload without a Location", what), false);
    return {false, impl.absolute(*location)};
  };
  auto [mounted, location] = start(mount_from && *mount_from != repository);
  if (mounted) return BlobUpload::Mounted;

  auto with_query = [](const std::string& url, const std::string& query) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + query;
  };
  // Where the registry's copy of the upload ends, from its Range header ("0-1023"): the next offset.
  auto range_end = [](const HttpResponse& response) -> std::optional<uint64_t> {
    auto range = response.header("range");
    if (!range) return std::nullopt;
    auto dash = range->find('-');
    if (dash == std::string::npos) return std::nullopt;
    return std::strtoull(range->c_str() + dash + 1, nullptr, 10) + 1;
  };

  uint64_t offset = 0;
  int failures = 0;
  for (;;) {
    try {
      if (size <= kMonolithicMax) {
        // One PUT with the whole blob and its digest.
        std::unique_ptr<Reader> reader;
        HttpRequest request;
        request.method = "PUT";
        request.url = with_query(location, "digest=" + digest.str());
        request.what = what;
        request.headers.emplace_back("Content-Type: application/octet-stream");
        request.upload_size = size;
        HttpResponse response = impl.send(request, scope, nullptr, [&](HttpRequest& r) {
          reader = open(0);
          r.upload = reader.get();
        });
        if (response.status != 201) throw_registry_error(what, response);
        return BlobUpload::Uploaded;
      }
      while (offset < size) {
        uint64_t chunk = std::min(kChunkSize, size - offset);
        std::unique_ptr<Reader> reader;
        HttpRequest request;
        request.method = "PATCH";
        request.url = location;
        request.what = what;
        request.headers.emplace_back("Content-Type: application/octet-stream");
        request.headers.push_back(fmt::format("Content-Range: {}-{}", offset, offset + chunk - 1));
        request.upload_size = chunk;
        HttpResponse response = impl.send(request, scope, nullptr, [&](HttpRequest& r) {
          reader = open(offset);
          r.upload = reader.get();
        });
        if (response.status != 202) throw_registry_error(what, response);
        if (auto next = response.header("location")) location = impl.absolute(*next);
        offset = range_end(response).value_or(offset + chunk);
      }
      HttpRequest request;
      request.method = "PUT";
      request.url = with_query(location, "digest=" + digest.str());
      request.what = what;
      HttpResponse response = impl.send(request, scope, nullptr);
      if (response.status != 201) throw_registry_error(what, response);
      return BlobUpload::Uploaded;
    } catch (const HttpError& e) {
      if (!e.temporary() || failures >= impl.options.retries) throw;
      ++failures;
      if (impl.options.notice)
        impl.options.notice(fmt::format("{} (resuming, {} of {})", e.what(), failures, impl.options.retries));
      std::this_thread::sleep_for(impl.options.retry_base_delay * (1 << std::min(failures, 6)));
      // Where did the registry's copy get to? GET on the upload's URL says (204, Range).
      HttpRequest status;
      status.url = location;
      status.what = what;
      HttpResponse answer;
      try {
        answer = impl.send(status, scope, nullptr);
      } catch (const HttpError&) {
        continue;  // the next round fails or succeeds on its own
      }
      if (answer.status == 204 && size > kMonolithicMax) {
        if (auto next = answer.header("location")) location = impl.absolute(*next);
        offset = range_end(answer).value_or(0);
      } else {
        // The session is gone (404) or a monolithic PUT failed: start a new one.
        auto [again_mounted, again_location] = start(false);
        (void)again_mounted;
        location = again_location;
        offset = 0;
      }
    }
  }
}

Digest RegistryClient::put_manifest(const std::string& repository, const std::string& tag_or_digest,
                                    std::string_view bytes, std::string_view media_type) {
  Impl& impl = *impl_;
  std::string what = fmt::format("push manifest `{}/{}:{}`", impl.domain, repository, tag_or_digest);
  Digest digest = sha256_of(bytes);
  HttpResponse response = impl.with_retries([&] {
    HttpRequest request;
    request.method = "PUT";
    request.url = impl.url(fmt::format("/v2/{}/manifests/{}", repository, tag_or_digest));
    request.what = what;
    request.headers.push_back(fmt::format("Content-Type: {}", media_type));
    StringReader reader(bytes);
    request.upload_size = bytes.size();
    return impl.send(request, push_scope(repository), nullptr, [&](HttpRequest& r) {
      reader = StringReader(bytes);
      r.upload = &reader;
    });
  });
  if (response.status != 201 && !is_success(response.status)) throw_registry_error(what, response);
  if (auto reported = response.header("docker-content-digest")) {
    if (auto d = Digest::parse(*reported); d && *d != digest)
      throw InvalidInputError(
          fmt::format("{}: the registry stored digest {}, kiln sent {}", what, *reported, digest));
  }
  return digest;
}

std::vector<std::string> RegistryClient::list_tags(const std::string& repository) {
  Impl& impl = *impl_;
  std::string what = fmt::format("list tags of `{}/{}`", impl.domain, repository);
  std::vector<std::string> tags;
  std::string next = impl.url(fmt::format("/v2/{}/tags/list?n=1000", repository));
  for (int page = 0; !next.empty(); ++page) {
    if (page > 100000) throw HttpError(fmt::format("{}: more than 100000 pages", what), false);
    CappedStringWriter body(16 << 20, what);
    HttpRequest request;
    request.url = next;
    request.what = what;
    HttpResponse response = impl.with_retries([&] {
      body.text.clear();
      return impl.send(request, pull_scope(repository), &body);
    });
    if (!is_success(response.status)) throw_registry_error(what, response);
    auto doc = nlohmann::json::parse(body.text, nullptr, false);
    if (!doc.is_object()) throw InvalidInputError(fmt::format("{}: the answer is not JSON", what));
    if (doc.contains("tags") && doc["tags"].is_array()) {
      for (const auto& tag : doc["tags"])
        if (tag.is_string()) tags.push_back(tag.get<std::string>());
    }
    // Link: </v2/name/tags/list?n=1000&last=x>; rel="next"
    next.clear();
    if (auto link = response.header("link"); link && link->find("rel=\"next\"") != std::string::npos) {
      auto open = link->find('<'), close = link->find('>');
      if (open != std::string::npos && close != std::string::npos && close > open)
        next = impl.absolute(link->substr(open + 1, close - open - 1));
    }
  }
  return tags;
}

}  // namespace kiln::registry
