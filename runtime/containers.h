// Containers kept in the store: one directory per container under ROOT/containers/<id>/ holding
// kiln's record of it (container.json), the spec it ran with (config.json), its writable layer
// (upper/, with overlay's work/), the mount point of its root (rootfs/), and the files Docker
// provides to every container (hostname, hosts, resolv.conf).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/files.h"

namespace kiln::runtime {

struct ContainerRecord {
  std::string id;  // 64 hex digits; Docker shows the first 12
  std::string name;
  std::string image_id;    // sha256:<hex> of the image config
  std::string image_name;  // as the user named it
  std::vector<std::string> command;
  std::string created;  // RFC 3339, UTC
  std::string state;    // "created", "running", "exited"
  int exit_code = 0;
  std::string finished;  // RFC 3339, UTC, once exited
  int pid = 0;           // while running
  // The config the container runs with, as Docker keeps it: the image config's "config" object
  // merged with the run flags (Cmd, Entrypoint, Env, WorkingDir, User). Null in records written
  // before kiln kept it.
  nlohmann::json config;

  std::string short_id() const { return id.substr(0, 12); }
  nlohmann::json to_json() const;
  static ContainerRecord from_json(const nlohmann::json& j);
};

class ContainerStore {
 public:
  // `store_root` is the image store's root; containers live under its containers/ folder.
  explicit ContainerStore(const std::string& store_root);

  // Makes the directory of a new container with a fresh ID and the given name (or a generated one,
  // adjective_surname as Docker makes them), under the containers lock so that two runs cannot
  // take one name. Throws UsageError when the name is invalid or in use, naming the holder.
  // `id` comes from new_container_id(), chosen by the caller so that it can prepare the container's
  // spec (which names it) before anything is written.
  ContainerRecord create(const std::string& id, const std::optional<std::string>& name,
                         const std::string& image_id, const std::string& image_name,
                         const std::vector<std::string>& command);
  std::string dir(const ContainerRecord& container) const { return root_ + "/" + container.id; }
  // Writes the record atomically.
  void save(const ContainerRecord& container) const;
  // Every container, newest first. Unreadable records are skipped.
  std::vector<ContainerRecord> list() const;
  // By name, full ID or unique ID prefix. Throws NotFoundError("no such container: `x`").
  ContainerRecord resolve(std::string_view name_or_id) const;
  // Removes the container's directory (its writable layer with it).
  void remove(const ContainerRecord& container) const;

 private:
  std::string root_;
  std::string lock_path_;
};

// A new container ID: 64 random hex digits.
std::string new_container_id();
// The current time as Docker writes it in container records (RFC 3339, UTC, nanoseconds).
std::string rfc3339_now();

// Docker's rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ .
bool valid_container_name(std::string_view name);

}  // namespace kiln::runtime
