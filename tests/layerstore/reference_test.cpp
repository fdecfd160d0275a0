#include "layerstore/reference.h"

#include <catch2/catch.hpp>
#include <random>
#include <regex>

#include "layerstore/errors.h"

using kiln::Reference;

TEST_CASE("references normalise as Docker does", "[reference]") {
  struct Case {
    const char* input;
    const char* full;
    const char* familiar;
  };
  const Case cases[] = {
      {"busybox", "docker.io/library/busybox:latest", "busybox:latest"},
      {"busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"},
      {"user/app", "docker.io/user/app:latest", "user/app:latest"},
      {"docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"},
      {"index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"},
      {"localhost/app", "localhost/app:latest", "localhost/app:latest"},
      {"localhost:5000/team/app:v1.2", "localhost:5000/team/app:v1.2", "localhost:5000/team/app:v1.2"},
      {"registry.example.com/a/b/c:t", "registry.example.com/a/b/c:t", "registry.example.com/a/b/c:t"},
      {"127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"},
      {"[::1]:5000/x:y", "[::1]:5000/x:y", "[::1]:5000/x:y"},
      {"a__b/c-d/e.f:Tag_1", "docker.io/a__b/c-d/e.f:Tag_1", "a__b/c-d/e.f:Tag_1"},
  };
  for (const auto& c : cases) {
    INFO(c.input);
    Reference r = Reference::parse(c.input);
    CHECK(r.str() == c.full);
    CHECK(r.familiar() == c.familiar);
  }
}

TEST_CASE("references with digests", "[reference]") {
  const std::string d = "sha256:" + std::string(64, 'b');
  Reference r = Reference::parse("busybox@" + d);
  CHECK_FALSE(r.tag());
  REQUIRE(r.digest());
  CHECK(r.str() == "docker.io/library/busybox@" + d);
  Reference both = Reference::parse("busybox:1@" + d);
  CHECK(both.tag() == "1");
  CHECK_THROWS_AS(Reference::parse_tagged("busybox@" + d), kiln::InvalidInputError);
}

TEST_CASE("invalid references are refused with the reason", "[reference]") {
  CHECK_THROWS_WITH(Reference::parse("Busybox"),
                    "invalid reference format `Busybox`: repository name must be lowercase");
  CHECK_THROWS_WITH(Reference::parse(""), "invalid reference format ``: empty reference");
  CHECK_THROWS_WITH(Reference::parse("a//b"), "invalid reference format `a//b`: empty path component");
  CHECK_THROWS_WITH(Reference::parse("a/-b"), "invalid reference format `a/-b`: invalid path component `-b`");
  CHECK_THROWS_WITH(Reference::parse("busybox:-x"),
                    "invalid reference format `busybox:-x`: invalid tag `-x`");
  CHECK_THROWS_WITH(Reference::parse("busybox:" + std::string(129, 'a')), Catch::Contains("invalid tag"));
  CHECK_THROWS_WITH(Reference::parse("busybox@sha256:abc"), Catch::Contains("invalid digest"));
  CHECK_THROWS_WITH(Reference::parse(std::string(300, 'a')), Catch::Contains("more than 255 characters"));
  CHECK_THROWS_WITH(Reference::parse("bad_host.com:x5000/a"), Catch::Contains("invalid registry host"));
}

// The hand-written matchers against the distribution grammar's own regular expressions, on random
// strings over the characters that matter to each.
TEST_CASE("reference grammar matches distribution's regular expressions", "[reference]") {
  const std::regex path_component("[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*");
  const std::regex tag("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
  const std::regex domain(
      "(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
      "(?:\\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?");
  std::mt19937 random(20261128);
  auto random_string = [&](std::string_view alphabet, size_t max_length) {
    std::string s(std::uniform_int_distribution<size_t>(0, max_length)(random), ' ');
    for (char& c : s) c = alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(random)];
    return s;
  };
  for (int i = 0; i < 20000; ++i) {
    std::string component = random_string("ab0._-", 8);
    INFO("path component `" << component << "`");
    CHECK(Reference::try_parse("repo/" + component).has_value() ==
          std::regex_match(component, path_component));

    std::string t = random_string("aZ9_.-:", 6);
    INFO("tag `" << t << "`");
    if (t.find(':') == std::string::npos) {
      CHECK(Reference::try_parse("repo:" + t).has_value() == std::regex_match(t, tag));
    }

    std::string host = random_string("aZ0-.:[]f", 10);
    INFO("host `" << host << "`");
    if (host.find('/') == std::string::npos &&
        (host.find_first_of(".:") != std::string::npos || host.find('Z') != std::string::npos)) {
      bool parses = Reference::try_parse(host + "/repo").has_value();
      // A colon after the last slash would be a tag: only hosts the reference reads as a host.
      CHECK(parses == std::regex_match(host, domain));
    }
  }
}
