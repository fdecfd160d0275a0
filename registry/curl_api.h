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
// One libcrypto: libcurl.so.4 brings libssl.so.3 and libcrypto.so.3, and they are the only OpenSSL
// in the process. kiln's own hashing (SHA-256 of every blob) runs on nettle, which libarchive links
// already and which uses the same SHA-NI instructions at the same speed, so kiln links no libcrypto
// of its own. Two copies would each keep their own state (error queues, providers, RNG), and a
// library whose calls split between them misbehaves in ways no test finds; with one there is
// nothing to keep apart. The other way round (libcurl and libssl statically on kiln's static
// libcrypto) is not on offer: Debian's libcurl.a needs GSSAPI, LDAP and libssh2 as shared libraries,
// and libssh2.so.1 brings libcrypto.so.3 back. Shared libcrypto linked by kiln itself would be
// loaded at every start, 1.6-3.5 ms here, for commands that download nothing.
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
  decltype(&::curl_easy_escape) easy_escape;
  decltype(&::curl_share_init) share_init;
  decltype(&::curl_share_setopt) share_setopt;
  decltype(&::curl_share_cleanup) share_cleanup;
};

// Loads libcurl.so.4 and runs curl_global_init, once per process; later calls return the same
// table. Throws HttpError ("load libcurl: …") when the library is missing, lacks a function, or is
// older than 7.85 (kiln restricts protocols with CURLOPT_PROTOCOLS_STR); the next call tries again.
// Never unloaded: libcurl's resolver threads and OpenSSL's exit handlers outlive any one client.
const CurlApi& curl_api();

}  // namespace kiln::registry
