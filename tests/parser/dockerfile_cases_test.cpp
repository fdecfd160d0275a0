// Table tests: every testdata/parser/cases/NAME.dockerfile is parsed and built into a graph the way
// `kiln parse --format json` does it, and compared with NAME.json or NAME.error next to it.
//
// - NAME.json holds the parts of the report the case is about. Objects match when every member
//   written in the expectation matches (members not written are not compared); arrays match when
//   they have the same length and match element by element; other values must be equal.
// - NAME.error holds the whole diagnostic users see (file:line:column: message, the source line,
//   the caret), compared exactly.
// - NAME.args, when present, gives options, one per line: `build-arg K=V`, `target STAGE`,
//   `platform OS/ARCH`, `check` (add the build-check warnings to the report).
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "parser/build_graph.h"
#include "parser/checks.h"
#include "parser/dockerfile.h"
#include "parser/report.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using namespace kiln::parser;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Empty when `actual` matches `expected`; else where and how it differs.
std::string json_difference(const ordered_json& expected, const ordered_json& actual,
                            const std::string& where) {
  if (expected.is_object()) {
    if (!actual.is_object()) return where + ": expected an object, got " + actual.dump();
    for (const auto& [key, value] : expected.items()) {
      if (!actual.contains(key)) return where + "." + key + ": missing";
      std::string inner = json_difference(value, actual[key], where + "." + key);
      if (!inner.empty()) return inner;
    }
    return "";
  }
  if (expected.is_array()) {
    if (!actual.is_array()) return where + ": expected an array, got " + actual.dump();
    if (expected.size() != actual.size()) {
      return where + ": expected " + std::to_string(expected.size()) + " elements, got " +
             std::to_string(actual.size()) + ": " + actual.dump();
    }
    for (std::size_t i = 0; i < expected.size(); ++i) {
      std::string inner = json_difference(expected[i], actual[i], where + "[" + std::to_string(i) + "]");
      if (!inner.empty()) return inner;
    }
    return "";
  }
  if (expected != actual) return where + ": expected " + expected.dump() + ", got " + actual.dump();
  return "";
}

struct CaseOutcome {
  std::optional<ordered_json> report;
  std::string diagnostic;
};

CaseOutcome run_case(const fs::path& dockerfile) {
  BuildOptions options;
  options.build_platform = parse_platform("linux/amd64");
  options.target_platform = parse_platform("linux/amd64");
  bool check = false;
  fs::path args_path = fs::path(dockerfile).replace_extension(".args");
  if (fs::exists(args_path)) {
    std::istringstream lines(read_file(args_path));
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("build-arg ", 0) == 0) {
        std::string value = line.substr(10);
        std::size_t equals = value.find('=');
        options.build_args.emplace_back(value.substr(0, equals), value.substr(equals + 1));
      } else if (line.rfind("target ", 0) == 0) {
        options.target = line.substr(7);
      } else if (line.rfind("platform ", 0) == 0) {
        options.target_platform = parse_platform(line.substr(9));
      } else if (line == "check") {
        check = true;
      }
    }
  }
  CaseOutcome outcome;
  try {
    Dockerfile file = parse_dockerfile(read_file(dockerfile));
    BuildGraph graph = build_graph(file, options);
    std::optional<CheckResult> checks;
    if (check) checks = run_checks(file, graph);
    outcome.report = report_json("Dockerfile", file, graph, checks ? &*checks : nullptr);
  } catch (const ParseError& error) {
    outcome.diagnostic = format_diagnostic("Dockerfile", error);
  }
  return outcome;
}

}  // namespace

TEST_CASE("Dockerfile table cases", "[parser][cases]") {
  fs::path directory = fs::path(KILN_TESTDATA) / "parser" / "cases";
  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (entry.path().extension() == ".dockerfile") cases.push_back(entry.path());
  }
  std::sort(cases.begin(), cases.end());
  REQUIRE(cases.size() > 20);
  for (const fs::path& dockerfile : cases) {
    DYNAMIC_SECTION(dockerfile.filename().string()) {
      fs::path json_path = fs::path(dockerfile).replace_extension(".json");
      fs::path error_path = fs::path(dockerfile).replace_extension(".error");
      REQUIRE((fs::exists(json_path) || fs::exists(error_path)));
      CaseOutcome outcome = run_case(dockerfile);
      if (fs::exists(error_path)) {
        INFO("expected an error, got " << (outcome.report ? outcome.report->dump() : outcome.diagnostic));
        CHECK(outcome.diagnostic == read_file(error_path));
      } else {
        INFO(outcome.diagnostic);
        REQUIRE(outcome.report);
        ordered_json expected = ordered_json::parse(read_file(json_path));
        std::string difference = json_difference(expected, *outcome.report, "report");
        INFO(difference);
        CHECK(difference.empty());
      }
    }
  }
}
