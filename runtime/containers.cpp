#include "runtime/containers.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>

#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "runtime/sandbox.h"

namespace kiln::runtime {
namespace {

constexpr uint64_t kMaxRecordBytes = 1 << 20;

// Docker's generator pairs an adjective with a notable scientist or engineer; these lists are
// kiln's own.
constexpr std::array kAdjectives = {
    "amazing", "bold",  "brave",  "calm",   "clever",  "eager",    "elated",   "focused", "gallant", "happy",
    "jolly",   "keen",  "kind",   "loving", "modest",  "nifty",    "quirky",   "relaxed", "serene",  "sharp",
    "stoic",   "sweet", "tender", "upbeat", "vibrant", "wizardly", "youthful", "zealous"};
constexpr std::array kSurnames = {"babbage", "bohr",    "curie",   "darwin",   "dijkstra", "einstein",
                                  "euler",   "faraday", "feynman", "gauss",    "hopper",   "hypatia",
                                  "kepler",  "knuth",   "lamarr",  "lovelace", "meitner",  "newton",
                                  "noether", "pascal",  "ritchie", "shannon",  "thompson", "turing",
                                  "volta",   "wozniak", "yalow",   "zuse"};

std::string generated_name(int attempt) {
  std::string bits = random_hex(4);
  uint32_t value = static_cast<uint32_t>(std::stoul(bits, nullptr, 16));
  std::string name = fmt::format("{}_{}", kAdjectives[value % kAdjectives.size()],
                                 kSurnames[(value / kAdjectives.size()) % kSurnames.size()]);
  // As Docker does after a collision: a digit makes the name unique again.
  if (attempt > 0) name += std::to_string(value % 10);
  return name;
}

// Alive and not a zombie: a container whose kiln was killed can leave its PID 1 unreaped for a
// while under an init that reaps slowly.
bool process_alive(int pid) {
  if (pid <= 0) return false;
  std::string stat;
  try {
    stat = read_file_capped(fmt::format("/proc/{}/stat", pid), 4096, "process status");
  } catch (const Error&) {
    return false;
  }
  // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the state follows the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

}  // namespace

std::string rfc3339_now() {
  auto now = std::chrono::system_clock::now();
  auto seconds = std::chrono::floor<std::chrono::seconds>(now);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now - seconds).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:09}Z",
                     fmt::gmtime(std::chrono::system_clock::to_time_t(seconds)), nanos);
}

std::string new_container_id() {
  return random_hex(32);
}

bool valid_container_name(std::string_view name) {
  if (name.size() < 2) return false;
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (!alnum(name.front())) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

nlohmann::json ContainerRecord::to_json() const {
  nlohmann::json j = {{"Id", id},
                      {"Name", name},
                      {"ImageId", image_id},
                      {"ImageName", image_name},
                      {"Command", command},
                      {"Created", created},
                      {"State", state},
                      {"ExitCode", exit_code},
                      {"FinishedAt", finished},
                      {"Pid", pid}};
  if (!config.is_null()) j["Config"] = config;
  return j;
}

ContainerRecord ContainerRecord::from_json(const nlohmann::json& j) {
  ContainerRecord r;
  r.id = j.at("Id").get<std::string>();
  r.name = j.value("Name", "");
  r.image_id = j.value("ImageId", "");
  r.image_name = j.value("ImageName", "");
  r.command = j.value("Command", std::vector<std::string>{});
  r.created = j.value("Created", "");
  r.state = j.value("State", "created");
  r.exit_code = j.value("ExitCode", 0);
  r.finished = j.value("FinishedAt", "");
  r.pid = j.value("Pid", 0);
  if (auto it = j.find("Config"); it != j.end() && it->is_object()) r.config = *it;
  return r;
}

ContainerStore::ContainerStore(const std::string& store_root)
    : root_(store_root + "/containers"), lock_path_(store_root + "/locks/containers.lock") {
  make_dirs(root_, 0700);
  make_dirs(store_root + "/locks", 0700);
}

ContainerRecord ContainerStore::create(const std::string& id, const std::optional<std::string>& name,
                                       const std::string& image_id, const std::string& image_name,
                                       const std::vector<std::string>& command) {
  if (name && !valid_container_name(*name)) {
    throw UsageError(
        fmt::format("invalid container name (\"{}\"), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", *name));
  }
  FileLock lock(lock_path_, FileLock::Kind::Exclusive);
  std::vector<ContainerRecord> existing = list();
  auto holder = [&](const std::string& candidate) -> const ContainerRecord* {
    auto it = std::find_if(existing.begin(), existing.end(),
                           [&](const ContainerRecord& c) { return c.name == candidate; });
    return it == existing.end() ? nullptr : &*it;
  };
  ContainerRecord record;
  if (name) {
    if (const ContainerRecord* taken = holder(*name)) {
      throw UsageError(
          fmt::format("the container name \"/{}\" is already in use by container \"{}\". You have to remove "
                      "(or rename) that "
                      "container to be able to reuse that name",
                      *name, taken->id));
    }
    record.name = *name;
  } else {
    for (int attempt = 0;; ++attempt) {
      record.name = generated_name(attempt);
      if (!holder(record.name)) break;
      if (attempt > 100) throw Error("generate a container name: every name tried is in use");
    }
  }
  record.id = id;
  record.image_id = image_id;
  record.image_name = image_name;
  record.command = command;
  record.created = rfc3339_now();
  record.state = "created";
  std::string path = dir(record);
  if (::mkdir(path.c_str(), 0700) != 0) throw_errno(fmt::format("create container directory `{}`", path));
  save(record);
  return record;
}

void ContainerStore::save(const ContainerRecord& container) const {
  // A container is scratch state: it must appear whole, not survive a power cut (Docker does not
  // flush it either), and a flush per save would cost every run milliseconds on a real disk.
  write_file_atomic(dir(container) + "/container.json", container.to_json().dump(2) + "\n",
                    Durability::Volatile);
}

std::vector<ContainerRecord> ContainerStore::list() const {
  std::vector<ContainerRecord> out;
  Fd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return out;
  for (const std::string& id : list_dir_at(root.get(), root_)) {
    try {
      std::string text = read_file_capped(root_ + "/" + id + "/container.json", kMaxRecordBytes, id);
      ContainerRecord record = ContainerRecord::from_json(nlohmann::json::parse(text));
      // No daemon watches containers: one whose kiln was killed stays "running" on disk. Its
      // process is gone (PID 1 of a PID namespace takes the rest with it), so it is dead, as
      // Docker calls such containers, and rm may remove it.
      if (record.state == "running" && !process_alive(record.pid)) record.state = "dead";
      out.push_back(std::move(record));
    } catch (const std::exception&) {
      // A directory still being created, or a record half-removed: not a container to show.
    }
  }
  std::sort(out.begin(), out.end(),
            [](const ContainerRecord& a, const ContainerRecord& b) { return a.created > b.created; });
  return out;
}

ContainerRecord ContainerStore::resolve(std::string_view name_or_id) const {
  std::vector<ContainerRecord> all = list();
  for (const ContainerRecord& c : all) {
    if (c.name == name_or_id || c.id == name_or_id) return c;
  }
  const ContainerRecord* found = nullptr;
  if (!name_or_id.empty()) {
    for (const ContainerRecord& c : all) {
      if (!c.id.starts_with(name_or_id)) continue;
      if (found)
        throw UsageError(fmt::format("multiple containers match `{}`: give more of the ID", name_or_id));
      found = &c;
    }
  }
  if (!found) throw NotFoundError(fmt::format("no such container: `{}`", name_or_id));
  return *found;
}

void ContainerStore::remove(const ContainerRecord& container) const {
  // The record goes first, so that a removal cut short leaves a directory list() ignores rather
  // than a container without its layer.
  std::string path = dir(container);
  if (::unlink((path + "/container.json").c_str()) != 0 && errno != ENOENT) {
    throw_errno(fmt::format("remove container `{}`", container.name));
  }
  remove_as_container_root(path);
}

}  // namespace kiln::runtime
