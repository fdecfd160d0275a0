// The namespaced sandbox: runs the process an OCI runtime spec (config.json) describes, isolated as
// runc isolates it, and waits for it. `kiln run` hands it the spec it made from an image; every
// RUN of a build will too.
//
// What happens, in order (the parent is the calling kiln process):
//   parent: compiles the seccomp filter, creates the cgroup, clones the child into new namespaces
//           (mount, PID, UTS, IPC, network, and user when rootless), writes the child's ID maps,
//           puts it in the cgroup, then lets it go;
//   child:  makes its mounts private, mounts the root (overlay of the image's layers, or the
//           bundle's rootfs bound on itself), the spec's mounts (/proc, /dev, /sys, ...), device
//           nodes, pivots into the root and detaches the old one, masks and write-protects paths,
//           sets the hostname, brings loopback up, changes to the process's user, drops
//           capabilities, sets no_new_privs, installs seccomp, closes every inherited fd, execs;
//   parent: forwards the signals the caller's signalfd delivers, and kills the container when the
//           caller cancels it, until the child exits.
// A failure before exec comes back through a close-on-exec pipe: the child writes what failed and
// exits; exec closing the pipe is the sign that the process runs. Nothing is mounted on the host:
// every mount lives in the child's mount namespace and goes with it.
//
// run_sandbox changes nothing process-wide that outlives it, prints nothing, and installs no signal
// handler; but its first process runs in the caller's memory until it execs (CLONE_VM), so the
// caller must be the process's only thread. A threaded caller (the builder) goes through
// run_step (runtime/step.h), which forks a single-threaded supervisor first.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/errors.h"

namespace kiln::runtime {

// The root filesystem as an overlay of the image's unpacked layers (bottom layer first) with a
// private upper directory; the spec's root.path is where it is mounted.
struct OverlayRoot {
  std::vector<std::string> lower_dirs;
  std::string upper_dir;
  std::string work_dir;
};

struct SandboxOptions {
  // The spec's relative root.path and mount sources are resolved against it.
  std::string bundle_dir;
  std::optional<OverlayRoot> overlay;
  // The container's ID: names its cgroup.
  std::string container_id;
  // Where compiled seccomp filters are kept between runs (see SeccompFilter::compile_cached);
  // empty: compile every time.
  std::string seccomp_cache_dir;
  // --init: a minimal init runs as PID 1, reaps zombies and forwards signals to the process.
  bool init = false;
  // -i: the process reads kiln's standard input (through the terminal with -t); otherwise
  // /dev/null.
  bool attach_stdin = false;
  // Runs in the child once the root is mounted and before the process starts: lets the caller
  // finish the spec's "process" from files in the container's root (the user named in the
  // image's /etc/passwd, HOME). `root_fd` is the root's directory. May throw kiln::Error, which is
  // reported as the run's failure.
  std::function<void(int root_fd, nlohmann::json& process)> finish_process;
  // Called in kiln once the container's process has started (exec'd, or under --init its init
  // is running), with the PID as the host sees it (for `kiln ps`). May throw kiln::Error; the
  // container is then killed.
  std::function<void(int pid)> on_started;
  // The process's standard output and error; -1 keeps kiln's own. Not closed by the sandbox.
  int stdout_fd = -1;
  int stderr_fd = -1;
  // A signalfd of the caller's, for signals it has blocked: each one read is passed on to the
  // container's first process (SIGWINCH resizes its terminal instead). -1: nothing is forwarded.
  int signal_fd = -1;
  // When this descriptor becomes readable (an eventfd written, a pipe's write end closed), the
  // container is killed and run_sandbox returns with `canceled` set. -1: no cancelling.
  int cancel_fd = -1;
};

// Docker's exit codes for a container that never ran its process.
constexpr int kExitRunFailed = 125;        // the sandbox could not be set up
constexpr int kExitNotExecutable = 126;    // the command exists but cannot be executed
constexpr int kExitCommandNotFound = 127;  // the command does not exist

// The sandbox could not be set up: Docker's exit code for that is 125.
class SandboxError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRunFailed; }
};

struct SandboxExit {
  // The process's exit code, 128 + the signal number when a signal ended it (as a shell and Docker
  // report it), or 126/127 when the command could not be executed.
  int code = 0;
  // Why the command could not be executed (126/127), in Docker's words: `exec: "x": executable file
  // not found in $PATH`. Empty otherwise.
  std::string failure;
  // The caller cancelled (cancel_fd) and the container was killed.
  bool canceled = false;
};

// Runs the container to completion. Throws kiln::Error (SandboxError) when the sandbox cannot be
// set up; nothing of it is left behind. The caller must be the process's only thread (see above).
SandboxExit run_sandbox(const nlohmann::json& spec, const SandboxOptions& options);

// Removes a directory tree a container wrote. As root, directly. Rootless, the tree holds files of
// the caller's subordinate IDs (and overlay's mode-000 work directory) that only root of a user
// namespace with the container's ID maps may remove, so the removal runs in one, as
// `podman unshare rm` would. Throws kiln::Error naming the path when it fails.
void remove_as_container_root(const std::string& path);

}  // namespace kiln::runtime
