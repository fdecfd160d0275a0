// Image operations on the store that move images in and out of tarballs: import (a root
// filesystem tarball becomes a one-layer image), save and load (Docker/OCI image archives) and
// export (the flattened root filesystem). All stream: memory does not grow with layer size.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/compress.h"
#include "layerstore/config_change.h"
#include "layerstore/io.h"
#include "layerstore/store.h"
#include "layerstore/tar.h"

namespace kiln {

struct ImportOptions {
  std::optional<Reference> name;
  std::vector<std::string> changes;  // --change instructions
  std::string message;               // --message: the history comment
  std::string source = "-";          // shown in the default history comment, "Imported from <source>"
  Compression compression = Compression::Gzip;  // for uncompressed input; compressed input is kept
  std::optional<int64_t> source_date_epoch;     // fixes "created" for reproducible imports
  WordSplitter words;                           // variable substitution for --change (the parser's)
};

// Imports a tar (plain, gzip, zstd, bzip2 or xz) as a one-layer image. The layer is checked as
// hostile input before anything is stored. Returns the new image's ID (config digest).
Digest import_image(Store& store, Reader& input, const ImportOptions& options);

// A layer blob written and sealed but not yet published, with what an image config and the store's
// layer metadata record of it.
struct NewLayer {
  std::unique_ptr<Store::BlobWriter> blob;
  Digest diff_id;
  uint64_t uncompressed_size = 0;
  Compression compression = Compression::Gzip;
};

// Writes the overlay-style directory `dirfd` (whiteouts as 0:0 devices, opaque xattrs) as a layer
// blob: write_tar_from_dir, hashed for the diff ID, compressed with `compression`. Nothing is
// visible in the store until publish_image.
NewLayer write_layer_from_dir(Store& store, int dirfd, Compression compression,
                              const TarWriteOptions& tar_options = {});

// Publishes a new image, in the order that keeps every intermediate state consistent: the new
// layers' blobs and metadata, the config (`config`, complete: rootfs and history included), the
// manifest (an OCI manifest: `base_layers`, then the new layers), and the name last (untagged when
// none). Returns the image ID (config digest).
Digest publish_image(Store& store, const std::vector<Descriptor>& base_layers,
                     std::vector<NewLayer> new_layers, const nlohmann::json& config,
                     const std::optional<Reference>& name);

// Writes one archive holding the named images (or IDs) in both formats at once, as Docker 25+
// does: Docker's manifest.json + repositories, and an OCI layout (oci-layout, index.json, blobs/).
void save_images(Store& store, const std::vector<std::string>& images, Writer& out);

struct LoadResult {
  std::vector<std::string> loaded_names;  // familiar names, "busybox:latest"
  std::vector<Digest> loaded_ids;         // images that came without a name
};

// Loads a docker-archive (Docker before and since 25, podman, skopeo) or OCI-layout archive, plain
// or compressed. Every digest (blobs, configs, diff IDs) is verified and every layer checked as
// hostile input before anything becomes visible in the store.
LoadResult load_images(Store& store, Reader& input);

// Writes the image's flattened root filesystem as a tar.
void export_image(Store& store, const Image& image, Writer& out, std::optional<int64_t> source_date_epoch);

}  // namespace kiln
