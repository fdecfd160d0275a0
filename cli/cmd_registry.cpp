// pull, push, login, logout, tags, manifest inspect: the registry commands.
#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <memory>

#include "cli/context.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "parser/build_graph.h"
#include "registry/config.h"
#include "registry/credentials.h"
#include "registry/pull.h"

namespace kiln::cli {

using registry::RegistryClient;
using registry::RegistryOptions;

RegistryOptions Context::registry_options() const {
  RegistryOptions options;
  registry::RegistryConfig config = registry::read_registry_config(registry::config_file_path());
  options.insecure_registries = config.insecure_registries;
  options.mirrors = config.mirrors;
  for (const CLI::Option* flag : tls_verify_flags)
    if (flag->count() > 0) options.tls_verify = tls_verify_value;
  options.cert_dir = cert_dir;
  if (retry) {
    if (*retry < 0) throw UsageError(fmt::format("--retry {}: not a number of retries", *retry));
    options.retries = *retry;
  }
  options.notice = [](const std::string& line) { fmt::print(stderr, "kiln: {}\n", line); };
  return options;
}

void add_registry_flags(CLI::App& app, Context& ctx) {
  ctx.tls_verify_flags.push_back(
      app.add_flag("--tls-verify", ctx.tls_verify_value,
                   "Verify registries' TLS certificates and refuse plain HTTP (default: yes, except for "
                   "insecure-registries and 127.0.0.0/8); --tls-verify=false allows both"));
  app.add_option("--cert-dir", ctx.cert_dir,
                 "CA certificates (*.crt) and client certificate (*.cert, *.key) for registries "
                 "(default: /etc/containers/certs.d/HOST, /etc/docker/certs.d/HOST)")
      ->type_name("DIR");
  app.add_option("--retry", ctx.retry, "Times a failed registry request is tried again (default 3)")
      ->type_name("N");
}

namespace {

// Whether a reference as typed names a tag or a digest (a colon before the first slash is a port).
bool names_tag_or_digest(const std::string& text) {
  size_t last_component = text.rfind('/') == std::string::npos ? 0 : text.rfind('/');
  return text.find_first_of(":@", last_component) != std::string::npos;
}

Platform to_store_platform(const std::string& text) {
  parser::Platform p;
  try {
    p = parser::parse_platform(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--platform `{}`: {}", text, e.what()));
  }
  Platform out;
  out.os = p.os;
  out.architecture = p.architecture;
  out.variant = p.variant;
  return out;
}

// A line read from the terminal, echo off when `secret`.
std::string prompt(const std::string& question, bool secret) {
  fmt::print(stderr, "{}", question);
  std::fflush(stderr);
  termios saved{};
  bool restore = secret && ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (restore) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    fmt::print(stderr, "\n");
  }
  return line;
}

}  // namespace

void add_registry_commands(CLI::App& app, Context& ctx) {
  {
    auto* cmd = app.add_subcommand("pull", "Download an image from a registry");
    auto name = std::make_shared<std::string>();
    auto platform = std::make_shared<std::string>();
    auto quiet = std::make_shared<bool>(false);
    auto all_platforms = std::make_shared<bool>(false);
    cmd->add_option("--platform", *platform,
                    "Platform of a multi-platform image (default: this machine's); with --all-platforms, "
                    "the one the name points at")
        ->type_name("OS/ARCH[/VARIANT]");
    cmd->add_flag("--all-platforms", *all_platforms,
                  "Pull every platform of a multi-platform image: each is stored untagged, with the index, "
                  "and the name points at this machine's");
    cmd->add_flag("-q,--quiet", *quiet, "Print only the image's name");
    cmd->add_option("image", *name, "Image to pull")->required()->type_name("NAME[:TAG|@DIGEST]");
    add_registry_flags(*cmd, ctx);
    cmd->callback([&ctx, name, platform, quiet, all_platforms] {
      Reference ref = Reference::parse(*name);
      if (!ref.digest() && !ref.tag()) ref = Reference::parse(ref.str() + ":latest");
      if (!*quiet && !names_tag_or_digest(*name)) fmt::print("Using default tag: latest\n");
      registry::PullOptions options;
      if (!platform->empty()) options.platform = to_store_platform(*platform);
      options.all_platforms = *all_platforms;
      if (!*quiet) options.progress = [](const std::string& line) { fmt::print("{}\n", line); };
      Store store = ctx.open_store();
      bool had = false;
      try {
        store.resolve(ref.str());
        had = true;
      } catch (const NotFoundError&) {
      }
      registry::PullResult result = registry::pull_from_registry(store, ref, options, ctx.registry_options());
      if (!*quiet) {
        fmt::print("Status: {} for {}\n",
                   result.downloaded || !had ? "Downloaded newer image" : "Image is up to date",
                   ref.familiar());
      }
      fmt::print("{}\n", ref.str());
    });
  }
  {
    auto* cmd = app.add_subcommand("push", "Upload an image to a registry");
    auto image = std::make_shared<std::string>();
    auto dest = std::make_shared<std::string>();
    auto digestfile = std::make_shared<std::string>();
    auto quiet = std::make_shared<bool>(false);
    auto compression = std::make_shared<std::string>();
    cmd->add_option("--digestfile", *digestfile, "Write the pushed manifest's digest to this file")
        ->type_name("FILE");
    cmd->add_option("--compression", *compression,
                    "Push the layers compressed this way, recompressing those stored otherwise (the "
                    "manifest pushed is then a new OCI manifest; default: as stored)")
        ->type_name("gzip|zstd");
    auto all_tags = std::make_shared<bool>(false);
    cmd->add_flag("-q,--quiet", *quiet, "Print nothing but errors");
    cmd->add_flag("-a,--all-tags", *all_tags, "Push every tag the store has of the repository");
    cmd->add_option("image", *image, "Image to push")->required()->type_name("IMAGE");
    cmd->add_option("destination", *dest, "Where to push it (default: the image's name)")
        ->type_name("NAME[:TAG]");
    add_registry_flags(*cmd, ctx);
    cmd->callback([&ctx, image, dest, digestfile, quiet, compression, all_tags] {
      registry::PushOptions options;
      if (!compression->empty()) {
        options.compression = parse_compression(*compression);
        if (options.compression != Compression::Gzip && options.compression != Compression::Zstd)
          throw UsageError(fmt::format("--compression `{}`: use gzip or zstd", *compression));
      }
      if (!*quiet) options.progress = [](const std::string& line) { fmt::print("{}\n", line); };
      Store store = ctx.open_store();
      if (*all_tags) {
        // docker push --all-tags: the repository's tags, each to its own name, one after another
        // (their shared blobs go once: the later pushes find them there).
        if (!dest->empty() || !digestfile->empty())
          throw UsageError(
              "push --all-tags: each tag goes to its own name (no destination, no --digestfile)");
        if (names_tag_or_digest(*image))
          throw UsageError(
              fmt::format("push --all-tags `{}`: name a repository, without a tag or digest", *image));
        Reference repository = Reference::parse(*image);
        std::vector<std::pair<Reference, Image>> tagged;
        for (Image& img : store.images())
          for (const Reference& name : img.names)
            if (name.repository() == repository.repository()) tagged.emplace_back(name, img);
        if (tagged.empty())
          throw NotFoundError(fmt::format("push --all-tags: no tag of `{}` in the store", *image));
        std::sort(tagged.begin(), tagged.end(),
                  [](const auto& a, const auto& b) { return a.first.str() < b.first.str(); });
        RegistryClient client(repository.domain(), ctx.registry_options());
        for (const auto& [name, img] : tagged) registry::push_image(store, client, img, name, options);
        return;
      }
      Image img = store.resolve(*image);
      std::optional<Reference> target;
      if (!dest->empty()) {
        target = Reference::parse(*dest);
      } else if (auto named = Reference::try_parse(*image); named && !named->digest()) {
        target = *named;
      }
      if (!target) throw UsageError(fmt::format("push `{}`: name a destination (NAME[:TAG])", *image));
      if (!target->tag() && !target->digest()) target = Reference::parse(target->str() + ":latest");
      RegistryClient client(target->domain(), ctx.registry_options());
      registry::PushResult result = registry::push_image(store, client, img, *target, options);
      if (!digestfile->empty()) write_file_atomic(*digestfile, result.digest.str());
    });
  }
  {
    auto* cmd = app.add_subcommand("login", "Log in to a registry");
    auto server = std::make_shared<std::string>();
    auto user = std::make_shared<std::string>();
    auto password = std::make_shared<std::string>();
    auto password_stdin = std::make_shared<bool>(false);
    cmd->add_option("-u,--username", *user, "User name");
    cmd->add_option("-p,--password", *password, "Password (visible to other users: prefer --password-stdin)");
    cmd->add_flag("--password-stdin", *password_stdin, "Read the password from stdin");
    cmd->add_option("server", *server, "Registry (default: Docker Hub)")->type_name("REGISTRY");
    add_registry_flags(*cmd, ctx);
    cmd->callback([&ctx, server, user, password, password_stdin] {
      if (*password_stdin && !password->empty())
        throw UsageError("login: --password and --password-stdin are mutually exclusive");
      std::string registry_name = server->empty() ? "docker.io" : *server;
      if (*password_stdin) {
        if (user->empty()) throw UsageError("login: --password-stdin needs --username");
        std::string text = read_fd_capped(STDIN_FILENO, 1 << 20, "stdin");
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
        *password = text;
      }
      bool interactive = ::isatty(STDIN_FILENO) != 0;
      if (user->empty()) {
        if (!interactive) throw UsageError("login: no user name (give --username)");
        *user = prompt("Username: ", false);
      }
      if (password->empty()) {
        if (!interactive) throw UsageError("login: no password (give --password-stdin)");
        *password = prompt("Password: ", true);
      }
      registry::Credential credential{*user, *password, ""};
      // The key decides which registry: "docker.io" for Docker Hub's, else the host.
      std::string key = registry::credential_key(registry_name);
      std::string domain =
          key.starts_with("https://index.docker.io") ? "docker.io" : key.substr(0, key.find('/'));
      RegistryOptions options = ctx.registry_options();
      options.credential = credential;
      RegistryClient client(domain, options);
      client.check_login();
      registry::store_credential(registry::CredentialPaths::from_environment(), registry_name, credential);
      fmt::print("Login Succeeded\n");
    });
  }
  {
    auto* cmd = app.add_subcommand("logout", "Log out from a registry");
    auto server = std::make_shared<std::string>();
    cmd->add_option("server", *server, "Registry (default: Docker Hub)")->type_name("REGISTRY");
    cmd->callback([server] {
      std::string registry_name = server->empty() ? "docker.io" : *server;
      std::string key = registry::credential_key(registry_name);
      if (registry::remove_credential(registry::CredentialPaths::from_environment(), registry_name)) {
        fmt::print("Removing login credentials for {}\n", key);
      } else {
        fmt::print("Not logged in to {}\n", key);
      }
    });
  }
  {
    auto* cmd = app.add_subcommand("tags", "List the tags of a repository in a registry");
    auto name = std::make_shared<std::string>();
    cmd->add_option("repository", *name, "Repository")->required()->type_name("NAME");
    add_registry_flags(*cmd, ctx);
    cmd->callback([&ctx, name] {
      Reference ref = Reference::parse(*name);
      RegistryClient client(ref.domain(), ctx.registry_options());
      for (const std::string& tag : client.list_tags(ref.path())) fmt::print("{}\n", tag);
    });
  }
  {
    auto* group = app.add_subcommand("manifest", "Look at manifests in a registry");
    group->require_subcommand(1);
    auto* cmd = group->add_subcommand("inspect", "Show an image's manifest or index, as the registry has it");
    auto name = std::make_shared<std::string>();
    cmd->add_option("image", *name, "Image")->required()->type_name("NAME[:TAG|@DIGEST]");
    add_registry_flags(*cmd, ctx);
    cmd->callback([&ctx, name] {
      Reference ref = Reference::parse(*name);
      RegistryClient client(ref.domain(), ctx.registry_options());
      std::string tag_or_digest = ref.digest() ? ref.digest()->str() : ref.tag().value_or("latest");
      registry::FetchedManifest manifest = client.get_manifest(ref.path(), tag_or_digest);
      // Docker's `manifest inspect` indents by three spaces; the keys keep the registry's order.
      fmt::print("{}\n", nlohmann::ordered_json::parse(manifest.bytes).dump(3));
    });
  }
}

}  // namespace kiln::cli
