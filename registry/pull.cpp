#include "registry/pull.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/layer_check.h"
#include "registry/config.h"

namespace kiln::registry {
namespace {

// Docker shows a layer by the first 12 hex digits of its blob digest.
std::string short_id(const Digest& d) {
  return d.hex().substr(0, 12);
}

std::string normalized_variant(const Platform& p) {
  // Docker's matcher: arm64's variant v8 is the default, as is arm's v7.
  if (p.architecture == "arm64" && p.variant == "v8") return "";
  if (p.architecture == "arm" && p.variant.empty()) return "v7";
  return p.variant;
}

std::string sources_file(const Store& store, const Digest& blob) {
  return fmt::format("{}/registry/sources/{}", store.root(), blob.hex());
}

}  // namespace

void remember_blob_source(const Store& store, const Digest& blob, const std::string& domain,
                          const std::string& repository) {
  std::string line = domain + "/" + repository;
  std::vector<std::string> known = blob_sources(store, blob, domain);
  if (std::find(known.begin(), known.end(), repository) != known.end()) return;
  std::string dir = store.root() + "/registry";
  ::mkdir(dir.c_str(), 0700);
  dir += "/sources";
  ::mkdir(dir.c_str(), 0700);
  // One short line appended: concurrent writers do not mix their lines. A hint only, so a failure
  // to write it costs a later push its mount, nothing more.
  int fd = ::open(sources_file(store, blob).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  line += "\n";
  [[maybe_unused]] ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
}

std::vector<std::string> blob_sources(const Store& store, const Digest& blob, const std::string& domain) {
  std::vector<std::string> repositories;
  std::string path = sources_file(store, blob);
  if (::access(path.c_str(), R_OK) != 0) return repositories;
  std::string text = read_file_capped(path, 1 << 20, path);
  for (const std::string& line : split_on(text, '\n')) {
    if (line.size() > domain.size() + 1 && line.starts_with(domain) && line[domain.size()] == '/')
      repositories.push_back(line.substr(domain.size() + 1));
  }
  std::reverse(repositories.begin(), repositories.end());
  return repositories;
}

std::string platform_string(const Platform& p) {
  std::string out = p.os + "/" + p.architecture;
  if (!p.variant.empty()) out += "/" + p.variant;
  return out;
}

Platform host_platform_of_store() {
  Platform p;
  p.os = "linux";
  p.architecture = host_architecture();
  if (p.architecture == "arm64") p.variant = "v8";
  return p;
}

std::optional<Descriptor> select_platform(const Index& index, const Platform& wanted) {
  for (const Descriptor& d : index.manifests) {
    if (!d.platform || !is_manifest_media_type(d.media_type)) continue;
    const Platform& p = *d.platform;
    if (p.os != wanted.os || p.architecture != wanted.architecture) continue;
    if (!wanted.variant.empty() && normalized_variant(p) != normalized_variant(wanted)) continue;
    return d;
  }
  return std::nullopt;
}

PullResult pull_image(Store& store, RegistryClient& client, const Reference& ref,
                      const PullOptions& options) {
  const std::string& repository = ref.path();
  std::string tag_or_digest = ref.digest() ? ref.digest()->str() : ref.tag().value_or("latest");
  std::string shown = ref.familiar();
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  Platform wanted = options.platform.value_or(host_platform_of_store());

  say(fmt::format("{}: Pulling from {}", ref.digest() ? ref.digest()->str() : tag_or_digest,
                  ref.familiar_repository().find('/') == std::string::npos
                      ? "library/" + ref.familiar_repository()
                      : ref.familiar_repository()));
  FetchedManifest top = client.get_manifest(repository, tag_or_digest);
  Digest reference_digest = top.digest;
  std::optional<FetchedManifest> platform_manifest;
  if (is_index_media_type(top.media_type)) {
    Index index = Index::parse(top.bytes);
    std::optional<Descriptor> chosen = select_platform(index, wanted);
    if (!chosen) {
      std::string offered;
      for (const Descriptor& d : index.manifests)
        if (d.platform) offered += (offered.empty() ? "" : ", ") + platform_string(*d.platform);
      throw NotFoundError(fmt::format("pull `{}`: no image for {} in its index (it has {})", shown,
                                      platform_string(wanted), offered.empty() ? "none" : offered));
    }
    platform_manifest = client.get_manifest(repository, chosen->digest.str());
  }
  const FetchedManifest& image_manifest = platform_manifest ? *platform_manifest : top;
  Manifest manifest = Manifest::parse(image_manifest.bytes);

  std::string config_bytes;
  if (store.has_blob(manifest.config.digest)) {
    config_bytes = store.read_blob(manifest.config.digest, kMaxConfigBytes);
  } else {
    config_bytes = client.get_blob_bytes(repository, manifest.config.digest, kMaxConfigBytes);
  }
  ImageConfig config = ImageConfig::parse(config_bytes);
  if (options.platform && (config.os() != wanted.os || config.architecture() != wanted.architecture)) {
    throw InvalidInputError(fmt::format("pull `{}`: the image is for {}/{}, not {}", shown, config.os(),
                                        config.architecture(), platform_string(wanted)));
  }
  std::vector<Digest> diff_ids = config.diff_ids();
  if (diff_ids.size() != manifest.layers.size()) {
    throw InvalidInputError(fmt::format("pull `{}`: the manifest has {} layers, the config {} diff IDs",
                                        shown, manifest.layers.size(), diff_ids.size()));
  }

  // The layers the store lacks, fetched `parallel` at a time; the rest are there already.
  std::vector<size_t> missing;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& layer = manifest.layers[i];
    if (!is_layer_media_type(layer.media_type))
      throw InvalidInputError(
          fmt::format("pull `{}`: layer {} has media type `{}`", shown, layer.digest, layer.media_type));
    if (store.has_blob(layer.digest) && store.layer_info(layer.digest)) {
      remember_blob_source(store, layer.digest, client.domain(), repository);
      say(fmt::format("{}: Already exists", short_id(layer.digest)));
    } else {
      missing.push_back(i);
    }
  }
  std::mutex say_mutex;
  // Verified layers wait, sealed, until all are: a pull that fails leaves the store as it was (the
  // partial files stay in tmp/partial, for the next try to resume from).
  std::vector<std::unique_ptr<Store::BlobWriter>> verified(manifest.layers.size());
  std::vector<std::optional<LayerInfo>> infos(manifest.layers.size());
  auto fetch_layer = [&](size_t i) {
    const Descriptor& layer = manifest.layers[i];
    std::string what = fmt::format("pull `{}`: layer {}", shown, layer.digest);
    auto blob = store.resumable_blob(layer.digest, static_cast<uint64_t>(layer.size));
    // Another process may have finished it while this one waited for the partial file.
    if (store.has_blob(layer.digest) && store.layer_info(layer.digest)) return;
    if (blob->size() < static_cast<uint64_t>(layer.size)) {
      if (blob->resumed_from() > 0) {
        std::lock_guard lock(say_mutex);
        say(fmt::format("{}: Resuming download at {} of {} bytes", short_id(layer.digest),
                        blob->resumed_from(), layer.size));
      }
      client.get_blob(repository, layer.digest, blob->resumed_from(), *blob);
    }
    try {
      blob->seal(layer.digest, static_cast<uint64_t>(layer.size));
    } catch (const Error& e) {
      throw InvalidInputError(fmt::format("pull `{}`: {}", shown, e.what()));
    }
    PreadReader content(blob->fd(), what);
    LayerCheck check = check_layer(content, what);
    if (check.diff_id != diff_ids[i]) {
      throw InvalidInputError(
          fmt::format("{}: unpacks to {}, but the image config says {}", what, check.diff_id, diff_ids[i]));
    }
    verified[i] = std::move(blob);
    infos[i] = LayerInfo{check.diff_id, check.uncompressed_size};
    std::lock_guard lock(say_mutex);
    say(fmt::format("{}: Pull complete", short_id(layer.digest)));
  };
  for_each_parallel(missing.size(), options.parallel, [&](size_t k) { fetch_layer(missing[k]); });
  for (size_t i = 0; i < verified.size(); ++i) {
    if (!verified[i]) continue;
    verified[i]->publish();
    store.record_layer(manifest.layers[i].digest, *infos[i]);
    remember_blob_source(store, manifest.layers[i].digest, client.domain(), repository);
  }

  bool had_manifest = store.has_blob(image_manifest.digest);
  store.put_blob(config_bytes);
  remember_blob_source(store, manifest.config.digest, client.domain(), repository);
  store.put_blob(image_manifest.bytes);
  PullResult result{Descriptor{image_manifest.media_type,
                               image_manifest.digest,
                               static_cast<int64_t>(image_manifest.bytes.size()),
                               {},
                               std::nullopt},
                    reference_digest, !missing.empty() || !had_manifest};
  // A digest reference names no tag: the image is stored untagged, as Docker stores it.
  std::optional<Reference> name;
  if (!ref.digest()) name = ref;
  store.set_name(result.manifest, name);
  say(fmt::format("Digest: {}", reference_digest));
  return result;
}

}  // namespace kiln::registry

namespace kiln::registry {

PullResult pull_from_registry(Store& store, const Reference& ref, const PullOptions& options,
                              const RegistryOptions& registry_options) {
  std::vector<std::string> domains;
  if (ref.domain() == "docker.io")
    for (const std::string& mirror : registry_options.mirrors) domains.push_back(mirror_host(mirror));
  domains.push_back(ref.domain());
  for (size_t i = 0; i < domains.size(); ++i) {
    bool last = i + 1 == domains.size();
    RegistryOptions one = registry_options;
    if (!last) one.retries = 0;  // a mirror that fails is passed over, not waited for
    RegistryClient client(domains[i], one);
    try {
      return pull_image(store, client, ref, options);
    } catch (const HttpError& e) {
      if (last) throw;
      if (registry_options.notice)
        registry_options.notice(fmt::format("mirror {} failed, trying the next: {}", domains[i], e.what()));
    }
  }
  throw Error("pull: no registry to pull from");  // unreachable: the last one returns or throws
}

}  // namespace kiln::registry
