#include "runtime/sandbox.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/io.h"
#include "runtime/capabilities.h"
#include "runtime/cgroups.h"
#include "runtime/process_config.h"
#include "runtime/rootfs.h"
#include "runtime/seccomp.h"
#include "runtime/spec.h"
#include "runtime/userns.h"

namespace kiln::runtime {
namespace {

// AddressSanitizer or ThreadSanitizer, whose runtimes know threads and processes, not a process
// running in another's memory on a stack of its own.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kUnderSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kUnderSanitizer = true;
#else
constexpr bool kUnderSanitizer = false;
#endif
#else
constexpr bool kUnderSanitizer = false;
#endif

// ---- what the child reports when it fails before exec

struct ChildFailure {
  int exit_code = kExitRunFailed;
  char message[2048] = {};
};

// Thrown inside the child only; carries the exit code Docker would give.
class ChildError : public std::runtime_error {
 public:
  ChildError(int exit_code, const std::string& what) : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

[[noreturn]] void fail(const std::string& what, int err = errno) {
  throw ChildError(kExitRunFailed, fmt::format("{}: {}", what, std::strerror(err)));
}

void check(int result, const std::string& what) {
  if (result < 0) fail(what);
}

// ---- parent and child: the pipes between them, waiting, the child's report

// waitpid, through EINTR; returns the wait status.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// The parent's side of a child's start: `prepare` (ID maps, cgroup) runs while the child waits on
// the sync pipe, then the child is let go. On a failure of either the child is killed and reaped
// before the error goes on.
void let_child_go(pid_t pid, Fd& sync_write, const std::function<void()>& prepare, const std::string& what) {
  try {
    prepare();
    char go = 1;
    if (::write(sync_write.get(), &go, 1) != 1) throw_errno(what);
  } catch (...) {
    ::kill(pid, SIGKILL);
    wait_for(pid);
    throw;
  }
  sync_write.reset();
}

// What the child wrote to the error pipe before failing; nullopt when the pipe closed without a
// word (exec succeeded, or the child exited cleanly).
std::optional<ChildFailure> read_failure(int error_read) {
  ChildFailure failure;
  ssize_t got = 0;
  while ((got = ::read(error_read, &failure, sizeof failure)) < 0 && errno == EINTR) {
  }
  if (got <= 0) return std::nullopt;
  failure.message[sizeof failure.message - 1] = '\0';
  return failure;
}

// ---- mount options as runc reads them

struct MountFlags {
  unsigned long flags = 0;
  unsigned long propagation = 0;
  std::vector<std::string> data;
};

MountFlags parse_mount_options(const nlohmann::json& options) {
  static const std::map<std::string, std::pair<bool, unsigned long>> kFlags = {
      {"async", {false, MS_SYNCHRONOUS}},
      {"atime", {false, MS_NOATIME}},
      {"bind", {true, MS_BIND}},
      {"defaults", {true, 0}},
      {"dev", {false, MS_NODEV}},
      {"diratime", {false, MS_NODIRATIME}},
      {"dirsync", {true, MS_DIRSYNC}},
      {"exec", {false, MS_NOEXEC}},
      {"noatime", {true, MS_NOATIME}},
      {"nodev", {true, MS_NODEV}},
      {"nodiratime", {true, MS_NODIRATIME}},
      {"noexec", {true, MS_NOEXEC}},
      {"nosuid", {true, MS_NOSUID}},
      {"rbind", {true, MS_BIND | MS_REC}},
      {"relatime", {true, MS_RELATIME}},
      {"ro", {true, MS_RDONLY}},
      {"rw", {false, MS_RDONLY}},
      {"strictatime", {true, MS_STRICTATIME}},
      {"suid", {false, MS_NOSUID}},
      {"sync", {true, MS_SYNCHRONOUS}},
  };
  static const std::map<std::string, unsigned long> kPropagation = {
      {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
      {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
      {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
      {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
  };
  MountFlags out;
  if (!options.is_array()) return out;
  for (const auto& item : options) {
    std::string option = item.get<std::string>();
    if (auto flag = kFlags.find(option); flag != kFlags.end()) {
      if (flag->second.first) {
        out.flags |= flag->second.second;
      } else {
        out.flags &= ~flag->second.second;
      }
    } else if (auto propagation = kPropagation.find(option); propagation != kPropagation.end()) {
      out.propagation = propagation->second;
    } else {
      out.data.push_back(option);
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, char separator) {
  std::string out;
  for (const std::string& part : parts) {
    if (!out.empty()) out += separator;
    out += part;
  }
  return out;
}

// The flags a mount already has that an unprivileged remount may not clear (the kernel locks them
// on mounts inherited into a user namespace), so that a read-only remount keeps them.
unsigned long locked_flags(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

// strerror as Go spells it (lowercase), which is how Docker's messages read.
std::string go_strerror(int err) {
  std::string text = std::strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

std::string fd_path(int fd) {
  return fmt::format("/proc/self/fd/{}", fd);
}

// ---- paths inside the root, never by joining host strings

// Creates `path` (absolute, inside the root) and its missing parents, as a directory or, for the
// last component when `file` is set, an empty file. Symlinks are resolved inside the root.
void make_in_root(int root_fd, const std::string& path, bool file) {
  std::vector<std::string> parts = normalize_clamped(path);
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string prefix = join_components(parts, i + 1);
    Fd existing = open_in_root(root_fd, prefix, O_PATH);
    if (existing.valid()) continue;
    if (errno != ENOENT) fail(fmt::format("resolve `{}` in the root", "/" + prefix));
    Fd parent = open_in_root(root_fd, join_components(parts, i), O_PATH | O_DIRECTORY);
    if (!parent.valid()) fail(fmt::format("resolve `{}` in the root", "/" + join_components(parts, i)));
    bool last = i + 1 == parts.size();
    if (last && file) {
      Fd created(::openat(parent.get(), parts[i].c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!created.valid() && errno != EEXIST) fail(fmt::format("create `{}`", "/" + prefix));
    } else if (::mkdirat(parent.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
      fail(fmt::format("create directory `{}`", "/" + prefix));
    }
  }
}

Fd open_mountpoint(int root_fd, const std::string& path) {
  Fd fd = open_in_root(root_fd, join_components(normalize_clamped(path)), O_PATH);
  if (!fd.valid()) fail(fmt::format("open mount point `{}`", path));
  return fd;
}

// ---- the child

struct ExecPlan;

struct Prepared {
  const nlohmann::json* spec;
  const SandboxOptions* options;
  std::string root_path;  // absolute host path of the root
  bool new_user_namespace = false;
  bool new_network_namespace = false;
  int sync_read = -1, sync_write = -1;
  int error_read = -1, error_write = -1;
  int lifeline = -1;                       // read end of a pipe kiln holds open until the container is gone
  int lifeline_write = -1;                 // its write end, which the child closes
  bool terminal = false;                   // process.terminal: a pty from the container's devpts
  int console_socket = -1;                 // the child sends the pty's master side through it
  int console_parent = -1;                 // the parent's end, which the child closes
  const SeccompFilter* seccomp = nullptr;  // compiled in the parent; the child only installs it
  ExecPlan* exec = nullptr;                // the parent's; the child fills it in
};

void mount_root(const Prepared& prepared) {
  // Nothing mounted from here on may reach the host's mount table, and nothing mounted on the
  // host later reaches in.
  check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "make mounts private");
  const std::string& root = prepared.root_path;
  if (const auto& overlay = prepared.options->overlay) {
    // Layers are listed top first in lowerdir; the image lists them bottom first.
    std::vector<std::string> lowers(overlay->lower_dirs.rbegin(), overlay->lower_dirs.rend());
    std::string data = fmt::format("lowerdir={},upperdir={},workdir={}", join(lowers, ':'),
                                   overlay->upper_dir, overlay->work_dir);
    // In a user namespace overlay keeps its own metadata in user.* xattrs.
    std::string with_user_xattr = data + ",userxattr";
    if (::mount("overlay", root.c_str(), "overlay", 0,
                (prepared.new_user_namespace ? with_user_xattr : data).c_str()) == 0) {
      return;
    }
    // Root of a user namespace kiln entered before (a rootless build): overlay wants userxattr
    // there too.
    if (!prepared.new_user_namespace && (errno == EPERM || errno == EINVAL) &&
        ::mount("overlay", root.c_str(), "overlay", 0, with_user_xattr.c_str()) == 0) {
      return;
    }
    // No overlay here (kiln inside a container whose own storage is overlay gets EINVAL, a kernel
    // without it ENODEV, a user namespace it refuses EPERM): the layers copied instead, as
    // Docker's vfs driver does. The copy lives in the container's rootfs/ and goes with it.
    int err = errno;
    if (err != EINVAL && err != ENODEV && err != EPERM && err != ENOTSUP) {
      fail(fmt::format("mount the root filesystem (overlay on `{}`)", root), err);
    }
    flatten_layers(overlay->lower_dirs, root);
  }
  // pivot_root needs the new root to be a mount point.
  check(::mount(root.c_str(), root.c_str(), nullptr, MS_BIND | MS_REC, nullptr),
        fmt::format("bind the root `{}`", root));
}

void mount_one(int root_fd, const nlohmann::json& mount, const Prepared& prepared) {
  std::string destination = mount.value("destination", "");
  std::string type = mount.value("type", "");
  std::string source = mount.value("source", "");
  MountFlags options = parse_mount_options(mount.value("options", nlohmann::json::array()));
  bool bind = (options.flags & MS_BIND) != 0 || type == "bind";
  if (bind && !source.empty() && source.front() != '/') source = prepared.options->bundle_dir + "/" + source;
  bool file_target = false;
  if (bind) {
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0) fail(fmt::format("bind mount source `{}`", source));
    file_target = !S_ISDIR(st.st_mode);
  }
  make_in_root(root_fd, destination, file_target);
  Fd target = open_mountpoint(root_fd, destination);
  std::string target_path = fd_path(target.get());
  std::string data = join(options.data, ',');
  if (bind) {
    unsigned long bind_flags = MS_BIND | (options.flags & MS_REC);
    check(::mount(source.c_str(), target_path.c_str(), nullptr, bind_flags, nullptr),
          fmt::format("bind `{}` on `{}`", source, destination));
    unsigned long extra = options.flags & ~(MS_BIND | MS_REC);
    if (extra != 0) {
      Fd mounted = open_mountpoint(root_fd, destination);
      std::string mounted_path = fd_path(mounted.get());
      check(::mount(nullptr, mounted_path.c_str(), nullptr,
                    MS_REMOUNT | MS_BIND | extra | locked_flags(mounted_path), nullptr),
            fmt::format("remount `{}`", destination));
    }
  } else {
    const char* device = source.empty() ? type.c_str() : source.c_str();
    int result = ::mount(device, target_path.c_str(), type.c_str(), options.flags, data.c_str());
    if (result != 0 && type == "sysfs" && (errno == EPERM || errno == EACCES)) {
      // A user namespace that does not own the network namespace (rootless with the host's
      // network) may not mount sysfs; the host's, read-only, is what runc gives it then.
      result = ::mount("/sys", target_path.c_str(), nullptr, MS_BIND | MS_REC, nullptr);
      if (result == 0) {
        Fd mounted = open_mountpoint(root_fd, destination);
        std::string mounted_path = fd_path(mounted.get());
        result = ::mount(nullptr, mounted_path.c_str(), nullptr,
                         MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(mounted_path), nullptr);
      }
    }
    if (result != 0 && type == "devpts" && errno == EINVAL) {
      // gid=5 (tty) may not be mapped in a user namespace.
      std::vector<std::string> without_gid;
      std::copy_if(options.data.begin(), options.data.end(), std::back_inserter(without_gid),
                   [](const std::string& option) { return !option.starts_with("gid="); });
      result =
          ::mount(device, target_path.c_str(), type.c_str(), options.flags, join(without_gid, ',').c_str());
    }
    if (result != 0) fail(fmt::format("mount {} on `{}`", type, destination));
  }
  if (options.propagation != 0) {
    Fd mounted = open_mountpoint(root_fd, destination);
    check(::mount(nullptr, fd_path(mounted.get()).c_str(), nullptr, options.propagation, nullptr),
          fmt::format("set propagation of `{}`", destination));
  }
}

struct Device {
  const char* name;
  unsigned major, minor;
};
constexpr Device kDevices[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                               {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};

void create_devices(int root_fd, const Prepared& prepared) {
  Fd dev = open_in_root(root_fd, "dev", O_PATH | O_DIRECTORY);
  if (!dev.valid()) fail("open /dev in the root");
  for (const Device& device : kDevices) {
    if (::mknodat(dev.get(), device.name, S_IFCHR | 0666, makedev(device.major, device.minor)) == 0) {
      check(::fchmodat(dev.get(), device.name, 0666, 0), fmt::format("chmod /dev/{}", device.name));
      continue;
    }
    if (errno != EPERM) fail(fmt::format("create /dev/{}", device.name));
    // No mknod in a user namespace: the host's node, bound, as runc does for rootless.
    Fd placeholder(::openat(dev.get(), device.name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666));
    if (!placeholder.valid()) fail(fmt::format("create /dev/{}", device.name));
    Fd target(::openat(dev.get(), device.name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    std::string host = fmt::format("/dev/{}", device.name);
    check(::mount(host.c_str(), fd_path(target.get()).c_str(), nullptr, MS_BIND, nullptr),
          fmt::format("bind {} into the container", host));
  }
  const std::pair<const char*, const char*> links[] = {{"/proc/self/fd", "fd"},
                                                       {"/proc/self/fd/0", "stdin"},
                                                       {"/proc/self/fd/1", "stdout"},
                                                       {"/proc/self/fd/2", "stderr"},
                                                       {"pts/ptmx", "ptmx"}};
  for (const auto& [target, name] : links) {
    if (::symlinkat(target, dev.get(), name) != 0 && errno != EEXIST) fail(fmt::format("link /dev/{}", name));
  }
  if (::access("/proc/kcore", F_OK) == 0 && ::symlinkat("/proc/kcore", dev.get(), "core") != 0 &&
      errno != EEXIST) {
    fail("link /dev/core");
  }
  if (prepared.terminal) {
    // The mount point for the terminal, bound once the pty exists (after the pivot).
    Fd console(::openat(dev.get(), "console", O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!console.valid()) fail("create /dev/console");
  }
}

// The process's terminal, made as runc makes it: a pty of the container's own devpts instance
// (so that the process sees /dev/pts/0, as under Docker), bound on /dev/console, with its master
// side handed to kiln over a socket (runc's --console-socket).
void attach_terminal(const Prepared& prepared) {
  Fd master(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master.valid()) fail("open the container's /dev/ptmx");
  check(::unlockpt(master.get()), "unlock the terminal");
  char name[64];
  if (::ptsname_r(master.get(), name, sizeof name) != 0) fail("name the terminal");
  Fd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave.valid()) fail(fmt::format("open the terminal `{}`", name));
  if (::access("/dev/console", F_OK) == 0) {
    check(::mount(name, "/dev/console", nullptr, MS_BIND, nullptr), "bind the terminal on /dev/console");
  }
  char byte = 0;
  iovec data{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  int master_fd = master.get();
  std::memcpy(CMSG_DATA(header), &master_fd, sizeof master_fd);
  if (::sendmsg(prepared.console_socket, &message, MSG_NOSIGNAL) != 1) fail("hand the terminal to kiln");
  ::close(prepared.console_socket);
  master.reset();
  check(::setsid(), "start a session");
  check(::ioctl(slave.get(), TIOCSCTTY, 0), "take the terminal");
  for (int fd = 0; fd < 3; ++fd) check(::dup2(slave.get(), fd), "attach the terminal");
}

// The parent's side of attach_terminal: the master, or an invalid Fd when the child failed first.
Fd receive_terminal(int socket) {
  char byte = 0;
  iovec data{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t got;
  while ((got = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  cmsghdr* header = got > 0 ? CMSG_FIRSTHDR(&message) : nullptr;
  if (!header || header->cmsg_type != SCM_RIGHTS) return Fd();
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return Fd(fd);
}

void pivot_into(const std::string& root) {
  // runc's way: with both arguments ".", the old root ends up stacked under the new one, and a
  // lazy unmount of "." detaches it without needing a directory for it inside the container.
  Fd old_root(::open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  if (!old_root.valid()) fail("open the old root");
  check(::chdir(root.c_str()), fmt::format("enter the root `{}`", root));
  check(static_cast<int>(::syscall(SYS_pivot_root, ".", ".")), "pivot_root");
  check(::fchdir(old_root.get()), "enter the old root");
  // The old root must not propagate the unmount back into the host's namespace.
  check(::mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr), "make the old root a slave");
  check(::umount2(".", MNT_DETACH), "detach the old root");
  check(::chdir("/"), "enter /");
}

void mask_paths(const nlohmann::json& linux_section) {
  // runc's order: read-only paths first, then the masks (a mask under a read-only path still
  // lands).
  for (const auto& item : linux_section.value("readonlyPaths", nlohmann::json::array())) {
    std::string path = item.get<std::string>();
    if (::access(path.c_str(), F_OK) != 0) continue;
    check(::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr),
          fmt::format("bind `{}` read-only", path));
    check(::mount(nullptr, path.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(path),
                  nullptr),
          fmt::format("remount `{}` read-only", path));
  }
  for (const auto& item : linux_section.value("maskedPaths", nlohmann::json::array())) {
    std::string path = item.get<std::string>();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // a path the kernel does not have needs no mask
    int result = S_ISDIR(st.st_mode) ? ::mount("tmpfs", path.c_str(), "tmpfs", MS_RDONLY, nullptr)
                                     : ::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
    if (result != 0) fail(fmt::format("mask `{}`", path));
  }
}

void bring_loopback_up() {
  Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) fail("open a socket to configure loopback");
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  check(::ioctl(socket.get(), SIOCGIFFLAGS, &request), "read loopback's flags");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  check(::ioctl(socket.get(), SIOCSIFFLAGS, &request), "bring loopback up");
}

std::vector<std::string> strings_of(const nlohmann::json& array) {
  std::vector<std::string> out;
  if (array.is_array()) {
    for (const auto& item : array) out.push_back(item.get<std::string>());
  }
  return out;
}

std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// What the process execs: the command's candidate paths (the container's PATH, not kiln's, which
// execvpe would use), its arguments and environment. It lives in the parent's memory, made before
// the exec: a child that shares that memory (CLONE_VM) frees everything it allocated itself before
// it execs, and would otherwise leave these in kiln's heap for good.
struct ExecPlan {
  std::string command;
  std::vector<std::string> candidates;
  std::vector<std::string> args, env;
  std::vector<char*> argv, envp;
};

void plan_exec(ExecPlan& plan, std::vector<std::string> args, std::vector<std::string> env) {
  plan.command = args.front();
  plan.args = std::move(args);
  plan.env = std::move(env);
  plan.argv = pointers_to(plan.args);
  plan.envp = pointers_to(plan.env);
  plan.candidates = exec_candidates(plan.command, plan.env);
}

// Returns only on failure, with the exit code and message Docker gives. Allocates nothing until
// every candidate has failed.
[[noreturn]] void exec_planned(const ExecPlan& plan) {
  int denied = 0;
  int last = ENOENT;
  for (const std::string& candidate : plan.candidates) {
    ::execve(candidate.c_str(), plan.argv.data(), plan.envp.data());
    last = errno;
    if (last == EACCES || last == ENOEXEC) denied = last;
  }
  if (plan.command.find('/') != std::string::npos) {
    throw ChildError(last == ENOENT ? kExitCommandNotFound : kExitNotExecutable,
                     fmt::format("exec: \"{}\": {}", plan.command, go_strerror(last)));
  }
  if (denied != 0) {
    throw ChildError(kExitNotExecutable, fmt::format("exec: \"{}\": {}", plan.command, go_strerror(denied)));
  }
  throw ChildError(kExitCommandNotFound,
                   fmt::format("exec: \"{}\": executable file not found in $PATH", plan.command));
}

// The signal state a container's process starts with: nothing blocked, and none of the signals a
// shell or nohup may have left ignored in kiln (exec keeps an ignored signal ignored) still ignored.
// Handlers need no reset: exec drops them. The child has its own table of dispositions even while
// it shares kiln's memory (no CLONE_SIGHAND), so kiln's own are untouched.
void reset_signals_for_exec() {
  for (int signal : {SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM, SIGTSTP,
                     SIGTTIN, SIGTTOU, SIGWINCH}) {
    struct sigaction current {};
    if (::sigaction(signal, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) {
      struct sigaction default_action {};
      default_action.sa_handler = SIG_DFL;
      ::sigaction(signal, &default_action, nullptr);
    }
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// PID 1 for --init: runs the process as its child, passes signals on, reaps every orphan, and
// exits as the process exited (tini's behaviour, which is what `docker run --init` runs).
[[noreturn]] void run_init(const Prepared& prepared, std::vector<std::string> args,
                           std::vector<std::string> env) {
  sigset_t forwarded;
  ::sigfillset(&forwarded);
  ::sigprocmask(SIG_BLOCK, &forwarded, nullptr);
  pid_t child = ::fork();
  if (child < 0) fail("fork the process under init");
  if (child > 0) ::prctl(PR_SET_NAME, "init", 0, 0, 0);
  if (child == 0) {
    ::setpgid(0, 0);
    reset_signals_for_exec();
    ExecPlan plan;
    plan_exec(plan, std::move(args), std::move(env));
    exec_planned(plan);
  }
  // The error pipe belongs to the process now: its exec closes it.
  ::close(prepared.error_write);
  for (;;) {
    siginfo_t info{};
    int signal = ::sigwaitinfo(&forwarded, &info);
    if (signal < 0) continue;
    if (signal != SIGCHLD) {
      ::kill(child, signal);
      continue;
    }
    int status = 0;
    pid_t reaped;
    while ((reaped = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (reaped != child) continue;
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
  }
}

void set_user(const nlohmann::json& user) {
  std::vector<gid_t> groups;
  for (const auto& gid : user.value("additionalGids", nlohmann::json::array()))
    groups.push_back(gid.get<gid_t>());
  uid_t uid = user.value("uid", 0U);
  gid_t gid = user.value("gid", 0U);
  // A rootless user namespace with only the caller's own ID mapped had setgroups denied (the
  // kernel's price for an unprivileged gid map); there the process keeps no supplementary groups,
  // as under rootless runc, since only one group exists in it anyway.
  if (::setgroups(groups.size(), groups.data()) != 0) {
    int err = errno;
    char state[16] = {};
    Fd setgroups_file(::open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC));
    bool denied = setgroups_file.valid() && ::read(setgroups_file.get(), state, sizeof state - 1) > 0 &&
                  std::string_view(state).starts_with("deny");
    if (!(err == EPERM && denied)) fail("set supplementary groups", err);
  }
  check(::setresgid(gid, gid, gid), fmt::format("set group id {}", gid));
  check(::setresuid(uid, uid, uid), fmt::format("set user id {}", uid));
}

// Sets the container up and plans the exec; returns with everything it allocated freed (see
// ExecPlan).
void child_main(const Prepared& prepared) {
  const nlohmann::json& spec = *prepared.spec;
  ::close(prepared.sync_write);
  ::close(prepared.error_read);
  if (prepared.console_parent >= 0) ::close(prepared.console_parent);
  ::close(prepared.lifeline_write);
  // No daemon keeps a container alive: it lives as long as the kiln that runs it.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  char go = 0;
  if (::read(prepared.sync_read, &go, 1) != 1) ::_exit(kExitRunFailed);  // the parent gave up
  ::close(prepared.sync_read);
  // Nothing in this process may be inspected through /proc by the container before exec replaces
  // it (runc's CVE-2019-5736 class); exec restores dumpability for the container's own binary.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  ::umask(0);
  // The caller's descriptors for the process's output, in place before anything can fail, so that
  // they also carry what a failing --init would print.
  if (prepared.options->stdout_fd >= 0)
    check(::dup2(prepared.options->stdout_fd, STDOUT_FILENO), "attach standard output");
  if (prepared.options->stderr_fd >= 0)
    check(::dup2(prepared.options->stderr_fd, STDERR_FILENO), "attach standard error");
  // Without -i the process reads nothing, as under Docker: the container's /dev/null, or the
  // host's when the spec gives the container no /dev.
  bool detach_stdin = !prepared.terminal && !prepared.options->attach_stdin;
  Fd host_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  nlohmann::json process = spec.at("process");
  const nlohmann::json linux_section = spec.value("linux", nlohmann::json::object());

  mount_root(prepared);
  {
    Fd root(::open(prepared.root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root.valid()) fail(fmt::format("open the root `{}`", prepared.root_path));
    bool dev_is_tmpfs = false;
    for (const auto& mount : spec.value("mounts", nlohmann::json::array())) {
      mount_one(root.get(), mount, prepared);
      if (mount.value("destination", "") == "/dev") dev_is_tmpfs = true;
    }
    if (dev_is_tmpfs) create_devices(root.get(), prepared);
    if (prepared.options->finish_process) prepared.options->finish_process(root.get(), process);
    std::string cwd = process.value("cwd", "/");
    make_in_root(root.get(), cwd, false);
  }
  pivot_into(prepared.root_path);
  if (prepared.terminal) attach_terminal(prepared);
  if (detach_stdin) {
    Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    check(::dup2(null.valid() ? null.get() : host_null.get(), STDIN_FILENO),
          "attach /dev/null as standard input");
  }
  host_null.reset();
  mask_paths(linux_section);
  if (spec.value("root", nlohmann::json::object()).value("readonly", false)) {
    check(::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags("/"), nullptr),
          "make the root read-only");
  }
  if (spec.contains("hostname")) {
    std::string hostname = spec.at("hostname").get<std::string>();
    check(::sethostname(hostname.data(), hostname.size()), "set the hostname");
  }
  if (prepared.new_network_namespace) bring_loopback_up();
  std::string cwd = process.value("cwd", "/");
  check(::chdir(cwd.c_str()), fmt::format("enter the working directory `{}`", cwd));
  // A working directory reached through a descriptor kiln still holds (/proc/self/fd/N) would
  // lie outside the container's root (runc's CVE-2024-21626); the kernel then names it
  // "(unreachable)…" instead of a path.
  char resolved[4096];
  if (::getcwd(resolved, sizeof resolved) == nullptr || resolved[0] != '/') {
    throw ChildError(
        kExitRunFailed,
        fmt::format("the working directory `{}` is outside the container's root filesystem", cwd));
  }

  const nlohmann::json caps = process.value("capabilities", nlohmann::json::object());
  CapabilitySets sets{strings_of(caps.value("bounding", nlohmann::json::array())),
                      strings_of(caps.value("effective", nlohmann::json::array())),
                      strings_of(caps.value("permitted", nlohmann::json::array())),
                      strings_of(caps.value("inheritable", nlohmann::json::array())),
                      strings_of(caps.value("ambient", nlohmann::json::array()))};
  // Without no_new_privs, installing the filter needs CAP_SYS_ADMIN, which is about to go: install
  // it now, as runc does (the default profile allows every call made from here to exec). With
  // no_new_privs it goes last, just before exec.
  bool no_new_privileges = process.value("noNewPrivileges", false);
  if (prepared.seccomp && !no_new_privileges) {
    if (int err = prepared.seccomp->load(); err != 0) fail("install the seccomp filter", err);
  }
  // runc's order: the bounding set while still root (dropping needs CAP_SETPCAP), then the user
  // with keepcaps so that the permitted set survives the change, then the other sets.
  if (int err = drop_bounding_set(sets); err != 0) fail("drop capabilities from the bounding set", err);
  check(::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities");
  set_user(process.value("user", nlohmann::json::object()));
  check(::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "stop keeping capabilities");
  // The change of user cleared the parent-death signal; set it again (exec keeps it). A kiln that
  // died in between would never send it: its end of the lifeline pipe tells.
  check(::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "tie the container to kiln");
  pollfd lifeline{prepared.lifeline, POLLIN, 0};
  if (::poll(&lifeline, 1, 0) > 0 && (lifeline.revents & (POLLHUP | POLLERR))) ::_exit(kExitRunFailed);
  if (int err = apply_capabilities(sets); err != 0) fail("set capabilities", err);
  if (no_new_privileges) {
    check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs");
    if (prepared.seccomp) {
      if (int err = prepared.seccomp->load(); err != 0) fail("install the seccomp filter", err);
    }
  }
  // Every fd but the standard three and the error pipe (close-on-exec itself) closes at exec:
  // none of kiln's may reach the container (CVE-2024-21626).
  check(static_cast<int>(::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC)), "mark fds close-on-exec");

  std::vector<std::string> args = strings_of(process.at("args"));
  std::vector<std::string> env = strings_of(process.value("env", nlohmann::json::array()));
  if (args.empty()) throw ChildError(kExitRunFailed, "no command specified");
  // The process's umask, as runc gives it unless the spec says otherwise: 0022 (kiln set 0 to
  // make the container's mount points and devices with their exact modes).
  mode_t umask_value = 022;
  if (auto user = process.find("user"); user != process.end() && user->contains("umask")) {
    umask_value = user->at("umask").get<mode_t>();
  }
  ::umask(umask_value);
  if (prepared.options->init) run_init(prepared, std::move(args), std::move(env));
  plan_exec(*prepared.exec, std::move(args), std::move(env));
}

[[noreturn]] void child_entry(const Prepared& prepared) {
  ChildFailure failure;
  try {
    child_main(prepared);
    reset_signals_for_exec();
    exec_planned(*prepared.exec);
  } catch (const ChildError& error) {
    failure.exit_code = error.exit_code();
    std::snprintf(failure.message, sizeof failure.message, "%s", error.what());
  } catch (const std::exception& error) {
    std::snprintf(failure.message, sizeof failure.message, "%s", error.what());
  }
  ssize_t written = ::write(prepared.error_write, &failure, sizeof failure);
  (void)written;  // the parent learns of a failure either way: the exit code says it
  ::_exit(failure.exit_code);
}

// ---- the parent

// What the parent runs after the child exists and before it lets it go: ID maps, cgroup.
void write_id_maps(pid_t pid, const nlohmann::json& linux_section) {
  auto render = [](const nlohmann::json& mappings) {
    std::string out;
    for (const auto& m : mappings) {
      out += fmt::format("{} {} {}\n", m.at("containerID").get<uint64_t>(), m.at("hostID").get<uint64_t>(),
                         m.at("size").get<uint64_t>());
    }
    return out;
  };
  auto write_map = [&](const char* file, const std::string& content) {
    std::string path = fmt::format("/proc/{}/{}", pid, file);
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid() ||
        ::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
      throw_errno(fmt::format("write `{}`", path));
    }
  };
  const nlohmann::json uid_mappings = linux_section.value("uidMappings", nlohmann::json::array());
  const nlohmann::json gid_mappings = linux_section.value("gidMappings", nlohmann::json::array());
  // An unprivileged user may write only a map of its own single ID (and a gid map only once
  // setgroups is denied); anything wider goes through the setuid helpers from /etc/subuid and
  // /etc/subgid, as podman and rootlesskit do.
  auto own_id_only = [](const nlohmann::json& mappings, uint64_t id) {
    return mappings.size() == 1 && mappings[0].at("hostID").get<uint64_t>() == id &&
           mappings[0].at("size").get<uint64_t>() == 1;
  };
  if (::geteuid() == 0) {
    write_map("uid_map", render(uid_mappings));
    write_map("gid_map", render(gid_mappings));
    return;
  }
  auto helper = [&](const char* program, const nlohmann::json& mappings) {
    std::vector<std::string> args = {program, std::to_string(pid)};
    for (const auto& m : mappings) {
      for (const char* key : {"containerID", "hostID", "size"})
        args.push_back(std::to_string(m.at(key).get<uint64_t>()));
    }
    std::vector<char*> argv = pointers_to(args);
    pid_t helper_pid = ::fork();
    if (helper_pid < 0) throw_errno(fmt::format("run {}", program));
    if (helper_pid == 0) {
      ::execvp(program, argv.data());
      ::_exit(127);
    }
    int status = wait_for(helper_pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw SandboxError(fmt::format(
          "rootless: {} failed (exit {}): the user needs ranges in /etc/subuid and /etc/subgid and the "
          "uidmap package's setuid helpers",
          program, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)));
    }
  };
  if (own_id_only(uid_mappings, ::geteuid())) {
    write_map("uid_map", render(uid_mappings));
  } else {
    helper("newuidmap", uid_mappings);
  }
  if (own_id_only(gid_mappings, ::getegid())) {
    write_map("setgroups", "deny");
    write_map("gid_map", render(gid_mappings));
  } else {
    helper("newgidmap", gid_mappings);
  }
}

struct ChildProcess {
  pid_t pid = -1;
  Fd pidfd;
};

[[noreturn]] void throw_clone_failure(uint64_t flags, int err) {
  if ((flags & CLONE_NEWUSER) && (err == EPERM || err == ENOSPC || err == EACCES)) {
    throw SandboxError(fmt::format(
        "rootless: the kernel refused a user namespace ({}); unprivileged user namespaces may be off "
        "(sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor policy)",
        std::strerror(err)));
  }
  throw_errno("create the container's namespaces (clone)", err);
}

// fork's form: returns in both processes, the child seeing pid 0.
ChildProcess clone_child(uint64_t flags) {
  clone_args args{};
  int pidfd = -1;
  args.flags = flags | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) throw_clone_failure(flags, errno);
  ChildProcess child;
  child.pid = static_cast<pid_t>(pid);
  if (pid > 0) child.pidfd = Fd(pidfd);
  return child;
}

// The stack of the container's first process until it execs. Only the pages it touches are ever
// backed; a guard page below catches an overflow.
class ChildStack {
 public:
  ChildStack() {
    void* base = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) throw_errno("map a stack for the container's process");
    base_ = base;
    ::mprotect(base_, kGuardSize, PROT_NONE);
  }
  ~ChildStack() { ::munmap(base_, kSize); }
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;
  void* top() const { return static_cast<char*>(base_) + kSize; }

 private:
  static constexpr size_t kSize = size_t{8} << 20;
  static constexpr size_t kGuardSize = 4096;
  void* base_ = nullptr;
};

int child_trampoline(void* prepared) {
  child_entry(*static_cast<const Prepared*>(prepared));
}

// The container's first process, running child_entry. Given a stack, it runs on it in kiln's own
// memory until it execs, as posix_spawn's child does, instead of in a copy of that memory: no page
// tables to copy, and no copy-on-write fault for each page either process then writes (about 200
// of them a run, over 2 ms on a VM). kiln keeps out of its heap meanwhile: it only writes the ID
// maps before letting the child go, while the child waits without allocating, and then waits
// itself until the exec or the failure report. Without a stack the child gets a copy, in fork's
// form, on its copy of kiln's stack.
ChildProcess start_child(uint64_t flags, const ChildStack* stack, const Prepared& prepared) {
  if (!stack) {
    ChildProcess child = clone_child(flags);
    if (child.pid == 0) child_entry(prepared);
    return child;
  }
  int pidfd = -1;
  int clone_flags = static_cast<int>(flags) | CLONE_PIDFD | CLONE_VM | SIGCHLD;
  pid_t pid = ::clone(child_trampoline, stack->top(), clone_flags, const_cast<Prepared*>(&prepared), &pidfd);
  if (pid < 0) throw_clone_failure(flags, errno);
  ChildProcess child;
  child.pid = pid;
  child.pidfd = Fd(pidfd);
  return child;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitRunFailed;
}

// Puts the host terminal in raw mode for the container's pty, and restores it.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (::isatty(fd_) && ::tcgetattr(fd_, &saved_) == 0) {
      termios raw = saved_;
      ::cfmakeraw(&raw);
      active_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
    }
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

void copy_window_size(int from, int to) {
  winsize size{};
  if (::ioctl(from, TIOCGWINSZ, &size) == 0) ::ioctl(to, TIOCSWINSZ, &size);
}

// Copies one read's worth from `from` to `to`. Returns the bytes copied, 0 when nothing was ready,
// -1 at the end of the input (a pty whose other side closed reads EIO).
ssize_t pump(int from, int to) {
  char buffer[16384];
  ssize_t n = ::read(from, buffer, sizeof buffer);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
  if (n <= 0) return -1;
  for (ssize_t done = 0; done < n;) {
    ssize_t w = ::write(to, buffer + done, static_cast<size_t>(n - done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += w;
  }
  return n;
}

}  // namespace

SandboxExit run_sandbox(const nlohmann::json& spec, const SandboxOptions& options) {
  Prepared prepared;
  prepared.spec = &spec;
  prepared.options = &options;
  const nlohmann::json linux_section = spec.value("linux", nlohmann::json::object());
  std::string root = spec.at("root").at("path").get<std::string>();
  prepared.root_path = root.starts_with("/") ? root : options.bundle_dir + "/" + root;

  uint64_t flags = 0;
  for (const auto& ns : linux_section.value("namespaces", nlohmann::json::array())) {
    if (ns.contains("path"))
      throw UsageError("joining an existing namespace (namespaces[].path) is not supported");
    std::string type = ns.at("type").get<std::string>();
    if (type == "mount")
      flags |= CLONE_NEWNS;
    else if (type == "pid")
      flags |= CLONE_NEWPID;
    else if (type == "uts")
      flags |= CLONE_NEWUTS;
    else if (type == "ipc")
      flags |= CLONE_NEWIPC;
    else if (type == "network")
      flags |= CLONE_NEWNET;
    else if (type == "user")
      flags |= CLONE_NEWUSER;
    else if (type == "cgroup")
      flags |= CLONE_NEWCGROUP;
    else
      throw InvalidInputError(fmt::format("spec: unknown namespace type `{}`", type));
  }
  if (!(flags & CLONE_NEWNS)) throw InvalidInputError("spec: the sandbox needs a mount namespace");
  prepared.new_user_namespace = (flags & CLONE_NEWUSER) != 0;
  prepared.new_network_namespace = (flags & CLONE_NEWNET) != 0;

  bool terminal = spec.at("process").value("terminal", false);
  Fd terminal_master;
  Fd console_parent, console_child;
  if (terminal) {
    int sockets[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0)
      throw_errno("create a console socket");
    console_parent = Fd(sockets[0]);
    console_child = Fd(sockets[1]);
    prepared.terminal = true;
    prepared.console_socket = console_child.get();
    prepared.console_parent = console_parent.get();
  }

  auto [sync_read, sync_write] = make_pipe();
  auto [error_read, error_write] = make_pipe();
  // Held until this function returns, which is after the container is gone.
  auto [lifeline_read, lifeline_write] = make_pipe();
  prepared.lifeline = lifeline_read.get();
  prepared.lifeline_write = lifeline_write.get();
  prepared.sync_read = sync_read.get();
  prepared.sync_write = sync_write.get();
  prepared.error_read = error_read.get();
  prepared.error_write = error_write.get();

  // The spec's limits, as runc reads linux.resources; a limit that cannot be applied fails here,
  // before anything runs.
  ResourceLimits limits;
  const nlohmann::json resources = linux_section.value("resources", nlohmann::json::object());
  if (resources.contains("memory") && resources["memory"].contains("limit")) {
    limits.memory_bytes = resources["memory"]["limit"].get<int64_t>();
  }
  if (resources.contains("cpu") && resources["cpu"].contains("quota")) {
    limits.cpu_quota_us = resources["cpu"]["quota"].get<int64_t>();
    limits.cpu_period_us = resources["cpu"].value("period", int64_t{100000});
  }
  if (resources.contains("pids") && resources["pids"].contains("limit")) {
    limits.pids = resources["pids"]["limit"].get<int64_t>();
  }
  std::optional<SeccompFilter> seccomp;
  if (linux_section.contains("seccomp") && !linux_section["seccomp"].is_null()) {
    seccomp = options.seccomp_cache_dir.empty()
                  ? SeccompFilter::compile(linux_section["seccomp"])
                  : SeccompFilter::compile_cached(linux_section["seccomp"], options.seccomp_cache_dir);
    prepared.seccomp = &*seccomp;
  }
  std::optional<Cgroup> cgroup;
  if (!limits.empty())
    cgroup = Cgroup::create(options.container_id.empty() ? "sandbox" : options.container_id, limits);

  ExecPlan exec_plan;
  prepared.exec = &exec_plan;
  // Dumpability belongs to the memory, which a sharing child sets to 0 for both: kiln's again once
  // the child is gone (a helper forked later, as for rootless removal, inherits it, and an
  // undumpable process's /proc files, uid_map among them, belong to root).
  struct RestoreDumpable {
    int value = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    ~RestoreDumpable() {
      if (value == 1) ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
  } restore_dumpable;
  // The --init child stays, as the container's reaper, after its child execs: it gets a copy. So
  // does every child under a sanitizer: AddressSanitizer takes the first exception thrown on the
  // child's stack for a stack gone wrong, and ThreadSanitizer's runtime crashes in the child (it
  // would share the parent thread's state).
  std::optional<ChildStack> stack;
  if (!options.init && !kUnderSanitizer) stack.emplace();
  ChildProcess child = start_child(flags, stack ? &*stack : nullptr, prepared);
  sync_read.reset();
  error_write.reset();
  lifeline_read.reset();

  auto reap = [&] { return wait_for(child.pid); };
  let_child_go(
      child.pid, sync_write,
      [&] {
        if (prepared.new_user_namespace) write_id_maps(child.pid, linux_section);
        if (cgroup) cgroup->add_process(child.pid);
      },
      "start the container");
  // Nothing from here until the child has exec'd or failed may allocate (see start_child).
  if (std::optional<ChildFailure> failure = read_failure(error_read.get())) {
    reap();
    if (failure->exit_code == kExitRunFailed) throw SandboxError(fmt::format("run: {}", failure->message));
    return SandboxExit{failure->exit_code, failure->message, false};
  }
  error_read.reset();
  if (terminal) {
    // The child sent the pty before it exec'd; the socket kept it.
    console_child.reset();
    terminal_master = receive_terminal(console_parent.get());
    console_parent.reset();
    if (terminal_master.valid()) copy_window_size(STDIN_FILENO, terminal_master.get());
    terminal = terminal_master.valid();
  }
  if (options.on_started) {
    try {
      options.on_started(child.pid);
    } catch (...) {
      ::kill(child.pid, SIGKILL);
      reap();
      throw;
    }
  }

  std::optional<RawTerminal> raw;
  bool stdin_open = terminal && options.attach_stdin;
  if (terminal) {
    raw.emplace(STDIN_FILENO);
    ::fcntl(terminal_master.get(), F_SETFL, ::fcntl(terminal_master.get(), F_GETFL) | O_NONBLOCK);
  }
  bool canceled = false;
  for (;;) {
    pollfd fds[5] = {{options.signal_fd, POLLIN, 0},
                     {child.pidfd.get(), POLLIN, 0},
                     {terminal ? terminal_master.get() : -1, POLLIN, 0},
                     {stdin_open ? STDIN_FILENO : -1, POLLIN, 0},
                     {canceled ? -1 : options.cancel_fd, POLLIN, 0}};
    if (::poll(fds, 5, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("wait for the container");
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      while (::read(options.signal_fd, &info, sizeof info) == sizeof info) {
        int signal = static_cast<int>(info.ssi_signo);
        if (signal == SIGCHLD) continue;
        if (signal == SIGWINCH) {
          if (terminal) copy_window_size(STDIN_FILENO, terminal_master.get());
          continue;
        }
        ::syscall(SYS_pidfd_send_signal, child.pidfd.get(), signal, nullptr, 0);
      }
    }
    if (fds[4].revents & (POLLIN | POLLHUP | POLLERR)) {
      // The container's PID 1 ignores every signal it has no handler for; only SIGKILL ends it
      // for sure, and with it the whole PID namespace.
      ::syscall(SYS_pidfd_send_signal, child.pidfd.get(), SIGKILL, nullptr, 0);
      canceled = true;
    }
    if (terminal && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (pump(terminal_master.get(), STDOUT_FILENO) < 0) terminal = false;
    }
    if (stdin_open && (fds[3].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (pump(STDIN_FILENO, terminal_master.get()) < 0) stdin_open = false;
    }
    if (fds[1].revents & POLLIN) {
      // Whatever the terminal still holds is the process's last output.
      if (terminal_master.valid()) {
        while (pump(terminal_master.get(), STDOUT_FILENO) > 0) {
        }
      }
      return SandboxExit{exit_code_of(reap()), "", canceled};
    }
  }
}

void remove_as_container_root(const std::string& path) {
  if (::geteuid() == 0) {
    remove_tree(path);
    return;
  }
  nlohmann::json linux_section = {{"uidMappings", rootless_id_mappings("/etc/subuid", ::geteuid())},
                                  {"gidMappings", rootless_id_mappings("/etc/subgid", ::getegid())}};
  auto [sync_read, sync_write] = make_pipe();
  auto [error_read, error_write] = make_pipe();
  ChildProcess child = clone_child(CLONE_NEWUSER);
  if (child.pid == 0) {
    ChildFailure failure;
    sync_write.reset();
    error_read.reset();
    char go = 0;
    if (::read(sync_read.get(), &go, 1) != 1) ::_exit(kExitRunFailed);
    try {
      remove_tree(path);
      ::_exit(0);
    } catch (const std::exception& error) {
      std::snprintf(failure.message, sizeof failure.message, "%s", error.what());
    }
    ssize_t written = ::write(error_write.get(), &failure, sizeof failure);
    (void)written;  // the exit status says it failed either way
    ::_exit(1);
  }
  sync_read.reset();
  error_write.reset();
  let_child_go(
      child.pid, sync_write, [&] { write_id_maps(child.pid, linux_section); },
      fmt::format("remove `{}`", path));
  std::optional<ChildFailure> failure = read_failure(error_read.get());
  int status = wait_for(child.pid);
  if (failure || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(fmt::format("remove `{}` in the container's user namespace: {}", path,
                            failure ? failure->message : "the helper process failed"));
  }
}

}  // namespace kiln::runtime

namespace kiln::runtime {

bool in_user_namespace() {
  // The initial namespace maps every ID to itself: "0 0 4294967295".
  std::string map;
  try {
    map = read_file_capped("/proc/self/uid_map", 1 << 16, "/proc/self/uid_map");
  } catch (const Error&) {
    return false;
  }
  unsigned long inside = 0, outside = 0, count = 0;
  if (std::sscanf(map.c_str(), "%lu %lu %lu", &inside, &outside, &count) != 3) return false;
  return !(inside == 0 && outside == 0 && count == 4294967295UL);
}

void become_root_in_user_namespace() {
  nlohmann::json linux_section;
  if (::geteuid() == 0) {
    nlohmann::json identity = nlohmann::json::array({{{"containerID", 0}, {"hostID", 0}, {"size", 65536}}});
    linux_section = {{"uidMappings", identity}, {"gidMappings", identity}};
  } else {
    linux_section = {{"uidMappings", rootless_id_mappings("/etc/subuid", ::geteuid())},
                     {"gidMappings", rootless_id_mappings("/etc/subgid", ::getegid())}};
  }
  auto [sync_read, sync_write] = make_pipe();
  auto [ready_read, ready_write] = make_pipe();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork into a user namespace");
  if (pid == 0) {
    sync_write.reset();
    ready_read.reset();
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::unshare(CLONE_NEWUSER) != 0) {
      int err = errno;
      ssize_t written = ::write(ready_write.get(), &err, sizeof err);
      (void)written;  // the parent reads the errno, or a closed pipe
      ::_exit(kExitRunFailed);
    }
    int ok = 0;
    if (::write(ready_write.get(), &ok, sizeof ok) != sizeof ok) ::_exit(kExitRunFailed);
    ready_write.reset();
    char go = 0;
    if (::read(sync_read.get(), &go, 1) != 1) ::_exit(kExitRunFailed);  // the parent gave up
    sync_read.reset();
    // Root of the namespace now that the maps are written; supplementary groups of the caller's
    // would show as nobody.
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) ::_exit(kExitRunFailed);
    ::setgroups(0, nullptr);
    return;
  }
  sync_read.reset();
  ready_write.reset();
  int err = -1;
  if (::read(ready_read.get(), &err, sizeof err) != sizeof err || err != 0) {
    wait_for(pid);
    if (err > 0) {
      throw SandboxError(fmt::format(
          "rootless: the kernel refused a user namespace ({}); unprivileged user namespaces may be off "
          "(sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor policy)",
          std::strerror(err)));
    }
    throw SandboxError("rootless: the user namespace could not be made");
  }
  let_child_go(
      pid, sync_write, [&] { write_id_maps(pid, linux_section); }, "enter the user namespace");
  // The parent only waits now: signals go to the child, which decides what they mean.
  sigset_t forwarded;
  ::sigemptyset(&forwarded);
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaddset(&forwarded, signal);
  ::sigprocmask(SIG_BLOCK, &forwarded, nullptr);
  Fd signals(::signalfd(-1, &forwarded, SFD_CLOEXEC));
  Fd child(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  for (;;) {
    pollfd fds[2] = {{signals.get(), POLLIN, 0}, {child.get(), POLLIN, 0}};
    if (::poll(fds, 2, child.valid() ? -1 : 50) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signals.get(), &info, sizeof info) == sizeof info)
        ::kill(pid, static_cast<int>(info.ssi_signo));
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
  }
  ::_exit(exit_code_of(wait_for(pid)));
}

}  // namespace kiln::runtime
