#include "registry/curl_api.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <mutex>
#include <string>

#include "registry/errors.h"

namespace kiln::registry {
namespace {

// The soname of Debian's libcurl4 (OpenSSL flavour), what libcurl4-openssl-dev links against.
constexpr const char* kLibrary = "libcurl.so.4";
// CURLOPT_PROTOCOLS_STR and CURLOPT_REDIR_PROTOCOLS_STR came with 7.85.0.
constexpr unsigned kOldest = 0x075500;

template <typename F>
void bind(void* library, F& function, const char* name) {
  void* symbol = ::dlsym(library, name);
  if (!symbol) throw HttpError(fmt::format("load libcurl: {} has no {}", kLibrary, name), false);
  function = reinterpret_cast<F>(symbol);
}

CurlApi load() {
  // RTLD_LOCAL: libcurl and what it brings (libssl, libcrypto, ...) bind among themselves and stay
  // out of the process's global scope (curl_api.h says why that matters).
  void* library = ::dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = ::dlerror();
    throw HttpError(fmt::format("load libcurl: {} (Debian's libcurl4 package)", why ? why : kLibrary), false);
  }
  CurlApi api{};
  bind(library, api.global_init, "curl_global_init");
  bind(library, api.version_info, "curl_version_info");
  bind(library, api.easy_init, "curl_easy_init");
  bind(library, api.easy_setopt, "curl_easy_setopt");
  bind(library, api.easy_perform, "curl_easy_perform");
  bind(library, api.easy_getinfo, "curl_easy_getinfo");
  bind(library, api.easy_cleanup, "curl_easy_cleanup");
  bind(library, api.easy_strerror, "curl_easy_strerror");
  bind(library, api.slist_append, "curl_slist_append");
  bind(library, api.slist_free_all, "curl_slist_free_all");
  bind(library, api.url, "curl_url");
  bind(library, api.url_set, "curl_url_set");
  bind(library, api.url_get, "curl_url_get");
  bind(library, api.url_cleanup, "curl_url_cleanup");
  bind(library, api.free, "curl_free");
  bind(library, api.easy_escape, "curl_easy_escape");
  bind(library, api.share_init, "curl_share_init");
  bind(library, api.share_setopt, "curl_share_setopt");
  bind(library, api.share_cleanup, "curl_share_cleanup");
  const curl_version_info_data* version = api.version_info(CURLVERSION_NOW);
  if (!version || version->version_num < kOldest) {
    throw HttpError(
        fmt::format("load libcurl: version {} is older than 7.85.0", version ? version->version : "?"),
        false);
  }
  CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) throw HttpError(fmt::format("set up libcurl: {}", api.easy_strerror(rc)), false);
  return api;
}

}  // namespace

const CurlApi& curl_api() {
  static CurlApi api;
  static std::once_flag once;
  // A failure throws out of call_once, which lets the next caller try again.
  std::call_once(once, [] { api = load(); });
  return api;
}

}  // namespace kiln::registry
