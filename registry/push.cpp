#include <fmt/format.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "layerstore/errors.h"
#include "registry/pull.h"

namespace kiln::registry {
namespace {

// A stored blob read from an offset, holding its own descriptor.
class BlobReader : public Reader {
 public:
  BlobReader(Fd fd, std::string name, uint64_t offset)
      : fd_(std::move(fd)), reader_(fd_.get(), std::move(name), offset) {}
  size_t read(std::span<std::byte> buf) override { return reader_.read(buf); }

 private:
  Fd fd_;
  PreadReader reader_;
};

}  // namespace

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
  say(fmt::format("The push refers to repository [{}]", dest.repository()));

  // Layers first, then the config: a registry may check that a manifest's blobs exist.
  std::vector<Descriptor> blobs = image.manifest.layers;
  blobs.push_back(image.manifest.config);
  for_each_parallel(blobs.size(), options.parallel, [&](size_t i) {
    const Descriptor& blob = blobs[i];
    if (!store.has_blob(blob.digest))
      throw NotFoundError(
          fmt::format("push `{}`: blob {} is not in the store", dest.familiar(), blob.digest));
    std::string name = fmt::format("blob {}", blob.digest);
    std::optional<std::string> mount_from = options.mount_from;
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
        [&](uint64_t offset) -> std::unique_ptr<Reader> {
          return std::make_unique<BlobReader>(store.open_blob(blob.digest), name, offset);
        },
        mount_from);
    remember_blob_source(store, blob.digest, client.domain(), repository);
    if (i + 1 == blobs.size()) return;  // Docker lists layers only
    std::string id = blob.digest.hex().substr(0, 12);
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

  std::string bytes = store.read_blob(image.manifest_descriptor.digest, kMaxManifestBytes);
  PushResult result{
      client.put_manifest(repository, tag_or_digest, bytes, image.manifest_descriptor.media_type),
      bytes.size()};
  say(fmt::format("{}: digest: {} size: {}", tag_or_digest, result.digest, result.size));
  return result;
}

}  // namespace kiln::registry
