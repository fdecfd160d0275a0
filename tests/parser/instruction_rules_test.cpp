#include "parser/instruction_rules.h"

#include <catch2/catch.hpp>

using namespace kiln::parser;
using namespace std::chrono_literals;

TEST_CASE("durations parse as Go's time.ParseDuration does", "[parser][rules]") {
  CHECK(parse_duration("30s") == 30s);
  CHECK(parse_duration("1m30s") == 90s);
  CHECK(parse_duration("1.5h") == 90min);
  CHECK(parse_duration("300ms") == 300ms);
  CHECK(parse_duration("10us") == 10us);
  CHECK(parse_duration("10\xC2\xB5s") == 10us);
  CHECK(parse_duration("0") == 0s);
  CHECK(parse_duration("-2s") == -2s);
  CHECK(parse_duration(".5s") == 500ms);
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("10"));     // a unit is required
  CHECK_FALSE(parse_duration("1d"));     // no days in Go
  CHECK_FALSE(parse_duration("s"));      // a number is required
  CHECK_FALSE(parse_duration("1s 2s"));  // no blanks
  CHECK_FALSE(parse_duration("99999999999h"));
}

TEST_CASE("RUN --mount specs parse as BuildKit parses them", "[parser][rules]") {
  MountSpec bind = parse_mount("target=/src");
  CHECK(bind.type == "bind");
  CHECK(bind.readonly);  // bind mounts are read-only unless rw is given
  CHECK_FALSE(parse_mount("type=bind,target=/src,rw").readonly);
  CHECK_FALSE(parse_mount("type=bind,target=/src,readwrite=true").readonly);

  MountSpec cache =
      parse_mount("type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000,gid=1000");
  CHECK(cache.type == "cache");
  CHECK_FALSE(cache.readonly);
  CHECK(cache.id == "go");
  CHECK(cache.sharing == "locked");
  CHECK(cache.mode == 0755u);
  CHECK(cache.uid == 1000);
  CHECK(cache.gid == 1000);

  MountSpec tmpfs = parse_mount("type=tmpfs,dst=/tmp,size=64m");
  CHECK(tmpfs.target == "/tmp");
  CHECK(tmpfs.size == 64LL << 20);

  MountSpec secret = parse_mount("type=secret,id=npmrc,target=/root/.npmrc,required");
  CHECK(secret.required);
  CHECK(parse_mount("type=secret,id=token,env=TOKEN").env == "TOKEN");
  CHECK(parse_mount("type=ssh").type == "ssh");

  // CSV quoting lets a value hold a comma; the key order does not matter for the type.
  CHECK(parse_mount("\"target=/a,b\",type=cache").target == "/a,b");
  CHECK(parse_mount("target=/c,type=cache").type == "cache");

  CHECK_THROWS_WITH(parse_mount("type=volume,target=/x"), "unsupported mount type \"volume\"");
  // No target: BuildKit mounts at the working directory (`RUN --mount=from=binaries tar c .`).
  CHECK(parse_mount("from=binaries").target.empty());
  CHECK(parse_mount("type=cache").target.empty());
  CHECK_THROWS_WITH(parse_mount("type=cache,target=/x,sharing=sometimes"),
                    "unsupported sharing value \"sometimes\" (use shared, private or locked)");
  CHECK_THROWS_WITH(parse_mount("type=cache,target=/x,mode=rwx"),
                    "invalid mode \"rwx\" (want an octal number)");
  CHECK_THROWS_WITH(parse_mount("type=tmpfs,target=/x,from=build"),
                    "\"from\" is not allowed for a tmpfs mount");
  CHECK_THROWS_WITH(parse_mount("type=secret"), "a secret mount needs an id, a target or an env");
  CHECK_THROWS_WITH(parse_mount("type=bind,target=/x,ro=maybe"),
                    "invalid value \"maybe\" for \"ro\" (want true or false)");
  CHECK_THROWS_WITH(parse_mount("type=bind,target=/x,\"unterminated"),
                    "extraneous or missing \" in quoted field");
}

TEST_CASE("mount values are expanded after the CSV split", "[parser][rules]") {
  auto expand = [](std::string_view value) { return std::string(value == "$DIR" ? "/a,b" : value); };
  // The expanded value holds a comma, so it is written back quoted and parses as one field.
  std::string spec = expand_mount_spec("type=cache,target=$DIR", expand);
  CHECK(spec == "type=cache,\"target=/a,b\"");
  CHECK(parse_mount(spec).target == "/a,b");
  CHECK(parse_mount("type=cache,target=$DIR", expand).target == "/a,b");
}
