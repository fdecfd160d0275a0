#include "runtime/chroot_step.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "runtime/process_config.h"
#include "runtime/rootfs.h"
#include "runtime/sandbox.h"

namespace kiln::runtime {
namespace {

// What the comparison after the step looks at.
struct Seen {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  ino_t ino = 0;
  dev_t rdev = 0;
};

Seen seen_of(const struct stat& st) {
  return Seen{st.st_mode,
              st.st_uid,
              st.st_gid,
              st.st_size,
              static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
              st.st_ino,
              st.st_rdev};
}

bool same(const Seen& a, const Seen& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.size == b.size &&
         a.mtime_ns == b.mtime_ns && a.ino == b.ino && a.rdev == b.rdev;
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

// Every entry under `root`, by path relative to it.
void index_tree(int dirfd, const std::string& path, std::map<std::string, Seen>& out) {
  for (const std::string& name : list_dir_at(dirfd, path.empty() ? "/" : path)) {
    auto st = stat_at(dirfd, name);
    if (!st) continue;
    std::string child = join(path, name);
    out[child] = seen_of(*st);
    if (S_ISDIR(st->st_mode)) {
      Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.valid()) index_tree(sub.get(), child, out);
    }
  }
}

// Copies one entry of the root into the upper directory (its parent exists there).
void copy_entry(int root_fd, int upper_fd, const std::string& path, const struct stat& st) {
  const char* p = path.c_str();
  if (S_ISDIR(st.st_mode)) {
    if (::mkdirat(upper_fd, p, 0700) != 0 && errno != EEXIST) throw_errno(fmt::format("create `/{}`", path));
  } else if (S_ISREG(st.st_mode)) {
    Fd in(::openat(root_fd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in.valid()) throw_errno(fmt::format("open `/{}`", path));
    Fd out(::openat(upper_fd, p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out.valid()) throw_errno(fmt::format("create `/{}`", path));
    for (off_t done = 0; done < st.st_size;) {
      ssize_t n =
          ::copy_file_range(in.get(), nullptr, out.get(), nullptr, static_cast<size_t>(st.st_size - done), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS)) {
        char buffer[65536];
        ssize_t r = ::read(in.get(), buffer, sizeof buffer);
        if (r <= 0) break;
        FdWriter(out.get(), path).write(std::as_bytes(std::span(buffer, static_cast<size_t>(r))));
        done += r;
        continue;
      }
      if (n <= 0) break;
      done += n;
    }
  } else if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlinkat(root_fd, p, target, sizeof target - 1);
    if (n < 0) throw_errno(fmt::format("read the link `/{}`", path));
    target[n] = '\0';
    if (::symlinkat(target, upper_fd, p) != 0) throw_errno(fmt::format("create the link `/{}`", path));
  } else if (::mknodat(upper_fd, p, st.st_mode, st.st_rdev) != 0) {
    throw_errno(fmt::format("create the node `/{}`", path));
  }
  if (::fchownat(upper_fd, p, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
    throw_errno(fmt::format("set the owner of `/{}`", path));
  }
  if (!S_ISLNK(st.st_mode) && ::fchmodat(upper_fd, p, st.st_mode & 07777, 0) != 0) {
    throw_errno(fmt::format("set the mode of `/{}`", path));
  }
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ::utimensat(upper_fd, p, times, AT_SYMLINK_NOFOLLOW);
}

// Writes the changes of the root against `before` into the upper directory.
class ChangeWriter {
 public:
  ChangeWriter(int root_fd, int upper_fd, const std::map<std::string, Seen>& before)
      : root_fd_(root_fd), upper_fd_(upper_fd), before_(before) {}

  // `everything`: under a directory made opaque, every entry is copied, changed or not.
  void walk(const std::string& path, int dirfd, bool everything = false) {
    for (const std::string& name : list_dir_at(dirfd, path.empty() ? "/" : path)) {
      std::string child = join(path, name);
      auto st = stat_at(dirfd, name);
      if (!st) continue;
      auto old = before_.find(child);
      bool is_new = old == before_.end();
      bool changed = everything || is_new || !same(old->second, seen_of(*st));
      if (S_ISDIR(st->st_mode)) {
        // A directory that was not one before, or another directory now: it hides what was there.
        bool replaced = !is_new && (!S_ISDIR(old->second.mode) || old->second.ino != st->st_ino);
        if (changed) {
          ensure_parent(child);
          copy_entry(root_fd_, upper_fd_, child, *st);
          made_.insert(child);
          if (replaced &&
              ::setxattr(proc_path(upper_fd_, child).c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
            throw_errno(fmt::format("mark `/{}` opaque", child));
          }
          if (replaced) opaque_.insert(child);
        }
        Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub.valid()) walk(child, sub.get(), everything || replaced);
        continue;
      }
      if (!changed) continue;
      ensure_parent(child);
      if (auto existing = stat_at(upper_fd_, child)) remove_tree_at(upper_fd_, child, "/" + child);
      copy_entry(root_fd_, upper_fd_, child, *st);
    }
  }

  // Whiteouts for what the step removed: only the topmost path of a removed tree, and nothing
  // under a directory made opaque (it hides everything below it already).
  void removals() {
    for (const auto& [path, seen] : before_) {
      bool covered = false;
      for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
        std::string ancestor = path.substr(0, slash);
        if (opaque_.count(ancestor) || gone(ancestor)) {
          covered = true;
          break;
        }
      }
      if (covered || !gone(path)) continue;
      ensure_parent(path);
      if (::mknodat(upper_fd_, path.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) {
        throw_errno(fmt::format("record the removal of `/{}` (a whiteout needs CAP_MKNOD)", path));
      }
    }
  }

 private:
  bool gone(const std::string& path) {
    auto it = gone_cache_.find(path);
    if (it != gone_cache_.end()) return it->second;
    bool missing = !stat_at(root_fd_, path).has_value() && (errno == ENOENT || errno == ENOTDIR);
    gone_cache_[path] = missing;
    return missing;
  }

  // The directories on the way to `path`, as the root has them.
  void ensure_parent(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return;
    std::string parent = path.substr(0, slash);
    if (made_.count(parent)) return;
    ensure_parent(parent);
    auto st = stat_at(root_fd_, parent);
    if (!st) throw_errno(fmt::format("stat `/{}`", parent));
    copy_entry(root_fd_, upper_fd_, parent, *st);
    made_.insert(parent);
  }

  int root_fd_;
  int upper_fd_;
  const std::map<std::string, Seen>& before_;
  std::set<std::string> made_;
  std::set<std::string> opaque_;
  std::map<std::string, bool> gone_cache_;
};

}  // namespace

bool namespaces_available(std::string& why) {
  pid_t pid = ::fork();
  if (pid < 0) {
    why = fmt::format("fork: {}", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    int flags = ::geteuid() == 0 ? CLONE_NEWNS | CLONE_NEWPID : CLONE_NEWUSER;
    ::_exit(::unshare(flags) == 0 ? 0 : (errno & 0x7f) + 1);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  int err = WIFEXITED(status) ? WEXITSTATUS(status) - 1 : EPERM;
  why = fmt::format("unshare({}): {}", ::geteuid() == 0 ? "mount, pid" : "user", std::strerror(err));
  return false;
}

StepExit run_step_chroot(const StepSpec& step) {
  if (!step.mounts.empty()) {
    throw SandboxError(
        "RUN --mount needs mount namespaces, which this host does not allow (--isolation chroot)");
  }
  std::string rootfs = step.dir + "/rootfs";
  make_dirs(rootfs, 0755);
  flatten_layers(step.lowers, rootfs);
  Fd root = open_or_throw(rootfs, O_RDONLY | O_DIRECTORY);
  // What a process expects to find: a few devices (no devtmpfs to mount), the host's name service
  // files. Made before the tree is indexed, so they are no change of the step's.
  make_dirs(rootfs + "/dev", 0755);
  for (auto [name, minor_number] :
       {std::pair{"null", 3u}, {"zero", 5u}, {"full", 7u}, {"random", 8u}, {"urandom", 9u}}) {
    std::string node = rootfs + "/dev/" + name;
    if (!path_exists(node)) ::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, minor_number));
  }
  for (const EtcFile& file : step.etc_files) {
    make_dirs(rootfs + "/etc", 0755);
    Fd etc = open_in_root(root.get(), "etc", O_RDONLY | O_DIRECTORY);
    if (etc.valid()) {
      Fd out(::openat(etc.get(), file.name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                      0644));
      if (out.valid()) FdWriter(out.get(), file.name).write(as_bytes(file.content));
    }
  }
  std::string workdir = "/" + join_components(normalize_clamped(step.workdir));
  if (workdir != "/") make_dirs(rootfs + workdir, 0755);
  std::map<std::string, Seen> before;
  index_tree(root.get(), "", before);

  // The process: user and environment resolved in the root, argv and the paths to try made now,
  // since the forked child of a threaded kiln should do nothing but system calls.
  ExecUser user = resolve_user(root.get(), step.user, step.group_add);
  std::vector<std::string> env = step.env;
  apply_home_rule(env, user.home);
  if (step.args.empty()) throw SandboxError("no command specified");
  std::vector<std::string> candidates = exec_candidates(step.args.front(), env);
  std::vector<std::string> args = step.args;
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<gid_t> groups(user.additional_gids.begin(), user.additional_gids.end());

  Pipe out, err;
  if (step.output) {
    out = make_pipe();
    err = make_pipe();
  }
  Fd& out_read = out.read;
  Fd& out_write = out.write;
  Fd& err_read = err.read;
  Fd& err_write = err.write;
  int stdout_fd = step.output ? out_write.get() : step.stdout_fd;
  int stderr_fd = step.output ? err_write.get() : step.stderr_fd;
  Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::string root_path = rootfs;
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork the step");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    ::setpgid(0, 0);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (null.valid()) ::dup2(null.get(), 0);
    if (stdout_fd >= 0) ::dup2(stdout_fd, 1);
    if (stderr_fd >= 0) ::dup2(stderr_fd, 2);
    auto die = [](const char* what) {
      const char* reason = std::strerror(errno);
      ssize_t w = ::write(2, what, std::strlen(what));
      w = ::write(2, ": ", 2);
      w = ::write(2, reason, std::strlen(reason));
      w = ::write(2, "\n", 1);
      (void)w;
      ::_exit(kExitRunFailed);
    };
    ::umask(022);  // runc's, whatever kiln's caller had
    if (::chroot(root_path.c_str()) != 0) die("chroot");
    if (::chdir(workdir.c_str()) != 0) die("enter the working directory");
    if (::setgroups(groups.size(), groups.data()) != 0 && errno != EPERM) die("set supplementary groups");
    if (::setresgid(user.gid, user.gid, user.gid) != 0) die("set the group");
    if (::setresuid(user.uid, user.uid, user.uid) != 0) die("set the user");
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    int denied = 0;
    for (const std::string& candidate : candidates) {
      ::execve(candidate.c_str(), argv.data(), envp.data());
      if (errno == EACCES || errno == ENOEXEC) denied = errno;
    }
    const char* message = denied ? "exec: permission denied\n" : "exec: executable file not found in $PATH\n";
    ssize_t w = ::write(2, message, std::strlen(message));
    (void)w;
    ::_exit(denied ? kExitNotExecutable : kExitCommandNotFound);
  }
  out_write.reset();
  err_write.reset();
  Fd child(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  bool canceled = false;
  char buffer[16384];
  for (;;) {
    pollfd fds[4] = {{out_read.valid() ? out_read.get() : -1, POLLIN, 0},
                     {err_read.valid() ? err_read.get() : -1, POLLIN, 0},
                     {canceled ? -1 : step.cancel_fd, POLLIN, 0},
                     {child.get(), POLLIN, 0}};
    if (::poll(fds, 4, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("wait for the step");
    }
    for (int i = 0; i < 2; ++i) {
      Fd& pipe = i == 0 ? out_read : err_read;
      if (!pipe.valid() || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(pipe.get(), buffer, sizeof buffer);
      if (n > 0) {
        step.output->write(i + 1, std::string_view(buffer, static_cast<size_t>(n)));
      } else if (n == 0 || errno != EINTR) {
        pipe.reset();
      }
    }
    if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      // Everything the step started is in its process group.
      ::kill(-pid, SIGKILL);
      canceled = true;
    }
    if (fds[3].revents & POLLIN) {
      // The step's process ended: what it left running goes too (as at the end of a PID
      // namespace), so that the pipes it holds close.
      ::kill(-pid, SIGKILL);
      child.reset();
    }
    if (!out_read.valid() && !err_read.valid()) break;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // What it left running dies with it, as with a PID namespace's end.
  ::kill(-pid, SIGKILL);
  StepExit exit;
  exit.canceled = canceled;
  exit.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (exit.code != 0 || canceled) return exit;
  Fd upper = open_or_throw(step.upper_dir, O_RDONLY | O_DIRECTORY);
  ChangeWriter changes(root.get(), upper.get(), before);
  changes.walk("", root.get());
  changes.removals();
  return exit;
}

}  // namespace kiln::runtime
