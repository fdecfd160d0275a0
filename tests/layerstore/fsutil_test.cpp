#include "layerstore/fsutil.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

TEST_CASE("split_on is Go's strings.Split", "[fsutil]") {
  using V = std::vector<std::string>;
  CHECK(kiln::split_on("a/b/c", '/') == V{"a", "b", "c"});
  CHECK(kiln::split_on("/a//b/", '/') == V{"", "a", "", "b", ""});
  CHECK(kiln::split_on("", ':') == V{""});
  CHECK(kiln::split_on("abc", ':') == V{"abc"});
}

TEST_CASE("paths normalize inside the root", "[fsutil]") {
  using V = std::vector<std::string>;
  CHECK(kiln::normalize_in_root("/a/./b//c/") == V{"a", "b", "c"});
  CHECK(kiln::normalize_in_root("a/../b") == V{"b"});
  CHECK_FALSE(kiln::normalize_in_root("../a"));
  CHECK(kiln::normalize_clamped("/../a/..//b") == V{"b"});
  CHECK(kiln::join_components(V{"a", "b", "c"}, 2) == "a/b");
}
