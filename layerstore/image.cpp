#include "layerstore/image.h"

#include <sys/utsname.h>

#include <ctime>

#include "layerstore/errors.h"

namespace kiln {

using nlohmann::json;
using nlohmann::ordered_json;

bool is_manifest_media_type(std::string_view t) {
  return t == media::kOciManifest || t == media::kDockerManifest;
}
bool is_index_media_type(std::string_view t) {
  return t == media::kOciIndex || t == media::kDockerManifestList;
}
bool is_layer_media_type(std::string_view t) {
  return t == media::kOciLayer || t == media::kOciLayerGzip || t == media::kOciLayerZstd ||
         t == media::kDockerLayer || t == media::kDockerLayerGzip || t == media::kDockerForeignLayerGzip ||
         t == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
}

namespace {

json parse_json(std::string_view bytes, std::string_view what) {
  try {
    json j = json::parse(bytes);
    if (!j.is_object()) throw InvalidInputError(fmt::format("{}: not a JSON object", what));
    return j;
  } catch (const json::exception& e) {
    throw InvalidInputError(fmt::format("{}: invalid JSON: {}", what, e.what()));
  }
}

std::string get_string(const json& j, const char* key, std::string_view what, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw InvalidInputError(fmt::format("{}: missing field `{}`", what, key));
    return {};
  }
  if (!it->is_string()) throw InvalidInputError(fmt::format("{}: field `{}` is not a string", what, key));
  return it->get<std::string>();
}

std::map<std::string, std::string> get_annotations(const json& j, std::string_view what) {
  std::map<std::string, std::string> out;
  auto it = j.find("annotations");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_object()) throw InvalidInputError(fmt::format("{}: `annotations` is not an object", what));
  for (auto& [k, v] : it->items()) {
    if (!v.is_string()) throw InvalidInputError(fmt::format("{}: annotation `{}` is not a string", what, k));
    out[k] = v.get<std::string>();
  }
  return out;
}

}  // namespace

ordered_json Descriptor::to_json() const {
  ordered_json j;
  j["mediaType"] = media_type;
  j["digest"] = digest.str();
  j["size"] = size;
  if (!annotations.empty()) j["annotations"] = annotations;
  if (platform) {
    ordered_json p;
    p["architecture"] = platform->architecture;
    p["os"] = platform->os;
    if (!platform->variant.empty()) p["variant"] = platform->variant;
    if (!platform->os_version.empty()) p["os.version"] = platform->os_version;
    j["platform"] = p;
  }
  return j;
}

Descriptor Descriptor::from_json(const json& j) {
  constexpr std::string_view what = "descriptor";
  if (!j.is_object()) throw InvalidInputError("descriptor: not a JSON object");
  Descriptor d{.media_type = get_string(j, "mediaType", what, false),
               .digest = Digest::parse_or_throw(get_string(j, "digest", what, true), "descriptor digest"),
               .size = 0,
               .annotations = get_annotations(j, what),
               .platform = std::nullopt};
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    throw InvalidInputError(fmt::format("descriptor {}: missing or invalid `size`", d.digest));
  }
  d.size = size->get<int64_t>();
  if (auto p = j.find("platform"); p != j.end() && p->is_object()) {
    d.platform = Platform{get_string(*p, "architecture", what, false), get_string(*p, "os", what, false),
                          get_string(*p, "variant", what, false), get_string(*p, "os.version", what, false)};
  }
  return d;
}

std::string Manifest::serialize() const {
  ordered_json j;
  j["schemaVersion"] = 2;
  j["mediaType"] = media_type;
  j["config"] = config.to_json();
  j["layers"] = ordered_json::array();
  for (const auto& l : layers) j["layers"].push_back(l.to_json());
  if (!annotations.empty()) j["annotations"] = annotations;
  return j.dump();
}

Manifest Manifest::parse(std::string_view bytes) {
  if (bytes.size() > kMaxManifestBytes) throw InvalidInputError("manifest: larger than 4 MiB");
  json j = parse_json(bytes, "manifest");
  auto version = j.find("schemaVersion");
  if (version == j.end() || *version != 2) throw InvalidInputError("manifest: schemaVersion is not 2");
  std::string media_type = get_string(j, "mediaType", "manifest", false);
  if (media_type.empty()) media_type = std::string(media::kOciManifest);
  if (!is_manifest_media_type(media_type)) {
    throw InvalidInputError(fmt::format("manifest: unsupported media type `{}`", media_type));
  }
  if (!j.contains("config")) throw InvalidInputError("manifest: missing field `config`");
  Manifest m{media_type, Descriptor::from_json(j["config"]), {}, get_annotations(j, "manifest")};
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) throw InvalidInputError("manifest: missing `layers` array");
  for (const auto& l : *layers) m.layers.push_back(Descriptor::from_json(l));
  return m;
}

std::string Index::serialize() const {
  ordered_json j;
  j["schemaVersion"] = 2;
  if (!media_type.empty()) j["mediaType"] = media_type;
  j["manifests"] = ordered_json::array();
  for (const auto& m : manifests) j["manifests"].push_back(m.to_json());
  if (!annotations.empty()) j["annotations"] = annotations;
  return j.dump();
}

Index Index::parse(std::string_view bytes) {
  if (bytes.size() > kMaxManifestBytes) throw InvalidInputError("index: larger than 4 MiB");
  json j = parse_json(bytes, "index");
  auto version = j.find("schemaVersion");
  if (version == j.end() || *version != 2) throw InvalidInputError("index: schemaVersion is not 2");
  Index idx;
  idx.media_type = get_string(j, "mediaType", "index", false);
  auto ms = j.find("manifests");
  if (ms == j.end() || !ms->is_array()) throw InvalidInputError("index: missing `manifests` array");
  for (const auto& m : *ms) idx.manifests.push_back(Descriptor::from_json(m));
  idx.annotations = get_annotations(j, "index");
  return idx;
}

ImageConfig ImageConfig::parse(std::string_view bytes) {
  using nlohmann::json;
  if (bytes.size() > kMaxConfigBytes) throw InvalidInputError("image config: larger than 16 MiB");
  json j = parse_json(bytes, "image config");
  ImageConfig c(std::move(j));
  c.diff_ids();  // validates rootfs
  c.history();   // validates history
  return c;
}

std::string ImageConfig::architecture() const {
  return get_string(json_, "architecture", "image config", false);
}
std::string ImageConfig::os() const {
  return get_string(json_, "os", "image config", false);
}
std::string ImageConfig::created() const {
  return get_string(json_, "created", "image config", false);
}
std::string ImageConfig::author() const {
  return get_string(json_, "author", "image config", false);
}

std::vector<Digest> ImageConfig::diff_ids() const {
  std::vector<Digest> out;
  auto rootfs = json_.find("rootfs");
  if (rootfs == json_.end() || !rootfs->is_object()) return out;
  auto ids = rootfs->find("diff_ids");
  if (ids == rootfs->end() || ids->is_null()) return out;
  if (!ids->is_array()) throw InvalidInputError("image config: `rootfs.diff_ids` is not an array");
  for (const auto& id : *ids) {
    if (!id.is_string()) throw InvalidInputError("image config: a diff ID is not a string");
    out.push_back(Digest::parse_or_throw(id.get<std::string>(), "diff ID"));
  }
  return out;
}

std::vector<HistoryEntry> ImageConfig::history() const {
  std::vector<HistoryEntry> out;
  auto h = json_.find("history");
  if (h == json_.end() || h->is_null()) return out;
  if (!h->is_array()) throw InvalidInputError("image config: `history` is not an array");
  for (const auto& e : *h) {
    if (!e.is_object()) throw InvalidInputError("image config: a history entry is not an object");
    HistoryEntry he{get_string(e, "created", "history", false), get_string(e, "created_by", "history", false),
                    get_string(e, "author", "history", false), get_string(e, "comment", "history", false),
                    false};
    if (auto el = e.find("empty_layer"); el != e.end() && el->is_boolean()) he.empty_layer = el->get<bool>();
    out.push_back(std::move(he));
  }
  return out;
}

const nlohmann::json& ImageConfig::container_config() const {
  static const nlohmann::json kNull;
  auto it = json_.find("config");
  return it == json_.end() ? kNull : *it;
}

std::vector<Digest> chain_ids(const std::vector<Digest>& diff_ids) {
  std::vector<Digest> out;
  for (const auto& d : diff_ids) {
    if (out.empty()) {
      out.push_back(d);
    } else {
      out.push_back(sha256_of(out.back().str() + " " + d.str()));
    }
  }
  return out;
}

std::string rfc3339_nano(int64_t unix_nanos) {
  time_t secs = static_cast<time_t>(unix_nanos / 1000000000);
  int64_t frac = unix_nanos % 1000000000;
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string s = buf;
  if (frac != 0) {
    std::string f = fmt::format("{:09d}", frac);
    while (!f.empty() && f.back() == '0') f.pop_back();
    s += "." + f;
  }
  return s + "Z";
}

std::optional<int64_t> parse_rfc3339_seconds(std::string_view text) {
  struct tm tm {};
  std::string s(text);
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return std::nullopt;
  int64_t secs = timegm(&tm);
  if (*end == '.') {
    ++end;
    while (*end >= '0' && *end <= '9') ++end;
  }
  if (*end == 'Z' || *end == 'z') return secs;
  if (*end == '+' || *end == '-') {
    int sign = *end == '+' ? 1 : -1;
    int hh = 0, mm = 0;
    if (sscanf(end + 1, "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
    return secs - sign * (hh * 3600 + mm * 60);
  }
  return std::nullopt;
}

std::string host_architecture() {
  struct utsname u {};
  uname(&u);
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m == "i686" || m == "i386") return "386";
  if (m.starts_with("armv7")) return "arm";
  return m;
}

}  // namespace kiln
