#include "registry/auth_challenge.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

using kiln::registry::AuthChallenge;
using kiln::registry::parse_auth_challenges;

namespace {

using Params = std::map<std::string, std::string>;

AuthChallenge challenge(std::string scheme, Params params, std::string token68 = {}) {
  return AuthChallenge{std::move(scheme), std::move(params), std::move(token68)};
}

std::vector<AuthChallenge> parse(const std::string& line) {
  return parse_auth_challenges({line});
}

}  // namespace

namespace Catch {
template <>
struct StringMaker<AuthChallenge> {
  static std::string convert(const AuthChallenge& c) {
    std::string out = c.scheme + "{";
    for (const auto& [k, v] : c.params) out += k + "=" + v + ";";
    return out + "}" + (c.token68.empty() ? "" : " " + c.token68);
  }
};
}  // namespace Catch

TEST_CASE("WWW-Authenticate: what registries send", "[auth_challenge]") {
  // Docker Hub.
  CHECK(parse(R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",)"
              R"(scope="repository:library/busybox:pull")") ==
        std::vector{challenge("bearer", {{"realm", "https://auth.docker.io/token"},
                                         {"service", "registry.docker.io"},
                                         {"scope", "repository:library/busybox:pull"}})});
  // GHCR.
  CHECK(
      parse(R"(Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull")") ==
      std::vector{challenge("bearer", {{"realm", "https://ghcr.io/token"},
                                       {"service", "ghcr.io"},
                                       {"scope", "repository:user/image:pull"}})});
  // docker/distribution's own registry with htpasswd.
  CHECK(parse(R"(Basic realm="Registry Realm")") ==
        std::vector{challenge("basic", {{"realm", "Registry Realm"}})});
  // A push that the token does not cover, with several scopes and an error.
  CHECK(parse(R"(Bearer realm="https://auth.example.com/token",service="registry.example.com",)"
              R"(scope="repository:a/b:pull,push repository:c/d:pull",error="insufficient_scope")") ==
        std::vector{challenge("bearer", {{"realm", "https://auth.example.com/token"},
                                         {"service", "registry.example.com"},
                                         {"scope", "repository:a/b:pull,push repository:c/d:pull"},
                                         {"error", "insufficient_scope"}})});
}

TEST_CASE("WWW-Authenticate: case, spaces, escapes and tokens", "[auth_challenge]") {
  CHECK(parse(R"(BEARER Realm="https://a/token", SERVICE="Svc")") ==
        std::vector{challenge("bearer", {{"realm", "https://a/token"}, {"service", "Svc"}})});
  CHECK(parse(R"(  Basic   realm = "r" ,  charset="UTF-8"  )") ==
        std::vector{challenge("basic", {{"realm", "r"}, {"charset", "UTF-8"}})});
  CHECK(parse(R"(Basic realm="a \"quoted\" \\ realm")") ==
        std::vector{challenge("basic", {{"realm", R"(a "quoted" \ realm)"}})});
  CHECK(parse(R"(Basic realm=simple)") == std::vector{challenge("basic", {{"realm", "simple"}})});
  CHECK(parse(R"(Basic realm="")") == std::vector{challenge("basic", {{"realm", ""}})});
  CHECK(parse("Basic") == std::vector{challenge("basic", {})});
  CHECK(parse("Negotiate abc+/def==") == std::vector{challenge("negotiate", {}, "abc+/def==")});
  // The last of a repeated param wins, as in distribution's map.
  CHECK(parse(R"(Bearer realm="a",realm="b")") == std::vector{challenge("bearer", {{"realm", "b"}})});
}

TEST_CASE("WWW-Authenticate: several challenges, in one line or several", "[auth_challenge]") {
  CHECK(parse(R"(Basic realm="a", Bearer realm="b",service="s")") ==
        std::vector{challenge("basic", {{"realm", "a"}}),
                    challenge("bearer", {{"realm", "b"}, {"service", "s"}})});
  CHECK(parse(R"(Negotiate, Basic realm="x")") ==
        std::vector{challenge("negotiate", {}), challenge("basic", {{"realm", "x"}})});
  CHECK(parse(R"(Negotiate abc==, Basic realm="x",, , Bearer)") ==
        std::vector{challenge("negotiate", {}, "abc=="), challenge("basic", {{"realm", "x"}}),
                    challenge("bearer", {})});
  CHECK(
      parse_auth_challenges({R"(Bearer realm="https://a/token")", R"(Basic realm="b")"}) ==
      std::vector{challenge("bearer", {{"realm", "https://a/token"}}), challenge("basic", {{"realm", "b"}})});
  CHECK(parse_auth_challenges({}).empty());
  CHECK(parse_auth_challenges({"", "  "}).empty());
}

TEST_CASE("WWW-Authenticate: malformed input keeps what came before the error", "[auth_challenge]") {
  // Unterminated quoted string: the param is dropped, the challenge kept.
  CHECK(parse(R"(Bearer realm="https://a/token",service="unterminated)") ==
        std::vector{challenge("bearer", {{"realm", "https://a/token"}})});
  CHECK(parse(R"(Bearer realm="a\)") == std::vector{challenge("bearer", {})});
  // A value that is not a token (`:` is a separator) ends the line where distribution ends it.
  CHECK(parse(R"(Bearer scope=repository:a:pull,realm="r")") ==
        std::vector{challenge("bearer", {{"scope", "repository"}})});
  CHECK(parse(R"(Bearer service="s",realm=)") == std::vector{challenge("bearer", {{"service", "s"}})});
  // Alone, `realm=` has the form of a token68.
  CHECK(parse(R"(Bearer realm=)") == std::vector{challenge("bearer", {}, "realm=")});
  CHECK(parse(R"(Bearer realm="a" service="b")") == std::vector{challenge("bearer", {{"realm", "a"}})});
  CHECK(parse(R"(Bearer foo bar)") == std::vector{challenge("bearer", {})});
  // The scheme read before the error stays, as in distribution.
  CHECK(parse(R"(Bearer;realm="a")") == std::vector{challenge("bearer", {})});
  CHECK(parse(R"(="a")").empty());
  CHECK(parse("\"Bearer\"").empty());
  CHECK(parse("B\xc3\xa9"
              "arer realm=x") == std::vector{challenge("b", {})});
  // Whatever the bytes, parsing ends without a crash (run under the sanitizers in CI).
  std::string noise;
  for (int i = 0; i < 2000; ++i) noise.push_back(static_cast<char>((i * 7919) % 256));
  for (size_t cut = 0; cut < noise.size(); cut += 97) {
    std::vector<std::string> lines = {noise.substr(cut), "Bearer " + noise.substr(cut),
                                      "Basic realm=\"" + noise.substr(cut)};
    CHECK_NOTHROW(parse_auth_challenges(lines));
  }
}
