#include <fmt/format.h>
#include <sys/stat.h>

#include <array>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/layer_check.h"
#include "registry/pull.h"

namespace kiln::registry {
namespace {

// A stored blob read from an offset, holding its own descriptor.

// The compression a stored layer is in, from its first bytes (not from its media type, which only
// says what whoever wrote the manifest believed).
Compression stored_compression(const Store& store, const Digest& blob) {
  Fd fd = store.open_blob(blob);
  PreadReader reader(fd.get(), blob.str());
  std::array<std::byte, 8> head{};
  size_t n = read_full(reader, head);
  return detect_compression(std::span(head).first(n));
}

uint64_t stored_size(const Store& store, const Digest& blob) {
  Fd fd = store.open_blob(blob);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat blob {}", blob));
  return static_cast<uint64_t>(st.st_size);
}

// ROOT/registry/converted/<source hex>-<compression>: the digest of the blob a push made of the
// source layer in that compression, so that the next push does not make it again.
std::string conversion_record(const Store& store, const Digest& source, Compression to) {
  return fmt::format("{}/registry/converted/{}-{}", store.root(), source.hex(), compression_name(to));
}

// The descriptor of the blob an earlier push made of `layer` in compression `to`, when the store
// still has it with the same diff ID (prune removes what no image references); nullopt otherwise.
std::optional<Descriptor> earlier_conversion(const Store& store, const Descriptor& layer, Compression to,
                                             const Digest& diff_id) {
  std::string path = conversion_record(store, layer.digest, to);
  if (!path_exists(path)) return std::nullopt;
  std::optional<Digest> digest;
  try {
    digest = Digest::parse(read_file_capped(path, 1024, "conversion record"));
  } catch (const Error&) {
    return std::nullopt;  // an unreadable record is a miss: the layer is converted again
  }
  if (!digest || !store.has_blob(*digest)) return std::nullopt;
  std::optional<LayerInfo> info = store.layer_info(*digest);
  if (!info || info->diff_id != diff_id) return std::nullopt;
  return Descriptor{std::string(layer_media_type(to)), *digest,
                    static_cast<int64_t>(stored_size(store, *digest)), layer.annotations, std::nullopt};
}

// Decompresses the stored layer and compresses it again as `to`, streaming; checks that it unpacks
// to `diff_id`; stores the new blob with its layer record and remembers the conversion.
Descriptor recompress_layer(Store& store, const Descriptor& layer, Compression from, Compression to,
                            const Digest& diff_id, const std::string& what) {
  Fd source = store.open_blob(layer.digest);
  PreadReader raw(source.get(), what);
  auto blob = store.new_blob();
  uint64_t uncompressed = 0;
  try {
    auto tar = make_decompressor(from, raw);
    HashingReader hashed(*tar);
    auto compressor = make_compressor(to, *blob);
    copy_stream(hashed, *compressor);
    compressor->finish();
    if (hashed.digest() != diff_id) {
      throw InvalidInputError(
          fmt::format("unpacks to {}, but the image config says {}", hashed.digest(), diff_id));
    }
    uncompressed = hashed.size();
  } catch (...) {
    rethrow_with_context(what);
  }
  Digest digest = blob->seal();
  blob->publish();
  store.record_layer(digest, LayerInfo{diff_id, uncompressed});
  try {
    make_dirs(store.root() + "/registry/converted", 0700);
    write_file_atomic(conversion_record(store, layer.digest, to), digest.str());
  } catch (const SystemError&) {
    // A cache only: without the record, the next push recompresses the layer again.
  }
  return Descriptor{std::string(layer_media_type(to)), digest, static_cast<int64_t>(blob->size()),
                    layer.annotations, std::nullopt};
}

// A layer's media type in an OCI manifest: the Docker types' OCI names.
std::string oci_layer_media_type(const std::string& media_type) {
  if (media_type == media::kDockerLayerGzip) return std::string(media::kOciLayerGzip);
  if (media_type == media::kDockerLayer) return std::string(media::kOciLayer);
  if (media_type == media::kDockerForeignLayerGzip)
    return "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
  return media_type;
}

}  // namespace

std::pair<BlobUpload, std::optional<std::string>> push_stored_blob(Store& store, RegistryClient& client,
                                                                   const std::string& repository,
                                                                   const Descriptor& blob,
                                                                   std::optional<std::string> mount_from) {
  if (!mount_from) {
    for (const std::string& source : blob_sources(store, blob.digest, client.domain())) {
      if (source != repository) {
        mount_from = source;
        break;
      }
    }
  }
  BlobUpload done = client.put_blob(
      repository, blob.digest, static_cast<uint64_t>(blob.size),
      [&](uint64_t offset) { return store.blob_reader(blob.digest, offset); }, mount_from);
  remember_blob_source(store, blob.digest, client.domain(), repository);
  return {done, mount_from};
}

void for_each_parallel(size_t count, int threads, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  auto worker = [&] {
    for (size_t k; !failed && (k = next++) < count;) {
      try {
        fn(k);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
  };
  size_t n = std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), count);
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n; ++t) pool.emplace_back(worker);
  if (n > 0) worker();
  for (std::thread& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

PushResult push_image(Store& store, RegistryClient& client, const Image& image, const Reference& dest,
                      const PushOptions& options) {
  const std::string& repository = dest.path();
  std::string tag_or_digest = dest.digest() ? dest.digest()->str() : dest.tag().value_or("latest");
  std::mutex say_mutex;
  auto say = [&](const std::string& line) {
    if (!options.progress) return;
    std::lock_guard lock(say_mutex);
    options.progress(line);
  };
  if (options.compression && *options.compression != Compression::Gzip &&
      *options.compression != Compression::Zstd) {
    throw UsageError(fmt::format("push `{}`: layers can be pushed as gzip or zstd, not {}", dest.familiar(),
                                 compression_name(*options.compression)));
  }
  std::vector<Digest> diff_ids = image.config.diff_ids();
  if (options.compression && diff_ids.size() != image.manifest.layers.size()) {
    throw InvalidInputError(fmt::format("push `{}`: the manifest has {} layers, the config {} diff IDs",
                                        dest.familiar(), image.manifest.layers.size(), diff_ids.size()));
  }

  say(fmt::format("The push refers to repository [{}]", dest.repository()));

  // Layers first, then the config: a registry may check that a manifest's blobs exist. A layer to
  // recompress is made (or found made) just before its upload, on the same thread.
  std::vector<Descriptor> blobs = image.manifest.layers;
  blobs.push_back(image.manifest.config);
  std::atomic<bool> recompressed{false};
  for_each_parallel(blobs.size(), options.parallel, [&](size_t i) {
    Descriptor& blob = blobs[i];
    if (!store.has_blob(blob.digest))
      throw NotFoundError(
          fmt::format("push `{}`: blob {} is not in the store", dest.familiar(), blob.digest));
    if (options.compression && i + 1 < blobs.size()) {
      Compression to = *options.compression;
      Compression from = stored_compression(store, blob.digest);
      if (from != to) {
        std::string what = fmt::format("push `{}`: layer {}", dest.familiar(), blob.digest);
        std::optional<Descriptor> made = earlier_conversion(store, blob, to, diff_ids[i]);
        if (made) {
          say(fmt::format("{}: Recompressed with {} earlier: {}", blob.digest.short_id(),
                          compression_name(to), made->digest.short_id()));
        } else {
          made = recompress_layer(store, blob, from, to, diff_ids[i], what);
          say(fmt::format("{}: Recompressed with {}: {}", blob.digest.short_id(), compression_name(to),
                          made->digest.short_id()));
        }
        blob = *made;
        recompressed = true;
      }
    }
    auto [done, mount_from] = push_stored_blob(store, client, repository, blob, options.mount_from);
    if (i + 1 == blobs.size()) return;  // Docker lists layers only
    std::string id = blob.digest.short_id();
    switch (done) {
      case BlobUpload::Existed:
        say(fmt::format("{}: Layer already exists", id));
        break;
      case BlobUpload::Mounted:
        say(fmt::format("{}: Mounted from {}", id, *mount_from));
        break;
      case BlobUpload::Uploaded:
        say(fmt::format("{}: Pushed", id));
        break;
    }
  });

  std::string bytes;
  std::string media_type;
  if (recompressed) {
    // A new manifest: OCI, since Docker's schema 2 has no zstd layers; the config is the same bytes.
    Manifest manifest{
        std::string(media::kOciManifest), image.manifest.config, {}, image.manifest.annotations};
    manifest.config.media_type = std::string(media::kOciConfig);
    blobs.pop_back();
    for (Descriptor& layer : blobs) layer.media_type = oci_layer_media_type(layer.media_type);
    manifest.layers = std::move(blobs);
    bytes = manifest.serialize();
    media_type = manifest.media_type;
    Digest digest = store.put_blob(bytes);
    if (dest.digest() && *dest.digest() != digest) {
      throw UsageError(
          fmt::format("push `{}`: with its layers recompressed the manifest is {}: push it to a tag",
                      dest.familiar(), digest));
    }
  } else {
    bytes = store.read_blob(image.manifest_descriptor.digest, kMaxManifestBytes);
    media_type = image.manifest_descriptor.media_type;
  }
  PushResult result{client.put_manifest(repository, tag_or_digest, bytes, media_type), bytes.size()};
  remember_repo_digest(store, image.id(), client.domain(), repository, result.digest);
  say(fmt::format("{}: digest: {} size: {}", tag_or_digest, result.digest, result.size));
  return result;
}

}  // namespace kiln::registry
