#include "runtime/seccomp.h"

#include <fmt/format.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#include "layerstore/digest.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/io.h"

namespace kiln::runtime {
namespace detail {
// runtime/seccomp_default.json, compiled in by runtime/CMakeLists.txt.
extern const std::string_view kDefaultSeccompJson;
}  // namespace detail

namespace {

using nlohmann::json;

// Docker's own default is about 13 KiB; a profile a thousand times its size is not a profile.
constexpr std::uint64_t kMaxProfileBytes = std::uint64_t{4} << 20;

// Architectures newer than the libseccomp kiln is built with are still valid names in a profile
// (a profile is shared between hosts); only a filter that needs one fails to compile.
#ifdef SCMP_ARCH_LOONGARCH64
constexpr std::uint32_t kArchLoongArch64 = SCMP_ARCH_LOONGARCH64;
#else
constexpr std::uint32_t kArchLoongArch64 = 0;
#endif
#ifdef SCMP_ARCH_M68K
constexpr std::uint32_t kArchM68k = SCMP_ARCH_M68K;
#else
constexpr std::uint32_t kArchM68k = 0;
#endif
#ifdef SCMP_ARCH_SH
constexpr std::uint32_t kArchSh = SCMP_ARCH_SH;
constexpr std::uint32_t kArchShEb = SCMP_ARCH_SHEB;
#else
constexpr std::uint32_t kArchSh = 0;
constexpr std::uint32_t kArchShEb = 0;
#endif

struct Arch {
  std::string_view name;
  std::uint32_t token;  // 0: not in this libseccomp
};

// The OCI runtime spec's architecture names.
constexpr std::array<Arch, 23> kArches = {{
    {"SCMP_ARCH_X86", SCMP_ARCH_X86},
    {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    {"SCMP_ARCH_X32", SCMP_ARCH_X32},
    {"SCMP_ARCH_ARM", SCMP_ARCH_ARM},
    {"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
    {"SCMP_ARCH_MIPS", SCMP_ARCH_MIPS},
    {"SCMP_ARCH_MIPS64", SCMP_ARCH_MIPS64},
    {"SCMP_ARCH_MIPS64N32", SCMP_ARCH_MIPS64N32},
    {"SCMP_ARCH_MIPSEL", SCMP_ARCH_MIPSEL},
    {"SCMP_ARCH_MIPSEL64", SCMP_ARCH_MIPSEL64},
    {"SCMP_ARCH_MIPSEL64N32", SCMP_ARCH_MIPSEL64N32},
    {"SCMP_ARCH_PPC", SCMP_ARCH_PPC},
    {"SCMP_ARCH_PPC64", SCMP_ARCH_PPC64},
    {"SCMP_ARCH_PPC64LE", SCMP_ARCH_PPC64LE},
    {"SCMP_ARCH_S390", SCMP_ARCH_S390},
    {"SCMP_ARCH_S390X", SCMP_ARCH_S390X},
    {"SCMP_ARCH_PARISC", SCMP_ARCH_PARISC},
    {"SCMP_ARCH_PARISC64", SCMP_ARCH_PARISC64},
    {"SCMP_ARCH_RISCV64", SCMP_ARCH_RISCV64},
    {"SCMP_ARCH_LOONGARCH64", kArchLoongArch64},
    {"SCMP_ARCH_M68K", kArchM68k},
    {"SCMP_ARCH_SH", kArchSh},
    {"SCMP_ARCH_SHEB", kArchShEb},
}};

const Arch* find_arch(std::string_view name) {
  auto it = std::find_if(kArches.begin(), kArches.end(), [&](const Arch& a) { return a.name == name; });
  return it == kArches.end() ? nullptr : &*it;
}

// The host as Docker names it: Go's architecture in libseccomp's spelling (what a profile's
// includes/excludes "arches" list), and the archMap key. Both are fixed when kiln is built, as
// they are for dockerd.
struct HostArch {
  std::string_view native;
  std::string_view seccomp;
};
#if defined(__x86_64__) && !defined(__ILP32__)
constexpr HostArch kHostArch{"amd64", "SCMP_ARCH_X86_64"};
#elif defined(__i386__)
constexpr HostArch kHostArch{"x86", "SCMP_ARCH_X86"};
#elif defined(__aarch64__)
constexpr HostArch kHostArch{"arm64", "SCMP_ARCH_AARCH64"};
#elif defined(__arm__)
constexpr HostArch kHostArch{"arm", "SCMP_ARCH_ARM"};
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr HostArch kHostArch{"ppc64le", "SCMP_ARCH_PPC64LE"};
#elif defined(__powerpc64__)
constexpr HostArch kHostArch{"ppc64", "SCMP_ARCH_PPC64"};
#elif defined(__s390x__)
constexpr HostArch kHostArch{"s390x", "SCMP_ARCH_S390X"};
#elif defined(__s390__)
constexpr HostArch kHostArch{"s390", "SCMP_ARCH_S390"};
#elif defined(__riscv) && __riscv_xlen == 64
constexpr HostArch kHostArch{"riscv64", "SCMP_ARCH_RISCV64"};
#else
// Docker leaves the architectures empty where it has no mapping: libseccomp then uses the native one.
constexpr HostArch kHostArch{"", ""};
#endif

constexpr std::array<std::string_view, 9> kActions = {
    "SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",        "SCMP_ACT_LOG",         "SCMP_ACT_NOTIFY"};

struct Operator {
  std::string_view name;
  scmp_compare op;
};
constexpr std::array<Operator, 7> kOperators = {{
    {"SCMP_CMP_NE", SCMP_CMP_NE},
    {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE},
    {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE},
    {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
}};

// Six: the most arguments a system call takes.
constexpr std::uint64_t kMaxArgIndex = 5;

// A member that is absent and one that is null mean the same in Docker's (Go) decoding.
const json* member(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// Go's uint fields: a JSON integer that is not negative (nlohmann types a literal 0 built in code as
// signed, one parsed from text as unsigned).
bool is_unsigned(const json& value) {
  return value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0);
}

bool is_string_array(const json& value) {
  return value.is_array() &&
         std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_string(); });
}

// An optional string array (null and absent are empty).
std::vector<std::string> strings_of(const json& object, const char* key) {
  const json* value = member(object, key);
  return value ? value->get<std::vector<std::string>>() : std::vector<std::string>{};
}

struct KernelVersion {
  int major = 0, minor = 0, patch = 0;
  auto operator<=>(const KernelVersion&) const = default;
};

// "4.8", "5.10.0-21-amd64": Docker compares the first three numbers, the third optional.
std::optional<KernelVersion> parse_kernel_version(std::string_view text) {
  std::array<int, 3> parts{};
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) {
      if (pos >= text.size() || text[pos] != '.') {
        if (i == 2) break;
        return std::nullopt;
      }
      ++pos;
    }
    size_t start = pos;
    long value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 6) {
      value = value * 10 + (text[pos] - '0');
      ++pos;
    }
    if (pos == start) {
      if (i == 2) break;
      return std::nullopt;
    }
    parts[i] = static_cast<int>(value);
  }
  return KernelVersion{parts[0], parts[1], parts[2]};
}

KernelVersion running_kernel() {
  struct utsname name {};
  if (::uname(&name) != 0) throw_errno("uname");
  std::optional<KernelVersion> version = parse_kernel_version(name.release);
  if (!version) throw Error(fmt::format("kernel release `{}`: not a version", name.release));
  return *version;
}

void check_filter(const json& filter, const std::string& where) {
  if (!filter.is_object()) throw InvalidInputError(fmt::format("{}: expected an object", where));
  for (const char* key : {"caps", "arches"}) {
    const json* list = member(filter, key);
    if (list && !is_string_array(*list)) {
      throw InvalidInputError(fmt::format("{}.{}: expected an array of strings", where, key));
    }
  }
  if (const json* min = member(filter, "minKernel")) {
    if (!min->is_string() || !parse_kernel_version(min->get<std::string>())) {
      throw InvalidInputError(fmt::format("{}.minKernel: not a kernel version: {}", where, min->dump()));
    }
  }
}

void check_action(const json* action, const json* errno_ret, const std::string& where, const char* key) {
  if (!action || !action->is_string()) throw InvalidInputError(fmt::format("{}: no {}", where, key));
  const std::string& name = action->get_ref<const std::string&>();
  if (std::find(kActions.begin(), kActions.end(), name) == kActions.end()) {
    throw InvalidInputError(fmt::format("{}: unknown {} `{}`", where, key, name));
  }
  if (name == "SCMP_ACT_NOTIFY") {
    throw InvalidInputError(
        fmt::format("{}: {} `{}` needs a seccomp agent, which kiln does not support", where, key, name));
  }
  if (errno_ret && !is_unsigned(*errno_ret)) {
    throw InvalidInputError(
        fmt::format("{}: errno {} is not a non-negative integer", where, errno_ret->dump()));
  }
}

void check_arch_name(const json& name, const std::string& where) {
  if (!name.is_string()) throw InvalidInputError(fmt::format("{}: expected a string", where));
  if (!find_arch(name.get_ref<const std::string&>())) {
    throw InvalidInputError(
        fmt::format("{}: unknown architecture `{}`", where, name.get_ref<const std::string&>()));
  }
}

// Everything Docker's decoding and runc's conversion would refuse, found before any container
// starts. Messages name the place in the document ("syscalls[3].args[0]").
void check_profile(const json& profile) {
  if (!profile.is_object()) throw InvalidInputError("expected a JSON object");
  const json* default_action = member(profile, "defaultAction");
  const json* syscalls = member(profile, "syscalls");
  if (syscalls && !syscalls->is_array()) throw InvalidInputError("syscalls: expected an array");
  // Go decodes an absent defaultAction as "": no default and no rules is Docker's "seccomp off".
  if (default_action && default_action->is_string() &&
      default_action->get_ref<const std::string&>().empty()) {
    default_action = nullptr;
  }
  bool disabled = !default_action && (!syscalls || syscalls->empty());
  if (!disabled) check_action(default_action, member(profile, "defaultErrnoRet"), "profile", "defaultAction");

  const json* architectures = member(profile, "architectures");
  if (architectures) {
    if (!architectures->is_array()) throw InvalidInputError("architectures: expected an array");
    for (size_t i = 0; i < architectures->size(); ++i) {
      check_arch_name((*architectures)[i], fmt::format("architectures[{}]", i));
    }
  }
  const json* arch_map = member(profile, "archMap");
  if (arch_map) {
    if (!arch_map->is_array()) throw InvalidInputError("archMap: expected an array");
    for (size_t i = 0; i < arch_map->size(); ++i) {
      const json& entry = (*arch_map)[i];
      std::string where = fmt::format("archMap[{}]", i);
      if (!entry.is_object()) throw InvalidInputError(fmt::format("{}: expected an object", where));
      const json* arch = member(entry, "architecture");
      check_arch_name(arch ? *arch : json(), where + ".architecture");
      if (const json* subs = member(entry, "subArchitectures")) {
        if (!subs->is_array())
          throw InvalidInputError(fmt::format("{}.subArchitectures: expected an array", where));
        for (size_t j = 0; j < subs->size(); ++j) {
          check_arch_name((*subs)[j], fmt::format("{}.subArchitectures[{}]", where, j));
        }
      }
    }
  }
  if (architectures && !architectures->empty() && arch_map && !arch_map->empty()) {
    throw InvalidInputError("both `architectures` and `archMap` are given; use one");
  }
  if (const json* listener = member(profile, "listenerPath");
      listener && listener->is_string() && !listener->get_ref<const std::string&>().empty()) {
    throw InvalidInputError("listenerPath: seccomp agents are not supported by kiln");
  }
  if (const json* flags = member(profile, "flags"); flags && !(flags->is_array() && flags->empty())) {
    throw InvalidInputError("flags: seccomp filter flags are not supported by kiln");
  }

  if (!syscalls) return;
  for (size_t i = 0; i < syscalls->size(); ++i) {
    const json& call = (*syscalls)[i];
    std::string where = fmt::format("syscalls[{}]", i);
    if (!call.is_object()) throw InvalidInputError(fmt::format("{}: expected an object", where));
    const json* name = member(call, "name");
    const json* names = member(call, "names");
    if (name && !name->is_string()) throw InvalidInputError(fmt::format("{}.name: expected a string", where));
    if (names && !is_string_array(*names)) {
      throw InvalidInputError(fmt::format("{}.names: expected an array of strings", where));
    }
    if (name && names && !names->empty()) {
      throw InvalidInputError(fmt::format("{}: both `name` and `names` are given; use one", where));
    }
    check_action(member(call, "action"), member(call, "errnoRet"), where, "action");
    if (const json* args = member(call, "args")) {
      if (!args->is_array()) throw InvalidInputError(fmt::format("{}.args: expected an array", where));
      for (size_t j = 0; j < args->size(); ++j) {
        const json& arg = (*args)[j];
        std::string arg_where = fmt::format("{}.args[{}]", where, j);
        if (!arg.is_object()) throw InvalidInputError(fmt::format("{}: expected an object", arg_where));
        const json* index = member(arg, "index");
        if (!index || !is_unsigned(*index) || index->get<std::uint64_t>() > kMaxArgIndex) {
          throw InvalidInputError(fmt::format("{}: index {} is not one of 0 to {}", arg_where,
                                              index ? index->dump() : "(none)", kMaxArgIndex));
        }
        for (const char* key : {"value", "valueTwo"}) {
          const json* value = member(arg, key);
          if (value && !is_unsigned(*value)) {
            throw InvalidInputError(
                fmt::format("{}.{}: {} is not a non-negative integer", arg_where, key, value->dump()));
          }
        }
        const json* op = member(arg, "op");
        if (!op || !op->is_string() ||
            std::none_of(kOperators.begin(), kOperators.end(),
                         [&](const Operator& o) { return o.name == op->get_ref<const std::string&>(); })) {
          throw InvalidInputError(
              fmt::format("{}: unknown operator {}", arg_where, op ? op->dump() : std::string("(none)")));
        }
      }
    }
    for (const char* key : {"includes", "excludes"}) {
      if (const json* filter = member(call, key)) check_filter(*filter, fmt::format("{}.{}", where, key));
    }
  }
}

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// moby's setupSeccomp: whether a syscall group applies to this container on this host.
bool applies(const json& call, const std::vector<std::string>& capabilities,
             std::optional<KernelVersion>& kernel) {
  auto kernel_at_least = [&](const json& filter) {
    if (!kernel) kernel = running_kernel();
    return *kernel >= *parse_kernel_version(filter.at("minKernel").get<std::string>());
  };
  if (const json* excludes = member(call, "excludes")) {
    if (contains(strings_of(*excludes, "arches"), kHostArch.native)) return false;
    for (const std::string& cap : strings_of(*excludes, "caps")) {
      if (contains(capabilities, cap)) return false;
    }
    if (member(*excludes, "minKernel") && kernel_at_least(*excludes)) return false;
  }
  if (const json* includes = member(call, "includes")) {
    std::vector<std::string> arches = strings_of(*includes, "arches");
    if (!arches.empty() && !contains(arches, kHostArch.native)) return false;
    for (const std::string& cap : strings_of(*includes, "caps")) {
      if (!contains(capabilities, cap)) return false;
    }
    if (member(*includes, "minKernel") && !kernel_at_least(*includes)) return false;
  }
  return true;
}

std::uint32_t action_token(const json& action, const json* errno_ret) {
  const std::string& name = action.get_ref<const std::string&>();
  // runc's mapping: an errno or trace action without a value returns EPERM.
  auto code = [&] { return errno_ret ? errno_ret->get<std::uint32_t>() : static_cast<std::uint32_t>(EPERM); };
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(code());
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(code());
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  throw InvalidInputError(fmt::format("compile seccomp filter: unsupported action `{}`", name));
}

scmp_compare operator_of(const std::string& name) {
  for (const Operator& o : kOperators) {
    if (o.name == name) return o.op;
  }
  throw InvalidInputError(fmt::format("compile seccomp filter: unknown operator `{}`", name));
}

struct ContextDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

[[noreturn]] void throw_rule_error(std::string_view syscall, int rc) {
  throw InvalidInputError(
      fmt::format("compile seccomp filter: syscall `{}`: libseccomp: {}", syscall, std::strerror(-rc)));
}

}  // namespace

const nlohmann::json& default_seccomp_profile() {
  // A function-local static is built once, thread-safely, and never changes afterwards.
  static const json profile = json::parse(detail::kDefaultSeccompJson);
  return profile;
}

nlohmann::json read_seccomp_profile(const std::string& path) {
  std::string context = fmt::format("read seccomp profile `{}`", path);
  json profile;
  try {
    std::string text = read_file_capped(path, kMaxProfileBytes, "file");
    profile = json::parse(text);
    check_profile(profile);
  } catch (const json::parse_error& e) {
    // nlohmann's text starts with its own tag ("[json.exception.parse_error.101] "); the rest says
    // where and what.
    std::string_view what = e.what();
    if (auto tag_end = what.find("] "); what.starts_with("[json.exception") && tag_end != what.npos) {
      what.remove_prefix(tag_end + 2);
    }
    throw InvalidInputError(fmt::format("{}: invalid JSON: {}", context, what));
  } catch (const Error&) {
    rethrow_with_context(context);
  }
  return profile;
}

nlohmann::json seccomp_for_spec(const nlohmann::json& docker_profile,
                                const std::vector<std::string>& capabilities) {
  try {
    check_profile(docker_profile);
  } catch (const Error&) {
    rethrow_with_context("seccomp profile");
  }
  const json* default_action = member(docker_profile, "defaultAction");
  const json* syscalls = member(docker_profile, "syscalls");
  bool no_default = !default_action || default_action->get_ref<const std::string&>().empty();
  if (no_default && (!syscalls || syscalls->empty())) return nullptr;

  json spec = json::object();
  spec["defaultAction"] = *default_action;
  if (const json* errno_ret = member(docker_profile, "defaultErrnoRet")) spec["defaultErrnoRet"] = *errno_ret;

  json architectures = json::array();
  for (const std::string& arch : strings_of(docker_profile, "architectures")) architectures.push_back(arch);
  if (const json* arch_map = member(docker_profile, "archMap"); arch_map && !kHostArch.seccomp.empty()) {
    for (const json& entry : *arch_map) {
      if (entry.at("architecture").get_ref<const std::string&>() != kHostArch.seccomp) continue;
      architectures.push_back(entry.at("architecture"));
      for (const std::string& sub : strings_of(entry, "subArchitectures")) architectures.push_back(sub);
      break;
    }
  }
  spec["architectures"] = std::move(architectures);

  json out_calls = json::array();
  std::optional<KernelVersion> kernel;  // read from uname only if a group asks for it
  for (const json& call : syscalls ? *syscalls : json::array()) {
    if (!applies(call, capabilities, kernel)) continue;
    json out = json::object();
    if (const json* name = member(call, "name")) {
      out["names"] = json::array({*name});
    } else {
      out["names"] = member(call, "names") ? call["names"] : json::array();
    }
    out["action"] = call["action"];
    if (const json* errno_ret = member(call, "errnoRet")) out["errnoRet"] = *errno_ret;
    if (const json* args = member(call, "args"); args && !args->empty()) {
      json out_args = json::array();
      for (const json& arg : *args) {
        const json* value_two = member(arg, "valueTwo");
        const json* value = member(arg, "value");
        out_args.push_back({{"index", arg["index"]},
                            {"value", value ? *value : json(0)},
                            {"valueTwo", value_two ? *value_two : json(0)},
                            {"op", arg["op"]}});
      }
      out["args"] = std::move(out_args);
    }
    out_calls.push_back(std::move(out));
  }
  spec["syscalls"] = std::move(out_calls);
  return spec;
}

SeccompFilter SeccompFilter::compile(const nlohmann::json& oci_seccomp) {
  try {
    check_profile(oci_seccomp);
  } catch (const Error&) {
    rethrow_with_context("compile seccomp filter");
  }
  const json* default_action = member(oci_seccomp, "defaultAction");
  if (!default_action) throw InvalidInputError("compile seccomp filter: no defaultAction");
  std::uint32_t default_token = action_token(*default_action, member(oci_seccomp, "defaultErrnoRet"));
  Context ctx(seccomp_init(default_token));
  if (!ctx) {
    throw InvalidInputError(fmt::format("compile seccomp filter: libseccomp refused the default action `{}`",
                                        default_action->get_ref<const std::string&>()));
  }
  // A binary tree of syscall numbers instead of a list: the kernel runs the program for every
  // syscall number once when the filter is installed (to cache the always-allowed ones), and for
  // every call the cache misses, so a few comparisons beat hundreds. Docker's profile installs in
  // 0.2 ms instead of 0.9 ms here.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc != 0) {
    throw_errno("compile seccomp filter: ask libseccomp for a binary tree", -rc);
  }

  for (const std::string& name : strings_of(oci_seccomp, "architectures")) {
    const Arch* arch = find_arch(name);
    if (!arch || arch->token == 0) {
      throw InvalidInputError(
          fmt::format("compile seccomp filter: architecture `{}` is not supported by this libseccomp", name));
    }
    // The native architecture is in every new filter already.
    if (int rc = seccomp_arch_add(ctx.get(), arch->token); rc != 0 && rc != -EEXIST) {
      throw InvalidInputError(
          fmt::format("compile seccomp filter: architecture `{}`: libseccomp: {}", name, std::strerror(-rc)));
    }
  }

  const json* syscalls = member(oci_seccomp, "syscalls");
  for (const json& call : syscalls ? *syscalls : json::array()) {
    std::uint32_t action = action_token(call.at("action"), member(call, "errnoRet"));
    // libseccomp refuses a rule that does what the default does; runc leaves it out too.
    if (action == default_token) continue;

    std::vector<scmp_arg_cmp> conditions;
    std::array<int, kMaxArgIndex + 1> per_index{};
    bool repeated_index = false;
    if (const json* args = member(call, "args")) {
      for (const json& arg : *args) {
        scmp_arg_cmp cmp{};
        cmp.arg = arg.at("index").get<unsigned>();
        cmp.op = operator_of(arg.at("op").get<std::string>());
        const json* value = member(arg, "value");
        const json* value_two = member(arg, "valueTwo");
        cmp.datum_a = value ? value->get<std::uint64_t>() : 0;
        cmp.datum_b = value_two ? value_two->get<std::uint64_t>() : 0;
        repeated_index |= ++per_index[cmp.arg] > 1;
        conditions.push_back(cmp);
      }
    }

    std::vector<std::string> names = strings_of(call, "names");
    if (const json* name = member(call, "name")) names.push_back(name->get<std::string>());
    for (const std::string& name : names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      // Docker skips a name this libseccomp does not know, so one profile serves old and new hosts.
      if (nr == __NR_SCMP_ERROR) continue;
      if (repeated_index) {
        // runc's rule: conditions on the same argument become separate rules (any one matching),
        // since one rule cannot compare one argument twice.
        for (const scmp_arg_cmp& cmp : conditions) {
          if (int rc = seccomp_rule_add_array(ctx.get(), action, nr, 1, &cmp); rc != 0) {
            throw_rule_error(name, rc);
          }
        }
      } else if (int rc = seccomp_rule_add_array(ctx.get(), action, nr,
                                                 static_cast<unsigned>(conditions.size()), conditions.data());
                 rc != 0) {
        throw_rule_error(name, rc);
      }
    }
  }

  // libseccomp writes the program to a file descriptor; a memfd keeps it off the filesystem.
  Fd memfd(::memfd_create("kiln-seccomp-bpf", MFD_CLOEXEC));
  if (!memfd.valid()) throw_errno("compile seccomp filter: memfd_create");
  if (int rc = seccomp_export_bpf(ctx.get(), memfd.get()); rc != 0) {
    throw_errno("compile seccomp filter: export the BPF program", -rc);
  }
  if (::lseek(memfd.get(), 0, SEEK_SET) != 0) throw_errno("compile seccomp filter: rewind the BPF program");
  std::string bytes = read_fd_capped(memfd.get(), std::uint64_t{1} << 20, "seccomp BPF program");
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
    throw Error(fmt::format("compile seccomp filter: libseccomp wrote {} bytes, not a whole BPF program",
                            bytes.size()));
  }
  size_t count = bytes.size() / sizeof(sock_filter);
  if (count > BPF_MAXINSNS) {
    throw InvalidInputError(
        fmt::format("compile seccomp filter: {} BPF instructions, more than the kernel's limit of {}", count,
                    BPF_MAXINSNS));
  }
  std::vector<sock_filter> program(count);
  std::memcpy(program.data(), bytes.data(), bytes.size());
  return SeccompFilter(std::move(program));
}

int SeccompFilter::load() const noexcept {
  // The kernel only reads the program; sock_fprog's pointer is not const for historical reasons.
  sock_fprog prog{static_cast<unsigned short>(program_.size()), const_cast<sock_filter*>(program_.data())};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) return errno;
  return 0;
}

SeccompFilter SeccompFilter::compile_cached(const nlohmann::json& oci_seccomp, const std::string& cache_dir) {
  const scmp_version* version = seccomp_version();
  // The last line names the program's form: a cache written by an older kiln (a plain list) is
  // not taken for a newer one's.
  std::string key_text = fmt::format("{}\n{}\n{}.{}.{}\nbinary-tree\n", oci_seccomp.dump(),
                                     seccomp_arch_native(), version->major, version->minor, version->micro);
  Sha256 hash;
  hash.update(std::as_bytes(std::span(key_text)));
  std::string path = fmt::format("{}/{}.bpf", cache_dir, hash.finish().hex());
  try {
    std::string cached = read_file_capped(path, BPF_MAXINSNS * sizeof(sock_filter), path);
    if (!cached.empty() && cached.size() % sizeof(sock_filter) == 0) {
      std::vector<sock_filter> program(cached.size() / sizeof(sock_filter));
      std::memcpy(program.data(), cached.data(), cached.size());
      return SeccompFilter(std::move(program));
    }
  } catch (const Error&) {
    // Not cached yet (or unreadable): compile it below.
  }
  SeccompFilter filter = compile(oci_seccomp);
  try {
    make_dirs(cache_dir, 0700);
    write_file_atomic(path,
                      std::string_view(reinterpret_cast<const char*>(filter.program_.data()),
                                       filter.program_.size() * sizeof(sock_filter)),
                      Durability::Volatile);  // a cache: one lost to a crash is compiled again
  } catch (const Error&) {
    // A read-only or full store costs the next run another compile, nothing more.
  }
  return filter;
}

}  // namespace kiln::runtime
