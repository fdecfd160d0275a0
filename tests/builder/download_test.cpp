#include "builder/download.h"

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

// The names are Go 1.19's, as BuildKit's Dockerfile frontend computes them (path.Base of
// url.Parse's Path, `__unnamed__` for "." and "/"), except for "..", which BuildKit would use as
// the name and kiln does not.
TEST_CASE("a URL's file is named as BuildKit names it", "[download]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"https://example.com/tool.tgz", "tool.tgz"},
      {"https://example.com/a/b/c.tar.gz?x=1#frag", "c.tar.gz"},
      {"https://example.com/dir/", "dir"},
      {"https://example.com/", "__unnamed__"},
      {"https://example.com", "__unnamed__"},
      {"https://example.com?q=1", "__unnamed__"},
      {"https://example.com/a%20b.txt", "a b.txt"},
      {"https://example.com/a%2Fb", "b"},
      {"https://example.com/a%zz", "__unnamed__"},
      {"https://example.com/./", "__unnamed__"},
      {"https://example.com/a/..", "__unnamed__"},  // Go: ".."
      {"https://example.com//", "__unnamed__"},
      {"http://127.0.0.1:8080/files/hello.txt", "hello.txt"},
      {"https://example.com/%E2%9C%93.txt", "\u2713.txt"},
      {"https://example.com/a#b/c", "a"},
      {"https://user:pw@example.com/x.bin", "x.bin"},
      {"https://example.com/nul%00name", "__unnamed__"},
  };
  for (const auto& [url, name] : cases) {
    INFO(url);
    CHECK(kiln::builder::url_file_name(url) == name);
  }
}
