// What every command needs: where the store is, and how to open it. Passed explicitly; no globals.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "layerstore/config_change.h"
#include "layerstore/store.h"
#include "registry/client.h"

namespace kiln::cli {

struct Context {
  std::string root_flag;  // --root, empty when not given
  // What kiln exits with when the command succeeded: a container's exit code for `run`.
  int exit_code = 0;

  // The registry flags, global: --tls-verify[=false], --cert-dir, --retry.
  std::vector<const CLI::Option*> tls_verify_flags;  // kiln's and the command's: given or not
  bool tls_verify_value = true;
  std::string cert_dir;
  std::optional<int> retry;

  std::string root() const;
  // How to reach registries: those flags and kiln's config file (registry/config.h).
  registry::RegistryOptions registry_options() const;
  Store open_store(Store::Access access = Store::Access::Shared) const { return Store(root(), access); }
};

// SOURCE_DATE_EPOCH, when set and valid (a UsageError otherwise).
std::optional<int64_t> source_date_epoch();

// Docker's word processing for --change (the parser's expand_words): quotes removed, variables
// substituted from the config's Env.
WordSplitter change_word_splitter();

// Each command group adds its subcommands to the app.
void add_archive_commands(CLI::App& app, Context& ctx);
void add_image_commands(CLI::App& app, Context& ctx);
void add_parse_command(CLI::App& app, Context& ctx);
void add_container_commands(CLI::App& app, Context& ctx);
void add_build_command(CLI::App& app, Context& ctx);
void add_registry_commands(CLI::App& app, Context& ctx);
void add_copy_command(CLI::App& app, Context& ctx);
// --tls-verify, --cert-dir and --retry, on kiln itself and on each command that reaches a registry,
// so that they may come before the command or after it.
void add_registry_flags(CLI::App& app, Context& ctx);

}  // namespace kiln::cli
