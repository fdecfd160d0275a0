#include "parser/report.h"

#include <optional>

namespace kiln::parser {

using nlohmann::ordered_json;

namespace {

std::string_view form_name(ArgumentForm form) {
  switch (form) {
    case ArgumentForm::kNone:
      return "none";
    case ArgumentForm::kWords:
      return "words";
    case ArgumentForm::kString:
      return "string";
    case ArgumentForm::kShell:
      return "shell";
    case ArgumentForm::kExec:
      return "exec";
    case ArgumentForm::kKeyValues:
      return "pairs";
  }
  return "none";
}

ordered_json pairs_json(const std::vector<KeyValue>& pairs) {
  ordered_json out = ordered_json::array();
  for (const KeyValue& pair : pairs) {
    out.push_back(
        {{"key", pair.key}, {"value", pair.value ? ordered_json(*pair.value) : ordered_json(nullptr)}});
  }
  return out;
}

ordered_json instruction_json(const Instruction& ins, const Expanded* expanded,
                              std::optional<std::size_t> stage) {
  ordered_json out;
  out["name"] = std::string(keyword_name(ins.keyword));
  out["keyword"] = ins.keyword_as_written;
  out["line"] = ins.start.line;
  out["column"] = ins.start.column;
  out["end_line"] = ins.end_line;
  out["stage"] = stage ? ordered_json(*stage) : ordered_json(nullptr);
  ordered_json flags = ordered_json::array();
  for (const Flag& flag : ins.flags) flags.push_back(flag.text);
  out["flags"] = flags;
  out["form"] = std::string(form_name(ins.form));
  out["json"] = ins.form == ArgumentForm::kExec;
  if (ins.keyword == Keyword::kHealthcheck) out["healthcheck"] = ins.healthcheck_kind;
  out["args"] = ins.form == ArgumentForm::kKeyValues ? pairs_json(ins.pairs) : ordered_json(ins.arguments);
  ordered_json heredocs = ordered_json::array();
  for (const Heredoc& heredoc : ins.heredocs) {
    heredocs.push_back({{"name", heredoc.name},
                        {"body", heredoc.body},
                        {"expand", heredoc.expand},
                        {"chomp", heredoc.chomp}});
  }
  out["heredocs"] = heredocs;
  if (expanded) {
    ordered_json e;
    e["flags"] = expanded->flags;
    e["args"] = ins.form == ArgumentForm::kKeyValues ? pairs_json(expanded->pairs)
                                                     : ordered_json(expanded->arguments);
    out["expanded"] = e;
  }
  if (ins.trigger) out["trigger"] = instruction_json(*ins.trigger, nullptr, std::nullopt);
  return out;
}

std::string_view dependency_kind(Dependency::Kind kind) {
  switch (kind) {
    case Dependency::Kind::kBase:
      return "from";
    case Dependency::Kind::kCopyFrom:
      return "copy";
    case Dependency::Kind::kMountFrom:
      return "mount";
  }
  return "";
}

}  // namespace

std::vector<std::optional<std::size_t>> stage_of_instructions(const Dockerfile& file,
                                                              const BuildGraph& graph) {
  std::vector<std::optional<std::size_t>> owner(file.instructions.size());
  for (const Stage& stage : graph.stages) {
    owner[stage.from] = stage.index;
    for (std::size_t index : stage.instructions) owner[index] = stage.index;
  }
  return owner;
}

namespace {

ordered_json warnings_json(const CheckResult& checks) {
  ordered_json out = ordered_json::array();
  for (const CheckWarning& warning : checks.warnings) {
    out.push_back({{"rule", warning.rule},
                   {"message", warning.message},
                   {"line", warning.position.line},
                   {"column", warning.position.column}});
  }
  return out;
}

}  // namespace

ordered_json report_json(const std::string& name, const Dockerfile& file, const BuildGraph& graph,
                         const CheckResult* checks) {
  ordered_json out;
  out["file"] = name;
  out["escape"] = std::string(1, file.escape);
  ordered_json directives = ordered_json::array();
  for (const Directive& directive : file.directives) {
    directives.push_back({{"name", directive.name}, {"value", directive.value}, {"line", directive.line}});
  }
  out["directives"] = directives;
  std::vector<std::optional<std::size_t>> owner = stage_of_instructions(file, graph);
  ordered_json instructions = ordered_json::array();
  for (std::size_t i = 0; i < file.instructions.size(); ++i) {
    const Expanded* expanded = graph.expanded[i] ? &*graph.expanded[i] : nullptr;
    instructions.push_back(instruction_json(file.instructions[i], expanded, owner[i]));
  }
  out["instructions"] = instructions;
  ordered_json stages = ordered_json::array();
  for (const Stage& stage : graph.stages) {
    ordered_json s;
    s["index"] = stage.index;
    s["name"] = stage.name.empty() ? ordered_json(nullptr) : ordered_json(stage.name);
    s["base"] = stage.base;
    s["base_stage"] = stage.base_stage ? ordered_json(*stage.base_stage) : ordered_json(nullptr);
    s["platform"] = stage.platform.empty() ? ordered_json(nullptr) : ordered_json(stage.platform);
    s["line"] = file.instructions[stage.from].start.line;
    s["instructions"] = stage.instructions;
    ordered_json dependencies = ordered_json::array();
    for (const Dependency& dependency : stage.dependencies) {
      dependencies.push_back(
          {{"kind", std::string(dependency_kind(dependency.kind))},
           {"stage", dependency.stage ? ordered_json(*dependency.stage) : ordered_json(nullptr)},
           {"image", dependency.stage ? ordered_json(nullptr) : ordered_json(dependency.image)},
           {"line", file.instructions[dependency.instruction].start.line}});
    }
    s["dependencies"] = dependencies;
    stages.push_back(s);
  }
  out["stages"] = stages;
  out["target"] = graph.target;
  out["order"] = graph.order;
  if (checks) out["warnings"] = warnings_json(*checks);
  return out;
}

}  // namespace kiln::parser
