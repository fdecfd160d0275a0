#include "runtime/capabilities.h"

#include <catch2/catch.hpp>

#include "layerstore/errors.h"

using kiln::runtime::capability_mask;
using kiln::runtime::default_capabilities;
using kiln::runtime::resolve_capabilities;
using Caps = std::vector<std::string>;

TEST_CASE("Docker's default capability set", "[capabilities]") {
  Caps caps = default_capabilities();
  CHECK(caps.size() == 14);
  // Docker's documented default mask, as /proc/self/status shows it in a default container.
  CHECK(capability_mask(caps) == 0x00000000a80425fbULL);
}

TEST_CASE("cap-add and cap-drop resolve as Docker resolves them", "[capabilities]") {
  Caps base = default_capabilities();
  CHECK(resolve_capabilities(base, {}, {}, false) == base);
  Caps dropped = resolve_capabilities(base, {}, {"chown", "CAP_KILL"}, false);
  CHECK(dropped.size() == 12);
  CHECK(std::find(dropped.begin(), dropped.end(), "CAP_CHOWN") == dropped.end());
  Caps added = resolve_capabilities(base, {"sys_admin"}, {}, false);
  CHECK(added.back() == "CAP_SYS_ADMIN");
  CHECK(resolve_capabilities(base, {"NET_ADMIN"}, {"ALL"}, false) == Caps{"CAP_NET_ADMIN"});
  Caps all_but = resolve_capabilities(base, {"all"}, {"SYS_ADMIN"}, false);
  CHECK(all_but.size() == kiln::runtime::all_capabilities().size() - 1);
  CHECK(resolve_capabilities(base, {}, {"ALL"}, true) == kiln::runtime::all_capabilities());
  // Adding one already granted does not list it twice.
  CHECK(resolve_capabilities(base, {"CHOWN"}, {}, false) == base);
}

TEST_CASE("an unknown capability is an error naming it", "[capabilities]") {
  CHECK_THROWS_WITH(resolve_capabilities(default_capabilities(), {"SYS_EVERYTHING"}, {}, false),
                    "unknown capability: `SYS_EVERYTHING`");
}
