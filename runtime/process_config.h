// The container's process as `docker run` derives it from the image config and the command line:
// the argv (Entrypoint and Cmd against --entrypoint and the arguments after IMAGE), the user and
// groups (--user and --group-add, looked up in the container's own /etc/passwd and /etc/group as
// runc's libcontainer/user does), the environment (image Env, --env-file, -e, and the variables
// Docker and runc add) and the working directory (-w against WorkingDir).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::runtime {

// ---- Command ------------------------------------------------------------------------------------

// The process's argv from `image_config` (the image config's "config" object; its Entrypoint and Cmd
// may be absent or null), --entrypoint and the arguments after IMAGE, as Docker merges them:
// arguments replace Cmd; --entrypoint replaces Entrypoint and drops the image's Cmd, so only the
// arguments follow it; --entrypoint "" means no entrypoint at all (and still drops the image's Cmd);
// an Entrypoint of [""] counts as none. Throws UsageError "no command specified" when nothing is
// left, InvalidInputError when Entrypoint or Cmd is not an array of strings or holds a NUL byte.
std::vector<std::string> combine_command(const nlohmann::json& image_config,
                                         const std::optional<std::string>& entrypoint_flag,
                                         const std::vector<std::string>& args);

// The paths execve tries for `command`, as execvpe would but with the container's PATH (from
// `env`, else Docker's default), not kiln's: the command itself when it holds a `/`.
std::vector<std::string> exec_candidates(const std::string& command, const std::vector<std::string>& env);

// ---- User ---------------------------------------------------------------------------------------

// Who the process runs as.
struct ExecUser {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  // setgroups(2)'s list, in Docker's order: the primary gid first (moby adds it since 25.0), then
  // the groups of /etc/group that list the user's name (only when --user names no group), then
  // --group-add's groups (without repeats among themselves).
  std::vector<std::uint32_t> additional_gids;
  // What runc puts in HOME when the environment has none: the home field of the first /etc/passwd
  // entry with this uid, or "/" when there is none.
  std::string home;
  // The /etc/passwd entry's name the user was resolved to; empty for a uid with no entry.
  std::string name;
};

// Resolves --user ("", "name", "uid", "name:group", "uid:gid", "name:gid", "uid:group") and
// --group-add (names or numbers) against etc/passwd and etc/group of the root filesystem open at
// `rootfs_dirfd`, as Docker does with runc's GetExecUser and GetAdditionalGroups:
//   - "" is uid 0; a number is always a uid (a gid after the colon), never a name, and needs no
//     entry (a uid without one gets gid 0); a name must have an entry, the first one wins;
//   - a user given without a group takes the entry's gid and, as supplementary groups, every group
//     whose member list names the entry (root's too when --user is "");
//   - the files are read inside the root filesystem (a symlink in it never leads out), capped in
//     size; a missing file is the same as an empty one; lines are parsed as runc parses them
//     (colon-separated fields, fields missing or not numbers read as empty or 0, blank lines and
//     in etc/group "#" comments skipped).
// Throws NotFoundError "unable to find user NAME: no matching entries in passwd file" or "unable to
// find group NAME: no matching entries in group file"; UsageError "uids and gids must be in range
// 0-2147483647" for a number out of range in --user or --group-add; InvalidInputError for an entry
// whose id is out of that range, a file that is not a regular file or is too large; SystemError
// when a file cannot be read.
ExecUser resolve_user(int rootfs_dirfd, std::string_view user, const std::vector<std::string>& group_add);
// The same with the files read by `read_file` ("etc/passwd", "etc/group"; nullopt when the root
// has none): for a root that is not mounted anywhere, such as a build's layers.
using ContainerFileReader = std::function<std::optional<std::string>(const std::string& relative)>;
ExecUser resolve_user(const ContainerFileReader& read_file, std::string_view user,
                      const std::vector<std::string>& group_add);

// ---- Environment --------------------------------------------------------------------------------

// Looks a variable up in the environment of the host's `kiln` process: nullopt when it is not set.
using HostEnv = std::function<std::optional<std::string>(const std::string& name)>;
// The calling process's environment (getenv).
HostEnv process_env();

// One -e value as the docker CLI passes it on (opts.ValidateEnv): "KEY=VALUE" as given; "KEY" alone
// becomes "KEY=<host value>" when the host has KEY, and stays "KEY" otherwise, which
// container_env() reads as "unset KEY". Throws UsageError "invalid environment variable: =x" for an
// empty name.
std::string env_flag(std::string_view value, const HostEnv& host_env);

// The entries of a --env-file (the CLI's opts.ParseEnvFile): one KEY=VALUE a line, the value kept
// as written (no quotes removed, no trimming); leading blanks skipped; blank lines and lines starting
// with "#" ignored; a UTF-8 BOM at the start and "\r" at line ends dropped; "KEY" alone takes the
// host's value and is left out when the host has none. `file_name` is for messages. Throws
// UsageError "env file `F` line N: variable 'A B' contains whitespaces", "... no variable name on
// line '=x'" or "... invalid utf8 bytes".
std::vector<std::string> parse_env_file(std::string_view contents, std::string_view file_name,
                                        const HostEnv& host_env);
// Reads and parses a host file (capped at 16 MiB). Throws NotFoundError for a missing file.
std::vector<std::string> read_env_file(const std::string& path, const HostEnv& host_env);

// What Docker and runc add to the environment.
struct EnvDefaults {
  std::string hostname;  // HOSTNAME
  std::string home;      // HOME when the environment has none (ExecUser::home)
  bool tty = false;      // -t: TERM=xterm
};

// The process's environment. `user_env` is the environment the CLI sends: every --env-file's
// entries in order, then every -e value through env_flag(). The result is what the process sees
// once Docker and runc are done, in this order:
//   1. PATH (default /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), HOSTNAME, and
//      TERM=xterm with a tty: Docker's defaults, always first;
//   2. `user_env`, then the image's Env entries whose key `user_env` does not mention (moby's merge);
//   3. HOME from `defaults.home`, last, when nothing above set it (or set it empty): runc's rule.
// A key set twice keeps its first position and takes the last value (runc applies the list with
// setenv); an entry without "=" ("KEY") removes KEY from the defaults and hides the image's KEY.
// Throws InvalidInputError for an image Env that is not an array of strings, and for an entry with
// an empty name or a NUL byte (runc refuses those).
std::vector<std::string> container_env(const nlohmann::json& image_config,
                                       const std::vector<std::string>& user_env, const EnvDefaults& defaults);

// ---- Working directory --------------------------------------------------------------------------

// The process's working directory: -w when given and not empty, else the image's WorkingDir, else
// "/"; cleaned ("/a//b/../c/" is "/a/c"). Throws UsageError "the working directory 'x' is invalid,
// it needs to be an absolute path" for a relative -w, and InvalidInputError for a relative or
// non-string WorkingDir in the image.
std::string working_dir(const nlohmann::json& image_config, const std::optional<std::string>& workdir_flag);

}  // namespace kiln::runtime
