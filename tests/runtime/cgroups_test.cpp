#include "runtime/cgroups.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "layerstore/errors.h"
#include "tests/skip.h"

using kiln::runtime::Cgroup;
using kiln::runtime::CgroupHost;
using kiln::runtime::CgroupMode;
using kiln::runtime::ResourceLimits;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

std::string test_id(std::string_view name) {
  return fmt::format("kiln-test-{}-{}", ::getpid(), name);
}

// The cgroup; the test is skipped when this host cannot apply the limits (not root, no such
// controller, not writable, or cgroup v2's no-internal-processes rule refusing the delegation).
Cgroup create_or_skip(std::string_view name, const ResourceLimits& limits) {
  if (::geteuid() != 0) KILN_SKIP("needs root to create cgroups");
  CgroupHost host = kiln::runtime::detect_cgroup_host();
  for (const char* controller : {"memory", "cpu", "pids"}) {
    bool needed = (controller == std::string_view("memory") && limits.memory_bytes) ||
                  (controller == std::string_view("cpu") && limits.cpu_quota_us) ||
                  (controller == std::string_view("pids") && limits.pids);
    if (!needed) continue;
    if (std::string problem = host.controller_problem(controller); !problem.empty()) KILN_SKIP(problem);
  }
  try {
    return Cgroup::create(test_id(name), limits, host);
  } catch (const kiln::Error& e) {
    if (std::string_view(e.what()).find("hands no controllers down") == std::string_view::npos) throw;
    KILN_SKIP(e.what());
  }
}

ResourceLimits memory_limit(int64_t bytes) {
  ResourceLimits limits;
  limits.memory_bytes = bytes;
  return limits;
}

ResourceLimits pids_limit(int64_t pids) {
  ResourceLimits limits;
  limits.pids = pids;
  return limits;
}

CgroupHost host_of(CgroupMode mode, std::string unified_dir, std::vector<std::string> controllers) {
  CgroupHost host;
  host.mode = mode;
  host.unified_dir = std::move(unified_dir);
  host.unified_controllers = std::move(controllers);
  return host;
}

struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { REQUIRE(::pipe2(fds, O_CLOEXEC) == 0); }
  ~Pipe() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  void close_end(int end) {
    ::close(fds[end]);
    fds[end] = -1;
  }
};

}  // namespace

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

TEST_CASE("the memory flag has Docker's 6MB minimum and 0 for no limit", "[cgroups]") {
  using kiln::runtime::parse_memory_limit;
  CHECK(parse_memory_limit("64m") == 64 << 20);
  CHECK(parse_memory_limit("6m") == 6 << 20);
  CHECK(parse_memory_limit("0") == std::nullopt);
  CHECK_THROWS_WITH(parse_memory_limit("4m"), "--memory: minimum memory limit allowed is 6MB");
  CHECK_THROWS_WITH(parse_memory_limit("1"), "--memory: minimum memory limit allowed is 6MB");
  CHECK_THROWS_WITH(parse_memory_limit("64x"), "--memory: invalid suffix: `x`");
  CHECK_THROWS_AS(parse_memory_limit("64x"), kiln::UsageError);
}

TEST_CASE("the cpus flag becomes Docker's quota over a 100 ms period", "[cgroups]") {
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

TEST_CASE("the pids-limit flag: zero or negative is unlimited, as Docker", "[cgroups]") {
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
}

// Apart from the parsing cases above, so that a host without cgroups skips only this one.
TEST_CASE("the detected host has this process somewhere", "[cgroups]") {
  CgroupHost host = kiln::runtime::detect_cgroup_host();
  if (host.mode == CgroupMode::None) KILN_SKIP("no cgroup file system mounted");
  CHECK((host.uses_v2() ? !host.unified_dir.empty() : !host.v1_dirs.empty()));
}

TEST_CASE("a limit the host cannot apply is an error naming the flag, never ignored", "[cgroups]") {
  ResourceLimits memory = memory_limit(64 << 20);
  CgroupHost v2 = host_of(CgroupMode::Unified, "/nonexistent/user.slice", {"cpu"});
  CHECK_THROWS_WITH(Cgroup::create("c1", memory, v2),
                    "--memory: no writable memory cgroup controller (rootless without cgroup delegation?): "
                    "no memory controller in `/nonexistent/user.slice` (controllers: cpu)");
  ResourceLimits cpu;
  cpu.cpu_quota_us = 50000;
  cpu.cpu_period_us = 100000;
  CHECK_THROWS_WITH(Cgroup::create("c1", cpu, v2),
                    "--cpus: no writable cpu cgroup controller (rootless without cgroup delegation?): "
                    "`/nonexistent/user.slice` is not writable: No such file or directory");
  CgroupHost v1 = host_of(CgroupMode::Legacy, "", {});
  CHECK_THROWS_WITH(Cgroup::create("c1", pids_limit(5), v1),
                    "--pids-limit: no writable pids cgroup controller (rootless without cgroup delegation?): "
                    "no pids controller is mounted (cgroup v1)");
  CHECK_THROWS_WITH(Cgroup::create("../x", memory, v1), "create cgroup: invalid container id `../x`");
}

TEST_CASE("empty limits create no cgroup", "[cgroups]") {
  Cgroup cgroup = Cgroup::create("unused", ResourceLimits{});
  CHECK(cgroup.directories().empty());
  CHECK(cgroup.directory_fd_v2() == std::nullopt);
  CHECK_FALSE(cgroup.oom_killed());
  cgroup.add_process(::getpid());  // nothing to join
}

TEST_CASE("the limits written read back from the cgroup files", "[cgroups]") {
  ResourceLimits limits;
  limits.memory_bytes = 32 << 20;
  auto cpus = kiln::runtime::parse_cpus("0.5", kiln::runtime::host_cpu_count());
  limits.cpu_quota_us = cpus->quota_us;
  limits.cpu_period_us = cpus->period_us;
  limits.pids = 20;
  std::vector<std::string> dirs;
  {
    Cgroup cgroup = create_or_skip("limits", limits);
    dirs = cgroup.directories();
    std::string memory = cgroup.directory("memory"), cpu = cgroup.directory("cpu"),
                pids = cgroup.directory("pids");
    if (cgroup.directory_fd_v2()) {
      CHECK(dirs.size() == 1);
      CHECK(read_text(memory + "/memory.max") == "33554432\n");
      if (exists(memory + "/memory.swap.max")) CHECK(read_text(memory + "/memory.swap.max") == "33554432\n");
      CHECK(read_text(cpu + "/cpu.max") == "50000 100000\n");
    } else {
      CHECK(dirs.size() == 3);
      CHECK(read_text(memory + "/memory.limit_in_bytes") == "33554432\n");
      if (exists(memory + "/memory.memsw.limit_in_bytes")) {
        CHECK(read_text(memory + "/memory.memsw.limit_in_bytes") == "67108864\n");
      }
      CHECK(read_text(cpu + "/cpu.cfs_quota_us") == "50000\n");
      CHECK(read_text(cpu + "/cpu.cfs_period_us") == "100000\n");
    }
    CHECK(read_text(pids + "/pids.max") == "20\n");
    for (const std::string& dir : dirs) CHECK(dir.ends_with("/kiln/" + test_id("limits")));
    CHECK_FALSE(cgroup.oom_killed());
    CHECK_THROWS_WITH(Cgroup::create(test_id("limits"), limits),
                      Catch::Contains("create cgroup for `" + test_id("limits") + "`: mkdir") &&
                          Catch::Contains("File exists"));
  }
  for (const std::string& dir : dirs) CHECK_FALSE(exists(dir));
}

TEST_CASE("a process over --memory is killed by the OOM killer and oom_killed() says so", "[cgroups]") {
  std::vector<std::string> dirs;
  {
    Cgroup cgroup = create_or_skip("oom", memory_limit(32 << 20));
    dirs = cgroup.directories();
    Pipe go;
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      char byte = 0;
      if (::read(go.fds[0], &byte, 1) != 1) ::_exit(3);
      constexpr size_t kSize = size_t{128} << 20;
      auto* memory = static_cast<char*>(
          ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (memory == MAP_FAILED) ::_exit(2);
      for (size_t at = 0; at < kSize; at += 4096) memory[at] = 1;
      ::_exit(0);
    }
    go.close_end(0);
    cgroup.add_process(child);
    REQUIRE(::write(go.fds[1], "g", 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK((WIFSIGNALED(status) ? WTERMSIG(status) : -WEXITSTATUS(status)) == SIGKILL);
    CHECK(cgroup.oom_killed());
  }
  for (const std::string& dir : dirs) CHECK_FALSE(exists(dir));
}

TEST_CASE("forks past --pids-limit fail with EAGAIN, and removal kills what is left", "[cgroups]") {
  Cgroup cgroup = create_or_skip("pids", pids_limit(5));
  std::vector<std::string> dirs = cgroup.directories();
  Pipe go, report;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    char byte = 0;
    if (::read(go.fds[0], &byte, 1) != 1) ::_exit(3);
    int result[2] = {0, 0};  // forks that worked, errno of the first that failed
    for (int i = 0; i < 20; ++i) {
      pid_t grandchild = ::fork();
      if (grandchild == 0) {
        ::pause();
        ::_exit(0);
      }
      if (grandchild < 0) {
        result[1] = errno;
        break;
      }
      ++result[0];
    }
    if (::write(report.fds[1], result, sizeof(result)) != sizeof(result)) ::_exit(4);
    ::pause();  // stays, with its children, for remove() to kill
    ::_exit(0);
  }
  go.close_end(0);
  report.close_end(1);
  cgroup.add_process(child);
  REQUIRE(::write(go.fds[1], "g", 1) == 1);
  int result[2] = {-1, -1};
  REQUIRE(::read(report.fds[0], result, sizeof(result)) == sizeof(result));
  // The child itself is the fifth task; under a sanitizer its runtime's own threads count too.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  CHECK((result[0] >= 1 && result[0] <= 4));
#else
  CHECK(result[0] == 4);
#endif
  CHECK(result[1] == EAGAIN);
  if (exists(cgroup.directory("pids") + "/pids.current")) {
    CHECK(read_text(cgroup.directory("pids") + "/pids.current") == "5\n");
  }

  REQUIRE_NOTHROW(cgroup.remove());
  for (const std::string& dir : dirs) CHECK_FALSE(exists(dir));
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(cgroup.directories().empty());
  REQUIRE_NOTHROW(cgroup.remove());  // a second call has nothing to do
}
