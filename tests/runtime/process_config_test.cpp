#include "runtime/process_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/io.h"

using kiln::runtime::combine_command;
using kiln::runtime::ExecUser;
using kiln::runtime::resolve_user;
using kiln::runtime::working_dir;
using nlohmann::json;
using Strings = std::vector<std::string>;
using Gids = std::vector<std::uint32_t>;

namespace {

void write(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  REQUIRE(out.good());
}

// A root filesystem with etc/ and whatever passwd and group it is given.
struct Rootfs {
  kiln::TempDir dir{"/tmp", "kiln-process-test-"};
  kiln::Fd fd;

  Rootfs() {
    kiln::make_dirs(dir.path() + "/etc");
    fd = kiln::Fd(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd.valid());
  }
  Rootfs(std::string_view passwd, std::string_view group) : Rootfs() {
    write(dir.path() + "/etc/passwd", passwd);
    write(dir.path() + "/etc/group", group);
  }
  ExecUser resolve(std::string_view user, const Strings& group_add = {}) const {
    return resolve_user(fd.get(), user, group_add);
  }
};

constexpr std::string_view kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    "bob:x:1001:1001::/home/bob:/bin/sh\n"
    "twin:x:1000:1000::/home/twin:/bin/sh\n";
constexpr std::string_view kGroup =
    "root:x:0:root\n"
    "wheel:x:10:root,alice\n"
    "alice:x:1000:\n"
    "bob:x:1001:\n"
    "staff:x:50:alice,bob\n"
    "#hidden:x:60:alice\n"
    "audio:x:29:\n";

}  // namespace

// ---- Command ------------------------------------------------------------------------------------

TEST_CASE("the command is the image's Entrypoint and Cmd, with the arguments replacing Cmd", "[process]") {
  json config = {{"Entrypoint", {"/entry", "-v"}}, {"Cmd", {"serve", "--port=80"}}};
  CHECK(combine_command(config, std::nullopt, {}) == Strings{"/entry", "-v", "serve", "--port=80"});
  CHECK(combine_command(config, std::nullopt, {"status"}) == Strings{"/entry", "-v", "status"});
  // Cmd alone, as most images have it.
  CHECK(combine_command(json{{"Cmd", {"/bin/sh"}}}, std::nullopt, {}) == Strings{"/bin/sh"});
  CHECK(combine_command(json{{"Cmd", {"/bin/sh"}}}, std::nullopt, {"ls", "-l"}) == Strings{"ls", "-l"});
  // Null and absent fields are the same as empty ones.
  CHECK(combine_command(json{{"Entrypoint", nullptr}, {"Cmd", {"x"}}}, std::nullopt, {}) == Strings{"x"});
  CHECK(combine_command(json(nullptr), std::nullopt, {"x"}) == Strings{"x"});
}

TEST_CASE("--entrypoint replaces Entrypoint and drops the image's Cmd", "[process]") {
  json config = {{"Entrypoint", {"/entry"}}, {"Cmd", {"serve"}}};
  CHECK(combine_command(config, std::string("/bin/sh"), {}) == Strings{"/bin/sh"});
  CHECK(combine_command(config, std::string("/bin/sh"), {"-c", "id"}) == Strings{"/bin/sh", "-c", "id"});
  // --entrypoint "": no entrypoint, and the image's Cmd is still dropped.
  CHECK(combine_command(config, std::string(""), {"ls"}) == Strings{"ls"});
  CHECK_THROWS_AS(combine_command(config, std::string(""), {}), kiln::UsageError);
  CHECK_THROWS_WITH(combine_command(config, std::string(""), {}), "no command specified");
}

TEST_CASE("an image Entrypoint of [\"\"] counts as none", "[process]") {
  json config = {{"Entrypoint", {""}}, {"Cmd", {"/bin/true"}}};
  CHECK(combine_command(config, std::nullopt, {}) == Strings{"/bin/true"});
}

TEST_CASE("no command at all is an error", "[process]") {
  CHECK_THROWS_WITH(combine_command(json::object(), std::nullopt, {}), "no command specified");
  CHECK_THROWS_WITH(combine_command(json{{"Cmd", json::array()}}, std::nullopt, {}), "no command specified");
  CHECK_THROWS_AS(combine_command(json(nullptr), std::nullopt, {}), kiln::UsageError);
}

TEST_CASE("a malformed Entrypoint or Cmd is refused", "[process]") {
  CHECK_THROWS_AS(combine_command(json{{"Cmd", "/bin/sh"}}, std::nullopt, {}), kiln::InvalidInputError);
  CHECK_THROWS_WITH(combine_command(json{{"Cmd", "/bin/sh"}}, std::nullopt, {}),
                    "image config: Cmd is not an array");
  CHECK_THROWS_WITH(combine_command(json{{"Entrypoint", {1}}}, std::nullopt, {}),
                    "image config: Entrypoint holds a non-string");
  CHECK_THROWS_WITH(combine_command(json{{"Cmd", {std::string("a\0b", 3)}}}, std::nullopt, {}),
                    "image config: Cmd holds a NUL byte");
  CHECK_THROWS_WITH(combine_command(json::array(), std::nullopt, {}),
                    "image config: `config` is not an object");
}

// ---- Working directory --------------------------------------------------------------------------

TEST_CASE("the working directory: -w, else WorkingDir, else /, cleaned", "[process]") {
  CHECK(working_dir(json::object(), std::nullopt) == "/");
  CHECK(working_dir(json(nullptr), std::nullopt) == "/");
  CHECK(working_dir(json{{"WorkingDir", ""}}, std::nullopt) == "/");
  CHECK(working_dir(json{{"WorkingDir", "/srv/data/"}}, std::nullopt) == "/srv/data");
  CHECK(working_dir(json{{"WorkingDir", "/srv"}}, std::string("/a//b/./../c/")) == "/a/c");
  CHECK(working_dir(json::object(), std::string("/../..")) == "/");
  // An empty -w is no -w (the daemon only overrides with a non-empty value).
  CHECK(working_dir(json{{"WorkingDir", "/srv"}}, std::string("")) == "/srv");
}

TEST_CASE("a relative working directory is refused", "[process]") {
  CHECK_THROWS_AS(working_dir(json::object(), std::string("app")), kiln::UsageError);
  CHECK_THROWS_WITH(working_dir(json::object(), std::string("app")),
                    "the working directory 'app' is invalid, it needs to be an absolute path");
  CHECK_THROWS_AS(working_dir(json{{"WorkingDir", "app"}}, std::nullopt), kiln::InvalidInputError);
  CHECK_THROWS_WITH(working_dir(json{{"WorkingDir", "app"}}, std::nullopt),
                    "image config: the working directory 'app' is invalid, it needs to be an absolute path");
  CHECK_THROWS_WITH(working_dir(json{{"WorkingDir", 7}}, std::nullopt),
                    "image config: WorkingDir is not a string");
}
