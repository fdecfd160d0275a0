// import, save, load, export: moving images in and out of tarballs.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "cli/context.h"
#include "cli/format.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/image_ops.h"
#include "runtime/container_ops.h"
#include "runtime/containers.h"

namespace kiln::cli {
namespace {

// Shows bytes read and the rate on stderr, when stderr is a terminal; silent otherwise.
class ProgressReader : public Reader {
 public:
  ProgressReader(Reader& in, std::string label)
      : in_(in), label_(std::move(label)), enabled_(stderr_is_terminal()) {}
  ~ProgressReader() override {
    if (enabled_ && shown_) fmt::print(stderr, "\r\033[K");
  }
  size_t read(std::span<std::byte> buf) override {
    size_t n = in_.read(buf);
    total_ += n;
    if (enabled_) {
      auto now = std::chrono::steady_clock::now();
      if (now - last_ > std::chrono::milliseconds(200)) {
        double secs = std::chrono::duration<double>(now - start_).count();
        fmt::print(stderr, "\r\033[K{} {} ({}/s)", label_, human_size(total_),
                   human_size(static_cast<uint64_t>(static_cast<double>(total_) / std::max(secs, 0.001))));
        last_ = now;
        shown_ = true;
      }
    }
    return n;
  }

 private:
  Reader& in_;
  std::string label_;
  bool enabled_;
  bool shown_ = false;
  uint64_t total_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  // The first line appears after one interval, so quick operations never flash a progress line.
  std::chrono::steady_clock::time_point last_ = start_;
};

// Output to -o FILE (published atomically: a failed command leaves no partial file) or to stdout,
// which must not be a terminal.
template <typename Fn>
void with_output(const std::string& path, std::string_view what, Fn&& fn) {
  if (path.empty() || path == "-") {
    if (stdout_is_terminal()) {
      throw UsageError(
          fmt::format("refusing to write {} to a terminal: use -o FILE or redirect stdout", what));
    }
    FdWriter out(STDOUT_FILENO, "stdout");
    fn(static_cast<Writer&>(out));
    return;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // A device or a fifo (/dev/null, a named pipe): write to it directly. There is no file to
    // replace atomically, and renaming over it would replace the device node itself.
    Fd fd = open_or_throw(path, O_WRONLY);
    FdWriter out(fd.get(), path);
    fn(static_cast<Writer&>(out));
    return;
  }
  // A symlink is followed (even one that names a file not written yet), so that the file it names
  // is replaced and the link stays a link.
  std::filesystem::path target = path;
  std::error_code ec;
  for (int hops = 0; hops < 40 && std::filesystem::is_symlink(target, ec); ++hops) {
    std::filesystem::path next = std::filesystem::read_symlink(target, ec);
    if (ec) break;
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  AtomicFile out(target.string());
  fn(static_cast<Writer&>(out));
  out.commit();
}

template <typename Fn>
void with_input(const std::string& path, std::string_view label, Fn&& fn) {
  if (path.empty() || path == "-") {
    FdReader in(STDIN_FILENO, "stdin");
    ProgressReader progress(in, std::string(label));
    fn(static_cast<Reader&>(progress));
    return;
  }
  Fd fd = open_or_throw(path, O_RDONLY);
  FdReader in(fd.get(), path);
  ProgressReader progress(in, std::string(label));
  fn(static_cast<Reader&>(progress));
}

}  // namespace

void add_archive_commands(CLI::App& app, Context& ctx) {
  {
    auto* cmd =
        app.add_subcommand("import", "Import a root filesystem tarball (tar, tar.gz, tar.zst) as an image");
    auto source = std::make_shared<std::string>();
    auto name = std::make_shared<std::string>();
    auto changes = std::make_shared<std::vector<std::string>>();
    auto message = std::make_shared<std::string>();
    cmd->add_option("file", *source, "Tarball to import, or - for stdin")->required()->type_name("FILE|-");
    cmd->add_option("repository", *name, "Name for the image")->type_name("REPOSITORY[:TAG]");
    cmd->add_option(
           "-c,--change", *changes,
           "Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
           "USER, VOLUME, WORKDIR)")
        ->type_name("INSTRUCTION")
        ->allow_extra_args(false);
    cmd->add_option("-m,--message", *message, "Commit message for the imported image");
    cmd->footer("Example: kiln import rootfs.tar.gz myapp:1.0 --change 'CMD [\"/bin/sh\"]'");
    cmd->callback([&ctx, source, name, changes, message] {
      ImportOptions options;
      if (!name->empty()) options.name = Reference::parse_tagged(*name);
      options.changes = *changes;
      options.words = change_word_splitter();
      options.message = *message;
      options.source = *source;
      options.source_date_epoch = source_date_epoch();
      Store store = ctx.open_store();
      // Results are printed once the progress line is gone, not onto it.
      std::optional<Digest> id;
      with_input(*source, "Importing", [&](Reader& in) { id = import_image(store, in, options); });
      fmt::print("{}\n", id->str());
    });
  }
  {
    auto* cmd = app.add_subcommand("save", "Save images to a tar archive (Docker and OCI formats in one)");
    auto output = std::make_shared<std::string>();
    auto images = std::make_shared<std::vector<std::string>>();
    cmd->add_option("-o,--output", *output, "Write to a file instead of stdout")->type_name("FILE");
    cmd->add_option("image", *images, "Images to save")->required()->type_name("IMAGE...");
    cmd->footer("Example: kiln save -o busybox.tar busybox:latest");
    cmd->callback([&ctx, output, images] {
      Store store = ctx.open_store();
      with_output(*output, "an image archive", [&](Writer& out) { save_images(store, *images, out); });
    });
  }
  {
    auto* cmd = app.add_subcommand("load", "Load images from a tar archive (docker-archive or OCI layout)");
    auto input = std::make_shared<std::string>();
    auto quiet = std::make_shared<bool>(false);
    cmd->add_option("-i,--input", *input, "Read from a file instead of stdin (plain or compressed)")
        ->type_name("FILE");
    cmd->add_flag("-q,--quiet", *quiet, "Suppress the load output");
    cmd->footer("Example: kiln load -i busybox.tar");
    cmd->callback([&ctx, input, quiet] {
      if ((input->empty() || *input == "-") && ::isatty(STDIN_FILENO)) {
        throw UsageError("requested load from stdin, but stdin is empty (use -i FILE or redirect stdin)");
      }
      Store store = ctx.open_store();
      LoadResult r;
      with_input(*input, "Loading", [&](Reader& in) { r = load_images(store, in); });
      if (*quiet) return;
      for (const auto& n : r.loaded_names) fmt::print("Loaded image: {}\n", n);
      for (const auto& id : r.loaded_ids) fmt::print("Loaded image ID: {}\n", id.str());
    });
  }
  {
    auto* cmd = app.add_subcommand(
        "export",
        "Export a container's filesystem (or an image's flattened root filesystem) as a tar archive");
    auto output = std::make_shared<std::string>();
    auto what = std::make_shared<std::string>();
    cmd->add_option("-o,--output", *output, "Write to a file instead of stdout")->type_name("FILE");
    cmd->add_option("container", *what, "Container (or image) to export")->required()->type_name("CONTAINER");
    cmd->footer("Example: kiln export -o rootfs.tar my-container");
    cmd->callback([&ctx, output, what] {
      Store store = ctx.open_store();
      // A container first, as Docker's export takes only containers; then an image, which kiln's
      // export took before it had containers.
      runtime::ContainerStore containers(ctx.root());
      std::optional<runtime::ContainerRecord> container;
      try {
        container = containers.resolve(*what);
      } catch (const NotFoundError&) {
        std::optional<Image> img;
        try {
          img = store.resolve(*what);
        } catch (const NotFoundError&) {
          throw NotFoundError(fmt::format("no such container: `{}`", *what));
        }
        with_output(*output, "a tar archive",
                    [&](Writer& out) { export_image(store, *img, out, source_date_epoch()); });
        return;
      }
      with_output(*output, "a tar archive", [&](Writer& out) {
        runtime::export_container(store, containers, *container, out, source_date_epoch());
      });
    });
  }
}

}  // namespace kiln::cli
