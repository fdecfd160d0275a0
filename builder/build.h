// `kiln build`: a Dockerfile and its context become an image, as `docker build` (BuildKit) makes
// it. The parser's build graph says which stages the target needs and in which order; each stage
// runs on a thread of its own once the stages it needs are done. Every step that changes files has
// a cache key; a step whose key the store's build cache knows is not run again, its layer is
// reused. RUN steps run in the runtime's sandbox on an overlay of the stage's layer snapshots, and
// their upper directory becomes the new layer and the next snapshot at once.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "builder/progress.h"
#include "layerstore/compress.h"
#include "layerstore/digest.h"
#include "layerstore/errors.h"
#include "layerstore/reference.h"
#include "layerstore/store.h"
#include "registry/client.h"

namespace kiln::builder {

// --output: where the result goes (BuildKit's exporters).
struct OutputSpec {
  enum class Type {
    kImage,   // the store (the default), named by the tags
    kOci,     // an OCI image layout archive at dest
    kDocker,  // a docker-archive (what `docker save` writes) at dest
    kTar,     // the target stage's files as a tar at dest ("-": standard output)
    kLocal,   // the target stage's files in the directory dest
  };
  Type type = Type::kImage;
  std::string dest;
};
// Parses `type=oci,dest=out.tar` (or a bare path, which is type=local). Throws UsageError.
OutputSpec parse_output(const std::string& text);

// --cache-to / --cache-from type=registry,ref=REF[,mode=min|max] (BuildKit's names).
struct CacheSpec {
  Reference ref;
  // mode=max: every stage's steps; min (the default): the steps of the final image's layers.
  bool mode_max = false;
};
// Parses one --cache-to or --cache-from value; `flag` names it in errors. Throws UsageError.
CacheSpec parse_cache_spec(const std::string& text, std::string_view flag);

struct SecretSpec {
  std::string id;
  std::string src;  // a file, or
  std::string env;  // an environment variable of kiln's
};
// `id=ID[,src=PATH|,env=VAR]`, also `type=file|env` and Docker's shorthands. Throws UsageError.
SecretSpec parse_secret(const std::string& text);

struct SshSpec {
  std::string id = "default";
  std::string socket;  // an agent socket (SSH_AUTH_SOCK for `default` when not given)
};
SshSpec parse_ssh(const std::string& text);

// How RUN steps are confined:
//   namespace: the runtime's sandbox (mount, PID, UTS, IPC namespaces; root);
//   rootless:  the same inside a user namespace where the caller is root and its subordinate IDs
//              are the rest (kiln enters it before the build starts: runtime/userns.h);
//   chroot:    no new namespaces at all, for a host that refuses them (runtime/chroot_step.h);
//   auto:      the strongest the host allows.
enum class Isolation { kAuto, kNamespace, kRootless, kChroot };
Isolation parse_isolation(const std::string& text);

struct IsolationChoice {
  Isolation isolation;
  std::string why;  // what the choice rests on, for the progress display
};
// Resolves kAuto for this process (root or not, namespaces allowed or not) and checks an explicit
// choice. Enters the user namespace for rootless (it forks: call it before any thread starts).
// Throws UsageError when the choice cannot work here.
IsolationChoice choose_isolation(Isolation requested);

struct BuildRequest {
  // The context: a directory, "-" (a tar archive on standard input, or the Dockerfile itself when
  // it is not an archive), or a git repository URL (https://…#ref:subdir, file://…, git@…).
  std::string context = ".";
  // The Dockerfile: a path (relative to the working directory), "-" (standard input), or empty for
  // CONTEXT/Dockerfile.
  std::string dockerfile;
  std::vector<Reference> tags;
  std::vector<std::pair<std::string, std::string>> build_args;  // in the order given
  std::string target;
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;  // stage names whose steps are never taken from the cache
  bool pull = false;
  std::vector<std::pair<std::string, std::string>> labels;
  std::string network = "default";  // default | none | host: RUN's network
  std::vector<SecretSpec> secrets;
  std::vector<SshSpec> ssh;
  std::map<std::string, std::string> build_contexts;  // --build-context NAME=DIR|docker-image://REF
  int jobs = 0;                                       // 0: one per core
  std::vector<OutputSpec> outputs;
  Compression compression = Compression::Gzip;
  Isolation isolation = Isolation::kAuto;  // resolved: see choose_isolation
  std::string isolation_note;
  std::string platform;  // OS/ARCH[/VARIANT]; empty: the host's
  // How FROM reaches registries: a base the store lacks is pulled, and with `pull` every base is
  // pulled again (for the platform its stage is built for).
  registry::RegistryOptions registry;
  std::vector<CacheSpec> cache_to;
  std::vector<CacheSpec> cache_from;
  std::optional<int64_t> source_date_epoch;
  // Readable when the build must stop (Ctrl-C): running steps are killed, nothing is published.
  int cancel_fd = -1;
  // Where the standard input is read from for `-` (the context or the Dockerfile).
  int stdin_fd = 0;
  // Standard output, for --output type=tar,dest=-.
  int stdout_fd = 1;
};

struct BuildResult {
  Digest image_id;                        // the config digest
  std::optional<Digest> manifest_digest;  // when the image went to the store
  bool cache_grew = false;                // a step ran and added a record to the build cache
};

// The build cache's size limit: $KILN_BUILD_CACHE_MAX when set ("5GB", "512m"), else 10% of the
// file system the store is on, at least 1 GB (BuildKit keeps 10% of the disk). Records used least
// recently go first once a build passes it.
uint64_t default_build_cache_limit(const Store& store);

// A RUN that exited non-zero. The message is BuildKit's: `process "/bin/sh -c make" did not complete
// successfully: exit code: 2`; the Dockerfile's lines and the step's last output come before it.
class StepFailed : public Error {
 public:
  StepFailed(const std::string& what, int code) : Error(what), code_(code) {}
  int step_exit_code() const { return code_; }

 private:
  int code_;
};

// The build was cancelled: Docker's exit code for an interrupted command.
class BuildCanceled : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 130; }
};

// Runs the build. Throws UsageError for bad options, Error (with the Dockerfile's location) for a
// Dockerfile or context Docker would refuse, StepFailed when a RUN fails, BuildCanceled. A failed
// build leaves no image and no tag; the layers of the steps that finished stay in the build cache.
BuildResult build(Store& store, const BuildRequest& request, Progress& progress);

}  // namespace kiln::builder
