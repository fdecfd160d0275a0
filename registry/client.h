// The registry v2 / OCI distribution client: one RegistryClient per registry host, safe to use from
// several threads at once (a pull's parallel downloads, a push's parallel uploads). It finds the
// scheme (https, or http for a registry named insecure), answers the registry's auth challenges
// (Basic, or Bearer tokens from the token server, cached per scope until they expire), retries what
// can succeed on another try, with exponential backoff and jitter, and checks every digest.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/digest.h"
#include "layerstore/io.h"
#include "layerstore/reference.h"
#include "registry/credentials.h"
#include "registry/errors.h"

namespace kiln::registry {

// How to reach registries: kiln's global flags and config file (registry/config.h reads them).
struct RegistryOptions {
  // --tls-verify: nullopt leaves it to the registry's entry in insecure_registries (Docker's rule:
  // 127.0.0.0/8 and ::1 are insecure unless configured otherwise).
  std::optional<bool> tls_verify;
  // Docker's daemon.json insecure-registries: "host[:port]" or a CIDR. An insecure registry is
  // tried over https without verification, then over plain http.
  std::vector<std::string> insecure_registries;
  // --cert-dir; else /etc/containers/certs.d/HOST and /etc/docker/certs.d/HOST: *.crt are CAs,
  // *.cert with *.key a client certificate.
  std::string cert_dir;
  std::vector<std::string> certs_d_roots = {"/etc/containers/certs.d", "/etc/docker/certs.d"};
  // registry-mirrors (kiln's config file): tried in order before Docker Hub itself for docker.io
  // images; a mirror that fails is passed over.
  std::vector<std::string> mirrors;
  // --retry: how many times a failed request is tried again (connection errors, 5xx, 429).
  int retries = 3;
  std::chrono::milliseconds retry_base_delay{200};
  std::chrono::seconds stall_timeout{60};
  // Where credentials come from (registry/credentials.h); tests point it elsewhere.
  CredentialPaths credential_paths = CredentialPaths::from_environment();
  // Explicit credentials (`--creds`, `kiln login`'s check): used instead of any file's.
  std::optional<Credential> credential;
  // Called with a line worth telling the user (a retry, a fallback); may be empty.
  std::function<void(const std::string&)> notice;
};

// An answer of the registry that says no, with what it said: `errors[].code` and `.message` of the
// distribution spec's error body when it sent one.
class RegistryError : public HttpStatusError {
 public:
  RegistryError(const std::string& what, int status, std::string body, std::string code,
                std::optional<std::chrono::seconds> retry_after)
      : HttpStatusError(what, status, std::move(body)), code_(std::move(code)), retry_after_(retry_after) {}
  // The first error code ("MANIFEST_UNKNOWN", "DENIED", …); empty when the body had none.
  const std::string& code() const { return code_; }
  const std::optional<std::chrono::seconds>& retry_after() const { return retry_after_; }

 private:
  std::string code_;
  std::optional<std::chrono::seconds> retry_after_;
};

struct FetchedManifest {
  std::string bytes;  // exactly as served: its digest is the manifest's
  std::string media_type;
  Digest digest;
};

enum class BlobUpload { Existed, Mounted, Uploaded };

class RegistryClient {
 public:
  // `domain` as references name it ("docker.io", "127.0.0.1:5000"): docker.io is served by
  // registry-1.docker.io, and its credentials are stored under Docker Hub's key.
  RegistryClient(std::string domain, RegistryOptions options);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  const std::string& domain() const;

  // GET /v2/: the registry answers, and the credentials (if any) are accepted. For `kiln login`.
  void check_login();

  // The manifest or index a tag or digest names, with Accept for the OCI and Docker types. Verified
  // against the digest asked for (or the one the registry reports). Refused above 4 MiB.
  FetchedManifest get_manifest(const std::string& repository, const std::string& tag_or_digest);
  // The digest a tag points at now (HEAD), nullopt when the registry has no such tag.
  std::optional<Digest> head_manifest(const std::string& repository, const std::string& tag_or_digest);
  // A small blob (a config), verified, at most max_bytes.
  std::string get_blob_bytes(const std::string& repository, const Digest& digest, uint64_t max_bytes);
  // Streams the blob into `out` from `offset` on (a Range request; a registry that ignores Range
  // gets its first `offset` bytes skipped). Retries resume where the last try stopped. `out` sees
  // bytes from `offset` on, each once; it checks size and digest itself. Once `cancel_fd` turns
  // readable the download stops within a second (an HttpError, not retried).
  void get_blob(const std::string& repository, const Digest& digest, uint64_t offset, Writer& out,
                int cancel_fd = -1);
  // The blob's size when the repository has it (HEAD), nullopt when not.
  std::optional<uint64_t> blob_size(const std::string& repository, const Digest& digest);

  // Makes the blob exist in `repository`: nothing when it does already; mounted from
  // `mount_from` (a repository of the same registry) when the registry can; otherwise uploaded,
  // monolithically when small and in chunks when large, resuming after an interruption from the
  // offset the registry reports. `open(offset)` gives the blob's bytes from offset on.
  BlobUpload put_blob(const std::string& repository, const Digest& digest, uint64_t size,
                      const std::function<std::unique_ptr<Reader>(uint64_t offset)>& open,
                      const std::optional<std::string>& mount_from = std::nullopt);
  // PUTs the manifest's exact bytes under `tag_or_digest`; returns their digest (checked against
  // the one the registry reports).
  Digest put_manifest(const std::string& repository, const std::string& tag_or_digest, std::string_view bytes,
                      std::string_view media_type);
  // Every tag of the repository, following the Link header's pages.
  std::vector<std::string> list_tags(const std::string& repository);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The accept list for manifests: OCI and Docker, indexes and single images.
std::string manifest_accept_header();

// Whether `domain` ("host[:port]") is spoken to without TLS verification (and over plain http when
// https fails): --tls-verify when given, else Docker's rule (127.0.0.0/8, ::1, localhost) and the
// insecure-registries entries (a host[:port], or an IPv4 CIDR holding the host's address).
bool registry_is_insecure(std::string_view domain, const RegistryOptions& options);

// A registry's error body (the distribution spec's `{"errors":[{"code","message"}]}`) in Docker's
// words, "manifest unknown: manifest unknown", with the first code ("MANIFEST_UNKNOWN"); both empty
// when the body is not one.
std::pair<std::string, std::string> registry_error_text(std::string_view body);

}  // namespace kiln::registry
