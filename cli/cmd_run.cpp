// kiln run, bundle, ps, rm, diff, commit: containers from the store's images, run in kiln's sandbox.
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <memory>

#include "cli/context.h"
#include "cli/format.h"
#include "cli/signals.h"
#include "layerstore/errors.h"
#include "layerstore/image.h"
#include "runtime/container_ops.h"
#include "runtime/containers.h"
#include "runtime/run.h"
#include "runtime/sandbox.h"

namespace kiln::cli {
namespace {

using runtime::RunOptions;

// Docker's run flags, shared by run and bundle.
void add_run_flags(CLI::App* cmd, RunOptions& o) {
  cmd->add_flag("-i,--interactive", o.interactive, "Keep STDIN open");
  cmd->add_flag("-t,--tty", o.tty, "Allocate a pseudo-TTY");
  cmd->add_flag("--init", o.init,
                "Run an init inside the container that forwards signals and reaps processes");
  cmd->add_flag("--read-only", o.read_only, "Mount the container's root filesystem as read only");
  cmd->add_flag("--privileged", o.privileged, "Give extended privileges to this container");
  cmd->add_option("-e,--env", o.env, "Set environment variables")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  cmd->add_option("--env-file", o.env_files, "Read in a file of environment variables")
      ->type_name("FILE")
      ->allow_extra_args(false);
  cmd->add_option("-w,--workdir", o.workdir, "Working directory inside the container")->type_name("DIR");
  cmd->add_option("-u,--user", o.user, "Username or UID (format: <name|uid>[:<group|gid>])");
  cmd->add_option("--group-add", o.group_add, "Add additional groups to join")
      ->type_name("GROUP")
      ->allow_extra_args(false);
  cmd->add_option("--entrypoint", o.entrypoint, "Overwrite the default ENTRYPOINT of the image");
  cmd->add_option("-h,--hostname", o.hostname, "Container host name");
  cmd->add_option("-v,--volume", o.volumes, "Bind mount a volume")
      ->type_name("HOST:CONTAINER[:ro]")
      ->allow_extra_args(false);
  cmd->add_option("--tmpfs", o.tmpfs, "Mount a tmpfs directory")
      ->type_name("PATH[:OPTIONS]")
      ->allow_extra_args(false);
  cmd->add_option("--cap-add", o.cap_add, "Add Linux capabilities")
      ->type_name("CAP")
      ->allow_extra_args(false);
  cmd->add_option("--cap-drop", o.cap_drop, "Drop Linux capabilities")
      ->type_name("CAP")
      ->allow_extra_args(false);
  cmd->add_option("--security-opt", o.security_opt,
                  "Security options (seccomp=unconfined|FILE, no-new-privileges)")
      ->allow_extra_args(false);
  cmd->add_option("--network,--net", o.network, "Network: none (default) or host");
  cmd->add_option("-m,--memory", o.memory, "Memory limit")->type_name("BYTES");
  cmd->add_option("--cpus", o.cpus, "Number of CPUs")->type_name("DECIMAL");
  cmd->add_option("--pids-limit", o.pids_limit, "Tune container pids limit (-1 for unlimited)");
  // Everything from IMAGE on is the image and its command, options included (`kiln run img ls -l`).
  cmd->prefix_command();
}

void take_image_and_args(CLI::App* cmd, RunOptions& o, const char* usage) {
  std::vector<std::string> rest = cmd->remaining();
  if (rest.empty())
    throw UsageError(fmt::format("\"{}\" requires at least 1 argument: {}", cmd->get_name(), usage));
  o.image = rest.front();
  o.args.assign(rest.begin() + 1, rest.end());
}

// Docker's STATUS column: "Up 3 minutes", "Exited (0) 5 seconds ago", "Created", "Dead".
std::string state_text(const runtime::ContainerRecord& c) {
  int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  if (c.state == "exited") {
    auto finished = parse_rfc3339_seconds(c.finished);
    return fmt::format("Exited ({}) {}", c.exit_code, finished ? human_since(*finished, now) : "");
  }
  if (c.state == "running") {
    auto created = parse_rfc3339_seconds(c.created);
    if (!created) return "Up";
    std::string since = human_since(*created, now);
    return "Up " + since.substr(0, since.size() - std::string_view(" ago").size());
  }
  if (c.state == "dead") return "Dead";
  return "Created";
}

}  // namespace

void add_container_commands(CLI::App& app, Context& ctx) {
  {
    auto options = std::make_shared<RunOptions>();
    auto* cmd = app.add_subcommand("run", "Run a command in a new container");
    cmd->set_help_flag("--help", "Print this help message and exit");
    cmd->add_flag("--rm", options->remove, "Automatically remove the container when it exits");
    cmd->add_option("--name", options->name, "Assign a name to the container");
    add_run_flags(cmd, *options);
    cmd->footer("Usage: kiln run [OPTIONS] IMAGE [COMMAND] [ARG...]");
    cmd->callback([&ctx, options, cmd] {
      take_image_and_args(cmd, *options, "kiln run [OPTIONS] IMAGE [COMMAND] [ARG...]");
      Store store = ctx.open_store();
      BlockedSignals signals;
      options->signal_fd = signals.fd();
      try {
        runtime::StepExit exit = runtime::run_container(store, *options);
        if (!exit.failure.empty()) fmt::print(stderr, "kiln: error: run: {}\n", exit.failure);
        ctx.exit_code = exit.code;
      } catch (const runtime::SandboxError&) {
        throw;
      } catch (const Error& error) {
        // Docker exits 125 whenever the container could not be run, whatever the cause.
        throw runtime::SandboxError(error.what());
      }
    });
  }
  {
    auto options = std::make_shared<RunOptions>();
    auto dir = std::make_shared<std::string>();
    auto* cmd =
        app.add_subcommand("bundle", "Write an OCI runtime bundle (config.json and rootfs/) that runc runs");
    cmd->set_help_flag("--help", "Print this help message and exit");
    cmd->add_option("-o,--output", *dir, "Bundle directory (created; must be empty)")->type_name("DIR");
    add_run_flags(cmd, *options);
    cmd->footer(
        "Usage: kiln bundle [RUN OPTIONS] IMAGE DIR [COMMAND] [ARG...]\n"
        "       kiln bundle -o DIR [RUN OPTIONS] IMAGE [COMMAND] [ARG...]");
    cmd->callback([&ctx, options, dir, cmd] {
      const char* usage = "kiln bundle [OPTIONS] IMAGE DIR [COMMAND] [ARG...]";
      take_image_and_args(cmd, *options, usage);
      if (dir->empty()) {
        // `kiln bundle IMAGE DIR [COMMAND...]`: the directory comes right after the image.
        if (options->args.empty()) {
          throw UsageError(fmt::format("\"bundle\" requires a directory: {}", usage));
        }
        *dir = options->args.front();
        options->args.erase(options->args.begin());
      }
      Store store = ctx.open_store();
      runtime::write_bundle(store, *options, *dir);
    });
  }
  {
    auto all = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    auto no_trunc = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("ps", "List containers");
    cmd->add_flag("-a,--all", *all, "Show all containers (default shows just running)");
    cmd->add_flag("-q,--quiet", *quiet, "Only display container IDs");
    cmd->add_flag("--no-trunc", *no_trunc, "Don't truncate output");
    cmd->callback([&ctx, all, quiet, no_trunc] {
      runtime::ContainerStore containers(ctx.root());
      std::vector<std::vector<std::string>> rows = {{"CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"}};
      for (const runtime::ContainerRecord& c : containers.list()) {
        if (!*all && c.state != "running") continue;
        std::string id = *no_trunc ? c.id : c.short_id();
        if (*quiet) {
          fmt::print("{}\n", id);
          continue;
        }
        std::string command;
        for (const std::string& arg : c.command) command += (command.empty() ? "" : " ") + arg;
        // Docker truncates the command to 20 characters, the ellipsis inside the quotes.
        if (!*no_trunc && command.size() > 20) command = command.substr(0, 19) + "…";
        rows.push_back({id, c.image_name, "\"" + command + "\"", state_text(c), c.name});
      }
      if (!*quiet) fmt::print("{}", format_table(rows));
    });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("rm", "Remove one or more containers");
    cmd->add_option("container", *names, "Containers")->required()->type_name("CONTAINER...");
    cmd->add_flag("-f,--force", *force, "Remove a running container too");
    cmd->callback([&ctx, names, force] {
      runtime::ContainerStore containers(ctx.root());
      for (const std::string& name : *names) {
        runtime::ContainerRecord c = containers.resolve(name);
        if (c.state == "running") {
          if (!*force) {
            throw UsageError(
                fmt::format("cannot remove container \"{}\": container is running: stop the "
                            "container before removing or force remove",
                            name));
          }
          // As docker rm -f: kill it first. PID 1 of its namespace takes the others along; the
          // kiln that runs it finds the container gone and returns the kill's exit code.
          ::kill(c.pid, SIGKILL);
        }
        containers.remove(c);
        fmt::print("{}\n", name);
      }
    });
  }
  {
    auto name = std::make_shared<std::string>();
    auto* cmd =
        app.add_subcommand("diff", "Inspect changes to files or directories on a container's filesystem");
    cmd->add_option("container", *name, "Container")->required()->type_name("CONTAINER");
    cmd->footer("Example: kiln diff my-container");
    cmd->callback([&ctx, name] {
      Store store = ctx.open_store();
      runtime::ContainerStore containers(ctx.root());
      runtime::ContainerRecord c = containers.resolve(*name);
      for (const runtime::Change& change : runtime::container_changes(store, containers, c)) {
        fmt::print("{} {}\n", change.kind, change.path);
      }
    });
  }
  {
    auto options = std::make_shared<runtime::CommitOptions>();
    auto container = std::make_shared<std::string>();
    auto name = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("commit", "Create a new image from a container's changes");
    cmd->add_option("container", *container, "Container")->required()->type_name("CONTAINER");
    cmd->add_option("repository", *name, "Name for the image")->type_name("REPOSITORY[:TAG]");
    cmd->add_option("-a,--author", options->author,
                    "Author (e.g., \"John Hannibal Smith <hannibal@a-team.com>\")");
    cmd->add_option("-c,--change", options->changes,
                    "Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, "
                    "LABEL, USER, VOLUME, WORKDIR)")
        ->type_name("INSTRUCTION")
        ->allow_extra_args(false);
    cmd->add_option("-m,--message", options->message, "Commit message");
    cmd->add_flag("-p,--pause{true}", options->pause,
                  "Pause container during commit (kiln cannot: a running container is refused unless "
                  "--pause=false)");
    cmd->footer("Example: kiln commit -m 'add config' -c 'CMD [\"/app\"]' my-container app:2");
    cmd->callback([&ctx, options, container, name] {
      if (!name->empty()) options->name = Reference::parse_tagged(*name);
      options->source_date_epoch = source_date_epoch();
      options->words = change_word_splitter();
      Store store = ctx.open_store();
      runtime::ContainerStore containers(ctx.root());
      runtime::ContainerRecord c = containers.resolve(*container);
      fmt::print("{}\n", runtime::commit_container(store, containers, c, *options).str());
    });
  }
}

}  // namespace kiln::cli
