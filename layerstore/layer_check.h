// Checking a layer blob before it is trusted: decompress, hash the tar stream (the diff ID) and scan
// every entry as hostile input. Shared by import and load.
#pragma once

#include <string_view>

#include "layerstore/compress.h"
#include "layerstore/digest.h"
#include "layerstore/image.h"
#include "layerstore/io.h"

namespace kiln {

struct LayerCheck {
  Compression compression = Compression::None;
  Digest diff_id;
  uint64_t uncompressed_size = 0;
};

// Reads `raw` to its end. Throws InvalidInputError prefixed with `what` when the stream is not a
// valid, safe layer (bad compression, truncated tar, escaping entries, decompression bomb).
LayerCheck check_layer(Reader& raw, std::string_view what);

// The OCI layer media type for a compression kiln stores (none, gzip, zstd).
std::string_view layer_media_type(Compression c);

}  // namespace kiln
