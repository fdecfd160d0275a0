// Pulling an image from a registry into the store, and pushing one from the store to a registry.
// Both stream: a layer goes from the socket to its blob file (and back), never into memory.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/compress.h"
#include "layerstore/image.h"
#include "layerstore/reference.h"
#include "layerstore/store.h"
#include "registry/client.h"

namespace kiln::registry {

struct PullOptions {
  // The platform to resolve an index to; nullopt: this machine's (linux/<host architecture>).
  std::optional<Platform> platform;
  // Every platform of an index rather than one: each platform's image is stored (untagged), with
  // the index's own blob, and the name points at `platform`'s image. A reference to a single
  // image pulls it as without this.
  bool all_platforms = false;
  // Layers downloaded at once (Docker's max-concurrent-downloads default).
  int parallel = 4;
  // One line per event, Docker's words ("<id>: Pull complete"); may be empty.
  std::function<void(const std::string&)> progress;
};

struct PullResult {
  Descriptor manifest;      // the image's manifest (the platform's, when the reference named an index)
  Digest reference_digest;  // what the reference resolved to: the index's digest, or the manifest's
  bool downloaded = false;  // whether any blob came over the network
  // Every image manifest stored: the one above, or with all_platforms each platform's (in index
  // order, with the index's platform).
  std::vector<Descriptor> images;
};

// Pulls `ref` into the store and names it (a tag; a digest reference leaves the image untagged).
// Every blob is verified (digest and size; layers also against the config's diff IDs, and checked
// as hostile input) before it becomes visible; an interrupted layer download resumes from what is
// on disk (Store::resumable_blob). A failure leaves the store as it was, apart from verified blobs.
// With all_platforms, nothing of any platform becomes visible before every platform is verified.
// Throws NotFoundError when an index has no image for the platform asked (checked before any
// layer is downloaded), InvalidInputError for content that does not verify, HttpError (and
// RegistryError) for what the registry answers.
PullResult pull_image(Store& store, RegistryClient& client, const Reference& ref, const PullOptions& options);

struct PushOptions {
  int parallel = 4;  // blobs uploaded at once
  std::function<void(const std::string&)> progress;
  // A repository of the same registry known to hold the image's blobs: they are mounted from it
  // instead of uploaded (`kiln copy` within one registry).
  std::optional<std::string> mount_from;
  // Gzip or Zstd: layers stored in another compression are recompressed (and kept in the store,
  // so that the next push reuses them) and a new OCI manifest is pushed. nullopt: as stored.
  std::optional<Compression> compression;
};

struct PushResult {
  Digest digest;  // of the manifest, as pushed
  uint64_t size = 0;
};

// Pushes the image's blobs (those the repository lacks) and then its manifest, byte for byte as
// stored, under `dest`'s tag (or digest). With options.compression, a layer in another compression
// is decompressed and compressed again, streaming, its diff ID checked against the config; the new
// blob is stored with its layer record, ROOT/registry/converted/<source hex>-<gzip|zstd> remembers
// it for the next push, and the manifest pushed (also stored) is a new OCI manifest naming it, the
// config unchanged. Throws InvalidInputError when a stored layer does not unpack to its diff ID.
PushResult push_image(Store& store, RegistryClient& client, const Image& image, const Reference& dest,
                      const PushOptions& options);

// A layer downloaded and verified but not yet published.
struct StagedLayer {
  std::unique_ptr<Store::BlobWriter> blob;  // sealed, not published
  LayerInfo info;
};

// Downloads `layer` from `repository` into a resumable blob (continuing from what an interrupted
// download left; `on_resume` is told where), seals it against its digest and size, and checks it as
// a layer (hostile input) that must unpack to `diff_id`. Nothing is published. nullopt when the
// store has the layer already (another process finished it while this one waited). Errors start
// with `context` ("pull `app:1`").
std::optional<StagedLayer> download_layer(Store& store, RegistryClient& client, const std::string& repository,
                                          const Descriptor& layer, const Digest& diff_id,
                                          const std::string& context,
                                          const std::function<void(uint64_t offset)>& on_resume = {});

// Makes the stored blob exist in `repository` of the client's registry: nothing when it is there,
// mounted from `mount_from` or else from a repository of that registry where it is known to live
// (blob_sources), uploaded otherwise; then remembered as living in `repository` too. Returns what
// was done and the repository a mount was tried from.
std::pair<BlobUpload, std::optional<std::string>> push_stored_blob(
    Store& store, RegistryClient& client, const std::string& repository, const Descriptor& blob,
    std::optional<std::string> mount_from = {});

// Runs fn(i) for i in [0, count) on up to `threads` threads; the first exception stops the rest
// from starting and is thrown once all have stopped.
void for_each_parallel(size_t count, int threads, const std::function<void(size_t)>& fn);

// pull_image from the registry `ref` names, or for Docker Hub images from options.mirrors first,
// falling back to the next (and finally to Docker Hub) when one fails.
PullResult pull_from_registry(Store& store, const Reference& ref, const PullOptions& options,
                              const RegistryOptions& registry_options);

// The index entry for `wanted` (os and architecture equal; the variant too when both name one,
// arm64's "v8" and none being the same), nullopt when the index has none.
std::optional<Descriptor> select_platform(const Index& index, const Platform& wanted);

// "linux/amd64[/variant]" of this machine.
Platform host_platform_of_store();

// Where the store's blobs are known to live: ROOT/registry/sources/<hex>, one "domain/repository"
// a line, written as blobs are pulled and pushed. A push mounts a blob from such a repository of
// the same registry instead of uploading it, as Docker's distribution metadata lets it.
void remember_blob_source(const Store& store, const Digest& blob, const std::string& domain,
                          const std::string& repository);
// The repositories of `domain` known to hold the blob, most recently recorded first.
std::vector<std::string> blob_sources(const Store& store, const Digest& blob, const std::string& domain);
// Records that the registry holds the image under `domain/repository@manifest` (Store's repo
// digests): pull records the digest the reference resolved to (an index's for an index), push the
// manifest pushed.
void remember_repo_digest(Store& store, const Digest& image_id, const std::string& domain,
                          const std::string& repository, const Digest& manifest);

// Removes what ROOT/registry/ records of blobs the store no longer has: their sources and the
// conversions a push --compression made (ROOT/registry/converted/<source hex>-<compression>, holding
// the converted blob's digest) of or into them. For prune, after the store's own sweep.
void forget_missing_blobs(const Store& store);

// "linux/arm64/v8".
std::string platform_string(const Platform& p);

}  // namespace kiln::registry
