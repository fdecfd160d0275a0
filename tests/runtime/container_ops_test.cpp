#include "runtime/container_ops.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "layerstore/files.h"
#include "layerstore/io.h"
#include "tests/skip.h"

using kiln::runtime::Change;
using kiln::runtime::diff_layer;
using kiln::runtime::LayerView;
using kiln::runtime::merge_config;
using nlohmann::json;

namespace {

// Test files need no fsync.
void write(const std::string& path, std::string_view content) {
  kiln::write_file_atomic(path, content, kiln::Durability::Volatile);
}

bool can_make_whiteouts() {
  return ::geteuid() == 0;
}

void whiteout(const std::string& path) {
  REQUIRE(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
}

void opaque(const std::string& dir) {
  REQUIRE(::setxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0) == 0);
}

// A lower layer stack and an upper directory under one temporary directory.
struct Layers {
  kiln::TempDir dir{"/tmp", "kiln-container-ops-test-"};
  std::string lower1 = dir.path() + "/lower1";  // bottom
  std::string lower2 = dir.path() + "/lower2";
  std::string upper = dir.path() + "/upper";
  Layers() {
    for (const auto& d : {lower1, lower2, upper}) kiln::make_dirs(d);
  }
  std::vector<Change> diff() const {
    LayerView view({lower2, lower1});
    kiln::Fd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd.valid());
    return diff_layer(fd.get(), view);
  }
};

}  // namespace

TEST_CASE("merge_config: Docker's merge of --change (or run flags) over a container's config") {
  json base = {{"Cmd", {"sh"}},
               {"Entrypoint", {"/init"}},
               {"Env", {"PATH=/bin", "A=1"}},
               {"WorkingDir", "/w"},
               {"User", "app"},
               {"Labels", {{"a", "1"}, {"b", "2"}}},
               {"ExposedPorts", {{"80/tcp", json::object()}}},
               {"Hostname", "abc"},
               {"OnBuild", {"RUN x"}}};
  SECTION("nothing set: the base's fields, not the ones Docker leaves out") {
    json merged = merge_config(json::object(), base);
    CHECK(merged["Cmd"] == json({"sh"}));
    CHECK(merged["Entrypoint"] == json({"/init"}));
    CHECK(merged["Env"] == json({"PATH=/bin", "A=1"}));
    CHECK(merged["WorkingDir"] == "/w");
    CHECK(merged["User"] == "app");
    CHECK_FALSE(merged.contains("Hostname"));
    CHECK_FALSE(merged.contains("OnBuild"));
  }
  SECTION("Cmd set: Entrypoint still the base's") {
    json merged = merge_config({{"Cmd", {"cat", "/new"}}}, base);
    CHECK(merged["Cmd"] == json({"cat", "/new"}));
    CHECK(merged["Entrypoint"] == json({"/init"}));
  }
  SECTION("Entrypoint set: the base's Cmd is dropped") {
    json merged = merge_config({{"Entrypoint", {"/other"}}}, base);
    CHECK(merged["Entrypoint"] == json({"/other"}));
    CHECK_FALSE(merged.contains("Cmd"));
  }
  SECTION("Entrypoint [\"\"] (--entrypoint \"\") keeps both of the base's out") {
    json merged = merge_config({{"Entrypoint", {""}}}, base);
    CHECK(merged["Entrypoint"] == json({""}));
    CHECK_FALSE(merged.contains("Cmd"));
  }
  SECTION("Env, Labels and ports merge, the user's values first and winning") {
    json merged = merge_config(
        {{"Env", {"A=2", "B"}}, {"Labels", {{"a", "9"}}}, {"ExposedPorts", {{"443/tcp", json::object()}}}},
        base);
    CHECK(merged["Env"] == json({"A=2", "B", "PATH=/bin"}));
    CHECK(merged["Labels"] == json({{"a", "9"}, {"b", "2"}}));
    CHECK(merged["ExposedPorts"].size() == 2);
  }
  SECTION("a base that is not an object changes nothing") {
    CHECK(merge_config({{"Cmd", {"x"}}}, json()) == json({{"Cmd", {"x"}}}));
  }
}

TEST_CASE("diff_layer: added and changed entries, directories shown as Docker shows parents") {
  Layers l;
  kiln::make_dirs(l.lower1 + "/etc");
  write(l.lower1 + "/etc/passwd", "root\n");
  kiln::make_dirs(l.lower1 + "/usr/lib");
  write(l.lower2 + "/a-b", "");
  // upper: a new file, a changed one, new directories, and a copied-up directory with no change.
  write(l.upper + "/new", "x");
  kiln::make_dirs(l.upper + "/etc");
  write(l.upper + "/etc/passwd", "root\ny\n");
  kiln::make_dirs(l.upper + "/d/e");
  kiln::make_dirs(l.upper + "/usr/lib");
  write(l.upper + "/a-b", "changed");
  kiln::make_dirs(l.upper + "/a");
  write(l.upper + "/a/c", "");
  std::vector<Change> expected = {{'A', "/a"},   {'A', "/a/c"}, {'C', "/a-b"},        {'A', "/d"},
                                  {'A', "/d/e"}, {'C', "/etc"}, {'C', "/etc/passwd"}, {'A', "/new"}};
  CHECK(l.diff() == expected);

  // A mode change shows the directory itself.
  REQUIRE(::chmod((l.upper + "/usr/lib").c_str(), 0700) == 0);
  expected.push_back({'C', "/usr"});
  expected.push_back({'C', "/usr/lib"});
  CHECK(l.diff() == expected);
}

TEST_CASE("diff_layer: whiteouts and opaque directories") {
  if (!can_make_whiteouts()) KILN_SKIP("overlay whiteouts need CAP_MKNOD and trusted.* xattrs");
  Layers l;
  kiln::make_dirs(l.lower1 + "/bin");
  write(l.lower1 + "/bin/vi", "");
  write(l.lower1 + "/bin/sh", "");
  kiln::make_dirs(l.lower1 + "/var/empty");
  write(l.lower1 + "/var/old", "");
  kiln::make_dirs(l.lower2 + "/var");
  write(l.lower2 + "/var/newer", "");
  whiteout(l.lower2 + "/var/old");  // already gone below: no D for it
  kiln::make_dirs(l.upper + "/bin");
  whiteout(l.upper + "/bin/vi");
  kiln::make_dirs(l.upper + "/var");
  opaque(l.upper + "/var");
  write(l.upper + "/var/motd", "");

  LayerView view({l.lower2, l.lower1});
  CHECK(view.list({"var"}) == std::vector<std::string>{"empty", "newer"});
  CHECK_FALSE(view.lookup({"var", "old"}));
  CHECK(view.lookup({"bin", "vi"}));

  std::vector<Change> expected = {{'C', "/bin"},       {'D', "/bin/vi"},   {'C', "/var"},
                                  {'D', "/var/empty"}, {'A', "/var/motd"}, {'D', "/var/newer"}};
  CHECK(l.diff() == expected);
}
