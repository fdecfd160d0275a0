#include "builder/build.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "builder/context.h"
#include "builder/session.h"
#include "layerstore/archive_io.h"
#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "layerstore/image_ops.h"
#include "layerstore/tar.h"
#include "parser/instruction_rules.h"
#include "registry/pull.h"
#include "runtime/cgroups.h"
#include "runtime/chroot_step.h"
#include "runtime/rootfs.h"
#include "runtime/userns.h"

namespace kiln::builder {

// ------------------------------------------------------------------------------ option parsing

namespace {

// "k=v,k2=v2" (CSV, as Docker reads the flag) into pairs; a field without "=" has an empty value.
std::vector<std::pair<std::string, std::string>> key_values(const std::string& text, std::string_view flag) {
  std::vector<std::string> fields;
  try {
    fields = parser::csv_fields(text);
  } catch (const std::invalid_argument& error) {
    throw UsageError(fmt::format("{} `{}`: {}", flag, text, error.what()));
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& field : fields) {
    if (field.empty()) continue;
    size_t eq = field.find('=');
    if (eq == std::string::npos) {
      out.emplace_back(field, "");
    } else {
      out.emplace_back(field.substr(0, eq), field.substr(eq + 1));
    }
  }
  return out;
}

}  // namespace

OutputSpec parse_output(const std::string& text) {
  OutputSpec spec;
  if (text.find('=') == std::string::npos) {
    // A bare path, as `docker build -o DIR` takes it; "-" is a tar on standard output.
    spec.type = text == "-" ? OutputSpec::Type::kTar : OutputSpec::Type::kLocal;
    spec.dest = text;
    return spec;
  }
  std::string type;
  for (auto& [key, value] : key_values(text, "--output")) {
    if (key == "type") {
      type = value;
    } else if (key == "dest") {
      spec.dest = value;
    } else if (key == "name" || key == "push" || key == "compression" || key == "oci-mediatypes") {
      // Accepted for BuildKit's sake; names come from -t, compression from --compression.
    } else {
      throw UsageError(fmt::format("--output `{}`: unknown field `{}`", text, key));
    }
  }
  if (type == "image" || type == "docker-image" || type.empty()) {
    spec.type = type.empty() && !spec.dest.empty() ? OutputSpec::Type::kLocal : OutputSpec::Type::kImage;
  } else if (type == "oci") {
    spec.type = OutputSpec::Type::kOci;
  } else if (type == "docker") {
    spec.type = OutputSpec::Type::kDocker;
  } else if (type == "tar") {
    spec.type = OutputSpec::Type::kTar;
  } else if (type == "local") {
    spec.type = OutputSpec::Type::kLocal;
  } else {
    throw UsageError(
        fmt::format("--output `{}`: unknown type `{}` (image, oci, docker, tar, local)", text, type));
  }
  if (spec.type != OutputSpec::Type::kImage && spec.dest.empty()) {
    throw UsageError(fmt::format("--output `{}`: dest=PATH is required for type={}", text, type));
  }
  return spec;
}

CacheSpec parse_cache_spec(const std::string& text, std::string_view flag) {
  std::vector<std::pair<std::string, std::string>> fields = key_values(text, flag);
  std::string type, ref, mode;
  for (auto& [key, value] : fields)
    if (key == "type") type = value;
  // The type first: BuildKit's other exporters (local, inline, gha, s3) have fields of their own.
  if (type != "registry")
    throw UsageError(fmt::format("{} `{}`: type={} is not supported (type=registry is)", flag, text,
                                 type.empty() ? "(none)" : type));
  for (auto& [key, value] : fields) {
    if (key == "type") {
      continue;
    } else if (key == "ref") {
      ref = value;
    } else if (key == "mode") {
      mode = value;
    } else if (key == "image-manifest" || key == "oci-mediatypes" || key == "compression" ||
               key == "ignore-error") {
      // BuildKit's knobs for its own format, accepted so that the same command line works.
    } else {
      throw UsageError(fmt::format("{} `{}`: unknown field `{}`", flag, text, key));
    }
  }
  if (ref.empty()) throw UsageError(fmt::format("{} `{}`: ref=NAME[:TAG] is required", flag, text));
  if (!mode.empty() && mode != "min" && mode != "max")
    throw UsageError(fmt::format("{} `{}`: mode must be min or max", flag, text));
  std::optional<Reference> parsed = Reference::try_parse(ref);
  if (!parsed) throw UsageError(fmt::format("{} `{}`: `{}` is not an image reference", flag, text, ref));
  if (!parsed->tag() && !parsed->digest()) parsed = Reference::parse(parsed->str() + ":latest");
  return CacheSpec{*parsed, mode == "max"};
}

SecretSpec parse_secret(const std::string& text) {
  SecretSpec spec;
  std::string type;
  for (auto& [key, value] : key_values(text, "--secret")) {
    if (key == "id") {
      spec.id = value;
    } else if (key == "src" || key == "source") {
      spec.src = value;
    } else if (key == "env") {
      spec.env = value;
    } else if (key == "type") {
      type = value;
    } else {
      throw UsageError(fmt::format("--secret `{}`: unknown field `{}`", text, key));
    }
  }
  if (type != "" && type != "file" && type != "env") {
    throw UsageError(fmt::format("--secret `{}`: type must be file or env", text));
  }
  if (spec.id.empty()) {
    // Docker's shorthands: `--secret id=x` needs an id; `type=env,src=VAR` names it after VAR.
    if (!spec.src.empty()) spec.id = base_of(spec.src);
    if (!spec.env.empty()) spec.id = spec.env;
    if (spec.id.empty()) throw UsageError(fmt::format("--secret `{}`: id=ID is required", text));
  }
  if (type == "env" && spec.env.empty()) std::swap(spec.env, spec.src);
  if (spec.src.empty() && spec.env.empty()) {
    // BuildKit's default: an environment variable named like the id, else a file of that name.
    if (std::getenv(spec.id.c_str())) {
      spec.env = spec.id;
    } else {
      spec.src = spec.id;
    }
  }
  return spec;
}

SshSpec parse_ssh(const std::string& text) {
  SshSpec spec;
  size_t eq = text.find('=');
  spec.id = text.substr(0, eq);
  if (eq != std::string::npos) spec.socket = text.substr(eq + 1);
  if (spec.id.empty())
    throw UsageError(fmt::format("--ssh `{}`: an id is required (default or ID=SOCKET)", text));
  if (spec.socket.empty()) {
    const char* agent = std::getenv("SSH_AUTH_SOCK");
    if (!agent || !*agent) {
      throw UsageError(fmt::format("--ssh {}: no socket given and SSH_AUTH_SOCK is not set", spec.id));
    }
    spec.socket = agent;
  }
  return spec;
}

IsolationChoice choose_isolation(Isolation requested) {
  bool root = ::geteuid() == 0;
  std::string why;
  if (requested == Isolation::kAuto) {
    if (runtime::namespaces_available(why)) {
      requested = root ? Isolation::kNamespace : Isolation::kRootless;
    } else if (root) {
      requested = Isolation::kChroot;
    }
  }
  switch (requested) {
    case Isolation::kNamespace:
      if (!root) throw UsageError("--isolation namespace needs root; use rootless (or auto)");
      if (runtime::in_user_namespace())
        return {Isolation::kNamespace, "namespace (root of a user namespace)"};
      return {Isolation::kNamespace, "namespace"};
    case Isolation::kRootless:
      runtime::become_root_in_user_namespace();
      return {Isolation::kRootless,
              root ? "rootless (a user namespace, IDs mapped to themselves)"
                   : "rootless (a user namespace with the subordinate IDs of /etc/subuid)"};
    case Isolation::kChroot:
      if (!root) throw UsageError("--isolation chroot needs root (chroot and chown)");
      return {Isolation::kChroot,
              why.empty() ? "chroot" : "chroot (new namespaces are refused here: " + why + ")"};
    case Isolation::kAuto:
      break;
  }
  throw UsageError("no isolation works here: new namespaces are refused (" + why + ") and kiln is not root");
}

Isolation parse_isolation(const std::string& text) {
  if (text == "auto" || text.empty()) return Isolation::kAuto;
  if (text == "namespace") return Isolation::kNamespace;
  if (text == "rootless") return Isolation::kRootless;
  if (text == "chroot") return Isolation::kChroot;
  throw UsageError(fmt::format("--isolation `{}`: use auto, namespace, rootless or chroot", text));
}

// ------------------------------------------------------------------------------------ the state

std::optional<Digest> ImageState::chain_id() const {
  if (layers.empty()) return std::nullopt;
  return chain_ids(diff_ids()).back();
}

std::vector<Descriptor> ImageState::blobs() const {
  std::vector<Descriptor> out;
  for (const Layer& layer : layers) out.push_back(layer.blob);
  return out;
}

std::vector<Digest> ImageState::diff_ids() const {
  std::vector<Digest> out;
  for (const Layer& layer : layers) out.push_back(layer.diff_id);
  return out;
}

BuildSession::BuildSession(Store& store_, const BuildRequest& request_, Progress& progress_)
    : store(store_), request(request_), progress(progress_) {
  int event = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event < 0) throw_errno("create an eventfd");
  cancel_event_ = Fd(event);
}

BuildSession::~BuildSession() = default;

const ImageState& BuildSession::stage_result(size_t stage) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return results_.at(stage).has_value() || stop_.load(); });
  if (!results_[stage]) throw BuildCanceled("build canceled");
  return *results_[stage];
}

void BuildSession::set_stage_result(size_t stage, ImageState state) {
  {
    std::lock_guard lock(mutex_);
    results_.at(stage) = std::move(state);
  }
  changed_.notify_all();
}

std::vector<std::string> BuildSession::snapshots(const ImageState& state) {
  return snapshots(state.layers);
}

std::vector<std::string> BuildSession::snapshots(const std::vector<Layer>& layers) {
  // Layers taken from a registry cache may still be on their way.
  if (remote_cache) remote_cache->wait();
  std::vector<Descriptor> blobs;
  std::vector<Digest> diff_ids;
  for (const Layer& layer : layers) {
    blobs.push_back(layer.blob);
    diff_ids.push_back(layer.diff_id);
  }
  return store.snapshot_dirs(blobs, diff_ids);
}

void BuildSession::fail(std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = error;
  }
  stop();
}

std::exception_ptr BuildSession::first_error() {
  std::lock_guard lock(mutex_);
  return error_;
}

void BuildSession::stop() {
  if (!stop_.exchange(true)) {
    uint64_t one = 1;
    ssize_t written = ::write(cancel_event_.get(), &one, sizeof one);
    (void)written;  // an eventfd write of 1 cannot fail short of overflow
  }
  {
    // Waiters check the flag under the lock: taking it here means none misses the wake-up.
    std::lock_guard lock(mutex_);
  }
  changed_.notify_all();
  step_finished_.notify_all();
}

bool BuildSession::claim_step(const std::string& key) {
  std::unique_lock lock(mutex_);
  if (!running_steps_.count(key)) {
    running_steps_.insert(key);
    return true;
  }
  step_finished_.wait(lock, [&] { return !running_steps_.count(key) || stop_.load(); });
  return false;
}

void BuildSession::finish_step(const std::string& key, bool produced) {
  {
    std::lock_guard lock(mutex_);
    running_steps_.erase(key);
    if (produced) produced_steps_.insert(key);
  }
  step_finished_.notify_all();
}

bool BuildSession::produced_here(const std::string& key) {
  std::lock_guard lock(mutex_);
  return produced_steps_.count(key) != 0;
}

void BuildSession::note_step_record(size_t stage, const std::string& key, const nlohmann::json& data) {
  std::lock_guard lock(records_mutex_);
  step_records_.emplace_back(stage, CacheRecord{key, data});
}

std::vector<std::pair<size_t, CacheRecord>> BuildSession::step_records() {
  std::lock_guard lock(records_mutex_);
  return step_records_;
}

bool BuildSession::produced_any() {
  std::lock_guard lock(mutex_);
  return !produced_steps_.empty();
}

uint64_t default_build_cache_limit(const Store& store) {
  if (const char* configured = std::getenv("KILN_BUILD_CACHE_MAX"); configured && *configured) {
    try {
      return static_cast<uint64_t>(runtime::parse_memory_size(configured));
    } catch (const UsageError&) {
      rethrow_with_context(fmt::format("KILN_BUILD_CACHE_MAX=`{}`", configured));
    }
  }
  struct statvfs fs {};
  uint64_t limit = uint64_t{1} << 30;
  if (::statvfs(store.root().c_str(), &fs) == 0) {
    limit = std::max(limit, static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize / 10);
  }
  return limit;
}

void BuildSession::check_canceled() const {
  if (stop_.load()) throw BuildCanceled("build canceled");
}

std::string BuildSession::step_name(size_t stage, const std::string& text) {
  std::lock_guard lock(mutex_);
  int total = step_totals_.at(stage);
  if (total == 0) return text;
  int index = ++step_counters_.at(stage);
  std::string prefix = "[";
  if (graph.stages.size() > 1) prefix += graph.stages[stage].display_name() + " ";
  int width = static_cast<int>(fmt::format("{}", total).size());
  prefix += fmt::format("{:>{}}/{}] ", index, width, total);
  return prefix + text;
}

bool BuildSession::cache_allowed(size_t stage) const {
  if (request.no_cache) return false;
  const std::string& name = graph.stages[stage].name;
  return std::none_of(
      request.no_cache_filter.begin(), request.no_cache_filter.end(),
      [&](const std::string& filter) { return !name.empty() && text_equal_fold(filter, name); });
}

std::string BuildSession::now_created() const {
  if (epoch) return rfc3339_nano(*epoch * 1000000000);
  return rfc3339_nano(std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count());
}

// ---------------------------------------------------------------------------------- the builder

class Builder {
 public:
  Builder(Store& store, const BuildRequest& request, Progress& progress)
      : session_(store, request, progress), request_(request), store_(store), progress_(progress) {}

  BuildResult run() {
    prepare();
    if (!request_.cache_from.empty())
      session_.remote_cache =
          std::make_unique<RemoteCache>(store_, request_.registry, request_.cache_from, progress_);
    execute();
    if (session_.remote_cache) session_.remote_cache->wait();
    BuildResult result = export_result();
    for (const CacheSpec& spec : request_.cache_to) export_cache(spec);
    return result;
  }

 private:
  void prepare();
  void resolve_bases();
  void splice_onbuild_triggers();
  // Pulls a FROM image (the store lacks it, or --pull) for the platform its stage is built for.
  void pull_base(const std::string& name, const parser::Platform& platform);
  void count_steps();
  void execute();
  BuildResult export_result();
  // --cache-to: the records of the final image's stages (mode=min) or of every stage (max).
  void export_cache(const CacheSpec& spec);
  nlohmann::json final_config(const ImageState& state);
  void write_output(const std::string& dest, const std::function<void(Writer&)>& write);

  BuildSession session_;
  const BuildRequest& request_;
  Store& store_;
  Progress& progress_;
  LoadedContext loaded_;
};

void Builder::prepare() {
  // Process-wide, so now, while this is the only thread.
  prepare_archive_locale();
  session_.epoch = request_.source_date_epoch;
  session_.target_platform = parser::host_platform();
  if (!request_.platform.empty()) {
    try {
      session_.target_platform = parser::parse_platform(request_.platform);
    } catch (const std::invalid_argument& error) {
      throw UsageError(fmt::format("--platform: {}", error.what()));
    }
  }
  int jobs =
      request_.jobs > 0 ? request_.jobs : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  session_.jobs.release(std::min(jobs, 64) - 1);
  session_.job_count = static_cast<unsigned>(std::min(jobs, 64));

  int vertex = progress_.start("[internal] load build definition from " +
                               (request_.dockerfile.empty() || request_.dockerfile == "-"
                                    ? std::string("Dockerfile")
                                    : base_of(request_.dockerfile)));
  loaded_ = load_context(request_, store_.tmp_dir());
  progress_.note(vertex, fmt::format("transferring dockerfile: {}B done", loaded_.dockerfile_text.size()));
  if (!request_.isolation_note.empty()) progress_.note(vertex, "isolation: " + request_.isolation_note);
  progress_.done(vertex);
  session_.dockerfile_name = loaded_.dockerfile_name;
  session_.lineage_scope = fmt::format("{}\n{}\n{}", loaded_.owned ? request_.context : loaded_.dir,
                                       request_.dockerfile, loaded_.dockerfile_name);
  try {
    session_.file = parser::parse_dockerfile(loaded_.dockerfile_text);
    for (const auto& ins : session_.file.instructions) parser::check_instruction(ins, session_.file);
  } catch (const parser::ParseError& error) {
    throw Error(parser::format_diagnostic(session_.dockerfile_name, error));
  }
  if (!loaded_.dir.empty()) {
    if (!loaded_.ignore_text.empty() || !loaded_.ignore_name.empty()) {
      int ignore_vertex = progress_.start("[internal] load .dockerignore");
      progress_.note(ignore_vertex,
                     fmt::format("transferring context: {}B done", loaded_.ignore_text.size()));
      progress_.done(ignore_vertex);
    }
    session_.context.tree = SourceTree::directory(loaded_.dir, make_ignore_filter(loaded_));
    session_.context.checksums =
        std::make_unique<ChecksumCache>(checksum_cache_file(store_, loaded_.dir), loaded_.dir);
  }
  for (const auto& [name, value] : request_.build_contexts) {
    if (value.starts_with("docker-image://")) continue;  // resolved as an image below
    std::string dir = value;
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw UsageError(fmt::format("--build-context {}={}: not a directory", name, value));
    }
    ContextSource source;
    source.tree = SourceTree::directory(dir);
    source.checksums = std::make_unique<ChecksumCache>(checksum_cache_file(store_, dir), dir);
    session_.named_contexts.emplace(text_to_lower(name), std::move(source));
  }
  resolve_bases();
  count_steps();
}

// The graph, built twice when a base image brings ONBUILD triggers: they run right after FROM, so
// they are spliced in as instructions and the graph made again.
void Builder::resolve_bases() {
  parser::BuildOptions options;
  options.build_args = request_.build_args;
  options.target = request_.target;
  options.target_platform = session_.target_platform;
  options.base_env =
      [this](const std::string& base) -> std::optional<std::vector<std::pair<std::string, std::string>>> {
    const Image* image = find_base_image(store_, session_, request_, base);
    std::vector<std::pair<std::string, std::string>> env;
    bool has_path = false;
    if (image) {
      const nlohmann::json& config = image->config.container_config();
      if (config.is_object() && config.contains("Env") && config["Env"].is_array()) {
        for (const auto& entry : config["Env"]) {
          if (!entry.is_string()) continue;
          std::string text = entry.get<std::string>();
          size_t eq = text.find('=');
          std::string key = text.substr(0, eq);
          if (key == "PATH") has_path = true;
          env.emplace_back(key, eq == std::string::npos ? "" : text.substr(eq + 1));
        }
      }
    }
    // BuildKit adds the default PATH to every stage that has none.
    if (!has_path) env.emplace_back("PATH", kDefaultPath);
    return env;
  };
  auto make_graph = [&] {
    try {
      session_.graph = parser::build_graph(session_.file, options);
    } catch (const parser::ParseError& error) {
      throw Error(parser::format_diagnostic(session_.dockerfile_name, error));
    }
  };
  make_graph();
  // Every base the target needs must be there before anything runs: pulled when the store lacks
  // it, and pulled again with --pull.
  std::map<std::string, std::set<std::string>> pulled;  // name → the platforms pulled
  for (size_t s : session_.graph.order) {
    const parser::Stage& stage = session_.graph.stages[s];
    if (stage.base_stage || text_equal_fold(stage.base, "scratch")) continue;
    if (named_context_for(session_, stage.base)) continue;
    parser::Platform platform =
        stage.platform.empty() ? session_.target_platform : parser::parse_platform(stage.platform);
    const Image* image = find_base_image(store_, session_, request_, stage.base, &platform);
    std::string name = base_image_lookup(request_, stage.base);
    // A name this build pulled for another platform points at that platform's image now: this
    // stage's platform is pulled too (a cross build's FROM --platform=$BUILDPLATFORM alpine and
    // FROM alpine).
    bool other_platform_pulled = pulled.count(name) > 0;
    if (image && !request_.pull && !other_platform_pulled) continue;
    if (!pulled[name].insert(platform.to_string()).second) continue;
    const parser::Instruction& from = session_.file.instructions[stage.from];
    try {
      pull_base(name, platform);
    } catch (const Error& e) {
      throw Error(
          fmt::format("{}:{}: FROM {}: {}", session_.dockerfile_name, from.start.line, stage.base, e.what()));
    }
  }
  splice_onbuild_triggers();
  if (!session_.onbuild_instructions.empty()) make_graph();
}

void Builder::pull_base(const std::string& name, const parser::Platform& platform) {
  std::optional<Reference> ref = Reference::try_parse(name);
  if (!ref) throw NotFoundError("no such image in the store, and not a name to pull");
  if (!ref->digest() && !ref->tag()) ref = Reference::parse(ref->str() + ":latest");
  int vertex = session_.progress.start(fmt::format("[internal] pull {}", ref->str()));
  registry::PullOptions options;
  options.platform = Platform{platform.architecture, platform.os, platform.variant, ""};
  options.progress = [&](const std::string& line) { session_.progress.note(vertex, line); };
  registry::RegistryOptions registry_options = request_.registry;
  registry_options.notice = [&](const std::string& line) { session_.progress.note(vertex, line); };
  std::optional<registry::PullResult> pulled;
  try {
    pulled = registry::pull_from_registry(store_, *ref, options, registry_options);
  } catch (const Error& e) {
    session_.progress.error(vertex, e.what());
    throw;
  }
  session_.progress.done(vertex);
  Image image = store_.load_image(pulled->manifest);
  if (!ref->digest()) image.names = {*ref};
  // What find_base_image remembered of this name is stale now.
  std::lock_guard lock(session_.bases_mutex);
  session_.base_images.erase(name);
  session_.missing_bases.erase(name);
  session_.pulled_bases.insert_or_assign(pulled_base_key(name, platform), std::move(image));
}

void Builder::splice_onbuild_triggers() {
  std::vector<parser::Instruction> spliced;
  std::set<size_t> onbuild;
  bool any = false;
  for (size_t i = 0; i < session_.file.instructions.size(); ++i) {
    const parser::Instruction& ins = session_.file.instructions[i];
    spliced.push_back(ins);
    if (ins.keyword != parser::Keyword::kFrom) continue;
    // The stage this FROM starts, to know its base.
    auto stage = std::find_if(session_.graph.stages.begin(), session_.graph.stages.end(),
                              [&](const parser::Stage& s) { return s.from == i; });
    if (stage == session_.graph.stages.end() || stage->base_stage) continue;
    const Image* image = find_base_image(store_, session_, request_, stage->base);
    if (!image) continue;
    const nlohmann::json& config = image->config.container_config();
    if (!config.is_object() || !config.contains("OnBuild") || !config["OnBuild"].is_array()) continue;
    for (const auto& trigger : config["OnBuild"]) {
      if (!trigger.is_string()) continue;
      std::string text = trigger.get<std::string>();
      parser::Dockerfile parsed;
      try {
        parsed = parser::parse_dockerfile(text + "\n");
      } catch (const parser::ParseError& error) {
        throw Error(fmt::format("{}:{}: ONBUILD trigger `{}` of {}: {}", session_.dockerfile_name,
                                ins.start.line, text, stage->base, error.what()));
      }
      if (parsed.instructions.size() != 1) {
        throw Error(fmt::format("ONBUILD trigger `{}` of {}: not a single instruction", text, stage->base));
      }
      parser::Instruction trigger_ins = parsed.instructions[0];
      using parser::Keyword;
      if (trigger_ins.keyword == Keyword::kFrom || trigger_ins.keyword == Keyword::kOnbuild ||
          trigger_ins.keyword == Keyword::kMaintainer) {
        throw Error(fmt::format("ONBUILD trigger `{}` of {}: {} is not allowed as a trigger", text,
                                stage->base, parser::keyword_name(trigger_ins.keyword)));
      }
      // Errors in a trigger point at the FROM that brought it.
      trigger_ins.start = ins.start;
      trigger_ins.end_line = ins.end_line;
      for (auto& position : trigger_ins.argument_positions) position = ins.start;
      for (auto& flag : trigger_ins.flags) flag.position = ins.start;
      onbuild.insert(spliced.size());
      spliced.push_back(std::move(trigger_ins));
      any = true;
    }
  }
  if (!any) return;
  session_.file.instructions = std::move(spliced);
  session_.onbuild_instructions = std::move(onbuild);
}

void Builder::count_steps() {
  const auto& graph = session_.graph;
  session_.results_.assign(graph.stages.size(), std::nullopt);
  session_.step_counters_.assign(graph.stages.size(), 0);
  session_.step_totals_.assign(graph.stages.size(), 0);
  for (const parser::Stage& stage : graph.stages) {
    int total = 0;
    if (!stage.base_stage && !text_equal_fold(stage.base, "scratch")) total = 1;
    for (size_t i : stage.instructions) {
      using parser::Keyword;
      Keyword k = session_.file.instructions[i].keyword;
      if (k == Keyword::kAdd || k == Keyword::kCopy || k == Keyword::kRun || k == Keyword::kWorkdir) ++total;
    }
    session_.step_totals_[stage.index] = total;
  }
}

void Builder::execute() {
  const auto& order = session_.graph.order;
  // The caller's cancel descriptor (Ctrl-C) stops the build as a failure does. The watcher also
  // wakes when the build stops by itself or ends (`finished`).
  Fd finished(::eventfd(0, EFD_CLOEXEC));
  if (!finished.valid()) throw_errno("create an eventfd");
  std::thread watcher;
  if (request_.cancel_fd >= 0) {
    watcher = std::thread([&] {
      pollfd fds[3] = {
          {request_.cancel_fd, POLLIN, 0}, {session_.cancel_fd(), POLLIN, 0}, {finished.get(), POLLIN, 0}};
      while (::poll(fds, 3, -1) < 0 && errno == EINTR) {
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        session_.fail(std::make_exception_ptr(BuildCanceled("build canceled")));
      }
    });
  }
  std::vector<std::thread> threads;
  threads.reserve(order.size());
  for (size_t s : order) {
    threads.emplace_back([this, s] {
      try {
        // A stage starts as soon as its base is done; what it takes from other stages (COPY
        // --from, RUN --mount from=) it waits for when it gets there. Job slots are taken by the
        // steps that run (see fs_step), not by stages, so a waiting stage holds none.
        session_.check_canceled();
        session_.set_stage_result(s, run_stage(session_, s));
      } catch (...) {
        session_.fail(std::current_exception());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  uint64_t one = 1;
  if (::write(finished.get(), &one, sizeof one) != sizeof one) throw_errno("wake the cancel watcher");
  if (watcher.joinable()) watcher.join();
  if (session_.context.checksums) session_.context.checksums->save();
  for (auto& [name, source] : session_.named_contexts) {
    if (source.checksums) source.checksums->save();
  }
  if (std::exception_ptr error = session_.first_error()) std::rethrow_exception(error);
}

nlohmann::json Builder::final_config(const ImageState& state) {
  nlohmann::json config = state.config;
  nlohmann::json& inner = config["config"];
  for (const auto& [key, value] : request_.labels) inner["Labels"][key] = value;
  // The final stage's platform: the build's unless its FROM (or its base stage's) named another.
  const parser::Platform& platform = state.platform;
  config["architecture"] = platform.architecture;
  config["os"] = platform.os;
  if (!platform.variant.empty()) {
    config["variant"] = platform.variant;
  } else {
    config.erase("variant");
  }
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", nlohmann::json::array()}};
  for (const Layer& layer : state.layers) config["rootfs"]["diff_ids"].push_back(layer.diff_id.str());
  // The image was made when its last step was: a rebuild from the cache gives the same image.
  std::string created;
  if (config.contains("history")) {
    for (const auto& entry : config["history"]) {
      if (entry.contains("created")) created = std::max(created, entry["created"].get<std::string>());
    }
  }
  if (created.empty()) created = session_.now_created();
  if (session_.epoch) created = rfc3339_nano(*session_.epoch * 1000000000);
  config["created"] = created;
  return config;
}

// An archive output: to standard output for "-", else to a file that appears only once complete.
void Builder::write_output(const std::string& dest, const std::function<void(Writer&)>& write) {
  if (dest == "-") {
    FdWriter out(request_.stdout_fd, "standard output");
    write(out);
    return;
  }
  AtomicFile file(dest);
  write(file);
  file.commit();
}

BuildResult Builder::export_result() {
  const ImageState& state = session_.stage_result(session_.graph.target);
  std::vector<OutputSpec> outputs = request_.outputs;
  if (outputs.empty()) outputs.push_back(OutputSpec{});
  nlohmann::json config = final_config(state);
  std::string config_bytes = config.dump();
  BuildResult result{sha256_of(config_bytes), std::nullopt, session_.produced_any()};
  bool needs_image = std::any_of(outputs.begin(), outputs.end(), [](const OutputSpec& o) {
    return o.type == OutputSpec::Type::kImage || o.type == OutputSpec::Type::kOci ||
           o.type == OutputSpec::Type::kDocker;
  });
  if (needs_image) {
    int vertex = progress_.start("exporting to image");
    Manifest manifest{std::string(media::kOciManifest),
                      Descriptor{std::string(media::kOciConfig),
                                 result.image_id,
                                 static_cast<int64_t>(config_bytes.size()),
                                 {},
                                 std::nullopt},
                      state.blobs(),
                      {}};
    std::string manifest_bytes = manifest.serialize();
    progress_.note(vertex, "exporting layers done");
    store_.put_blob(config_bytes);
    Digest manifest_digest = store_.put_blob(manifest_bytes);
    progress_.note(vertex, fmt::format("writing image {} done", result.image_id));
    Descriptor descriptor{std::string(media::kOciManifest),
                          manifest_digest,
                          static_cast<int64_t>(manifest_bytes.size()),
                          {},
                          std::nullopt};
    // Names only now that everything else succeeded.
    if (request_.tags.empty()) {
      store_.set_name(descriptor, std::nullopt);
    }
    for (const Reference& tag : request_.tags) {
      store_.set_name(descriptor, tag);
      progress_.note(vertex, fmt::format("naming to {} done", tag.str()));
    }
    result.manifest_digest = manifest_digest;
    progress_.done(vertex);
  }
  for (const OutputSpec& output : outputs) {
    switch (output.type) {
      case OutputSpec::Type::kImage:
        break;
      case OutputSpec::Type::kOci:
      case OutputSpec::Type::kDocker: {
        int vertex = progress_.start(fmt::format("exporting to {} image format",
                                                 output.type == OutputSpec::Type::kOci ? "oci" : "docker"));
        std::vector<std::string> names;
        for (const Reference& tag : request_.tags) names.push_back(tag.str());
        if (names.empty()) names.push_back(result.image_id.str());
        write_output(output.dest, [&](Writer& out) { save_images(store_, names, out); });
        progress_.note(vertex, fmt::format("sending tarball to {} done", output.dest));
        progress_.done(vertex);
        break;
      }
      case OutputSpec::Type::kTar:
      case OutputSpec::Type::kLocal: {
        int vertex = progress_.start(fmt::format(
            "exporting to client {}", output.type == OutputSpec::Type::kTar ? "tarball" : "directory"));
        std::vector<std::string> lowers = session_.snapshots(state);
        if (output.type == OutputSpec::Type::kLocal) {
          make_dirs(output.dest, 0755);
          runtime::flatten_layers(lowers, output.dest);
        } else {
          std::vector<Fd> fds;
          std::vector<int> raw;
          for (auto it = lowers.rbegin(); it != lowers.rend(); ++it) {
            fds.push_back(open_or_throw(*it, O_RDONLY | O_DIRECTORY));
            raw.push_back(fds.back().get());
          }
          TarWriteOptions tar_options;
          tar_options.source_date_epoch = session_.epoch;
          write_output(output.dest, [&](Writer& out) { write_flattened_tar(raw, out, tar_options); });
        }
        progress_.note(vertex, fmt::format("copying files to {} done", output.dest));
        progress_.done(vertex);
        break;
      }
    }
  }
  return result;
}

void Builder::export_cache(const CacheSpec& spec) {
  std::set<size_t> stages;
  for (std::optional<size_t> s = session_.graph.target; s; s = session_.graph.stages[*s].base_stage)
    stages.insert(*s);
  std::vector<CacheRecord> records;
  std::set<std::string> keys;
  for (auto& [stage, record] : session_.step_records()) {
    if (!spec.mode_max && !stages.count(stage)) continue;
    if (keys.insert(record.key).second) records.push_back(std::move(record));
  }
  builder::export_cache(store_, request_.registry, spec, records, progress_);
}

BuildResult build(Store& store, const BuildRequest& request, Progress& progress) {
  Builder builder(store, request, progress);
  return builder.run();
}

}  // namespace kiln::builder
