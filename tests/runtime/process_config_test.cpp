#include "runtime/process_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

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

// Test files need no fsync.
void write(const std::string& path, std::string_view content) {
  kiln::write_file_atomic(path, content, kiln::Durability::Volatile);
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

TEST_CASE("the entrypoint flag replaces Entrypoint and drops the image's Cmd", "[process]") {
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

// ---- User ---------------------------------------------------------------------------------------

TEST_CASE("no --user is root, with root's home and root's groups", "[process]") {
  Rootfs root(kPasswd, kGroup);
  ExecUser u = root.resolve("");
  CHECK(u.uid == 0);
  CHECK(u.gid == 0);
  // moby puts the primary gid first; then the groups listing root (root itself, and wheel).
  CHECK(u.additional_gids == Gids{0, 0, 10});
  CHECK(u.home == "/root");
  CHECK(u.name == "root");
}

TEST_CASE("a user name takes its entry's ids and the groups that list it", "[process]") {
  Rootfs root(kPasswd, kGroup);
  ExecUser u = root.resolve("alice");
  CHECK(u.uid == 1000);
  CHECK(u.gid == 1000);
  // "#hidden" lists alice too, but a "#" line in etc/group is a comment.
  CHECK(u.additional_gids == Gids{1000, 10, 50});
  CHECK(u.home == "/home/alice");
  CHECK(u.name == "alice");
  // An empty group part is no group part.
  CHECK(root.resolve("alice:").additional_gids == Gids{1000, 10, 50});
}

TEST_CASE("a number is a uid, with or without an entry", "[process]") {
  Rootfs root(kPasswd, kGroup);
  // With an entry it is that entry, supplementary groups included.
  ExecUser alice = root.resolve("1000");
  CHECK(alice.name == "alice");
  CHECK(alice.additional_gids == Gids{1000, 10, 50});
  // Without one: gid 0, home "/", no name, no supplementary groups.
  ExecUser nobody = root.resolve("4242");
  CHECK(nobody.uid == 4242);
  CHECK(nobody.gid == 0);
  CHECK(nobody.additional_gids == Gids{0});
  CHECK(nobody.home == "/");
  CHECK(nobody.name.empty());
  // Go's Atoi reads a sign and leading zeros.
  CHECK(root.resolve("+0042").uid == 42);
}

TEST_CASE("user:group forms set the gid and drop the supplementary groups", "[process]") {
  Rootfs root(kPasswd, kGroup);
  ExecUser by_names = root.resolve("alice:staff");
  CHECK(by_names.uid == 1000);
  CHECK(by_names.gid == 50);
  CHECK(by_names.additional_gids == Gids{50});
  CHECK(by_names.home == "/home/alice");
  ExecUser name_gid = root.resolve("alice:4343");
  CHECK(name_gid.gid == 4343);
  CHECK(name_gid.additional_gids == Gids{4343});
  ExecUser uid_group = root.resolve("1001:staff");
  CHECK(uid_group.uid == 1001);
  CHECK(uid_group.gid == 50);
  CHECK(uid_group.name == "bob");
  ExecUser numbers = root.resolve("4242:4343");
  CHECK(numbers.uid == 4242);
  CHECK(numbers.gid == 4343);
  CHECK(numbers.home == "/");
  // ":group" is root with that group.
  ExecUser group_only = root.resolve(":staff");
  CHECK(group_only.uid == 0);
  CHECK(group_only.gid == 50);
  CHECK(group_only.home == "/root");
}

TEST_CASE("HOME is looked up by the final uid, as runc does", "[process]") {
  Rootfs root(kPasswd, kGroup);
  // twin shares alice's uid; runc finds HOME by uid, so the first entry with 1000 gives it.
  ExecUser twin = root.resolve("twin");
  CHECK(twin.name == "twin");
  CHECK(twin.uid == 1000);
  CHECK(twin.home == "/home/alice");
}

TEST_CASE("unknown names are errors worded as Docker words them", "[process]") {
  Rootfs root(kPasswd, kGroup);
  CHECK_THROWS_AS(root.resolve("nobody"), kiln::NotFoundError);
  CHECK_THROWS_WITH(root.resolve("nobody"), "unable to find user nobody: no matching entries in passwd file");
  CHECK_THROWS_WITH(root.resolve("nobody:staff"),
                    "unable to find user nobody: no matching entries in passwd file");
  CHECK_THROWS_AS(root.resolve("alice:nogroup"), kiln::NotFoundError);
  CHECK_THROWS_WITH(root.resolve("alice:nogroup"),
                    "unable to find group nogroup: no matching entries in group file");
  CHECK_THROWS_WITH(root.resolve("alice", {"nogroup"}),
                    "unable to find group nogroup: no matching entries in group file");
  // A comment line is no group.
  CHECK_THROWS_WITH(root.resolve("alice:#hidden"),
                    "unable to find group #hidden: no matching entries in group file");
  // Everything after the first colon is the group.
  CHECK_THROWS_WITH(root.resolve("alice:staff:x"),
                    "unable to find group staff:x: no matching entries in group file");
}

TEST_CASE("ids beyond 2^31-1 are refused", "[process]") {
  Rootfs root(kPasswd, kGroup);
  const std::string range = "uids and gids must be in range 0-2147483647";
  CHECK(root.resolve("2147483647").uid == 2147483647u);
  CHECK_THROWS_AS(root.resolve("2147483648"), kiln::UsageError);
  CHECK_THROWS_WITH(root.resolve("2147483648"), range);
  CHECK_THROWS_WITH(root.resolve("-1"), range);
  CHECK_THROWS_WITH(root.resolve("99999999999999999999999"), range);
  CHECK_THROWS_WITH(root.resolve("alice:4294967296"), range);
  CHECK_THROWS_WITH(root.resolve("", {"2147483648"}), range);
  // In the files too: Docker would truncate 4294967296 to uid 0.
  Rootfs big("big:x:4294967296:0::/:/bin/sh\nneg:x:0:-5::/:/bin/sh\n", "huge:x:9999999999:big\n");
  CHECK_THROWS_AS(big.resolve("big"), kiln::InvalidInputError);
  CHECK_THROWS_WITH(big.resolve("big"), "/etc/passwd entry `big`: " + range);
  CHECK_THROWS_WITH(big.resolve("neg"), "/etc/passwd entry `neg`: " + range);
  CHECK_THROWS_WITH(big.resolve("neg:huge"), "/etc/group entry `huge`: " + range);
  CHECK_THROWS_WITH(big.resolve("0:0", {"huge"}), "/etc/group entry `huge`: " + range);
}

TEST_CASE("the group-add flag adds groups by name or number after the user's own", "[process]") {
  Rootfs root(kPasswd, kGroup);
  ExecUser u = root.resolve("bob", {"audio", "4242", "audio", "29", "wheel"});
  // bob's primary, staff (lists bob), then the added ones once each.
  CHECK(u.additional_gids == Gids{1001, 50, 29, 4242, 10});
  // A number that names a group is that group; one that does not is used as it is.
  CHECK(root.resolve("4242:4343", {"50", "7"}).additional_gids == Gids{4343, 50, 7});
}

TEST_CASE("missing passwd and group files are fine for numbers, not for names", "[process]") {
  Rootfs root;  // etc/ exists, empty
  ExecUser def = root.resolve("");
  CHECK(def.uid == 0);
  CHECK(def.gid == 0);
  CHECK(def.additional_gids == Gids{0});
  CHECK(def.home == "/");
  CHECK(def.name.empty());
  ExecUser numbers = root.resolve("1000:1000", {"5"});
  CHECK(numbers.uid == 1000);
  CHECK(numbers.gid == 1000);
  CHECK(numbers.additional_gids == Gids{1000, 5});
  CHECK_THROWS_WITH(root.resolve("alice"), "unable to find user alice: no matching entries in passwd file");
  CHECK_THROWS_WITH(root.resolve("0:staff"), "unable to find group staff: no matching entries in group file");
  CHECK_THROWS_WITH(root.resolve("", {"audio"}),
                    "unable to find group audio: no matching entries in group file");
  // No etc/ at all.
  kiln::remove_tree(root.dir.path() + "/etc");
  CHECK(root.resolve("7:8").gid == 8);
  // etc/ a file: ENOTDIR is as absent.
  write(root.dir.path() + "/etc", "not a directory");
  CHECK(root.resolve("7").uid == 7);
}

TEST_CASE("a symlinked /etc/passwd resolves inside the rootfs, never to the host's file", "[process]") {
  // A passwd file on the host, outside the rootfs, naming a user the rootfs does not have.
  kiln::TempDir host("/tmp", "kiln-process-host-");
  write(host.path() + "/passwd", "hostonly:x:777:777::/host:/bin/sh\n");
  write(host.path() + "/group", "hostgroup:x:778:hostonly\n");

  SECTION("absolute link") {
    Rootfs root;
    REQUIRE(::symlink((host.path() + "/passwd").c_str(), (root.dir.path() + "/etc/passwd").c_str()) == 0);
    REQUIRE(::symlink((host.path() + "/group").c_str(), (root.dir.path() + "/etc/group").c_str()) == 0);
    // The target does not exist inside the rootfs: as if there were no passwd file.
    CHECK_THROWS_WITH(root.resolve("hostonly"),
                      "unable to find user hostonly: no matching entries in passwd file");
    CHECK_THROWS_WITH(root.resolve("0", {"hostgroup"}),
                      "unable to find group hostgroup: no matching entries in group file");
    // The same path inside the rootfs is the one read.
    kiln::make_dirs(root.dir.path() + host.path());
    write(root.dir.path() + host.path() + "/passwd", "hostonly:x:555:556::/inside:/bin/sh\n");
    ExecUser u = root.resolve("hostonly");
    CHECK(u.uid == 555);
    CHECK(u.home == "/inside");
  }
  SECTION("relative link climbing out") {
    Rootfs root;
    std::string climb = "../../../../../../../../.." + host.path() + "/passwd";
    REQUIRE(::symlink(climb.c_str(), (root.dir.path() + "/etc/passwd").c_str()) == 0);
    CHECK_THROWS_WITH(root.resolve("hostonly"),
                      "unable to find user hostonly: no matching entries in passwd file");
  }
  SECTION("link within the rootfs") {
    Rootfs root;
    write(root.dir.path() + "/etc/passwd.real", "inside:x:321:321::/in:/bin/sh\n");
    REQUIRE(::symlink("/etc/passwd.real", (root.dir.path() + "/etc/passwd").c_str()) == 0);
    CHECK(root.resolve("inside").uid == 321);
  }
  SECTION("symlinked /etc directory") {
    Rootfs root;
    kiln::remove_tree(root.dir.path() + "/etc");
    REQUIRE(::symlink(host.path().c_str(), (root.dir.path() + "/etc").c_str()) == 0);
    CHECK_THROWS_WITH(root.resolve("hostonly"),
                      "unable to find user hostonly: no matching entries in passwd file");
  }
}

TEST_CASE("passwd and group lines are read as runc reads them", "[process]") {
  Rootfs root(
      "\n"
      "root:x:0:0:root:/root:/bin/sh\r\n"
      "   spaced:x:7:8::/sp:/bin/sh   \n"
      "garbage without colons\n"
      "short:x\n"
      "bad:x:abc:def:gecos:/bad:/bin/sh\n"
      "#comment:x:5:5::/c:/bin/sh\n"
      "\t\n"
      "last:x:9:9::/last:/bin/sh",
      "   \n"
      "# a comment\n"
      "spacers:x:70: spaced\n"
      "sp:x:71:spaced\r\n"
      "nomembers:x:72\n"
      "weird:x:abc:spaced\n"
      "tail:x:73:spaced");
  ExecUser spaced = root.resolve("spaced");
  CHECK(spaced.uid == 7);
  CHECK(spaced.gid == 8);
  CHECK(spaced.home == "/sp");
  // Members are compared exactly (" spaced" is not spaced); a gid that is no number reads as 0.
  CHECK(spaced.additional_gids == Gids{8, 71, 0, 73});
  // A line with no final newline still counts; CRLF endings are trimmed.
  CHECK(root.resolve("last").home == "/last");
  CHECK(root.resolve("root").home == "/root");
  // Fields that are missing or not numbers read as empty or 0, as runc reads them: Docker runs
  // such a user as root.
  ExecUser bad = root.resolve("bad");
  CHECK(bad.uid == 0);
  CHECK(bad.gid == 0);
  ExecUser shorter = root.resolve("short");
  CHECK(shorter.uid == 0);
  CHECK(shorter.name == "short");
  // passwd has no comment syntax: "#comment" is a user.
  CHECK(root.resolve("#comment").uid == 5);
  CHECK(root.resolve("garbage without colons").uid == 0);
}

TEST_CASE("a garbage first line of passwd is root's entry, as runc finds it", "[process]") {
  Rootfs root("garbage\nroot:x:0:0:root:/root:/bin/sh\n", "root:x:0:root\n");
  ExecUser u = root.resolve("");
  CHECK(u.name == "garbage");
  CHECK(u.home.empty());
  CHECK(u.additional_gids == Gids{0});
}

TEST_CASE("big passwd and group files are read up to a cap", "[process]") {
  std::string passwd;
  std::string group;
  for (int i = 0; i < 100000; ++i) {
    passwd += fmt::format("user{}:x:{}:{}::/home/user{}:/bin/sh\n", i, 10000 + i, 10000 + i, i);
  }
  passwd += "needle:x:424242:424242::/home/needle:/bin/sh\n";
  // One group with a member list of over a megabyte (runc allows lines up to 1 MiB; kiln has no
  // per-line limit under the file cap).
  group += "crowd:x:500:";
  for (int i = 0; i < 150000; ++i) group += fmt::format("user{},", i);
  group += "needle\n";
  Rootfs root(passwd, group);
  ExecUser u = root.resolve("needle");
  CHECK(u.uid == 424242);
  CHECK(u.additional_gids == Gids{424242, 500});

  write(root.dir.path() + "/etc/passwd", std::string((16u << 20) + 1, 'x'));
  CHECK_THROWS_AS(root.resolve("needle"), kiln::InvalidInputError);
  CHECK_THROWS_WITH(root.resolve("needle"), "container file `/etc/passwd`: larger than 16777216 bytes");
}

TEST_CASE("a passwd that is not a regular file is refused, a FIFO without hanging", "[process]") {
  Rootfs root;
  kiln::make_dirs(root.dir.path() + "/etc/passwd");
  CHECK_THROWS_AS(root.resolve("alice"), kiln::InvalidInputError);
  CHECK_THROWS_WITH(root.resolve("alice"), "container file `/etc/passwd`: not a regular file");
  kiln::remove_tree(root.dir.path() + "/etc/passwd");
  REQUIRE(::mkfifo((root.dir.path() + "/etc/passwd").c_str(), 0644) == 0);
  CHECK_THROWS_WITH(root.resolve("alice"), "container file `/etc/passwd`: not a regular file");
}

// ---- Environment --------------------------------------------------------------------------------

using kiln::runtime::container_env;
using kiln::runtime::env_flag;
using kiln::runtime::EnvDefaults;
using kiln::runtime::parse_env_file;

namespace {

kiln::runtime::HostEnv fake_host(std::vector<std::pair<std::string, std::string>> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    for (const auto& [key, value] : vars) {
      if (key == name) return value;
    }
    return std::nullopt;
  };
}

const std::string kPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

}  // namespace

TEST_CASE("env flag values as the CLI passes them on", "[process]") {
  auto host = fake_host({{"HOSTVAR", "from host"}, {"EMPTY", ""}});
  CHECK(env_flag("A=1", host) == "A=1");
  CHECK(env_flag("A=", host) == "A=");
  CHECK(env_flag("A=b=c", host) == "A=b=c");
  CHECK(env_flag("HOSTVAR", host) == "HOSTVAR=from host");
  CHECK(env_flag("EMPTY", host) == "EMPTY=");
  // Unset on the host: passed on bare, which unsets it in the container.
  CHECK(env_flag("UNSET", host) == "UNSET");
  CHECK_THROWS_AS(env_flag("=x", host), kiln::UsageError);
  CHECK_THROWS_WITH(env_flag("=x", host), "invalid environment variable: =x");
  CHECK_THROWS_WITH(env_flag("", host), "invalid environment variable: ");
}

TEST_CASE("env files follow Docker's ParseEnvFile", "[process]") {
  auto host = fake_host({{"HOSTVAR", "from host"}});
  std::string text =
      "\xEF\xBB\xBF"
      "FIRST=1\n"
      "# a comment\n"
      "\n"
      "   \t\n"
      "  INDENTED=yes\n"
      "QUOTED=\"kept as written\"\n"
      "SPACES=  value with spaces  \n"
      "EMPTY=\n"
      "EQUALS=a=b\n"
      "HOSTVAR\n"
      "UNSET\n"
      "  # indented comment\n"
      "CRLF=x\r\n"
      "LAST=no newline";
  CHECK(parse_env_file(text, "app.env", host) ==
        Strings{"FIRST=1", "INDENTED=yes", "QUOTED=\"kept as written\"", "SPACES=  value with spaces  ",
                "EMPTY=", "EQUALS=a=b", "HOSTVAR=from host", "CRLF=x", "LAST=no newline"});
  CHECK(parse_env_file("", "empty.env", host).empty());
}

TEST_CASE("a bad env file line is an error naming the file and the line", "[process]") {
  auto host = fake_host({});
  CHECK_THROWS_AS(parse_env_file("A=1\n\nMY VAR=x\n", "app.env", host), kiln::UsageError);
  CHECK_THROWS_WITH(parse_env_file("A=1\n\nMY VAR=x\n", "app.env", host),
                    "env file `app.env` line 3: variable 'MY VAR' contains whitespaces");
  CHECK_THROWS_WITH(parse_env_file("TRAILING \n", "app.env", host),
                    "env file `app.env` line 1: variable 'TRAILING ' contains whitespaces");
  CHECK_THROWS_WITH(parse_env_file("A=1\n=nothing\n", "app.env", host),
                    "env file `app.env` line 2: no variable name on line '=nothing'");
  CHECK_THROWS_WITH(parse_env_file("A=\xff\xfe\n", "app.env", host),
                    "env file `app.env` line 1: invalid utf8 bytes");
  // A BOM is only dropped from the first line; elsewhere it is part of the name, as with Docker.
  CHECK(parse_env_file("A=1\n\xEF\xBB\xBF"
                       "B=2\n",
                       "app.env", host) == Strings{"A=1",
                                                   "\xEF\xBB\xBF"
                                                   "B=2"});
}

TEST_CASE("env files are read from the host", "[process]") {
  kiln::TempDir dir("/tmp", "kiln-process-env-");
  write(dir.path() + "/app.env", "A=1\nB=2\n");
  CHECK(kiln::runtime::read_env_file(dir.path() + "/app.env", fake_host({})) == Strings{"A=1", "B=2"});
  std::string missing = dir.path() + "/missing.env";
  CHECK_THROWS_AS(kiln::runtime::read_env_file(missing, fake_host({})), kiln::NotFoundError);
  CHECK_THROWS_WITH(kiln::runtime::read_env_file(missing, fake_host({})),
                    "open env file `" + missing + "`: no such file");
}

TEST_CASE("the environment: Docker's defaults first, then the user's, then the image's, HOME last",
          "[process]") {
  json config = {{"Env", {"PATH=/custom/bin", "FOO=image", "KEEP=1"}}};
  EnvDefaults defaults{"c0ffee", "/root", false};
  CHECK(container_env(config, {}, defaults) ==
        Strings{"PATH=/custom/bin", "HOSTNAME=c0ffee", "FOO=image", "KEEP=1", "HOME=/root"});
  // The user's entries come before the image's, and win.
  CHECK(container_env(config, {"FOO=user", "BAR=x"}, defaults) ==
        Strings{"PATH=/custom/bin", "HOSTNAME=c0ffee", "FOO=user", "BAR=x", "KEEP=1", "HOME=/root"});
  // No Env in the image: PATH takes Docker's default.
  CHECK(container_env(json::object(), {}, defaults) == Strings{kPath, "HOSTNAME=c0ffee", "HOME=/root"});
  CHECK(container_env(json(nullptr), {}, defaults) == Strings{kPath, "HOSTNAME=c0ffee", "HOME=/root"});
  // With a tty, TERM=xterm follows HOSTNAME and can be overridden in place.
  EnvDefaults tty{"c0ffee", "/root", true};
  CHECK(container_env(json::object(), {}, tty) ==
        Strings{kPath, "HOSTNAME=c0ffee", "TERM=xterm", "HOME=/root"});
  CHECK(container_env(json::object(), {"TERM=dumb"}, tty) ==
        Strings{kPath, "HOSTNAME=c0ffee", "TERM=dumb", "HOME=/root"});
  // -e HOSTNAME overrides Docker's in place.
  CHECK(container_env(json::object(), {"HOSTNAME=mine"}, defaults) ==
        Strings{kPath, "HOSTNAME=mine", "HOME=/root"});
}

TEST_CASE("a key set twice keeps its first place and the last value", "[process]") {
  EnvDefaults defaults{"h", "/", false};
  // env files then -e, as the CLI sends them.
  Strings user = {"A=from-file", "B=2", "A=from-flag"};
  CHECK(container_env(json::object(), user, defaults) ==
        Strings{kPath, "HOSTNAME=h", "A=from-flag", "B=2", "HOME=/"});
  // Repeats within the image's Env too.
  CHECK(container_env(json{{"Env", {"X=1", "Y=2", "X=3"}}}, {}, defaults) ==
        Strings{kPath, "HOSTNAME=h", "X=3", "Y=2", "HOME=/"});
}

TEST_CASE("a bare key unsets: it removes a default and hides the image's value", "[process]") {
  EnvDefaults defaults{"h", "/home/u", false};
  json config = {{"Env", {"FOO=image", "BAR=image"}}};
  CHECK(container_env(config, {"FOO"}, defaults) ==
        Strings{kPath, "HOSTNAME=h", "BAR=image", "HOME=/home/u"});
  CHECK(container_env(config, {"PATH"}, defaults) ==
        Strings{"HOSTNAME=h", "FOO=image", "BAR=image", "HOME=/home/u"});
  // Unset then set again: the default's place comes back.
  CHECK(container_env(json::object(), {"PATH", "PATH=/x"}, defaults) ==
        Strings{"PATH=/x", "HOSTNAME=h", "HOME=/home/u"});
  // A bare key in the image's Env is dropped the same way.
  CHECK(container_env(json{{"Env", {"HOSTNAME", "Z=1"}}}, {}, defaults) ==
        Strings{kPath, "Z=1", "HOME=/home/u"});
}

TEST_CASE("HOME comes from the user unless the environment has a non-empty one", "[process]") {
  EnvDefaults defaults{"h", "/home/alice", false};
  CHECK(container_env(json{{"Env", {"HOME=/data", "A=1"}}}, {}, defaults) ==
        Strings{kPath, "HOSTNAME=h", "HOME=/data", "A=1"});
  // An empty HOME is replaced where it stands, as runc's setenv does.
  CHECK(container_env(json{{"Env", {"HOME=", "A=1"}}}, {}, defaults) ==
        Strings{kPath, "HOSTNAME=h", "HOME=/home/alice", "A=1"});
  // A user whose passwd entry has an empty home gets an empty HOME, as with runc.
  CHECK(container_env(json::object(), {}, EnvDefaults{"h", "", false}) ==
        Strings{kPath, "HOSTNAME=h", "HOME="});
}

TEST_CASE("a malformed image Env is refused", "[process]") {
  EnvDefaults defaults{"h", "/", false};
  CHECK_THROWS_AS(container_env(json{{"Env", "A=1"}}, {}, defaults), kiln::InvalidInputError);
  CHECK_THROWS_WITH(container_env(json{{"Env", "A=1"}}, {}, defaults), "image config: Env is not an array");
  CHECK_THROWS_WITH(container_env(json{{"Env", {"=x"}}}, {}, defaults),
                    "invalid environment variable `=x`: name cannot be empty");
  CHECK_THROWS_WITH(container_env(json{{"Env", {std::string("A=\0", 3)}}}, {}, defaults),
                    "image config: Env holds a NUL byte");
}
