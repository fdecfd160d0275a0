// save and load: Docker's image archive (manifest.json + repositories) and the OCI image layout in
// one tar, as Docker 25+ writes it; loading accepts either half, older Docker, podman and skopeo.

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <map>
#include <set>

#include "layerstore/archive_io.h"
#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/image_ops.h"
#include "layerstore/layer_check.h"
#include "layerstore/tar.h"

namespace kiln {

using nlohmann::json;
using nlohmann::ordered_json;

// ------------------------------------------------------------------------------------------ save

void save_images(Store& store, const std::vector<std::string>& requested, Writer& out) {
  struct Saved {
    Image image;
    std::vector<Reference> tags;
  };
  std::vector<Saved> saved;
  for (const auto& name : requested) {
    Image img = store.resolve(name);
    std::optional<Reference> tag;
    // Saved by name: that name travels with it; by ID: no name, as Docker does.
    if (auto ref = Reference::try_parse(name); ref && !ref->digest()) {
      if (std::find(img.names.begin(), img.names.end(), *ref) != img.names.end()) tag = ref;
    }
    auto it = std::find_if(saved.begin(), saved.end(), [&](const Saved& s) {
      return s.image.manifest_descriptor.digest == img.manifest_descriptor.digest;
    });
    if (it == saved.end()) {
      saved.push_back({img, {}});
      it = saved.end() - 1;
    }
    if (tag && std::find(it->tags.begin(), it->tags.end(), *tag) == it->tags.end()) it->tags.push_back(*tag);
  }

  ArchiveWriter tar(out, "save");
  tar.add_directory("blobs/");
  tar.add_directory("blobs/sha256/");
  std::set<Digest> written;
  auto add_blob = [&](const Digest& d) {
    if (!written.insert(d).second) return;
    Fd fd = store.open_blob(d);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat blob {}", d));
    FdReader r(fd.get(), d.str());
    tar.add_file_from(fmt::format("blobs/sha256/{}", d.hex()), r, static_cast<uint64_t>(st.st_size));
  };

  ordered_json docker_manifest = ordered_json::array();
  ordered_json repositories = ordered_json::object();
  Index index;
  index.media_type = std::string(media::kOciIndex);
  for (const auto& s : saved) {
    add_blob(s.image.manifest.config.digest);
    for (const auto& l : s.image.manifest.layers) add_blob(l.digest);
    add_blob(s.image.manifest_descriptor.digest);

    ordered_json entry;
    entry["Config"] = fmt::format("blobs/sha256/{}", s.image.manifest.config.digest.hex());
    entry["RepoTags"] = ordered_json::array();
    for (const auto& t : s.tags) entry["RepoTags"].push_back(t.familiar());
    entry["Layers"] = ordered_json::array();
    for (const auto& l : s.image.manifest.layers)
      entry["Layers"].push_back(fmt::format("blobs/sha256/{}", l.digest.hex()));
    docker_manifest.push_back(entry);

    Descriptor d = s.image.manifest_descriptor;
    d.annotations.clear();
    if (s.tags.empty()) {
      index.manifests.push_back(d);
    }
    for (const auto& t : s.tags) {
      Descriptor named = d;
      named.annotations[std::string(annotation::kContainerdImageName)] = t.str();
      named.annotations[std::string(annotation::kRefName)] = *t.tag();
      index.manifests.push_back(named);
      if (!s.image.manifest.layers.empty()) {
        repositories[t.familiar_repository()][*t.tag()] = s.image.manifest.layers.back().digest.hex();
      }
    }
  }
  tar.add_file("index.json", index.serialize());
  tar.add_file("manifest.json", docker_manifest.dump());
  tar.add_file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  if (!repositories.empty()) tar.add_file("repositories", repositories.dump());
  tar.finish();
}

// ------------------------------------------------------------------------------------------ load

namespace {

// Cleans an archive member name; nullopt if it would leave the archive (then it cannot be what a
// manifest names, and is ignored).
std::optional<std::string> clean_member(std::string_view name, std::string_view base_dir = "") {
  std::vector<std::string> parts;
  std::string full = base_dir.empty() || name.starts_with("/")
                         ? std::string(name)
                         : std::string(base_dir) + "/" + std::string(name);
  size_t start = 0;
  while (start <= full.size()) {
    size_t end = full.find('/', start);
    if (end == std::string::npos) end = full.size();
    std::string part = full.substr(start, end - start);
    if (part == "..") {
      if (parts.empty()) return std::nullopt;
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

std::string dir_of(const std::string& name) {
  auto slash = name.rfind('/');
  return slash == std::string::npos ? "" : name.substr(0, slash);
}

// Everything read from the archive, staged as unpublished blobs (unnamed files in the store).
struct Staged {
  std::vector<std::unique_ptr<Store::BlobWriter>> blobs;
  std::map<std::string, size_t> by_name;     // member name → blob
  std::map<std::string, std::string> links;  // member name → target member name
  std::map<Digest, size_t> by_digest;

  const Store::BlobWriter* find(const std::string& name, int depth = 0) const {
    if (auto it = by_name.find(name); it != by_name.end()) return blobs[it->second].get();
    if (auto it = links.find(name); it != links.end() && depth < 16) return find(it->second, depth + 1);
    return nullptr;
  }
  // Keeps a sealed blob, findable by digest and, for an archive member, by its name.
  const Store::BlobWriter& add(std::unique_ptr<Store::BlobWriter> blob, const std::string* member = nullptr) {
    by_digest.emplace(*blob->digest(), blobs.size());
    if (member) by_name[*member] = blobs.size();
    blobs.push_back(std::move(blob));
    return *blobs.back();
  }
  const Store::BlobWriter* find(const Digest& d) const {
    auto it = by_digest.find(d);
    return it == by_digest.end() ? nullptr : blobs[it->second].get();
  }
};

std::string read_staged(const Store::BlobWriter& b, uint64_t cap, std::string_view what) {
  if (b.size() > cap) throw InvalidInputError(fmt::format("{}: larger than {} bytes", what, cap));
  std::string s(b.size(), '\0');
  PreadReader r(b.fd(), std::string(what));
  size_t n = read_full(r, std::span(reinterpret_cast<std::byte*>(s.data()), s.size()));
  s.resize(n);
  return s;
}

struct PendingImage {
  std::string manifest_bytes;  // empty when the stored manifest already exists (kept as is)
  Descriptor manifest_descriptor;
  std::vector<Reference> names;
};

class Loader {
 public:
  Loader(Store& store) : store_(store) {}

  LoadResult run(Reader& input) {
    stage(input);
    bool has_index = staged_.find("index.json") != nullptr;
    bool has_docker = staged_.find("manifest.json") != nullptr;
    if (!has_index && !has_docker) {
      throw InvalidInputError(
          "archive has neither manifest.json nor index.json: not a Docker image archive or OCI layout");
    }
    // Names from manifest.json apply to OCI entries too (matched by config digest).
    std::map<Digest, std::vector<Reference>> docker_names;
    json docker_manifest;
    if (has_docker) {
      docker_manifest = parse_json(*staged_.find("manifest.json"), "manifest.json");
      if (!docker_manifest.is_array()) throw InvalidInputError("manifest.json: not a JSON array");
    }
    if (has_index) {
      collect_docker_names(docker_manifest, docker_names);
      load_oci(docker_names);
    } else {
      load_docker(docker_manifest);
    }
    return publish();
  }

 private:
  static json parse_json(const Store::BlobWriter& b, std::string_view what) {
    try {
      return json::parse(read_staged(b, kMaxManifestBytes, what));
    } catch (const json::exception& e) {
      throw InvalidInputError(fmt::format("{}: invalid JSON: {}", what, e.what()));
    }
  }

  void stage(Reader& input) {
    ArchiveReader tar(input, "archive");
    std::vector<std::byte> buf(1 << 20);
    while (archive_entry* e = tar.next()) {
      const char* raw_name = archive_entry_pathname(e);
      auto name = clean_member(raw_name ? raw_name : "");
      if (!name || name->empty()) continue;
      auto type = archive_entry_filetype(e);
      if (const char* hl = archive_entry_hardlink(e)) {
        if (auto target = clean_member(hl)) staged_.links[*name] = *target;
        continue;
      }
      if (type == AE_IFLNK) {
        if (auto target = clean_member(archive_entry_symlink(e), dir_of(*name)))
          staged_.links[*name] = *target;
        continue;
      }
      if (type != AE_IFREG) continue;
      BlobExpectation expected;
      // The header gives the member's size: the blob is refused at the first byte past it.
      if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0)
        expected.size = static_cast<uint64_t>(archive_entry_size(e));
      // In an OCI layout a blob's name is its digest: a mismatch is a corrupt or forged archive.
      if (name->starts_with("blobs/sha256/")) expected.digest = Digest::from_sha256_hex(name->substr(13));
      auto blob = store_.new_blob(expected);
      try {
        for (;;) {
          size_t n = tar.read_data(buf);
          if (n == 0) break;
          blob->write(std::span(buf).first(n));
        }
        blob->seal();
      } catch (...) {
        rethrow_with_context(fmt::format("archive member `{}`", *name));
      }
      staged_.add(std::move(blob), &*name);
    }
    // Trailing bytes after the end-of-archive marker are ignored, as tar does.
    NullWriter sink;
    copy_stream(input, sink);
  }

  static void collect_docker_names(const json& docker_manifest,
                                   std::map<Digest, std::vector<Reference>>& out) {
    if (!docker_manifest.is_array()) return;
    for (const auto& entry : docker_manifest) {
      if (!entry.is_object() || !entry.contains("Config") || !entry["Config"].is_string()) continue;
      std::string config = entry["Config"].get<std::string>();
      auto slash = config.rfind('/');
      std::string hex = config.substr(slash == std::string::npos ? 0 : slash + 1);
      if (hex.ends_with(".json")) hex.resize(hex.size() - 5);
      auto d = Digest::from_sha256_hex(hex);
      if (!d) continue;
      if (auto tags = entry.find("RepoTags"); tags != entry.end() && tags->is_array()) {
        for (const auto& t : *tags) {
          if (t.is_string()) out[*d].push_back(Reference::parse_tagged(t.get<std::string>()));
        }
      }
    }
  }

  // Verifies an image's config and layers against what references them; records what to publish.
  void verify_image(const Manifest& m, const std::string& where) {
    const auto* config_blob = staged_.find(m.config.digest);
    if (!config_blob && !store_.has_blob(m.config.digest)) {
      throw InvalidInputError(
          fmt::format("{}: config {} is missing from the archive", where, m.config.digest));
    }
    ImageConfig config = ImageConfig::parse(config_blob ? read_staged(*config_blob, kMaxConfigBytes, "config")
                                                        : store_.read_blob(m.config.digest, kMaxConfigBytes));
    auto diff_ids = config.diff_ids();
    if (diff_ids.size() != m.layers.size()) {
      throw InvalidInputError(fmt::format("{}: {} layers but the config lists {} diff IDs", where,
                                          m.layers.size(), diff_ids.size()));
    }
    publish_.insert(m.config.digest);
    for (size_t i = 0; i < m.layers.size(); ++i) {
      const auto& layer = m.layers[i];
      const auto* blob = staged_.find(layer.digest);
      if (!blob) {
        if (store_.has_blob(layer.digest) && store_.layer_info(layer.digest)) continue;  // already here
        throw InvalidInputError(fmt::format("{}: layer {} is missing from the archive", where, layer.digest));
      }
      if (static_cast<int64_t>(blob->size()) != layer.size) {
        throw InvalidInputError(
            fmt::format("{}: layer {}: size mismatch (manifest says {} bytes, archive has {})", where,
                        layer.digest, layer.size, blob->size()));
      }
      check_layer_once(*blob, layer.digest, diff_ids[i], where);
    }
  }

  const Store::BlobWriter& transcode_to_gzip(const Store::BlobWriter& source, const LayerCheck& check) {
    if (auto done = transcoded_.find(*source.digest()); done != transcoded_.end()) return *done->second;
    auto gzip = store_.new_blob();
    PreadReader raw(source.fd(), source.digest()->str());
    auto tar = make_decompressor(check.compression, raw);
    auto compressor = make_compressor(Compression::Gzip, *gzip);
    copy_stream(*tar, *compressor);
    compressor->finish();
    Digest digest = gzip->seal();
    checked_.emplace(digest, LayerCheck{Compression::Gzip, check.diff_id, check.uncompressed_size});
    publish_.erase(*source.digest());
    publish_.insert(digest);
    const Store::BlobWriter& result = staged_.add(std::move(gzip));
    transcoded_.emplace(*source.digest(), &result);
    return result;
  }

  LayerCheck check_layer_once(const Store::BlobWriter& blob, const Digest& digest, const Digest& diff_id,
                              const std::string& where) {
    auto it = checked_.find(digest);
    if (it == checked_.end()) {
      PreadReader r(blob.fd(), digest.str());
      it = checked_.emplace(digest, check_layer(r, fmt::format("{}: layer {}", where, digest))).first;
    }
    if (it->second.diff_id != diff_id) {
      throw InvalidInputError(fmt::format("{}: layer {}: diff ID mismatch (config says {}, content is {})",
                                          where, digest, diff_id, it->second.diff_id));
    }
    publish_.insert(digest);
    return it->second;
  }

  void load_manifest_descriptor(const Descriptor& d, std::vector<Reference> names, int depth) {
    const auto* blob = staged_.find(d.digest);
    if (!blob)
      throw InvalidInputError(fmt::format("index.json: manifest {} is missing from the archive", d.digest));
    if (is_index_media_type(d.media_type)) {
      if (depth > 4) throw InvalidInputError("index.json: indexes nested too deeply");
      Index nested = Index::parse(read_staged(*blob, kMaxManifestBytes, "index"));
      // One platform per image in the store: this machine's, else the first one listed.
      const Descriptor* chosen = nullptr;
      for (const auto& m : nested.manifests) {
        if (m.platform && m.platform->os == "linux" && m.platform->architecture == host_architecture()) {
          chosen = &m;
          break;
        }
      }
      if (!chosen && !nested.manifests.empty()) chosen = &nested.manifests.front();
      if (!chosen) throw InvalidInputError(fmt::format("index {}: no manifests", d.digest));
      if (!staged_.find(chosen->digest)) {
        throw InvalidInputError(fmt::format(
            "index {}: manifest {} for this platform is missing from the archive", d.digest, chosen->digest));
      }
      load_manifest_descriptor(*chosen, std::move(names), depth + 1);
      return;
    }
    Manifest m = Manifest::parse(read_staged(*blob, kMaxManifestBytes, "manifest"));
    verify_image(m, fmt::format("manifest {}", d.digest));
    publish_.insert(d.digest);
    Descriptor clean{m.media_type, d.digest, static_cast<int64_t>(blob->size()), {}, std::nullopt};
    pending_.push_back({"", clean, std::move(names)});
    configs_.push_back(m.config.digest);
  }

  void load_oci(std::map<Digest, std::vector<Reference>>& docker_names) {
    Index index = Index::parse(read_staged(*staged_.find("index.json"), kMaxManifestBytes, "index.json"));
    for (const auto& d : index.manifests) {
      std::vector<Reference> names;
      for (auto key : {annotation::kContainerdImageName, annotation::kRefName}) {
        auto it = d.annotations.find(std::string(key));
        if (it == d.annotations.end()) continue;
        // ref.name may be only a tag ("latest"); it names an image only when it is a full reference.
        if (key == annotation::kRefName && it->second.find_first_of("/:") == std::string::npos) continue;
        if (auto ref = Reference::try_parse(it->second); ref && !ref->digest()) {
          names.push_back(*ref);
          break;
        }
      }
      size_t before = pending_.size();
      load_manifest_descriptor(d, names, 0);
      for (size_t i = before; i < pending_.size(); ++i) {
        for (const auto& n : docker_names[configs_[i]]) {
          if (std::find(pending_[i].names.begin(), pending_[i].names.end(), n) == pending_[i].names.end()) {
            pending_[i].names.push_back(n);
          }
        }
      }
    }
  }

  void load_docker(const json& docker_manifest) {
    for (size_t n = 0; n < docker_manifest.size(); ++n) {
      const json& entry = docker_manifest[n];
      std::string where = fmt::format("manifest.json entry {}", n + 1);
      if (!entry.is_object() || !entry.contains("Config") || !entry["Config"].is_string() ||
          !entry.contains("Layers") || !entry["Layers"].is_array()) {
        throw InvalidInputError(fmt::format("{}: needs `Config` and `Layers`", where));
      }
      auto config_name = clean_member(entry["Config"].get<std::string>());
      const auto* config_blob = config_name ? staged_.find(*config_name) : nullptr;
      if (!config_blob) {
        throw InvalidInputError(fmt::format("{}: config `{}` is missing from the archive", where,
                                            entry["Config"].get<std::string>()));
      }
      std::string config_bytes = read_staged(*config_blob, kMaxConfigBytes, "config");
      ImageConfig config = ImageConfig::parse(config_bytes);
      Digest config_digest = *config_blob->digest();
      auto diff_ids = config.diff_ids();
      if (diff_ids.size() != entry["Layers"].size()) {
        throw InvalidInputError(fmt::format("{}: {} layers but the config lists {} diff IDs", where,
                                            entry["Layers"].size(), diff_ids.size()));
      }
      Manifest m{std::string(media::kOciManifest),
                 Descriptor{std::string(media::kOciConfig),
                            config_digest,
                            static_cast<int64_t>(config_bytes.size()),
                            {},
                            std::nullopt},
                 {},
                 {}};
      publish_.insert(config_digest);
      for (size_t i = 0; i < entry["Layers"].size(); ++i) {
        const json& l = entry["Layers"][i];
        auto layer_name = l.is_string() ? clean_member(l.get<std::string>()) : std::nullopt;
        const auto* blob = layer_name ? staged_.find(*layer_name) : nullptr;
        if (!blob)
          throw InvalidInputError(fmt::format("{}: layer `{}` is missing from the archive", where, l.dump()));
        LayerCheck check = check_layer_once(*blob, *blob->digest(), diff_ids[i],
                                            fmt::format("{}: layer `{}`", where, *layer_name));
        if (check.compression == Compression::Bzip2 || check.compression == Compression::Xz) {
          // docker load takes these, but an OCI layer is plain, gzip or zstd: store it as gzip.
          // The diff ID, and so the image ID, stays what the config says.
          blob = &transcode_to_gzip(*blob, check);
          check.compression = Compression::Gzip;
        }
        m.layers.push_back(Descriptor{std::string(layer_media_type(check.compression)),
                                      *blob->digest(),
                                      static_cast<int64_t>(blob->size()),
                                      {},
                                      std::nullopt});
      }
      std::vector<Reference> names;
      if (auto tags = entry.find("RepoTags"); tags != entry.end() && tags->is_array()) {
        for (const auto& t : *tags) {
          if (!t.is_string())
            throw InvalidInputError(fmt::format("{}: a RepoTags entry is not a string", where));
          names.push_back(Reference::parse_tagged(t.get<std::string>()));
        }
      }
      std::string bytes = m.serialize();
      pending_.push_back(
          {bytes,
           Descriptor{m.media_type, sha256_of(bytes), static_cast<int64_t>(bytes.size()), {}, std::nullopt},
           std::move(names)});
      configs_.push_back(config_digest);
    }
  }

  // Everything checked: make the blobs visible, then the names.
  LoadResult publish() {
    for (const auto& d : publish_) {
      if (const auto* b = staged_.find(d)) {
        const_cast<Store::BlobWriter*>(b)->publish();
      }
      if (auto it = checked_.find(d); it != checked_.end()) {
        store_.record_layer(d, LayerInfo{it->second.diff_id, it->second.uncompressed_size});
      }
    }
    LoadResult result;
    for (const auto& p : pending_) {
      if (!p.manifest_bytes.empty()) store_.put_blob(p.manifest_bytes);
      if (p.names.empty()) {
        store_.set_name(p.manifest_descriptor, std::nullopt);
        result.loaded_ids.push_back(configs_[static_cast<size_t>(&p - pending_.data())]);
      }
      for (const auto& n : p.names) {
        store_.set_name(p.manifest_descriptor, n);
        result.loaded_names.push_back(n.familiar());
      }
    }
    return result;
  }

  Store& store_;
  Staged staged_;
  std::set<Digest> publish_;
  std::map<Digest, LayerCheck> checked_;
  std::map<Digest, const Store::BlobWriter*> transcoded_;  // bzip2/xz layer → its gzip form
  std::vector<PendingImage> pending_;
  std::vector<Digest> configs_;  // parallel to pending_
};

}  // namespace

LoadResult load_images(Store& store, Reader& input) {
  try {
    Compression found = Compression::None;
    auto tar = open_decompressed(input, &found);
    Loader loader(store);
    return loader.run(*tar);
  } catch (...) {
    rethrow_with_context("load");
  }
}

// ---------------------------------------------------------------------------------------- export

void export_image(Store& store, const Image& image, Writer& out, std::optional<int64_t> source_date_epoch) {
  auto dirs = store.snapshot_dirs(image);
  std::vector<Fd> fds;
  std::vector<int> top_first;
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    fds.push_back(open_or_throw(*it, O_RDONLY | O_DIRECTORY));
    top_first.push_back(fds.back().get());
  }
  write_flattened_tar(top_first, out, TarWriteOptions{source_date_epoch});
}

}  // namespace kiln
