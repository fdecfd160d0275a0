#include "runtime/spec.h"

#include <catch2/catch.hpp>

#include "layerstore/errors.h"

using kiln::IdMap;
using kiln::runtime::add_user_namespace;
using kiln::runtime::default_spec;
using kiln::runtime::user_namespace_id_map;
using nlohmann::json;

TEST_CASE("user_namespace_id_map: the spec's maps, host ID to container ID") {
  json spec = default_spec("rootfs");
  CHECK_FALSE(user_namespace_id_map(spec).has_value());

  add_user_namespace(spec,
                     json::array({{{"containerID", 0}, {"hostID", 1001}, {"size", 1}},
                                  {{"containerID", 1}, {"hostID", 100000}, {"size", 65536}}}),
                     json::array({{{"containerID", 0}, {"hostID", 1002}, {"size", 1}}}));
  std::optional<IdMap> map = user_namespace_id_map(spec);
  REQUIRE(map.has_value());
  CHECK(map->container_uid(1001) == 0);
  CHECK(map->container_uid(100000) == 1);
  CHECK(map->container_uid(100999) == 1000);
  CHECK(map->container_uid(165535) == 65536);
  CHECK(map->container_uid(165536) == kiln::kOverflowId);
  CHECK(map->container_uid(0) == kiln::kOverflowId);
  CHECK(map->container_gid(1002) == 0);
  CHECK(map->container_gid(100999) == kiln::kOverflowId);  // gids have only the own-ID map

  SECTION("a user namespace without maps shows every owner as the overflow ID") {
    spec["linux"].erase("uidMappings");
    spec["linux"].erase("gidMappings");
    std::optional<IdMap> empty = user_namespace_id_map(spec);
    REQUIRE(empty.has_value());
    CHECK(empty->container_uid(1001) == kiln::kOverflowId);
  }
  SECTION("a map entry that is not three IDs is refused, naming it") {
    spec["linux"]["gidMappings"][0]["hostID"] = -1;
    CHECK_THROWS_AS(user_namespace_id_map(spec), kiln::InvalidInputError);
    CHECK_THROWS_WITH(user_namespace_id_map(spec),
                      R"(gidMappings: entry {"containerID":0,"hostID":-1,"size":1}: hostID is not an ID)");
  }
}
