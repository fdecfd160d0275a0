// The local image store: content-addressed blobs in an OCI image layout, image names recorded the
// OCI way in its index.json, per-layer metadata, and unpacked layer snapshots per chain ID.
//
// On disk (ROOT is --root, $KILN_ROOT, /var/lib/kiln for root, else $XDG_DATA_HOME/kiln):
//   ROOT/oci/                 an OCI image layout that skopeo and umoci read directly
//     oci-layout, index.json  per image one entry with org.opencontainers.image.ref.name = its ID
//                             (config digest hex), and one per name with ref.name = full name
//     blobs/sha256/<hex>      manifests, configs, layers (written once, never modified)
//   ROOT/layers/<hex>.json    per layer blob: its diff ID and uncompressed size
//   ROOT/snapshots/<hex>/     per chain ID: diff/ holds the layer unpacked, overlay style
//   ROOT/tmp/                 staging for operations in progress (emptied by prune)
//   ROOT/locks/               gc.lock (shared by writers, exclusive for prune), index.lock
//
// Consistency: blobs are written to unnamed files and linked under their digest only after the
// digest is verified and the data fsynced; index.json is replaced by rename. A crash leaves at
// worst unreferenced blobs, which prune removes.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/digest.h"
#include "layerstore/files.h"
#include "layerstore/growing_file.h"
#include "layerstore/image.h"
#include "layerstore/reference.h"

namespace kiln {

struct LayerInfo {
  Digest diff_id;
  uint64_t uncompressed_size = 0;
};

// What the caller knows of a blob before streaming it (from a manifest, a tar header, a
// registry's Content-Length): checked while it streams, not only once it is all there.
struct BlobExpectation {
  std::optional<uint64_t> size = std::nullopt;
  std::optional<Digest> digest = std::nullopt;
};

// One image in the store: a manifest and what it points to, with every name it has.
struct Image {
  Descriptor manifest_descriptor;
  Manifest manifest;
  ImageConfig config;
  std::vector<Reference> names;  // sorted; empty for an untagged ("dangling") image

  // Docker's image ID: the config digest.
  const Digest& id() const { return manifest.config.digest; }
};

struct PruneReport {
  std::vector<Digest> deleted_blobs;
  std::vector<Digest> deleted_snapshots;  // chain IDs
  uint64_t reclaimed_bytes = 0;
};

class Store {
 public:
  enum class Access {
    Shared,     // normal operations; several processes at once
    Exclusive,  // prune: no other process writes while it sweeps
  };

  // Opens (creating when missing) the store at root, holding the gc lock in the given mode for the
  // Store's lifetime.
  explicit Store(std::string root, Access access = Access::Shared);

  // Opens the store for exclusive access only if no other process has it open; nullopt otherwise.
  // For reclaiming space opportunistically (rmi) without waiting behind a long push or build.
  static std::optional<Store> try_open_exclusive(std::string root);

  // The default root for this user: /var/lib/kiln for root, else $XDG_DATA_HOME/kiln or
  // ~/.local/share/kiln. (KILN_ROOT and --root are the caller's business.)
  static std::string default_root();

  const std::string& root() const { return root_; }
  std::string layout_dir() const { return root_ + "/oci"; }
  std::string tmp_dir() const { return root_ + "/tmp"; }

  // ---- blobs
  bool has_blob(const Digest& d) const;
  std::string blob_path(const Digest& d) const;
  // Throws NotFoundError naming the digest.
  Fd open_blob(const Digest& d) const;
  // The blob's bytes from `offset` on, as a stream that holds its own descriptor (an upload's body,
  // resumed from where the registry's copy ends). Throws NotFoundError naming the digest.
  std::unique_ptr<Reader> blob_reader(const Digest& d, uint64_t offset = 0) const;
  // Reads a small blob (manifest, config), verifying its digest; throws if larger than max_bytes.
  std::string read_blob(const Digest& d, uint64_t max_bytes) const;

  // Streams a new blob into an unnamed file in the store. write() refuses a byte past the expected
  // size at once; seal() verifies the size and digest (the expected ones, and those it is given)
  // and fsyncs; publish() links it under its digest. Nothing is visible before publish(); dropping
  // the writer leaves no trace.
  class BlobWriter : public Writer {
   public:
    ~BlobWriter() override;
    // Throws InvalidInputError naming the blob, and writes none of `data`, when `data` would take it
    // past the expected size; the writer cannot be sealed after that (nor after a failed write).
    void write(std::span<const std::byte> data) override;
    // Verifies and fsyncs; returns the digest. Throws InvalidInputError on a digest or size mismatch.
    Digest seal(const std::optional<Digest>& expected = std::nullopt,
                std::optional<uint64_t> expected_size = std::nullopt);
    void publish();
    uint64_t size() const { return size_; }
    // The unnamed file, readable (use PreadReader) once sealed: lets a caller verify content
    // before publishing it.
    int fd() const { return fd_.get(); }
    const std::optional<Digest>& digest() const { return digest_; }
    // For a resumable writer: how many bytes an earlier, interrupted download left (already hashed
    // and counted in size()); the next write continues after them.
    uint64_t resumed_from() const { return resumed_from_; }
    // Hashes the bytes on a thread of its own, reading them back from the file as they land, rather
    // than in write(): the writing thread (a download's) then only writes, and the hash runs beside
    // it (a 512 MiB pull: 0.69-0.79 s instead of 0.85-0.95 s). Call before the first write.
    void hash_in_background();
    // The file as written so far, for readers on other threads to follow (GrowingFile::Reader from
    // offset 0: a download checked as it arrives). seal() finishes it, so readers read to the end;
    // abandon() on it, or dropping the writer, makes them throw. The writer must outlive them.
    GrowingFile& follow();

   private:
    friend class Store;
    BlobWriter(const Store& store, BlobExpectation expected);
    // Resumable: a named file in tmp/partial/, kept when the writer is dropped unsealed.
    BlobWriter(const Store& store, const Digest& digest, uint64_t size);
    // "blob sha256:…" when the digest is expected, else "new blob".
    std::string name() const;
    const Store& store_;
    BlobExpectation expected_;
    Fd fd_;
    std::string temp_path_;  // only when the filesystem has no O_TMPFILE
    Sha256 hash_;
    uint64_t size_ = 0;
    bool failed_ = false;  // a write was refused or failed: the content is not what was streamed
    std::optional<Digest> digest_;
    // With follow() or hash_in_background: the file as written so far; with hash_in_background,
    // the thread hashing it and what it threw.
    std::unique_ptr<GrowingFile> growing_;
    std::thread hasher_;
    std::exception_ptr hasher_error_;
    bool published_ = false;
    bool resumable_ = false;
    uint64_t resumed_from_ = 0;
  };
  std::unique_ptr<BlobWriter> new_blob(BlobExpectation expected = {}) const;
  // A writer for a download that may be interrupted, even by kill -9, and resumed: its bytes go to
  // ROOT/tmp/partial/<hex>, which outlives the writer until the blob is published (or the content
  // proves wrong, or prune empties tmp/). A second writer of the same blob, in this process or
  // another, waits for the first to be dropped. resumed_from() says where the download continues.
  std::unique_ptr<BlobWriter> resumable_blob(const Digest& digest, uint64_t size) const;
  // Writes a small blob at once (verified, fsynced, published); returns its descriptor fields.
  Digest put_blob(std::string_view bytes);

  // ---- layer metadata
  void record_layer(const Digest& blob, const LayerInfo& info);
  std::optional<LayerInfo> layer_info(const Digest& blob) const;

  // ---- images and names
  std::vector<Image> images() const;
  // Finds an image by name ("busybox", "busybox:1.36", "docker.io/library/busybox:latest"), by
  // name@digest (its manifest's digest, or a repo digest), by image ID ("sha256:<hex>" or a unique
  // hex prefix), or by manifest digest.
  // Throws NotFoundError("no such image: `x`").
  Image resolve(std::string_view name_or_id) const;
  Image load_image(const Descriptor& manifest_descriptor) const;
  // Uncompressed size of an image's layers (Docker's SIZE column).
  uint64_t image_size(const Image& image) const;

  // Points `name` at the manifest (moving it from any other image, which becomes untagged if it
  // loses its last name). With no name the image is recorded untagged unless already present.
  void set_name(const Descriptor& manifest_descriptor, const std::optional<Reference>& name);
  // Removes a name; returns false if no image had it. The image stays, untagged, when this was its
  // last name and keep_untagged is set; otherwise it leaves the index.
  bool remove_name(const Reference& name, bool keep_untagged);
  // Removes every index entry of the manifest.
  void remove_image(const Digest& manifest_digest);

  // ---- where images live in registries
  // Docker's RepoDigests: "domain/path@digest" references under which a registry holds the image's
  // manifest, or an index naming it. Pull and push record them in ROOT/registry/digests/<image ID
  // hex>, a line each; like a name, one belongs to one image (adding it to one takes it from any
  // other). resolve() finds an image by them, as `docker run repo@sha256:…` does after
  // a pull by an index's digest; prune forgets those of the images it removed.
  void add_repo_digest(const Digest& image_id, const Reference& ref);
  // The image's repo digests, oldest first (a damaged line is passed over).
  std::vector<Reference> repo_digests(const Digest& image_id) const;
  // Removes `ref` (its tag ignored) from every image's repo digests; returns whether one had it.
  bool remove_repo_digest(const Reference& ref);

  // ---- snapshots
  // Makes sure every layer of the image is unpacked (made on demand, kept per chain ID) and returns
  // the diff directories, bottom layer first.
  std::vector<std::string> snapshot_dirs(const Image& image);
  // The same for a stack of layer blobs with their diff IDs (a build's stage before it becomes an
  // image). Safe from several threads: a layer that two of them need is unpacked once, the second
  // waiting for the first. Throws InvalidInputError when a blob does not unpack to its diff ID.
  std::vector<std::string> snapshot_dirs(const std::vector<Descriptor>& layers,
                                         const std::vector<Digest>& diff_ids);
  // Makes the directory `dir` (on the store's file system, overlay style: what a RUN's upper
  // directory holds) the snapshot of `chain_id`, whose top layer is the blob `layer_blob`, without
  // unpacking the blob again. When the snapshot exists already, `dir` is removed instead. Returns
  // the snapshot's diff directory.
  std::string adopt_snapshot(const Digest& chain_id, const std::string& dir, const Digest& layer_blob);
  // Where the snapshot of `chain_id` keeps its files (whether or not it exists).
  std::string snapshot_diff_dir(const Digest& chain_id) const;

  // ---- build cache
  // The builder's records: each an opaque JSON document under a key (64 hex digits), naming the
  // blobs it needs and the chains whose snapshots it would like kept. prune keeps what a record
  // names; prune_build_cache removes records, least recently used first.
  void put_cache_record(std::string_view key, const nlohmann::json& data, const std::vector<Digest>& blobs,
                        const std::vector<Digest>& chains);
  // The record's data, nullopt when there is none (or it is unreadable: a damaged record is a
  // miss). A hit marks the record used now.
  std::optional<nlohmann::json> get_cache_record(std::string_view key) const;
  struct CachePruneReport {
    size_t removed_records = 0;
    size_t removed_side_files = 0;  // cache/lineage, cache/checksums, cache/http
    uint64_t kept_bytes = 0;        // the blobs the remaining records need
  };
  // Removes records not used for `max_age_seconds` (when given), then the least recently used until
  // the blobs the rest need add up to at most `keep_bytes` (when given). The blobs go with the next
  // prune(); run one after this (needs Access::Exclusive). What builds keep beside the records (a
  // step's inputs, to explain its next miss; a context's checksums; a download's validators) goes
  // by the same age, or all of it when everything goes (`keep_bytes` 0, no age); a size limit
  // alone leaves it.
  CachePruneReport prune_build_cache(std::optional<int64_t> max_age_seconds,
                                     std::optional<uint64_t> keep_bytes);

  // ---- garbage collection (needs Access::Exclusive)
  PruneReport prune();

 private:
  // An image manifest in the index, once, with the names that point at it (sorted).
  struct ListedImage {
    Descriptor descriptor;
    std::vector<Reference> names;
  };
  // The index's image manifests in index order, without reading them.
  std::vector<ListedImage> listed_images() const;
  // An entry of index.json. Every image has one entry whose ref.name is its ID (the config digest's
  // hex), so that tools which accept only tag-shaped names (umoci) can address any image, and one
  // entry per name, whose ref.name is the full reference (skopeo: oci:ROOT/oci:docker.io/...).
  struct IndexEntry {
    Descriptor descriptor;
    std::optional<Reference> name;
    std::optional<Digest> id_alias;
    std::string foreign_ref;  // a ref.name kiln did not write (another tool's), kept as it was
  };
  void add_id_alias(std::vector<IndexEntry>& entries, const Descriptor& manifest_descriptor) const;
  std::vector<IndexEntry> read_index() const;
  void write_index(const std::vector<IndexEntry>& entries);
  // Runs fn on the index under the index lock and writes the result back.
  void update_index(const std::function<void(std::vector<IndexEntry>&)>& fn);
  Store(std::string root, FileLock exclusive_lock);
  // Creates what is missing of the layout; the gc lock is already held.
  void prepare();

  std::string cache_record_path(std::string_view key) const;
  std::string repo_digests_dir() const { return root_ + "/registry/digests"; }
  // The image that the repo digest `ref` names, when one in the index has it: of several (the
  // platforms of one index), this machine's, else the first.
  std::optional<Image> resolve_repo_digest(const Reference& ref) const;
  // remove_repo_digest with the index lock held, sparing `except_image`'s record.
  bool remove_repo_digest_locked(const Reference& ref, const std::optional<Digest>& except_image);

  std::string root_;
  Access access_;
  std::optional<FileLock> gc_lock_;
  // The snapshots this process is unpacking right now, so that a second thread waits for the first
  // instead of unpacking the same layer beside it. Shared so that a Store stays movable.
  struct Unpacking;
  std::shared_ptr<Unpacking> unpacking_;
};

}  // namespace kiln
