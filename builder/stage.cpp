// One stage's instructions, dispatched as BuildKit's dockerfile2llb does: config-only instructions
// change the image config and add a history entry; RUN, COPY, ADD and WORKDIR are steps that may
// change files, each with a cache key, run only when the build cache does not know the key.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "builder/build.h"
#include "builder/cache_key.h"
#include "builder/context.h"
#include "builder/copy.h"
#include "builder/download.h"
#include "builder/session.h"
#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "layerstore/image_ops.h"
#include "layerstore/layer_check.h"
#include "parser/instruction_rules.h"
#include "parser/word_expansion.h"
#include "runtime/capabilities.h"
#include "runtime/chroot_step.h"
#include "runtime/process_config.h"
#include "runtime/sandbox.h"
#include "runtime/seccomp.h"
#include "runtime/step.h"

namespace kiln::builder {

using nlohmann::json;
using parser::Instruction;
using parser::Keyword;

// ------------------------------------------------------------------------- Go's string formats

std::string go_quote(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string go_quote_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? " " : "") + go_quote(items[i]);
  return out + "]";
}

std::string go_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? " " : "") + items[i];
  return out + "]";
}

namespace {

constexpr std::string_view kHistoryComment = "buildkit.dockerfile.v0";
constexpr std::string_view kSandboxHostname = "buildkitsandbox";

std::string go_duration(std::chrono::nanoseconds d) {
  // Go's time.Duration String for the whole seconds and minutes a HEALTHCHECK takes.
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string out;
  if (ns >= 3600'000'000'000) {
    out += fmt::format("{}h", ns / 3600'000'000'000);
    ns %= 3600'000'000'000;
  }
  if (ns >= 60'000'000'000 || !out.empty()) {
    out += fmt::format("{}m", ns / 60'000'000'000);
    ns %= 60'000'000'000;
  }
  if (ns % 1'000'000'000 == 0) return out + fmt::format("{}s", ns / 1'000'000'000);
  std::string frac = fmt::format("{:09d}", ns % 1'000'000'000);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  return out + fmt::format("{}.{}s", ns / 1'000'000'000, frac);
}

// Removes the leading tabs of every line (`<<-`).
std::string chomp_heredoc(const std::string& body) {
  std::string out;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size() - 1;
    size_t first = start;
    while (first <= end && body[first] == '\t') ++first;
    out.append(body, first, end + 1 - first);
    start = end + 1;
  }
  return out;
}

std::optional<std::string> env_get(const json& env, std::string_view key) {
  if (!env.is_array()) return std::nullopt;
  for (const auto& item : env) {
    if (!item.is_string()) continue;
    const std::string& entry = item.get_ref<const std::string&>();
    if (entry.size() > key.size() && entry.compare(0, key.size(), key) == 0 && entry[key.size()] == '=') {
      return entry.substr(key.size() + 1);
    }
    if (entry == key) return "";
  }
  return std::nullopt;
}

// Docker's addEnv: the key's entry replaced where it is, else appended.
void env_set(json& env, const std::string& key, const std::string& value) {
  if (!env.is_array()) env = json::array();
  for (auto& item : env) {
    if (!item.is_string()) continue;
    const std::string& entry = item.get_ref<const std::string&>();
    if (entry.compare(0, key.size(), key) == 0 && (entry.size() == key.size() || entry[key.size()] == '=')) {
      item = key + "=" + value;
      return;
    }
  }
  env.push_back(key + "=" + value);
}

std::vector<std::string> string_list(const json& value) {
  std::vector<std::string> out;
  if (value.is_array()) {
    for (const auto& item : value) {
      if (item.is_string()) out.push_back(item.get<std::string>());
    }
  }
  return out;
}

// Docker's signal names for STOPSIGNAL: a number, or a name with or without SIG.
bool valid_signal(const std::string& text) {
  if (!text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::stol(text) > 0 && std::stol(text) < 65;
  }
  std::string name = text;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  if (name.starts_with("SIG")) name = name.substr(3);
  static const char* const kNames[] = {
      "HUP",  "INT",  "QUIT",   "ILL",  "TRAP",   "ABRT", "IOT",  "BUS",  "FPE",  "KILL",  "USR1", "SEGV",
      "USR2", "PIPE", "ALRM",   "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",  "TTOU", "URG",
      "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH",  "IO",   "POLL", "PWR",  "SYS",  "RTMIN", "RTMAX"};
  for (const char* known : kNames) {
    if (name == known) return true;
  }
  return name.starts_with("RTMIN+") || name.starts_with("RTMAX-");
}

// Reads a small file of a root given as a tree (for /etc/passwd and /etc/group).
runtime::ContainerFileReader tree_reader(const SourceTree& tree) {
  return [&tree](const std::string& relative) -> std::optional<std::string> {
    std::optional<std::string> resolved = tree.resolve(relative, true);
    if (!resolved) return std::nullopt;
    auto entry = tree.lookup(*resolved, false);
    if (!entry || !S_ISREG(entry->st.st_mode)) return std::nullopt;
    Fd fd = tree.open_file(*entry);
    return read_fd_capped(fd.get(), 16 << 20, "/" + relative);
  };
}

// BuildKit's owner for --chown and for the directories WORKDIR makes: a name is looked up in the
// root's /etc/passwd (taking its group unless one is given), a number is uid and gid at once.
std::pair<uid_t, gid_t> resolve_chown(const SourceTree& root, const std::string& spec,
                                      const std::string& what) {
  std::string user = spec.substr(0, spec.find(':'));
  std::optional<std::string> group;
  if (spec.find(':') != std::string::npos) group = spec.substr(spec.find(':') + 1);
  auto numeric = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  uid_t uid = 0;
  gid_t gid = 0;
  auto read = tree_reader(root);
  if (numeric(user)) {
    uid = static_cast<uid_t>(std::stoul(user));
    gid = static_cast<gid_t>(uid);
  } else if (!user.empty()) {
    try {
      runtime::ExecUser found = runtime::resolve_user(read, user, {});
      uid = found.uid;
      gid = found.gid;
    } catch (const NotFoundError&) {
      throw Error(
          fmt::format("{}: unable to convert uid/gid chown string to host mapping: can't find uid for user "
                      "{}: no such user: {}",
                      what, user, user));
    }
  }
  if (group && !group->empty()) {
    if (numeric(*group)) {
      gid = static_cast<gid_t>(std::stoul(*group));
    } else {
      try {
        gid = runtime::resolve_user(read, "0:" + *group, {}).gid;
      } catch (const NotFoundError&) {
        throw Error(
            fmt::format("{}: unable to convert uid/gid chown string to host mapping: can't find gid for "
                        "group {}: no such group: {}",
                        what, *group, *group));
      }
    }
  }
  return {uid, gid};
}

// A step's output, on its way to the progress display.
class ProgressOutput : public runtime::StepOutput {
 public:
  ProgressOutput(Progress& progress, int vertex) : progress_(progress), vertex_(vertex) {}
  void write(int, std::string_view data) override { progress_.output(vertex_, data); }

 private:
  Progress& progress_;
  int vertex_;
};

class StageRunner {
 public:
  StageRunner(BuildSession& session, size_t index)
      : s_(session), index_(index), stage_(session.graph.stages[index]) {}

  ImageState run() {
    start();
    for (size_t i : stage_.instructions) {
      s_.check_canceled();
      try {
        dispatch(i);
      } catch (const BuildCanceled&) {
        throw;
      } catch (const StepFailed&) {
        throw;
      } catch (const Error& error) {
        // Where in the Dockerfile, as BuildKit says it.
        const Instruction& ins = s_.file.instructions[i];
        throw Error(fmt::format("{}:{}: {}", s_.dockerfile_name, ins.start.line, error.what()));
      }
    }
    return std::move(state_);
  }

 private:
  // ---- the stage's start: FROM
  void start() {
    if (stage_.base_stage) {
      state_ = s_.stage_result(*stage_.base_stage);
      // A stage inherits its base stage's platform unless its FROM names one (BuildKit).
      if (!stage_.platform.empty()) state_.platform = stage_platform();
      // ONBUILD triggers do not carry over from a stage (BuildKit), only from images.
      state_.container_config().erase("OnBuild");
    } else if (text_equal_fold(stage_.base, "scratch")) {
      state_.platform = stage_platform();
      state_.config = empty_image_config();
    } else if (const ContextSource* named = named_context_for(s_, stage_.base)) {
      state_.platform = stage_platform();
      start_from_directory(*named);
    } else {
      state_.platform = stage_platform();
      const Image* image = find_base_image(s_.store, s_, s_.request, stage_.base, &state_.platform);
      if (!image) throw NotFoundError(fmt::format("FROM {}: no such image in the store", stage_.base));
      std::string ref = stage_.base;
      if (!image->names.empty()) ref = image->names.front().str();
      int vertex = s_.progress.start(s_.step_name(index_, "FROM " + ref));
      state_.config = image->config.doc();
      state_.config.erase("created");
      if (!state_.config.contains("config") || !state_.config["config"].is_object())
        state_.config["config"] = json::object();
      if (!state_.config.contains("history") || !state_.config["history"].is_array())
        state_.config["history"] = json::array();
      // The image's own triggers ran as instructions of this stage; the new image has none.
      state_.container_config().erase("OnBuild");
      std::vector<Digest> diff_ids = image->config.diff_ids();
      for (size_t l = 0; l < image->manifest.layers.size() && l < diff_ids.size(); ++l) {
        state_.layers.push_back(Layer{image->manifest.layers[l], diff_ids[l]});
      }
      // The store keeps one platform per name, so FROM --platform cannot pick another: say so.
      std::string arch = image->config.architecture();
      if (!arch.empty() && arch != state_.platform.architecture) {
        s_.progress.note(vertex,
                         fmt::format("WARNING: the image's platform ({}/{}) does not match the {} ({})",
                                     image->config.os(), arch,
                                     stage_.platform.empty() ? "build's" : "one FROM --platform asks for",
                                     state_.platform.to_string()));
      }
      s_.progress.cached(vertex);
      for (const auto& entry : state_.config["history"]) {
        if (entry.contains("created") && entry["created"].is_string())
          last_created_ = entry["created"].get<std::string>();
      }
    }
    json& env = state_.container_config()["Env"];
    if (!env_get(env, "PATH")) env_set(env, "PATH", kDefaultPath);
    if (!stage_.base_stage) state_.args.clear();
  }

  // FROM --platform after expansion (the parser has checked its form), or the build's platform.
  parser::Platform stage_platform() const {
    return stage_.platform.empty() ? s_.target_platform : parser::parse_platform(stage_.platform);
  }

  // BuildKit's image for FROM scratch: the platform, the default PATH, WorkingDir "/".
  json empty_image_config() const {
    json config = {
        {"architecture", state_.platform.architecture},
        {"os", state_.platform.os},
        {"config", {{"Env", json::array({std::string("PATH=") + kDefaultPath})}, {"WorkingDir", "/"}}},
        {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
        {"history", json::array()}};
    if (!state_.platform.variant.empty()) config["variant"] = state_.platform.variant;
    return config;
  }

  // FROM a --build-context directory: its files as the stage's one layer.
  void start_from_directory(const ContextSource& source) {
    state_.config = empty_image_config();
    CopyOptions options;
    options.sources = {"."};
    options.dest = "/";
    options.dest_is_dir = true;
    options.source_date_epoch = s_.epoch;
    CopySelection selection = select_sources(*source.tree, options);
    CacheKey key("context-dir");
    key.add("selection",
            selection_digest(*source.tree, selection, source.checksums.get(), s_.job_count).str());
    int vertex = s_.progress.start(fmt::format("[context {}] load from client", stage_.base));
    fs_step(vertex, key, [&](const std::string& upper, const SourceTree& lower) {
      copy_into(*source.tree, selection, options, lower, upper);
    });
  }

  // ---- history
  void add_history(const std::string& created_by, bool empty_layer, const std::string& created) {
    json entry = {{"created", created}, {"created_by", created_by}, {"comment", kHistoryComment}};
    if (empty_layer) entry["empty_layer"] = true;
    state_.config["history"].push_back(std::move(entry));
  }
  // A config-only instruction's entry: made when the image's files last changed, so that a rebuild
  // from the cache gives the same image.
  void config_history(const std::string& created_by) {
    add_history(created_by, true,
                s_.epoch ? s_.now_created() : (last_created_.empty() ? s_.now_created() : last_created_));
  }

  // ---- dispatch
  void dispatch(size_t i) {
    const Instruction& ins = s_.file.instructions[i];
    static const parser::Expanded kNone;
    const parser::Expanded& exp = s_.graph.expanded[i] ? *s_.graph.expanded[i] : kNone;
    json& config = state_.container_config();
    switch (ins.keyword) {
      case Keyword::kEnv: {
        std::string message = "ENV";
        for (const auto& pair : exp.pairs) {
          env_set(config["Env"], pair.key, pair.value.value_or(""));
          message += " " + pair.key + "=" + pair.value.value_or("");
        }
        config_history(message);
        break;
      }
      case Keyword::kArg: {
        std::string message = "ARG";
        for (const auto& pair : exp.pairs) {
          auto it = std::find_if(state_.args.begin(), state_.args.end(),
                                 [&](const auto& a) { return a.first == pair.key; });
          if (it != state_.args.end()) {
            it->second = pair.value;
          } else {
            state_.args.emplace_back(pair.key, pair.value);
          }
          message += " " + pair.key + (pair.value ? "=" + *pair.value : "");
        }
        config_history(message);
        break;
      }
      case Keyword::kLabel: {
        std::string message = "LABEL";
        if (!config.contains("Labels") || !config["Labels"].is_object()) config["Labels"] = json::object();
        for (const auto& pair : exp.pairs) {
          config["Labels"][pair.key] = pair.value.value_or("");
          message += " " + pair.key + "=" + pair.value.value_or("");
        }
        config_history(message);
        break;
      }
      case Keyword::kMaintainer: {
        // Docker substitutes no variables in MAINTAINER.
        std::string who = ins.arguments.empty() ? "" : ins.arguments[0];
        state_.config["author"] = who;
        config_history("MAINTAINER " + who);
        break;
      }
      case Keyword::kUser: {
        std::string user = exp.arguments.empty() ? "" : exp.arguments[0];
        config["User"] = user;
        config_history("USER " + user);
        break;
      }
      case Keyword::kExpose: {
        if (!config.contains("ExposedPorts") || !config["ExposedPorts"].is_object())
          config["ExposedPorts"] = json::object();
        std::vector<std::string> ports;
        for (const std::string& spec : exp.arguments) {
          for (std::string& port : expand_port_spec(spec)) {
            config["ExposedPorts"][port] = json::object();
            ports.push_back(std::move(port));
          }
        }
        config_history("EXPOSE " + join_words(ports));
        break;
      }
      case Keyword::kVolume: {
        if (!config.contains("Volumes") || !config["Volumes"].is_object()) config["Volumes"] = json::object();
        std::vector<std::string> volumes =
            ins.form == parser::ArgumentForm::kExec ? ins.arguments : exp.arguments;
        for (const std::string& volume : volumes) {
          if (volume.empty()) throw UsageError("VOLUME specified can not be an empty string");
          config["Volumes"][volume] = json::object();
        }
        config_history("VOLUME " + go_list(volumes));
        break;
      }
      case Keyword::kStopsignal: {
        std::string signal = exp.arguments.empty() ? "" : exp.arguments[0];
        if (!valid_signal(signal)) throw UsageError(fmt::format("invalid signal: {}", signal));
        config["StopSignal"] = signal;
        config_history("STOPSIGNAL " + signal);
        break;
      }
      case Keyword::kShell: {
        config["Shell"] = ins.arguments;
        config_history("SHELL " + go_list(ins.arguments));
        break;
      }
      case Keyword::kCmd: {
        std::vector<std::string> args = command_args(ins);
        config["Cmd"] = args;
        config["ArgsEscaped"] = true;
        cmd_set_ = true;
        config_history("CMD " + go_quote_list(args));
        break;
      }
      case Keyword::kEntrypoint: {
        std::vector<std::string> args = command_args(ins);
        config["Entrypoint"] = args;
        // An ENTRYPOINT drops the Cmd it inherited; one set in this stage stays.
        if (!cmd_set_) config["Cmd"] = nullptr;
        config_history("ENTRYPOINT " + go_quote_list(args));
        break;
      }
      case Keyword::kHealthcheck:
        dispatch_healthcheck(ins);
        break;
      case Keyword::kOnbuild: {
        std::string trigger = ins.original;
        size_t space = trigger.find_first_of(" \t");
        trigger = space == std::string::npos ? "" : trigger.substr(trigger.find_first_not_of(" \t", space));
        if (!config.contains("OnBuild") || !config["OnBuild"].is_array()) config["OnBuild"] = json::array();
        config["OnBuild"].push_back(trigger);
        break;
      }
      case Keyword::kWorkdir:
        dispatch_workdir(ins, exp);
        break;
      case Keyword::kRun:
        dispatch_run(i, ins);
        break;
      case Keyword::kCopy:
      case Keyword::kAdd:
        dispatch_copy(i, ins, exp);
        break;
      case Keyword::kFrom:
        break;
    }
  }

  static std::string join_words(const std::vector<std::string>& words) {
    std::string out;
    for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
  }

  // EXPOSE's forms: 80, 80/udp, 8000-8002/tcp (a range opens every port in it).
  static std::vector<std::string> expand_port_spec(const std::string& spec) {
    std::string ports = spec;
    std::string proto = "tcp";
    if (size_t slash = spec.find('/'); slash != std::string::npos) {
      ports = spec.substr(0, slash);
      proto = spec.substr(slash + 1);
      std::transform(proto.begin(), proto.end(), proto.begin(),
                     [](unsigned char c) { return std::tolower(c); });
    }
    if (proto != "tcp" && proto != "udp" && proto != "sctp")
      throw UsageError(fmt::format("invalid proto: {}", proto));
    auto number = [&](const std::string& text) {
      if (text.empty() ||
          !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          text.size() > 5 || std::stoul(text) > 65535) {
        throw UsageError(fmt::format("invalid containerPort: {}", spec));
      }
      return std::stoul(text);
    };
    std::vector<std::string> out;
    size_t dash = ports.find('-');
    if (dash == std::string::npos) {
      out.push_back(fmt::format("{}/{}", number(ports), proto));
    } else {
      unsigned long first = number(ports.substr(0, dash)), last = number(ports.substr(dash + 1));
      if (last < first) throw UsageError(fmt::format("invalid range specified for port: {}", spec));
      for (unsigned long p = first; p <= last; ++p) out.push_back(fmt::format("{}/{}", p, proto));
    }
    return out;
  }

  // CMD, ENTRYPOINT and the like: exec form as written, shell form wrapped in the stage's SHELL.
  std::vector<std::string> command_args(const Instruction& ins) {
    if (ins.form == parser::ArgumentForm::kExec) return ins.arguments;
    if (ins.form == parser::ArgumentForm::kNone) return {};
    std::vector<std::string> args = shell();
    args.push_back(ins.arguments.empty() ? "" : ins.arguments[0]);
    return args;
  }

  std::vector<std::string> shell() {
    std::vector<std::string> configured =
        string_list(state_.container_config().value("Shell", json::array()));
    if (!configured.empty()) return configured;
    return {"/bin/sh", "-c"};
  }

  void dispatch_healthcheck(const Instruction& ins) {
    json check;
    std::string kind = ins.healthcheck_kind;
    std::transform(kind.begin(), kind.end(), kind.begin(), [](unsigned char c) { return std::toupper(c); });
    std::vector<std::string> test;
    if (kind == "NONE") {
      test = {"NONE"};
    } else if (ins.form == parser::ArgumentForm::kExec) {
      test = {"CMD"};
      test.insert(test.end(), ins.arguments.begin(), ins.arguments.end());
    } else {
      test = {"CMD-SHELL", ins.arguments.empty() ? "" : ins.arguments[0]};
    }
    check["Test"] = test;
    std::chrono::nanoseconds interval{0}, timeout{0}, start_period{0}, start_interval{0};
    int64_t retries = 0;
    for (const auto& flag : ins.flags) {
      std::string_view name = flag.name();
      std::string value(flag.value().value_or(""));
      if (name == "retries") {
        retries = value.empty() ? 0 : std::stoll(value);
        continue;
      }
      std::chrono::nanoseconds d = value.empty()
                                       ? std::chrono::nanoseconds{0}
                                       : parser::parse_duration(value).value_or(std::chrono::nanoseconds{0});
      if (name == "interval") interval = d;
      if (name == "timeout") timeout = d;
      if (name == "start-period") start_period = d;
      if (name == "start-interval") start_interval = d;
    }
    if (kind != "NONE") {
      if (interval.count()) check["Interval"] = interval.count();
      if (timeout.count()) check["Timeout"] = timeout.count();
      if (start_period.count()) check["StartPeriod"] = start_period.count();
      if (start_interval.count()) check["StartInterval"] = start_interval.count();
      if (retries) check["Retries"] = retries;
    }
    state_.container_config()["Healthcheck"] = check;
    std::string quoted;
    for (size_t t = 0; t < test.size(); ++t) quoted += (t ? " " : "") + test[t];
    config_history(fmt::format(
        "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}", quoted,
        go_duration(interval), go_duration(timeout), go_duration(start_period), go_duration(start_interval),
        retries));
  }

  // ---- steps that change files

  // The stage's root as a tree, made when a step first asks for it: a RUN needs none (the sandbox
  // mounts the layers), and making one opens every layer's directory.
  class LazyLower {
   public:
    explicit LazyLower(StageRunner& runner) : runner_(runner) {}
    const SourceTree& get() const {
      if (!tree_) tree_ = runner_.lower_tree();
      return *tree_;
    }
    operator const SourceTree&() const { return get(); }  // NOLINT: implicit, for the copy steps

   private:
    StageRunner& runner_;
    mutable std::shared_ptr<SourceTree> tree_;
  };

  // The stage's root as it is now, as a tree (its layers unpacked on demand).
  std::shared_ptr<SourceTree> lower_tree() {
    std::vector<std::string> dirs = s_.snapshots(state_);
    std::reverse(dirs.begin(), dirs.end());
    return SourceTree::layers(dirs);
  }

  // Runs `make` into a fresh upper directory unless the cache knows `key`; the result becomes the
  // stage's next layer (none when nothing changed) and a history entry `created_by` comes later.
  // Returns whether a layer was added.
  template <typename Make>
  bool fs_step(int vertex, CacheKey& key, Make&& make, bool independent_of_parent = false,
               const FileWalk& files = {}) {
    // What every step's result depends on besides its own inputs; COPY --link's layer does not
    // depend on what it lands on.
    if (!independent_of_parent) key.add("parent", state_.chain_id() ? state_.chain_id()->str() : "");
    Digest digest = finish_key(key);
    ++step_ordinal_;
    bool allowed = s_.cache_allowed(index_);
    std::optional<json> record;
    // Every record used or made is noted for --cache-to.
    auto use = [&](const json& r) {
      s_.note_step_record(index_, digest.hex(), r);
      return apply_record(r);
    };
    if (allowed || s_.produced_here(digest.hex())) record = s_.store.get_cache_record(digest.hex());
    if (!record && allowed && s_.remote_cache)
      record = s_.remote_cache->fetch(digest.hex(), s_.progress, vertex);
    if (record) {
      s_.progress.cached(vertex);
      return use(*record);
    }
    // Another stage may be running this very step: wait for its record rather than run it twice.
    while (!s_.claim_step(digest.hex())) {
      s_.check_canceled();
      if (s_.produced_here(digest.hex())) record = s_.store.get_cache_record(digest.hex());
      if (record) {
        s_.progress.cached(vertex);
        return use(*record);
      }
    }
    struct Claim {
      BuildSession& session;
      std::string key;
      bool produced = false;
      ~Claim() { session.finish_step(key, produced); }
    } claim{s_, digest.hex()};
    // It may have finished between the look-up above and the claim.
    if (s_.produced_here(digest.hex())) record = s_.store.get_cache_record(digest.hex());
    if (record) {
      s_.progress.cached(vertex);
      return use(*record);
    }
    // Why it missed: against what this step of this Dockerfile had when it was last built.
    json inputs = key.inputs();
    std::string lineage = lineage_path();
    std::string lineage_files = lineage.substr(0, lineage.size() - 5) + ".files";
    if (!allowed) {
      s_.progress.note(vertex, fmt::format("cache miss: {} — {}", short_name(vertex),
                                           s_.request.no_cache ? "--no-cache" : "--no-cache-filter"));
    } else if (path_exists(lineage)) {
      try {
        json before = json::parse(read_file_capped(lineage, 16 << 20, "build cache lineage"));
        std::vector<std::string> arg_names;
        for (const auto& [name, value] : state_.args) arg_names.push_back(name);
        std::optional<FileChanges> changes;
        if (files) changes = compare_files(lineage_files, files);
        s_.progress.note(vertex,
                         fmt::format("cache miss: {} — {}", short_name(vertex),
                                     explain_miss(before, inputs, arg_names, changes ? &*changes : nullptr)));
      } catch (const std::exception&) {
        // An unreadable record only costs the explanation.
      }
    }
    s_.check_canceled();
    // A job slot while the step runs and its layer is written (--jobs).
    s_.jobs.acquire();
    struct Slot {
      BuildSession& session;
      ~Slot() { session.jobs.release(); }
    } slot{s_};
    s_.check_canceled();
    TempDir work(s_.store.tmp_dir(), "step-");
    std::string upper = work.path() + "/upper";
    make_dirs(upper, 0755);
    LazyLower lower(*this);
    make(upper, lower);
    s_.check_canceled();
    json data = {{"created", s_.now_created()}};
    std::vector<Digest> blobs, chains;
    Fd upper_fd = open_or_throw(upper, O_RDONLY | O_DIRECTORY);
    if (list_dir_at(upper_fd.get(), upper).empty()) {
      data["layer"] = nullptr;
    } else {
      TarWriteOptions tar_options;
      tar_options.source_date_epoch = s_.epoch;
      NewLayer layer = write_layer_from_dir(s_.store, upper_fd.get(), s_.request.compression, tar_options);
      upper_fd.reset();
      layer.blob->publish();
      const Digest& blob = *layer.blob->digest();
      s_.store.record_layer(blob, LayerInfo{layer.diff_id, layer.uncompressed_size});
      std::vector<Digest> diff_ids = state_.diff_ids();
      diff_ids.push_back(layer.diff_id);
      Digest chain = chain_ids(diff_ids).back();
      // The upper directory is the new layer's snapshot as it stands: nothing is unpacked again.
      s_.store.adopt_snapshot(chain, upper, blob);
      data["layer"] = {{"digest", blob.str()},
                       {"size", layer.blob->size()},
                       {"media_type", std::string(layer_media_type(layer.compression))},
                       {"diff_id", layer.diff_id.str()}};
      blobs.push_back(blob);
      chains.push_back(chain);
    }
    s_.store.put_cache_record(digest.hex(), data, blobs, chains);
    claim.produced = true;
    make_dirs(s_.store.root() + "/cache/lineage", 0700);
    write_file_atomic(lineage, inputs.dump(), Durability::Volatile);
    if (files) {
      save_files(lineage_files, files);
    } else {
      ::unlink(lineage_files.c_str());
    }
    s_.progress.done(vertex);
    return use(data);
  }

  // Where this step's inputs are remembered between builds: by the Dockerfile and context, the
  // stage and the step's place in it.
  std::string lineage_path() const {
    std::string identity = fmt::format("{}\n{}\n{}", s_.lineage_scope, stage_.display_name(), step_ordinal_);
    return fmt::format("{}/cache/lineage/{}.json", s_.store.root(), sha256_of(identity).hex().substr(0, 32));
  }

  // The vertex's instruction without BuildKit's "[stage 2/7] " prefix.
  std::string short_name(int vertex) {
    std::string name = s_.progress.name(vertex);
    if (name.starts_with("[")) {
      size_t close = name.find("] ");
      if (close != std::string::npos) name = name.substr(close + 2);
    }
    return name;
  }

  bool apply_record(const json& record) {
    last_created_ = record.value("created", s_.now_created());
    if (s_.epoch) last_created_ = s_.now_created();
    const json& layer = record["layer"];
    if (layer.is_null()) return false;
    Descriptor blob{layer.at("media_type").get<std::string>(),
                    Digest::parse_or_throw(layer.at("digest").get<std::string>()),
                    layer.at("size").get<int64_t>(),
                    {},
                    std::nullopt};
    state_.layers.push_back(Layer{blob, Digest::parse_or_throw(layer.at("diff_id").get<std::string>())});
    return true;
  }

  Digest finish_key(CacheKey& key) {
    key.add("platform", state_.platform.to_string());
    key.add("compression", std::string(compression_name(s_.request.compression)));
    key.add("epoch", s_.epoch ? std::to_string(*s_.epoch) : "");
    return key.digest();
  }

  // The variables in scope for Docker's word processing: the stage's ENV, then its ARGs with a
  // value (ENV wins over an ARG of the same name).
  parser::VariableLookup variables() const {
    json env = state_.config.contains("config") ? state_.config["config"].value("Env", json::array())
                                                : json::array();
    return [this, env = std::move(env)](std::string_view name) -> std::optional<std::string> {
      if (auto v = env_get(env, name)) return v;
      for (const auto& [key, value] : state_.args) {
        if (key == name && value) return value;
      }
      return std::nullopt;
    };
  }

  // The instruction as BuildKit names its vertex: the keyword in capitals, variables of the stage's
  // environment substituted (unset ones left as written, quotes kept).
  std::string display(const Instruction& ins) {
    std::string text = ins.original;
    size_t space = text.find_first_of(" \t");
    std::string keyword = text.substr(0, space);
    std::transform(keyword.begin(), keyword.end(), keyword.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    text = keyword + (space == std::string::npos ? "" : text.substr(space));
    parser::ExpandOptions options;
    options.escape = s_.file.escape;
    options.raw_quotes = true;
    options.skip_unset = true;
    try {
      text = parser::expand_word(text, variables(), options);
    } catch (const parser::WordError&) {
      // Shown as written.
    }
    std::string name =
        s_.step_name(index_, (s_.onbuild_instructions.count(current_) ? "ONBUILD " : "") + text);
    return name;
  }

  // WORKDIR: the directory is made (with the stage's USER as owner) when it is missing.
  void dispatch_workdir(const Instruction& ins, const parser::Expanded& exp) {
    json& config = state_.container_config();
    std::string path = exp.arguments.empty() ? "" : exp.arguments[0];
    std::string current = config.value("WorkingDir", "");
    std::string joined = path.starts_with("/") ? path : (current.empty() ? "/" : current) + "/" + path;
    std::string wd = "/" + clean_relative(joined);
    config["WorkingDir"] = wd;
    if (wd == "/") {
      config_history("WORKDIR /");
      return;
    }
    int vertex = s_.progress.start(display(ins));
    std::string user = config.value("User", "");
    CacheKey key("workdir");
    key.add("path", wd);
    key.add("user", user);
    bool layer = fs_step(vertex, key, [&](const std::string& upper, const SourceTree& lower) {
      std::optional<std::string> resolved = lower.resolve(wd, true);
      std::string target = resolved.value_or(clean_relative(wd));
      auto existing = lower.lookup(target);
      if (existing && S_ISDIR(existing->st.st_mode)) return;
      std::pair<uid_t, gid_t> owner{0, 0};
      if (!user.empty()) owner = resolve_chown(lower, user, "WORKDIR");
      CopyOptions options;
      options.chown = owner;
      options.source_date_epoch = s_.epoch;
      CopySelection nothing;
      options.dest = "/" + target + "/";
      options.dest_is_dir = true;
      // An empty copy into the directory makes it, and its missing parents, as mkdir -p would.
      CopySelection::Item item;
      auto empty = SourceTree::layers({});
      item.source = "";
      item.directory = true;
      item.top = *empty->lookup("");
      item.top.st.st_mode = S_IFDIR | 0755;
      struct timespec now {};
      ::clock_gettime(CLOCK_REALTIME, &now);
      if (s_.epoch) now = {*s_.epoch, 0};
      item.top.st.st_mtim = now;
      item.top.st.st_uid = owner.first;
      item.top.st.st_gid = owner.second;
      nothing.items.push_back(item);
      copy_into(*empty, nothing, options, lower, upper);
    });
    add_history("WORKDIR " + wd, !layer, last_created_);
  }

  // ---- RUN
  struct RunPlan {
    std::vector<std::string> args;
    std::vector<runtime::StepMount> mounts;
    std::vector<std::string> env;
    std::vector<std::string> secret_env;  // env entries from secrets: never in a key or a history line
    std::vector<std::unique_ptr<FileLock>> locks;
    std::vector<std::string> temp_dirs;
  };

  void dispatch_run(size_t i, const Instruction& ins) {
    current_ = i;
    json& config = state_.container_config();
    std::vector<std::string> args;
    TempDir scratch(s_.store.tmp_dir(), "run-");
    std::vector<runtime::StepMount> mounts;
    std::string summary;  // BuildKit adds a heredoc's first line to the vertex name
    if (ins.form == parser::ArgumentForm::kExec) {
      args = ins.arguments;
    } else {
      std::string command = ins.arguments.empty() ? "" : ins.arguments[0];
      if (!ins.heredocs.empty()) {
        std::string trimmed = command;
        trimmed.erase(0, trimmed.find_first_not_of(" \t"));
        while (!trimmed.empty() && (trimmed.back() == ' ' || trimmed.back() == '\t')) trimmed.pop_back();
        const parser::Heredoc& first = ins.heredocs[0];
        std::string data = first.chomp ? chomp_heredoc(first.body) : first.body;
        if (ins.heredocs.size() == 1 && parser::is_heredoc_word(trimmed)) {
          if (data.starts_with("#!")) {
            // A script with its interpreter: run as a file, as BuildKit does under /dev/pipes.
            std::string file = scratch.path() + "/" + first.name;
            write_file_atomic(file, data, Durability::Volatile);
            ::chmod(file.c_str(), 0755);
            mounts.push_back({"bind", file, "/dev/pipes/" + first.name, {"rbind", "ro"}});
            args = {"/dev/pipes/" + first.name};
          } else {
            args = {data};
          }
          std::string summary_line = data;
          summary_line.erase(0, summary_line.find_first_not_of(" \t\r\n"));
          size_t newline = summary_line.find('\n');
          bool more = newline != std::string::npos &&
                      summary_line.find_first_not_of(" \t\r\n", newline) != std::string::npos;
          summary = " (" + summary_line.substr(0, newline) + (more ? "..." : "") + ")";
        } else {
          std::string script = command;
          for (const auto& heredoc : ins.heredocs) script += "\n" + heredoc.body + heredoc.name;
          args = {script};
        }
      } else {
        args = {command};
      }
      if (!(args.size() == 1 && args[0].starts_with("/dev/pipes/"))) {
        std::vector<std::string> wrapped = shell();
        wrapped.push_back(args.empty() ? "" : args[0]);
        args = std::move(wrapped);
      }
    }
    // The stages its mounts take files from first: the step shows as running only once it can.
    for (const parser::MountSpec& mount : s_.graph.mounts[i]) {
      if (!mount.from.empty()) {
        if (auto stage = stage_for(mount.from)) s_.stage_result(*stage);
      }
    }
    int vertex = s_.progress.start(display(ins) + summary);
    // The environment: the image's, the ARGs in scope that ENV does not override, the proxy build
    // args (which need no ARG).
    std::vector<std::string> env = string_list(config.value("Env", json::array()));
    auto has_key = [&](const std::string& key) {
      return std::any_of(env.begin(), env.end(),
                         [&](const std::string& e) { return e.compare(0, key.size() + 1, key + "=") == 0; });
    };
    for (const auto& [key, value] : state_.args) {
      if (value && !has_key(key)) env.push_back(key + "=" + *value);
    }
    for (const auto& [key, value] : s_.request.build_args) {
      static const char* const kProxy[] = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                           "FTP_PROXY",  "ftp_proxy",  "NO_PROXY",    "no_proxy",
                                           "ALL_PROXY",  "all_proxy"};
      if (std::find(std::begin(kProxy), std::end(kProxy), key) != std::end(kProxy) && !has_key(key)) {
        env.push_back(key + "=" + value);
      }
    }
    std::string network = s_.request.network == "default" ? "host" : s_.request.network;
    bool insecure = false;
    for (const auto& flag : ins.flags) {
      if (flag.name() == "network") network = std::string(flag.value().value_or("default"));
      if (flag.name() == "security") insecure = flag.value().value_or("") == "insecure";
    }
    if (network == "default") network = "host";
    if (network != "host" && network != "none") {
      throw UsageError(fmt::format("RUN --network={}: kiln supports default, host and none", network));
    }
    std::string user = config.value("User", "");
    std::string workdir = config.value("WorkingDir", "");
    if (workdir.empty()) workdir = "/";

    CacheKey key("run");
    key.add_list("args", args);
    key.add_list("env", env);
    key.add("user", user);
    key.add("workdir", workdir);
    key.add("network", network);
    key.add("security", insecure ? "insecure" : "sandbox");
    std::vector<std::string> secret_env;
    std::vector<std::unique_ptr<FileLock>> locks;
    for (const parser::MountSpec& mount : s_.graph.mounts[i]) {
      add_mount(mount, scratch, mounts, key, env, secret_env, locks, vertex);
    }
    if (!s_.cache_allowed(index_)) key.add("no-cache", "1");

    std::string history = "RUN " + run_command_string(args, env) + " # buildkit";
    bool layer = fs_step(vertex, key, [&](const std::string& upper, const LazyLower&) {
      run_process(vertex, ins, upper, args, env, secret_env, mounts, user, workdir, network == "host",
                  insecure);
    });
    add_history(history, !layer, last_created_);
  }

  // BuildKit's RUN history line: `|2 A=1 B=2 /bin/sh -c make` when ARGs are in scope.
  std::string run_command_string(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    std::vector<std::string> parts;
    for (const auto& [key, value] : state_.args) {
      std::string v = value.value_or("");
      for (const std::string& e : env) {
        if (e.compare(0, key.size() + 1, key + "=") == 0) v = e.substr(key.size() + 1);
      }
      parts.push_back(key + "=" + v);
    }
    std::string out;
    if (!parts.empty()) out = fmt::format("|{} ", parts.size()) + join_words(parts) + " ";
    return out + join_words(args);
  }

  void add_mount(const parser::MountSpec& spec, const TempDir& scratch,
                 std::vector<runtime::StepMount>& mounts, CacheKey& key, std::vector<std::string>& env,
                 std::vector<std::string>& secret_env, std::vector<std::unique_ptr<FileLock>>& locks,
                 int vertex);

  void run_process(int vertex, const Instruction& ins, const std::string& upper,
                   const std::vector<std::string>& args, const std::vector<std::string>& env,
                   const std::vector<std::string>& secret_env, const std::vector<runtime::StepMount>& mounts,
                   const std::string& user, const std::string& workdir, bool host_network, bool insecure) {
    std::vector<std::string> lowers = s_.snapshots(state_);
    std::string dir = upper.substr(0, upper.rfind('/'));
    runtime::StepSpec step;
    step.lowers = lowers;
    step.upper_dir = upper;
    step.work_dir = dir + "/work";
    make_dirs(step.work_dir, 0700);
    step.dir = dir + "/step";
    make_dirs(step.dir, 0700);
    step.args = args;
    step.env = env;
    step.env.insert(step.env.end(), secret_env.begin(), secret_env.end());
    step.user = user;
    step.workdir = workdir;
    step.hostname = std::string(kSandboxHostname);
    step.etc_files = {{"hosts", runtime::default_hosts_file(std::string(kSandboxHostname))},
                      {"resolv.conf", runtime::container_resolv_conf(host_network)}};
    step.host_network = host_network;
    step.mounts = mounts;
    if (insecure) {
      step.capabilities = runtime::resolve_capabilities(runtime::default_capabilities(), {"ALL"}, {}, false);
      step.privileged = true;
    } else {
      step.capabilities = runtime::default_capabilities();
      step.seccomp_profile = runtime::default_seccomp_profile();
    }
    step.seccomp_cache_dir = s_.store.root() + "/cache/seccomp";
    ProgressOutput output(s_.progress, vertex);
    step.output = &output;
    step.cancel_fd = s_.cancel_fd();
    runtime::StepExit exit =
        s_.request.isolation == Isolation::kChroot ? runtime::run_step_chroot(step) : runtime::run_step(step);
    if (exit.canceled) {
      s_.progress.error(vertex, "canceled");
      throw BuildCanceled("build canceled");
    }
    if (!exit.failure.empty()) s_.progress.output(vertex, exit.failure + "\n");
    if (exit.code != 0) {
      std::string message = fmt::format("process {} did not complete successfully: exit code: {}",
                                        go_quote(join_words(args)), exit.code);
      s_.progress.error(vertex, message);
      report_failure(vertex, ins);
      throw StepFailed(message, exit.code);
    }
  }

  // BuildKit's report of a failed step: its last output, then the Dockerfile around the line.
  void report_failure(int vertex, const Instruction& ins) {
    std::string out = "------\n > " + s_.progress.name(vertex) + ":\n";
    for (const std::string& line : s_.progress.last_lines(vertex, 10)) out += line + "\n";
    out += "------\n";
    out += fmt::format("{}:{}\n--------------------\n", s_.dockerfile_name, ins.start.line);
    int first = std::max(1, ins.start.line - 2);
    int last = std::min(s_.file.line_count(), ins.end_line + 2);
    int width = static_cast<int>(fmt::format("{}", last).size());
    for (int line = first; line <= last; ++line) {
      bool mark = line >= ins.start.line && line <= ins.end_line;
      out += fmt::format(" {:>{}} | {}{}\n", line, width, mark ? ">>> " : "    ", s_.file.line_text(line));
    }
    out += "--------------------\n";
    s_.progress.report(out);
  }

  // ---- COPY and ADD
  void dispatch_copy(size_t i, const Instruction& ins, const parser::Expanded& exp);

  // The stage a --from or a mount's from= names: an index, or a name of an earlier stage.
  std::optional<size_t> stage_for(const std::string& reference) {
    if (!reference.empty() &&
        std::all_of(reference.begin(), reference.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      size_t index = std::stoul(reference);
      if (index >= s_.graph.stages.size()) throw UsageError(fmt::format("invalid stage index {}", reference));
      return index;
    }
    std::string lowered = text_to_lower(reference);
    for (size_t s = s_.graph.stages.size(); s-- > 0;) {
      if (s_.graph.stages[s].name == lowered) return s;
    }
    return std::nullopt;
  }

  BuildSession& s_;
  size_t index_;
  const parser::Stage& stage_;
  ImageState state_;
  bool cmd_set_ = false;
  std::string last_created_;
  size_t current_ = 0;
  int step_ordinal_ = 0;
};

void StageRunner::add_mount(const parser::MountSpec& spec, const TempDir& scratch,
                            std::vector<runtime::StepMount>& mounts, CacheKey& key,
                            std::vector<std::string>& env, std::vector<std::string>& secret_env,
                            std::vector<std::unique_ptr<FileLock>>& locks, int vertex) {
  json& config = state_.container_config();
  std::string workdir = config.value("WorkingDir", "");
  if (workdir.empty()) workdir = "/";
  auto absolute = [&](const std::string& path) {
    if (path.empty()) return workdir;
    if (path.starts_with("/")) return "/" + clean_relative(path);
    return "/" + clean_relative(workdir + "/" + path);
  };
  static int ssh_count = 0;
  const std::string& type = spec.type;
  std::string id_for_key;
  if (type == "tmpfs") {
    std::string target = absolute(spec.target);
    std::vector<std::string> options = {"nosuid", "nodev"};
    if (spec.size) options.push_back(fmt::format("size={}", *spec.size));
    mounts.push_back({"tmpfs", "tmpfs", target, options});
    key.add("mount", fmt::format("tmpfs:{}:{}", target, spec.size.value_or(0)));
    return;
  }
  if (type == "secret") {
    std::string id = spec.id.empty() ? base_of(clean_relative(spec.target)) : spec.id;
    auto secret = std::find_if(s_.request.secrets.begin(), s_.request.secrets.end(),
                               [&](const SecretSpec& given) { return given.id == id; });
    std::optional<std::string> value;
    if (secret != s_.request.secrets.end()) {
      if (!secret->env.empty()) {
        if (const char* v = std::getenv(secret->env.c_str())) value = v;
      } else {
        try {
          value = read_file_capped(secret->src, 500 << 10, fmt::format("secret {}", id));
        } catch (const Error&) {
          value.reset();
        }
      }
    }
    key.add("mount", fmt::format("secret:{}:{}:{}:{}", id, spec.target, spec.env, spec.required));
    if (!value) {
      if (spec.required)
        throw Error(fmt::format("secret {}: not provided (--secret id={},src=FILE)", id, id));
      return;
    }
    if (!spec.env.empty()) secret_env.push_back(spec.env + "=" + *value);
    if (spec.env.empty() || !spec.target.empty()) {
      std::string target = spec.target.empty() ? "/run/secrets/" + id : absolute(spec.target);
      make_dirs(scratch.path() + "/secrets", 0700);
      std::string file = fmt::format("{}/secrets/{}", scratch.path(), mounts.size());
      write_file_atomic(file, *value, Durability::Volatile);
      ::chmod(file.c_str(), spec.mode.value_or(0400));
      if (::chown(file.c_str(), static_cast<uid_t>(spec.uid.value_or(0)),
                  static_cast<gid_t>(spec.gid.value_or(0))) != 0 &&
          errno != EPERM) {
        throw_errno(fmt::format("secret {}: set its owner", id));
      }
      mounts.push_back({"bind", file, target, {"rbind", "ro", "nosuid", "nodev", "noexec"}});
    }
    return;
  }
  if (type == "ssh") {
    std::string id = spec.id.empty() ? "default" : spec.id;
    auto agent = std::find_if(s_.request.ssh.begin(), s_.request.ssh.end(),
                              [&](const SshSpec& given) { return given.id == id; });
    key.add("mount", fmt::format("ssh:{}:{}:{}", id, spec.target, spec.required));
    if (agent == s_.request.ssh.end()) {
      if (spec.required) throw Error(fmt::format("ssh agent {}: not provided (--ssh {}=SOCKET)", id, id));
      return;
    }
    std::string target =
        spec.target.empty() ? fmt::format("/run/buildkit/ssh_agent.{}", ssh_count++) : absolute(spec.target);
    mounts.push_back({"bind", agent->socket, target, {"rbind"}});
    env.push_back("SSH_AUTH_SOCK=" + target);
    return;
  }
  if (type == "cache") {
    std::string target = absolute(spec.target);
    std::string id = spec.id.empty() ? target : spec.id;
    std::string dir = fmt::format("{}/cache/mounts/{}", s_.store.root(), sha256_of(id).hex().substr(0, 32));
    key.add("mount", fmt::format("cache:{}:{}:{}", id, target, spec.readonly));
    make_dirs(s_.store.root() + "/cache/mounts", 0700);
    std::string data = dir + "/data";
    if (!path_exists(data)) {
      TempDir fresh(s_.store.root() + "/cache/mounts", ".new-");
      make_dirs(fresh.path() + "/data", 0755);
      ::chmod((fresh.path() + "/data").c_str(), spec.mode.value_or(0755));
      if (::chown((fresh.path() + "/data").c_str(), static_cast<uid_t>(spec.uid.value_or(0)),
                  static_cast<gid_t>(spec.gid.value_or(0))) != 0 &&
          errno != EPERM) {
        throw_errno(fmt::format("cache mount {}: set its owner", id));
      }
      if (::rename(fresh.path().c_str(), dir.c_str()) == 0) fresh.release();
    }
    if (spec.sharing == "locked" || spec.sharing == "private") {
      std::string lock_path = dir + "/lock";
      if (spec.sharing == "locked") {
        locks.push_back(std::make_unique<FileLock>(lock_path, FileLock::Kind::Exclusive));
      } else if (auto lock = FileLock::try_acquire(lock_path, FileLock::Kind::Exclusive)) {
        locks.push_back(std::make_unique<FileLock>(std::move(*lock)));
      } else {
        // Private and in use: this step gets a cache of its own, thrown away after.
        data = scratch.path() + fmt::format("/cache-{}", mounts.size());
        make_dirs(data, spec.mode.value_or(0755));
      }
    }
    std::vector<std::string> options = {"rbind"};
    if (spec.readonly) options.push_back("ro");
    mounts.push_back({"bind", data, target, options});
    return;
  }
  if (type != "bind") throw UsageError(fmt::format("RUN --mount: unknown type `{}`", type));
  // A bind: from the context, a stage, an image or a named context; read-only unless rw, and then
  // what is written is thrown away.
  std::string target = absolute(spec.target);
  std::string source = clean_relative(spec.source);
  std::vector<std::string> layer_dirs;  // top first
  std::string host_path;
  if (spec.from.empty()) {
    if (!s_.context.tree) throw Error("RUN --mount=type=bind: the build has no context");
    std::optional<std::string> resolved = s_.context.tree->resolve(source, true);
    if (!resolved || !s_.context.tree->lookup(*resolved)) {
      throw NotFoundError(fmt::format("RUN --mount=type=bind: \"/{}\": not found in the context", source));
    }
    CopyOptions options;
    options.sources = {*resolved};
    options.dest = "/";
    options.dest_is_dir = true;
    CopySelection selection = select_sources(*s_.context.tree, options);
    key.add(
        "mount",
        fmt::format(
            "bind:context:{}:{}:{}", *resolved, target,
            selection_digest(*s_.context.tree, selection, s_.context.checksums.get(), s_.job_count).str()));
    host_path = s_.context.tree->host_dir() + (resolved->empty() ? "" : "/" + *resolved);
  } else {
    std::vector<Layer> layers;
    std::string identity;
    if (auto stage = stage_for(spec.from)) {
      const ImageState& state = s_.stage_result(*stage);
      layers = state.layers;
      identity = state.chain_id() ? state.chain_id()->str() : "empty";
    } else if (const ContextSource* named = named_context_for(s_, spec.from)) {
      std::optional<std::string> resolved = named->tree->resolve(source, true);
      host_path = named->tree->host_dir() + (resolved && !resolved->empty() ? "/" + *resolved : "");
      identity = "context:" + spec.from;
    } else if (const Image* image = find_base_image(s_.store, s_, s_.request, spec.from)) {
      std::vector<Digest> diff_ids = image->config.diff_ids();
      for (size_t l = 0; l < image->manifest.layers.size() && l < diff_ids.size(); ++l) {
        layers.push_back(Layer{image->manifest.layers[l], diff_ids[l]});
      }
      identity = image->id().str();
    } else {
      throw NotFoundError(fmt::format("RUN --mount from={}: no such stage or image", spec.from));
    }
    key.add("mount", fmt::format("bind:{}:{}:{}", identity, source, target));
    if (host_path.empty()) {
      std::vector<std::string> dirs = s_.snapshots(layers);
      std::reverse(dirs.begin(), dirs.end());
      auto tree = SourceTree::layers(dirs);
      std::optional<std::string> resolved = tree->resolve(source, true);
      std::optional<SourceTree::Entry> entry;
      if (resolved) entry = tree->lookup(*resolved);
      if (!entry)
        throw NotFoundError(
            fmt::format("RUN --mount=type=bind,from={}: \"/{}\": not found", spec.from, source));
      if (!S_ISDIR(entry->st.st_mode)) {
        host_path = dirs.at(entry->layer) + "/" + *resolved;
      } else {
        for (const std::string& dir : dirs) {
          std::string sub = dir + (resolved->empty() ? "" : "/" + *resolved);
          struct stat st {};
          if (::lstat(sub.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) layer_dirs.push_back(sub);
        }
        if (layer_dirs.size() == 1) {
          host_path = layer_dirs.front();
          layer_dirs.clear();
        }
      }
    }
  }
  if (!layer_dirs.empty() || spec.readonly == false) {
    // Several layers, or writes to throw away: an overlay inside the container.
    std::vector<std::string> lowers = layer_dirs.empty() ? std::vector<std::string>{host_path} : layer_dirs;
    std::string lowerdir;
    for (const std::string& dir : lowers) lowerdir += (lowerdir.empty() ? "" : ":") + dir;
    std::vector<std::string> options = {"lowerdir=" + lowerdir};
    if (!spec.readonly) {
      std::string up = fmt::format("{}/bind-{}", scratch.path(), mounts.size());
      make_dirs(up + "/upper", 0755);
      make_dirs(up + "/work", 0700);
      options.push_back("upperdir=" + up + "/upper");
      options.push_back("workdir=" + up + "/work");
    }
    struct stat st {};
    if (!layer_dirs.empty() || (::stat(host_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))) {
      if (lowers.size() == 1 && spec.readonly) {
        mounts.push_back({"bind", lowers.front(), target, {"rbind", "ro"}});
      } else {
        mounts.push_back({"overlay", "overlay", target, options});
      }
      return;
    }
  }
  std::vector<std::string> options = {"rbind"};
  if (spec.readonly) options.push_back("ro");
  mounts.push_back({"bind", host_path, target, options});
  (void)vertex;
}

void StageRunner::dispatch_copy(size_t i, const Instruction& ins, const parser::Expanded& exp) {
  current_ = i;
  bool add = ins.keyword == Keyword::kAdd;
  std::string instruction = add ? "ADD" : "COPY";
  std::string from, chown, chmod_text, checksum;
  bool link = false, parents = false;
  std::optional<bool> unpack;
  std::vector<std::string> excludes;
  for (const std::string& flag : exp.flags) {
    std::string name =
        flag.substr(2, flag.find('=') == std::string::npos ? std::string::npos : flag.find('=') - 2);
    std::string value = flag.find('=') == std::string::npos ? "" : flag.substr(flag.find('=') + 1);
    bool truth = flag.find('=') == std::string::npos || value == "true" || value == "1";
    if (name == "from") from = value;
    if (name == "chown") chown = value;
    if (name == "chmod") chmod_text = value;
    if (name == "link") link = truth;
    if (name == "parents") parents = truth;
    if (name == "exclude") excludes.push_back(value);
    if (name == "checksum") checksum = value;
    if (name == "unpack") unpack = truth;
  }
  std::vector<std::string> arguments = exp.arguments;
  if (arguments.size() < 2) throw UsageError(fmt::format("{} requires at least two arguments", instruction));
  std::string dest_written = arguments.back();
  arguments.pop_back();
  // The stage it copies from first: the step shows as running only once it can.
  if (!from.empty()) {
    if (auto stage = stage_for(from)) s_.stage_result(*stage);
  }
  int vertex = s_.progress.start(display(ins));

  json& config = state_.container_config();
  std::string workdir = config.value("WorkingDir", "");
  if (workdir.empty()) workdir = "/";
  CopyOptions options;
  options.instruction = instruction;
  // BuildKit links a copy (a layer of its own, merged) only without --chmod.
  link = link && chmod_text.empty();
  options.link = link;
  options.parents = parents;
  options.excludes = excludes;
  options.source_date_epoch = s_.epoch;
  options.unpack_archives = add && unpack.value_or(true);
  std::string dest = dest_written;
  if (dest.empty() || dest == ".") dest = "./";
  options.dest_is_dir = dest.ends_with("/");
  options.dest = "/" + clean_relative(dest.starts_with("/") ? dest : workdir + "/" + dest);
  if (!chmod_text.empty()) options.chmod = parse_chmod(chmod_text);

  // The sources: heredocs, files of the context or of another stage, image or named context.
  std::vector<std::string> paths;
  std::vector<std::string> urls;
  std::vector<std::string> sources_written;  // all but heredocs, in order: the history line's
  std::vector<const parser::Heredoc*> heredocs;
  for (const std::string& argument : arguments) {
    if (parser::is_heredoc_word(argument)) {
      std::string name = argument.substr(argument.find("<<") + 2);
      if (!name.empty() && name[0] == '-') name = name.substr(1);
      if (name.size() >= 2 && (name.front() == '"' || name.front() == '\''))
        name = name.substr(1, name.size() - 2);
      auto it = std::find_if(ins.heredocs.begin(), ins.heredocs.end(),
                             [&](const parser::Heredoc& h) { return h.name == name; });
      if (it != ins.heredocs.end()) {
        heredocs.push_back(&*it);
        continue;
      }
    }
    sources_written.push_back(argument);
    if (argument.starts_with("http://") || argument.starts_with("https://")) {
      if (!add) throw UsageError("source can't be a URL for COPY");
      urls.push_back(argument);
      continue;
    }
    paths.push_back(argument);
  }
  UrlSources url_sources(s_, urls, checksum, add, paths.size(), heredocs.size(), options);

  std::shared_ptr<SourceTree> tree;
  ChecksumCache* checksums = nullptr;
  CacheKey key(add ? "add" : "copy");
  std::string source_identity;
  if (from.empty()) {
    if (!paths.empty()) {
      if (!s_.context.tree)
        throw Error(fmt::format(
            "{} failed: the build has no context (the Dockerfile came from standard input)", instruction));
      tree = s_.context.tree;
      checksums = s_.context.checksums.get();
    }
  } else {
    options.keep_owners = true;
    if (auto stage = stage_for(from)) {
      const ImageState& state = s_.stage_result(*stage);
      std::vector<std::string> dirs = s_.snapshots(state);
      std::reverse(dirs.begin(), dirs.end());
      tree = SourceTree::layers(dirs);
      source_identity = "stage:" + (state.chain_id() ? state.chain_id()->str() : std::string("empty"));
    } else if (const ContextSource* named = named_context_for(s_, from)) {
      tree = named->tree;
      checksums = named->checksums.get();
      options.keep_owners = false;
    } else if (const Image* image = find_base_image(s_.store, s_, s_.request, from)) {
      std::vector<std::string> dirs = s_.store.snapshot_dirs(*image);
      std::reverse(dirs.begin(), dirs.end());
      tree = SourceTree::layers(dirs);
      source_identity = "image:" + image->id().str();
    } else {
      throw NotFoundError(
          fmt::format("{} --from={}: no such stage or image in the store", instruction, from));
    }
  }
  CopySelection selection;
  if (!paths.empty()) {
    options.sources = paths;
    // Several sources onto a destination without a trailing `/` are no error in BuildKit: they
    // are copied one after the other onto that path (copy_into does the same).
    selection = select_sources(*tree, options);
    key.add("sources", source_identity.empty()
                           ? selection_digest(*tree, selection, checksums, s_.job_count).str()
                           : source_identity);
    key.add_list("paths", paths);
  }
  // Heredoc sources: files made for the step.
  std::unique_ptr<TempDir> heredoc_dir;
  std::shared_ptr<SourceTree> heredoc_tree;
  CopySelection heredoc_selection;
  if (!heredocs.empty()) {
    heredoc_dir = std::make_unique<TempDir>(s_.store.tmp_dir(), "heredoc-");
    for (const parser::Heredoc* heredoc : heredocs) {
      std::string body = heredoc->chomp ? chomp_heredoc(heredoc->body) : heredoc->body;
      if (heredoc->expand) {
        parser::ExpandOptions expand;
        expand.escape = s_.file.escape;
        expand.raw_quotes = true;
        expand.raw_escapes = true;
        try {
          body = parser::expand_word(body, variables(), expand);
        } catch (const parser::WordError& error) {
          throw UsageError(fmt::format("{} heredoc {}: {}", instruction, heredoc->name, error.what()));
        }
      }
      std::string file = heredoc_dir->path() + "/" + base_of(clean_relative(heredoc->name));
      write_file_atomic(file, body, Durability::Volatile);
      ::chmod(file.c_str(), 0644);
      struct timespec times[2] = {{s_.epoch.value_or(0), 0}, {s_.epoch.value_or(0), 0}};
      ::utimensat(AT_FDCWD, file.c_str(), times, 0);
      key.add("heredoc", heredoc->name + "\n" + body);
    }
    heredoc_tree = SourceTree::directory(heredoc_dir->path());
    CopyOptions heredoc_options = options;
    heredoc_options.sources.clear();
    heredoc_options.parents = false;
    for (const parser::Heredoc* heredoc : heredocs)
      heredoc_options.sources.push_back(base_of(clean_relative(heredoc->name)));
    heredoc_selection = select_sources(*heredoc_tree, heredoc_options);
  }
  key.add("dest", options.dest + (options.dest_is_dir ? "/" : ""));
  key.add("chmod", chmod_text);
  key.add("link", link ? "1" : "");
  key.add("parents", parents ? "1" : "");
  key.add_list("exclude", excludes);
  key.add("unpack", options.unpack_archives ? "1" : "");
  std::string user_for_key;
  if (!chown.empty()) {
    options.chown = resolve_chown(*lower_tree(), chown, instruction);
    user_for_key = fmt::format("{}:{}", options.chown->first, options.chown->second);
  }
  key.add("chown", user_for_key);
  url_sources.add_to_key(key, unpack.value_or(false));
  if (!s_.cache_allowed(index_)) key.add("no-cache", "1");

  bool layer = fs_step(
      vertex, key,
      [&](const std::string& upper, const SourceTree& lower) {
        if (!selection.items.empty()) copy_into(*tree, selection, options, lower, upper);
        url_sources.copy_into_layer(options, unpack.value_or(false), lower, upper);
        if (!heredoc_selection.items.empty()) {
          CopyOptions heredoc_options = options;
          heredoc_options.keep_owners = false;
          heredoc_options.unpack_archives = false;
          heredoc_options.parents = false;
          copy_into(*heredoc_tree, heredoc_selection, heredoc_options, lower, upper);
        }
      },
      link,
      [&](const FileVisitor& visit) {
        // Per file, for explaining a miss: the content digest the key was made from.
        auto describe = [&](const SourceTree::Entry& entry) -> std::string {
          if (S_ISREG(entry.st.st_mode)) {
            if (checksums) {
              if (auto digest = checksums->lookup(entry.path, entry.st)) return digest->hex();
            }
            return fmt::format("file:{}:{}", entry.st.st_size, entry.st.st_mtim.tv_sec);
          }
          if (S_ISLNK(entry.st.st_mode)) return "link:" + tree->read_link(entry);
          return fmt::format("mode:{:o}", entry.st.st_mode);
        };
        for (const auto& item : selection.items) {
          if (!item.directory) visit(item.source, describe(item.top));
          for_each_entry(*tree, item, [&](const auto& entry) { visit(entry.path, describe(entry)); });
        }
      });
  std::string message = instruction;
  if (parents) message += " --parents";
  if (!chown.empty()) message += " --chown=" + chown;
  if (!chmod_text.empty()) message += " --chmod=" + chmod_text;
  for (const std::string& source : sources_written) message += " " + source;
  for (const parser::Heredoc* heredoc : heredocs) message += " <<" + heredoc->name;
  message += " " + dest_written + " # buildkit";
  add_history(message, !layer, last_created_);
}

}  // namespace

ImageState run_stage(BuildSession& session, size_t stage) {
  return StageRunner(session, stage).run();
}

}  // namespace kiln::builder
