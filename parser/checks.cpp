#include "parser/checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "parser/text.h"

namespace kiln::parser {

namespace {

struct CheckDirective {
  std::set<std::string, std::less<>> skip;
  bool skip_all = false;
  bool error = false;
};

// `# check=skip=Rule1,Rule2;error=true`
CheckDirective read_check_directive(const Dockerfile& file) {
  CheckDirective directive;
  const Directive* check = file.find_directive("check");
  if (!check) return directive;
  std::string_view value = check->value;
  while (!value.empty()) {
    std::size_t semicolon = value.find(';');
    std::string_view part = text::trim_space(value.substr(0, semicolon));
    value = semicolon == std::string_view::npos ? std::string_view() : value.substr(semicolon + 1);
    std::size_t equals = part.find('=');
    if (equals == std::string_view::npos) continue;
    std::string key = text::to_lower(text::trim_space(part.substr(0, equals)));
    std::string_view setting = text::trim_space(part.substr(equals + 1));
    if (key == "skip") {
      while (!setting.empty()) {
        std::size_t comma = setting.find(',');
        std::string_view rule = text::trim_space(setting.substr(0, comma));
        if (text::equals_ignoring_case(rule, "all")) directive.skip_all = true;
        if (!rule.empty()) directive.skip.emplace(rule);
        setting = comma == std::string_view::npos ? std::string_view() : setting.substr(comma + 1);
      }
    } else if (key == "error") {
      directive.error = text::equals_ignoring_case(setting, "true");
    }
  }
  return directive;
}

bool is_all_upper(std::string_view word) {
  return std::none_of(word.begin(), word.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}
bool is_all_lower(std::string_view word) {
  return std::none_of(word.begin(), word.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// BuildKit's SecretsUsedInArgOrEnv: the name split at non-alphanumerics contains a word that names
// a secret.
bool names_a_secret(std::string_view name) {
  static const std::set<std::string, std::less<>> kWords = {
      "apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"};
  std::string lowered = text::to_lower(name);
  std::size_t start = 0;
  for (std::size_t i = 0; i <= lowered.size(); ++i) {
    bool boundary = i == lowered.size() ||
                    !((lowered[i] >= 'a' && lowered[i] <= 'z') || (lowered[i] >= '0' && lowered[i] <= '9'));
    if (!boundary) continue;
    if (i > start && kWords.count(std::string_view(lowered).substr(start, i - start)) != 0) return true;
    start = i + 1;
  }
  return false;
}

class Checker {
 public:
  Checker(const Dockerfile& file, const BuildGraph& graph) : file_(file), graph_(graph) {}

  std::vector<CheckWarning> run() {
    instruction_casing();
    for (std::size_t i = 0; i < file_.instructions.size(); ++i) single(i);
    std::set<std::string, std::less<>> stage_names;
    for (const Stage& stage : graph_.stages) {
      // A stage name used twice: references resolve to the last one, which is rarely meant.
      if (!stage.name.empty() && !stage_names.insert(stage.name).second) {
        const Instruction& from = file_.instructions[stage.from];
        add("DuplicateStageName",
            fmt::format("Duplicate stage name \"{}\", stage names should be unique", stage.name),
            from.argument_positions.size() > 2 ? from.argument_positions[2] : from.start);
      }
      per_stage(stage);
    }
    for (const auto& [line, message] : file_.warnings) {
      add("NoEmptyContinuation", "Empty continuation line", {line, 1});
    }
    undefined_variables();
    stage_reference_typos();
    std::stable_sort(warnings_.begin(), warnings_.end(), [](const CheckWarning& a, const CheckWarning& b) {
      return a.position.line != b.position.line ? a.position.line < b.position.line
                                                : a.position.column < b.position.column;
    });
    return std::move(warnings_);
  }

 private:
  void add(std::string rule, std::string message, Position where) {
    warnings_.push_back({std::move(rule), std::move(message), where});
  }

  void instruction_casing() {
    std::size_t upper = 0;
    std::size_t lower = 0;
    for (const Instruction& ins : file_.instructions) {
      if (is_all_upper(ins.keyword_as_written)) ++upper;
      if (is_all_lower(ins.keyword_as_written)) ++lower;
    }
    bool majority_upper = upper >= lower;
    for (const Instruction& ins : file_.instructions) {
      const std::string& word = ins.keyword_as_written;
      if (majority_upper ? !is_all_upper(word) : !is_all_lower(word)) {
        add("ConsistentInstructionCasing",
            fmt::format("Command '{}' should match the case of the command majority ({})", word,
                        majority_upper ? "uppercase" : "lowercase"),
            ins.start);
      }
    }
  }

  void single(std::size_t index) {
    const Instruction& ins = file_.instructions[index];
    std::string name = text::to_upper(keyword_name(ins.keyword));
    switch (ins.keyword) {
      case Keyword::kCmd:
      case Keyword::kEntrypoint:
        if (ins.form == ArgumentForm::kShell) {
          add("JSONArgsRecommended",
              fmt::format(
                  "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                  name),
              ins.start);
        }
        break;
      case Keyword::kMaintainer:
        add("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label",
            ins.start);
        break;
      case Keyword::kOnbuild:
        if (!ins.trigger && !ins.arguments.empty()) {
          std::string_view trigger = ins.arguments.front();
          trigger = trigger.substr(0, trigger.find_first_of(" \t"));
          add("UnknownOnbuildTrigger",
              fmt::format("unknown instruction \"{}\" in ONBUILD: every image built FROM this one will fail",
                          trigger),
              ins.argument_positions.front());
        }
        break;
      case Keyword::kFrom:
        if (ins.arguments.size() == 3) {
          const std::string& as = ins.arguments[1];
          const std::string& from = ins.keyword_as_written;
          if ((is_all_upper(from) && !is_all_upper(as)) || (is_all_lower(from) && !is_all_lower(as))) {
            add("FromAsCasing", fmt::format("'{}' and '{}' keywords' casing do not match", as, from),
                ins.argument_positions[1]);
          }
          if (!is_all_lower(ins.arguments[2])) {
            add("StageNameCasing", fmt::format("Stage name '{}' should be lowercase", ins.arguments[2]),
                ins.argument_positions[2]);
          }
        }
        if (const Flag* platform = ins.find_flag("platform")) {
          std::string_view value = *platform->value();
          if (value == "$TARGETPLATFORM" || value == "${TARGETPLATFORM}") {
            add("RedundantTargetPlatform",
                fmt::format(
                    "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                    value),
                platform->position);
          } else if (value.find('$') == std::string_view::npos) {
            add("FromPlatformFlagConstDisallowed",
                fmt::format("FROM --platform flag should not use constant value \"{}\"", value),
                platform->position);
          }
        }
        break;
      case Keyword::kEnv:
      case Keyword::kArg:
        for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
          const KeyValue& pair = ins.pairs[i];
          if (pair.legacy_form) {
            add("LegacyKeyValueFormat",
                fmt::format("\"{0} key=value\" should be used instead of legacy \"{0} key value\" format",
                            name),
                ins.argument_positions[i]);
          }
          if (names_a_secret(pair.key)) {
            add("SecretsUsedInArgOrEnv",
                fmt::format("Do not use ARG or ENV instructions for sensitive data ({} \"{}\")", name,
                            pair.key),
                ins.argument_positions[i]);
          }
        }
        break;
      case Keyword::kLabel:
        for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
          if (ins.pairs[i].legacy_form) {
            add("LegacyKeyValueFormat",
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format",
                ins.argument_positions[i]);
          }
        }
        break;
      case Keyword::kExpose:
        for (std::size_t i = 0; i < ins.arguments.size(); ++i) {
          std::string_view port = ins.arguments[i];
          std::size_t slash = port.find('/');
          if (slash != std::string_view::npos && !is_all_lower(port.substr(slash + 1))) {
            add("ExposeProtoCasing",
                fmt::format("Defined protocol '{}' in EXPOSE instruction should be lowercase",
                            port.substr(slash + 1)),
                ins.argument_positions[i]);
          }
        }
        break;
      default:
        break;
    }
    if (ins.invalid_json && ins.form == ArgumentForm::kShell) {
      add("InvalidJSONArgs",
          fmt::format(
              "{} arguments start like a JSON array but are not valid JSON, so they are run in shell form",
              name),
          *ins.invalid_json);
    }
  }

  void per_stage(const Stage& stage) {
    std::map<Keyword, std::vector<std::size_t>> singles;
    bool absolute_workdir = false;
    for (std::size_t index : stage.instructions) {
      const Instruction& ins = file_.instructions[index];
      if (ins.keyword == Keyword::kCmd || ins.keyword == Keyword::kEntrypoint ||
          ins.keyword == Keyword::kHealthcheck) {
        singles[ins.keyword].push_back(index);
      }
      if (ins.keyword == Keyword::kWorkdir && graph_.expanded[index] &&
          !graph_.expanded[index]->arguments.empty()) {
        const std::string& path = graph_.expanded[index]->arguments.front();
        if (!path.empty() && path.front() == '/') {
          absolute_workdir = true;
        } else if (!absolute_workdir) {
          add("WorkdirRelativePath",
              fmt::format("Relative workdir \"{}\" can have unexpected results if the base image changes",
                          path),
              ins.start);
        }
      }
    }
    for (const auto& [keyword, indices] : singles) {
      for (std::size_t n = 0; n + 1 < indices.size(); ++n) {
        add("MultipleInstructionsDisallowed",
            fmt::format("Multiple {} instructions should not be used in the same stage because only the last "
                        "one will "
                        "be used",
                        text::to_upper(keyword_name(keyword))),
            file_.instructions[indices[n]].start);
      }
    }
  }

  // `COPY --from=biuld` is an image reference to Docker, pulled from a registry; when the name is
  // one typo away from a stage's, that is almost never what was meant.
  void stage_reference_typos() {
    std::vector<std::string_view> names;
    for (const Stage& stage : graph_.stages) {
      if (!stage.name.empty()) names.push_back(stage.name);
    }
    for (const Stage& stage : graph_.stages) {
      for (const Dependency& dependency : stage.dependencies) {
        if (dependency.stage || dependency.kind == Dependency::Kind::kBase) continue;
        std::string suggestion = text::closest_match(dependency.image, names);
        if (suggestion.empty()) continue;
        const Instruction& ins = file_.instructions[dependency.instruction];
        Position where = ins.start;
        for (const Flag& flag : ins.flags) {
          if ((flag.name() == "from" || flag.name() == "mount") &&
              flag.text.find(dependency.image) != std::string::npos) {
            where = flag.position;
            break;
          }
        }
        add("UnknownStageReference",
            fmt::format("\"{}\" names no stage (did you mean \"{}\"?), so it is used as an image",
                        dependency.image, suggestion),
            where);
      }
    }
  }

  void undefined_variables() {
    std::set<std::pair<std::size_t, std::string>> reported;
    for (const VariableUse& use : graph_.undefined_variables) {
      if (!reported.emplace(use.instruction, use.name).second) continue;
      const Instruction& ins = file_.instructions[use.instruction];
      if (ins.keyword == Keyword::kFrom) {
        add("UndefinedArgInFrom", fmt::format("FROM argument '{}' is not declared", use.name), ins.start);
      } else {
        add("UndefinedVar", fmt::format("Usage of undefined variable '${}'", use.name), ins.start);
      }
    }
  }

  const Dockerfile& file_;
  const BuildGraph& graph_;
  std::vector<CheckWarning> warnings_;
};

}  // namespace

CheckResult run_checks(const Dockerfile& file, const BuildGraph& graph) {
  CheckDirective directive = read_check_directive(file);
  CheckResult result;
  result.error = directive.error;
  if (directive.skip_all) return result;
  for (CheckWarning& warning : Checker(file, graph).run()) {
    if (directive.skip.count(warning.rule) == 0) result.warnings.push_back(std::move(warning));
  }
  return result;
}

}  // namespace kiln::parser
