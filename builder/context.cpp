#include "builder/context.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include "builder/dockerignore.h"
#include "builder/session.h"
#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/tar.h"

namespace kiln::builder {
namespace {

constexpr uint64_t kMaxDockerfileBytes = 16 << 20;

std::string real_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (!resolved) throw_errno(fmt::format("resolve `{}`", path));
  std::string out = resolved;
  ::free(resolved);
  return out;
}

bool is_git_url(const std::string& context) {
  if (context.starts_with("git@") || context.starts_with("git://") || context.starts_with("file://"))
    return true;
  if (context.starts_with("https://") || context.starts_with("http://")) {
    std::string path = context.substr(0, context.find('#'));
    return path.ends_with(".git") || context.find(".git#") != std::string::npos;
  }
  return false;
}

// Runs git with `args` in `dir`, its output kept for the error message.
void run_git(const std::vector<std::string>& args, const std::string& dir, const std::string& what) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("create a pipe");
  Fd read_end(out[0]), write_end(out[1]);
  std::vector<std::string> full = {"git"};
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  // No prompt for credentials: a build must not hang on a terminal. The environment is made here:
  // the child of a fork only makes system calls, whatever other threads held when it was made.
  std::vector<std::string> env_strings = {"GIT_TERMINAL_PROMPT=0"};
  for (char** e = environ; *e; ++e) {
    if (!std::string_view(*e).starts_with("GIT_TERMINAL_PROMPT=")) env_strings.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("run git");
  if (pid == 0) {
    ::dup2(write_end.get(), 1);
    ::dup2(write_end.get(), 2);
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execvpe("git", argv.data(), envp.data());
    ::_exit(127);
  }
  write_end.reset();
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = ::read(read_end.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (output.size() < 65536) output.append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!output.empty() && output.back() == '\n') output.pop_back();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) output = "git is not installed";
    throw Error(fmt::format("{}: {}", what, output));
  }
}

// A git context: URL#ref:subdir, fetched into a new directory without its .git (BuildKit keeps
// none either).
void clone_git(const std::string& context, const std::string& dir, std::string& subdir) {
  std::string url = context;
  std::string fragment;
  if (size_t hash = context.find('#'); hash != std::string::npos) {
    url = context.substr(0, hash);
    fragment = context.substr(hash + 1);
  }
  std::string ref = fragment.substr(0, fragment.find(':'));
  if (fragment.find(':') != std::string::npos) subdir = fragment.substr(fragment.find(':') + 1);
  std::string what = fmt::format("git context `{}`", context);
  run_git({"init", "-q"}, dir, what);
  run_git({"remote", "add", "origin", url}, dir, what);
  run_git({"fetch", "-q", "--depth", "1", "--no-tags", "origin", ref.empty() ? "HEAD" : ref}, dir, what);
  run_git({"checkout", "-q", "FETCH_HEAD"}, dir, what);
  remove_tree(dir + "/.git");
}

std::string read_all(int fd, const std::string& what) {
  std::string data;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("read {}", what));
    }
    if (n == 0) break;
    data.append(buffer, static_cast<size_t>(n));
    if (data.size() > (uint64_t{1} << 34)) throw InvalidInputError(fmt::format("{}: too large", what));
  }
  return data;
}

bool looks_like_archive(std::string_view data) {
  if (data.size() < 6) return false;
  Compression c =
      detect_compression(std::as_bytes(std::span(data.data(), std::min<size_t>(data.size(), 16))));
  if (c != Compression::None) return true;
  return data.size() >= 262 && data.substr(257, 5) == "ustar";
}

}  // namespace

bool text_equal_fold(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string text_to_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

LoadedContext load_context(const BuildRequest& request, const std::string& tmp_parent) {
  LoadedContext loaded;
  std::string stdin_data;
  bool stdin_read = false;
  auto read_stdin = [&]() -> const std::string& {
    if (!stdin_read) {
      stdin_data = read_all(request.stdin_fd, "standard input");
      stdin_read = true;
    }
    return stdin_data;
  };
  if (request.context == "-" && request.dockerfile == "-") {
    throw UsageError("invalid argument: can't use stdin for both build context and dockerfile");
  }
  std::string subdir;
  if (request.context == "-") {
    const std::string& data = read_stdin();
    if (looks_like_archive(data)) {
      loaded.owned = std::make_unique<TempDir>(tmp_parent, "context-");
      StringReader reader(data);
      auto tar = open_decompressed(reader, nullptr);
      Fd root = open_or_throw(loaded.owned->path(), O_RDONLY | O_DIRECTORY);
      try {
        extract_tar(*tar, root.get(), ExtractOptions{WhiteoutMode::Apply, false});
      } catch (...) {
        rethrow_with_context("build context from standard input");
      }
      loaded.dir = loaded.owned->path();
    } else {
      // `docker build - < Dockerfile`: the Dockerfile alone, no context.
      loaded.dockerfile_text = data;
      loaded.dockerfile_name = "Dockerfile";
    }
  } else if (is_git_url(request.context)) {
    loaded.owned = std::make_unique<TempDir>(tmp_parent, "git-");
    clone_git(request.context, loaded.owned->path(), subdir);
    loaded.dir = loaded.owned->path();
    if (!subdir.empty()) {
      std::string sub = loaded.dir + "/" + clean_relative(subdir);
      struct stat st {};
      if (::stat(sub.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        throw UsageError(
            fmt::format("git context `{}`: no directory `{}` in the repository", request.context, subdir));
      }
      loaded.dir = sub;
    }
  } else if (request.context.starts_with("http://") || request.context.starts_with("https://")) {
    throw UsageError(
        fmt::format("context `{}`: only git repositories are supported as remote contexts", request.context));
  } else {
    struct stat st {};
    if (::stat(request.context.c_str(), &st) != 0) {
      throw UsageError(fmt::format("unable to prepare context: path \"{}\" not found", request.context));
    }
    if (!S_ISDIR(st.st_mode)) {
      throw UsageError(fmt::format("unable to prepare context: \"{}\" is not a directory", request.context));
    }
    loaded.dir = real_path(request.context);
  }

  // The Dockerfile.
  std::string dockerfile_path;
  if (request.dockerfile == "-") {
    loaded.dockerfile_text = read_stdin();
    loaded.dockerfile_name = "Dockerfile";
  } else if (loaded.dockerfile_text.empty()) {
    if (request.dockerfile.empty()) {
      if (loaded.dir.empty()) throw UsageError("no Dockerfile: give one with -f");
      dockerfile_path = loaded.dir + "/Dockerfile";
    } else if (loaded.owned && !request.dockerfile.starts_with("/")) {
      // In a git or archive context, -f names a file of the context.
      dockerfile_path = loaded.dir + "/" + clean_relative(request.dockerfile);
    } else {
      dockerfile_path = request.dockerfile;
    }
    struct stat st {};
    if (::stat(dockerfile_path.c_str(), &st) != 0) {
      throw UsageError(
          fmt::format("unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                      "lstat {}: no such file or directory",
                      dockerfile_path));
    }
    loaded.dockerfile_text = read_file_capped(dockerfile_path, kMaxDockerfileBytes, "Dockerfile");
    loaded.dockerfile_name = base_of(dockerfile_path);
  }
  if (loaded.dockerfile_text.empty()) throw UsageError("the Dockerfile cannot be empty");

  // The .dockerignore: <Dockerfile>.dockerignore beside the Dockerfile wins over the context's.
  if (!loaded.dir.empty()) {
    if (auto ignore = find_ignore_file(loaded.dir, dockerfile_path)) {
      loaded.ignore_text = ignore->text;
      loaded.ignore_name = ignore->name;
    }
  }
  return loaded;
}

std::string checksum_cache_file(const Store& store, const std::string& dir) {
  return fmt::format("{}/cache/checksums/{}", store.root(), sha256_of(dir).hex().substr(0, 32));
}

std::string base_image_lookup(const BuildRequest& request, const std::string& name) {
  std::string lookup = name;
  for (const auto& [context_name, value] : request.build_contexts) {
    if (text_equal_fold(context_name, name) && value.starts_with("docker-image://")) {
      lookup = value.substr(std::string_view("docker-image://").size());
    }
  }
  return lookup;
}

std::string pulled_base_key(const std::string& lookup, const parser::Platform& platform) {
  return lookup + " " + platform.to_string();
}

const Image* find_base_image(Store& store, BuildSession& session, const BuildRequest& request,
                             const std::string& name, const parser::Platform* platform) {
  std::string lookup = base_image_lookup(request, name);
  std::lock_guard lock(session.bases_mutex);
  if (platform) {
    auto pulled = session.pulled_bases.find(pulled_base_key(lookup, *platform));
    if (pulled != session.pulled_bases.end()) return &pulled->second;
  }
  if (auto it = session.base_images.find(lookup); it != session.base_images.end()) return &it->second;
  if (session.missing_bases.count(lookup)) return nullptr;
  try {
    Image image = store.resolve(lookup);
    return &session.base_images.emplace(lookup, std::move(image)).first->second;
  } catch (const NotFoundError&) {
    session.missing_bases.insert(lookup);
    return nullptr;
  } catch (const InvalidInputError&) {
    session.missing_bases.insert(lookup);
    return nullptr;
  } catch (const UsageError&) {
    // Not a valid reference: not an image the store could have.
    session.missing_bases.insert(lookup);
    return nullptr;
  }
}

const ContextSource* named_context_for(BuildSession& session, const std::string& name) {
  auto it = session.named_contexts.find(text_to_lower(name));
  return it == session.named_contexts.end() ? nullptr : &it->second;
}

PathFilter make_ignore_filter(const LoadedContext& context) {
  if (context.ignore_name.empty()) return {};
  auto rules = std::make_shared<IgnoreRules>(IgnoreRules::parse(context.ignore_text, context.ignore_name));
  if (rules->empty()) return {};
  PathFilter filter;
  filter.excluded = [rules](std::string_view path) { return rules->excluded(path); };
  filter.may_include_below = [rules](std::string_view dir) { return rules->may_include_below(dir); };
  return filter;
}

}  // namespace kiln::builder
