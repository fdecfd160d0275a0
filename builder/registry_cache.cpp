#include "builder/registry_cache.h"

#include <fmt/format.h>

#include <set>

#include "layerstore/errors.h"
#include "layerstore/image.h"
#include "registry/pull.h"

namespace kiln::builder {

using nlohmann::json;

namespace {

// The cache manifest's config is read into memory: records are small, but not unboundedly many.
constexpr uint64_t kMaxCacheConfigBytes = 64 << 20;

std::string tag_or_digest(const Reference& ref) {
  return ref.digest() ? ref.digest()->str() : ref.tag().value_or("latest");
}

}  // namespace

RemoteCache::RemoteCache(Store& store, const registry::RegistryOptions& options,
                         const std::vector<CacheSpec>& from, Progress& progress)
    : store_(store) {
  // A fresh machine hashes its context for the first COPY meanwhile: the downloads of the steps
  // after it can start only once both are there.
  import_ = std::async(std::launch::async, [this, options, from, &progress] {
              import(options, from, progress);
            }).share();
}

void RemoteCache::import(const registry::RegistryOptions& options, const std::vector<CacheSpec>& from,
                         Progress& progress) {
  for (const CacheSpec& spec : from) {
    int vertex = progress.start(fmt::format("importing cache manifest from {}", spec.ref.str()));
    try {
      Source source{std::make_unique<registry::RegistryClient>(spec.ref.domain(), options), spec.ref.path()};
      registry::FetchedManifest fetched =
          source.client->get_manifest(source.repository, tag_or_digest(spec.ref));
      Manifest manifest = Manifest::parse(fetched.bytes);
      if (manifest.config.media_type != kBuildCacheMediaType) {
        progress.note(vertex, fmt::format("not a kiln build cache (its config is {}): skipped",
                                          manifest.config.media_type));
        progress.done(vertex);
        continue;
      }
      std::string config =
          source.client->get_blob_bytes(source.repository, manifest.config.digest, kMaxCacheConfigBytes);
      json doc = json::parse(config);
      size_t index = sources_.size();
      size_t count = 0;
      for (const json& record : doc.at("records")) {
        std::string key = record.at("key").get<std::string>();
        json data = {{"created", record.value("created", "")}, {"layer", record.at("layer")}};
        if (records_.emplace(key, std::make_pair(index, std::move(data))).second) ++count;
      }
      sources_.push_back(std::move(source));
      progress.note(vertex, fmt::format("{} steps", count));
      progress.done(vertex);
    } catch (const registry::RegistryError& e) {
      // No cache there yet: the first build of a pipeline finds none.
      progress.note(vertex, e.status() == 404 ? "no cache there yet" : e.what());
      progress.done(vertex);
    } catch (const std::exception& e) {
      progress.note(vertex, fmt::format("skipped: {}", e.what()));
      progress.done(vertex);
    }
  }
}

RemoteCache::~RemoteCache() = default;

std::optional<json> RemoteCache::fetch(const std::string& key, Progress& progress, int vertex) {
  imported();
  auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  const auto& [index, data] = it->second;
  std::lock_guard lock(pending_mutex_);
  pending_.push_back(
      std::async(std::launch::async, [this, key, index = index, data = data, &progress, vertex] {
        downloads_.acquire();
        struct Release {
          std::counting_semaphore<4>& slots;
          ~Release() { slots.release(); }
        } release{downloads_};
        download(key, data, index, progress, vertex);
      }));
  return data;
}

void RemoteCache::wait() {
  std::vector<std::future<void>> pending;
  {
    std::lock_guard lock(pending_mutex_);
    pending.swap(pending_);
  }
  std::exception_ptr first;
  for (std::future<void>& download : pending) {
    try {
      download.get();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void RemoteCache::download(const std::string& key, const json& data, size_t index, Progress& progress,
                           int vertex) {
  const Source& source = sources_[index];
  std::vector<Digest> blobs;
  const json& layer = data.at("layer");
  if (!layer.is_null()) {
    Digest digest = Digest::parse_or_throw(layer.at("digest").get<std::string>(), "cached layer digest");
    Digest diff_id = Digest::parse_or_throw(layer.at("diff_id").get<std::string>(), "cached layer diff ID");
    auto size = layer.at("size").get<uint64_t>();
    if (!store_.has_blob(digest) || !store_.layer_info(digest)) {
      Descriptor descriptor{
          layer.value("media_type", ""), digest, static_cast<int64_t>(size), {}, std::nullopt};
      std::optional<registry::StagedLayer> staged = registry::download_layer(
          store_, *source.client, source.repository, descriptor, diff_id, "registry cache");
      if (staged) {
        staged->blob->publish();
        store_.record_layer(digest, staged->info);
        progress.note(vertex, fmt::format("downloaded {} ({} bytes) from the registry cache", digest, size));
      }
    }
    blobs.push_back(digest);
  }
  store_.put_cache_record(key, data, blobs, {});
}

void export_cache(Store& store, const registry::RegistryOptions& options, const CacheSpec& spec,
                  const std::vector<CacheRecord>& records, Progress& progress) {
  int vertex = progress.start(fmt::format("exporting cache to {}", spec.ref.str()));
  try {
    registry::RegistryClient client(spec.ref.domain(), options);
    const std::string& repository = spec.ref.path();
    json doc = {{"records", json::array()}};
    std::vector<Descriptor> layers;
    std::set<Digest> seen;
    for (const CacheRecord& record : records) {
      const json& layer = record.data.at("layer");
      doc["records"].push_back(
          {{"key", record.key}, {"created", record.data.value("created", "")}, {"layer", layer}});
      if (layer.is_null()) continue;
      Digest digest = Digest::parse_or_throw(layer.at("digest").get<std::string>(), "layer digest");
      if (!seen.insert(digest).second) continue;
      layers.push_back(Descriptor{layer.at("media_type").get<std::string>(),
                                  digest,
                                  layer.at("size").get<int64_t>(),
                                  {},
                                  std::nullopt});
    }
    registry::for_each_parallel(layers.size(), 4, [&](size_t i) {
      registry::push_stored_blob(store, client, repository, layers[i]);
    });
    progress.note(vertex, fmt::format("{} layers", layers.size()));
    std::string config = doc.dump();
    Digest config_digest = sha256_of(config);
    client.put_blob(repository, config_digest, config.size(),
                    [&](uint64_t offset) -> std::unique_ptr<Reader> {
                      struct Owned : Reader {
                        explicit Owned(std::string_view text) : reader(text) {}
                        size_t read(std::span<std::byte> buf) override { return reader.read(buf); }
                        StringReader reader;
                      };
                      return std::make_unique<Owned>(std::string_view(config).substr(offset));
                    });
    Manifest manifest{std::string(media::kOciManifest),
                      Descriptor{std::string(kBuildCacheMediaType),
                                 config_digest,
                                 static_cast<int64_t>(config.size()),
                                 {},
                                 std::nullopt},
                      layers,
                      {}};
    Digest digest =
        client.put_manifest(repository, tag_or_digest(spec.ref), manifest.serialize(), media::kOciManifest);
    progress.note(vertex, fmt::format("writing cache manifest {} done ({} steps)", digest, records.size()));
    progress.done(vertex);
  } catch (const Error& e) {
    progress.error(vertex, e.what());
    throw Error(fmt::format("--cache-to {}: {}", spec.ref.str(), e.what()));
  }
}

}  // namespace kiln::builder
