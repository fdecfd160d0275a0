// The image model: OCI descriptors, manifests, indexes and image configs, plus the Docker schema2
// media types that mean the same things. Parsed from untrusted bytes with size caps and validation;
// configs keep their original JSON so that unknown fields survive and digests never change.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "layerstore/digest.h"

namespace kiln {

namespace media {
inline constexpr std::string_view kOciLayout = "1.0.0";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayer = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr std::string_view kDockerForeignLayerGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}  // namespace media

namespace annotation {
inline constexpr std::string_view kRefName = "org.opencontainers.image.ref.name";
// containerd and Docker 25+ record the full image name here in saved archives.
inline constexpr std::string_view kContainerdImageName = "io.containerd.image.name";
}  // namespace annotation

bool is_manifest_media_type(std::string_view media_type);  // OCI or Docker single-image manifest
bool is_index_media_type(std::string_view media_type);     // OCI index or Docker manifest list
bool is_layer_media_type(std::string_view media_type);

// Caps on what kiln reads into memory from outside, so a hostile archive or registry cannot make
// it allocate without bound (go-containerregistry and containerd use similar limits).
inline constexpr uint64_t kMaxManifestBytes = 4 << 20;
inline constexpr uint64_t kMaxConfigBytes = 16 << 20;

struct Platform {
  std::string architecture;
  std::string os;
  std::string variant;
  std::string os_version;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;

  nlohmann::ordered_json to_json() const;
  // Throws InvalidInputError naming the field that is missing or malformed.
  static Descriptor from_json(const nlohmann::json& j);
};

struct Manifest {
  std::string media_type;  // kOciManifest or kDockerManifest
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;

  // Canonical bytes kiln writes for a new manifest (stable key order, no whitespace).
  std::string serialize() const;
  static Manifest parse(std::string_view bytes);
};

struct Index {
  std::string media_type;  // kOciIndex or kDockerManifestList; may be empty in index.json
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;

  std::string serialize() const;
  static Index parse(std::string_view bytes);
};

struct HistoryEntry {
  std::string created;
  std::string created_by;
  std::string author;
  std::string comment;
  bool empty_layer = false;
};

// An image config (OCI image-spec config.json, the same document as Docker's image JSON).
class ImageConfig {
 public:
  static ImageConfig parse(std::string_view bytes);
  static ImageConfig from_json(nlohmann::json j) { return ImageConfig(std::move(j)); }

  const nlohmann::json& doc() const { return json_; }
  nlohmann::json& doc() { return json_; }

  std::string architecture() const;
  std::string os() const;
  std::string created() const;
  std::string author() const;
  std::vector<Digest> diff_ids() const;
  std::vector<HistoryEntry> history() const;
  // The "config" object (Env, Cmd, Entrypoint, ...); null when absent.
  const nlohmann::json& container_config() const;

  // Canonical bytes for a config kiln creates (sorted keys, no whitespace).
  std::string serialize() const { return json_.dump(); }

 private:
  explicit ImageConfig(nlohmann::json j) : json_(std::move(j)) {}
  nlohmann::json json_;
};

// The chain IDs of a layer stack (image-spec: ChainID(L0) = DiffID(L0),
// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
std::vector<Digest> chain_ids(const std::vector<Digest>& diff_ids);

// "2024-01-02T03:04:05.123456789Z" for a time in nanoseconds since the epoch, as Docker writes it.
std::string rfc3339_nano(int64_t unix_nanos);
// Parses RFC 3339 (with fraction and offset); nullopt if malformed.
std::optional<int64_t> parse_rfc3339_seconds(std::string_view text);
// The architecture name of this machine in Go's spelling (amd64, arm64, ...).
std::string host_architecture();

}  // namespace kiln
