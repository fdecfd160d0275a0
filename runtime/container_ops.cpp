#include "runtime/container_ops.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "layerstore/config_change.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/image_ops.h"
#include "layerstore/tar.h"
#include "runtime/spec.h"

namespace kiln::runtime {

using nlohmann::json;

namespace {

std::string path_of(const std::vector<std::string>& parts) {
  return "/" + join_components(parts);
}

void diff_dir(int upper_dir, std::vector<std::string>& parts, const LayerView& lower, bool opaque,
              std::vector<Change>& out) {
  struct Entry {
    std::string name;
    bool hidden_lower;  // a lower entry the opaque directory hides
  };
  std::vector<Entry> entries;
  std::set<std::string> upper_names;
  for (std::string& name : list_dir_at(upper_dir, path_of(parts))) {
    upper_names.insert(name);
    entries.push_back(Entry{std::move(name), false});
  }
  if (opaque) {
    for (std::string& name : lower.list(parts)) {
      if (!upper_names.contains(name)) entries.push_back(Entry{std::move(name), true});
    }
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  for (const Entry& entry : entries) {
    parts.push_back(entry.name);
    std::string path = path_of(parts);
    if (entry.hidden_lower) {
      out.push_back(Change{'D', path});
      parts.pop_back();
      continue;
    }
    auto st = stat_at(upper_dir, entry.name);
    if (!st) throw_errno(fmt::format("stat `{}` in the container's layer", path));
    if (is_whiteout(*st)) {
      out.push_back(Change{'D', path});
      parts.pop_back();
      continue;
    }
    std::optional<struct stat> below = lower.lookup(parts);
    if (!S_ISDIR(st->st_mode)) {
      out.push_back(Change{below ? 'C' : 'A', path});
      parts.pop_back();
      continue;
    }
    Fd child(::openat(upper_dir, entry.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child.valid()) throw_errno(fmt::format("open `{}` in the container's layer", path));
    bool child_opaque = is_opaque_dir(child.get());
    if (!below || !S_ISDIR(below->st_mode)) {
      out.push_back(Change{below ? 'C' : 'A', path});
      diff_dir(child.get(), parts, lower, child_opaque && below, out);
    } else {
      // A directory both have: shown when it changed itself or, as Docker shows the parents of
      // what changed, when anything under it did. overlayfs copies a directory up (keeping its
      // times) just to change something under it, so the copy alone is no change.
      size_t mark = out.size();
      out.push_back(Change{'C', path});
      diff_dir(child.get(), parts, lower, child_opaque, out);
      bool changed_itself = (st->st_mode & 07777) != (below->st_mode & 07777) ||
                            st->st_uid != below->st_uid || st->st_gid != below->st_gid;
      if (!changed_itself && out.size() == mark + 1) out.pop_back();
    }
    parts.pop_back();
  }
}

// Whether the array-valued field is missing, null or empty (Go's len(x) == 0).
bool empty_field(const json& config, const char* key) {
  auto it = config.find(key);
  return it == config.end() || it->is_null() || (it->is_array() && it->empty()) ||
         (it->is_object() && it->empty()) || (it->is_string() && it->get<std::string>().empty());
}

std::string env_key(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

// The base image's layer descriptors for an OCI manifest: Docker's media types become the OCI ones.
std::vector<Descriptor> oci_layers(const Manifest& manifest) {
  std::vector<Descriptor> layers = manifest.layers;
  for (Descriptor& layer : layers) {
    if (layer.media_type == media::kDockerLayerGzip) layer.media_type = media::kOciLayerGzip;
    if (layer.media_type == media::kDockerLayer) layer.media_type = media::kOciLayer;
  }
  return layers;
}

// The config the container ran with: recorded by `kiln run`; for containers made before it was
// recorded, the image's with the command the container ran as its Cmd.
json container_config(const ContainerRecord& container, const Image& image) {
  if (container.config.is_object()) return container.config;
  json config =
      image.config.container_config().is_object() ? image.config.container_config() : json::object();
  config.erase("Entrypoint");
  config["Cmd"] = container.command;
  return config;
}

// kiln's own file, but read with a cap all the same.
constexpr uint64_t kMaxSpecBytes = 16 << 20;

// The user namespace's maps that the container's files were written through, so that a layer or
// an export holds the IDs the container saw rather than the host's (nullopt: they are the same).
// The maps are those it ran with, from its spec; a container without a spec on record (one run
// with --rm, committed while it runs) has the maps kiln run gives now.
std::optional<IdMap> container_id_map(const ContainerStore& containers, const ContainerRecord& container) {
  std::string path = containers.dir(container) + "/config.json";
  if (!path_exists(path)) {
    if (::geteuid() == 0) return std::nullopt;
    return id_map_of(rootless_id_mappings("/etc/subuid", ::geteuid()),
                     rootless_id_mappings("/etc/subgid", ::getegid()));
  }
  std::string what = fmt::format("container spec `{}`", path);
  json spec = json::parse(read_file_capped(path, kMaxSpecBytes, what), nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) throw InvalidInputError(fmt::format("{}: invalid JSON", what));
  try {
    return user_namespace_id_map(spec);
  } catch (...) {
    rethrow_with_context(what);
  }
}

bool has_entries(int dirfd, const std::string& shown) {
  return !list_dir_at(dirfd, shown).empty();
}

}  // namespace

std::vector<Change> diff_layer(int upper_fd, const LayerView& lower) {
  std::vector<Change> out;
  std::vector<std::string> parts;
  diff_dir(upper_fd, parts, lower, is_opaque_dir(upper_fd), out);
  return out;
}

std::vector<std::string> container_lowers(Store& store, const ContainerStore& containers,
                                          const ContainerRecord& container) {
  Image image = store.resolve(container.image_id);
  std::vector<std::string> bottom_first = store.snapshot_dirs(image);
  std::vector<std::string> top_first(bottom_first.rbegin(), bottom_first.rend());
  std::string init = containers.dir(container) + "/init";
  if (path_exists(init)) top_first.insert(top_first.begin(), init);
  return top_first;
}

std::vector<Change> container_changes(Store& store, const ContainerStore& containers,
                                      const ContainerRecord& container) {
  std::string upper = containers.dir(container) + "/upper";
  if (!path_exists(upper)) return {};  // never started: nothing changed
  LayerView lower(container_lowers(store, containers, container));
  Fd upper_fd = open_or_throw(upper, O_RDONLY | O_DIRECTORY);
  return diff_layer(upper_fd.get(), lower);
}

json merge_config(json user, const json& base) {
  if (!user.is_object()) user = json::object();
  if (!base.is_object()) return user;
  auto base_has = [&](const char* key) { return !empty_field(base, key); };
  if (empty_field(user, "User") && base_has("User")) user["User"] = base["User"];
  for (const char* key : {"ExposedPorts", "Volumes", "Labels"}) {
    if (!base_has(key) || !base[key].is_object()) continue;
    if (!user.contains(key) || !user[key].is_object()) user[key] = json::object();
    for (const auto& [k, v] : base[key].items()) {
      if (!user[key].contains(k)) user[key][k] = v;
    }
  }
  if (base_has("Env") && base["Env"].is_array()) {
    if (empty_field(user, "Env")) {
      user["Env"] = base["Env"];
    } else {
      std::set<std::string> keys;
      for (const auto& entry : user["Env"]) {
        if (entry.is_string()) keys.insert(env_key(entry.get<std::string>()));
      }
      for (const auto& entry : base["Env"]) {
        if (entry.is_string() && !keys.contains(env_key(entry.get<std::string>())))
          user["Env"].push_back(entry);
      }
    }
  }
  if (empty_field(user, "Entrypoint")) {
    if (empty_field(user, "Cmd") && base.contains("Cmd")) user["Cmd"] = base["Cmd"];
    if ((!user.contains("Entrypoint") || user["Entrypoint"].is_null()) && base.contains("Entrypoint")) {
      user["Entrypoint"] = base["Entrypoint"];
    }
  }
  if (!user.contains("Healthcheck") && base.contains("Healthcheck"))
    user["Healthcheck"] = base["Healthcheck"];
  for (const char* key : {"WorkingDir", "StopSignal", "Shell"}) {
    if (empty_field(user, key) && base_has(key)) user[key] = base[key];
  }
  return user;
}

Digest commit_container(Store& store, const ContainerStore& containers, const ContainerRecord& container,
                        const CommitOptions& options) {
  std::string what = fmt::format("commit `{}`", container.name);
  if (container.state == "running" && options.pause) {
    throw Error(fmt::format(
        "{}: the container is running and kiln cannot pause it: stop it first, or commit it as it "
        "is with --pause=false",
        what));
  }
  // Bad --change values fail before anything is written.
  json changed = json::object();
  for (const std::string& change : options.changes) apply_config_change(changed, change, options.words);

  Image image = store.resolve(container.image_id);
  json run_config = container_config(container, image);
  json config_object = merge_config(changed, run_config);

  std::vector<NewLayer> layers;
  std::string upper = containers.dir(container) + "/upper";
  if (path_exists(upper)) {
    Fd upper_fd = open_or_throw(upper, O_RDONLY | O_DIRECTORY);
    if (has_entries(upper_fd.get(), upper)) {
      try {
        TarWriteOptions tar_options{.source_date_epoch = options.source_date_epoch,
                                    .id_map = container_id_map(containers, container)};
        layers.push_back(write_layer_from_dir(store, upper_fd.get(), Compression::Gzip, tar_options));
      } catch (...) {
        rethrow_with_context(what);
      }
    }
  }

  int64_t now_ns = options.source_date_epoch ? *options.source_date_epoch * 1000000000
                                             : std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   std::chrono::system_clock::now().time_since_epoch())
                                                   .count();
  std::string created = rfc3339_nano(now_ns);
  const json& base = image.config.doc();
  json config = json::object();
  for (const char* key : {"architecture", "os", "variant", "os.version", "os.features"}) {
    if (base.contains(key)) config[key] = base[key];
  }
  if (!config.contains("architecture")) config["architecture"] = host_architecture();
  if (!config.contains("os")) config["os"] = "linux";
  config["created"] = created;
  if (!options.author.empty()) config["author"] = options.author;
  config["config"] = config_object;
  json diff_ids = json::array();
  for (const Digest& id : image.config.diff_ids()) diff_ids.push_back(id.str());
  for (const NewLayer& layer : layers) diff_ids.push_back(layer.diff_id.str());
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", diff_ids}};
  json history = base.contains("history") && base["history"].is_array() ? base["history"] : json::array();
  std::string created_by;
  if (run_config.contains("Cmd") && run_config["Cmd"].is_array()) {
    for (const auto& arg : run_config["Cmd"]) {
      if (!arg.is_string()) continue;
      created_by += (created_by.empty() ? "" : " ") + arg.get<std::string>();
    }
  }
  json entry = {{"created", created}, {"created_by", created_by}};
  if (!options.author.empty()) entry["author"] = options.author;
  if (!options.message.empty()) entry["comment"] = options.message;
  if (layers.empty()) entry["empty_layer"] = true;
  history.push_back(entry);
  config["history"] = history;

  return publish_image(store, oci_layers(image.manifest), std::move(layers), config, options.name);
}

void export_container(Store& store, const ContainerStore& containers, const ContainerRecord& container,
                      Writer& out, std::optional<int64_t> source_date_epoch) {
  std::vector<std::string> dirs = container_lowers(store, containers, container);
  std::string upper = containers.dir(container) + "/upper";
  if (path_exists(upper)) dirs.insert(dirs.begin(), upper);
  std::vector<Fd> fds;
  std::vector<int> top_first;
  for (const std::string& dir : dirs) {
    fds.push_back(open_or_throw(dir, O_RDONLY | O_DIRECTORY));
    top_first.push_back(fds.back().get());
  }
  // Mapped below the writable layer too: the init layer and the image's snapshots hold host IDs as
  // well (a rootless caller unpacks and creates them as itself, the container's root).
  write_flattened_tar(
      top_first, out,
      {.source_date_epoch = source_date_epoch, .id_map = container_id_map(containers, container)});
}

void make_init_layer(const std::string& init_dir, const std::vector<std::string>& lowers_top_first,
                     const std::vector<InitStub>& extra) {
  LayerView image(lowers_top_first);
  if (::mkdir(init_dir.c_str(), 0755) != 0) throw_errno(fmt::format("create `{}`", init_dir));
  Fd root = open_or_throw(init_dir, O_RDONLY | O_DIRECTORY);
  std::vector<InitStub> stubs = {{"proc", false},        {"sys", false},      {"dev", false},
                                 {"etc/hostname", true}, {"etc/hosts", true}, {"etc/resolv.conf", true}};
  stubs.insert(stubs.end(), extra.begin(), extra.end());
  // Directories made here that the image has, with its attributes, to restore once filled.
  std::vector<std::pair<std::vector<std::string>, struct stat>> copied;
  for (const InitStub& stub : stubs) {
    std::vector<std::string> parts = normalize_clamped(stub.path);
    if (parts.empty() || image.lookup(parts)) continue;
    // Every directory on the way must be one in the image too, or be missing there.
    bool plain = true;
    std::vector<std::optional<struct stat>> above;
    for (size_t i = 1; i < parts.size(); ++i) {
      std::vector<std::string> prefix(parts.begin(), parts.begin() + static_cast<long>(i));
      above.push_back(image.lookup(prefix));
      if (above.back() && !S_ISDIR(above.back()->st_mode)) plain = false;
    }
    if (!plain) continue;
    Fd dir = open_or_throw(init_dir, O_RDONLY | O_DIRECTORY);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (::mkdirat(dir.get(), parts[i].c_str(), 0755) == 0) {
        if (const auto& st = above[i]) {
          // Rootless, a directory cannot be given away: it stays the caller's (the container's root).
          if (::fchownat(dir.get(), parts[i].c_str(), st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) != 0 &&
              errno != EPERM) {
            throw_errno(
                fmt::format("set the owner of `/{}` in the init layer", join_components(parts, i + 1)));
          }
          if (::fchmodat(dir.get(), parts[i].c_str(), st->st_mode & 07777, 0) != 0) {
            throw_errno(
                fmt::format("set the mode of `/{}` in the init layer", join_components(parts, i + 1)));
          }
          copied.emplace_back(
              std::vector<std::string>(parts.begin(), parts.begin() + static_cast<long>(i) + 1), *st);
        }
      } else if (errno != EEXIST) {
        throw_errno(fmt::format("create `/{}` in the init layer", join_components(parts, i + 1)));
      }
      dir = openat_or_throw(dir.get(), parts[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    }
    const std::string& last = parts.back();
    if (stub.file) {
      // Two mounts may share a mount point: the second finds it made.
      Fd file(::openat(dir.get(), last.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!file.valid()) throw_errno(fmt::format("create `/{}` in the init layer", join_components(parts)));
    } else if (::mkdirat(dir.get(), last.c_str(), 0755) != 0 && errno != EEXIST) {
      throw_errno(fmt::format("create `/{}` in the init layer", join_components(parts)));
    }
  }
  // Deepest first, so that restoring a directory's times is not undone by its children.
  for (auto it = copied.rbegin(); it != copied.rend(); ++it) {
    const struct timespec times[2] = {it->second.st_atim, it->second.st_mtim};
    if (::utimensat(root.get(), join_components(it->first).c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      throw_errno(fmt::format("set the times of `/{}` in the init layer", join_components(it->first)));
    }
  }
}

}  // namespace kiln::runtime
