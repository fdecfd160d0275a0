// From instructions to what the builder executes: stages, the variables in scope at each line
// (global ARGs, stage ARGs, ENV, --build-arg, the platform ARGs), every argument expanded as the
// builder will use it, the dependencies between stages, and the order to build them in. The builder
// takes a BuildGraph and never reads Dockerfile text again.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parser/dockerfile.h"
#include "parser/instruction_rules.h"

namespace kiln::parser {

struct Platform {
  std::string os = "linux";
  std::string architecture = "amd64";
  std::string variant;
  std::string to_string() const;  // "linux/arm/v7"
};

// "linux/arm64/v8", "linux/amd64". Throws std::invalid_argument.
Platform parse_platform(std::string_view text);

// The platform this process runs on, as Docker names it.
Platform host_platform();

struct BuildOptions {
  // --build-arg NAME=VALUE, in the order given; a later value for the same name wins.
  std::vector<std::pair<std::string, std::string>> build_args;
  std::string target;  // a stage name or index; empty: the last stage
  Platform build_platform = host_platform();
  Platform target_platform = host_platform();
  // The environment a stage starts with when it is built on an image (`base` as expanded): the
  // image's Env, which Docker's word processing sees in that stage. Unset or nullopt: none, as for
  // scratch. Called for every such stage, needed by the target or not, so it must not fail.
  std::function<std::optional<std::vector<std::pair<std::string, std::string>>>(const std::string& base)>
      base_env;
};

// An instruction's arguments after word processing: quotes removed, variables substituted with the
// values in scope at its line. Only for instructions Docker expands (keyword_expands_words) and for
// the flags it expands (--from, --chown, --chmod, --checksum, --exclude, --mount, --platform).
struct Expanded {
  std::vector<std::string> flags;      // "--chown=app:app", in the order written
  std::vector<std::string> arguments;  // COPY/ADD sources and destination, EXPOSE ports, USER, …
  // ENV, LABEL, ARG. For ARG the value is the one the build will see (a --build-arg, else the
  // default, else the global ARG's value) and nullopt when it has none; the builder replays ENV and
  // ARG pairs in order to know the variables in scope for RUN.
  std::vector<KeyValue> pairs;
};

struct Dependency {
  enum class Kind { kBase, kCopyFrom, kMountFrom };
  Kind kind;
  std::optional<std::size_t> stage;  // the stage depended on, or nullopt for an image
  std::string image;                 // the image reference when not a stage
  std::size_t instruction;           // the FROM, COPY or RUN that creates the dependency
};

struct Stage {
  std::size_t index = 0;
  std::string name;      // lowercase as Docker stores it; empty when unnamed
  std::size_t from = 0;  // index of the FROM instruction in Dockerfile::instructions
  std::string base;      // the base after expansion: an image reference, a stage name, or "scratch"
  std::optional<std::size_t> base_stage;
  std::string platform;                   // --platform after expansion, or empty
  std::vector<std::size_t> instructions;  // the stage's instructions after FROM, in order
  std::vector<Dependency> dependencies;
  std::string display_name() const;  // the name, or "stage-N" as BuildKit names unnamed stages
};

struct VariableUse {
  std::string name;
  std::size_t instruction;
};

struct BuildGraph {
  std::vector<std::size_t> global_args;  // ARG instructions before the first FROM
  std::vector<Stage> stages;
  // Per instruction (same indices as Dockerfile::instructions): its expansion, when it has one.
  std::vector<std::optional<Expanded>> expanded;
  // Per instruction: RUN's --mount specs, expanded and parsed.
  std::vector<std::vector<MountSpec>> mounts;
  std::size_t target = 0;
  // The stages the target needs, each after the stages it depends on; ties keep file order.
  std::vector<std::size_t> order;
  // Variables referred to but not set at that line (for build checks).
  std::vector<VariableUse> undefined_variables;
};

// Throws ParseError: an instruction before the first FROM other than ARG, a malformed expansion
// (`${x:?}` on an unset variable, an unterminated quote), an empty base name, a bad --mount, a
// stage index out of range, an unknown --target, a dependency cycle.
BuildGraph build_graph(const Dockerfile& file, const BuildOptions& options);

}  // namespace kiln::parser
