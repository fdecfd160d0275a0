#include "layerstore/layer_check.h"

#include "layerstore/errors.h"
#include "layerstore/tar.h"

namespace kiln {

LayerCheck check_layer(Reader& raw, std::string_view what) {
  try {
    Compression found = Compression::None;
    auto tar = open_decompressed(raw, &found);
    HashingReader hashed(*tar);
    scan_tar(hashed);  // reads to the very end, so the hash covers every byte
    return LayerCheck{found, hashed.digest(), hashed.size()};
  } catch (...) {
    rethrow_with_context(std::string(what));
  }
}

std::string_view layer_media_type(Compression c) {
  switch (c) {
    case Compression::None:
      return media::kOciLayer;
    case Compression::Gzip:
      return media::kOciLayerGzip;
    case Compression::Zstd:
      return media::kOciLayerZstd;
    default:
      throw InvalidInputError(
          fmt::format("{}-compressed layers cannot be stored (use gzip or zstd)", compression_name(c)));
  }
}

}  // namespace kiln
