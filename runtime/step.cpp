#include "runtime/step.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/io.h"
#include "runtime/container_ops.h"
#include "runtime/process_config.h"
#include "runtime/sandbox.h"
#include "runtime/seccomp.h"
#include "runtime/spec.h"

namespace kiln::runtime {

std::string host_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) throw_errno("read the host's hostname");
  return name;
}

std::string default_hosts_file(const std::string& hostname) {
  std::string loopback = "127.0.0.1\tlocalhost";
  if (!hostname.empty()) loopback += " " + hostname;
  return loopback +
         "\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n"
         "fe00::0\tip6-localnet\n"
         "ff00::0\tip6-mcastprefix\n"
         "ff02::1\tip6-allnodes\n"
         "ff02::2\tip6-allrouters\n";
}

std::string container_resolv_conf(bool host_network) {
  constexpr uint64_t kMaxHostFileBytes = 1 << 20;
  std::string host;
  try {
    host = read_file_capped("/etc/resolv.conf", kMaxHostFileBytes, "/etc/resolv.conf");
  } catch (const Error&) {
    // No resolv.conf on the host: the container gets the fallback below.
  }
  if (host_network) return host;
  std::string out;
  bool nameserver = false;
  size_t start = 0;
  while (start < host.size()) {
    size_t end = host.find('\n', start);
    if (end == std::string::npos) end = host.size();
    std::string line = host.substr(start, end - start);
    start = end + 1;
    if (line.starts_with("nameserver")) {
      std::string address = line.substr(10);
      address.erase(0, address.find_first_not_of(" \t"));
      if (address.starts_with("127.") || address.starts_with("::1")) continue;
      nameserver = true;
    }
    out += line + "\n";
  }
  if (!nameserver) out += "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
  return out;
}

void apply_home_rule(std::vector<std::string>& env, const std::string& home) {
  auto it = std::find_if(env.begin(), env.end(), [](const std::string& e) { return e.starts_with("HOME="); });
  if (it == env.end()) {
    env.push_back("HOME=" + home);
  } else if (*it == "HOME=") {
    *it = "HOME=" + home;
  }
}

nlohmann::json step_oci_spec(const StepSpec& step, const std::string& root_path) {
  nlohmann::json spec = default_spec(root_path);
  nlohmann::json& process = spec["process"];
  process["args"] = step.args;
  process["terminal"] = step.tty;
  process["cwd"] = step.workdir.empty() ? "/" : step.workdir;
  process["env"] = step.env;
  if (!step.hostname.empty()) spec["hostname"] = step.hostname;
  if (step.host_network) remove_namespace(spec, "network");
  set_capabilities(spec, step.capabilities);
  if (!step.seccomp_profile.is_null()) {
    nlohmann::json seccomp = seccomp_for_spec(step.seccomp_profile, step.capabilities);
    if (!seccomp.is_null()) spec["linux"]["seccomp"] = std::move(seccomp);
  }
  if (step.no_new_privileges) process["noNewPrivileges"] = true;
  spec["root"]["readonly"] = step.read_only_root;
  if (step.privileged) {
    // Docker's --privileged: no masked or read-only paths, and /sys writable.
    spec["linux"]["maskedPaths"] = nlohmann::json::array();
    spec["linux"]["readonlyPaths"] = nlohmann::json::array();
    for (auto& mount : spec["mounts"]) {
      if (mount["destination"] == "/sys") {
        auto& options = mount["options"];
        options.erase(std::remove(options.begin(), options.end(), "ro"), options.end());
      }
    }
  }
  for (const StepMount& mount : step.mounts) {
    spec["mounts"].push_back({{"destination", mount.destination},
                              {"type", mount.type},
                              {"source", mount.source},
                              {"options", mount.options}});
  }
  for (const EtcFile& file : step.etc_files) {
    spec["mounts"].push_back({{"destination", "/etc/" + file.name},
                              {"type", "bind"},
                              {"source", step.dir + "/" + file.name},
                              {"options", {"rbind", "rprivate"}}});
  }
  if (!step.resources.empty()) spec["linux"]["resources"] = step.resources;
  if (::geteuid() != 0) {
    add_user_namespace(spec, rootless_id_mappings("/etc/subuid", ::geteuid()),
                       rootless_id_mappings("/etc/subgid", ::getegid()));
  }
  return spec;
}

namespace {

// What a supervisor reports back to the thread that forked it.
struct SupervisorReport {
  enum Kind : int { kExited, kSandboxError, kError };
  int kind = kError;
  int code = kExitRunFailed;
  bool canceled = false;
  char message[4096] = {};
};

// The mount points the step's mounts need, for its init layer: a bind of a file needs a file.
std::vector<InitStub> mount_stubs(const StepSpec& step) {
  std::vector<InitStub> stubs;
  for (const StepMount& mount : step.mounts) {
    bool file = false;
    if (mount.type == "bind") {
      struct stat st {};
      file = ::stat(mount.source.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
    }
    stubs.push_back({mount.destination, file});
  }
  return stubs;
}

// A supervisor process, killed and reaped unless it was waited for.
class Supervisor {
 public:
  explicit Supervisor(pid_t pid) : pid_(pid) {}
  ~Supervisor() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_;
};

// Finishes the spec's process from the container's own files: the user as its /etc/passwd and
// /etc/group name it, and HOME by runc's rule.
std::function<void(int, nlohmann::json&)> process_finisher(std::string user,
                                                           std::vector<std::string> group_add,
                                                           std::vector<std::string> env) {
  return [user = std::move(user), group_add = std::move(group_add), env = std::move(env)](
             int root_fd, nlohmann::json& process) {
    ExecUser resolved = resolve_user(root_fd, user, group_add);
    process["user"] = {
        {"uid", resolved.uid}, {"gid", resolved.gid}, {"additionalGids", resolved.additional_gids}};
    std::vector<std::string> full_env = env;
    apply_home_rule(full_env, resolved.home);
    process["env"] = std::move(full_env);
  };
}

// The supervisor's argument, and the descriptors it finds its work on.
constexpr const char* kSupervisorArg = "--kiln-step-supervisor";
constexpr int kReportFd = 3;   // SupervisorReport, written once
constexpr int kRequestFd = 4;  // the request (JSON), read to its end
constexpr int kStdoutFd = 5;   // the process's output, when the caller gave descriptors for it
constexpr int kStderrFd = 6;
constexpr int kCancelFd = 7;

// What the supervisor needs to run the sandbox, as JSON: the spec and the SandboxOptions that are
// data (the process's user is resolved in the supervisor, from the request's user and env).
nlohmann::json supervisor_request(const nlohmann::json& spec, const SandboxOptions& options,
                                  const StepSpec& step) {
  nlohmann::json request = {{"spec", spec},
                            {"bundle_dir", options.bundle_dir},
                            {"container_id", options.container_id},
                            {"seccomp_cache_dir", options.seccomp_cache_dir},
                            {"init", options.init},
                            {"attach_stdin", options.attach_stdin},
                            {"user", step.user},
                            {"group_add", step.group_add},
                            {"env", step.env},
                            {"stdout", options.stdout_fd >= 0},
                            {"stderr", options.stderr_fd >= 0},
                            {"cancel", options.cancel_fd >= 0}};
  if (options.overlay) {
    request["overlay"] = {{"lowers", options.overlay->lower_dirs},
                          {"upper", options.overlay->upper_dir},
                          {"work", options.overlay->work_dir}};
  }
  return request;
}

// posix_spawn's attributes and file actions, destroyed however the spawn ends.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

// Starts kiln again as the step's supervisor (run_step_supervisor_if_asked): a new process with one
// thread, never a fork of this one. A fork of a process with threads inherits whatever locks the
// other threads held at that instant — glibc's malloc is made safe for it, but not every runtime
// is (GCC 12's ThreadSanitizer allocator deadlocked the forked child) — and posix_spawn execs at
// once from a child that shares this memory and allocates nothing.
pid_t spawn_supervisor(int report_fd, int request_fd, const SandboxOptions& options) {
  SpawnSetup setup;
  // The descriptors go to 3..7 in the child: copied above every one of those first, so that no
  // dup2 overwrites a source another still needs.
  std::vector<Fd> copies;
  auto pass = [&](int fd, int target) {
    if (fd < 0) return;
    int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 64);
    if (copy < 0) throw_errno("pass a descriptor to the step's supervisor");
    copies.emplace_back(copy);
    posix_spawn_file_actions_adddup2(&setup.actions, copy, target);
  };
  pass(report_fd, kReportFd);
  pass(request_fd, kRequestFd);
  pass(options.stdout_fd, kStdoutFd);
  pass(options.stderr_fd, kStderrFd);
  pass(options.cancel_fd, kCancelFd);
  // Nothing else of kiln's: a pipe another thread made a moment ago, not yet close-on-exec or
  // meant for another step, must not stay open here, where its reader would wait on it.
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, kCancelFd + 1);
  // Its own process group: terminal signals (Ctrl-C) are kiln's to act on, through cancel_fd.
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETPGROUP);
  std::string parent = std::to_string(::getpid());
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, const_cast<char*>(kSupervisorArg), parent.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, exe, &setup.actions, &setup.attr, argv, environ);
  if (rc != 0) {
    errno = rc;
    throw_errno("start the step's supervisor");
  }
  return pid;
}

StepExit run_supervised(const nlohmann::json& spec, SandboxOptions options, const StepSpec& step) {
  Pipe report = make_pipe();
  // A socket rather than a pipe: sent with MSG_NOSIGNAL, a request to a supervisor that died is an
  // error, not a SIGPIPE for all of kiln.
  int request_pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request_pair) != 0) {
    throw_errno("make the step supervisor's socket");
  }
  Fd request_ours(request_pair[0]), request_theirs(request_pair[1]);
  std::optional<Pipe> out, err;
  if (step.output) {
    out = make_pipe();
    err = make_pipe();
    options.stdout_fd = out->write.get();
    options.stderr_fd = err->write.get();
  }
  pid_t pid = spawn_supervisor(report.write.get(), request_theirs.get(), options);
  Supervisor supervisor(pid);
  report.write.reset();
  request_theirs.reset();
  {
    // The supervisor reads the request to its end before anything else. If it died first, the
    // send fails, and its exit status below says why.
    std::string text = supervisor_request(spec, options, step).dump();
    for (size_t sent = 0; sent < text.size();) {
      ssize_t n = ::send(request_ours.get(), text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    request_ours.reset();
  }
  if (out) {
    out->write.reset();
    err->write.reset();
    // The output until both pipes close: the container and whatever it left running are gone.
    std::array<Fd*, 2> pipes = {&out->read, &err->read};
    char buffer[16384];
    for (;;) {
      pollfd fds[2] = {{pipes[0]->valid() ? pipes[0]->get() : -1, POLLIN, 0},
                       {pipes[1]->valid() ? pipes[1]->get() : -1, POLLIN, 0}};
      if (fds[0].fd < 0 && fds[1].fd < 0) break;
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        throw_errno("read the step's output");
      }
      for (int i = 0; i < 2; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          pipes[i]->reset();
          continue;
        }
        step.output->write(i + 1, std::string_view(buffer, static_cast<size_t>(n)));
      }
    }
  }
  SupervisorReport result;
  ssize_t got = 0;
  while ((got = ::read(report.read.get(), &result, sizeof result)) < 0 && errno == EINTR) {
  }
  int status = supervisor.wait();
  if (got != sizeof result) {
    throw SandboxError(fmt::format("run: the step's supervisor died ({})",
                                   WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                       : fmt::format("exit {}", WEXITSTATUS(status))));
  }
  result.message[sizeof result.message - 1] = '\0';
  switch (result.kind) {
    case SupervisorReport::kExited:
      return StepExit{result.code, result.message, result.canceled};
    case SupervisorReport::kSandboxError:
      throw SandboxError(result.message);
    default:
      throw Error(result.message);
  }
}

}  // namespace

void run_step_supervisor_if_asked(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], kSupervisorArg) != 0) return;
  // It dies with the kiln that started it: a supervisor left behind would keep its container.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (std::to_string(::getppid()) != argv[2]) ::_exit(kExitRunFailed);
  SupervisorReport result;
  try {
    nlohmann::json request =
        nlohmann::json::parse(read_fd_capped(kRequestFd, 64 << 20, "the step supervisor's request"));
    ::close(kRequestFd);
    SandboxOptions options;
    options.bundle_dir = request.at("bundle_dir").get<std::string>();
    if (request.contains("overlay")) {
      const nlohmann::json& overlay = request["overlay"];
      options.overlay =
          OverlayRoot{overlay.at("lowers").get<std::vector<std::string>>(),
                      overlay.at("upper").get<std::string>(), overlay.at("work").get<std::string>()};
    }
    options.container_id = request.at("container_id").get<std::string>();
    options.seccomp_cache_dir = request.at("seccomp_cache_dir").get<std::string>();
    options.init = request.at("init").get<bool>();
    options.attach_stdin = request.at("attach_stdin").get<bool>();
    options.finish_process = process_finisher(request.at("user").get<std::string>(),
                                              request.at("group_add").get<std::vector<std::string>>(),
                                              request.at("env").get<std::vector<std::string>>());
    options.stdout_fd = request.at("stdout").get<bool>() ? kStdoutFd : -1;
    options.stderr_fd = request.at("stderr").get<bool>() ? kStderrFd : -1;
    options.cancel_fd = request.at("cancel").get<bool>() ? kCancelFd : -1;
    SandboxExit exit = run_sandbox(request.at("spec"), options);
    result.kind = SupervisorReport::kExited;
    result.code = exit.code;
    result.canceled = exit.canceled;
    std::snprintf(result.message, sizeof result.message, "%s", exit.failure.c_str());
  } catch (const SandboxError& error) {
    result.kind = SupervisorReport::kSandboxError;
    std::snprintf(result.message, sizeof result.message, "%s", error.what());
  } catch (const std::exception& error) {
    result.kind = SupervisorReport::kError;
    std::snprintf(result.message, sizeof result.message, "%s", error.what());
  }
  ssize_t written = ::write(kReportFd, &result, sizeof result);
  ::_exit(written == sizeof result ? 0 : kExitRunFailed);
}

StepExit run_step(const StepSpec& step) {
  if (step.output && step.alone) throw Error("run_step: output to a StepOutput needs a supervisor");
  // The mount points of the root's mounts live in a layer of their own under the upper directory,
  // so that the changes there are only the process's (Docker's init layer).
  std::vector<std::string> lowers_top_first(step.lowers.rbegin(), step.lowers.rend());
  make_init_layer(step.dir + "/init", lowers_top_first, mount_stubs(step));
  make_dirs(step.dir + "/rootfs", 0755);
  for (const EtcFile& file : step.etc_files) {
    write_file_atomic(step.dir + "/" + file.name, file.content, Durability::Volatile);
  }
  nlohmann::json spec = step_oci_spec(step, "rootfs");

  SandboxOptions options;
  options.bundle_dir = step.dir;
  std::vector<std::string> lowers = step.lowers;
  lowers.push_back(step.dir + "/init");
  options.overlay = OverlayRoot{lowers, step.upper_dir, step.work_dir};
  options.container_id = step.container_id;
  options.seccomp_cache_dir = step.seccomp_cache_dir;
  options.init = step.init;
  options.attach_stdin = step.attach_stdin;
  options.finish_process = process_finisher(step.user, step.group_add, step.env);
  options.stdout_fd = step.stdout_fd;
  options.stderr_fd = step.stderr_fd;
  options.signal_fd = step.signal_fd;
  options.cancel_fd = step.cancel_fd;
  if (!step.alone) return run_supervised(spec, std::move(options), step);
  options.on_started = step.on_started;
  SandboxExit exit = run_sandbox(spec, options);
  return StepExit{exit.code, exit.failure, exit.canceled};
}

}  // namespace kiln::runtime
