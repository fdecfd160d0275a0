#include "builder/cache_key.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "layerstore/files.h"
#include "layerstore/io.h"

namespace kiln::builder {

namespace {
// Raised whenever what a step produces for the same inputs changes, so old records stop matching.
constexpr std::string_view kKeyVersion = "kiln-build-cache-1";
}  // namespace

CacheKey::CacheKey(std::string_view kind) {
  inputs_.emplace_back(std::string(kKeyVersion), std::string(kind));
}

void CacheKey::add(std::string_view name, std::string_view value) {
  inputs_.emplace_back(std::string(name), std::string(value));
  std::string key(name);
  if (!named_.contains(key)) {
    named_[key] = std::string(value);
  } else {
    if (!named_[key].is_array()) named_[key] = nlohmann::json::array({named_[key]});
    named_[key].push_back(std::string(value));
  }
}

void CacheKey::add_list(std::string_view name, const std::vector<std::string>& values) {
  std::string joined;
  for (const std::string& value : values) joined += fmt::format("{}:{};", value.size(), value);
  inputs_.emplace_back(std::string(name), joined);
  named_[std::string(name)] = values;
}

Digest CacheKey::digest() const {
  Sha256 hash;
  for (const auto& [name, value] : inputs_) {
    std::string framed = fmt::format("{}:{}={}:", name.size(), name, value.size());
    hash.update(as_bytes(framed));
    hash.update(as_bytes(value));
  }
  return hash.finish();
}

namespace {

std::map<std::string, std::string> env_map(const nlohmann::json& list) {
  std::map<std::string, std::string> out;
  if (!list.is_array()) return out;
  for (const auto& item : list) {
    if (!item.is_string()) continue;
    std::string entry = item.get<std::string>();
    size_t eq = entry.find('=');
    out[entry.substr(0, eq)] = eq == std::string::npos ? "" : entry.substr(eq + 1);
  }
  return out;
}

// "a changed", "a and b changed", "a, b and 3 more changed".
std::string some_of(const std::vector<std::string>& names, std::string_view verb) {
  std::string out;
  size_t shown = std::min<size_t>(names.size(), 3);
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) out += i + 1 == shown && names.size() == shown ? " and " : ", ";
    out += names[i];
  }
  if (names.size() > shown) out += fmt::format(" and {} more", names.size() - shown);
  return out + " " + std::string(verb);
}

}  // namespace

void save_files(const std::string& path, const FileWalk& walk) {
  AtomicFile out(path, 0600, Durability::Volatile);
  std::string buffer;
  walk([&](std::string_view file, std::string_view digest) {
    if (file.find_first_of("\t\n") != std::string_view::npos) return;  // not representable; rare
    buffer.append(file).append("\t").append(digest).append("\n");
    if (buffer.size() > (1 << 16)) {
      out.write(as_bytes(buffer));
      buffer.clear();
    }
  });
  out.write(as_bytes(buffer));
  out.commit();
}

namespace {

// Calls `line` for every "path\tdigest" line of the file.
bool read_saved_files(const std::string& path,
                      const std::function<void(std::string_view, std::string_view)>& line) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  FdReader reader(fd.get(), path);
  std::string pending;
  std::vector<std::byte> chunk(1 << 16);
  for (;;) {
    size_t n = reader.read(chunk);
    if (n == 0) break;
    pending.append(reinterpret_cast<const char*>(chunk.data()), n);
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      std::string_view text(pending.data() + start, newline - start);
      size_t tab = text.find('\t');
      if (tab != std::string_view::npos) line(text.substr(0, tab), text.substr(tab + 1));
    }
    pending.erase(0, start);
  }
  return true;
}

uint64_t hash_of(std::string_view text) {
  return std::hash<std::string_view>{}(text);
}

}  // namespace

std::optional<FileChanges> compare_files(const std::string& saved, const FileWalk& walk) {
  std::unordered_map<uint64_t, uint64_t> before;  // path hash → digest hash
  if (!read_saved_files(saved, [&](std::string_view path, std::string_view digest) {
        before[hash_of(path)] = hash_of(digest);
      })) {
    return std::nullopt;
  }
  FileChanges changes;
  walk([&](std::string_view path, std::string_view digest) {
    auto it = before.find(hash_of(path));
    if (it == before.end()) {
      changes.added.emplace_back(path);
      return;
    }
    if (it->second != hash_of(digest)) changes.changed.emplace_back(path);
    before.erase(it);
  });
  if (!before.empty()) {
    read_saved_files(saved, [&](std::string_view path, std::string_view) {
      if (before.count(hash_of(path))) changes.removed.emplace_back(path);
    });
  }
  return changes;
}

std::string explain_miss(const nlohmann::json& before, const nlohmann::json& now,
                         const std::vector<std::string>& arg_names, const FileChanges* files) {
  std::vector<std::string> reasons;
  // Files first: a COPY's most common reason.
  if (files) {
    std::vector<std::string> changed = files->changed, added = files->added, removed = files->removed;
    // A directory added or removed stands for what is under it.
    auto topmost = [](std::vector<std::string> paths) {
      std::sort(paths.begin(), paths.end());
      std::vector<std::string> out;
      for (const std::string& path : paths) {
        if (!out.empty() && path.starts_with(out.back() + "/")) continue;
        out.push_back(path);
      }
      return out;
    };
    added = topmost(std::move(added));
    removed = topmost(std::move(removed));
    if (!changed.empty()) reasons.push_back(some_of(changed, "changed"));
    if (!added.empty()) reasons.push_back(some_of(added, "added"));
    if (!removed.empty()) reasons.push_back(some_of(removed, "removed"));
  }
  for (const auto& [name, value] : now.items()) {
    if (name == "parent" || name == "sources") continue;
    if (before.contains(name) && before[name] == value) continue;
    if (name == "env") {
      std::map<std::string, std::string> was = env_map(before.value(name, nlohmann::json::array()));
      std::map<std::string, std::string> is = env_map(value);
      std::vector<std::string> args, envs;
      for (const auto& [key, v] : is) {
        auto it = was.find(key);
        if (it != was.end() && it->second == v) continue;
        (std::find(arg_names.begin(), arg_names.end(), key) != arg_names.end() ? args : envs).push_back(key);
      }
      for (const auto& [key, v] : was) {
        if (is.count(key)) continue;
        (std::find(arg_names.begin(), arg_names.end(), key) != arg_names.end() ? args : envs).push_back(key);
      }
      if (!args.empty())
        reasons.push_back(
            some_of(args, "changed").insert(0, args.size() == 1 ? "build arg " : "build args "));
      if (!envs.empty()) reasons.push_back(some_of(envs, "changed").insert(0, "ENV "));
      continue;
    }
    if (name == "args") {
      reasons.push_back("the command changed");
    } else if (name == "mount") {
      reasons.push_back("its mounts changed");
    } else {
      reasons.push_back(name + " changed");
    }
  }
  if (reasons.empty() && now.contains("sources") &&
      before.value("sources", nlohmann::json()) != now["sources"]) {
    reasons.push_back("its sources changed");
  }
  if (reasons.empty() && before.value("parent", nlohmann::json()) != now.value("parent", nlohmann::json())) {
    reasons.push_back("an earlier step changed");
  }
  if (reasons.empty()) return "the cache has no record of it";
  std::string out;
  for (const std::string& reason : reasons) out += (out.empty() ? "" : "; ") + reason;
  return out;
}

}  // namespace kiln::builder
