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

namespace kiln::runtime {
namespace {

constexpr uint64_t kMaxHostFileBytes = 1 << 20;

std::string host_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) throw_errno("read the host's hostname");
  return name;
}

// Docker's /etc/hosts for a container without a network of its own to announce.
std::string hosts_file() {
  return "127.0.0.1\tlocalhost\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n"
         "fe00::0\tip6-localnet\n"
         "ff00::0\tip6-mcastprefix\n"
         "ff02::1\tip6-allnodes\n"
         "ff02::2\tip6-allrouters\n";
}

// The host's resolv.conf as Docker passes it on: without the host's own loopback nameservers
// (unreachable from another network namespace), falling back to public ones when none is left.
std::string resolv_conf(bool host_network) {
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

nlohmann::json bind_mount(const std::string& source, const std::string& destination, bool read_only) {
  nlohmann::json options = {"rbind", "rprivate"};
  if (read_only) options.push_back("ro");
  return {{"destination", destination}, {"type", "bind"}, {"source", source}, {"options", options}};
}

// -v HOST:CONTAINER[:ro|rw]. Named volumes need a volume store kiln does not have yet.
nlohmann::json volume_mount(const std::string& spec) {
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
nlohmann::json tmpfs_mount(const std::string& spec) {
  size_t colon = spec.find(':');
  std::string path = spec.substr(0, colon);
  if (path.empty() || path.front() != '/') {
    throw UsageError(fmt::format("--tmpfs `{}`: the path must be absolute", spec));
  }
  nlohmann::json options = {"noexec", "nosuid", "nodev"};
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
  return {{"destination", path}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", options}};
}

struct PreparedRun {
  nlohmann::json spec;
  std::vector<std::string> user_env;  // --env-file entries then -e values, for container_env
  nlohmann::json image_config;        // the image config's "config" object
  std::string hostname;
};

PreparedRun prepare_run(const Image& image, const RunOptions& options, const std::string& container_id) {
  PreparedRun run;
  run.image_config = image.config.container_config();
  if (run.image_config.is_null()) run.image_config = nlohmann::json::object();
  if (options.network != "none" && options.network != "host") {
    throw UsageError(
        fmt::format("--network `{}`: kiln supports none (the default) and host", options.network));
  }
  bool host_network = options.network == "host";
  run.spec = default_spec("rootfs");
  nlohmann::json& spec = run.spec;
  nlohmann::json& process = spec["process"];
  process["args"] = combine_command(run.image_config, options.entrypoint, options.args);
  process["terminal"] = options.tty;
  process["cwd"] = working_dir(run.image_config, options.workdir);
  HostEnv host_env = process_env();
  for (const std::string& file : options.env_files) {
    for (std::string& entry : read_env_file(file, host_env)) run.user_env.push_back(std::move(entry));
  }
  for (const std::string& value : options.env) run.user_env.push_back(env_flag(value, host_env));

  run.hostname = options.hostname ? *options.hostname
                 : host_network   ? host_hostname()
                                  : container_id.substr(0, 12);
  spec["hostname"] = run.hostname;
  if (host_network) remove_namespace(spec, "network");

  std::vector<std::string> caps =
      resolve_capabilities(default_capabilities(), options.cap_add, options.cap_drop, options.privileged);
  set_capabilities(spec, caps);
  bool seccomp_unconfined = options.privileged;
  std::optional<std::string> seccomp_file;
  for (const std::string& opt : options.security_opt) {
    std::string key = opt.substr(0, opt.find_first_of("=:"));
    std::string value = opt.size() > key.size() ? opt.substr(key.size() + 1) : "";
    if (key == "no-new-privileges") {
      if (value.empty() || value == "true") {
        process["noNewPrivileges"] = true;
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
    nlohmann::json custom_profile;
    if (seccomp_file) custom_profile = read_seccomp_profile(*seccomp_file);
    nlohmann::json seccomp =
        seccomp_for_spec(seccomp_file ? custom_profile : default_seccomp_profile(), caps);
    if (!seccomp.is_null()) spec["linux"]["seccomp"] = std::move(seccomp);
  }

  spec["root"]["readonly"] = options.read_only;
  if (options.privileged) {
    // Docker's --privileged: no masked or read-only paths, and /sys writable.
    spec["linux"]["maskedPaths"] = nlohmann::json::array();
    spec["linux"]["readonlyPaths"] = nlohmann::json::array();
    for (auto& mount : spec["mounts"]) {
      if (mount["destination"] == "/sys") {
        auto& mount_options = mount["options"];
        mount_options.erase(std::remove(mount_options.begin(), mount_options.end(), "ro"),
                            mount_options.end());
      }
    }
  }
  for (const std::string& volume : options.volumes) spec["mounts"].push_back(volume_mount(volume));
  for (const std::string& tmpfs : options.tmpfs) spec["mounts"].push_back(tmpfs_mount(tmpfs));

  nlohmann::json resources = nlohmann::json::object();
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
  if (!resources.empty()) spec["linux"]["resources"] = resources;

  if (::geteuid() != 0) {
    add_user_namespace(spec, rootless_id_mappings("/etc/subuid", ::geteuid()),
                       rootless_id_mappings("/etc/subgid", ::getegid()));
  }
  return run;
}

// Writes the files Docker gives every container and adds their bind mounts to the spec.
void add_container_files(PreparedRun& run, const std::string& dir, bool host_network) {
  write_file_atomic(dir + "/hostname", run.hostname + "\n", Durability::Volatile);
  std::string hosts;
  if (host_network) {
    try {
      hosts = read_file_capped("/etc/hosts", kMaxHostFileBytes, "/etc/hosts");
    } catch (const Error&) {
      hosts = hosts_file();
    }
  } else {
    hosts = hosts_file();
  }
  write_file_atomic(dir + "/hosts", hosts, Durability::Volatile);
  write_file_atomic(dir + "/resolv.conf", resolv_conf(host_network), Durability::Volatile);
  for (const char* file : {"resolv.conf", "hostname", "hosts"}) {
    run.spec["mounts"].push_back(bind_mount(dir + "/" + file, fmt::format("/etc/{}", file), false));
  }
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

void finish_process(const PreparedRun& run, const RunOptions& options, int root_fd, nlohmann::json& process) {
  ExecUser user = resolve_user(root_fd, options.user.value_or(""), options.group_add);
  process["user"] = {{"uid", user.uid}, {"gid", user.gid}, {"additionalGids", user.additional_gids}};
  process["env"] = container_env(run.image_config, run.user_env, {run.hostname, user.home, options.tty});
}

}  // namespace

int run_container(Store& store, const RunOptions& options) {
  Image image = store.resolve(options.image);
  ContainerStore containers(store.root());
  // Prepared before the container exists, so that bad flags leave nothing behind.
  std::string id = new_container_id();
  PreparedRun run = prepare_run(image, options, id);
  std::vector<std::string> command = run.spec["process"]["args"].get<std::vector<std::string>>();
  ContainerRecord container = containers.create(id, options.name, image.id().str(), options.image, command);
  container.config = merge_config(run_flags_config(options, run.user_env), run.image_config);
  std::string dir = containers.dir(container);
  int exit_code = kExitRunFailed;
  try {
    std::vector<std::string> lowers = store.snapshot_dirs(image);
    // The mount points the sandbox needs, in a layer of their own under the writable one, so that
    // diff and commit see only what the container changed (Docker's init layer).
    make_init_layer(dir + "/init", std::vector<std::string>(lowers.rbegin(), lowers.rend()));
    lowers.push_back(dir + "/init");
    for (const char* sub : {"upper", "work", "rootfs"}) make_dirs(dir + "/" + sub, 0755);
    add_container_files(run, dir, options.network == "host");
    // The spec is kept for a kept container to be looked at; a --rm one's would go with it unread.
    if (!options.remove)
      write_file_atomic(dir + "/config.json", run.spec.dump(2) + "\n", Durability::Volatile);
    SandboxOptions sandbox;
    sandbox.bundle_dir = dir;
    sandbox.overlay = OverlayRoot{lowers, dir + "/upper", dir + "/work"};
    sandbox.container_id = container.id;
    sandbox.seccomp_cache_dir = store.root() + "/cache/seccomp";
    sandbox.init = options.init;
    sandbox.attach_stdin = options.interactive;
    sandbox.finish_process = [&run, &options](int root_fd, nlohmann::json& process) {
      finish_process(run, options, root_fd, process);
    };
    sandbox.on_started = [&containers, &container](int pid) {
      container.state = "running";
      container.pid = pid;
      containers.save(container);
    };
    exit_code = run_sandbox(run.spec, sandbox);
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
    container.exit_code = exit_code;
    container.finished = rfc3339_now();
    containers.save(container);
  }
  return exit_code;
}

void write_bundle(Store& store, const RunOptions& options, const std::string& dir) {
  Image image = store.resolve(options.image);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno(fmt::format("create `{}`", dir));
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) throw_errno(fmt::format("open `{}`", dir));
  if (!list_dir_at(dir_fd.get(), dir).empty())
    throw UsageError(fmt::format("bundle directory `{}` is not empty", dir));
  PreparedRun run = prepare_run(image, options, new_container_id());
  std::string rootfs = dir + "/rootfs";
  make_dirs(rootfs, 0755);
  flatten_layers(store.snapshot_dirs(image), rootfs);
  Fd rootfs_fd = open_or_throw(rootfs, O_PATH | O_DIRECTORY);
  finish_process(run, options, rootfs_fd.get(), run.spec["process"]);
  // runc adds no /etc/hostname, /etc/hosts or /etc/resolv.conf of its own: the bundle carries
  // them next to config.json, bind-mounted by absolute path as kiln run does, so that runc gives
  // the process the same files and the same mounts.
  char* absolute = ::realpath(dir.c_str(), nullptr);
  if (absolute == nullptr) throw_errno(fmt::format("resolve `{}`", dir));
  std::string bundle_dir = absolute;
  ::free(absolute);
  add_container_files(run, bundle_dir, options.network == "host");
  write_file_atomic(dir + "/config.json", run.spec.dump(2) + "\n");
}

}  // namespace kiln::runtime
