#include "runtime/cgroups.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "layerstore/errors.h"
#include "layerstore/files.h"

namespace kiln::runtime {
namespace {

constexpr uint64_t kMaxCgroupFile = 1 << 20;
constexpr int64_t kMinMemory = 6 * 1024 * 1024;  // Docker's linuxMinMemory
constexpr int64_t kCpuPeriodUs = 100000;         // Docker's period for --cpus
constexpr int64_t kMinCpuQuotaUs = 1000;         // the kernel's minimum cfs quota

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    size_t at = text.find(sep);
    out.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return out;
    text.remove_prefix(at + 1);
  }
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view word : split(text, ' ')) {
    while (!word.empty() && (word.back() == '\n' || word.back() == '\t')) word.remove_suffix(1);
    if (!word.empty()) out.emplace_back(word);
  }
  return out;
}

bool contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string read_cgroup_file(const std::string& path) {
  return read_file_capped(path, kMaxCgroupFile, path);
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out.push_back(
          static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

// The directory of `cgroup_path` (from /proc/self/cgroup) in a hierarchy mounted at `mount_point`
// whose mount shows the subtree `mount_root`. A process outside the mounted subtree (a cgroup
// namespace shows "/.." paths) is given the mount point itself.
std::string join_cgroup_path(const std::string& mount_point, const std::string& mount_root,
                             std::string_view cgroup_path) {
  std::string_view rest = cgroup_path;
  if (mount_root != "/") {
    if (rest.starts_with(mount_root) &&
        (rest.size() == mount_root.size() || rest[mount_root.size()] == '/')) {
      rest.remove_prefix(mount_root.size());
    } else {
      rest = "/";
    }
  }
  if (rest.starts_with("/..")) rest = "/";
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  return mount_point + std::string(rest);
}

std::string writable_problem(const std::string& dir) {
  if (::access(dir.c_str(), W_OK) == 0) return "";
  return fmt::format("`{}` is not writable: {}", dir, std::strerror(errno));
}

}  // namespace

// ---- Parsers ----

int64_t parse_memory_size(std::string_view text) {
  auto invalid_size = [&] { return UsageError(fmt::format("invalid size: `{}`", text)); };
  // As go-units: the number runs to the last digit, dot or space; the unit follows it.
  size_t sep = text.find_last_of("0123456789. ");
  if (sep == std::string_view::npos) throw invalid_size();
  std::string_view number = text.substr(0, text[sep] == ' ' ? sep : sep + 1);
  std::string suffix = lower(text.substr(sep + 1));

  bool negative = number.starts_with('-');
  std::string_view digits = negative ? number.substr(1) : number;
  bool has_digit = std::any_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!has_digit || digits.find_first_not_of("0123456789.") != std::string_view::npos ||
      std::count(digits.begin(), digits.end(), '.') > 1) {
    throw invalid_size();
  }
  double size = 0;
  std::string plain(digits);
  if (plain.front() == '.') plain.insert(0, "0");
  auto [end, ec] = std::from_chars(plain.data(), plain.data() + plain.size(), size);
  if (ec != std::errc() || end != plain.data() + plain.size()) throw invalid_size();
  if (negative && size != 0) throw invalid_size();

  auto invalid_suffix = [&] { return UsageError(fmt::format("invalid suffix: `{}`", suffix)); };
  if (!suffix.empty()) {
    if (suffix.size() > 3) throw invalid_suffix();
    if (suffix[0] == 'b') {
      if (suffix.size() > 1) throw invalid_suffix();
    } else {
      size_t power = std::string_view("kmgtp").find(suffix[0]);
      if (power == std::string_view::npos) throw invalid_suffix();
      if ((suffix.size() == 2 && suffix[1] != 'b') || (suffix.size() == 3 && suffix.substr(1) != "ib")) {
        throw invalid_suffix();
      }
      size *= std::ldexp(1.0, 10 * static_cast<int>(power + 1));
    }
  }
  // 2^63 is the first double beyond int64_t.
  if (!(size < 9223372036854775808.0)) throw invalid_size();
  return static_cast<int64_t>(size);
}

std::optional<int64_t> parse_memory_limit(std::string_view text) {
  int64_t bytes = 0;
  try {
    bytes = parse_memory_size(text);
  } catch (const UsageError&) {
    rethrow_with_context("--memory");
  }
  if (bytes == 0) return std::nullopt;
  if (bytes < kMinMemory) throw UsageError("--memory: minimum memory limit allowed is 6MB");
  return bytes;
}

int host_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

std::optional<CpuBandwidth> parse_cpus(std::string_view text, int host_cpus) {
  auto not_rational = [&] {
    return UsageError(fmt::format("--cpus: failed to parse `{}` as a rational number", text));
  };
  auto out_of_range = [&] {
    return UsageError(fmt::format(
        "--cpus: range of CPUs is from 0.01 to {0}.00, as there are only {0} CPUs available", host_cpus));
  };
  // Exact arithmetic in nano-CPUs, as Docker's big.Rat: whole part, then at most nine decimals.
  std::string_view rest = text;
  bool negative = false;
  if (rest.starts_with('-') || rest.starts_with('+')) {
    negative = rest.front() == '-';
    rest.remove_prefix(1);
  }
  size_t dot = rest.find('.');
  std::string_view whole = rest.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  auto all_digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if ((whole.empty() && fraction.empty()) || !all_digits(whole) || !all_digits(fraction))
    throw not_rational();
  while (fraction.size() > 9 && fraction.back() == '0') fraction.remove_suffix(1);
  if (fraction.size() > 9) throw UsageError("--cpus: value is too precise");

  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  if (whole.size() > 9) throw out_of_range();  // beyond any host, and beyond int64 nanos
  int64_t nanos = 0;
  for (char c : whole) nanos = nanos * 10 + (c - '0');
  int64_t fraction_nanos = 0;
  for (size_t i = 0; i < 9; ++i)
    fraction_nanos = fraction_nanos * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
  nanos = nanos * 1000000000 + fraction_nanos;
  if (negative && nanos != 0) throw out_of_range();
  if (nanos == 0) return std::nullopt;
  if (nanos > int64_t{host_cpus} * 1000000000) throw out_of_range();
  int64_t quota = nanos * kCpuPeriodUs / 1000000000;
  if (quota < kMinCpuQuotaUs) throw out_of_range();
  return CpuBandwidth{quota, kCpuPeriodUs};
}

std::optional<int64_t> parse_pids_limit(std::string_view text) {
  int64_t value = 0;
  std::string_view digits = text.starts_with('+') ? text.substr(1) : text;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
    throw UsageError(fmt::format("--pids-limit: invalid number: `{}`", text));
  }
  if (value <= 0) return std::nullopt;
  return value;
}

// ---- Detection ----

std::string CgroupHost::controller_problem(std::string_view controller) const {
  if (mode == CgroupMode::None) return "no cgroup file system is mounted";
  if (uses_v2()) {
    if (!contains(unified_controllers, controller)) {
      return fmt::format(
          "no {} controller in `{}` (controllers: {})", controller, unified_dir,
          unified_controllers.empty() ? "none" : fmt::format("{}", fmt::join(unified_controllers, " ")));
    }
    return writable_problem(unified_dir);
  }
  auto it = v1_dirs.find(std::string(controller));
  if (it == v1_dirs.end()) return fmt::format("no {} controller is mounted (cgroup v1)", controller);
  return writable_problem(it->second);
}

CgroupHost parse_cgroup_host(CgroupMode mode, std::string_view mountinfo, std::string_view self_cgroup) {
  CgroupHost host;
  host.mode = mode;
  if (mode == CgroupMode::None) return host;

  // Mount point and root per hierarchy: "" for cgroup2, else the comma-joined controllers.
  struct Mount {
    std::string point, root;
  };
  std::map<std::string, Mount> mounts;
  std::map<std::string, std::string> hierarchy_of;  // v1 controller → key in `mounts`
  for (std::string_view line : split(mountinfo, '\n')) {
    std::vector<std::string> fields = words(line);
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 4) continue;
    const std::string& type = dash[1];
    Mount mount{unescape_mountinfo(fields[4]), unescape_mountinfo(fields[3])};
    if (type == "cgroup2") {
      // In hybrid mode the v2 hierarchy that matters is the one systemd mounts at …/unified.
      bool preferred = mode == CgroupMode::Unified ? mount.point == "/sys/fs/cgroup"
                                                   : mount.point == "/sys/fs/cgroup/unified";
      if (!mounts.contains("") || preferred) mounts[""] = mount;
    } else if (type == "cgroup") {
      std::vector<std::string> controllers;
      for (std::string_view option : split(dash[3], ',')) {
        static constexpr std::string_view kNotControllers[] = {
            "rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"};
        if (std::find(std::begin(kNotControllers), std::end(kNotControllers), option) !=
                std::end(kNotControllers) ||
            option.find('=') != std::string_view::npos) {
          continue;
        }
        controllers.emplace_back(option);
      }
      if (controllers.empty()) continue;
      std::string key = fmt::format("{}", fmt::join(controllers, ","));
      if (mounts.contains(key)) continue;  // the first mount of a hierarchy wins
      mounts[key] = mount;
      for (const std::string& controller : controllers) hierarchy_of[controller] = key;
    }
  }

  for (std::string_view line : split(self_cgroup, '\n')) {
    std::vector<std::string_view> parts = split(line, ':');
    if (parts.size() < 3) continue;
    std::string_view path = line.substr(parts[0].size() + parts[1].size() + 2);
    if (parts[1].empty()) {
      if (auto it = mounts.find(""); it != mounts.end()) {
        host.unified_dir = join_cgroup_path(it->second.point, it->second.root, path);
      }
      continue;
    }
    if (mode == CgroupMode::Unified) continue;
    for (std::string_view controller : split(parts[1], ',')) {
      auto key = hierarchy_of.find(std::string(controller));
      if (key == hierarchy_of.end()) continue;
      const Mount& mount = mounts[key->second];
      std::string dir = join_cgroup_path(mount.point, mount.root, path);
      // Every controller of the hierarchy, also those /proc/self/cgroup lists by another name.
      for (const auto& [name, hierarchy] : hierarchy_of) {
        if (hierarchy == key->second) host.v1_dirs[name] = dir;
      }
    }
  }
  return host;
}

CgroupHost detect_cgroup_host() {
  CgroupMode mode = CgroupMode::None;
  struct statfs fs {};
  if (::statfs("/sys/fs/cgroup", &fs) != 0) {
    if (errno != ENOENT) throw_errno("detect cgroups: statfs `/sys/fs/cgroup`");
  } else if (fs.f_type == CGROUP2_SUPER_MAGIC) {
    mode = CgroupMode::Unified;
  } else if (fs.f_type == TMPFS_MAGIC) {
    struct statfs unified {};
    bool hybrid = ::statfs("/sys/fs/cgroup/unified", &unified) == 0 && unified.f_type == CGROUP2_SUPER_MAGIC;
    mode = hybrid ? CgroupMode::Hybrid : CgroupMode::Legacy;
  }
  if (mode == CgroupMode::None) return {};
  CgroupHost host =
      parse_cgroup_host(mode, read_file_capped("/proc/self/mountinfo", 16 << 20, "/proc/self/mountinfo"),
                        read_cgroup_file("/proc/self/cgroup"));
  if (!host.unified_dir.empty()) {
    try {
      host.unified_controllers = words(read_cgroup_file(host.unified_dir + "/cgroup.controllers"));
    } catch (const SystemError& e) {
      // A missing cgroup.controllers leaves the list empty; controller_problem() reports that.
      if (e.code() != ENOENT) throw;
    }
  }
  return host;
}

namespace {

// remove(): how long to wait for killed processes to leave the cgroup.
constexpr int kRemoveAttempts = 500;
constexpr auto kRemoveInterval = std::chrono::milliseconds(10);

// The writer's view of a cgroup file: one write(2) of the whole value, as the kernel parses it.
// Returns 0 or the errno.
int write_cgroup_file(const std::string& path, std::string_view value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : (static_cast<size_t>(n) == value.size() ? 0 : EIO);
  ::close(fd);
  return err;
}

void write_or_throw(std::string_view operation, const std::string& path, std::string_view value) {
  if (int err = write_cgroup_file(path, value); err != 0) {
    throw_errno(fmt::format("{}: write `{}`", operation, path), err);
  }
}

// A "key value" line's value from files such as memory.events or memory.oom_control; nullopt when
// the key is missing.
std::optional<int64_t> keyed_value(std::string_view text, std::string_view key) {
  for (std::string_view line : split(text, '\n')) {
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ') {
      std::string_view number = line.substr(key.size() + 1);
      int64_t value = 0;
      auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
      if (ec == std::errc()) return value;
    }
  }
  return std::nullopt;
}

const char* flag_of(std::string_view controller) {
  if (controller == "memory") return "--memory";
  if (controller == "cpu") return "--cpus";
  return "--pids-limit";
}

std::vector<std::string> needed_controllers(const ResourceLimits& limits) {
  std::vector<std::string> out;
  if (limits.memory_bytes) out.emplace_back("memory");
  if (limits.cpu_quota_us) out.emplace_back("cpu");
  if (limits.pids) out.emplace_back("pids");
  return out;
}

bool valid_container_id(std::string_view id) {
  if (id.empty() || id == "." || id == ".." || id.size() > 255) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char c) { return c > ' ' && c != '/' && c < 0x7f; });
}

// Creates `own`/kiln/`id` and returns its path. kiln/ is shared by the containers of this cgroup and
// removed by the last one to go (Cgroup::remove), so it may vanish between the two mkdirs: a few
// attempts. `prepare_parent` runs on kiln/ before the container's directory is made.
template <typename Prepare>
std::string make_container_dir(const std::string& own, const std::string& id, std::string_view operation,
                               Prepare prepare_parent) {
  constexpr int kAttempts = 10;
  std::string parent = own + "/kiln";
  std::string dir = parent + "/" + id;
  for (int attempt = 1;; ++attempt) {
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      throw_errno(fmt::format("{}: mkdir `{}`", operation, parent));
    }
    try {
      prepare_parent(parent);
    } catch (const Error&) {
      if (attempt < kAttempts && !path_exists(parent)) continue;
      throw;
    }
    if (::mkdir(dir.c_str(), 0755) == 0) return dir;
    if (errno == ENOENT && attempt < kAttempts) continue;
    throw_errno(fmt::format("{}: mkdir `{}`", operation, dir));
  }
}

// Pids listed in a cgroup.procs; an unreadable file (the cgroup already gone) lists none.
std::vector<pid_t> pids_in(const std::string& dir) {
  std::vector<pid_t> out;
  std::string text;
  try {
    text = read_cgroup_file(dir + "/cgroup.procs");
  } catch (const Error&) {
    return out;  // intended: rmdir's own error tells what is wrong
  }
  for (std::string_view line : split(text, '\n')) {
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
    if (ec == std::errc() && pid > 0) out.push_back(pid);
  }
  return out;
}

}  // namespace

// ---- Cgroup ----

Cgroup Cgroup::create(const std::string& container_id, const ResourceLimits& limits) {
  if (limits.empty()) return Cgroup();
  return create(container_id, limits, detect_cgroup_host());
}

Cgroup Cgroup::create(const std::string& container_id, const ResourceLimits& limits, const CgroupHost& host) {
  Cgroup cgroup;
  if (limits.empty()) return cgroup;
  if (!valid_container_id(container_id)) {
    throw InvalidInputError(fmt::format("create cgroup: invalid container id `{}`", container_id));
  }
  const std::vector<std::string> needed = needed_controllers(limits);
  for (const std::string& controller : needed) {
    if (std::string problem = host.controller_problem(controller); !problem.empty()) {
      throw Error(
          fmt::format("{}: no writable {} cgroup controller (rootless without cgroup delegation?): {}",
                      flag_of(controller), controller, problem));
    }
  }
  const std::string create_op = fmt::format("create cgroup for `{}`", container_id);

  if (host.uses_v2()) {
    cgroup.v2_ = true;
    // The parent hands the controllers to kiln/, kiln/ to the container's cgroup. Enabling them one
    // at a time names the one the kernel refuses.
    auto enable = [&](const std::string& dir) {
      std::vector<std::string> enabled = words(read_cgroup_file(dir + "/cgroup.subtree_control"));
      for (const std::string& controller : needed) {
        if (contains(enabled, controller)) continue;
        std::string file = dir + "/cgroup.subtree_control";
        if (int err = write_cgroup_file(file, "+" + controller); err != 0) {
          std::string hint = err == EBUSY ? " (cgroup v2 hands no controllers down from a cgroup that holds "
                                            "processes; run kiln in a cgroup of its own, e.g. with "
                                            "`systemd-run --scope -p Delegate=yes`)"
                                          : "";
          throw Error(fmt::format("{}: enable the {} controller: write `{}`: {}{}", flag_of(controller),
                                  controller, file, std::strerror(err), hint));
        }
      }
    };
    enable(host.unified_dir);
    std::string dir = make_container_dir(host.unified_dir, container_id, create_op, enable);
    cgroup.dirs_.push_back(dir);
    for (const std::string& controller : needed) cgroup.controllers_[controller] = dir;
    cgroup.dir_fd_v2_ = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
  } else {
    for (const std::string& controller : needed) {
      const std::string& own = host.v1_dirs.at(controller);
      std::string dir = own + "/kiln/" + container_id;
      if (!contains(cgroup.dirs_, dir)) {
        make_container_dir(own, container_id, create_op, [](const std::string&) {});
        cgroup.dirs_.push_back(dir);
      }
      cgroup.controllers_[controller] = dir;
    }
  }

  if (limits.memory_bytes) {
    std::string dir = cgroup.controllers_.at("memory");
    std::string bytes = std::to_string(*limits.memory_bytes);
    if (cgroup.v2_) {
      // Docker's default --memory-swap is twice --memory: as much swap again as memory.
      if (path_exists(dir + "/memory.swap.max"))
        write_or_throw("set swap limit", dir + "/memory.swap.max", bytes);
      write_or_throw("set memory limit", dir + "/memory.max", bytes);
    } else {
      // memsw must stay at or above the memory limit, so memory goes first into a fresh cgroup.
      write_or_throw("set memory limit", dir + "/memory.limit_in_bytes", bytes);
      if (path_exists(dir + "/memory.memsw.limit_in_bytes")) {
        // Twice a limit beyond half of int64 is no limit ("-1") rather than an overflow.
        int64_t memsw = *limits.memory_bytes > INT64_MAX / 2 ? -1 : *limits.memory_bytes * 2;
        write_or_throw("set memory+swap limit", dir + "/memory.memsw.limit_in_bytes", std::to_string(memsw));
      }
    }
  }
  if (limits.cpu_quota_us) {
    std::string dir = cgroup.controllers_.at("cpu");
    int64_t period = limits.cpu_period_us.value_or(kCpuPeriodUs);
    if (cgroup.v2_) {
      write_or_throw("set cpu limit", dir + "/cpu.max", fmt::format("{} {}", *limits.cpu_quota_us, period));
    } else {
      write_or_throw("set cpu limit", dir + "/cpu.cfs_period_us", std::to_string(period));
      write_or_throw("set cpu limit", dir + "/cpu.cfs_quota_us", std::to_string(*limits.cpu_quota_us));
    }
  }
  if (limits.pids) {
    write_or_throw("set pids limit", cgroup.controllers_.at("pids") + "/pids.max",
                   std::to_string(*limits.pids));
  }
  return cgroup;
}

Cgroup& Cgroup::operator=(Cgroup&& other) noexcept {
  if (this != &other) {
    try {
      remove();
    } catch (...) {
      // Intended, as in the destructor: the old cgroup is given up either way.
    }
    v2_ = other.v2_;
    dirs_ = std::exchange(other.dirs_, {});
    controllers_ = std::exchange(other.controllers_, {});
    dir_fd_v2_ = std::move(other.dir_fd_v2_);
  }
  return *this;
}

Cgroup::~Cgroup() {
  try {
    remove();
  } catch (...) {
    // Intended: a destructor cannot report; callers who must know call remove() themselves.
  }
}

void Cgroup::add_process(pid_t pid) {
  for (const std::string& dir : dirs_) {
    write_or_throw(fmt::format("add process {} to cgroup", pid), dir + "/cgroup.procs", std::to_string(pid));
  }
}

std::optional<int> Cgroup::directory_fd_v2() const {
  if (!dir_fd_v2_.valid()) return std::nullopt;
  return dir_fd_v2_.get();
}

bool Cgroup::oom_killed() const {
  auto it = controllers_.find("memory");
  if (it == controllers_.end()) return false;
  if (v2_) {
    std::string events = read_cgroup_file(it->second + "/memory.events");
    return keyed_value(events, "oom_kill").value_or(0) > 0;
  }
  std::string control = read_cgroup_file(it->second + "/memory.oom_control");
  if (auto kills = keyed_value(control, "oom_kill")) return *kills > 0;
  return keyed_value(control, "under_oom").value_or(0) > 0;
}

std::string Cgroup::directory(std::string_view controller) const {
  auto it = controllers_.find(std::string(controller));
  return it == controllers_.end() ? "" : it->second;
}

void Cgroup::remove() {
  dir_fd_v2_.reset();
  while (!dirs_.empty()) {
    const std::string& dir = dirs_.back();
    bool killed_by_kernel = false;
    for (int attempt = 0;; ++attempt) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY) throw_errno(fmt::format("remove cgroup `{}`", dir));
      if (attempt == kRemoveAttempts) {
        throw Error(fmt::format("remove cgroup `{}`: processes still inside after {} ms", dir,
                                kRemoveAttempts * kRemoveInterval.count()));
      }
      // cgroup.kill (Linux 5.14) kills the whole subtree at once, also processes forking meanwhile.
      if (v2_ && !killed_by_kernel && write_cgroup_file(dir + "/cgroup.kill", "1") == 0) {
        killed_by_kernel = true;
      } else if (!killed_by_kernel) {
        // A pid may exit and be reused between the read and the kill; crun and runc take the same risk.
        for (pid_t pid : pids_in(dir)) ::kill(pid, SIGKILL);
      }
      std::this_thread::sleep_for(kRemoveInterval);
    }
    // The shared kiln/ goes with its last container, so that kiln never keeps the cgroup it was
    // started in from being removed. Intended ignore: EBUSY while other containers still use it.
    ::rmdir(dir.substr(0, dir.rfind('/')).c_str());
    dirs_.pop_back();
  }
  controllers_.clear();
}

}  // namespace kiln::runtime
