#include <chrono>
#include <cstring>

#include "layerstore/config_change.h"
#include "layerstore/errors.h"
#include "layerstore/image_ops.h"
#include "layerstore/layer_check.h"
#include "layerstore/tar.h"

namespace kiln {

using nlohmann::json;

namespace {

int64_t now_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Digest import_image(Store& store, Reader& input, const ImportOptions& options) {
  std::string what = fmt::format("import `{}`", options.source);
  // Bad --change values fail before any byte is read.
  json container_config = json::object();
  for (const auto& change : options.changes) apply_config_change(container_config, change, options.words);

  auto blob = store.new_blob();
  Digest diff_id = *Digest::from_sha256_hex(std::string(64, '0'));
  uint64_t uncompressed = 0;
  Compression stored = options.compression;
  try {
    PeekReader peek(input);
    if (peek.peek(6).empty())
      throw InvalidInputError("empty input (expected a tar archive, plain or compressed)");
    Compression found = detect_compression(peek.peek(6));
    if (found == Compression::Gzip || found == Compression::Zstd) {
      // Already compressed the way registries want it: keep the caller's bytes as the blob.
      TeeReader raw_to_blob(peek, *blob);
      LayerCheck check = check_layer(raw_to_blob, "layer");
      NullWriter sink;
      copy_stream(raw_to_blob, sink);  // trailing bytes after the last compressed frame
      diff_id = check.diff_id;
      uncompressed = check.uncompressed_size;
      stored = found;
    } else {
      auto tar = make_decompressor(found, peek);
      HashingReader hashed(*tar);
      auto compressor =
          make_compressor(stored, *blob, {.reproducible = options.source_date_epoch.has_value()});
      TeeReader tar_to_blob(hashed, *compressor);
      scan_tar(tar_to_blob);
      compressor->finish();
      diff_id = hashed.digest();
      uncompressed = hashed.size();
    }
  } catch (...) {
    rethrow_with_context(what);
  }
  blob->seal();

  int64_t created_ns = options.source_date_epoch ? *options.source_date_epoch * 1000000000 : now_nanos();
  std::string created = rfc3339_nano(created_ns);
  json config;
  config["architecture"] = host_architecture();
  config["os"] = "linux";
  config["created"] = created;
  config["config"] = container_config;
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", json::array({diff_id.str()})}};
  std::string comment = options.message.empty() ? "Imported from " + options.source : options.message;
  config["history"] = json::array({{{"created", created}, {"created_by", ""}, {"comment", comment}}});

  std::vector<NewLayer> layers;
  layers.push_back(NewLayer{std::move(blob), diff_id, uncompressed, stored});
  return publish_image(store, {}, std::move(layers), config, options.name);
}

NewLayer write_layer_from_dir(Store& store, int dirfd, Compression compression,
                              const TarWriteOptions& tar_options) {
  auto blob = store.new_blob();
  auto compressor =
      make_compressor(compression, *blob, {.reproducible = tar_options.source_date_epoch.has_value()});
  HashingWriter hashed(*compressor);
  write_tar_from_dir(dirfd, hashed, tar_options);
  compressor->finish();
  blob->seal();
  return NewLayer{std::move(blob), hashed.digest(), hashed.size(), compression};
}

Digest publish_image(Store& store, const std::vector<Descriptor>& base_layers,
                     std::vector<NewLayer> new_layers, const nlohmann::json& config,
                     const std::optional<Reference>& name) {
  std::string config_bytes = config.dump();
  Manifest manifest{std::string(media::kOciManifest),
                    Descriptor{std::string(media::kOciConfig),
                               sha256_of(config_bytes),
                               static_cast<int64_t>(config_bytes.size()),
                               {},
                               std::nullopt},
                    base_layers,
                    {}};
  for (const NewLayer& layer : new_layers) {
    if (!layer.blob->digest()) throw Error("publish image: a new layer was not sealed");
    manifest.layers.push_back(Descriptor{std::string(layer_media_type(layer.compression)),
                                         *layer.blob->digest(),
                                         static_cast<int64_t>(layer.blob->size()),
                                         {},
                                         std::nullopt});
  }
  std::string manifest_bytes = manifest.serialize();

  // Publication order makes every intermediate state consistent: blobs first, the name last.
  for (NewLayer& layer : new_layers) {
    layer.blob->publish();
    store.record_layer(*layer.blob->digest(), LayerInfo{layer.diff_id, layer.uncompressed_size});
  }
  store.put_blob(config_bytes);
  Digest manifest_digest = store.put_blob(manifest_bytes);
  store.set_name(Descriptor{std::string(media::kOciManifest),
                            manifest_digest,
                            static_cast<int64_t>(manifest_bytes.size()),
                            {},
                            std::nullopt},
                 name);
  return manifest.config.digest;
}

}  // namespace kiln
