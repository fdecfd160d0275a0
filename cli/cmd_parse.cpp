// kiln parse: shows how kiln reads a Dockerfile — every instruction split as Docker splits it, its
// arguments as written and as the builder will use them, the stages and the order they build in —
// and, with --check, Docker's build-check warnings.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/context.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "parser/build_graph.h"
#include "parser/checks.h"
#include "parser/dockerfile.h"
#include "parser/report.h"
#include "parser/text.h"

namespace kiln::cli {

namespace {

using namespace kiln::parser;

// Docker reads the whole Dockerfile too. The cap stops `-f /dev/zero` from eating memory, and bounds
// the syntax tree of a hostile file (about 13 times its size for a file of blank lines); real
// Dockerfiles are kilobytes, and a 200,000-line one is under 6 MiB.
constexpr uint64_t kMaxDockerfileBytes = 32ULL << 20;

std::string read_dockerfile(const std::string& path) {
  if (path == "-") return read_fd_capped(STDIN_FILENO, kMaxDockerfileBytes, "Dockerfile on standard input");
  return read_file_capped(path, kMaxDockerfileBytes, path);
}

std::string flags_text(const std::vector<std::string>& flags) {
  std::string out;
  for (const std::string& flag : flags) out += flag + " ";
  return out;
}

std::string expanded_text(const Instruction& ins, const Expanded& expanded) {
  std::string out = flags_text(expanded.flags);
  if (ins.form == ArgumentForm::kKeyValues) {
    for (const KeyValue& pair : expanded.pairs) {
      out += pair.value ? fmt::format("{}={} ", pair.key, text::quote(*pair.value))
                        : fmt::format("{} (unset) ", pair.key);
    }
  } else {
    for (const std::string& argument : expanded.arguments) out += text::quote(argument) + " ";
  }
  if (!out.empty()) out.pop_back();
  return out;
}

void print_text(const Dockerfile& file, const BuildGraph& graph) {
  for (const Directive& directive : file.directives) {
    fmt::print("# {}={}\n", directive.name, directive.value);
  }
  std::vector<std::optional<std::size_t>> owner = stage_of_instructions(file, graph);
  for (std::size_t i = 0; i < file.instructions.size(); ++i) {
    const Instruction& ins = file.instructions[i];
    if (ins.keyword == Keyword::kFrom) {
      const Stage& stage = graph.stages[*owner[i]];
      fmt::print("\nstage {} ({}): from {}{}\n", stage.index, stage.display_name(),
                 stage.base_stage ? "stage " : "", stage.base);
    }
    fmt::print("{:5}  {}\n", ins.start.line, ins.original);
    for (const Heredoc& heredoc : ins.heredocs) {
      std::size_t lines =
          static_cast<std::size_t>(std::count(heredoc.body.begin(), heredoc.body.end(), '\n'));
      fmt::print("       heredoc {}: {} line{}{}\n", heredoc.name, lines, lines == 1 ? "" : "s",
                 heredoc.expand ? "" : ", not expanded");
    }
    if (ins.trigger) {
      for (const Heredoc& heredoc : ins.trigger->heredocs) {
        fmt::print("       heredoc {}: kept for the trigger\n", heredoc.name);
      }
    }
    if (graph.expanded[i]) {
      std::string expanded = expanded_text(ins, *graph.expanded[i]);
      if (!expanded.empty()) fmt::print("       = {}\n", expanded);
    }
  }
  std::string order;
  for (std::size_t s : graph.order) order += (order.empty() ? "" : ", ") + graph.stages[s].display_name();
  fmt::print("\ntarget {}; build order: {}\n", graph.stages[graph.target].display_name(), order);
}

void print_checks(const std::string& name, const Dockerfile& file, const CheckResult& checks) {
  for (const CheckWarning& warning : checks.warnings) {
    fmt::print(stderr, "{}:{}:{}: warning: {}: {}\n    {}\n", name, warning.position.line,
               warning.position.column, warning.rule, warning.message, file.line_text(warning.position.line));
  }
}

// --build-arg NAME=VALUE; a bare NAME takes its value from kiln's environment and is skipped when
// that is unset, as docker build does.
std::vector<std::pair<std::string, std::string>> build_args(const std::vector<std::string>& values) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& value : values) {
    std::size_t equals = value.find('=');
    if (equals == 0) throw UsageError(fmt::format("--build-arg `{}`: the name is empty", value));
    if (equals == std::string::npos) {
      if (const char* env = std::getenv(value.c_str())) out.emplace_back(value, env);
      continue;
    }
    out.emplace_back(value.substr(0, equals), value.substr(equals + 1));
  }
  return out;
}

}  // namespace

void add_parse_command(CLI::App& app, Context& /*ctx*/) {
  auto* cmd =
      app.add_subcommand("parse", "Show how kiln reads a Dockerfile: instructions, stages, build order");
  auto file_option = std::make_shared<std::string>("Dockerfile");
  auto format = std::make_shared<std::string>("text");
  auto args = std::make_shared<std::vector<std::string>>();
  auto target = std::make_shared<std::string>();
  auto platform = std::make_shared<std::string>();
  auto check = std::make_shared<bool>(false);
  auto quiet = std::make_shared<bool>(false);
  cmd->add_option("-f,--file", *file_option,
                  "The Dockerfile to read; - reads standard input (default: Dockerfile)")
      ->type_name("FILE");
  cmd->add_option("--format", *format, "Output: text (default) or json")
      ->check(CLI::IsMember({"text", "json"}));
  cmd->add_option("--build-arg", *args, "Set a build-time variable")->type_name("NAME=VALUE");
  cmd->add_option("--target", *target, "The stage to build (default: the last)")->type_name("STAGE");
  cmd->add_option("--platform", *platform,
                  "Target platform, for TARGETPLATFORM and friends (default: this host's)")
      ->type_name("OS/ARCH[/VARIANT]");
  cmd->add_flag("-q,--quiet", *quiet, "Print nothing; the exit status says whether the Dockerfile is valid");
  cmd->add_flag("--check", *check, "Report Docker's build-check warnings (exit 1 if `# check=error=true`)");
  cmd->footer("Example: kiln parse -f Dockerfile --format json --build-arg VERSION=1.2 --target app");
  cmd->callback([file_option, format, args, target, platform, check, quiet] {
    std::string name = *file_option == "-" ? "Dockerfile" : *file_option;
    std::string text = read_dockerfile(*file_option);
    BuildOptions options;
    options.build_args = build_args(*args);
    options.target = *target;
    if (!platform->empty()) {
      try {
        options.target_platform = parse_platform(*platform);
      } catch (const std::invalid_argument& error) {
        throw UsageError(fmt::format("--platform: {}", error.what()));
      }
    }
    try {
      Dockerfile file = parse_dockerfile(text);
      BuildGraph graph = build_graph(file, options);
      std::optional<CheckResult> checks;
      if (*check) checks = run_checks(file, graph);
      if (*quiet) {
        // Nothing to print: parsing and building the graph were the check.
      } else if (*format == "json") {
        std::cout << report_json(name, file, graph, checks ? &*checks : nullptr)
                         .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                  << "\n";
      } else {
        print_text(file, graph);
      }
      if (checks) {
        std::fflush(stdout);
        print_checks(name, file, *checks);
        if (checks->error && !checks->warnings.empty()) {
          throw InvalidInputError(fmt::format("{}: {} build check warning{} and `# check=error=true`", name,
                                              checks->warnings.size(),
                                              checks->warnings.size() == 1 ? "" : "s"));
        }
      }
    } catch (const ParseError& error) {
      std::string diagnostic = format_diagnostic(name, error);
      while (!diagnostic.empty() && diagnostic.back() == '\n') diagnostic.pop_back();
      throw InvalidInputError(diagnostic);
    }
  });
}

}  // namespace kiln::cli
