// Inputs built to make a naive parser crash or go quadratic. Each is a few megabytes; a linear
// parser reads it in well under a second (a quadratic one would take minutes). The bound is loose
// so that sanitizer builds and busy machines pass.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "parser/build_graph.h"
#include "parser/checks.h"
#include "parser/dockerfile.h"

using namespace kiln::parser;

namespace {

// Parses, builds the graph and runs the checks; a ParseError is an acceptable answer.
double seconds_to_read(std::string text) {
  auto start = std::chrono::steady_clock::now();
  try {
    Dockerfile file = parse_dockerfile(std::move(text));
    BuildGraph graph = build_graph(file, {});
    (void)run_checks(file, graph);
  } catch (const ParseError&) {
    // Refusing the input is fine; crashing or hanging is not.
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string repeat(std::string_view piece, std::size_t times) {
  std::string out;
  out.reserve(piece.size() * times);
  for (std::size_t i = 0; i < times; ++i) out += piece;
  return out;
}

}  // namespace

TEST_CASE("hostile Dockerfiles are read in linear time", "[parser][hostile]") {
  constexpr double kBound = 10.0;
  const std::size_t n = 1 << 20;
  SECTION("a long run of carriage returns inside a comment and an instruction") {
    CHECK(seconds_to_read("FROM scratch\n# " + std::string(n, '\r') + "x\nRUN a" + std::string(n, '\r') +
                          "b\n") < kBound);
  }
  SECTION("escape characters, escaped and not, and blanks before a line end") {
    CHECK(seconds_to_read("FROM scratch\nRUN " + repeat("\\ ", n) + "x\n") < kBound);
    CHECK(seconds_to_read("FROM scratch\nRUN " + std::string(n, '\\') + "\n") < kBound);
    CHECK(seconds_to_read("FROM scratch\nRUN x\\" + std::string(n, ' ') + "y\n") < kBound);
  }
  SECTION("a continuation on every line") {
    CHECK(seconds_to_read("FROM scratch\nRUN " + repeat("a \\\n", n)) < kBound);
  }
  SECTION("ONBUILD chained without end, and a megabyte keyword") {
    CHECK(seconds_to_read("FROM scratch\n" + repeat("ONBUILD ", n / 8) + "RUN x\n") < kBound);
    CHECK(seconds_to_read("FROM scratch\n" + std::string(n, 'X') + " y\n") < kBound);
  }
  SECTION("many heredocs on one line, none terminated") {
    CHECK(seconds_to_read("FROM scratch\nRUN " + repeat("<<A ", n / 4) + "\n") < kBound);
  }
  SECTION("deeply nested and very many variable references") {
    CHECK(seconds_to_read("FROM scratch\nENV A=" + repeat("${A:-", n / 8) + "\n") < kBound);
    CHECK(seconds_to_read("FROM scratch\nENV B=x\nENV A=" + repeat("$B", n / 2) + "\n") < kBound);
  }
  SECTION("many flags, stages and dependencies") {
    CHECK(seconds_to_read("FROM scratch\nCOPY " + repeat("--exclude=x ", n / 12) + "a b\n") < kBound);
    CHECK(seconds_to_read("FROM scratch AS s0\n" + repeat("FROM s0 AS s0\nCOPY --from=s0 / /\n", n / 40)) <
          kBound);
  }
}
