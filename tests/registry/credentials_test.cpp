#include "registry/credentials.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "registry/base64.h"

using Catch::Matchers::Contains;
using kiln::registry::base64_encode;
using kiln::registry::Credential;
using kiln::registry::credential_key;
using kiln::registry::CredentialPaths;
using kiln::registry::find_credential;
using kiln::registry::remove_credential;
using kiln::registry::store_credential;

namespace {

// A home of its own for each test: the auth files and a bin directory for credential helpers, in a
// temporary directory (scripts run from it, hence not /dev/shm, which may be mounted noexec).
struct Home {
  kiln::TempDir dir{std::filesystem::temp_directory_path().string(), "kiln-credentials-test-"};
  CredentialPaths paths;
  std::string kiln_file = dir.path() + "/config/kiln/auth.json";
  std::string docker_file = dir.path() + "/docker/config.json";
  std::string podman_file = dir.path() + "/run/containers/auth.json";

  Home() {
    paths.kiln_auth_file = kiln_file;
    paths.docker_config_file = docker_file;
    paths.containers_auth_files = {podman_file, dir.path() + "/config/containers/auth.json"};
    paths.helper_search_path = dir.path() + "/nothing-here:" + dir.path() + "/bin";
  }

  void write(const std::string& path, const std::string& text) {
    kiln::make_dirs(path.substr(0, path.rfind('/')));
    kiln::write_file_atomic(path, text);
  }
  // docker-credential-NAME: a shell script.
  void helper(const std::string& name, const std::string& script) {
    std::string path = dir.path() + "/bin/docker-credential-" + name;
    write(path, "#!/bin/sh\n" + script);
    REQUIRE(::chmod(path.c_str(), 0755) == 0);
  }
  nlohmann::json read(const std::string& path) {
    return nlohmann::json::parse(kiln::read_file_capped(path, 1 << 20, path));
  }
  // The path that messages show, replaced by `HOME` so that tests compare whole messages.
  std::string shown(std::string message) {
    for (size_t at; (at = message.find(dir.path())) != std::string::npos;)
      message.replace(at, dir.path().size(), "HOME");
    return message;
  }
};

std::string auths(const std::string& key, const std::string& user, const std::string& password) {
  return nlohmann::json{{"auths", {{key, {{"auth", base64_encode(user + ":" + password)}}}}}}.dump();
}

// The message of the kiln::Error that `f` throws ("" when none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "";
}

// The username found for a host (and repository), "" for none.
std::string user_for(const Home& home, std::string_view host, std::string_view repository = {}) {
  auto found = find_credential(home.paths, host, repository);
  return found ? found->credential.username : "";
}

// A helper that tells which server it was asked about in the user name.
constexpr const char* kEchoHelper = R"(server=$(cat)
[ "$1" = get ] || exit 9
printf '{"ServerURL":"%s","Username":"user-for-%s","Secret":"s3cret-helper"}\n' "$server" "$server"
)";

}  // namespace

TEST_CASE("credentials: nothing when no file exists", "[credentials]") {
  Home home;
  CHECK_FALSE(find_credential(home.paths, "ghcr.io").has_value());
  CredentialPaths none;
  CHECK_FALSE(find_credential(none, "ghcr.io").has_value());
}

TEST_CASE("credentials: kiln's own file", "[credentials]") {
  Home home;
  home.write(home.kiln_file, auths("ghcr.io", "octo", "s3cret-kiln"));
  auto found = find_credential(home.paths, "ghcr.io");
  REQUIRE(found);
  CHECK(found->credential.username == "octo");
  CHECK(found->credential.password == "s3cret-kiln");
  CHECK(found->credential.identity_token.empty());
  CHECK(home.shown(found->source) == "`HOME/config/kiln/auth.json`");
  CHECK_FALSE(find_credential(home.paths, "quay.io"));
  // A host given as a URL is its host.
  CHECK(user_for(home, "https://ghcr.io/") == "octo");
}

TEST_CASE("credentials: Docker's auths entries, in every form Docker reads", "[credentials]") {
  Home home;
  home.write(home.docker_file, R"({
    "auths": {
      "fields.example": {"username": "fielduser", "password": "s3cret-fields"},
      "token.example": {"identitytoken": "s3cret-refresh"},
      "https://url.example/v1/": {"auth": ")" +
                                   base64_encode("urluser:pw") + R"("},
      "http://plain.example:5000": {"auth": ")" +
                                   base64_encode("plainuser:pw") + R"("},
      "nul.example": {"auth": ")" + base64_encode(std::string("nuluser:pw\0\0", 12)) +
                                   R"("},
      "helper-managed.example": {},
      "legacy.example/some/path": {"auth": ")" +
                                   base64_encode("legacyuser:pw") + R"("}
    },
    "HttpHeaders": {"User-Agent": "x"}
  })");
  auto fields = find_credential(home.paths, "fields.example");
  REQUIRE(fields);
  CHECK(fields->credential.password == "s3cret-fields");
  CHECK(home.shown(fields->source) == "`HOME/docker/config.json`");
  auto token = find_credential(home.paths, "token.example");
  REQUIRE(token);
  CHECK(token->credential.identity_token == "s3cret-refresh");
  CHECK(token->credential.username.empty());
  CHECK(user_for(home, "url.example") == "urluser");
  CHECK(user_for(home, "plain.example:5000") == "plainuser");
  CHECK(user_for(home, "plain.example") == "");
  CHECK(find_credential(home.paths, "nul.example")->credential.password == "pw");
  CHECK_FALSE(find_credential(home.paths, "helper-managed.example"));
  // Docker's ConvertToHostname keeps the host of any key.
  CHECK(user_for(home, "legacy.example") == "legacyuser");
}

TEST_CASE("credentials: Docker Hub under each of its names", "[credentials]") {
  Home home;
  SECTION("Docker's own key") {
    home.write(home.docker_file, auths("https://index.docker.io/v1/", "hubuser", "pw"));
    for (const char* host : {"docker.io", "index.docker.io", "registry-1.docker.io"})
      CHECK(user_for(home, host) == "hubuser");
  }
  SECTION("other spellings") {
    for (const char* key :
         {"docker.io", "index.docker.io", "registry-1.docker.io", "https://registry-1.docker.io/v2/"}) {
      home.write(home.docker_file, auths(key, "hubuser", "pw"));
      INFO(key);
      CHECK(user_for(home, "docker.io") == "hubuser");
      CHECK(user_for(home, "registry-1.docker.io") == "hubuser");
    }
  }
  SECTION("Docker's key wins over the others") {
    home.write(home.docker_file, R"({"auths": {
      "docker.io": {"auth": ")" + base64_encode("other:pw") +
                                     R"("},
      "https://index.docker.io/v1/": {"auth": ")" +
                                     base64_encode("preferred:pw") + R"("}}})");
    CHECK(user_for(home, "registry-1.docker.io") == "preferred");
  }
  SECTION("podman's key") {
    home.write(home.podman_file, auths("docker.io", "podmanuser", "pw"));
    CHECK(user_for(home, "registry-1.docker.io", "library/busybox") == "podmanuser");
  }
  CHECK(user_for(home, "quay.io") == "");
}

TEST_CASE("credentials: podman's auth files, scoped to a repository", "[credentials]") {
  Home home;
  home.write(home.podman_file, R"({"auths": {
    "quay.io": {"auth": ")" + base64_encode("registry-wide:pw") +
                                   R"("},
    "quay.io/org": {"auth": ")" + base64_encode("org-wide:pw") +
                                   R"("},
    "quay.io/org/app": {"auth": ")" +
                                   base64_encode("app-only:pw") + R"("},
    "docker.io/library": {"auth": ")" +
                                   base64_encode("hub-library:pw") + R"("},
    "other.example/team": {"auth": ")" +
                                   base64_encode("team:pw") + R"("}}})");
  CHECK(user_for(home, "quay.io", "org/app") == "app-only");
  CHECK(user_for(home, "quay.io", "org/app/") == "app-only");
  CHECK(user_for(home, "quay.io", "org/tool") == "org-wide");
  CHECK(user_for(home, "quay.io", "org/app2") == "org-wide");
  CHECK(user_for(home, "quay.io", "orgx/app") == "registry-wide");
  CHECK(user_for(home, "quay.io") == "registry-wide");
  CHECK(user_for(home, "registry-1.docker.io", "library/busybox") == "hub-library");
  CHECK(user_for(home, "docker.io", "someone/busybox") == "");
  // A repository's key is not the registry's.
  CHECK(user_for(home, "other.example") == "");
  CHECK(user_for(home, "other.example", "team/app") == "team");
  // The persistent file is read after the runtime one.
  home.write(home.paths.containers_auth_files[1], auths("persistent.example", "persisted", "pw"));
  CHECK(user_for(home, "persistent.example") == "persisted");
  CHECK(home.shown(find_credential(home.paths, "persistent.example")->source) ==
        "`HOME/config/containers/auth.json`");
}

TEST_CASE("credentials: kiln's file, then Docker's, then podman's", "[credentials]") {
  Home home;
  home.write(home.kiln_file, auths("reg.example", "from-kiln", "pw"));
  home.write(home.docker_file, auths("reg.example", "from-docker", "pw"));
  home.write(home.podman_file, auths("reg.example", "from-podman", "pw"));
  CHECK(user_for(home, "reg.example") == "from-kiln");
  std::filesystem::remove(home.kiln_file);
  CHECK(user_for(home, "reg.example") == "from-docker");
  std::filesystem::remove(home.docker_file);
  CHECK(user_for(home, "reg.example") == "from-podman");
  // An empty entry is no credential: the search goes on.
  home.write(home.kiln_file, R"({"auths": {"reg.example": {}}})");
  CHECK(user_for(home, "reg.example") == "from-podman");
}

TEST_CASE("credentials: Docker's credential helpers", "[credentials]") {
  Home home;
  home.helper("test", kEchoHelper);

  SECTION("credHelpers, with the server on stdin") {
    home.write(home.docker_file, R"({"credHelpers": {"myreg:5000": "test"},
                                     "auths": {"myreg:5000": {"auth": ")" +
                                     base64_encode("from-auths:pw") + R"("}}})");
    auto found = find_credential(home.paths, "myreg:5000");
    REQUIRE(found);
    CHECK(found->credential.username == "user-for-myreg:5000");
    CHECK(found->credential.password == "s3cret-helper");
    CHECK(home.shown(found->source) == "`HOME/docker/config.json` (credHelpers: test)");
    CHECK(user_for(home, "other.example") == "");
  }
  SECTION("Docker Hub's helper is asked for Docker's key") {
    home.write(home.docker_file, R"({"credHelpers": {"https://index.docker.io/v1/": "test"}})");
    CHECK(user_for(home, "registry-1.docker.io") == "user-for-https://index.docker.io/v1/");
  }
  SECTION("credsStore, unless credHelpers names another") {
    home.helper("other", R"(cat >/dev/null; echo '{"Username":"from-other","Secret":"x"}')");
    home.write(home.docker_file, R"({"credsStore": "test", "credHelpers": {"b.example": "other"}})");
    auto found = find_credential(home.paths, "a.example");
    REQUIRE(found);
    CHECK(found->credential.username == "user-for-a.example");
    CHECK(home.shown(found->source) == "`HOME/docker/config.json` (credsStore: test)");
    CHECK(user_for(home, "b.example") == "from-other");
  }
  SECTION("an identity token") {
    home.helper("token",
                R"(cat >/dev/null; echo '{"ServerURL":"x","Username":"<token>","Secret":"s3cret-refresh"}')");
    home.write(home.docker_file, R"({"credsStore": "token"})");
    auto found = find_credential(home.paths, "a.example");
    REQUIRE(found);
    CHECK(found->credential.username.empty());
    CHECK(found->credential.password.empty());
    CHECK(found->credential.identity_token == "s3cret-refresh");
  }
  SECTION("not found in the keychain, or no helper: the search goes on") {
    home.helper("empty", R"(cat >/dev/null; echo "credentials not found in native keychain"; exit 1)");
    home.write(home.podman_file, auths("a.example", "from-podman", "pw"));
    for (const char* helper : {"empty", "missing"}) {
      INFO(helper);
      home.write(home.docker_file, R"({"credsStore": ")" + std::string(helper) + R"(", "auths": {"b.example":
                                       {"auth": ")" +
                                       base64_encode("from-auths:pw") + R"("}}})");
      CHECK(user_for(home, "a.example") == "from-podman");
      CHECK(user_for(home, "b.example") == "from-auths");
      CHECK(user_for(home, "c.example") == "");
    }
  }
  SECTION("a helper that says nothing, on exit status 0") {
    home.helper("blank", R"(cat >/dev/null; echo '{"ServerURL":"","Username":"","Secret":""}')");
    home.write(home.docker_file, R"({"credsStore": "blank"})");
    CHECK_FALSE(find_credential(home.paths, "a.example"));
  }
  SECTION("a helper with much to say on both outputs does not deadlock") {
    home.helper("chatty", R"(head -c 300000 /dev/zero | tr '\0' x >&2
printf '{"Username":"chatty","Secret":"'; head -c 200000 /dev/zero | tr '\0' y; printf '"}'
)");
    home.write(home.docker_file, R"({"credsStore": "chatty"})");
    auto found = find_credential(home.paths, "a.example");
    REQUIRE(found);
    CHECK(found->credential.username == "chatty");
    CHECK(found->credential.password == std::string(200000, 'y'));
  }
}

TEST_CASE("credentials: a helper that fails is an error naming it, never the secret", "[credentials]") {
  Home home;
  auto failing = [&](const std::string& script) {
    home.helper("test", script);
    home.write(home.docker_file, R"({"credHelpers": {"myreg": "test"}})");
    return home.shown(error_of([&] { find_credential(home.paths, "myreg"); }));
  };
  const std::string what =
      "get credentials for `myreg` with `docker-credential-test` (credHelpers in `HOME/docker/config.json`)";
  CHECK(failing("cat >/dev/null; echo 'pass store is uninitialized'; exit 1") ==
        what + ": exit status 1: pass store is uninitialized");
  CHECK(failing("cat >/dev/null; echo 'not on stdout' >&2; exit 4") ==
        what + ": exit status 4: not on stdout");
  CHECK(failing("exit 3") == what + ": exit status 3");
  CHECK(failing("cat >/dev/null; kill -KILL $$") == what + ": killed by signal 9");
  // Output that may hold the secret is never shown.
  CHECK(failing(R"(cat >/dev/null; echo '{"Username":"u","Secret":"s3cret-leak"}'; exit 1)") ==
        what + ": exit status 1");
  CHECK(failing(R"(cat >/dev/null; echo '{"Username":"u","Secret":"s3cret-leak"')") ==
        what + ": the answer is not a JSON object");
  CHECK(failing(R"(cat >/dev/null; echo '{"Username":"u","Secret":["s3cret-leak"]}')") ==
        what + ": `Secret` in the answer is not a string");

  home.paths.helper_timeout = std::chrono::milliseconds(300);
  auto start = std::chrono::steady_clock::now();
  CHECK(failing("exec sleep 20") == what + ": no answer within 300 ms; stopped it");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  // One that closes its outputs and lingers is stopped too.
  CHECK(failing("exec >&- 2>&- <&-; exec sleep 20") == what + ": no answer within 300 ms; stopped it");

  home.write(home.docker_file, R"({"credsStore": "../evil"})");
  CHECK(home.shown(error_of([&] { find_credential(home.paths, "myreg"); })) ==
        "read `HOME/docker/config.json`: credsStore `../evil` is not a helper name");
}

TEST_CASE("credentials: malformed files are errors naming the file, never the content", "[credentials]") {
  Home home;
  auto error_with = [&](const std::string& path, const std::string& text) {
    home.write(path, text);
    std::string message = home.shown(error_of([&] { find_credential(home.paths, "myreg", "ns/app"); }));
    CHECK_THAT(message, !Contains("s3cret") && !Contains(base64_encode("user:s3cret")));
    std::filesystem::remove(path);
    return message;
  };
  for (const std::string& file : {home.kiln_file, home.docker_file, home.podman_file}) {
    std::string shown = home.shown(file);
    INFO(shown);
    CHECK(error_with(file, R"({"auths": {"myreg": {"auth": "s3cret)") ==
          "read `" + shown + "`: not valid JSON (at byte 37)");
    CHECK(error_with(file, R"(["s3cret"])") == "read `" + shown + "`: not a JSON object");
    CHECK(error_with(file, R"({"auths": ["s3cret"]})") ==
          "read `" + shown + "`: `auths` is not a JSON object");
    CHECK(error_with(file, R"({"auths": {"myreg": "s3cret"}})") ==
          "read `" + shown + "`: auths `myreg`: not a JSON object");
    CHECK(error_with(file, R"({"auths": {"myreg": {"auth": "s3cret!!"}}})") ==
          "read `" + shown + "`: auths `myreg`: `auth` is not valid base64");
    CHECK(error_with(file, R"({"auths": {"myreg": {"auth": ")" + base64_encode("s3cret") + R"("}}})") ==
          "read `" + shown + "`: auths `myreg`: `auth` does not hold `user:password`");
    CHECK(error_with(file, R"({"auths": {"myreg": {"auth": ")" + base64_encode(":s3cret") + R"("}}})") ==
          "read `" + shown + "`: auths `myreg`: `auth` does not hold `user:password`");
    CHECK(error_with(file, R"({"auths": {"myreg": {"password": ["s3cret"]}}})") ==
          "read `" + shown + "`: auths `myreg`: `password` is not a string");
  }
  CHECK(error_with(home.docker_file, R"({"credHelpers": {"myreg": 1}})") ==
        "read `HOME/docker/config.json`: credHelpers `myreg`: not a string");
  CHECK(error_with(home.docker_file, R"({"credsStore": {"s3cret": 1}})") ==
        "read `HOME/docker/config.json`: `credsStore` is not a string");
  // An entry for another registry is not looked at.
  home.write(home.docker_file, R"({"auths": {"other": {"auth": "!!"}}})");
  CHECK_FALSE(find_credential(home.paths, "myreg"));
}

TEST_CASE("credentials: the key that login stores under", "[credentials]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"docker.io", "https://index.docker.io/v1/"},
      {"index.docker.io", "https://index.docker.io/v1/"},
      {"registry-1.docker.io", "https://index.docker.io/v1/"},
      {"https://index.docker.io/v1/", "https://index.docker.io/v1/"},
      {"https://registry-1.docker.io/v2/", "https://index.docker.io/v1/"},
      {"ghcr.io", "ghcr.io"},
      {"https://myreg:5000/", "myreg:5000"},
      {"http://myreg:5000/v2/", "myreg:5000"},
      {"myreg:5000/", "myreg:5000"},
      {"quay.io/org/app", "quay.io/org/app"},
      {"quay.io/org/", "quay.io/org"},
      {"docker.io/library/busybox", "docker.io/library/busybox"},
      {"index.docker.io/someone", "docker.io/someone"},
  };
  for (const auto& [server, key] : cases) {
    INFO(server);
    CHECK(credential_key(server) == key);
  }
  for (const char* bad : {"", "https://", "/path", "my reg", "reg\n"}) {
    INFO(bad);
    CHECK_THROWS_AS(credential_key(bad), kiln::UsageError);
  }
  CHECK(error_of([] { credential_key("my reg"); }) == "invalid registry name `my reg`");
}

TEST_CASE("credentials: login stores in kiln's file, mode 0600, and keeps the rest", "[credentials]") {
  Home home;
  store_credential(home.paths, "https://myreg:5000/", Credential{"alice", "s3cret-a", ""});
  struct stat st {};
  REQUIRE(::stat(home.kiln_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat((home.dir.path() + "/config/kiln").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  CHECK(home.read(home.kiln_file) == nlohmann::json::parse(R"({"auths": {"myreg:5000": {"auth": ")" +
                                                           base64_encode("alice:s3cret-a") + R"("}}})"));
  auto found = find_credential(home.paths, "myreg:5000");
  REQUIRE(found);
  CHECK(found->credential.password == "s3cret-a");

  // Other entries and fields stay; other spellings of the same registry go.
  home.write(home.kiln_file, R"({"auths": {
      "keep.example": {"auth": ")" +
                                 base64_encode("keep:pw") + R"(", "email": "k@example.com"},
      "index.docker.io": {"auth": ")" +
                                 base64_encode("old:pw") + R"("},
      "https://index.docker.io/v1/": {"auth": ")" +
                                 base64_encode("old:pw") + R"(", "note": "kept"},
      "docker.io/library": {"auth": ")" +
                                 base64_encode("scoped:pw") + R"("}},
    "credHelpers": {"x": "y"}, "unknown": [1, 2]})");
  store_credential(home.paths, "docker.io", Credential{"bob", "s3cret-b", ""});
  nlohmann::json doc = home.read(home.kiln_file);
  CHECK(doc["credHelpers"] == nlohmann::json{{"x", "y"}});
  CHECK(doc["unknown"] == nlohmann::json{1, 2});
  CHECK(doc["auths"].size() == 3);
  CHECK(doc["auths"]["keep.example"]["email"] == "k@example.com");
  CHECK(doc["auths"]["https://index.docker.io/v1/"] ==
        nlohmann::json{{"auth", base64_encode("bob:s3cret-b")}, {"note", "kept"}});
  CHECK(user_for(home, "registry-1.docker.io") == "bob");
  CHECK(user_for(home, "registry-1.docker.io", "library/busybox") == "scoped");
  CHECK(user_for(home, "keep.example") == "keep");

  // An identity token, read back.
  store_credential(home.paths, "ghcr.io", Credential{"", "", "s3cret-refresh"});
  CHECK(home.read(home.kiln_file)["auths"]["ghcr.io"] == nlohmann::json{{"identitytoken", "s3cret-refresh"}});
  CHECK(find_credential(home.paths, "ghcr.io")->credential.identity_token == "s3cret-refresh");

  CHECK(error_of([&] {
          store_credential(home.paths, "ghcr.io", Credential{"a:b", "s3cret", ""});
        }) == "store credentials for `ghcr.io`: the user name contains `:`");
  CHECK(error_of([&] {
          store_credential(home.paths, "ghcr.io", Credential{"", "s3cret", ""});
        }) == "store credentials for `ghcr.io`: no user name");
  // A file that cannot be read is left alone.
  home.write(home.kiln_file, "{not json");
  CHECK(home.shown(error_of([&] {
    store_credential(home.paths, "ghcr.io", Credential{"a", "s3cret", ""});
  })) == "read `HOME/config/kiln/auth.json`: not valid JSON (at byte 3)");
  CHECK(kiln::read_file_capped(home.kiln_file, 100, "") == "{not json");
}

TEST_CASE("credentials: logins at the same time each keep their entry", "[credentials]") {
  Home home;
  constexpr int kThreads = 4, kEach = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        store_credential(home.paths, fmt::format("reg{}-{}.example", t, i), Credential{"u", "p", ""});
    });
  }
  for (std::thread& thread : threads) thread.join();
  // Each login reads the file, adds its entry and writes it back: without the lock around that,
  // most of them would be lost.
  CHECK(home.read(home.kiln_file).at("auths").size() == kThreads * kEach);
}

TEST_CASE("credentials: logout removes every spelling and nothing else", "[credentials]") {
  Home home;
  CHECK_FALSE(remove_credential(home.paths, "docker.io"));
  home.write(home.kiln_file, R"({"auths": {
      "keep.example": {"auth": ")" +
                                 base64_encode("keep:pw") + R"("},
      "docker.io": {"auth": ")" + base64_encode("a:pw") +
                                 R"("},
      "https://index.docker.io/v1/": {"auth": ")" +
                                 base64_encode("b:pw") + R"("},
      "docker.io/library": {"auth": ")" +
                                 base64_encode("scoped:pw") + R"("}},
    "unknown": true})");
  ::chmod(home.kiln_file.c_str(), 0644);
  CHECK(remove_credential(home.paths, "https://index.docker.io/v1/"));
  nlohmann::json doc = home.read(home.kiln_file);
  CHECK(doc["unknown"] == true);
  CHECK(doc["auths"].size() == 2);
  CHECK(doc["auths"].contains("keep.example"));
  CHECK(doc["auths"].contains("docker.io/library"));
  struct stat st {};
  REQUIRE(::stat(home.kiln_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK_FALSE(remove_credential(home.paths, "docker.io"));
  CHECK(remove_credential(home.paths, "docker.io/library"));
  CHECK(remove_credential(home.paths, "https://keep.example"));
  CHECK(home.read(home.kiln_file) == nlohmann::json::parse(R"({"auths": {}, "unknown": true})"));
  CHECK_FALSE(remove_credential(home.paths, "keep.example"));
}
