#include "runtime/seccomp.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "runtime/capabilities.h"
#include "tests/skip.h"

using kiln::runtime::default_capabilities;
using kiln::runtime::default_seccomp_profile;
using kiln::runtime::read_seccomp_profile;
using kiln::runtime::seccomp_for_spec;
using kiln::runtime::SeccompFilter;
using nlohmann::json;

namespace {

// The syscalls the OCI object lets through whatever their arguments.
std::set<std::string> allowed_outright(const json& spec) {
  std::set<std::string> out;
  for (const json& call : spec["syscalls"]) {
    if (call["action"] == "SCMP_ACT_ALLOW" && !call.contains("args")) {
      for (const json& name : call["names"]) out.insert(name.get<std::string>());
    }
  }
  return out;
}

// Every rule that names `syscall`.
std::vector<json> rules_for(const json& spec, const std::string& syscall) {
  std::vector<json> out;
  for (const json& call : spec["syscalls"]) {
    for (const json& name : call["names"]) {
      if (name == syscall) out.push_back(call);
    }
  }
  return out;
}

std::vector<std::string> with(std::vector<std::string> caps, const std::string& cap) {
  caps.push_back(cap);
  return caps;
}

// What a forked child found: its first failed check, written into a fixed buffer because the child
// runs under a filter that may refuse the system calls an allocation would make.
struct Report {
  char text[512] = {};
  bool failed = false;

  __attribute__((format(printf, 2, 3))) void fail(const char* format, ...) {
    if (failed) return;
    failed = true;
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
  }
  // For "the call just made must have failed with errno `want`": errno is read here, after the
  // call's result has been passed in.
  void expect_errno(const char* what, long rc, int want) {
    int err = errno;
    if (rc != -1 || err != want) {
      fail("%s: returned %ld, errno %s; want errno %s", what, rc, strerrorname_np(err),
           strerrorname_np(want));
    }
  }
};

struct ChildResult {
  int status = -1;
  std::string report;
};

// Forks; the child sets PR_SET_NO_NEW_PRIVS, installs `filter` (none: unconfined) and runs `body`,
// then sends its report through a pipe and exits. The parent always reaps the child.
template <typename Body>
ChildResult run_child(const SeccompFilter* filter, Body body) {
  ChildResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.report = "pipe2 failed";
    return result;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    Report report;
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      report.fail("PR_SET_NO_NEW_PRIVS: %s", std::strerror(errno));
    } else if (int err = filter ? filter->load() : 0; err != 0) {
      report.fail("load the filter: %s", std::strerror(err));
    } else {
      body(report);
    }
    if (report.failed) {
      // Best effort: a filter that refuses write shows up as an empty report and the exit code.
      [[maybe_unused]] ssize_t n = ::write(fds[1], report.text, std::strlen(report.text));
    }
    ::_exit(report.failed ? 1 : 0);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    result.report = "fork failed";
    return result;
  }
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.report.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  while (::waitpid(pid, &result.status, 0) < 0 && errno == EINTR) {
  }
  return result;
}

bool exited_cleanly(const ChildResult& r) {
  return WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
}

SeccompFilter default_filter(const std::vector<std::string>& caps) {
  return SeccompFilter::compile(seccomp_for_spec(default_seccomp_profile(), caps));
}

// A scratch directory for profile files.
struct Scratch {
  kiln::TempDir dir{"/dev/shm", "kiln-seccomp-test-"};
  std::string write(const std::string& name, const std::string& content) {
    std::string path = dir.path() + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
};

}  // namespace

TEST_CASE("the default profile for Docker's default capabilities", "[seccomp]") {
  json spec = seccomp_for_spec(default_seccomp_profile(), default_capabilities());
  CHECK(spec["defaultAction"] == "SCMP_ACT_ERRNO");
  CHECK(spec["defaultErrnoRet"] == 1);
#if defined(__x86_64__)
  CHECK(spec["architectures"] == json{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"});
#endif
  std::set<std::string> allowed = allowed_outright(spec);
  for (const char* name : {"read", "write", "execve", "getpid", "exit_group", "futex", "ptrace", "chroot"}) {
    INFO(name);
    CHECK(allowed.count(name) == 1);
  }
#if defined(__x86_64__)
  CHECK(allowed.count("arch_prctl") == 1);
  CHECK(allowed.count("modify_ldt") == 1);
#endif
  for (const char* name : {"mount",
                           "umount2",
                           "unshare",
                           "setns",
                           "reboot",
                           "kexec_load",
                           "init_module",
                           "bpf",
                           "perf_event_open",
                           "open_by_handle_at",
                           "clone",
                           "clone3",
                           "syslog",
                           "settimeofday",
                           "kcmp",
                           "iopl",
                           "acct",
                           "vhangup",
                           "mbind",
                           "riscv_flush_icache",
                           "s390_runtime_instr"}) {
    INFO(name);
    CHECK(allowed.count(name) == 0);
  }

  // clone may run, but not with a namespace flag (the mask is NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|
  // NEWNET|NEWCGROUP); clone3 says ENOSYS so glibc falls back to clone.
  std::vector<json> clone = rules_for(spec, "clone");
  REQUIRE(clone.size() == 1);
  CHECK(clone[0]["action"] == "SCMP_ACT_ALLOW");
  CHECK(clone[0]["args"] ==
        json::parse(R"([{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])"));
  CHECK(2114060288u == (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                        CLONE_NEWNET | CLONE_NEWCGROUP));
  std::vector<json> clone3 = rules_for(spec, "clone3");
  REQUIRE(clone3.size() == 1);
  CHECK(clone3[0] == json::parse(R"({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})"));

  std::vector<json> socket = rules_for(spec, "socket");
  REQUIRE(socket.size() == 1);
  CHECK(socket[0]["args"][0]["op"] == "SCMP_CMP_NE");
  CHECK(socket[0]["args"][0]["value"] == AF_VSOCK);
  std::set<std::uint64_t> personalities;
  for (const json& rule : rules_for(spec, "personality"))
    personalities.insert(rule["args"][0]["value"].get<std::uint64_t>());
  CHECK(personalities == std::set<std::uint64_t>{0, 8, 0x20000, 0x20008, 0xffffffff});
}

TEST_CASE("granted capabilities open their groups, as in Docker", "[seccomp]") {
  json admin = seccomp_for_spec(default_seccomp_profile(), with(default_capabilities(), "CAP_SYS_ADMIN"));
  std::set<std::string> allowed = allowed_outright(admin);
  for (const char* name : {"mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
                           "perf_event_open", "sethostname", "syslog", "fsopen"}) {
    INFO(name);
    CHECK(allowed.count(name) == 1);
  }
  // The argument filter on clone and the ENOSYS for clone3 are gone.
  CHECK(rules_for(admin, "clone").size() == 1);
  CHECK(rules_for(admin, "clone3").size() == 1);

  auto opens = [](const char* cap, const char* syscall) {
    INFO(cap << " -> " << syscall);
    CHECK(allowed_outright(seccomp_for_spec(default_seccomp_profile(), default_capabilities()))
              .count(syscall) == 0);
    CHECK(allowed_outright(seccomp_for_spec(default_seccomp_profile(), with(default_capabilities(), cap)))
              .count(syscall) == 1);
  };
  opens("CAP_SYS_BOOT", "reboot");
  opens("CAP_SYS_MODULE", "finit_module");
  opens("CAP_SYS_PTRACE", "kcmp");
  opens("CAP_SYS_PTRACE", "pidfd_getfd");
  opens("CAP_SYS_TIME", "clock_settime");
  opens("CAP_SYS_NICE", "mbind");
  opens("CAP_SYS_RAWIO", "iopl");
  opens("CAP_SYSLOG", "syslog");
  opens("CAP_SYS_PACCT", "acct");
  opens("CAP_SYS_TTY_CONFIG", "vhangup");
  opens("CAP_DAC_READ_SEARCH", "open_by_handle_at");
  opens("CAP_BPF", "bpf");
  opens("CAP_PERFMON", "perf_event_open");
  // kexec_load is in no group: no capability opens it.
  CHECK(allowed_outright(seccomp_for_spec(default_seccomp_profile(), kiln::runtime::all_capabilities()))
            .count("kexec_load") == 0);

  // Dropping a default capability closes its group.
  std::vector<std::string> no_chroot =
      kiln::runtime::resolve_capabilities(default_capabilities(), {}, {"SYS_CHROOT"}, false);
  CHECK(allowed_outright(seccomp_for_spec(default_seccomp_profile(), no_chroot)).count("chroot") == 0);
}

TEST_CASE("includes and excludes by architecture and kernel version", "[seccomp]") {
  json profile = json::parse(R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
      {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "2.6"}},
      {"names": ["b"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}},
      {"names": ["c"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "2.6.32"}},
      {"names": ["d"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
      {"names": ["e"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["s390x"]}},
      {"names": ["f"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_KILL", "CAP_SYS_ADMIN"]}},
      {"names": ["g"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_KILL"]}},
      {"name": "h", "action": "SCMP_ACT_ALLOW"}
    ]
  })");
  std::set<std::string> allowed = allowed_outright(seccomp_for_spec(profile, default_capabilities()));
  CHECK(allowed == std::set<std::string>{"a", "e", "g", "h"});
  // No archMap and no architectures: libseccomp's native architecture only, as in Docker.
  CHECK(seccomp_for_spec(profile, {})["architectures"] == json::array());
}

TEST_CASE("a profile already in OCI form passes through, and an empty one disables seccomp", "[seccomp]") {
  json oci = json::parse(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
    "syscalls": [
      {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
      {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 100, "valueTwo": 0, "op": "SCMP_CMP_GT"}]}
    ]
  })");
  CHECK(seccomp_for_spec(oci, default_capabilities()) == oci);
  CHECK(seccomp_for_spec(json::object(), default_capabilities()).is_null());
  CHECK(seccomp_for_spec(json::parse(R"({"defaultAction": "", "syscalls": []})"), {}).is_null());
}

TEST_CASE("reading a user's profile", "[seccomp]") {
  Scratch s;
  std::string good = s.write("good.json", R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [{"names": ["read", "no_such_syscall_yet"], "action": "SCMP_ACT_ALLOW"}]
  })");
  json profile = read_seccomp_profile(good);
  CHECK(profile["syscalls"][0]["names"][1] == "no_such_syscall_yet");
  // The unknown name is skipped when the filter is built, as Docker skips it.
  CHECK_NOTHROW(SeccompFilter::compile(seccomp_for_spec(profile, {})));

  auto refused = [&](const std::string& content) {
    std::string path = s.write("bad.json", content);
    try {
      read_seccomp_profile(path);
    } catch (const kiln::InvalidInputError& e) {
      std::string what = e.what();
      std::string prefix = "read seccomp profile `" + path + "`: ";
      REQUIRE(what.starts_with(prefix));
      return what.substr(prefix.size());
    }
    return std::string("(accepted)");
  };
  CHECK(refused(R"({"defaultAction": "SCMP_ACT_ALLOW", )") ==
        "invalid JSON: parse error at line 1, column 37: syntax error while parsing object key - unexpected "
        "end "
        "of input; expected string literal");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_MAYBE"}]})") ==
      "syscalls[0]: unknown action `SCMP_ACT_MAYBE`");
  CHECK(refused(R"({"defaultAction": "SCMP_ACT_DENY"})") == "profile: unknown defaultAction `SCMP_ACT_DENY`");
  CHECK(refused(R"({"syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]})") ==
        "profile: no defaultAction");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_Z80"]}]})") ==
      "archMap[0].subArchitectures[1]: unknown architecture `SCMP_ARCH_Z80`");
  CHECK(refused(R"({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"]})") ==
        "architectures[0]: unknown architecture `x86_64`");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"], "archMap": [{"architecture": "SCMP_ARCH_X86"}]})") ==
      "both `architectures` and `archMap` are given; use one");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})") ==
      "syscalls[0].args[0]: index 6 is not one of 0 to 5");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SORTOF"}]}]})") ==
      "syscalls[0].args[0]: unknown operator \"SCMP_CMP_SORTOF\"");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "dup", "names": ["dup2"], "action": "SCMP_ACT_ALLOW"}]})") ==
      "syscalls[0]: both `name` and `names` are given; use one");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "dup", "action": "SCMP_ACT_ALLOW"}]})") ==
      "syscalls[0].names: expected an array of strings");
  CHECK(
      refused(
          R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["dup"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}]})") ==
      "syscalls[0].includes.minKernel: not a kernel version: \"new\"");
  CHECK(refused(R"({"defaultAction": "SCMP_ACT_NOTIFY"})") ==
        "profile: defaultAction `SCMP_ACT_NOTIFY` needs a seccomp agent, which kiln does not support");
  CHECK(refused("[]") == "expected a JSON object");
  CHECK(refused(std::string((4 << 20) + 1, ' ')) == "file: larger than 4194304 bytes");

  std::string missing = s.dir.path() + "/missing.json";
  CHECK_THROWS_WITH(read_seccomp_profile(missing), "read seccomp profile `" + missing + "`: open `" +
                                                       missing + "`: No such file or directory");
}

TEST_CASE("the compiled default filter refuses what Docker's refuses", "[seccomp]") {
  SeccompFilter filter = default_filter(default_capabilities());
  CHECK(filter.size() > 100);
  ChildResult r = run_child(&filter, [](Report& report) {
    long rc = ::unshare(CLONE_NEWUTS);
    report.expect_errno("unshare(CLONE_NEWUTS)", rc, EPERM);
    // Unfiltered this would be ENOENT: the target does not exist.
    rc = ::mount("kiln-test", "/nonexistent/kiln-seccomp-test", "tmpfs", 0, nullptr);
    report.expect_errno("mount", rc, EPERM);
    // Unfiltered, bad magic numbers make this EINVAL (and nothing reboots).
    rc = ::syscall(SYS_reboot, 0, 0, 0, nullptr);
    report.expect_errno("reboot with bad magic", rc, EPERM);
    if (::syscall(SYS_getpid) <= 0) report.fail("getpid: %s", std::strerror(errno));
#ifdef SYS_clone3
    // Unfiltered, a null argument is EINVAL.
    rc = ::syscall(SYS_clone3, nullptr, 0);
    report.expect_errno("clone3", rc, ENOSYS);
#endif
    rc = ::syscall(SYS_clone, CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
    if (rc == 0) ::_exit(0);  // the filter let it through; this is the new process
    if (rc > 0) ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
    report.expect_errno("clone(CLONE_NEWUTS)", rc, EPERM);
    // Plain fork goes through clone without namespace flags.
    pid_t child = ::fork();
    if (child == 0) ::_exit(7);
    int status = 0;
    if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 7) {
      report.fail("fork: %s", std::strerror(errno));
    }
    // glibc's pthread_create tries clone3 first and falls back to clone on ENOSYS.
    pthread_t thread;
    if (int err = ::pthread_create(
            &thread, nullptr, [](void*) -> void* { return nullptr; }, nullptr);
        err != 0) {
      report.fail("pthread_create: %s", std::strerror(err));
    } else {
      ::pthread_join(thread, nullptr);
    }
    if (::personality(0xffffffff) == -1) report.fail("personality query: %s", std::strerror(errno));
    rc = ::personality(ADDR_NO_RANDOMIZE);
    report.expect_errno("personality(ADDR_NO_RANDOMIZE)", rc, EPERM);
    rc = ::socket(AF_VSOCK, SOCK_STREAM, 0);
    report.expect_errno("socket(AF_VSOCK)", rc, EPERM);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) report.fail("socket(AF_UNIX): %s", std::strerror(errno));
  });
  CHECK(r.report == "");
  CHECK(exited_cleanly(r));
}

TEST_CASE("CAP_SYS_ADMIN lets unshare and clone3 through, and unconfined runs no filter", "[seccomp]") {
  if (::geteuid() != 0) KILN_SKIP("unshare(CLONE_NEWUTS) needs root");
  ChildResult unconfined = run_child(nullptr, [](Report& report) {
    if (::unshare(CLONE_NEWUTS) != 0) report.fail("unshare(CLONE_NEWUTS): %s", std::strerror(errno));
  });
  if (!exited_cleanly(unconfined))
    KILN_SKIP("unshare(CLONE_NEWUTS) is refused here even without a filter: " << unconfined.report);
  SeccompFilter admin = default_filter(with(default_capabilities(), "CAP_SYS_ADMIN"));
  ChildResult r = run_child(&admin, [](Report& report) {
    if (::unshare(CLONE_NEWUTS) != 0) report.fail("unshare(CLONE_NEWUTS): %s", std::strerror(errno));
#ifdef SYS_clone3
    long rc = ::syscall(SYS_clone3, nullptr, 0);
    report.expect_errno("clone3 reaching the kernel", rc, EINVAL);
#endif
  });
  CHECK(r.report == "");
  CHECK(exited_cleanly(r));
}

TEST_CASE("a user's profile: errno values, argument comparisons, kill", "[seccomp]") {
  json profile = json::parse(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
      {"names": ["getppid", "not_a_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
      {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33, "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_GT"}]},
      {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"},
      {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}
    ]
  })");
  SeccompFilter filter = SeccompFilter::compile(seccomp_for_spec(profile, default_capabilities()));
  ChildResult r = run_child(&filter, [](Report& report) {
    report.expect_errno("getppid", ::syscall(SYS_getppid), EACCES);
    report.expect_errno("getpgrp", ::syscall(SYS_getpgrp), EPERM);
    report.expect_errno("dup(200)", ::syscall(SYS_dup, 200), EDOM);
    long fd = ::syscall(SYS_dup, 1);
    if (fd < 0) report.fail("dup(1): %s", std::strerror(errno));
  });
  CHECK(r.report == "");
  CHECK(exited_cleanly(r));

  ChildResult killed = run_child(&filter, [](Report& report) {
    ::syscall(SYS_uname, nullptr);
    report.fail("uname returned");
  });
  CHECK(killed.report == "");
  REQUIRE(WIFSIGNALED(killed.status));
  CHECK(WTERMSIG(killed.status) == SIGSYS);
}

TEST_CASE("a profile that allows almost nothing", "[seccomp]") {
  json profile = json::parse(R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [{"names": ["write", "exit", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
  })");
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's runtime maps memory and switches signal stacks inside the child; without
  // these it aborts before the checks run. getpid and openat stay refused.
  profile["syscalls"][0]["names"].insert(profile["syscalls"][0]["names"].end(),
                                         {"mmap", "munmap", "mprotect", "madvise", "sigaltstack",
                                          "rt_sigaction", "rt_sigprocmask", "futex", "sched_yield", "brk"});
#endif
  SeccompFilter filter = SeccompFilter::compile(seccomp_for_spec(profile, {}));
  ChildResult r = run_child(&filter, [](Report& report) {
    report.expect_errno("getpid", ::syscall(SYS_getpid), EPERM);
    report.expect_errno("open", ::syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY), EPERM);
  });
  CHECK(r.report == "");
  CHECK(exited_cleanly(r));
}

TEST_CASE("compile errors name what is wrong", "[seccomp]") {
#ifndef SCMP_ARCH_SH
  CHECK_THROWS_WITH(
      SeccompFilter::compile(
          json::parse(R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_SH"]})")),
      "compile seccomp filter: architecture `SCMP_ARCH_SH` is not supported by this libseccomp");
#endif
  CHECK_THROWS_WITH(SeccompFilter::compile(json::parse(R"({"defaultAction": "SCMP_ACT_BOGUS"})")),
                    "compile seccomp filter: profile: unknown defaultAction `SCMP_ACT_BOGUS`");
}

TEST_CASE("compiled filters are cached by profile, and a damaged cache file is replaced", "[seccomp]") {
  kiln::TempDir dir{"/dev/shm", "kiln-seccomp-cache-"};
  std::string cache = dir.path() + "/cache";
  json oci = seccomp_for_spec(default_seccomp_profile(), default_capabilities());
  SeccompFilter fresh = SeccompFilter::compile(oci);
  auto same_program = [&](const SeccompFilter& filter) {
    return filter.size() == fresh.size() && std::memcmp(filter.program().data(), fresh.program().data(),
                                                        fresh.size() * sizeof(sock_filter)) == 0;
  };
  CHECK(same_program(SeccompFilter::compile_cached(oci, cache)));
  auto list_cache = [&] {
    kiln::Fd fd = kiln::open_or_throw(cache, O_RDONLY | O_DIRECTORY);
    return kiln::list_dir_at(fd.get(), cache);
  };
  std::vector<std::string> files = list_cache();
  REQUIRE(files.size() == 1);
  CHECK(same_program(SeccompFilter::compile_cached(oci, cache)));
  // Another profile gets its own entry.
  json other = seccomp_for_spec(default_seccomp_profile(), {"CAP_SYS_ADMIN"});
  CHECK(SeccompFilter::compile_cached(other, cache).size() != 0);
  CHECK(list_cache().size() == 2);
  // A truncated file (not a whole number of instructions) is compiled again and rewritten.
  std::string path = cache + "/" + files.front();
  kiln::write_file_atomic(path, "garbage");
  CHECK(same_program(SeccompFilter::compile_cached(oci, cache)));
  CHECK(kiln::read_file_capped(path, 1 << 20, path).size() == fresh.size() * sizeof(sock_filter));
}
