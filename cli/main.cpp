// kiln: the command line. Parses arguments, calls the libraries, prints, and maps errors to exit
// codes. The only place that catches kiln::Error.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cli/context.h"
#include "cli/huge_page_heap.h"
#include "layerstore/errors.h"

namespace kiln::cli {

std::string Context::root() const {
  if (!root_flag.empty()) return root_flag;
  if (const char* env = std::getenv("KILN_ROOT"); env && *env) return env;
  return Store::default_root();
}

std::optional<int64_t> source_date_epoch() {
  const char* v = std::getenv("SOURCE_DATE_EPOCH");
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || errno != 0 || n < 0) {
    throw UsageError(fmt::format("SOURCE_DATE_EPOCH=`{}`: not a non-negative integer number of seconds", v));
  }
  return static_cast<int64_t>(n);
}

namespace {

int run(int argc, char** argv) {
  Context ctx;
  CLI::App app{"kiln: build, move and run container images, without a daemon"};
  app.name("kiln");
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("kiln version {}", KILN_VERSION));
  app.add_option(
         "--root", ctx.root_flag,
         "Store directory (default: $KILN_ROOT, /var/lib/kiln for root, ~/.local/share/kiln otherwise)")
      ->type_name("DIR");
  app.footer("Run 'kiln COMMAND --help' for more information on a command.");
  add_archive_commands(app, ctx);
  add_image_commands(app, ctx);
  add_parse_command(app, ctx);
  add_container_commands(app, ctx);
  add_build_command(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return app.exit(CLI::CallForHelp());
  } catch (const CLI::CallForAllHelp&) {
    return app.exit(CLI::CallForAllHelp());
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return 0;
  } catch (const CLI::ExtrasError& e) {
    std::string what = e.what();
    auto colon = what.rfind(": ");
    fmt::print(stderr, "kiln: error: unknown flag or argument: {}\nRun 'kiln --help' for usage.\n",
               colon == std::string::npos ? what : what.substr(colon + 2));
    return 125;
  } catch (const CLI::ParseError& e) {
    // CLI11's help for a subcommand comes through here as CallForHelp too; real errors get our voice.
    if (e.get_exit_code() == 0) return app.exit(e);
    fmt::print(stderr, "kiln: error: {}\nRun 'kiln --help' for usage.\n", e.what());
    return 125;
  }
  return ctx.exit_code;
}

}  // namespace
}  // namespace kiln::cli

int main(int argc, char** argv) {
  kiln::cli::back_heap_with_huge_pages();
  try {
    return kiln::cli::run(argc, argv);
  } catch (const kiln::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "kiln: error: {}\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "kiln: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kiln: error: {}\n", e.what());
    return 1;
  }
}
