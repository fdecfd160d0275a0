// Layer tarballs: reading them as hostile input, extracting them safely, and writing them
// deterministically (libarchive, PAX format).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "layerstore/id_map.h"
#include "layerstore/io.h"

namespace kiln {

// What extraction does with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
enum class WhiteoutMode {
  // Delete what they name in the target directory (flattening layers into one root filesystem).
  Apply,
  // Store them the way overlayfs reads them: a 0:0 character device for `.wh.NAME` and the
  // `trusted.overlay.opaque=y` xattr for `.wh..wh..opq` (per-layer snapshot directories).
  Overlay,
};

struct ExtractOptions {
  WhiteoutMode whiteouts = WhiteoutMode::Apply;
  // chown entries to the archive's uid/gid (on when running as root).
  bool same_owner = true;

  // For an archive unpacked into a directory that exists (the builder's ADD, as Docker's
  // archive.Untar does it), not for layers:
  // With same_owner, every entry gets this owner instead of the archive's (ADD --chown).
  std::optional<std::pair<uid_t, gid_t>> owner{};
  // The archive's entry for the root itself (`.`) is skipped: the directory keeps its owner, mode
  // and times.
  bool skip_root_entry = false;
  // Called for a directory made because the archive holds entries under it but no entry for it
  // (made 0755, the process's), with the directory open and its path relative to the root. Its
  // times change as it fills; a caller that sets them does so after extract_tar returns.
  std::function<void(int dirfd, const std::string& relative)> on_implicit_dir{};
};

struct ExtractStats {
  uint64_t entries = 0;
  uint64_t skipped_devices = 0;  // device nodes the process may not create, left out
};

// Extracts a tar stream (already decompressed) into the directory `root_dirfd`. Every archive is
// treated as hostile: names are resolved inside the root (never by joining strings), `..` that
// would leave the root and hard links whose target leaves the root are refused, symlinks are
// never followed out of the root, a file replaced by a directory (and the reverse) is handled as
// Docker does. Throws InvalidInputError naming the entry ("layer entry `../x`: path leaves the
// layer root"); a truncated stream throws InvalidInputError too.
ExtractStats extract_tar(Reader& tar, int root_dirfd, const ExtractOptions& options = {});

struct ScanStats {
  uint64_t entries = 0;
  uint64_t tar_bytes = 0;  // bytes consumed from the stream, end-of-archive padding included
};

// Reads a tar stream to its end without writing anything, applying the same refusals as
// extract_tar (escaping names, escaping hard links, malformed or truncated archives). Used by
// import and load so that a hostile layer is refused before it is stored. Consumes the stream
// to its very end, so that a hash taken on the way sees every byte.
ScanStats scan_tar(Reader& tar);

struct TarWriteOptions {
  // Clamp every mtime to this value (SOURCE_DATE_EPOCH) when set.
  std::optional<int64_t> source_date_epoch = std::nullopt;
  // The tree belongs to a user namespace (a rootless container's layer): its owners are host IDs,
  // written as the container IDs they stand for, and as kOverflowId when outside every range. When
  // absent, owners are written as they are.
  std::optional<IdMap> id_map = std::nullopt;
};

// Writes the tree under `root_dirfd` as a deterministic layer tar: entries sorted by path bytes,
// directories before their contents, numeric uid/gid kept (or mapped through options.id_map),
// modes, xattrs and hard links kept, no user/group names, atime/ctime dropped; overlay whiteouts
// (0:0 char device, opaque xattr) become OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
void write_tar_from_dir(int root_dirfd, Writer& out, const TarWriteOptions& options = {});

// Writes the merged view of overlay-style layer directories (index 0 is the top layer) as one
// flattened tar, as `docker export` writes a root filesystem: whiteouts hide lower entries and
// are not themselves written. Deterministic in the same way as write_tar_from_dir.
void write_flattened_tar(std::span<const int> layer_dirfds_top_first, Writer& out,
                         const TarWriteOptions& options = {});

}  // namespace kiln
