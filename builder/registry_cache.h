// The build cache shared through a registry: --cache-to type=registry,ref=REF[,mode=min|max] pushes
// the records of a build's steps and their layers; --cache-from type=registry,ref=REF lets another
// machine's build take a step from them, downloading only the layers of the steps it takes.
//
// BuildKit's names (type, ref, mode) and its shape: an OCI manifest in the registry whose config
// holds the records and whose layers are the steps' layers. Not BuildKit's cache config itself:
// its records are keyed by BuildKit's LLB digests, which kiln does not compute, so the two caches
// could not serve each other anyway. The config's media type says which it is:
// application/vnd.kiln.build-cache.v1+json, holding {"records": [{"key", "created", "layer"}]}
// with each layer {"digest", "size", "media_type", "diff_id"} or null (a step without files).
#pragma once

#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <semaphore>
#include <string>
#include <vector>

#include "builder/build.h"
#include "builder/progress.h"
#include "layerstore/store.h"
#include "registry/client.h"

namespace kiln::builder {

inline constexpr std::string_view kBuildCacheMediaType = "application/vnd.kiln.build-cache.v1+json";

// One step's record, as the store keeps it (Store::put_cache_record): its key and its data.
struct CacheRecord {
  std::string key;
  nlohmann::json data;
};

// The records of --cache-from registries, read when the build starts. Safe from several threads.
class RemoteCache {
 public:
  // Starts reading each ref's cache manifest in the background, while the build reads its
  // context; one that is missing or unreadable is reported as a note and skipped, as BuildKit
  // does: a cache is an optimisation, never a reason to fail.
  RemoteCache(Store& store, const registry::RegistryOptions& options, const std::vector<CacheSpec>& from,
              Progress& progress);
  ~RemoteCache();

  // The record for `key` when a cache has it, at once: the next step's key needs only the layer's
  // diff ID. Its layer is downloaded in the background (4 at a time; digest, size and diff ID
  // verified) and the record then kept in the local cache too. nullopt when no cache has it.
  std::optional<nlohmann::json> fetch(const std::string& key, Progress& progress, int vertex);
  // Waits for the downloads started so far; throws the first failure. Whatever reads a layer's
  // files or writes an image calls it first.
  void wait();

 private:
  struct Source {
    std::unique_ptr<registry::RegistryClient> client;
    std::string repository;
  };
  Store& store_;
  // Written by the import alone; read by others only after waiting for it (imported()).
  std::vector<Source> sources_;
  std::map<std::string, std::pair<size_t, nlohmann::json>> records_;  // key → (source, data)
  std::shared_future<void> import_;
  std::mutex pending_mutex_;
  std::vector<std::future<void>> pending_;
  std::counting_semaphore<4> downloads_{4};
  void import(const registry::RegistryOptions& options, const std::vector<CacheSpec>& from,
              Progress& progress);
  void imported() const { import_.get(); }
  void download(const std::string& key, const nlohmann::json& data, size_t source, Progress& progress,
                int vertex);
};

// Pushes `records` and their layers to spec.ref as a cache manifest.
void export_cache(Store& store, const registry::RegistryOptions& options, const CacheSpec& spec,
                  const std::vector<CacheRecord>& records, Progress& progress);

}  // namespace kiln::builder
