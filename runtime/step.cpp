#include "runtime/step.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>

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

// Moves the descriptors a supervisor keeps to 3, 4, ... and closes every other one it inherited:
// a pipe another thread of kiln made a moment ago must not stay open in this process, where its
// reader would wait for it to close until this step ends. Returns the new numbers, in order. (The
// copies go above 16, above every slot they are moved to, and below the 1024 a user's descriptor
// limit may be.)
std::vector<int> keep_only(const std::vector<int>& fds) {
  std::vector<int> moved;
  for (int fd : fds) {
    int high = fd < 0 ? -1 : ::fcntl(fd, F_DUPFD_CLOEXEC, 16);
    if (fd >= 0 && high < 0) ::_exit(kExitRunFailed);
    moved.push_back(high);
  }
  std::vector<int> out;
  int next = 3;
  for (int high : moved) {
    if (high < 0) {
      out.push_back(-1);
      continue;
    }
    if (::dup3(high, next, O_CLOEXEC) < 0) ::_exit(kExitRunFailed);
    out.push_back(next++);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(next), ~0U, 0U);
  return out;
}

// A forked supervisor, killed and reaped unless it was waited for.
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

StepExit run_supervised(const nlohmann::json& spec, SandboxOptions options, const StepSpec& step) {
  Pipe report = make_pipe();
  std::optional<Pipe> out, err;
  if (step.output) {
    out = make_pipe();
    err = make_pipe();
    options.stdout_fd = out->write.get();
    options.stderr_fd = err->write.get();
  }
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork the step's supervisor");
  if (pid == 0) {
    // The supervisor: a copy of kiln with this thread alone, which may therefore run the sandbox
    // in its own process. It dies with the thread that forked it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // Terminal signals (Ctrl-C) are kiln's to act on, through cancel_fd, not the supervisor's.
    ::setpgid(0, 0);
    std::vector<int> kept =
        keep_only({report.write.get(), options.stdout_fd, options.stderr_fd, options.cancel_fd});
    int report_fd = kept[0];
    options.stdout_fd = kept[1];
    options.stderr_fd = kept[2];
    options.cancel_fd = kept[3];
    options.signal_fd = -1;
    SupervisorReport result;
    try {
      SandboxExit exit = run_sandbox(spec, options);
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
    ssize_t written = ::write(report_fd, &result, sizeof result);
    ::_exit(written == sizeof result ? 0 : kExitRunFailed);
  }
  Supervisor supervisor(pid);
  report.write.reset();
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
  options.finish_process = [&step](int root_fd, nlohmann::json& process) {
    ExecUser user = resolve_user(root_fd, step.user, step.group_add);
    process["user"] = {{"uid", user.uid}, {"gid", user.gid}, {"additionalGids", user.additional_gids}};
    std::vector<std::string> env = step.env;
    apply_home_rule(env, user.home);
    process["env"] = std::move(env);
  };
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
