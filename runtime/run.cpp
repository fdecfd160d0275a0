#include "runtime/run.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/io.h"
#include "layerstore/tar.h"
#include "runtime/capabilities.h"
#include "runtime/cgroups.h"
#include "runtime/container_ops.h"
#include "runtime/containers.h"
#include "runtime/process_config.h"
#include "runtime/rootfs.h"
#include "runtime/sandbox.h"
#include "runtime/seccomp.h"
#include "runtime/spec.h"
#include "runtime/step.h"

namespace kiln::runtime {
namespace {

StepMount bind_mount(const std::string& source, const std::string& destination, bool read_only) {
  std::vector<std::string> options = {"rbind", "rprivate"};
  if (read_only) options.push_back("ro");
  return {"bind", source, destination, options};
}

// -v HOST:CONTAINER[:ro|rw]. Named volumes need a volume store kiln does not have yet.
StepMount volume_mount(const std::string& spec) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t colon; (colon = spec.find(':', start)) != std::string::npos; start = colon + 1) {
    parts.push_back(spec.substr(start, colon - start));
  }
  parts.push_back(spec.substr(start));
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    throw UsageError(fmt::format("invalid volume specification: '{}'", spec));
  }
  if (parts[0].front() != '/') {
    throw UsageError(
        fmt::format("-v `{}`: named volumes are not supported; give an absolute host path", spec));
  }
  if (parts[1].front() != '/') {
    throw UsageError(
        fmt::format("invalid volume specification: '{}': invalid mount config for type \"bind\": "
                    "invalid mount path: '{}' mount path must be absolute",
                    spec, parts[1]));
  }
  bool read_only = false;
  if (parts.size() == 3) {
    if (parts[2] == "ro") {
      read_only = true;
    } else if (parts[2] != "rw") {
      throw UsageError(fmt::format("invalid volume specification: '{}': invalid mode: {}", spec, parts[2]));
    }
  }
  // Docker creates a missing host directory for -v.
  struct stat st {};
  if (::stat(parts[0].c_str(), &st) != 0) make_dirs(parts[0]);
  return bind_mount(parts[0], parts[1], read_only);
}

// --tmpfs PATH[:OPTIONS]: Docker mounts it noexec, nosuid, nodev unless the options say otherwise.
StepMount tmpfs_mount(const std::string& spec) {
  size_t colon = spec.find(':');
  std::string path = spec.substr(0, colon);
  if (path.empty() || path.front() != '/') {
    throw UsageError(fmt::format("--tmpfs `{}`: the path must be absolute", spec));
  }
  std::vector<std::string> options = {"noexec", "nosuid", "nodev"};
  if (colon != std::string::npos) {
    std::string rest = spec.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t comma = rest.find(',', start);
      if (comma == std::string::npos) comma = rest.size();
      std::string option = rest.substr(start, comma - start);
      auto drop = [&](const char* name) {
        options.erase(std::remove(options.begin(), options.end(), name), options.end());
      };
      if (option == "exec") drop("noexec");
      if (option == "suid") drop("nosuid");
      if (option == "dev") drop("nodev");
      if (!option.empty()) options.push_back(option);
      start = comma + 1;
    }
  }
  return {"tmpfs", "tmpfs", path, options};
}

// The step `kiln run` runs: the image's process under Docker's run flags. The environment is
// complete but for HOME, which the step takes from the user once the root is mounted.
struct PreparedRun {
  StepSpec step;
  std::vector<std::string> user_env;  // --env-file entries then -e values, for the container's config
  nlohmann::json image_config;        // the image config's "config" object
};

PreparedRun prepare_run(const Image& image, const RunOptions& options, const std::string& container_id) {
  PreparedRun run;
  run.image_config = image.config.container_config();
  if (run.image_config.is_null()) run.image_config = nlohmann::json::object();
  if (options.network != "none" && options.network != "host") {
    throw UsageError(
        fmt::format("--network `{}`: kiln supports none (the default) and host", options.network));
  }
  StepSpec& step = run.step;
  step.host_network = options.network == "host";
  step.args = combine_command(run.image_config, options.entrypoint, options.args);
  step.tty = options.tty;
  step.attach_stdin = options.interactive;
  step.init = options.init;
  step.read_only_root = options.read_only;
  step.workdir = working_dir(run.image_config, options.workdir);
  // -u, else the image's USER, as Docker does.
  step.user = options.user ? *options.user : run.image_config.value("User", "");
  step.group_add = options.group_add;
  HostEnv host_env = process_env();
  for (const std::string& file : options.env_files) {
    for (std::string& entry : read_env_file(file, host_env)) run.user_env.push_back(std::move(entry));
  }
  for (const std::string& value : options.env) run.user_env.push_back(env_flag(value, host_env));
  step.hostname = options.hostname    ? *options.hostname
                  : step.host_network ? host_hostname()
                                      : container_id.substr(0, 12);
  // HOME is left empty here for the step to fill in from the user (runc's rule).
  step.env = container_env(run.image_config, run.user_env, {step.hostname, "", options.tty});

  step.capabilities =
      resolve_capabilities(default_capabilities(), options.cap_add, options.cap_drop, options.privileged);
  step.privileged = options.privileged;
  bool seccomp_unconfined = options.privileged;
  std::optional<std::string> seccomp_file;
  for (const std::string& opt : options.security_opt) {
    std::string key = opt.substr(0, opt.find_first_of("=:"));
    std::string value = opt.size() > key.size() ? opt.substr(key.size() + 1) : "";
    if (key == "no-new-privileges") {
      if (value.empty() || value == "true") {
        step.no_new_privileges = true;
      } else if (value != "false") {
        throw UsageError(fmt::format("--security-opt `{}`: no-new-privileges takes true or false", opt));
      }
    } else if (key == "seccomp" && !value.empty()) {
      if (value == "unconfined") {
        seccomp_unconfined = true;
      } else {
        seccomp_file = value;
      }
    } else {
      throw UsageError(
          fmt::format("--security-opt `{}`: kiln supports seccomp=unconfined|FILE and "
                      "no-new-privileges[=true|false]",
                      opt));
    }
  }
  if (!seccomp_unconfined) {
    step.seccomp_profile = seccomp_file ? read_seccomp_profile(*seccomp_file) : default_seccomp_profile();
  }
  for (const std::string& volume : options.volumes) step.mounts.push_back(volume_mount(volume));
  for (const std::string& tmpfs : options.tmpfs) step.mounts.push_back(tmpfs_mount(tmpfs));

  nlohmann::json& resources = step.resources;
  if (options.memory) {
    if (auto bytes = parse_memory_limit(*options.memory)) {
      // Docker's default --memory-swap: as much swap again as memory.
      resources["memory"] = {{"limit", *bytes}, {"swap", 2 * *bytes}};
    }
  }
  if (options.cpus) {
    if (auto cpu = parse_cpus(*options.cpus, host_cpu_count())) {
      resources["cpu"] = {{"quota", cpu->quota_us}, {"period", cpu->period_us}};
    }
  }
  if (options.pids_limit && *options.pids_limit > 0) resources["pids"] = {{"limit", *options.pids_limit}};
  step.container_id = container_id;
  return run;
}

// The files Docker gives every container at /etc.
std::vector<EtcFile> container_files(const StepSpec& step) {
  std::string hosts;
  if (step.host_network) {
    try {
      hosts = read_file_capped("/etc/hosts", 1 << 20, "/etc/hosts");
    } catch (const Error&) {
      hosts = default_hosts_file();
    }
  } else {
    hosts = default_hosts_file();
  }
  return {{"hostname", step.hostname + "\n"},
          {"hosts", hosts},
          {"resolv.conf", container_resolv_conf(step.host_network)}};
}

// The run flags as the docker CLI puts them in the container's config, before the daemon merges
// the image's in (merge_config): --entrypoint "" is [""], which keeps the image's Entrypoint out.
nlohmann::json run_flags_config(const RunOptions& options, const std::vector<std::string>& user_env) {
  nlohmann::json config = nlohmann::json::object();
  if (!options.args.empty()) config["Cmd"] = options.args;
  if (options.entrypoint) config["Entrypoint"] = nlohmann::json::array({*options.entrypoint});
  if (!user_env.empty()) config["Env"] = user_env;
  if (options.workdir && !options.workdir->empty()) config["WorkingDir"] = *options.workdir;
  if (options.user && !options.user->empty()) config["User"] = *options.user;
  return config;
}

}  // namespace

StepExit run_container(Store& store, const RunOptions& options) {
  Image image = store.resolve(options.image);
  ContainerStore containers(store.root());
  // Prepared before the container exists, so that bad flags leave nothing behind.
  std::string id = new_container_id();
  PreparedRun run = prepare_run(image, options, id);
  StepSpec& step = run.step;
  ContainerRecord container = containers.create(id, options.name, image.id().str(), options.image, step.args);
  container.config = merge_config(run_flags_config(options, run.user_env), run.image_config);
  std::string dir = containers.dir(container);
  StepExit exit{kExitRunFailed, "", false};
  try {
    step.lowers = store.snapshot_dirs(image);
    step.dir = dir;
    step.upper_dir = dir + "/upper";
    step.work_dir = dir + "/work";
    for (const char* sub : {"upper", "work"}) make_dirs(dir + "/" + sub, 0755);
    step.etc_files = container_files(step);
    step.seccomp_cache_dir = store.root() + "/cache/seccomp";
    step.signal_fd = options.signal_fd;
    step.alone = true;
    step.on_started = [&containers, &container](int pid) {
      container.state = "running";
      container.pid = pid;
      containers.save(container);
    };
    // The spec is kept for a kept container to be looked at; a --rm one's would go with it unread.
    if (!options.remove) {
      write_file_atomic(dir + "/config.json", step_oci_spec(step, "rootfs").dump(2) + "\n",
                        Durability::Volatile);
    }
    exit = run_step(step);
  } catch (...) {
    if (options.remove) {
      containers.remove(container);
    } else {
      container.state = "created";
      containers.save(container);
    }
    throw;
  }
  if (!path_exists(dir + "/container.json")) {
    // Removed while it ran (rm -f): nothing left to record.
  } else if (options.remove) {
    containers.remove(container);
  } else {
    container.state = "exited";
    container.pid = 0;
    container.exit_code = exit.code;
    container.finished = rfc3339_now();
    containers.save(container);
  }
  return exit;
}

void write_bundle(Store& store, const RunOptions& options, const std::string& dir) {
  Image image = store.resolve(options.image);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno(fmt::format("create `{}`", dir));
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) throw_errno(fmt::format("open `{}`", dir));
  if (!list_dir_at(dir_fd.get(), dir).empty())
    throw UsageError(fmt::format("bundle directory `{}` is not empty", dir));
  PreparedRun run = prepare_run(image, options, new_container_id());
  StepSpec& step = run.step;
  std::string rootfs = dir + "/rootfs";
  make_dirs(rootfs, 0755);
  flatten_layers(store.snapshot_dirs(image), rootfs);
  // runc adds no /etc/hostname, /etc/hosts or /etc/resolv.conf of its own: the bundle carries
  // them next to config.json, bind-mounted by absolute path as kiln run does, so that runc gives
  // the process the same files and the same mounts.
  char* absolute = ::realpath(dir.c_str(), nullptr);
  if (absolute == nullptr) throw_errno(fmt::format("resolve `{}`", dir));
  step.dir = absolute;
  ::free(absolute);
  step.etc_files = container_files(step);
  for (const EtcFile& file : step.etc_files) write_file_atomic(dir + "/" + file.name, file.content);
  nlohmann::json spec = step_oci_spec(step, "rootfs");
  Fd rootfs_fd = open_or_throw(rootfs, O_PATH | O_DIRECTORY);
  ExecUser user = resolve_user(rootfs_fd.get(), step.user, step.group_add);
  spec["process"]["user"] = {{"uid", user.uid}, {"gid", user.gid}, {"additionalGids", user.additional_gids}};
  std::vector<std::string> env = step.env;
  apply_home_rule(env, user.home);
  spec["process"]["env"] = env;
  write_file_atomic(dir + "/config.json", spec.dump(2) + "\n");
}

}  // namespace kiln::runtime
