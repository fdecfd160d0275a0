// `kiln run` and `kiln bundle`: an image from the store plus Docker's run flags, turned into an
// OCI runtime spec, and run in the sandbox (or written out with a root filesystem for runc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/store.h"
#include "runtime/step.h"

namespace kiln::runtime {

struct RunOptions {
  std::string image;
  std::vector<std::string> args;  // after IMAGE: replace the image's Cmd
  std::optional<std::string> entrypoint;
  std::optional<std::string> name;
  bool remove = false;       // --rm
  bool interactive = false;  // -i
  bool tty = false;          // -t
  bool init = false;         // --init
  bool read_only = false;    // --read-only
  bool privileged = false;
  std::vector<std::string> env;        // -e, in order
  std::vector<std::string> env_files;  // --env-file, in order
  std::optional<std::string> workdir;  // -w
  std::optional<std::string> user;     // -u
  std::vector<std::string> group_add;
  std::optional<std::string> hostname;
  std::vector<std::string> volumes;  // -v HOST:CONTAINER[:ro|rw]
  std::vector<std::string> tmpfs;    // --tmpfs PATH[:OPTIONS]
  std::vector<std::string> cap_add, cap_drop;
  std::vector<std::string> security_opt;
  std::string network = "none";  // none | host
  std::optional<std::string> memory;
  std::optional<std::string> cpus;
  std::optional<int64_t> pids_limit;
  // A signalfd of the caller's for the signals to pass on to the container (SIGINT, SIGTERM, ...,
  // and SIGWINCH for -t); -1: none. Forwarding is the command line's business, not the library's.
  int signal_fd = -1;
};

// Runs the container and returns how it ended (see run_step): the caller prints `failure`, when
// there is one. Without --rm the container is kept in the store with its writable layer; with
// --rm nothing of it remains. Throws UsageError for bad flags (exit 125), NotFoundError for an
// unknown image, SandboxError when the sandbox cannot be set up. The caller must be the process's
// only thread.
StepExit run_container(Store& store, const RunOptions& options);

// Writes `dir`/config.json (the spec `kiln run` would use, the user resolved to numbers, the
// root at "rootfs") and `dir`/rootfs (the image's layers flattened), so that `runc run` starts it
// unchanged. `dir` must not exist or be empty. Throws as run_container.
void write_bundle(Store& store, const RunOptions& options, const std::string& dir);

}  // namespace kiln::runtime
