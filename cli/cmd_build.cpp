// kiln build: the command line of the builder (builder/build.h).
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include "builder/build.h"
#include "builder/progress.h"
#include "cli/context.h"
#include "cli/signals.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "registry/pull.h"

namespace kiln::cli {
namespace {

struct BuildFlags {
  std::vector<std::string> tags;
  std::string file;
  std::vector<std::string> build_args;
  std::string target;
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;
  bool pull = false;
  bool push = false;
  std::vector<std::string> cache_to;
  std::vector<std::string> cache_from;
  std::vector<std::string> labels;
  std::string network = "default";
  std::vector<std::string> secrets;
  std::vector<std::string> ssh;
  std::vector<std::string> build_contexts;
  int jobs = 0;
  std::string iidfile;
  std::string progress = "auto";
  bool quiet = false;
  std::vector<std::string> outputs;
  std::string compression = "gzip";
  std::string isolation = "auto";
  std::string platform;
  std::optional<int64_t> source_date_epoch;
  std::string context;
};

builder::BuildRequest make_request(const BuildFlags& flags) {
  builder::BuildRequest request;
  request.context = flags.context;
  request.dockerfile = flags.file;
  for (const std::string& tag : flags.tags) {
    try {
      request.tags.push_back(Reference::parse_tagged(tag));
    } catch (const Error& error) {
      throw UsageError(fmt::format("invalid tag \"{}\": {}", tag, error.what()));
    }
  }
  for (const std::string& arg : flags.build_args) {
    size_t eq = arg.find('=');
    if (eq == 0) throw UsageError(fmt::format("--build-arg `{}`: no name", arg));
    if (eq == std::string::npos) {
      // `--build-arg NAME` takes the value from kiln's environment, and is left out without one.
      if (const char* value = std::getenv(arg.c_str())) request.build_args.emplace_back(arg, value);
      continue;
    }
    request.build_args.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
  }
  request.target = flags.target;
  request.no_cache = flags.no_cache;
  request.no_cache_filter = flags.no_cache_filter;
  request.pull = flags.pull;
  for (const std::string& label : flags.labels) {
    size_t eq = label.find('=');
    request.labels.emplace_back(label.substr(0, eq), eq == std::string::npos ? "" : label.substr(eq + 1));
  }
  if (flags.network != "default" && flags.network != "none" && flags.network != "host") {
    throw UsageError(fmt::format("--network `{}`: use default, none or host", flags.network));
  }
  request.network = flags.network;
  for (const std::string& secret : flags.secrets) request.secrets.push_back(builder::parse_secret(secret));
  for (const std::string& ssh : flags.ssh) request.ssh.push_back(builder::parse_ssh(ssh));
  for (const std::string& context : flags.build_contexts) {
    size_t eq = context.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError(fmt::format("--build-context `{}`: want NAME=DIR", context));
    request.build_contexts[context.substr(0, eq)] = context.substr(eq + 1);
  }
  if (flags.jobs < 0) throw UsageError("--jobs must be at least 1");
  request.jobs = flags.jobs;
  for (const std::string& output : flags.outputs) request.outputs.push_back(builder::parse_output(output));
  auto compression = parse_compression(flags.compression);
  if (!compression || *compression == Compression::None) {
    throw UsageError(fmt::format("--compression `{}`: use gzip or zstd", flags.compression));
  }
  request.compression = *compression;
  request.isolation = builder::parse_isolation(flags.isolation);
  request.platform = flags.platform;
  request.source_date_epoch = flags.source_date_epoch ? flags.source_date_epoch : source_date_epoch();
  return request;
}

}  // namespace

void add_build_command(CLI::App& app, Context& ctx) {
  auto flags = std::make_shared<BuildFlags>();
  auto* cmd = app.add_subcommand("build", "Build an image from a Dockerfile");
  cmd->set_help_flag("--help", "Print this help message and exit");
  cmd->add_option("-t,--tag", flags->tags, "Name and optionally a tag (name:tag)")->allow_extra_args(false);
  cmd->add_option("-f,--file", flags->file,
                  "Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)");
  cmd->add_option("--build-arg", flags->build_args, "Set build-time variables")
      ->type_name("NAME[=VALUE]")
      ->allow_extra_args(false);
  cmd->add_option("--target", flags->target, "Set the target build stage to build");
  cmd->add_flag("--no-cache", flags->no_cache, "Do not use cache when building the image");
  cmd->add_option("--no-cache-filter", flags->no_cache_filter, "Do not cache specified stages")
      ->type_name("STAGE")
      ->allow_extra_args(false);
  cmd->add_flag("--pull", flags->pull, "Always attempt to pull the base images");
  cmd->add_flag("--push", flags->push, "Push the tags built to their registries");
  cmd->add_option("--cache-to", flags->cache_to,
                  "Export the build cache (type=registry,ref=NAME[:TAG][,mode=min|max])")
      ->allow_extra_args(false);
  cmd->add_option("--cache-from", flags->cache_from, "Use a build cache (type=registry,ref=NAME[:TAG])")
      ->allow_extra_args(false);
  add_registry_flags(*cmd, ctx);
  cmd->add_option("--label", flags->labels, "Set metadata for an image")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  cmd->add_option("--network", flags->network,
                  "Networking mode for the RUN instructions (default, none, host)");
  cmd->add_option("--secret", flags->secrets, "Secret to expose to the build")
      ->type_name("id=ID[,src=PATH|,env=VAR]")
      ->allow_extra_args(false);
  cmd->add_option("--ssh", flags->ssh, "SSH agent socket to expose to the build")
      ->type_name("default|ID=SOCKET")
      ->allow_extra_args(false);
  cmd->add_option("--build-context", flags->build_contexts, "Additional build contexts")
      ->type_name("NAME=DIR")
      ->allow_extra_args(false);
  cmd->add_option("--jobs", flags->jobs, "Stages built at the same time (default: the number of cores)");
  cmd->add_option("--iidfile", flags->iidfile, "Write the image ID to the file");
  cmd->add_option("--progress", flags->progress, "Set type of progress output (auto, plain, tty, quiet)");
  cmd->add_flag("-q,--quiet", flags->quiet, "Suppress the build output and print image ID on success");
  cmd->add_option("-o,--output", flags->outputs,
                  "Output destination (type=image|oci|docker|tar|local,dest=PATH)")
      ->allow_extra_args(false);
  cmd->add_option("--compression", flags->compression, "Compression of new layers (gzip, zstd)");
  cmd->add_option("--isolation", flags->isolation,
                  "Isolation of RUN steps (auto, namespace, rootless, chroot)");
  cmd->add_option("--platform", flags->platform, "Set the target platform (OS/ARCH[/VARIANT])");
  cmd->add_option("--source-date-epoch", flags->source_date_epoch,
                  "Timestamp for reproducible images (default: $SOURCE_DATE_EPOCH)");
  cmd->add_option("context", flags->context, "The build context: a directory, - (stdin) or a git URL")
      ->required();
  cmd->footer("Usage: kiln build [OPTIONS] PATH | URL | -");
  cmd->callback([&ctx, flags] {
    builder::BuildRequest request = make_request(*flags);
    request.registry = ctx.registry_options();
    for (const std::string& spec : flags->cache_to)
      request.cache_to.push_back(builder::parse_cache_spec(spec, "--cache-to"));
    for (const std::string& spec : flags->cache_from)
      request.cache_from.push_back(builder::parse_cache_spec(spec, "--cache-from"));
    if (flags->push && request.tags.empty()) throw UsageError("build --push: name the image with --tag");
    builder::ProgressMode mode =
        flags->quiet ? builder::ProgressMode::kQuiet : builder::parse_progress_mode(flags->progress);
    // Before the store is opened and any thread starts: rootless enters its user namespace here.
    builder::IsolationChoice isolation = builder::choose_isolation(request.isolation);
    request.isolation = isolation.isolation;
    request.isolation_note = isolation.why;
    std::optional<Store> stores(ctx.open_store());
    Store& store = *stores;
    // Ctrl-C and SIGTERM stop the build: steps are killed, nothing is published, exit 130.
    BlockedSignals signals;
    request.cancel_fd = signals.fd();
    builder::Progress progress(mode, STDERR_FILENO);
    builder::BuildResult result = [&] {
      try {
        return builder::build(store, request, progress);
      } catch (...) {
        progress.finish();
        throw;
      }
    }();
    progress.finish();
    if (!flags->iidfile.empty()) write_file_atomic(flags->iidfile, result.image_id.str());
    if (flags->push) {
      for (const Reference& tag : request.tags) {
        Image image = store.resolve(tag.str());
        registry::RegistryClient client(tag.domain(), request.registry);
        registry::PushOptions options;
        if (!flags->quiet)
          options.progress = [](const std::string& line) { fmt::print(stderr, "{}\n", line); };
        registry::push_image(store, client, image, tag, options);
      }
    }
    fmt::print("{}\n", result.image_id.str());
    std::fflush(stdout);
    if (result.cache_grew) {
      // The build cache's size limit, checked when a build added to it: the records used least
      // recently go, and their blobs with them when no other kiln has the store open.
      Store::CachePruneReport trimmed =
          store.prune_build_cache(std::nullopt, builder::default_build_cache_limit(store));
      if (trimmed.removed_records > 0) {
        std::string root = store.root();
        stores.reset();  // our shared lock goes, so that the exclusive one can be had
        if (auto exclusive = Store::try_open_exclusive(root)) exclusive->prune();
      }
    }
  });
}

}  // namespace kiln::cli
