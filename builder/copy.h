// COPY and ADD as BuildKit does them (its Dockerfile frontend's file operations, fsutil's copy),
// into the empty upper directory of a new layer: the sources chosen from a tree (wildcards,
// directories copied by their contents, a symlink named as a source followed, the .dockerignore),
// the destination resolved in the stage's root as it is (a directory there, or one the instruction
// names with a trailing `/`, receives the sources), owners and modes as the flags say, local
// archives unpacked by ADD. What the upper directory holds afterwards is the layer: the new files
// and the directories on their way, those the root has already keeping its attributes (what
// overlayfs's copy-up would keep).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "builder/source_tree.h"
#include "layerstore/digest.h"

namespace kiln::builder {

class ChecksumCache;

// --chmod: an octal mode, or chmod(1)'s symbolic form ("u+x,go-w"), applied to what is copied.
// The symbolic form is read as BuildKit's mode parser (a port of BSD's setmode) reads it, with a
// umask of 0; X (execute for a directory, or for a file someone may execute already, judged by its
// mode before the first clause) works with `=` and `+` and takes away with `-`, as Linux's chmod
// (fsutil #232 moved BuildKit's parser to Linux's X; BSD's adds even with `-`).
struct ChmodSpec {
  std::optional<mode_t> octal;
  std::string symbolic;  // as written, for messages and the cache key
  struct Op {
    char cmd = '+';     // '+' set, '-' clear, 'X'/'Y' set/clear x if a directory or x anywhere,
                        // 'u'/'g'/'o' copy that class's bits to the classes `flags` names
    uint8_t flags = 0;  // for 'u'/'g'/'o': kCopySet, kCopyClear, kCopyTo{User,Group,Other}
    mode_t bits = 0;
  };
  std::vector<Op> ops;
  // The mode (permission and set-id bits) a file or directory with mode `mode` gets.
  mode_t apply(mode_t mode, bool directory) const;
};
// Throws UsageError with BuildKit's message for a bad value.
ChmodSpec parse_chmod(const std::string& text);

struct CopyOptions {
  std::vector<std::string> sources;  // as written (expanded), relative to the source tree
  std::string dest;                  // absolute in the container, cleaned; `dest_is_dir` if it ended in `/`
  bool dest_is_dir = false;
  // The owner of everything copied and of the directories made for it; without it, files keep
  // their owners when `keep_owners` (a stage or image) and belong to 0:0 otherwise (the context).
  std::optional<std::pair<uid_t, gid_t>> chown;
  bool keep_owners = false;
  std::optional<ChmodSpec> chmod;
  bool unpack_archives = false;       // ADD: local tar archives (plain, gzip, bzip2, xz, zstd) unpacked
  std::vector<std::string> excludes;  // --exclude patterns, matched like .dockerignore's
  // --parents: each source's path (below a `/./` in it, when it has one) kept under dest.
  bool parents = false;
  // --link: the layer does not depend on the root below it: the destination is not resolved there.
  bool link = false;
  std::optional<int64_t> source_date_epoch;  // mtimes of what is made here, when set
  std::string instruction = "COPY";          // for messages
};

// The sources matched, in the order BuildKit copies them: the sources as written, and the matches
// of a wildcard by path in byte order.
struct CopySelection {
  struct Item {
    std::string match;   // the path as matched, before symlinks were followed: its last
                         // component names a file copied into a directory
    std::string source;  // the path in the source tree, symlinks followed
    bool directory = false;
    SourceTree::Entry top;
    // How to walk what lies under a directory (for_each_entry): the walk is kept, not its result,
    // so that a source of any size costs the memory of one directory per level, never a list.
    std::shared_ptr<const std::vector<std::vector<std::string>>> excludes;  // --exclude, split
    std::optional<std::vector<std::string>> parents_pattern;                // --parents, split
  };
  std::vector<Item> items;
};

// Visits what lies under a directory item, walking the tree afresh: ignored and --exclude'd paths
// left out, each directory before what it holds, names in byte order; with --parents only what the
// pattern takes in and the directories above it. Nothing for an item that is not a directory.
void for_each_entry(const SourceTree& tree, const CopySelection::Item& item,
                    const std::function<void(const SourceTree::Entry&)>& visit);

// Resolves the sources in `tree`. Throws NotFoundError (`COPY failed: "/x": not found`, naming
// where a symlink led) for a source that names nothing or a wildcard below a directory that does
// not exist; a wildcard that matches nothing is not an error, as in BuildKit. Several sources with
// a destination that is not a directory are not an error either: BuildKit copies them one after
// the other onto the same path (Docker's classic builder refused them).
CopySelection select_sources(const SourceTree& tree, const CopyOptions& options);

// A digest of everything the selection would copy: paths, types, modes, link targets and the content
// of every file (through `checksums` when given: the context's files are hashed once and then known
// by their stat). Owners are not in it (the context's are not copied). Files the cache does not
// know are hashed on up to `threads` threads (the caller's among them).
Digest selection_digest(const SourceTree& tree, const CopySelection& selection, ChecksumCache* checksums,
                        unsigned threads = 1);

// Copies the selection into `upper_dir` (an empty directory, or one an earlier selection of the
// same instruction wrote to), `lower` being the root the layer goes on. Throws kiln::Error naming
// the path on failure, as BuildKit fails: a file onto a directory, a directory onto a file.
void copy_into(const SourceTree& tree, const CopySelection& selection, const CopyOptions& options,
               const SourceTree& lower, const std::string& upper_dir);

}  // namespace kiln::builder
