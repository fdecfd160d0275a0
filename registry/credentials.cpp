#include "registry/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/io.h"
#include "registry/base64.h"

extern char** environ;

namespace kiln::registry {
namespace {

using nlohmann::ordered_json;

// Docker's key for Docker Hub (registry.IndexServer): what `docker login` writes and what its
// credential helpers are asked for.
constexpr std::string_view kHubKey = "https://index.docker.io/v1/";
constexpr uint64_t kMaxAuthFileBytes = 4 << 20;
constexpr size_t kMaxHelperAnswer = 1 << 20;
constexpr size_t kMaxHelperMessage = 200;
constexpr std::string_view kNotFoundMessage = "credentials not found in native keychain";

bool is_hub_host(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

std::string_view trim_space(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

struct SplitKey {
  bool had_scheme = false;
  std::string_view host;
  std::string_view path;  // without its leading and trailing `/`
};

SplitKey split_key(std::string_view key) {
  SplitKey out;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (key.starts_with(scheme)) {
      key.remove_prefix(scheme.size());
      out.had_scheme = true;
      break;
    }
  }
  size_t slash = key.find('/');
  out.host = key.substr(0, slash);
  if (slash != std::string_view::npos) {
    out.path = key.substr(slash + 1);
    while (out.path.ends_with('/')) out.path.remove_suffix(1);
  }
  return out;
}

// The form of an auth file key that is equal for every spelling of the same registry (or, with
// `scoped`, repository). A URL's path is an API path ("/v1/", "/v2/") and is dropped; a path
// without a scheme names a repository in podman's files (`scoped`) and is dropped in Docker's,
// whose ConvertToHostname keeps the host alone. Docker Hub's hosts all become Docker's key.
std::string normalize_key(std::string_view key, bool scoped) {
  SplitKey parts = split_key(key);
  bool hub = is_hub_host(parts.host);
  if (parts.had_scheme || !scoped || parts.path.empty())
    return hub ? std::string(kHubKey) : std::string(parts.host);
  return fmt::format("{}/{}", hub ? "docker.io" : parts.host, parts.path);
}

// The file parsed, or nullopt when it does not exist.
std::optional<ordered_json> load_json_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno(fmt::format("read `{}`", path));
  }
  std::string text = read_fd_capped(fd.get(), kMaxAuthFileBytes, fmt::format("`{}`", path));
  ordered_json doc;
  try {
    doc = ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // Not e.what(): nlohmann quotes the text it stopped at, which may be a secret.
    throw InvalidInputError(fmt::format("read `{}`: not valid JSON (at byte {})", path, e.byte));
  }
  if (!doc.is_object()) throw InvalidInputError(fmt::format("read `{}`: not a JSON object", path));
  return doc;
}

// The member `name` of the top-level object when it is an object; nullptr when absent or null.
const ordered_json* object_member(const ordered_json& doc, const char* name, const std::string& path) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return nullptr;
  if (!it->is_object())
    throw InvalidInputError(fmt::format("read `{}`: `{}` is not a JSON object", path, name));
  return &*it;
}

std::string string_field(const ordered_json& entry, const char* name, const std::string& where) {
  auto it = entry.find(name);
  if (it == entry.end() || it->is_null()) return {};
  if (!it->is_string()) throw InvalidInputError(fmt::format("{}: `{}` is not a string", where, name));
  return it->get<std::string>();
}

// The credential of one `auths` entry, read as Docker's configfile reads it: `auth` (base64 of
// user:password) over `username` and `password`, and `identitytoken`. An entry may hold nothing:
// Docker writes `{}` for a registry whose credentials a helper keeps.
Credential read_entry(const ordered_json& entry, const std::string& path, const std::string& key) {
  std::string where = fmt::format("read `{}`: auths `{}`", path, key);
  if (!entry.is_object()) throw InvalidInputError(fmt::format("{}: not a JSON object", where));
  Credential credential;
  credential.username = string_field(entry, "username", where);
  credential.password = string_field(entry, "password", where);
  credential.identity_token = string_field(entry, "identitytoken", where);
  std::string auth = string_field(entry, "auth", where);
  if (!auth.empty()) {
    std::optional<std::string> decoded = base64_decode(auth);
    if (!decoded) throw InvalidInputError(fmt::format("{}: `auth` is not valid base64", where));
    size_t colon = decoded->find(':');
    if (colon == std::string::npos || colon == 0)
      throw InvalidInputError(fmt::format("{}: `auth` does not hold `user:password`", where));
    credential.username = decoded->substr(0, colon);
    // Docker trims NULs from the password: some old tools padded it.
    std::string_view password = std::string_view(*decoded).substr(colon + 1);
    while (!password.empty() && password.front() == '\0') password.remove_prefix(1);
    while (!password.empty() && password.back() == '\0') password.remove_suffix(1);
    credential.password = std::string(password);
  }
  return credential;
}

// The `auths` key that holds the credentials for `target` (a registry, or with `scoped` a
// registry/repository): one of the exact spellings in `exact` first, in that order, else the first
// key (in file order) whose normalized form is the same.
std::optional<std::string> find_key(const ordered_json& auths, const std::vector<std::string>& exact,
                                    bool scoped) {
  for (const std::string& key : exact) {
    if (auths.contains(key)) return key;
  }
  std::string wanted = normalize_key(exact.front(), scoped);
  for (const auto& [key, value] : auths.items()) {
    if (normalize_key(key, scoped) == wanted) return key;
  }
  return std::nullopt;
}

// The spellings of a registry's own key, the preferred first.
std::vector<std::string> host_keys(std::string_view host) {
  if (is_hub_host(host))
    return {std::string(kHubKey), "docker.io", "index.docker.io", "registry-1.docker.io"};
  return {std::string(host)};
}

// The credential in an `auths` file, read as podman reads one: the longest repository prefix that
// has an entry, else the registry's entry. nullopt when there is no entry, or an empty one.
std::optional<Credential> lookup_auths(const ordered_json& doc, const std::string& path,
                                       std::string_view host, std::string_view repository, bool scoped) {
  const ordered_json* auths = object_member(doc, "auths", path);
  if (!auths) return std::nullopt;
  std::optional<std::string> key;
  if (scoped) {
    std::string_view prefix = repository;
    while (!key && !prefix.empty()) {
      std::string spelled = fmt::format("{}/{}", is_hub_host(host) ? "docker.io" : host, prefix);
      key = find_key(*auths, {spelled}, /*scoped=*/true);
      size_t slash = prefix.rfind('/');
      prefix = prefix.substr(0, slash == std::string_view::npos ? 0 : slash);
    }
  }
  if (!key) key = find_key(*auths, host_keys(host), scoped);
  if (!key) return std::nullopt;
  Credential credential = read_entry(auths->at(*key), path, *key);
  if (credential.empty()) return std::nullopt;
  return credential;
}

// --- Credential helpers ------------------------------------------------------------------------

// Go's exec.LookPath: the first file of that name in the list that is not a directory and has an
// execute bit. Empty entries (which Go reads as ".") are skipped: a helper is never taken from
// whatever directory kiln happens to run in.
std::optional<std::string> find_executable(const std::string& search_path, const std::string& name) {
  for (const std::string& dir : split_on(search_path, ':')) {
    if (dir.empty()) continue;
    std::string candidate = fmt::format("{}/{}", dir, name);
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) && (st.st_mode & 0111) != 0)
      return candidate;
  }
  return std::nullopt;
}

// A spawned child that is killed and reaped unless wait() reaped it first.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  void kill() { ::kill(pid_, SIGKILL); }
  // The wait status; -1 when it could not be had (SIGCHLD ignored elsewhere in the process).
  int wait() {
    int status = 0;
    pid_t got;
    while ((got = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return got < 0 ? -1 : status;
  }

 private:
  pid_t pid_;
};

class SpawnActions {
 public:
  SpawnActions() { ::posix_spawn_file_actions_init(&actions_); }
  ~SpawnActions() { ::posix_spawn_file_actions_destroy(&actions_); }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

class SpawnAttributes {
 public:
  SpawnAttributes() { ::posix_spawnattr_init(&attributes_); }
  ~SpawnAttributes() { ::posix_spawnattr_destroy(&attributes_); }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
  posix_spawnattr_t* get() { return &attributes_; }

 private:
  posix_spawnattr_t attributes_;
};

struct HelperRun {
  int status = -1;  // wait status
  bool timed_out = false;
  std::string out, err;
};

// Reads what `fd` has now into `into` (keeping at most `cap` bytes, dropping the rest); resets
// `fd` at its end. Returns false when more than `cap` bytes came.
bool drain(Fd& fd, std::string& into, size_t cap) {
  char buffer[16384];
  bool within = true;
  while (fd.valid()) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      fd.reset();
      break;
    }
    if (n == 0) {
      fd.reset();
      break;
    }
    size_t room = cap - std::min(cap, into.size());
    into.append(buffer, std::min(room, static_cast<size_t>(n)));
    if (static_cast<size_t>(n) > room) within = false;
  }
  return within;
}

// Runs `program get` with `input` on its standard input, without fork(): the process has threads,
// and posix_spawn (vfork and exec) copies none of their locks. The input is written into the pipe
// before the helper starts (it is far smaller than a pipe's buffer), so writing can neither block
// nor raise SIGPIPE; both outputs are read as they come, so the helper never blocks on a full pipe.
HelperRun run_helper(const std::string& program, const std::string& name, std::string_view input,
                     std::chrono::milliseconds timeout, const std::string& what) {
  // PIPE_BUF: the least a pipe holds, so the write completes with nobody reading yet.
  if (input.size() > PIPE_BUF) throw InvalidInputError(fmt::format("{}: the server name is too long", what));
  Pipe in = make_pipe(), out = make_pipe(), err = make_pipe();
  FdWriter(in.write.get(), "the credential helper's input").write(as_bytes(input));
  in.write.reset();

  SpawnActions actions;
  SpawnAttributes attributes;
  ::posix_spawn_file_actions_adddup2(actions.get(), in.read.get(), 0);
  ::posix_spawn_file_actions_adddup2(actions.get(), out.write.get(), 1);
  ::posix_spawn_file_actions_adddup2(actions.get(), err.write.get(), 2);
  // Descriptors another thread opened without O_CLOEXEC stay out of the helper.
  ::posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  sigset_t none, all;
  ::sigemptyset(&none);
  ::sigfillset(&all);
  ::posix_spawnattr_setsigmask(attributes.get(), &none);
  ::posix_spawnattr_setsigdefault(attributes.get(), &all);
  ::posix_spawnattr_setflags(attributes.get(), POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string argv0 = name;
  std::string verb = "get";
  char* argv[] = {argv0.data(), verb.data(), nullptr};
  pid_t pid = -1;
  if (int e = ::posix_spawn(&pid, program.c_str(), actions.get(), attributes.get(), argv, environ); e != 0)
    throw_errno(fmt::format("{}: run `{}`", what, program), e);
  ChildGuard child(pid);
  in.read.reset();
  out.write.reset();
  err.write.reset();
  for (Fd* fd : {&out.read, &err.read}) ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
  // The helper's end is seen on a pidfd as well as on the pipes: a process it left running may
  // keep them open. Without pidfds (Linux < 5.3) the pipes' end is waited for alone.
  Fd exited(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  HelperRun run;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool over_cap = false;
  while (out.read.valid() || err.read.valid() || exited.valid()) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      run.timed_out = true;
      child.kill();
      break;
    }
    pollfd fds[3] = {{out.read.valid() ? out.read.get() : -1, POLLIN, 0},
                     {err.read.valid() ? err.read.get() : -1, POLLIN, 0},
                     {exited.valid() ? exited.get() : -1, POLLIN, 0}};
    if (::poll(fds, 3, static_cast<int>(left.count())) < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("{}: wait for `{}`", what, name));
    }
    over_cap |= !drain(out.read, run.out, kMaxHelperAnswer);
    drain(err.read, run.err, kMaxHelperMessage * 4);
    if (over_cap) {
      child.kill();
      break;
    }
    // It ended: what it wrote is in the pipes and was drained above. A process it left running
    // may hold them open; that one's output is not waited for.
    if (fds[2].revents & POLLIN) break;
  }
  run.status = child.wait();
  if (over_cap)
    throw Error(fmt::format("{}: `{}` answered more than {} bytes", what, name, kMaxHelperAnswer));
  return run;
}

// The first line of a helper's complaint, cut short, for an error message. A helper prints its
// error where its answer would go; text that looks like an answer (JSON) is never shown, since it
// would carry the secret.
std::string helper_complaint(const HelperRun& run) {
  std::string_view text = trim_space(run.out);
  if (text.empty()) text = trim_space(run.err);
  if (text.empty() || text.front() == '{' || text.front() == '[') return {};
  text = text.substr(0, text.find('\n'));
  if (text.size() > kMaxHelperMessage) return fmt::format(": {}…", text.substr(0, kMaxHelperMessage));
  return fmt::format(": {}", trim_space(text));
}

// Asks `docker-credential-NAME` for the credentials of `server`, as Docker's credentials client
// does. nullopt when the helper is not installed or has none for it.
std::optional<Credential> ask_helper(const CredentialPaths& paths, const std::string& helper,
                                     const std::string& server, const std::string& origin) {
  std::string name = "docker-credential-" + helper;
  std::string what = fmt::format("get credentials for `{}` with `{}` ({})", server, name, origin);
  std::optional<std::string> program = find_executable(paths.helper_search_path, name);
  // Docker fails here; a config.json copied from another machine often names a helper this one
  // lacks ("desktop", "osxkeychain"), and the other sources may still have what is needed.
  if (!program) return std::nullopt;
  HelperRun run = run_helper(*program, name, server, paths.helper_timeout, what);
  if (run.timed_out)
    throw Error(fmt::format("{}: no answer within {} ms; stopped it", what, paths.helper_timeout.count()));
  if (run.status == -1) throw Error(fmt::format("{}: its exit status was lost", what));
  if (WIFSIGNALED(run.status))
    throw Error(fmt::format("{}: killed by signal {}", what, WTERMSIG(run.status)));
  if (WEXITSTATUS(run.status) != 0) {
    if (trim_space(run.out) == kNotFoundMessage) return std::nullopt;
    throw Error(fmt::format("{}: exit status {}{}", what, WEXITSTATUS(run.status), helper_complaint(run)));
  }
  nlohmann::json answer = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object()) throw Error(fmt::format("{}: the answer is not a JSON object", what));
  Credential credential;
  std::string username, secret;
  for (auto [field, into] : {std::pair{"Username", &username}, std::pair{"Secret", &secret}}) {
    auto it = answer.find(field);
    if (it == answer.end() || it->is_null()) continue;
    if (!it->is_string()) throw Error(fmt::format("{}: `{}` in the answer is not a string", what, field));
    *into = it->get<std::string>();
  }
  // Docker's tokenUsername: the secret is an identity token, not a password.
  if (username == "<token>") {
    credential.identity_token = std::move(secret);
  } else {
    credential.username = std::move(username);
    credential.password = std::move(secret);
  }
  if (credential.empty()) return std::nullopt;
  return credential;
}

std::optional<FoundCredential> from_docker_config(const CredentialPaths& paths, std::string_view host) {
  const std::string& path = paths.docker_config_file;
  if (path.empty()) return std::nullopt;
  std::optional<ordered_json> doc = load_json_file(path);
  if (!doc) return std::nullopt;
  // Docker's getConfiguredCredentialStore: the registry's own helper, else the default one.
  std::string helper, origin;
  if (const ordered_json* helpers = object_member(*doc, "credHelpers", path)) {
    for (const std::string& key : host_keys(host)) {
      auto it = helpers->find(key);
      if (it == helpers->end()) continue;
      if (!it->is_string())
        throw InvalidInputError(fmt::format("read `{}`: credHelpers `{}`: not a string", path, key));
      helper = it->get<std::string>();
      origin = "credHelpers";
      break;
    }
  }
  if (helper.empty()) {
    helper = string_field(*doc, "credsStore", fmt::format("read `{}`", path));
    origin = "credsStore";
  }
  if (!helper.empty()) {
    if (helper.find('/') != std::string::npos)
      throw InvalidInputError(fmt::format("read `{}`: {} `{}` is not a helper name", path, origin, helper));
    std::string server = is_hub_host(host) ? std::string(kHubKey) : std::string(host);
    std::string source = fmt::format("`{}` ({}: {})", path, origin, helper);
    if (auto credential = ask_helper(paths, helper, server, fmt::format("{} in `{}`", origin, path)))
      return FoundCredential{std::move(*credential), std::move(source)};
  }
  if (auto credential = lookup_auths(*doc, path, host, {}, /*scoped=*/false))
    return FoundCredential{std::move(*credential), fmt::format("`{}`", path)};
  return std::nullopt;
}

std::optional<FoundCredential> from_auth_file(const std::string& path, std::string_view host,
                                              std::string_view repository) {
  if (path.empty()) return std::nullopt;
  std::optional<ordered_json> doc = load_json_file(path);
  if (!doc) return std::nullopt;
  if (auto credential = lookup_auths(*doc, path, host, repository, /*scoped=*/true))
    return FoundCredential{std::move(*credential), fmt::format("`{}`", path)};
  return std::nullopt;
}

std::string getenv_string(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string home_directory() {
  std::string home = getenv_string("HOME");
  if (!home.empty()) return home;
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found && found->pw_dir)
    return found->pw_dir;
  return {};
}

// XDG base directories must be absolute; a relative one is ignored, as the specification says.
std::string xdg_directory(const char* variable, const std::string& home, const char* fallback) {
  std::string value = getenv_string(variable);
  if (value.starts_with('/')) return value;
  if (home.empty()) return {};
  return fmt::format("{}/{}", home, fallback);
}

std::string directory_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Writes `doc` over the kiln auth file, readable by its owner alone.
void write_auth_file(const std::string& path, const ordered_json& doc, const std::string& what) {
  std::string text;
  try {
    // Docker and podman indent theirs with tabs.
    text = doc.dump(1, '\t') + "\n";
  } catch (const nlohmann::json::type_error&) {
    throw UsageError(fmt::format("{}: not valid UTF-8", what));
  }
  make_dirs(directory_of(path), 0700);
  AtomicFile file(path, 0600);
  file.write(as_bytes(text));
  file.commit();
}

// Held from reading the auth file to writing it back: two logins at once each keep their entry.
FileLock lock_auth_file(const std::string& path) {
  return FileLock(path + ".lock", FileLock::Kind::Exclusive);
}

ordered_json& auths_for_update(ordered_json& doc, const std::string& path) {
  auto it = doc.find("auths");
  if (it == doc.end() || it->is_null()) return doc["auths"] = ordered_json::object();
  if (!it->is_object()) throw InvalidInputError(fmt::format("read `{}`: `auths` is not a JSON object", path));
  return *it;
}

// The keys of `auths` that name the same registry (or repository) as `key`.
std::vector<std::string> same_keys(const ordered_json& auths, const std::string& key) {
  std::string wanted = normalize_key(key, /*scoped=*/true);
  std::vector<std::string> out;
  for (const auto& [other, value] : auths.items()) {
    if (normalize_key(other, /*scoped=*/true) == wanted) out.push_back(other);
  }
  return out;
}

}  // namespace

CredentialPaths CredentialPaths::from_environment() {
  CredentialPaths paths;
  std::string home = home_directory();
  paths.kiln_auth_file = getenv_string("KILN_AUTH_FILE");
  if (paths.kiln_auth_file.empty()) {
    std::string config = xdg_directory("XDG_CONFIG_HOME", home, ".config");
    if (!config.empty()) paths.kiln_auth_file = config + "/kiln/auth.json";
  }
  std::string docker = getenv_string("DOCKER_CONFIG");
  if (!docker.empty()) {
    paths.docker_config_file = docker + "/config.json";
  } else if (!home.empty()) {
    paths.docker_config_file = home + "/.docker/config.json";
  }
  // containers/image's getPathToAuth, then its persistent file.
  std::string registry_auth_file = getenv_string("REGISTRY_AUTH_FILE");
  std::string runtime_dir = getenv_string("XDG_RUNTIME_DIR");
  if (!registry_auth_file.empty()) {
    paths.containers_auth_files.push_back(registry_auth_file);
  } else if (!runtime_dir.empty()) {
    paths.containers_auth_files.push_back(runtime_dir + "/containers/auth.json");
  } else {
    paths.containers_auth_files.push_back(fmt::format("/run/containers/{}/auth.json", ::getuid()));
  }
  std::string config = xdg_directory("XDG_CONFIG_HOME", home, ".config");
  if (!config.empty()) paths.containers_auth_files.push_back(config + "/containers/auth.json");
  paths.helper_search_path = getenv_string("PATH");
  // execvp's default when PATH is unset.
  if (paths.helper_search_path.empty() && !std::getenv("PATH")) paths.helper_search_path = "/bin:/usr/bin";
  return paths;
}

std::string auth_file_path() {
  return CredentialPaths::from_environment().kiln_auth_file;
}

std::optional<FoundCredential> find_credential(const CredentialPaths& paths, std::string_view registry_host,
                                               std::string_view repository) {
  // A host written as a URL ("https://myreg:5000/") is the host.
  std::string_view host = split_key(registry_host).host;
  while (repository.starts_with('/')) repository.remove_prefix(1);
  while (repository.ends_with('/')) repository.remove_suffix(1);
  if (auto found = from_auth_file(paths.kiln_auth_file, host, repository)) return found;
  if (auto found = from_docker_config(paths, host)) return found;
  for (const std::string& path : paths.containers_auth_files) {
    if (auto found = from_auth_file(path, host, repository)) return found;
  }
  return std::nullopt;
}

std::string credential_key(std::string_view server) {
  bool printable = !server.empty();
  for (char c : server)
    printable &= static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
  if (!printable || split_key(server).host.empty())
    throw UsageError(fmt::format("invalid registry name `{}`", server));
  return normalize_key(server, /*scoped=*/true);
}

void store_credential(const CredentialPaths& paths, std::string_view server, const Credential& credential) {
  std::string key = credential_key(server);
  std::string what = fmt::format("store credentials for `{}`", key);
  if (credential.username.find(':') != std::string::npos)
    throw UsageError(fmt::format("{}: the user name contains `:`", what));
  if (credential.username.empty() && credential.identity_token.empty())
    throw UsageError(fmt::format("{}: no user name", what));
  const std::string& path = paths.kiln_auth_file;
  if (path.empty()) throw Error(fmt::format("{}: no auth file (set KILN_AUTH_FILE or HOME)", what));
  make_dirs(directory_of(path), 0700);
  FileLock lock = lock_auth_file(path);
  ordered_json doc = load_json_file(path).value_or(ordered_json::object());
  ordered_json& auths = auths_for_update(doc, path);
  // The entry's other fields stay (a tool may keep its own there); the secret ones are replaced.
  ordered_json entry = ordered_json::object();
  if (auto it = auths.find(key); it != auths.end() && it->is_object()) entry = *it;
  for (const std::string& other : same_keys(auths, key)) {
    if (other != key) auths.erase(other);
  }
  for (const char* field : {"auth", "username", "password", "identitytoken"}) entry.erase(field);
  if (!credential.username.empty() || !credential.password.empty())
    entry["auth"] = base64_encode(credential.username + ":" + credential.password);
  if (!credential.identity_token.empty()) entry["identitytoken"] = credential.identity_token;
  auths[key] = std::move(entry);
  write_auth_file(path, doc, fmt::format("{} in `{}`", what, path));
}

bool remove_credential(const CredentialPaths& paths, std::string_view server) {
  std::string key = credential_key(server);
  const std::string& path = paths.kiln_auth_file;
  if (path.empty() || !path_exists(path)) return false;
  FileLock lock = lock_auth_file(path);
  std::optional<ordered_json> doc = load_json_file(path);
  if (!doc) return false;
  auto it = doc->find("auths");
  if (it == doc->end() || it->is_null()) return false;
  ordered_json& auths = auths_for_update(*doc, path);
  std::vector<std::string> keys = same_keys(auths, key);
  if (keys.empty()) return false;
  for (const std::string& other : keys) auths.erase(other);
  write_auth_file(path, *doc, fmt::format("remove credentials for `{}` from `{}`", key, path));
  return true;
}

}  // namespace kiln::registry
