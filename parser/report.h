// The stable JSON form of a parsed Dockerfile that `kiln parse --format json` prints (documented in
// the README): instructions as written and as expanded, stages, dependencies, build order and,
// when given, build-check warnings.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "parser/build_graph.h"
#include "parser/checks.h"
#include "parser/dockerfile.h"

namespace kiln::parser {

// `checks` may be null (no "warnings" member then).
nlohmann::ordered_json report_json(const std::string& file_name, const Dockerfile& file,
                                   const BuildGraph& graph, const CheckResult* checks);

// Which stage each instruction belongs to (nullopt: an ARG before the first FROM).
std::vector<std::optional<std::size_t>> stage_of_instructions(const Dockerfile& file,
                                                              const BuildGraph& graph);

}  // namespace kiln::parser
