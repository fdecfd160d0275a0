// Where the credentials for a registry come from, and how `kiln login` / `kiln logout` keep them.
// The files are the ones Docker and podman read, in their formats, so that a login made with one
// tool serves the others:
//
//   1. kiln's own auth file, which `kiln login` writes: Docker's `{"auths": {...}}` format, so it
//      can be handed to podman or skopeo with --authfile (and read as they read it: a key may be a
//      repository, "quay.io/org/app", to hold that repository's credentials);
//   2. Docker's config.json: its credential helper for that registry (`credHelpers`), else its
//      default helper (`credsStore`), else its `auths` entries;
//   3. podman's auth files ($REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json, then
//      ~/.config/containers/auth.json), read as podman reads them.
//
// The first that holds credentials for the registry wins. Neither secrets nor tokens appear in any
// message this file produces: errors name the file, the key or the helper, never the content.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::registry {

struct Credential {
  std::string username;
  std::string password;
  // An OAuth2 refresh token (Docker's "identitytoken"; what a helper answers for the user name
  // "<token>"): traded at the registry's token server instead of a password.
  std::string identity_token;

  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
  bool operator==(const Credential&) const = default;
};

struct FoundCredential {
  Credential credential;
  // Where it came from, for messages (never the secret):
  // "`/root/.docker/config.json` (credHelpers: pass)", "`/root/.config/kiln/auth.json`".
  std::string source;
};

// The files and the helper search path that the lookup uses. from_environment() gives the real
// ones; tests point them at a temporary directory. An empty path is skipped.
struct CredentialPaths {
  // $KILN_AUTH_FILE, else $XDG_CONFIG_HOME/kiln/auth.json, else ~/.config/kiln/auth.json.
  std::string kiln_auth_file;
  // $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
  std::string docker_config_file;
  // $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json (/run/containers/UID/auth.json
  // without it); then $XDG_CONFIG_HOME/containers/auth.json (~/.config/…): podman's order.
  std::vector<std::string> containers_auth_files;
  // Where `docker-credential-NAME` is looked for: a PATH-style list ($PATH).
  std::string helper_search_path;
  // A helper that has not answered in this time is killed, and the lookup fails.
  std::chrono::milliseconds helper_timeout{std::chrono::seconds(30)};

  // Reads the environment (getenv only; HOME from the password database when unset).
  static CredentialPaths from_environment();
};

// kiln's own auth file, as from_environment() finds it ("" when neither KILN_AUTH_FILE,
// XDG_CONFIG_HOME nor a home directory is known).
std::string auth_file_path();

// The credentials for `registry_host` ("ghcr.io", "myreg:5000"; for Docker Hub any of docker.io,
// index.docker.io, registry-1.docker.io), searched in the order above; `repository`
// ("library/busybox"), when given, lets a repository's own entry in kiln's or podman's files win
// over the registry's. nullopt when no source has any.
//
// A file that does not exist is skipped. A credential helper that is not on the search path, or
// answers "credentials not found in native keychain", has none (the search goes on). Throws
// InvalidInputError naming the file for a file that is not what Docker would read (bad JSON, an
// `auth` that is not base64 of user:password), Error naming the helper for one that fails, times
// out or answers nonsense, SystemError for a file that cannot be read.
std::optional<FoundCredential> find_credential(const CredentialPaths& paths, std::string_view registry_host,
                                               std::string_view repository = {});

// The key that `kiln login SERVER` stores under, as Docker and podman write it: Docker Hub's
// ("docker.io", "index.docker.io", "https://index.docker.io/v1/"…) is Docker's
// "https://index.docker.io/v1/"; a URL becomes its host ("https://myreg:5000/v2/" ->
// "myreg:5000"); a name without a scheme keeps its path, a repository key as podman's
// ("quay.io/org/app", and "docker.io/org/app" for Docker Hub). Throws UsageError for an empty
// name or one with spaces or control characters.
std::string credential_key(std::string_view server);

// `kiln login`: stores `credential` in paths.kiln_auth_file under credential_key(server),
// replacing the entries that name the same registry (or repository) in another spelling, keeping
// everything else in the file, unknown fields too. The file is written with mode 0600 (its
// directory created 0700) under a temporary name, fsynced, and renamed over the old one.
// Throws UsageError for a user name with `:` (it could not be read back) or a credential with
// neither user name nor identity token, InvalidInputError when the existing file is malformed
// (it is left alone), SystemError when it cannot be written.
void store_credential(const CredentialPaths& paths, std::string_view server, const Credential& credential);

// `kiln logout`: removes the entries for credential_key(server) from paths.kiln_auth_file, in any
// spelling, written back as store_credential writes. Returns false when there was none (the file
// is then untouched). Throws as store_credential does.
bool remove_credential(const CredentialPaths& paths, std::string_view server);

}  // namespace kiln::registry
