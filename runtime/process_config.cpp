#include "runtime/process_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <map>

#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"

namespace kiln::runtime {
namespace {

// runc's limit: ids must fit a signed 32-bit int, for 32-bit systems' sake.
constexpr std::int64_t kMaxId = std::numeric_limits<std::int32_t>::max();
constexpr std::string_view kRangeError = "uids and gids must be in range 0-2147483647";
// /etc/passwd and /etc/group are read whole; a real one is a few KiB.
constexpr std::uint64_t kMaxUserFileBytes = 16u << 20;
constexpr std::uint64_t kMaxEnvFileBytes = 16u << 20;
constexpr std::string_view kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---- Small text helpers, with Go's semantics where Docker's behaviour depends on them. ----

// strings.Cut.
std::pair<std::string_view, std::optional<std::string_view>> cut(std::string_view s, char sep) {
  size_t at = s.find(sep);
  if (at == std::string_view::npos) return {s, std::nullopt};
  return {s.substr(0, at), s.substr(at + 1)};
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

std::string_view trim_left_space(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view trim_space(std::string_view s) {
  s = trim_left_space(s);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}

// bufio.ScanLines: lines end at "\n", a "\r" before it is dropped, a last line without "\n" counts.
std::vector<std::string_view> scan_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (;;) {
    size_t at = s.find(sep);
    parts.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return parts;
    s.remove_prefix(at + 1);
  }
}

// strconv.Atoi: an optional sign and decimal digits. Out of int64's range it is an error and the
// value saturates, which matters because runc keeps the value and drops the error.
struct GoInt {
  enum class Status { Ok, Syntax, Range } status = Status::Syntax;
  std::int64_t value = 0;
};

GoInt go_atoi(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return {};
  std::uint64_t magnitude = 0;
  bool overflow = false;
  const std::uint64_t limit = negative ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
  for (char c : s) {
    if (c < '0' || c > '9') return {};
    if (overflow) continue;
    std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
    if (magnitude > (limit - digit) / 10) {
      overflow = true;
      continue;
    }
    magnitude = magnitude * 10 + digit;
  }
  if (overflow) {
    return {GoInt::Status::Range,
            negative ? std::numeric_limits<std::int64_t>::min() : std::numeric_limits<std::int64_t>::max()};
  }
  std::int64_t value =
      negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
  return {GoInt::Status::Ok, value};
}

// utf8.Valid: well-formed UTF-8, no surrogates, nothing past U+10FFFF, no overlong forms.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t length = 0;
    std::uint32_t code = 0;
    std::uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      length = 2, code = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, code = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, code = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + length > s.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      unsigned char next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

// A passwd or group field read as runc reads numbers: whatever Atoi leaves, errors ignored.
std::int64_t lenient_id(std::string_view field) {
  return go_atoi(field).value;
}

bool in_id_range(std::int64_t id) {
  return id >= 0 && id <= kMaxId;
}

// ---- The image config's fields. ----

const nlohmann::json* config_field(const nlohmann::json& image_config, const char* key) {
  if (image_config.is_null()) return nullptr;
  if (!image_config.is_object()) throw InvalidInputError("image config: `config` is not an object");
  auto it = image_config.find(key);
  if (it == image_config.end() || it->is_null()) return nullptr;
  return &*it;
}

// An array of strings (Entrypoint, Cmd, Env); nullopt when absent or null.
std::optional<std::vector<std::string>> string_array(const nlohmann::json& image_config, const char* key) {
  const nlohmann::json* field = config_field(image_config, key);
  if (!field) return std::nullopt;
  if (!field->is_array()) throw InvalidInputError(fmt::format("image config: {} is not an array", key));
  std::vector<std::string> out;
  for (const nlohmann::json& item : *field) {
    if (!item.is_string()) throw InvalidInputError(fmt::format("image config: {} holds a non-string", key));
    const std::string& s = item.get_ref<const std::string&>();
    // execve takes C strings: a NUL would silently cut the argument short.
    if (s.find('\0') != std::string::npos) {
      throw InvalidInputError(fmt::format("image config: {} holds a NUL byte", key));
    }
    out.push_back(s);
  }
  return out;
}

// ---- /etc/passwd and /etc/group. ----

struct PasswdEntry {
  std::string_view name;
  std::int64_t uid = 0;
  std::int64_t gid = 0;
  std::string_view home;
};

struct GroupEntry {
  std::string_view name;
  std::int64_t gid = 0;
  std::vector<std::string_view> members;
};

// name:password:UID:GID:GECOS:directory:shell. As runc: lines trimmed, blank ones skipped, missing
// fields left empty or 0 (no comment syntax in passwd: a "#" line is an entry named "#...").
std::vector<PasswdEntry> parse_passwd(std::string_view text) {
  std::vector<PasswdEntry> entries;
  for (std::string_view raw : scan_lines(text)) {
    std::string_view line = trim_space(raw);
    if (line.empty()) continue;
    std::vector<std::string_view> fields = split(line, ':');
    PasswdEntry entry;
    entry.name = fields[0];
    if (fields.size() > 2) entry.uid = lenient_id(fields[2]);
    if (fields.size() > 3) entry.gid = lenient_id(fields[3]);
    if (fields.size() > 5) entry.home = fields[5];
    entries.push_back(entry);
  }
  return entries;
}

// group_name:password:GID:user_list. As runc: lines trimmed, blank and "#" lines skipped.
std::vector<GroupEntry> parse_group(std::string_view text) {
  std::vector<GroupEntry> entries;
  for (std::string_view raw : scan_lines(text)) {
    std::string_view line = trim_space(raw);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> fields = split(line, ':');
    GroupEntry entry;
    entry.name = fields[0];
    if (fields.size() > 2) entry.gid = lenient_id(fields[2]);
    if (fields.size() > 3 && !fields[3].empty()) entry.members = split(fields[3], ',');
    entries.push_back(std::move(entry));
  }
  return entries;
}

// The file at `relative` inside the root filesystem; nullopt when it does not exist (Docker treats
// a file it cannot open as absent).
std::optional<std::string> read_container_file(int rootfs_dirfd, const std::string& relative) {
  std::string shown = fmt::format("container file `/{}`", relative);
  // O_NONBLOCK: a FIFO planted there must not hang the open.
  Fd fd = open_in_root(rootfs_dirfd, relative, O_RDONLY | O_NONBLOCK);
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return std::nullopt;
    throw_errno(fmt::format("open {}", shown));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat {}", shown));
  if (!S_ISREG(st.st_mode)) throw InvalidInputError(fmt::format("{}: not a regular file", shown));
  return read_fd_capped(fd.get(), kMaxUserFileBytes, shown);
}

// A --user or --group-add part: a number (always an id, never a name) or a name.
struct IdArg {
  std::string_view name;
  std::int64_t id = 0;
  bool numeric = false;
};

IdArg parse_id_arg(std::string_view text) {
  GoInt n = go_atoi(text);
  if (n.status == GoInt::Status::Syntax) return {text, 0, false};
  if (n.status == GoInt::Status::Range || !in_id_range(n.value)) throw UsageError(std::string(kRangeError));
  return {text, n.value, true};
}

std::uint32_t checked_id(std::int64_t id, std::string_view file, std::string_view entry) {
  if (!in_id_range(id)) {
    throw InvalidInputError(fmt::format("{} entry `{}`: {}", file, entry, kRangeError));
  }
  return static_cast<std::uint32_t>(id);
}

bool has_key(const std::vector<std::string>& env, std::string_view key) {
  return std::any_of(env.begin(), env.end(),
                     [&](const std::string& entry) { return cut(entry, '=').first == key; });
}

}  // namespace

// ---- Command ------------------------------------------------------------------------------------

std::vector<std::string> combine_command(const nlohmann::json& image_config,
                                         const std::optional<std::string>& entrypoint_flag,
                                         const std::vector<std::string>& args) {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd = args;
  if (entrypoint_flag) {
    // The CLI sends --entrypoint "" as [""]; either way the image's Cmd is not used.
    entrypoint = {*entrypoint_flag};
  } else {
    if (cmd.empty()) cmd = string_array(image_config, "Cmd").value_or(std::vector<std::string>{});
    entrypoint = string_array(image_config, "Entrypoint").value_or(std::vector<std::string>{});
  }
  if (entrypoint.size() == 1 && entrypoint[0].empty()) entrypoint.clear();
  if (entrypoint.empty() && cmd.empty()) throw UsageError("no command specified");
  entrypoint.insert(entrypoint.end(), cmd.begin(), cmd.end());
  return entrypoint;
}

std::vector<std::string> exec_candidates(const std::string& command, const std::vector<std::string>& env) {
  if (command.find('/') != std::string::npos) return {command};
  std::string path;
  for (const std::string& entry : env) {
    if (entry.starts_with("PATH=")) path = entry.substr(5);
  }
  if (path.empty()) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::vector<std::string> candidates;
  for (const std::string& dir : split_on(path, ':'))
    candidates.push_back((dir.empty() ? "." : dir) + "/" + command);
  return candidates;
}

// ---- User ---------------------------------------------------------------------------------------

ExecUser resolve_user(int rootfs_dirfd, std::string_view user, const std::vector<std::string>& group_add) {
  return resolve_user(
      [rootfs_dirfd](const std::string& relative) { return read_container_file(rootfs_dirfd, relative); },
      user, group_add);
}

ExecUser resolve_user(const ContainerFileReader& read_file, std::string_view user,
                      const std::vector<std::string>& group_add) {
  auto [user_part, group_part] = cut(user, ':');
  std::optional<IdArg> user_arg;
  if (!user_part.empty()) user_arg = parse_id_arg(user_part);
  std::optional<IdArg> group_arg;
  if (group_part && !group_part->empty()) group_arg = parse_id_arg(*group_part);
  std::vector<IdArg> added;
  for (const std::string& g : group_add) added.push_back(parse_id_arg(g));

  const std::optional<std::string> passwd_text = read_file("etc/passwd");
  const std::vector<PasswdEntry> passwd =
      passwd_text ? parse_passwd(*passwd_text) : std::vector<PasswdEntry>{};

  ExecUser out;
  std::int64_t uid = 0;
  std::int64_t gid = 0;
  // The first entry that matches wins; "" looks for uid 0, as runc's default user is root.
  auto user_it = std::find_if(passwd.begin(), passwd.end(), [&](const PasswdEntry& e) {
    if (!user_arg) return e.uid == 0;
    return user_arg->numeric ? e.uid == user_arg->id : e.name == user_arg->name;
  });
  if (user_it != passwd.end()) {
    out.name = std::string(user_it->name);
    uid = user_it->uid;
    gid = user_it->gid;
  } else if (user_arg) {
    if (!user_arg->numeric) {
      throw NotFoundError(
          fmt::format("unable to find user {}: no matching entries in passwd file", user_arg->name));
    }
    uid = user_arg->id;
  }
  // runc would hand such an id to Docker, which truncates it to 32 bits (4294967296 becomes root).
  out.uid = checked_id(uid, "/etc/passwd", out.name);

  std::optional<std::string> group_text;
  std::vector<GroupEntry> groups;
  if (group_arg || !out.name.empty() || !added.empty()) {
    group_text = read_file("etc/group");
    if (group_text) groups = parse_group(*group_text);
  }
  auto matches = [](const IdArg& arg, const GroupEntry& g) {
    return arg.numeric ? g.gid == arg.id : g.name == arg.name;
  };

  std::vector<std::uint32_t> member_of;
  if (group_arg) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const GroupEntry& g) { return matches(*group_arg, g); });
    if (it != groups.end()) {
      gid = it->gid;
    } else if (!group_arg->numeric) {
      throw NotFoundError(
          fmt::format("unable to find group {}: no matching entries in group file", group_arg->name));
    } else {
      gid = group_arg->id;
    }
    out.gid = checked_id(gid, "/etc/group", group_arg->name);
  } else {
    out.gid = checked_id(gid, "/etc/passwd", out.name);
    // Supplementary groups come only with the implicit form: "name" or "uid", never "name:group".
    if (!out.name.empty()) {
      for (const GroupEntry& g : groups) {
        if (std::find(g.members.begin(), g.members.end(), out.name) != g.members.end()) {
          member_of.push_back(checked_id(g.gid, "/etc/group", g.name));
        }
      }
    }
  }

  out.additional_gids.push_back(out.gid);
  out.additional_gids.insert(out.additional_gids.end(), member_of.begin(), member_of.end());
  std::vector<std::uint32_t> extra;
  for (const IdArg& arg : added) {
    std::uint32_t id = 0;
    auto it =
        std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) { return matches(arg, g); });
    if (it != groups.end()) {
      id = checked_id(it->gid, "/etc/group", it->name);
    } else if (!arg.numeric) {
      throw NotFoundError(
          fmt::format("unable to find group {}: no matching entries in group file", arg.name));
    } else {
      id = static_cast<std::uint32_t>(arg.id);
    }
    if (std::find(extra.begin(), extra.end(), id) == extra.end()) extra.push_back(id);
  }
  out.additional_gids.insert(out.additional_gids.end(), extra.begin(), extra.end());

  // runc looks HOME up again by the final uid, defaulting to "/".
  auto home_it =
      std::find_if(passwd.begin(), passwd.end(), [&](const PasswdEntry& e) { return e.uid == uid; });
  out.home = home_it != passwd.end() ? std::string(home_it->home) : "/";
  return out;
}

// ---- Environment --------------------------------------------------------------------------------

HostEnv process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

std::string env_flag(std::string_view value, const HostEnv& host_env) {
  auto [key, rest] = cut(value, '=');
  if (key.empty()) throw UsageError(fmt::format("invalid environment variable: {}", value));
  if (rest) return std::string(value);
  if (auto host = host_env(std::string(key))) return fmt::format("{}={}", key, *host);
  return std::string(value);
}

std::vector<std::string> parse_env_file(std::string_view contents, std::string_view file_name,
                                        const HostEnv& host_env) {
  std::vector<std::string> out;
  std::vector<std::string_view> lines = scan_lines(contents);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    auto fail = [&](std::string_view what) {
      throw UsageError(fmt::format("env file `{}` line {}: {}", file_name, i + 1, what));
    };
    if (!is_valid_utf8(line)) fail("invalid utf8 bytes");
    if (i == 0 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
    line = trim_left_space(line);
    if (line.empty() || line.front() == '#') continue;
    auto [variable, value] = cut(line, '=');
    if (variable.find_first_of(" \t") != std::string_view::npos) {
      fail(fmt::format("variable '{}' contains whitespaces", variable));
    }
    if (variable.empty()) fail(fmt::format("no variable name on line '{}'", line));
    if (value) {
      out.push_back(fmt::format("{}={}", variable, *value));
    } else if (auto host = host_env(std::string(variable))) {
      out.push_back(fmt::format("{}={}", variable, *host));
    }
  }
  return out;
}

std::vector<std::string> read_env_file(const std::string& path, const HostEnv& host_env) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    if (errno == ENOENT) throw NotFoundError(fmt::format("open env file `{}`: no such file", path));
    throw_errno(fmt::format("open env file `{}`", path));
  }
  std::string contents = read_fd_capped(fd.get(), kMaxEnvFileBytes, fmt::format("env file `{}`", path));
  return parse_env_file(contents, path, host_env);
}

std::vector<std::string> container_env(const nlohmann::json& image_config,
                                       const std::vector<std::string>& user_env,
                                       const EnvDefaults& defaults) {
  // moby's merge: the user's list, then the image's entries for keys the user did not mention.
  std::vector<std::string> config_env = user_env;
  for (const std::string& entry : string_array(image_config, "Env").value_or(std::vector<std::string>{})) {
    if (!has_key(user_env, cut(entry, '=').first)) config_env.push_back(entry);
  }

  // Docker's defaults with the config's entries over them (ReplaceOrAppendEnvValues): a default's
  // key is replaced in place or, by a bare "KEY", removed; other bare keys are dropped.
  std::vector<std::optional<std::string>> slots{fmt::format("PATH={}", kDefaultPath),
                                                fmt::format("HOSTNAME={}", defaults.hostname)};
  std::vector<std::string_view> default_keys{"PATH", "HOSTNAME"};
  if (defaults.tty) {
    slots.emplace_back("TERM=xterm");
    default_keys.push_back("TERM");
  }
  // A default keeps its slot even when emptied, so a later entry can set it again (as moby's cache).
  auto default_slot = [&](std::string_view key) -> std::optional<size_t> {
    auto it = std::find(default_keys.begin(), default_keys.end(), key);
    if (it == default_keys.end()) return std::nullopt;
    return static_cast<size_t>(it - default_keys.begin());
  };
  for (const std::string& entry : config_env) {
    auto [key, value] = cut(entry, '=');
    std::optional<size_t> slot = default_slot(key);
    if (!value) {
      if (slot) slots[*slot].reset();
      continue;
    }
    if (slot) {
      slots[*slot] = entry;
    } else {
      slots.emplace_back(entry);
    }
  }

  // runc sets the list one by one: a repeated key keeps its first place and takes the last value.
  std::vector<std::string> env;
  std::map<std::string, size_t, std::less<>> position;
  for (const std::optional<std::string>& slot : slots) {
    if (!slot) continue;
    auto [key, value] = cut(*slot, '=');
    if (key.empty()) {
      throw InvalidInputError(fmt::format("invalid environment variable `{}`: name cannot be empty", *slot));
    }
    if (slot->find('\0') != std::string::npos) {
      throw InvalidInputError(fmt::format("invalid environment variable `{}`: contains a NUL byte", key));
    }
    if (auto it = position.find(key); it != position.end()) {
      env[it->second] = *slot;
    } else {
      position.emplace(std::string(key), env.size());
      env.push_back(*slot);
    }
  }

  // runc's HOME: set from the user when the environment has none or an empty one.
  std::string home = fmt::format("HOME={}", defaults.home);
  if (auto it = position.find("HOME"); it == position.end()) {
    env.push_back(std::move(home));
  } else if (env[it->second] == "HOME=") {
    env[it->second] = std::move(home);
  }
  return env;
}

// ---- Working directory --------------------------------------------------------------------------

std::string working_dir(const nlohmann::json& image_config, const std::optional<std::string>& workdir_flag) {
  std::string dir;
  if (workdir_flag && !workdir_flag->empty()) {
    if (!workdir_flag->starts_with('/')) {
      throw UsageError(fmt::format("the working directory '{}' is invalid, it needs to be an absolute path",
                                   *workdir_flag));
    }
    dir = *workdir_flag;
  } else if (const nlohmann::json* field = config_field(image_config, "WorkingDir")) {
    if (!field->is_string()) throw InvalidInputError("image config: WorkingDir is not a string");
    dir = field->get<std::string>();
    if (!dir.empty() && !dir.starts_with('/')) {
      throw InvalidInputError(fmt::format(
          "image config: the working directory '{}' is invalid, it needs to be an absolute path", dir));
    }
  }
  return "/" + join_components(normalize_clamped(dir));
}

}  // namespace kiln::runtime
