// In-process timing of the Dockerfile front end, for tests/bench/parse.sh: reading, parsing and
// building the graph of one file, measured once in a fresh process (cold, as a build parses a
// Dockerfile once), without the process start-up that `kiln parse` also pays. Set up as `kiln`
// sets itself up: the heap on huge pages, the file read by the same reader.
// Prints: read_ms parse_ms graph_ms total_ms instructions max_rss_kb
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "cli/huge_page_heap.h"
#include "layerstore/files.h"
#include "parser/build_graph.h"
#include "parser/dockerfile.h"

int main(int argc, char** argv) {
  kiln::cli::back_heap_with_huge_pages();
  if (argc != 2) {
    std::fprintf(stderr, "usage: kiln_parse_bench DOCKERFILE\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto t0 = Clock::now();
  std::string text = kiln::read_file_capped(argv[1], std::uint64_t{1} << 30, "Dockerfile");
  auto t1 = Clock::now();
  try {
    kiln::parser::Dockerfile file = kiln::parser::parse_dockerfile(std::move(text));
    auto t2 = Clock::now();
    kiln::parser::BuildGraph graph = kiln::parser::build_graph(file, {});
    auto t3 = Clock::now();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("%.2f %.2f %.2f %.2f %zu %ld\n", ms(t1 - t0), ms(t2 - t1), ms(t3 - t2), ms(t3 - t0),
                file.instructions.size(), usage.ru_maxrss);
  } catch (const kiln::parser::ParseError& error) {
    std::fprintf(stderr, "%s\n", kiln::parser::format_diagnostic(argv[1], error).c_str());
    return 1;
  }
  return 0;
}
