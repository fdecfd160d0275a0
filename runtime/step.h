// One process in a container whose root is an overlay of layer snapshots with a fresh upper
// directory: what every RUN of a build is, and what `kiln run` runs. The caller says what the
// process is (arguments, environment, user, working directory, hostname), what is mounted, which
// network it has and how it is confined; run_step sets it up, runs it, and returns how it ended.
// It prints nothing: output goes to the caller's descriptors or to its StepOutput.
//
// Threads: the sandbox's first process runs in its parent's memory until it execs, which is safe
// only in a process with one thread. A caller that is not alone (the builder, whose stages run on
// threads) has run_step start a supervisor first: the same executable started again
// (/proc/self/exe, by posix_spawn), a process with one thread that changes signals, dumpability
// and the like only for itself. Every executable whose threads call run_step must therefore call
// run_step_supervisor_if_asked first thing in main(). A caller that is alone (`kiln run`) runs the
// sandbox in its own process, a process less per container.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::runtime {

// An OCI runtime-spec mount: `bind` (source a host path), `tmpfs`, ... with mount(8)-style options.
struct StepMount {
  std::string type = "bind";
  std::string source;
  std::string destination;  // absolute, inside the container
  std::vector<std::string> options;
};

// A file the container sees at /etc/<name>, bound from the step's directory: hostname, hosts,
// resolv.conf.
struct EtcFile {
  std::string name;
  std::string content;
};

// Receives the process's output as it comes, from the thread that called run_step.
class StepOutput {
 public:
  virtual ~StepOutput() = default;
  // `stream` is 1 (standard output) or 2 (standard error).
  virtual void write(int stream, std::string_view data) = 0;
};

struct StepSpec {
  // The root: layer snapshot directories (bottom first) under an upper directory that receives
  // every change, with overlay's work directory beside it; both exist and are empty.
  std::vector<std::string> lowers;
  std::string upper_dir;
  std::string work_dir;
  // The step's own directory (exists): the root's mount point, the init layer of mount points
  // (see make_init_layer) and the files bound at /etc are made in it.
  std::string dir;

  // ---- the process
  std::vector<std::string> args;
  // The environment, complete but for HOME, which runc's rule adds when it is missing or empty:
  // the home directory of the user's /etc/passwd entry, else "/".
  std::vector<std::string> env;
  // Docker's USER ("", "name", "uid", "name:group", "uid:gid"), looked up in the root's own
  // /etc/passwd and /etc/group; and --group-add's groups.
  std::string user;
  std::vector<std::string> group_add;
  std::string workdir = "/";  // absolute; created in the root when missing
  std::string hostname;
  std::vector<EtcFile> etc_files;
  bool tty = false;           // a pty of the container's own (kiln's stdin/stdout must be a terminal)
  bool attach_stdin = false;  // the process reads kiln's standard input; otherwise /dev/null
  bool init = false;          // a minimal init runs as PID 1 (docker run --init)
  bool read_only_root = false;

  // ---- what it sees
  std::vector<StepMount> mounts;  // after Docker's own (/proc, /dev, /sys, ...)
  bool host_network = false;      // the host's network namespace; otherwise a new one with loopback
  // Capabilities granted (Docker's names, "CAP_CHOWN"); default_capabilities() is Docker's set.
  std::vector<std::string> capabilities;
  // No masked or read-only paths and a writable /sys (docker run --privileged, RUN
  // --security=insecure).
  bool privileged = false;
  // A seccomp profile in Docker's format, applied for the granted capabilities; null: unconfined.
  nlohmann::json seccomp_profile;
  bool no_new_privileges = false;
  // linux.resources of the runtime spec (memory, cpu, pids); empty: no cgroup of its own.
  nlohmann::json resources = nlohmann::json::object();
  // Names the cgroup when there are resources.
  std::string container_id;
  // Where compiled seccomp filters are cached between runs; empty: compiled every time.
  std::string seccomp_cache_dir;

  // ---- how it runs
  // The process's standard output and error; -1 keeps kiln's own. Ignored when `output` is set.
  int stdout_fd = -1;
  int stderr_fd = -1;
  // When set, the process writes to pipes that run_step reads into it until the process and
  // everything it started have gone. Needs alone == false.
  StepOutput* output = nullptr;
  // Signals to forward (a signalfd of the caller's), and the caller's cancel descriptor: see
  // SandboxOptions.
  int signal_fd = -1;
  int cancel_fd = -1;
  // The caller is the process's only thread: the sandbox runs in this process.
  bool alone = false;
  // Called with the process's PID once it runs (alone only: a supervisor is another process).
  std::function<void(int pid)> on_started;
};

struct StepExit {
  int code = 0;         // as SandboxExit::code
  std::string failure;  // why the command could not be executed (126/127), Docker's words
  bool canceled = false;
};

// The OCI runtime spec (config.json) of the step, its root at `root_path`, as run_step runs it:
// also what `kiln bundle` writes for runc. The user is left for the sandbox to resolve.
nlohmann::json step_oci_spec(const StepSpec& step, const std::string& root_path);

// Runs the step to completion. Throws SandboxError when the container cannot be set up (nothing of
// it is left running), kiln::Error for a bad spec. The upper directory holds the changes after.
StepExit run_step(const StepSpec& step);

// The supervisor's side: when argv is what run_step starts a supervisor with, runs that step's
// sandbox and exits; otherwise returns at once, having done nothing.
void run_step_supervisor_if_asked(int argc, char** argv);

// Docker's default /etc/hosts for a container that has no network of its own to announce, with
// `hostname` on the loopback line when given (BuildKit's RUN sandbox names itself there).
std::string default_hosts_file(const std::string& hostname = "");
// The host's resolv.conf as Docker passes it on: with the host network as it is; otherwise without
// the host's loopback nameservers (unreachable from another network namespace), falling back to
// public ones when none is left.
std::string container_resolv_conf(bool host_network);
// The host's hostname.
std::string host_hostname();

// runc's HOME rule: HOME=<home> appended when env has no HOME, or replacing an empty one.
void apply_home_rule(std::vector<std::string>& env, const std::string& home);

}  // namespace kiln::runtime
