// The builder's insides, shared by its files: one build's state (BuildSession) and the image a
// stage makes as its instructions run (ImageState). Not part of the builder's contract.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <semaphore>
#include <set>
#include <string>
#include <vector>

#include "builder/build.h"
#include "builder/checksum_cache.h"
#include "builder/progress.h"
#include "builder/registry_cache.h"
#include "builder/source_tree.h"
#include "layerstore/files.h"
#include "layerstore/image.h"
#include "layerstore/store.h"
#include "parser/build_graph.h"
#include "parser/dockerfile.h"

namespace kiln::builder {

struct Layer {
  Descriptor blob;
  Digest diff_id;
};

// A stage's image as its instructions make it.
struct ImageState {
  std::vector<Layer> layers;
  // The whole image config document: architecture, os, config (Env, Cmd, ...), rootfs, history.
  nlohmann::json config;
  // The ARGs declared so far, in order, with their values: what RUN's history line lists, and what
  // a stage built on this one inherits.
  std::vector<std::pair<std::string, std::optional<std::string>>> args;
  // The stage's platform: FROM --platform, else the stage it is built on, else the build's.
  parser::Platform platform;

  std::optional<Digest> chain_id() const;
  std::vector<Descriptor> blobs() const;
  std::vector<Digest> diff_ids() const;
  nlohmann::json& container_config() { return config["config"]; }
};

// The build's context, as the instructions read it.
struct ContextSource {
  std::shared_ptr<SourceTree> tree;  // null when the build has no context (a Dockerfile on stdin)
  std::unique_ptr<ChecksumCache> checksums;
};

class BuildSession {
 public:
  BuildSession(Store& store, const BuildRequest& request, Progress& progress);
  ~BuildSession();

  Store& store;
  const BuildRequest& request;
  Progress& progress;

  parser::Dockerfile file;
  std::string dockerfile_name;  // for messages: "Dockerfile"
  // Names this Dockerfile in this context, so that a step's inputs can be compared with what the
  // same step had in the last build (to explain a cache miss).
  std::string lineage_scope;
  parser::BuildGraph graph;
  // Instructions that came from a base image's ONBUILD triggers (indices into file.instructions).
  std::set<size_t> onbuild_instructions;
  ContextSource context;
  std::map<std::string, ContextSource> named_contexts;  // --build-context NAME=DIR
  parser::Platform target_platform;
  std::optional<int64_t> epoch;  // SOURCE_DATE_EPOCH

  // Base images by the expanded name FROM gave, resolved from the store as they are first named.
  std::mutex bases_mutex;
  std::map<std::string, Image> base_images;
  std::set<std::string> missing_bases;
  // Base images pulled by this build, by "name platform": the store keeps one platform per name,
  // so a stage whose FROM pulled another platform of the same name finds its own here.
  std::map<std::string, Image> pulled_bases;

  // ---- stages: results and waiting
  // The result of a finished stage; blocks until it is done. Throws BuildCanceled when the build
  // stops first.
  const ImageState& stage_result(size_t stage);
  void set_stage_result(size_t stage, ImageState state);
  // The snapshot directories (bottom first) of a finished stage or of an image, unpacked once.
  std::vector<std::string> snapshots(const ImageState& state);
  std::vector<std::string> snapshots(const std::vector<Layer>& layers);

  // ---- stopping
  // The descriptor steps watch to be killed (an eventfd, written once the build must stop).
  int cancel_fd() const { return cancel_event_.get(); }
  bool canceled() const { return stop_.load(); }
  // Records the first failure and stops every other stage.
  void fail(std::exception_ptr error);
  std::exception_ptr first_error();
  void stop();
  // Throws BuildCanceled when the build is stopping.
  void check_canceled() const;

  // ---- the registry cache
  // The records of --cache-from, when any was given.
  std::unique_ptr<RemoteCache> remote_cache;
  // Every step's record this build used or made, by stage, for --cache-to.
  void note_step_record(size_t stage, const std::string& key, const nlohmann::json& data);
  std::vector<std::pair<size_t, CacheRecord>> step_records();

  // ---- limits
  std::counting_semaphore<64> jobs{1};
  unsigned job_count = 1;  // --jobs: the slots above, and the threads a step may hash files on

  // ---- naming steps as BuildKit does: "[stage-name 2/7] RUN make"
  std::string step_name(size_t stage, const std::string& text);
  // Whether a stage's steps may come from the cache (--no-cache, --no-cache-filter).
  bool cache_allowed(size_t stage) const;

  // The time a new history entry records: SOURCE_DATE_EPOCH when set, else now (RFC 3339).
  std::string now_created() const;

  // ---- one run of each step per build
  // Two stages that reach the same step (the same key) at once run it once: the second waits for
  // the first's record. claim_step returns true when the caller is to run the step; false after
  // waiting for another that ran it (or failed: then the caller runs it after all, on a second
  // claim). finish_step ends the claim, whatever happened.
  bool claim_step(const std::string& key);
  void finish_step(const std::string& key, bool produced);
  // Whether this build made the step's record (usable even under --no-cache).
  bool produced_here(const std::string& key);
  bool produced_any();

 private:
  std::mutex records_mutex_;
  std::vector<std::pair<size_t, CacheRecord>> step_records_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::optional<ImageState>> results_;
  std::vector<int> step_counters_;
  std::vector<int> step_totals_;
  std::set<std::string> running_steps_;
  std::set<std::string> produced_steps_;
  std::condition_variable step_finished_;
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  Fd cancel_event_;

  friend class Builder;
};

// Runs one stage's instructions on the state its FROM gives, returning the stage's image.
ImageState run_stage(BuildSession& session, size_t stage);

// ---- history and display helpers (stage.cpp)

// Go's %q of a string (strconv.Quote), as BuildKit's history lines quote CMD and ENTRYPOINT.
std::string go_quote(std::string_view text);
// Go's %q of a []string: `["a" "b"]`.
std::string go_quote_list(const std::vector<std::string>& items);
// Go's %v of a []string: `[a b]`.
std::string go_list(const std::vector<std::string>& items);

}  // namespace kiln::builder
