// Build checks: Docker's `docker build --check` rules that kiln can judge from the Dockerfile alone.
// They warn; they never stop a build unless the `# check=error=true` directive asks for that.
#pragma once

#include <string>
#include <vector>

#include "parser/build_graph.h"
#include "parser/dockerfile.h"

namespace kiln::parser {

struct CheckWarning {
  std::string rule;     // BuildKit's rule name, e.g. "JSONArgsRecommended"
  std::string message;  // "JSON arguments recommended for CMD to prevent unintended behavior …"
  Position position;
};

struct CheckResult {
  std::vector<CheckWarning> warnings;  // in source order
  bool error = false;                  // `# check=error=true`: warnings fail the build
};

// Runs every rule not skipped by the `# check=skip=…` directive.
CheckResult run_checks(const Dockerfile& file, const BuildGraph& graph);

}  // namespace kiln::parser
