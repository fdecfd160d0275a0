// Feeds arbitrary bytes to the whole Dockerfile front end: parse, build graph, checks, the JSON
// report. A ParseError is the expected answer to bad input; any other exception, a crash, a
// sanitizer report or a hang is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "parser/build_graph.h"
#include "parser/checks.h"
#include "parser/dockerfile.h"
#include "parser/report.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kiln::parser;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    Dockerfile file = parse_dockerfile(std::string(text));
    BuildOptions options;
    options.build_args = {{"VERSION", "1.0"}, {"HTTP_PROXY", "http://proxy"}};
    BuildGraph graph = build_graph(file, options);
    CheckResult checks = run_checks(file, graph);
    std::string json = report_json("Dockerfile", file, graph, &checks)
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    (void)format_diagnostic("Dockerfile", ParseError("probe", {1, 1}, std::string(file.line_text(1))));
    if (json.empty()) __builtin_trap();
  } catch (const ParseError& error) {
    (void)format_diagnostic("Dockerfile", error);
  }
  return 0;
}
