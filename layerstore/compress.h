// Streaming compression and decompression of layer streams: gzip (Docker compatible, compressed on
// all cores in independent blocks the way pigz does), zstd (multi-threaded), or none. Memory use is
// bounded by the block size times the thread count, whatever the stream length.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "layerstore/io.h"

namespace kiln {

enum class Compression { None, Gzip, Zstd, Bzip2, Xz };

std::string_view compression_name(Compression c);  // "none", "gzip", "zstd", "bzip2", "xz"
// Accepts "none"/"uncompressed", "gzip", "zstd"; nullopt otherwise. (kiln writes only these three.)
std::optional<Compression> parse_compression(std::string_view name);
// Looks at the first bytes of a stream (at least 6 wanted): gzip 1f 8b, zstd 28 b5 2f fd,
// bzip2 "BZh", xz fd "7zXZ" 00; anything else is None.
Compression detect_compression(std::span<const std::byte> head);

struct CompressOptions {
  // -1: the format's default. gzip: 1 to 3 are ISA-L's levels (the default is 1), 4 to 9 zlib's, 0
  // stores; zstd: its own levels (default 3).
  int level = -1;
  int threads = 0;  // 0: one per online core
  // The same bytes from any kiln on any CPU, for SOURCE_DATE_EPOCH builds whose digests must match
  // across machines: gzip's default becomes zlib's level 4, whose output depends on the input
  // alone. ISA-L picks its SIMD code by CPU at run time, and its output is not promised to match.
  bool reproducible = false;
};

// Returns a writer that compresses what it is given and writes the result to `out`. finish() writes
// the trailer (gzip CRC and size, zstd end frame). Compression::None passes bytes through.
// Throws InvalidInputError for Bzip2/Xz, which kiln reads but does not write.
std::unique_ptr<Writer> make_compressor(Compression c, Writer& out, const CompressOptions& options = {});

struct DecompressLimits {
  // Refuse streams that expand more than this many times their compressed size (a decompression
  // bomb), once more than grace_bytes have come out. 0 turns the check off. gzip cannot exceed
  // ~1032:1 by construction, so the default never refuses a well-formed gzip layer.
  double max_ratio = 1100.0;
  uint64_t grace_bytes = 64ull << 20;
};

// Returns a reader yielding the decompressed bytes of `in`. gzip accepts concatenated members.
// Corrupt or truncated input throws InvalidInputError ("gzip: unexpected end of stream", ...).
std::unique_ptr<Reader> make_decompressor(Compression c, Reader& in, const DecompressLimits& limits = {});

// Sniffs the compression of `in` (without losing the sniffed bytes) and returns a reader of the
// decompressed stream. *detected receives what was found.
std::unique_ptr<Reader> open_decompressed(Reader& in, Compression* detected,
                                          const DecompressLimits& limits = {});

}  // namespace kiln
