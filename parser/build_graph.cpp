#include "parser/build_graph.h"

#include <fmt/format.h>
#include <sys/utsname.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <stdexcept>

#include "parser/text.h"
#include "parser/word_expansion.h"

namespace kiln::parser {

std::string Platform::to_string() const {
  std::string out = os + "/" + architecture;
  if (!variant.empty()) out += "/" + variant;
  return out;
}

Platform parse_platform(std::string_view text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    std::size_t slash = text.find('/', start);
    parts.emplace_back(
        text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty() ||
      (parts.size() == 3 && parts[2].empty())) {
    throw std::invalid_argument(fmt::format("invalid platform \"{}\" (want os/arch[/variant])", text));
  }
  Platform platform;
  platform.os = text::to_lower(parts[0]);
  platform.architecture = text::to_lower(parts[1]);
  if (parts.size() == 3) platform.variant = text::to_lower(parts[2]);
  return platform;
}

Platform host_platform() {
  Platform platform;
  utsname name{};
  if (uname(&name) != 0) return platform;
  std::string_view machine = name.machine;
  // Go's GOARCH names, which are what image platforms use; ppc64le, s390x and riscv64 are named
  // alike by both.
  if (machine == "x86_64") {
    platform.architecture = "amd64";
  } else if (machine == "aarch64") {
    platform.architecture = "arm64";
  } else if (machine == "armv7l") {
    platform.architecture = "arm";
    platform.variant = "v7";
  } else if (machine == "i686" || machine == "i386") {
    platform.architecture = "386";
  } else {
    platform.architecture = std::string(machine);
  }
  return platform;
}

std::string Stage::display_name() const {
  return name.empty() ? fmt::format("stage-{}", index) : name;
}

namespace {

constexpr std::string_view kProxyArgs[] = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                           "FTP_PROXY",  "ftp_proxy",  "NO_PROXY",    "no_proxy",
                                           "ALL_PROXY",  "all_proxy"};

using Values = std::map<std::string, std::optional<std::string>, std::less<>>;
using EnvMap = std::map<std::string, std::string, std::less<>>;
// Whether a name is declared in scope (an ARG without a value is declared but not set).
using IsDeclared = std::function<bool(std::string_view)>;

class GraphBuilder {
 public:
  GraphBuilder(const Dockerfile& file, const BuildOptions& options) : file_(file), options_(options) {
    for (const auto& [name, value] : options.build_args) build_args_[name] = value;
    const Platform& build = options.build_platform;
    const Platform& target = options.target_platform;
    platform_args_ = {
        {"BUILDPLATFORM", build.to_string()},   {"BUILDOS", build.os},
        {"BUILDARCH", build.architecture},      {"BUILDVARIANT", build.variant},
        {"TARGETPLATFORM", target.to_string()}, {"TARGETOS", target.os},
        {"TARGETARCH", target.architecture},    {"TARGETVARIANT", target.variant},
    };
  }

  BuildGraph build() {
    graph_.expanded.resize(file_.instructions.size());
    graph_.mounts.resize(file_.instructions.size());
    for (std::size_t i = 0; i < file_.instructions.size(); ++i) {
      const Instruction& ins = file_.instructions[i];
      if (ins.keyword == Keyword::kFrom) {
        start_stage(i);
      } else if (graph_.stages.empty()) {
        if (ins.keyword != Keyword::kArg) {
          fail(ins.start, fmt::format("{} comes before the first FROM; only ARG instructions may precede it",
                                      text::to_upper(keyword_name(ins.keyword))));
        }
        global_arg(i);
      } else {
        stage_instruction(i);
      }
    }
    if (graph_.stages.empty()) {
      fail(file_.instructions.back().start,
           "the Dockerfile has no FROM instruction, so there is no stage to build");
    }
    resolve_late_dependencies();
    choose_target();
    order_stages();
    return std::move(graph_);
  }

 private:
  [[noreturn]] void fail(Position where, const std::string& message) const {
    throw ParseError(message, where, std::string(file_.line_text(where.line)));
  }

  // Word processing for one argument of instruction `index`, by `process` (expand_word or
  // expand_words); errors point into the argument, and unset variables are noted for the checks.
  template <typename Process>
  auto process_word(std::size_t index, Position where, std::string_view word, const IsDeclared& declared,
                    Process&& process) {
    VariableUsage usage;
    ExpandOptions options;
    options.escape = file_.escape;
    try {
      auto result = process(options, usage);
      note_unmatched(index, usage, declared);
      return result;
    } catch (const WordError& error) {
      fail(offset_position(where, word, error.offset),
           fmt::format("failed to process {}: {}", text::quote(word), error.what()));
    }
  }

  std::string expand(std::size_t index, Position where, std::string_view word, const VariableLookup& lookup,
                     const IsDeclared& declared) {
    return process_word(index, where, word, declared,
                        [&](const ExpandOptions& options, VariableUsage& usage) {
                          return expand_word(word, lookup, options, &usage);
                        });
  }

  std::vector<std::string> expand_split(std::size_t index, Position where, std::string_view word,
                                        const VariableLookup& lookup, const IsDeclared& declared) {
    return process_word(index, where, word, declared,
                        [&](const ExpandOptions& options, VariableUsage& usage) {
                          return expand_words(word, lookup, options, &usage);
                        });
  }

  // Where the value of pair `i` starts: after `key=` in the `k=v` form; the legacy form's value
  // follows blanks of unknown width, so the key's position stands in for it.
  static Position value_position(const Instruction& ins, std::size_t i) {
    Position where = ins.argument_positions[i];
    if (!ins.pairs[i].legacy_form) where.column += static_cast<int>(ins.pairs[i].key.size()) + 1;
    return where;
  }

  // The position `offset` bytes into an argument that starts at `where`, when the argument does not
  // span lines before that point; else the argument's start.
  Position offset_position(Position where, std::string_view word, std::size_t offset) const {
    std::string_view line = file_.line_text(where.line);
    std::size_t column = static_cast<std::size_t>(where.column) - 1 + offset;
    if (column <= line.size() && line.substr(static_cast<std::size_t>(where.column) - 1, offset) ==
                                     word.substr(0, std::min(offset, word.size()))) {
      return {where.line, static_cast<int>(column + 1)};
    }
    return where;
  }

  void note_unmatched(std::size_t index, const VariableUsage& usage, const IsDeclared& declared) {
    for (const std::string& name : usage.unmatched) {
      if (!declared(name)) graph_.undefined_variables.push_back({name, index});
    }
  }

  // Global scope: ARGs before the first FROM, with --build-arg applied, and the platform ARGs.
  VariableLookup global_lookup() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      if (auto it = global_values_.find(name); it != global_values_.end()) return it->second;
      for (const auto& [key, value] : platform_args_) {
        if (key == name) return value;
      }
      return std::nullopt;
    };
  }

  IsDeclared global_declared() const {
    return [this](std::string_view name) {
      if (global_values_.count(name) != 0) return true;
      return std::any_of(platform_args_.begin(), platform_args_.end(),
                         [&](const auto& entry) { return entry.first == name; });
    };
  }

  void global_arg(std::size_t index) {
    const Instruction& ins = file_.instructions[index];
    graph_.global_args.push_back(index);
    Expanded expanded;
    std::vector<std::pair<std::string, std::optional<std::string>>> updates;
    VariableLookup lookup = global_lookup();
    auto declared = global_declared();
    for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
      const KeyValue& pair = ins.pairs[i];
      std::optional<std::string> value;
      if (auto arg = build_args_.find(pair.key); arg != build_args_.end()) {
        value = arg->second;
      } else if (pair.value) {
        value = expand(index, value_position(ins, i), *pair.value, lookup, declared);
      }
      updates.emplace_back(pair.key, value);
      expanded.pairs.push_back({pair.key, value, false});
    }
    for (auto& [key, value] : updates) global_values_[key] = std::move(value);
    graph_.expanded[index] = std::move(expanded);
  }

  void start_stage(std::size_t index) {
    const Instruction& ins = file_.instructions[index];
    Stage stage;
    stage.index = graph_.stages.size();
    stage.from = index;
    if (ins.arguments.size() == 3) stage.name = text::to_lower(ins.arguments[2]);
    Expanded expanded;
    VariableLookup lookup = global_lookup();
    auto declared = global_declared();
    stage.base = expand(index, ins.argument_positions[0], ins.arguments[0], lookup, declared);
    if (stage.base.empty()) {
      fail(ins.argument_positions[0], fmt::format("base name ({}) should not be blank", ins.arguments[0]));
    }
    expanded.arguments.push_back(stage.base);
    if (ins.arguments.size() == 3) {
      expanded.arguments.push_back(ins.arguments[1]);
      expanded.arguments.push_back(ins.arguments[2]);
    }
    for (const Flag& flag : ins.flags) {
      std::string value = expand(index, flag.position, *flag.value(), lookup, declared);
      if (flag.name() == "platform") {
        stage.platform = value;
        if (!value.empty()) {
          try {
            parse_platform(value);
          } catch (const std::invalid_argument& error) {
            fail(flag.position, fmt::format("FROM: {}", error.what()));
          }
        }
      }
      expanded.flags.push_back(fmt::format("--{}={}", flag.name(), value));
    }
    graph_.expanded[index] = std::move(expanded);

    // A base naming an earlier stage builds on it; the latest stage of that name wins, as the
    // name is looked up while the stages are being read.
    std::string lowered = text::to_lower(stage.base);
    for (std::size_t s = graph_.stages.size(); s-- > 0;) {
      if (graph_.stages[s].name == lowered) {
        stage.base_stage = s;
        break;
      }
    }
    Dependency dependency{Dependency::Kind::kBase, stage.base_stage, stage.base_stage ? "" : stage.base,
                          index};
    stage.dependencies.push_back(std::move(dependency));

    if (!stage_env_.empty()) stage_env_.back() = env_;
    args_.clear();
    env_ = stage.base_stage ? stage_env_[*stage.base_stage] : std::make_shared<EnvMap>();
    if (!stage.base_stage && options_.base_env && lowered != "scratch") {
      if (auto image_env = options_.base_env(stage.base)) {
        for (auto& [key, value] : *image_env) (*env_)[key] = value;
      }
    }
    graph_.stages.push_back(std::move(stage));
    stage_env_.push_back(env_);
  }

  // Stage scope: ENV first (it overrides an ARG of the same name), then the stage's ARGs, then
  // proxy build-args, which need no declaration.
  VariableLookup stage_lookup() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      if (auto it = env_->find(name); it != env_->end()) return it->second;
      if (auto it = args_.find(name); it != args_.end() && it->second) return it->second;
      for (std::string_view proxy : kProxyArgs) {
        if (proxy == name) {
          if (auto arg = build_args_.find(name); arg != build_args_.end()) return arg->second;
        }
      }
      return std::nullopt;
    };
  }

  IsDeclared stage_declared() const {
    return [this](std::string_view name) { return env_->count(name) != 0 || args_.count(name) != 0; };
  }

  // Stages built on another stage start from its environment; the map is shared until one of them
  // sets a variable, so a long chain of stages costs nothing until it diverges.
  void set_env(const std::string& key, const std::string& value) {
    if (env_.use_count() > 1) env_ = std::make_shared<EnvMap>(*env_);
    (*env_)[key] = value;
  }

  // COPY --from, RUN --mount from=: a stage index, a stage name, or else an image.
  Dependency source_dependency(Dependency::Kind kind, const std::string& reference, std::size_t index,
                               Position where) {
    Dependency dependency{kind, std::nullopt, "", index};
    // A reference that reads as an integer is a stage index (Go's strconv.Atoi decides, as in
    // BuildKit; "1-2" is a name). Stages after this one exist only once the whole file is read, so
    // the upper bound is checked in resolve_late_dependencies.
    if (std::optional<long long> stage_index = text::parse_integer(reference)) {
      if (*stage_index < 0) fail(where, fmt::format("invalid stage index {}", reference));
      dependency.stage = static_cast<std::size_t>(*stage_index);
      return dependency;
    }
    // Names are resolved once every stage is known: a later stage may be named.
    dependency.image = reference;
    pending_.push_back({graph_.stages.size() - 1, graph_.stages.back().dependencies.size()});
    return dependency;
  }

  void stage_instruction(std::size_t index) {
    const Instruction& ins = file_.instructions[index];
    Stage& stage = graph_.stages.back();
    stage.instructions.push_back(index);
    // RUN's command is the shell's to expand; only its --mount values are Docker's.
    if (!keyword_expands_words(ins.keyword) && !(ins.keyword == Keyword::kRun && ins.find_flag("mount")))
      return;

    VariableLookup lookup = stage_lookup();
    auto declared = stage_declared();
    Expanded expanded;
    auto expand_flag = [&](const Flag& flag) -> std::string {
      std::string_view name = flag.name();
      if (!flag.value()) return flag.text;
      if (name == "from" || name == "chown" || name == "chmod" || name == "checksum" || name == "exclude") {
        return fmt::format("--{}={}", name, expand(index, flag.position, *flag.value(), lookup, declared));
      }
      if (name == "mount") {
        auto expander = [&](std::string_view value) {
          return expand(index, flag.position, value, lookup, declared);
        };
        std::string spec;
        try {
          spec = expand_mount_spec(*flag.value(), expander);
          graph_.mounts[index].push_back(parse_mount(spec));
        } catch (const std::invalid_argument& error) {
          fail(flag.position, fmt::format("RUN --mount: {}", error.what()));
        }
        return fmt::format("--mount={}", spec);
      }
      return flag.text;
    };
    expanded.flags.reserve(ins.flags.size());
    if (ins.keyword == Keyword::kRun) graph_.mounts[index].reserve(ins.flags.size());
    for (const Flag& flag : ins.flags) expanded.flags.push_back(expand_flag(flag));

    switch (ins.keyword) {
      case Keyword::kArg: {
        std::vector<std::pair<std::string, std::optional<std::string>>> updates;
        for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
          const KeyValue& pair = ins.pairs[i];
          std::optional<std::string> value;
          if (auto arg = build_args_.find(pair.key); arg != build_args_.end()) {
            value = arg->second;
          } else if (pair.value) {
            value = expand(index, value_position(ins, i), *pair.value, lookup, declared);
          } else if (auto global = global_values_.find(pair.key); global != global_values_.end()) {
            value = global->second;
          } else {
            for (const auto& [key, platform_value] : platform_args_) {
              if (key == pair.key) value = platform_value;
            }
          }
          updates.emplace_back(pair.key, value);
          expanded.pairs.push_back({pair.key, value, false});
        }
        for (auto& [key, value] : updates) args_[key] = std::move(value);
        break;
      }
      case Keyword::kEnv:
      case Keyword::kLabel: {
        std::vector<std::pair<std::string, std::string>> updates;
        for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
          const KeyValue& pair = ins.pairs[i];
          std::string key = expand(index, ins.argument_positions[i], pair.key, lookup, declared);
          std::string value =
              expand(index, value_position(ins, i), pair.value.value_or(""), lookup, declared);
          updates.emplace_back(key, value);
          expanded.pairs.push_back({key, value, pair.legacy_form});
        }
        // Every pair of one ENV sees the variables as they were before it (Docker documents this).
        if (ins.keyword == Keyword::kEnv) {
          for (auto& [key, value] : updates) set_env(key, value);
        }
        break;
      }
      case Keyword::kCopy:
      case Keyword::kAdd:
        for (std::size_t i = 0; i < ins.arguments.size(); ++i) {
          const std::string& argument = ins.arguments[i];
          // A heredoc source is a name, not a path: it is not expanded.
          bool heredoc_source = i + 1 < ins.arguments.size() && is_heredoc_word(argument);
          expanded.arguments.push_back(
              heredoc_source ? argument
                             : expand(index, ins.argument_positions[i], argument, lookup, declared));
        }
        if (const Flag* from = ins.find_flag("from")) {
          std::string reference = expand(index, from->position, *from->value(), lookup, declared);
          stage.dependencies.push_back(
              source_dependency(Dependency::Kind::kCopyFrom, reference, index, from->position));
        }
        break;
      case Keyword::kExpose:
        for (std::size_t i = 0; i < ins.arguments.size(); ++i) {
          for (std::string& port :
               expand_split(index, ins.argument_positions[i], ins.arguments[i], lookup, declared)) {
            expanded.arguments.push_back(std::move(port));
          }
        }
        break;
      case Keyword::kRun: {
        std::vector<const Flag*> mount_flags = ins.find_flags("mount");
        for (std::size_t m = 0; m < graph_.mounts[index].size(); ++m) {
          const MountSpec& mount = graph_.mounts[index][m];
          if (!mount.from.empty()) {
            stage.dependencies.push_back(
                source_dependency(Dependency::Kind::kMountFrom, mount.from, index, mount_flags[m]->position));
          }
        }
        graph_.expanded[index] = std::move(expanded);
        return;
      }
      default:
        for (std::size_t i = 0; i < ins.arguments.size(); ++i) {
          expanded.arguments.push_back(
              expand(index, ins.argument_positions[i], ins.arguments[i], lookup, declared));
        }
        break;
    }
    graph_.expanded[index] = std::move(expanded);
  }

  void resolve_late_dependencies() {
    for (const Pending& pending : pending_) {
      Dependency& dependency = graph_.stages[pending.stage].dependencies[pending.dependency];
      std::string lowered = text::to_lower(dependency.image);
      for (std::size_t s = graph_.stages.size(); s-- > 0;) {
        if (graph_.stages[s].name == lowered) {
          dependency.stage = s;
          dependency.image.clear();
          break;
        }
      }
    }
    for (const Stage& stage : graph_.stages) {
      for (const Dependency& dependency : stage.dependencies) {
        if (dependency.stage && *dependency.stage >= graph_.stages.size()) {
          const Instruction& ins = file_.instructions[dependency.instruction];
          const Flag* from = ins.find_flag(dependency.kind == Dependency::Kind::kCopyFrom ? "from" : "mount");
          fail(from ? from->position : ins.start,
               fmt::format("invalid stage index {}: the Dockerfile has {} stage{}", *dependency.stage,
                           graph_.stages.size(), graph_.stages.size() == 1 ? "" : "s"));
        }
      }
    }
  }

  void choose_target() {
    if (options_.target.empty()) {
      graph_.target = graph_.stages.size() - 1;
      return;
    }
    std::string lowered = text::to_lower(options_.target);
    for (std::size_t s = graph_.stages.size(); s-- > 0;) {
      if (graph_.stages[s].name == lowered) {
        graph_.target = s;
        return;
      }
    }
    std::vector<std::string_view> names;
    for (const Stage& stage : graph_.stages) {
      if (!stage.name.empty()) names.push_back(stage.name);
    }
    std::string suggestion = text::closest_match(options_.target, names);
    std::string message = fmt::format("target stage \"{}\" could not be found", options_.target);
    if (!suggestion.empty()) message += fmt::format(" (did you mean \"{}\"?)", suggestion);
    throw ParseError(message, {0, 0}, "");
  }

  // Kahn's algorithm over the stages the target reaches: iterative, so that a file of many stages
  // cannot exhaust the stack, and a min-heap keeps file order among stages that are ready together.
  void order_stages() {
    const std::size_t count = graph_.stages.size();
    std::vector<bool> needed(count, false);
    std::vector<std::size_t> work{graph_.target};
    needed[graph_.target] = true;
    while (!work.empty()) {
      std::size_t s = work.back();
      work.pop_back();
      for (const Dependency& dependency : graph_.stages[s].dependencies) {
        if (dependency.stage && !needed[*dependency.stage]) {
          needed[*dependency.stage] = true;
          work.push_back(*dependency.stage);
        }
      }
    }
    std::vector<std::size_t> waiting(count, 0);
    std::vector<std::vector<std::size_t>> dependents(count);
    for (std::size_t s = 0; s < count; ++s) {
      if (!needed[s]) continue;
      std::set<std::size_t> distinct;
      for (const Dependency& dependency : graph_.stages[s].dependencies) {
        if (dependency.stage) distinct.insert(*dependency.stage);
      }
      waiting[s] = distinct.size();
      for (std::size_t d : distinct) dependents[d].push_back(s);
    }
    std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
    for (std::size_t s = 0; s < count; ++s) {
      if (needed[s] && waiting[s] == 0) ready.push(s);
    }
    while (!ready.empty()) {
      std::size_t s = ready.top();
      ready.pop();
      graph_.order.push_back(s);
      for (std::size_t dependent : dependents[s]) {
        if (--waiting[dependent] == 0) ready.push(dependent);
      }
    }
    for (std::size_t s = 0; s < count; ++s) {
      if (needed[s] && waiting[s] != 0) {
        // A stage in the cycle: point at the instruction that depends on another stage of it.
        for (const Dependency& dependency : graph_.stages[s].dependencies) {
          if (dependency.stage && waiting[*dependency.stage] != 0) {
            const Instruction& ins = file_.instructions[dependency.instruction];
            fail(ins.start,
                 fmt::format("circular dependency detected on stage \"{}\": it depends on stage \"{}\"",
                             graph_.stages[s].display_name(),
                             graph_.stages[*dependency.stage].display_name()));
          }
        }
      }
    }
  }

  // A dependency by name, resolved once every stage is known.
  struct Pending {
    std::size_t stage;
    std::size_t dependency;
  };

  const Dockerfile& file_;
  const BuildOptions& options_;
  BuildGraph graph_;
  std::map<std::string, std::string, std::less<>> build_args_;
  std::vector<std::pair<std::string, std::string>> platform_args_;
  Values global_values_;
  // The current stage's ENV and ARGs; each stage's final ENV for stages built on it.
  std::shared_ptr<EnvMap> env_ = std::make_shared<EnvMap>();
  Values args_;
  std::vector<std::shared_ptr<EnvMap>> stage_env_;
  std::vector<Pending> pending_;
};

}  // namespace

BuildGraph build_graph(const Dockerfile& file, const BuildOptions& options) {
  return GraphBuilder(file, options).build();
}

}  // namespace kiln::parser
