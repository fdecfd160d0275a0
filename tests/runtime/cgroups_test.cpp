#include "runtime/cgroups.h"

#include <catch2/catch.hpp>

#include "layerstore/errors.h"

using kiln::runtime::CgroupHost;
using kiln::runtime::CgroupMode;

TEST_CASE("memory sizes parse as Docker's RAMInBytes", "[cgroups]") {
  using kiln::runtime::parse_memory_size;
  const std::pair<const char*, int64_t> good[] = {
      {"64m", 64 << 20}, {"64M", 64 << 20}, {"64mb", 64 << 20},  {"64MiB", 64 << 20}, {"64 m", 64 << 20},
      {"1g", 1 << 30},   {"1.5g", 3 << 29}, {"512k", 512 << 10}, {"100b", 100},       {"100", 100},
      {"0", 0},          {".5k", 512},      {"1t", 1LL << 40},   {"2P", 2LL << 50},   {"1048576", 1 << 20},
      {"7.9", 7},
  };
  for (const auto& [text, bytes] : good) {
    INFO(text);
    CHECK(parse_memory_size(text) == bytes);
  }
  const std::pair<const char*, const char*> bad[] = {
      {"", "invalid size: ``"},           {"abc", "invalid size: `abc`"},
      {"m64", "invalid size: `m64`"},     {"-1", "invalid size: `-1`"},
      {"1.2.3", "invalid size: `1.2.3`"}, {"99999999p", "invalid size: `99999999p`"},
      {"64x", "invalid suffix: `x`"},     {"64bb", "invalid suffix: `bb`"},
      {"64mbb", "invalid suffix: `mbb`"}, {"64kibb", "invalid suffix: `kibb`"},
      {"64mi", "invalid suffix: `mi`"},
  };
  for (const auto& [text, message] : bad) {
    INFO(text);
    CHECK_THROWS_AS(parse_memory_size(text), kiln::UsageError);
    CHECK_THROWS_WITH(parse_memory_size(text), message);
  }
}

TEST_CASE("--memory has Docker's 6MB minimum and 0 for no limit", "[cgroups]") {
  using kiln::runtime::parse_memory_limit;
  CHECK(parse_memory_limit("64m") == 64 << 20);
  CHECK(parse_memory_limit("6m") == 6 << 20);
  CHECK(parse_memory_limit("0") == std::nullopt);
  CHECK_THROWS_WITH(parse_memory_limit("4m"), "--memory: minimum memory limit allowed is 6MB");
  CHECK_THROWS_WITH(parse_memory_limit("1"), "--memory: minimum memory limit allowed is 6MB");
  CHECK_THROWS_WITH(parse_memory_limit("64x"), "--memory: invalid suffix: `x`");
  CHECK_THROWS_AS(parse_memory_limit("64x"), kiln::UsageError);
}

TEST_CASE("--cpus becomes Docker's quota over a 100 ms period", "[cgroups]") {
  using kiln::runtime::parse_cpus;
  const std::tuple<const char*, int, int64_t> good[] = {
      {"0.5", 2, 50000},          {"2", 2, 200000},  {"1.25", 2, 125000},
      {"0.01", 1, 1000},          {".5", 1, 50000},  {"1.", 1, 100000},
      {"0.5000000000", 1, 50000}, {"+1", 1, 100000}, {"16", 16, 1600000},
  };
  for (const auto& [text, cpus, quota] : good) {
    INFO(text);
    auto bandwidth = parse_cpus(text, cpus);
    REQUIRE(bandwidth);
    CHECK(bandwidth->quota_us == quota);
    CHECK(bandwidth->period_us == 100000);
  }
  CHECK(parse_cpus("0", 2) == std::nullopt);
  CHECK(parse_cpus("0.000", 2) == std::nullopt);

  const char* range2 = "--cpus: range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available";
  const std::pair<const char*, const char*> bad[] = {
      {"3", range2},
      {"2.001", range2},
      {"-1", range2},
      {"0.001", range2},
      {"99999999999", range2},
      {"abc", "--cpus: failed to parse `abc` as a rational number"},
      {"", "--cpus: failed to parse `` as a rational number"},
      {".", "--cpus: failed to parse `.` as a rational number"},
      {"1.5x", "--cpus: failed to parse `1.5x` as a rational number"},
      {"0.0000000001", "--cpus: value is too precise"},
  };
  for (const auto& [text, message] : bad) {
    INFO(text);
    CHECK_THROWS_AS(parse_cpus(text, 2), kiln::UsageError);
    CHECK_THROWS_WITH(parse_cpus(text, 2), message);
  }
  CHECK(kiln::runtime::host_cpu_count() >= 1);
}

TEST_CASE("--pids-limit: zero or negative is unlimited, as Docker", "[cgroups]") {
  using kiln::runtime::parse_pids_limit;
  CHECK(parse_pids_limit("20") == 20);
  CHECK(parse_pids_limit("0") == std::nullopt);
  CHECK(parse_pids_limit("-1") == std::nullopt);
  CHECK_THROWS_WITH(parse_pids_limit("abc"), "--pids-limit: invalid number: `abc`");
  CHECK_THROWS_WITH(parse_pids_limit(""), "--pids-limit: invalid number: ``");
  CHECK_THROWS_WITH(parse_pids_limit("20x"), "--pids-limit: invalid number: `20x`");
  CHECK_THROWS_AS(parse_pids_limit("1.5"), kiln::UsageError);
}

TEST_CASE("each hierarchy's directory comes from mountinfo and /proc/self/cgroup", "[cgroups]") {
  SECTION("hybrid: v1 controllers, a v2 hierarchy at unified/") {
    const char* mountinfo =
        "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
        "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    const char* self =
        "9:name=systemd:/user.slice\n"
        "8:pids:/user.slice/user-0.slice\n"
        "4:memory:/process_api/4178\n"
        "2:cpu,cpuacct:/\n"
        "0::/user.slice\n";
    CgroupHost host = kiln::runtime::parse_cgroup_host(CgroupMode::Hybrid, mountinfo, self);
    CHECK_FALSE(host.uses_v2());
    CHECK(host.unified_dir == "/sys/fs/cgroup/unified/user.slice");
    CHECK(host.v1_dirs ==
          std::map<std::string, std::string>{{"cpu", "/sys/fs/cgroup/cpu,cpuacct"},
                                             {"cpuacct", "/sys/fs/cgroup/cpu,cpuacct"},
                                             {"memory", "/sys/fs/cgroup/memory/process_api/4178"},
                                             {"pids", "/sys/fs/cgroup/pids/user.slice/user-0.slice"}});
  }
  SECTION("unified: one cgroup2 hierarchy, v1 lines ignored") {
    const char* mountinfo = "26 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    CgroupHost host =
        kiln::runtime::parse_cgroup_host(CgroupMode::Unified, mountinfo, "0::/user.slice/session-2.scope\n");
    CHECK(host.uses_v2());
    CHECK(host.unified_dir == "/sys/fs/cgroup/user.slice/session-2.scope");
    CHECK(host.v1_dirs.empty());
  }
  SECTION("a v1 container: the mount shows only the container's own subtree") {
    const char* mountinfo =
        "700 690 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        "701 690 0:35 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids\n";
    CgroupHost host = kiln::runtime::parse_cgroup_host(CgroupMode::Legacy, mountinfo,
                                                       "8:pids:/docker/abc\n4:memory:/docker/abc/sub\n");
    CHECK(host.v1_dirs.at("pids") == "/sys/fs/cgroup/pids");
    CHECK(host.v1_dirs.at("memory") == "/sys/fs/cgroup/memory/sub");
    CHECK(host.unified_dir.empty());
  }
  SECTION("the detected host has this process somewhere") {
    CgroupHost host = kiln::runtime::detect_cgroup_host();
    if (host.mode == CgroupMode::None) {
      WARN("skipped: no cgroup file system mounted");
      return;
    }
    CHECK((host.uses_v2() ? !host.unified_dir.empty() : !host.v1_dirs.empty()));
  }
}
