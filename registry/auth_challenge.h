// The challenges of a 401's WWW-Authenticate header (RFC 7235), read as docker/distribution's
// registry/client/auth/challenge and containerd's remotes/docker/auth read them: what tells the
// registry client where to get a token (Bearer realm, service, scope) or that it wants Basic.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace kiln::registry {

struct AuthChallenge {
  std::string scheme;  // in lowercase: "bearer", "basic"
  // auth-params, names in lowercase, values unquoted and unescaped. When a name comes twice the last
  // value wins, as in Go's map.
  std::map<std::string, std::string> params;
  // The token68 form that some schemes use instead of params ("Negotiate abc=="); registries never
  // send one. Empty when absent.
  std::string token68;

  bool operator==(const AuthChallenge&) const = default;
};

// The challenges in `header_values`, one element per WWW-Authenticate header line, in order; a
// line may hold several challenges separated by commas (`Basic realm="a", Bearer realm="b"`).
// Never throws on malformed input: a line is read up to its first error, and what was parsed
// before that is kept (a challenge with the params read so far), as docker/distribution does.
std::vector<AuthChallenge> parse_auth_challenges(const std::vector<std::string>& header_values);

}  // namespace kiln::registry
