// copy: an image from one place to another, as `skopeo copy` moves it.
#include <optional>

#include "cli/context.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "registry/copy.h"

namespace kiln::cli {

void add_copy_command(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("copy", "Copy an image between registries, OCI layouts and archives");
  cmd->footer(
      "Locations, as skopeo writes them:\n"
      "  docker://NAME[:TAG|@DIGEST], or NAME[:TAG|@DIGEST]   an image in a registry\n"
      "  oci:DIR[:TAG]                     an OCI image layout (created when missing)\n"
      "  oci-archive:FILE[:TAG]            a tar of an OCI image layout\n"
      "  docker-archive:FILE[:NAME:TAG]    Docker's save format");
  auto source = std::make_shared<std::string>();
  auto destination = std::make_shared<std::string>();
  auto all_platforms = std::make_shared<bool>(false);
  auto quiet = std::make_shared<bool>(false);
  auto digestfile = std::make_shared<std::string>();
  cmd->add_flag("-a,--all-platforms", *all_platforms,
                "Copy every image of a multi-platform index and the index itself (default: this machine's "
                "platform only)");
  cmd->add_flag("-q,--quiet", *quiet, "Print nothing but errors");
  cmd->add_option("--digestfile", *digestfile, "Write the digest of what was copied to this file")
      ->type_name("FILE");
  cmd->add_option("source", *source, "Image to copy")->required()->type_name("SOURCE");
  cmd->add_option("destination", *destination, "Where to copy it")->required()->type_name("DESTINATION");
  add_registry_flags(*cmd, ctx);
  cmd->callback([&ctx, source, destination, all_platforms, quiet, digestfile] {
    std::string context = fmt::format("copy `{}` to `{}`", *source, *destination);
    auto location = [&](const std::string& text) {
      try {
        return registry::ImageLocation::parse(text);
      } catch (...) {
        rethrow_with_context(context);
      }
    };
    registry::ImageLocation from = location(*source);
    registry::ImageLocation to = location(*destination);
    registry::CopyOptions options;
    options.all_platforms = *all_platforms;
    if (!*quiet) options.progress = [](const std::string& line) { fmt::print("{}\n", line); };
    // Archives are unpacked and put together in the store's tmp/; a copy between registries and
    // layouts needs no store at all.
    std::optional<Store> store;
    if (from.is_archive() || to.is_archive()) {
      store.emplace(ctx.open_store());
      options.staging_dir = store->tmp_dir();
    }
    registry::CopyResult result = registry::copy_image(from, to, options, ctx.registry_options());
    if (!digestfile->empty()) write_file_atomic(*digestfile, result.digest.str());
    if (!*quiet) fmt::print("Copied {}\n", result.digest);
  });
}

}  // namespace kiln::cli
