#include "registry/client.h"

#include <catch2/catch.hpp>

using kiln::registry::registry_error_text;
using kiln::registry::registry_is_insecure;
using kiln::registry::RegistryOptions;

TEST_CASE("which registries are insecure: Docker's loopback rule, the config's list, --tls-verify",
          "[registry]") {
  RegistryOptions options;
  CHECK(registry_is_insecure("127.0.0.1:5000", options));
  CHECK(registry_is_insecure("127.10.0.3", options));
  CHECK(registry_is_insecure("localhost:5000", options));
  CHECK(registry_is_insecure("[::1]:5000", options));
  CHECK_FALSE(registry_is_insecure("128.0.0.1:5000", options));
  CHECK_FALSE(registry_is_insecure("docker.io", options));
  CHECK_FALSE(registry_is_insecure("ghcr.io", options));
  CHECK_FALSE(registry_is_insecure("10.1.2.3:5000", options));

  options.insecure_registries = {"10.0.0.0/8", "reg.lan:5000", "192.168.1.0/24"};
  CHECK(registry_is_insecure("10.1.2.3:5000", options));
  CHECK(registry_is_insecure("10.1.2.3", options));
  CHECK(registry_is_insecure("reg.lan:5000", options));
  CHECK_FALSE(registry_is_insecure("reg.lan:5001", options));
  CHECK(registry_is_insecure("192.168.1.200", options));
  CHECK_FALSE(registry_is_insecure("192.168.2.1", options));
  CHECK_FALSE(registry_is_insecure("11.0.0.1", options));

  options.tls_verify = true;
  CHECK_FALSE(registry_is_insecure("127.0.0.1:5000", options));
  CHECK_FALSE(registry_is_insecure("reg.lan:5000", options));
  options.tls_verify = false;
  CHECK(registry_is_insecure("ghcr.io", options));
}

TEST_CASE("a registry's error body in Docker's words", "[registry]") {
  auto [text, code] = registry_error_text(
      R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]})");
  CHECK(text == "manifest unknown: manifest unknown");
  CHECK(code == "MANIFEST_UNKNOWN");
  std::tie(text, code) = registry_error_text(
      R"({"errors":[{"code":"DENIED","message":"requested access to the resource is denied"},{"code":"UNAUTHORIZED"}]})");
  CHECK(text == "denied: requested access to the resource is denied; unauthorized");
  CHECK(code == "DENIED");
  CHECK(registry_error_text("<html>502 Bad Gateway</html>").first.empty());
  CHECK(registry_error_text(R"({"errors":[]})").first.empty());
  CHECK(registry_error_text(R"({"errors":"nope"})").first.empty());
  CHECK(registry_error_text("").first.empty());
}
