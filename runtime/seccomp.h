// Seccomp as Docker applies it: Docker's default profile, a user's profile given with
// --security-opt seccomp=FILE.json, the conversion of Docker's profile format into the OCI runtime
// spec's linux.seccomp for a container's capabilities and the host's architecture, and the filter
// built from that with libseccomp. (--security-opt seccomp=unconfined means no filter at all: the
// caller simply builds none.)
//
// The filter is compiled in the parent, before clone, because compiling allocates and can fail with
// a message; the freshly cloned child only installs the finished program, which it can do without
// allocating.
#pragma once

#include <linux/filter.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace kiln::runtime {

// Docker's default profile (in Docker's format: archMap, includes/excludes), embedded at build time
// and parsed on first use. The reference stays valid for the life of the process.
const nlohmann::json& default_seccomp_profile();

// Reads and checks a user's profile, in Docker's format or already in the OCI form (architectures
// instead of archMap). Files over 4 MiB are refused. Throws InvalidInputError, or Error for a file
// that cannot be read, with messages like "read seccomp profile `p.json`: syscalls[3]: unknown
// action `SCMP_ACT_FOO`": malformed JSON, a wrong type, an unknown action, operator or
// architecture, an argument index over 5, both "name" and "names", both "architectures" and
// "archMap", SCMP_ACT_NOTIFY (kiln has no seccomp agent). A syscall name libseccomp does not know is
// not an error: Docker skips those, so a profile can name syscalls newer than the host.
nlohmann::json read_seccomp_profile(const std::string& path);

// The OCI runtime spec's linux.seccomp object (defaultAction, defaultErrnoRet, architectures,
// syscalls[{names, action, errnoRet, args[{index, value, valueTwo, op}]}]) for a container granted
// `capabilities` ("CAP_SYS_ADMIN" style names; Docker checks the bounding set), on this host's
// architecture. As moby's setupSeccomp does: the archMap entry for the host's architecture gives
// the architectures (the native one and its sub-architectures, e.g. x86_64, x86 and x32); a
// syscall group is dropped when any of its excludes matches (an excluded capability is granted, the
// host's architecture is excluded, the kernel is at least excludes.minKernel) or when any of its
// includes does not (a required capability is missing, the host's architecture is not listed, the
// kernel is older than includes.minKernel). A profile already in OCI form keeps its architectures
// and passes through. Returns null when the profile disables seccomp (neither defaultAction nor
// syscalls), as Docker does. Throws InvalidInputError for a profile read_seccomp_profile would refuse.
nlohmann::json seccomp_for_spec(const nlohmann::json& docker_profile,
                                const std::vector<std::string>& capabilities);

// A seccomp BPF program built by libseccomp from an OCI linux.seccomp object. Move-only value; it
// owns the instructions, so it must outlive the load() that uses them (the child's copy of the
// parent's memory is enough).
class SeccompFilter {
 public:
  // Builds the filter as runc does: the default action, the listed architectures added to the
  // native one, one rule per syscall name and argument set. Names libseccomp does not know are
  // skipped; a rule whose action equals the default is left out (libseccomp refuses it, and it would
  // change nothing). Throws InvalidInputError naming the syscall and libseccomp's error when a rule
  // is refused, or the action, operator or architecture that is unknown.
  static SeccompFilter compile(const nlohmann::json& oci_seccomp);

  // compile(), remembered in `cache_dir` (made when missing) under the SHA-256 of the profile, the
  // architecture and libseccomp's version: compiling Docker's default profile takes ~10 ms here,
  // more than the rest of a container's start, and it is the same profile run after run. A cache
  // file that is unreadable or malformed is ignored and rewritten; failing to write one is not an
  // error (the compiled filter is used anyway).
  static SeccompFilter compile_cached(const nlohmann::json& oci_seccomp, const std::string& cache_dir);

  SeccompFilter(SeccompFilter&&) noexcept = default;
  SeccompFilter& operator=(SeccompFilter&&) noexcept = default;
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;

  // Installs the filter on the calling thread with prctl(PR_SET_SECCOMP). Returns 0 or the errno.
  // The caller must have set PR_SET_NO_NEW_PRIVS (or hold CAP_SYS_ADMIN), and should call this last
  // before execve: from here on its own system calls are filtered too. Does not allocate, so it is
  // safe in a child cloned from a multi-threaded parent.
  int load() const noexcept;

  // The instructions, for inspection; `size()` is their count.
  std::span<const sock_filter> program() const { return program_; }
  std::size_t size() const { return program_.size(); }

 private:
  explicit SeccompFilter(std::vector<sock_filter> program) : program_(std::move(program)) {}
  std::vector<sock_filter> program_;
};

}  // namespace kiln::runtime
