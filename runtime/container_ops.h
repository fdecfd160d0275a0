// What Docker does with a kept container's filesystem: `diff` (its changes against the image),
// `commit` (a new image from them) and `export` (its whole root filesystem as a tar), and the
// init layer that keeps kiln's own mount points out of the first two.
//
// A container's layers, top first: upper/ (its writable layer), init/ (the mount points kiln's
// sandbox needs, made before the container starts, as Docker's "-init" layer), then the image's.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "layerstore/config_change.h"
#include "layerstore/digest.h"
#include "layerstore/io.h"
#include "layerstore/reference.h"
#include "layerstore/store.h"
#include "runtime/containers.h"
#include "runtime/layer_view.h"

namespace kiln::runtime {

struct Change {
  char kind = 'C';  // 'A' added, 'C' changed, 'D' deleted
  std::string path;
  bool operator==(const Change&) const = default;
};

// The changes of the overlay upper directory open at `upper_fd` against the merged view of the
// layers below it, in the order Docker prints them (each directory before what is under it, names
// in byte order): a whiteout is D; an entry the lower view lacks is A, one it has is C (a directory
// only when its mode or owner differ); every directory that has a change below it and exists below
// is C; an opaque directory shows the lower entries it hides as D. Throws SystemError.
std::vector<Change> diff_layer(int upper_fd, const LayerView& lower);

// `kiln diff`: the container's changes. Throws NotFoundError when its image is gone.
std::vector<Change> container_changes(Store& store, const ContainerStore& containers,
                                      const ContainerRecord& container);

// Docker's merge of a config (`user`: Cmd, Entrypoint, Env, ... set by flags or --change) with the
// config it derives from (`base`: the image's, or the container's), both "config" objects of an
// image config: fields `user` leaves empty come from `base`; Env, ExposedPorts, Labels and Volumes
// are merged, `user` winning; Cmd comes from `base` only when `user` has neither Entrypoint nor Cmd,
// and Entrypoint only when `user` has none. Fields outside Docker's list (Hostname, OnBuild, ...)
// are not taken from `base`.
nlohmann::json merge_config(nlohmann::json user, const nlohmann::json& base);

struct CommitOptions {
  std::optional<Reference> name;     // untagged when absent
  std::string message;               // -m: the history comment
  std::string author;                // -a
  std::vector<std::string> changes;  // -c/--change instructions
  bool pause = true;                 // --pause: a running container is refused (kiln cannot freeze it)
  std::optional<int64_t> source_date_epoch;  // fixes "created", as import does
  WordSplitter words;                        // variable substitution for --change (the parser's)
};

// `kiln commit`: a new image, the container's image plus one gzip layer made from its writable
// layer (none, and an empty_layer history entry, when it has no changes), with the container's
// config (merge_config of the --change instructions over it) and a history entry whose created_by
// is the container's Cmd. Returns the image ID. Throws UsageError for a bad --change, Error for a
// running container under --pause, NotFoundError when the container's image is gone.
Digest commit_container(Store& store, const ContainerStore& containers, const ContainerRecord& container,
                        const CommitOptions& options);

// `kiln export`: the container's merged root filesystem (its writable layer over the init and
// image layers) as one flattened tar, as `docker export` writes it.
void export_container(Store& store, const ContainerStore& containers, const ContainerRecord& container,
                      Writer& out, std::optional<int64_t> source_date_epoch);

// A mount point: an absolute path in the container, a directory or (for a bind of a file) a file.
struct InitStub {
  std::string path;
  bool file = false;
};

// Makes `init_dir` (new) hold the mount points the sandbox needs that the image (`lowers_top_first`)
// lacks: /proc, /sys, /dev as directories, /etc/hostname, /etc/hosts, /etc/resolv.conf as empty
// files, and `extra` (the container's own mounts). A directory made on the way that the image has
// takes the image's mode, owner and times. Nothing is made where the image has something of another
// kind on the way (a symlink /etc): the sandbox resolves and creates those inside the root as before.
void make_init_layer(const std::string& init_dir, const std::vector<std::string>& lowers_top_first,
                     const std::vector<InitStub>& extra = {});

// The layers under a container's writable layer, top first: init/ (when the container has one),
// then the image's snapshots.
std::vector<std::string> container_lowers(Store& store, const ContainerStore& containers,
                                          const ContainerRecord& container);

}  // namespace kiln::runtime
