// kiln: the command line. Parses arguments, calls the libraries, prints, and maps errors to exit
// codes. The only place that catches kiln::Error.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cli/context.h"
#include "cli/huge_page_heap.h"
#include "layerstore/errors.h"
#include "parser/text.h"
#include "parser/word_expansion.h"
#include "runtime/step.h"

namespace kiln::cli {

std::string Context::root() const {
  std::string root;
  if (!root_flag.empty()) {
    root = root_flag;
  } else if (const char* env = std::getenv("KILN_ROOT"); env && *env) {
    root = env;
  } else {
    return Store::default_root();
  }
  // Absolute: paths under the store are handed to processes that run elsewhere (a step's bind
  // mounts are resolved in its own directory).
  if (!root.starts_with("/")) {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) throw_errno("read the working directory");
    root = std::string(cwd) + "/" + root;
  }
  return root;
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

WordSplitter change_word_splitter() {
  return [](std::string_view text, const std::vector<std::string>& env) {
    auto lookup = [&env](std::string_view name) -> std::optional<std::string> {
      // The last entry for a name wins, as in an environment built by appending.
      for (auto it = env.rbegin(); it != env.rend(); ++it) {
        if (it->size() > name.size() && it->compare(0, name.size(), name) == 0 && (*it)[name.size()] == '=') {
          return it->substr(name.size() + 1);
        }
      }
      return std::nullopt;
    };
    try {
      return parser::expand_words(text, lookup);
    } catch (const parser::WordError& error) {
      throw UsageError(fmt::format("--change `{}`: {}", text, error.what()));
    }
  };
}

namespace {

// "kiln", or "kiln group" for a command of a group, as usage lines name a command.
std::string command_path(const CLI::App& command) {
  std::string path = command.get_name();
  for (const CLI::App* parent = command.get_parent(); parent != nullptr; parent = parent->get_parent())
    path = parent->get_name() + " " + path;
  return path;
}

// When the arguments name no command where one is needed (after `kiln`, or after a group of
// commands): with no word at all, the help, as `docker` gives it; with a word that is no command,
// says so and suggests the nearest name, as `docker` and `git` do. The exit code, or nullopt when
// `error` is about something else.
std::optional<int> report_missing_command(CLI::App& app, const CLI::ParseError& error) {
  if (dynamic_cast<const CLI::RequiredError*>(&error) == nullptr) return std::nullopt;
  CLI::App* innermost = &app;
  while (!innermost->get_subcommands().empty()) innermost = innermost->get_subcommands().front();
  std::vector<CLI::App*> commands = innermost->get_subcommands([](const CLI::App*) { return true; });
  if (commands.empty()) return std::nullopt;
  std::string path = command_path(*innermost);
  std::vector<std::string> words = innermost->remaining();
  if (words.empty()) {
    std::cout << innermost->help();
    return 0;
  }
  const std::string& word = words.front();
  if (word.starts_with("-")) {
    fmt::print(stderr, "kiln: error: unknown flag or argument: {}\nRun '{} --help' for usage.\n", word, path);
    return 125;
  }
  std::vector<std::string_view> names;
  for (const CLI::App* command : commands) names.push_back(command->get_name());
  fmt::print(stderr, "kiln: error: unknown command {} for \"{}\"\n", parser::text::quote(word), path);
  if (std::string nearest = parser::text::closest_match(word, names); !nearest.empty())
    fmt::print(stderr, "Did you mean \"{}\"?\n", nearest);
  fmt::print(stderr, "Run '{} --help' for usage.\n", path);
  return 125;
}

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
  add_registry_flags(app, ctx);
  app.footer("Run 'kiln COMMAND --help' for more information on a command.");
  add_archive_commands(app, ctx);
  add_image_commands(app, ctx);
  add_parse_command(app, ctx);
  add_container_commands(app, ctx);
  add_build_command(app, ctx);
  add_registry_commands(app, ctx);
  add_copy_command(app, ctx);
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
    if (std::optional<int> code = report_missing_command(app, e)) return *code;
    fmt::print(stderr, "kiln: error: {}\nRun 'kiln --help' for usage.\n", e.what());
    return 125;
  }
  return ctx.exit_code;
}

}  // namespace
}  // namespace kiln::cli

int main(int argc, char** argv) {
  // A build step's supervisor is kiln started again (runtime/step.h): it never returns from here.
  kiln::runtime::run_step_supervisor_if_asked(argc, argv);
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
