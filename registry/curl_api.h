// libcurl, loaded when the first HTTP client is made: Debian's libcurl.so.4, opened with dlopen,
// its functions called through this table. Private to registry/.
//
// Why not linked: a kiln that links libcurl, statically or not, pays for it at every start of every
// command, downloads or not.
// - Linked statically (libcurl.a, libssl.a, and TLS's share of kiln's static libcrypto), the
//   process starts with ~430 KiB more of pointer tables to relocate (OpenSSL's providers, ciphers
//   and object table, most of it): `kiln --version` went from ~105 page faults to ~210, about
//   1.3 ms on this VM, and `kiln run`, 1.75 ms over the floor, would come to its goal's 3 ms.
//   Debian's libcurl.a also refers to GSSAPI, which krb5 ships as shared libraries only.
// - Linked as a shared library, libcurl.so.4 and its ~30 dependencies are mapped and relocated at
//   every start (what KILN_STATIC_DEPS removed).
// Loaded on first use, they cost nothing until a process downloads, and then, once, the loading and
// curl_global_init: 30-50 ms on this loaded VM, next to a download's own round trips.
//
// One libcrypto: libcurl.so.4 brings libssl.so.3 and libcrypto.so.3, and kiln links OpenSSL's
// libcrypto.a for its SHA-256 (KILN_STATIC_DEPS; a build without it links libcrypto.so.3, which
// libcurl then shares, and there is one copy). With the static build, a process that downloads
// holds both copies, and they stay apart: kiln's executable exports none of its libcrypto symbols
// (its dynamic symbol table holds four of libc's, nothing else), and the library is opened with
// RTLD_LOCAL, so every libcrypto call of libcurl, libssl and libssh2 binds within the shared copy
// and every call of kiln within its own; no OpenSSL object passes between them. What a second
// copy would break — one library's calls split between two copies with two states — cannot happen
// (tests/registry/http_test.cpp checks it).
#pragma once

#include <curl/curl.h>

namespace kiln::registry {

struct CurlApi {
  decltype(&::curl_global_init) global_init;
  decltype(&::curl_version_info) version_info;
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_perform) easy_perform;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_url) url;
  decltype(&::curl_url_set) url_set;
  decltype(&::curl_url_get) url_get;
  decltype(&::curl_url_cleanup) url_cleanup;
  decltype(&::curl_free) free;
};

// Loads libcurl.so.4 and runs curl_global_init, once per process; later calls return the same
// table. Throws HttpError ("load libcurl: …") when the library is missing, lacks a function, or is
// older than 7.85 (kiln restricts protocols with CURLOPT_PROTOCOLS_STR); the next call tries again.
// Never unloaded: libcurl's resolver threads and OpenSSL's exit handlers outlive any one client.
const CurlApi& curl_api();

}  // namespace kiln::registry
