// The build's inputs before anything runs: the context (a directory, a tar archive or a Dockerfile
// on standard input, a git repository cloned with the system's git), the Dockerfile, the
// .dockerignore that applies, and the base images and named contexts the stages start from.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "builder/build.h"
#include "builder/source_tree.h"
#include "layerstore/files.h"
#include "layerstore/store.h"
#include "parser/build_graph.h"

namespace kiln::builder {

class BuildSession;
struct ContextSource;

// Docker's default PATH for a stage whose image has none.
inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct LoadedContext {
  std::string dir;  // the context directory; empty when the build has none
  // A directory kiln made for the context (an archive from standard input, a git clone), removed
  // when the build ends.
  std::unique_ptr<TempDir> owned;
  std::string dockerfile_text;
  std::string dockerfile_name;  // the file's name, for messages ("Dockerfile")
  std::string ignore_text;      // the .dockerignore that applies, empty when none
  std::string ignore_name;      // its path, empty when none
};

// Reads the request's context and Dockerfile. `tmp_parent` (the store's tmp/) receives what kiln
// unpacks or clones. Throws UsageError for a context or Dockerfile that is not there, Error when git
// fails.
LoadedContext load_context(const BuildRequest& request, const std::string& tmp_parent);

// The .dockerignore's rules as the filter of the context's tree. Throws Error naming the file and
// line of a bad pattern.
PathFilter make_ignore_filter(const LoadedContext& context);

// Where the checksums of a host directory's files are kept in the store.
std::string checksum_cache_file(const Store& store, const std::string& dir);

// The image a FROM (or COPY --from) names, from the store: by the name as given, after a
// --build-context NAME=docker-image://REF that replaces it. Null when the store does not have it.
// Results are remembered in the session.
// The image a FROM (or COPY --from) name stands for: itself, or what --build-context
// NAME=docker-image://REF says.
std::string base_image_lookup(const BuildRequest& request, const std::string& name);
// With a platform: the image this build pulled of that name for that platform, when it did.
const Image* find_base_image(Store& store, BuildSession& session, const BuildRequest& request,
                             const std::string& name, const parser::Platform* platform = nullptr);
// The key of session.pulled_bases.
std::string pulled_base_key(const std::string& lookup, const parser::Platform& platform);
// The --build-context directory a name stands for, or null.
const ContextSource* named_context_for(BuildSession& session, const std::string& name);

bool text_equal_fold(std::string_view a, std::string_view b);
std::string text_to_lower(std::string_view text);

}  // namespace kiln::builder
