#include "layerstore/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <set>

#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "layerstore/tar.h"

namespace kiln {

using nlohmann::json;

namespace {

constexpr std::string_view kIndexLockName = "index.lock";

bool is_hex_prefix(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

}  // namespace

std::string Store::default_root() {
  if (::geteuid() == 0) return "/var/lib/kiln";
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) return std::string(xdg) + "/kiln";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.local/share/kiln";
  throw Error("cannot find a store location: neither XDG_DATA_HOME nor HOME is set (use --root)");
}

namespace {
std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}
}  // namespace

Store::Store(std::string root, Access access)
    : root_(without_trailing_slashes(std::move(root))),
      access_(access),
      unpacking_(std::make_shared<Unpacking>()) {
  try {
    make_dirs(root_ + "/locks", 0700);
    gc_lock_.emplace(root_ + "/locks/gc.lock",
                     access == Access::Exclusive ? FileLock::Kind::Exclusive : FileLock::Kind::Shared);
  } catch (...) {
    rethrow_with_context(fmt::format("open store `{}`", root_));
  }
  prepare();
}

Store::Store(std::string root, FileLock exclusive_lock)
    : root_(std::move(root)),
      access_(Access::Exclusive),
      gc_lock_(std::move(exclusive_lock)),
      unpacking_(std::make_shared<Unpacking>()) {
  prepare();
}

std::optional<Store> Store::try_open_exclusive(std::string root) {
  root = without_trailing_slashes(std::move(root));
  std::optional<FileLock> lock;
  try {
    make_dirs(root + "/locks", 0700);
    lock = FileLock::try_acquire(root + "/locks/gc.lock", FileLock::Kind::Exclusive);
  } catch (...) {
    rethrow_with_context(fmt::format("open store `{}`", root));
  }
  if (!lock) return std::nullopt;
  return Store(std::move(root), std::move(*lock));
}

void Store::prepare() {
  try {
    make_dirs(layout_dir() + "/blobs/sha256");
    make_dirs(root_ + "/layers");
    make_dirs(root_ + "/snapshots", 0700);
    make_dirs(tmp_dir(), 0700);
    if (!path_exists(layout_dir() + "/oci-layout")) {
      write_file_atomic(layout_dir() + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    }
    if (!path_exists(layout_dir() + "/index.json")) {
      FileLock lock(root_ + "/locks/" + std::string(kIndexLockName), FileLock::Kind::Exclusive);
      if (!path_exists(layout_dir() + "/index.json")) write_index({});
    }
  } catch (...) {
    rethrow_with_context(fmt::format("open store `{}`", root_));
  }
}

// ---------------------------------------------------------------------------------------- blobs

std::string Store::blob_path(const Digest& d) const {
  return fmt::format("{}/blobs/{}/{}", layout_dir(), d.algorithm_name(), d.hex());
}

bool Store::has_blob(const Digest& d) const {
  return path_exists(blob_path(d));
}

Fd Store::open_blob(const Digest& d) const {
  int fd = ::open(blob_path(d).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw NotFoundError(fmt::format("blob {} is not in the store", d));
    throw_errno(fmt::format("open blob {}", d));
  }
  return Fd(fd);
}

std::unique_ptr<Reader> Store::blob_reader(const Digest& d, uint64_t offset) const {
  return std::make_unique<OwnedPreadReader>(open_blob(d), fmt::format("blob {}", d), offset);
}

std::string Store::read_blob(const Digest& d, uint64_t max_bytes) const {
  Fd fd = open_blob(d);
  std::string data = read_fd_capped(fd.get(), max_bytes, fmt::format("blob {}", d));
  if (d.algorithm() == Digest::Algorithm::Sha256 && sha256_of(data) != d) {
    throw InvalidInputError(fmt::format("blob {}: content does not match its digest (store corrupted)", d));
  }
  return data;
}

Store::BlobWriter::BlobWriter(const Store& store, BlobExpectation expected)
    : store_(store), expected_(std::move(expected)) {
  std::string dir = store.layout_dir() + "/blobs/sha256";
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
  if (fd >= 0) {
    fd_ = Fd(fd);
    return;
  }
  // Filesystems without O_TMPFILE: a named file in tmp/, which prune empties after a crash.
  TempDir probe(store.tmp_dir(), "blob-");
  temp_path_ = probe.release() + "/data";
  fd_ = open_or_throw(temp_path_, O_RDWR | O_CREAT | O_EXCL, 0644);
}

Store::BlobWriter::BlobWriter(const Store& store, const Digest& digest, uint64_t size)
    : store_(store), expected_{.size = size, .digest = digest}, resumable_(true) {
  std::string dir = store.tmp_dir() + "/partial";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno(fmt::format("create `{}`", dir));
  temp_path_ = fmt::format("{}/{}", dir, digest.hex());
  fd_ = open_or_throw(temp_path_, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  // One writer at a time: the lock goes with the descriptor, so a killed writer releases it.
  while (::flock(fd_.get(), LOCK_EX) != 0) {
    if (errno != EINTR) throw_errno(fmt::format("lock `{}`", temp_path_));
  }
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno(fmt::format("stat `{}`", temp_path_));
  uint64_t have = static_cast<uint64_t>(st.st_size);
  if (have > size) {
    // Longer than the blob can be: not a prefix of it.
    if (::ftruncate(fd_.get(), 0) != 0) throw_errno(fmt::format("truncate `{}`", temp_path_));
    have = 0;
  }
  // What is there is hashed again: the digest covers the whole blob, and the hash state of the
  // interrupted download died with it.
  PreadReader existing(fd_.get(), temp_path_);
  std::vector<std::byte> buffer(have > 0 ? 1 << 20 : 0);
  while (size_ < have) {
    size_t n = existing.read(std::span(buffer).first(std::min<uint64_t>(buffer.size(), have - size_)));
    if (n == 0) break;
    hash_.update(std::span(buffer).first(n));
    size_ += n;
  }
  if (::lseek(fd_.get(), static_cast<off_t>(size_), SEEK_SET) < 0)
    throw_errno(fmt::format("seek `{}`", temp_path_));
  resumed_from_ = size_;
}

Store::BlobWriter::~BlobWriter() {
  if (growing_) growing_->abandon();
  if (hasher_.joinable()) hasher_.join();
  if (resumable_) {
    // Kept for the next try unless its content is known to be wrong.
    if (!published_ && failed_) ::unlink(temp_path_.c_str());
  } else if (!temp_path_.empty() && !published_) {
    ::unlink(temp_path_.c_str());
    ::rmdir(temp_path_.substr(0, temp_path_.rfind('/')).c_str());
  }
}

std::string Store::BlobWriter::name() const {
  return expected_.digest ? fmt::format("blob {}", *expected_.digest) : std::string("new blob");
}

void Store::BlobWriter::write(std::span<const std::byte> data) {
  if (failed_) throw Error(fmt::format("{}: written to after a failed write", name()));
  // Checked before a byte is written: an oversized or endless stream costs no more disk than it
  // announced.
  if (expected_.size && data.size() > *expected_.size - size_) {
    failed_ = true;
    throw InvalidInputError(fmt::format("{}: more than the expected {} bytes", name(), *expected_.size));
  }
  failed_ = true;  // until the write and the hash have both taken the bytes
  FdWriter(fd_.get(), "new blob").write(data);
  size_ += data.size();
  if (growing_) growing_->grew(size_);
  // A hashing thread takes the bytes from the file.
  if (!hasher_.joinable()) hash_.update(data);
  failed_ = false;
}

GrowingFile& Store::BlobWriter::follow() {
  if (!growing_) growing_ = std::make_unique<GrowingFile>(fd_.get(), size_);
  return *growing_;
}

void Store::BlobWriter::hash_in_background() {
  if (hasher_.joinable()) return;
  // From size_ on: what a resumed download found is hashed already.
  hasher_ = std::thread([this, &written_so_far = follow(), from = size_] {
    try {
      GrowingFile::Reader written(written_so_far, name(), from);
      std::vector<std::byte> buffer(1 << 20);
      while (size_t n = written.read(buffer)) hash_.update(std::span(buffer).first(n));
    } catch (...) {
      hasher_error_ = std::current_exception();
    }
  });
}

Digest Store::BlobWriter::seal(const std::optional<Digest>& expected, std::optional<uint64_t> expected_size) {
  if (failed_) throw Error(fmt::format("{}: sealed after a failed write", name()));
  if (growing_) growing_->finish();
  if (hasher_.joinable()) {
    hasher_.join();
    if (hasher_error_) std::rethrow_exception(hasher_error_);  // reading the file back failed
  }
  Digest got = hash_.finish();
  for (const std::optional<Digest>& want : {expected_.digest, expected}) {
    if (want && *want != got) {
      failed_ = true;
      throw InvalidInputError(fmt::format("blob {}: digest mismatch (content hashes to {})", *want, got));
    }
  }
  for (std::optional<uint64_t> want : {expected_.size, expected_size}) {
    if (want && *want != size_) {
      failed_ = true;
      throw InvalidInputError(
          fmt::format("blob {}: size mismatch (expected {} bytes, got {})", got, *want, size_));
    }
  }
  if (::fsync(fd_.get()) != 0) throw_errno("fsync new blob");
  digest_ = got;
  return got;
}

void Store::BlobWriter::publish() {
  if (!digest_) throw Error("publish blob: not sealed");
  std::string dest = store_.blob_path(*digest_);
  if (temp_path_.empty()) {
    std::string proc = fmt::format("/proc/self/fd/{}", fd_.get());
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      if (errno == EEXIST) {
        // Content-addressed: the same bytes are already there.
      } else if (errno == ENOENT && ::linkat(fd_.get(), "", AT_FDCWD, dest.c_str(), AT_EMPTY_PATH) == 0) {
        // /proc is not mounted; AT_EMPTY_PATH works with CAP_DAC_READ_SEARCH.
      } else if (errno != EEXIST) {
        throw_errno(fmt::format("store blob {}", *digest_));
      }
    }
  } else {
    if (::rename(temp_path_.c_str(), dest.c_str()) != 0) throw_errno(fmt::format("store blob {}", *digest_));
    // tmp/partial stays: another writer may be about to create its file there.
    if (!resumable_) ::rmdir(temp_path_.substr(0, temp_path_.rfind('/')).c_str());
  }
  published_ = true;
  fsync_dir(store_.layout_dir() + "/blobs/sha256");
}

std::unique_ptr<Store::BlobWriter> Store::new_blob(BlobExpectation expected) const {
  return std::unique_ptr<BlobWriter>(new BlobWriter(*this, std::move(expected)));
}

std::unique_ptr<Store::BlobWriter> Store::resumable_blob(const Digest& digest, uint64_t size) const {
  return std::unique_ptr<BlobWriter>(new BlobWriter(*this, digest, size));
}

Digest Store::put_blob(std::string_view bytes) {
  Digest d = sha256_of(bytes);
  if (has_blob(d)) return d;
  auto w = new_blob({.size = bytes.size(), .digest = d});
  w->write(as_bytes(bytes));
  w->seal();
  w->publish();
  return d;
}

// ------------------------------------------------------------------------------- layer metadata

void Store::record_layer(const Digest& blob, const LayerInfo& info) {
  json j;
  j["diff_id"] = info.diff_id.str();
  j["uncompressed_size"] = info.uncompressed_size;
  write_file_atomic(fmt::format("{}/layers/{}.json", root_, blob.hex()), j.dump());
}

std::optional<LayerInfo> Store::layer_info(const Digest& blob) const {
  std::string path = fmt::format("{}/layers/{}.json", root_, blob.hex());
  if (!path_exists(path)) return std::nullopt;
  try {
    json j = json::parse(read_file_capped(path, 4096, "layer record"));
    return LayerInfo{Digest::parse_or_throw(j.at("diff_id").get<std::string>()),
                     j.at("uncompressed_size").get<uint64_t>()};
  } catch (const json::exception&) {
    return std::nullopt;  // a damaged record only costs the size column; the blob is the truth
  }
}

// --------------------------------------------------------------------------------------- index

std::vector<Store::IndexEntry> Store::read_index() const {
  std::string path = layout_dir() + "/index.json";
  Index idx = [&] {
    try {
      return Index::parse(read_file_capped(path, kMaxManifestBytes * 4, "index.json"));
    } catch (...) {
      rethrow_with_context(fmt::format("read `{}`", path));
    }
  }();
  std::vector<IndexEntry> out;
  for (auto& d : idx.manifests) {
    IndexEntry e{std::move(d), std::nullopt, std::nullopt, {}};
    if (auto it = e.descriptor.annotations.find(std::string(annotation::kRefName));
        it != e.descriptor.annotations.end()) {
      if (auto id = Digest::from_sha256_hex(it->second)) {
        e.id_alias = id;
      } else if (it->second.find('/') != std::string::npos) {
        e.name = Reference::try_parse(it->second);
      }
      if (!e.id_alias && !e.name) e.foreign_ref = it->second;
    }
    e.descriptor.annotations.clear();
    out.push_back(std::move(e));
  }
  return out;
}

void Store::write_index(const std::vector<IndexEntry>& entries) {
  Index idx;
  idx.media_type = std::string(media::kOciIndex);
  for (const auto& e : entries) {
    Descriptor d = e.descriptor;
    d.annotations.clear();
    if (!e.foreign_ref.empty()) d.annotations[std::string(annotation::kRefName)] = e.foreign_ref;
    if (e.id_alias) d.annotations[std::string(annotation::kRefName)] = e.id_alias->hex();
    if (e.name) d.annotations[std::string(annotation::kRefName)] = e.name->str();
    idx.manifests.push_back(std::move(d));
  }
  write_file_atomic(layout_dir() + "/index.json", idx.serialize());
}

void Store::add_id_alias(std::vector<IndexEntry>& entries, const Descriptor& manifest_descriptor) const {
  for (const auto& e : entries) {
    if (e.id_alias && e.descriptor.digest == manifest_descriptor.digest) return;
  }
  Manifest m = Manifest::parse(read_blob(manifest_descriptor.digest, kMaxManifestBytes));
  // One alias per image ID. The same image stored again in another form (its layers uncompressed,
  // say, so under another manifest) is one image to Docker: the alias moves to the newest
  // manifest, and the older one stays only while names hold it.
  for (auto& e : entries) {
    if (e.id_alias && *e.id_alias == m.config.digest) {
      e.descriptor = manifest_descriptor;
      return;
    }
  }
  entries.push_back({manifest_descriptor, std::nullopt, m.config.digest, {}});
}

void Store::update_index(const std::function<void(std::vector<IndexEntry>&)>& fn) {
  FileLock lock(root_ + "/locks/" + std::string(kIndexLockName), FileLock::Kind::Exclusive);
  auto entries = read_index();
  fn(entries);
  write_index(entries);
}

void Store::set_name(const Descriptor& manifest_descriptor, const std::optional<Reference>& name) {
  Descriptor desc = manifest_descriptor;
  desc.annotations.clear();
  update_index([&](std::vector<IndexEntry>& entries) {
    add_id_alias(entries, desc);
    if (!name) return;
    // A name names one image: moving it leaves the previous holder, as Docker does, untagged.
    std::erase_if(entries, [&](const IndexEntry& e) { return e.name && *e.name == *name; });
    entries.push_back({desc, name, std::nullopt, {}});
  });
}

bool Store::remove_name(const Reference& name, bool keep_untagged) {
  bool found = false;
  update_index([&](std::vector<IndexEntry>& entries) {
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const IndexEntry& e) { return e.name && *e.name == name; });
    if (it == entries.end()) return;
    found = true;
    Digest manifest = it->descriptor.digest;
    entries.erase(it);
    bool still_named = std::any_of(entries.begin(), entries.end(), [&](const IndexEntry& e) {
      return e.name && e.descriptor.digest == manifest;
    });
    if (!still_named && !keep_untagged) {
      std::erase_if(entries, [&](const IndexEntry& e) { return e.descriptor.digest == manifest; });
    }
  });
  return found;
}

void Store::remove_image(const Digest& manifest_digest) {
  update_index([&](std::vector<IndexEntry>& entries) {
    std::erase_if(entries, [&](const IndexEntry& e) { return e.descriptor.digest == manifest_digest; });
  });
}

Image Store::load_image(const Descriptor& manifest_descriptor) const {
  try {
    Manifest m = Manifest::parse(read_blob(manifest_descriptor.digest, kMaxManifestBytes));
    ImageConfig c = ImageConfig::parse(read_blob(m.config.digest, kMaxConfigBytes));
    return Image{manifest_descriptor, std::move(m), std::move(c), {}};
  } catch (...) {
    rethrow_with_context(fmt::format("image {}", manifest_descriptor.digest));
  }
}

std::vector<Store::ListedImage> Store::listed_images() const {
  std::vector<ListedImage> out;
  std::map<Digest, size_t> by_manifest;
  for (auto& e : read_index()) {
    if (!is_manifest_media_type(e.descriptor.media_type)) continue;  // indexes: not an image by themselves
    auto [it, added] = by_manifest.try_emplace(e.descriptor.digest, out.size());
    if (added) out.push_back({std::move(e.descriptor), {}});
    if (e.name) out[it->second].names.push_back(std::move(*e.name));
  }
  for (auto& listed : out) {
    std::sort(listed.names.begin(), listed.names.end(),
              [](const Reference& a, const Reference& b) { return a.str() < b.str(); });
  }
  return out;
}

std::vector<Image> Store::images() const {
  std::vector<Image> out;
  for (auto& listed : listed_images()) {
    out.push_back(load_image(listed.descriptor));
    out.back().names = std::move(listed.names);
  }
  return out;
}

Image Store::resolve(std::string_view name_or_id) const {
  std::string text(name_or_id);
  // A name first, as Docker does: "abc" is a repository before it is an ID prefix. Names are in
  // the index itself: only the image named is read (every `kiln run` resolves one), and a broken
  // image elsewhere in the store does not stand in the way.
  if (auto ref = Reference::try_parse(text)) {
    for (auto& listed : listed_images()) {
      bool match = false;
      if (ref->digest()) {
        bool repo_matches =
            ref->tag() || std::any_of(listed.names.begin(), listed.names.end(), [&](const Reference& n) {
              return n.repository() == ref->repository();
            });
        match = listed.descriptor.digest == *ref->digest() && (repo_matches || listed.names.empty());
      } else {
        match = std::find(listed.names.begin(), listed.names.end(), *ref) != listed.names.end();
      }
      if (match) {
        Image img = load_image(listed.descriptor);
        img.names = std::move(listed.names);
        return img;
      }
    }
    if (ref->digest()) {
      if (std::optional<Image> img = resolve_repo_digest(*ref)) return *img;
    }
  }
  std::string hex = text;
  if (hex.starts_with("sha256:")) hex = hex.substr(7);
  if (is_hex_prefix(hex)) {
    // Image IDs are config digests, named inside the manifests: these need reading.
    std::vector<Image> all = images();
    const Image* found = nullptr;
    for (const auto& img : all) {
      bool match = img.id().hex().starts_with(hex) ||
                   (hex.size() == 64 && img.manifest_descriptor.digest.hex() == hex);
      if (!match) continue;
      if (found && found->id() != img.id()) {
        throw NotFoundError(fmt::format("`{}` is ambiguous: more than one image ID starts with it", text));
      }
      found = &img;
    }
    if (found) return *found;
  }
  throw NotFoundError(fmt::format("no such image: `{}`", text));
}

uint64_t Store::image_size(const Image& image) const {
  uint64_t total = 0;
  for (const auto& l : image.manifest.layers) {
    auto info = layer_info(l.digest);
    total += info ? info->uncompressed_size : static_cast<uint64_t>(l.size);
  }
  return total;
}

// ------------------------------------------------------------------------------------ snapshots

struct Store::Unpacking {
  std::mutex mutex;
  std::condition_variable done;
  std::set<std::string> in_progress;  // chain ID hex
};

std::string Store::snapshot_diff_dir(const Digest& chain_id) const {
  return fmt::format("{}/snapshots/{}/diff", root_, chain_id.hex());
}

std::vector<std::string> Store::snapshot_dirs(const Image& image) {
  auto diff_ids = image.config.diff_ids();
  if (diff_ids.size() != image.manifest.layers.size()) {
    throw InvalidInputError(fmt::format("image {}: {} layers in the manifest but {} diff IDs in the config",
                                        image.id().short_id(), image.manifest.layers.size(),
                                        diff_ids.size()));
  }
  return snapshot_dirs(image.manifest.layers, diff_ids);
}

std::vector<std::string> Store::snapshot_dirs(const std::vector<Descriptor>& layers,
                                              const std::vector<Digest>& diff_ids) {
  if (diff_ids.size() != layers.size()) {
    throw InvalidInputError(
        fmt::format("{} layers but {} diff IDs: the stack does not add up", layers.size(), diff_ids.size()));
  }
  auto chains = chain_ids(diff_ids);
  std::vector<std::string> dirs;
  for (size_t i = 0; i < chains.size(); ++i) {
    std::string final_dir = fmt::format("{}/snapshots/{}", root_, chains[i].hex());
    dirs.push_back(final_dir + "/diff");
    if (path_exists(final_dir)) continue;
    {
      std::unique_lock lock(unpacking_->mutex);
      unpacking_->done.wait(lock, [&] { return unpacking_->in_progress.count(chains[i].hex()) == 0; });
      if (path_exists(final_dir)) continue;
      unpacking_->in_progress.insert(chains[i].hex());
    }
    struct Finished {
      Unpacking& unpacking;
      std::string chain;
      ~Finished() {
        std::lock_guard lock(unpacking.mutex);
        unpacking.in_progress.erase(chain);
        unpacking.done.notify_all();
      }
    } finished{*unpacking_, chains[i].hex()};
    const Descriptor& layer = layers[i];
    TempDir tmp(root_ + "/snapshots", ".tmp-");
    make_dirs(tmp.path() + "/diff");
    try {
      Fd blob = open_blob(layer.digest);
      FdReader raw(blob.get(), layer.digest.str());
      auto tar = open_decompressed(raw, nullptr);
      HashingReader diff_hash(*tar);
      Fd root = open_or_throw(tmp.path() + "/diff", O_RDONLY | O_DIRECTORY);
      // extract_tar reads to the very end, so the hash covers every byte.
      extract_tar(diff_hash, root.get(), ExtractOptions{WhiteoutMode::Overlay, ::geteuid() == 0});
      if (diff_hash.digest() != diff_ids[i]) {
        throw InvalidInputError(fmt::format("uncompressed content hashes to {}, not diff ID {}",
                                            diff_hash.digest(), diff_ids[i]));
      }
    } catch (...) {
      rethrow_with_context(fmt::format("unpack layer {}", layer.digest));
    }
    write_file_atomic(tmp.path() + "/layer", layer.digest.str() + "\n");
    fsync_dir(tmp.path());
    if (::rename(tmp.path().c_str(), final_dir.c_str()) == 0) {
      tmp.release();
    } else if (errno != EEXIST && errno != ENOTEMPTY) {
      throw_errno(fmt::format("create snapshot {}", chains[i]));
    }  // else another process made the same snapshot first; ours is removed with tmp
  }
  return dirs;
}

std::string Store::adopt_snapshot(const Digest& chain_id, const std::string& dir, const Digest& layer_blob) {
  std::string final_dir = fmt::format("{}/snapshots/{}", root_, chain_id.hex());
  if (path_exists(final_dir)) {
    remove_tree(dir);
    return final_dir + "/diff";
  }
  TempDir tmp(root_ + "/snapshots", ".tmp-");
  if (::rename(dir.c_str(), (tmp.path() + "/diff").c_str()) != 0) {
    throw_errno(fmt::format("move `{}` into snapshot {}", dir, chain_id));
  }
  write_file_atomic(tmp.path() + "/layer", layer_blob.str() + "\n");
  fsync_dir(tmp.path());
  if (::rename(tmp.path().c_str(), final_dir.c_str()) == 0) {
    tmp.release();
  } else if (errno != EEXIST && errno != ENOTEMPTY) {
    throw_errno(fmt::format("create snapshot {}", chain_id));
  }  // else another thread or process made the same snapshot first; ours goes with tmp
  return final_dir + "/diff";
}

// ---------------------------------------------------------------------------------- build cache

std::string Store::cache_record_path(std::string_view key) const {
  if (key.size() != 64 || !is_hex_prefix(key))
    throw Error(fmt::format("build cache key `{}` is not 64 hex digits", key));
  return fmt::format("{}/cache/build/{}.json", root_, key);
}

void Store::put_cache_record(std::string_view key, const nlohmann::json& data,
                             const std::vector<Digest>& blobs, const std::vector<Digest>& chains) {
  json record;
  record["data"] = data;
  record["blobs"] = json::array();
  for (const Digest& blob : blobs) record["blobs"].push_back(blob.str());
  record["chains"] = json::array();
  for (const Digest& chain : chains) record["chains"].push_back(chain.hex());
  make_dirs(root_ + "/cache/build", 0700);
  // A record is a hint, rebuilt when lost: it needs to appear whole, not to survive a crash.
  write_file_atomic(cache_record_path(key), record.dump(), Durability::Volatile);
}

std::optional<nlohmann::json> Store::get_cache_record(std::string_view key) const {
  std::string path = cache_record_path(key);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  try {
    json record = json::parse(read_fd_capped(fd.get(), 64 << 20, "build cache record"));
    for (const auto& blob : record.at("blobs")) {
      if (!has_blob(Digest::parse_or_throw(blob.get<std::string>()))) return std::nullopt;
    }
    // Least recently used is what prune_build_cache goes by: the record's mtime.
    ::futimens(fd.get(), nullptr);
    return record.at("data");
  } catch (const json::exception&) {
    return std::nullopt;
  } catch (const InvalidInputError&) {
    return std::nullopt;
  }
}

Store::CachePruneReport Store::prune_build_cache(std::optional<int64_t> max_age_seconds,
                                                 std::optional<uint64_t> keep_bytes) {
  struct Entry {
    std::string path;
    int64_t used = 0;
    std::vector<Digest> blobs;
  };
  std::vector<Entry> entries;
  std::string dir = root_ + "/cache/build";
  for (const auto& name : list_dir(dir)) {
    if (!name.ends_with(".json")) continue;
    Entry entry{dir + "/" + name, 0, {}};
    struct stat st {};
    if (::stat(entry.path.c_str(), &st) != 0) continue;
    entry.used = st.st_mtim.tv_sec;
    try {
      json record = json::parse(read_file_capped(entry.path, 64 << 20, "build cache record"));
      for (const auto& blob : record.at("blobs"))
        entry.blobs.push_back(Digest::parse_or_throw(blob.get<std::string>()));
    } catch (const std::exception&) {
      // Unreadable: removed below like an old one.
      entry.used = 0;
    }
    entries.push_back(std::move(entry));
  }
  // Newest first: what survives the size limit is what was used last.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.used > b.used; });
  int64_t now = ::time(nullptr);
  CachePruneReport report;
  std::set<Digest> counted;
  for (const Entry& entry : entries) {
    bool too_old = entry.used == 0 || (max_age_seconds && now - entry.used > *max_age_seconds);
    uint64_t added = 0;
    for (const Digest& blob : entry.blobs) {
      if (counted.count(blob)) continue;
      struct stat st {};
      if (::stat(blob_path(blob).c_str(), &st) == 0) added += static_cast<uint64_t>(st.st_size);
    }
    bool too_big = keep_bytes && report.kept_bytes + added > *keep_bytes;
    if (too_old || too_big) {
      ::unlink(entry.path.c_str());
      ++report.removed_records;
      continue;
    }
    report.kept_bytes += added;
    counted.insert(entry.blobs.begin(), entry.blobs.end());
  }
  // Small files, but one for every Dockerfile step, context and URL ever built: without this they
  // would only grow.
  const bool everything = keep_bytes && *keep_bytes == 0 && !max_age_seconds;
  if (everything || max_age_seconds) {
    for (const char* side : {"lineage", "checksums", "http"}) {
      std::string side_dir = root_ + "/cache/" + side;
      for (const auto& name : list_dir(side_dir)) {
        std::string path = side_dir + "/" + name;
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (!everything && now - st.st_mtim.tv_sec <= *max_age_seconds) continue;
        if (::unlink(path.c_str()) == 0) ++report.removed_side_files;
      }
    }
  }
  return report;
}

// ---------------------------------------------------------------------------------- repo digests

namespace {

// "domain/path@digest": a repo digest as recorded, whatever tag the reference also names.
std::string repo_digest_line(const Reference& ref) {
  return fmt::format("{}@{}", ref.repository(), ref.digest() ? ref.digest()->str() : "");
}

}  // namespace

void Store::add_repo_digest(const Digest& image_id, const Reference& ref) {
  if (!ref.digest()) throw Error(fmt::format("repo digest `{}`: no digest", ref.str()));
  ::mkdir((root_ + "/registry").c_str(), 0700);
  FileLock lock(root_ + "/locks/" + std::string(kIndexLockName), FileLock::Kind::Exclusive);
  // One image per repo digest, as Docker's reference store keeps it: another that had it loses it.
  remove_repo_digest_locked(ref, image_id);
  // A hint, like Docker's: an image whose record could not be written is found by its name and ID.
  append_record_line(fmt::format("{}/{}", repo_digests_dir(), image_id.hex()), repo_digest_line(ref));
}

std::vector<Reference> Store::repo_digests(const Digest& image_id) const {
  std::vector<Reference> out;
  std::string path = fmt::format("{}/{}", repo_digests_dir(), image_id.hex());
  try {
    for (const std::string& line : read_record_lines(path, 1 << 20, "repo digests record")) {
      std::optional<Reference> ref = Reference::try_parse(line);
      if (ref && ref->digest()) out.push_back(std::move(*ref));
    }
  } catch (const Error&) {
    // Unreadable: the image has none to show.
  }
  return out;
}

bool Store::remove_repo_digest(const Reference& ref) {
  if (!ref.digest()) return false;
  // Under the index lock, as adding is: a line added meanwhile is not lost in the rewrite.
  FileLock lock(root_ + "/locks/" + std::string(kIndexLockName), FileLock::Kind::Exclusive);
  return remove_repo_digest_locked(ref, std::nullopt);
}

bool Store::remove_repo_digest_locked(const Reference& ref, const std::optional<Digest>& except_image) {
  std::string wanted = repo_digest_line(ref);
  bool removed = false;
  for (const std::string& name : list_dir(repo_digests_dir())) {
    if (except_image && name == except_image->hex()) continue;
    std::string path = repo_digests_dir() + "/" + name;
    std::vector<std::string> lines;
    try {
      lines = read_record_lines(path, 1 << 20, "repo digests record");
    } catch (const Error&) {
      continue;  // unreadable: it names nothing resolve() would find
    }
    auto kept = std::remove(lines.begin(), lines.end(), wanted);
    if (kept == lines.end()) continue;
    lines.erase(kept, lines.end());
    removed = true;
    std::string text;
    for (const std::string& line : lines) text += line + "\n";
    write_file_atomic(path, text);
  }
  return removed;
}

std::optional<Image> Store::resolve_repo_digest(const Reference& ref) const {
  std::string wanted = repo_digest_line(ref);
  std::set<Digest> ids;
  for (const std::string& name : list_dir(repo_digests_dir())) {
    std::optional<Digest> id = Digest::from_sha256_hex(name);
    if (!id) continue;
    for (const Reference& known : repo_digests(*id))
      if (repo_digest_line(known) == wanted) ids.insert(*id);
  }
  if (ids.empty()) return std::nullopt;
  std::optional<Image> found;
  for (auto& listed : listed_images()) {
    std::optional<Image> loaded;
    try {
      loaded = load_image(listed.descriptor);
    } catch (const Error&) {
      continue;  // a broken image elsewhere does not stand in the way, as for names
    }
    Image& img = *loaded;
    img.names = std::move(listed.names);
    if (!ids.count(img.id())) continue;
    bool better = !found || (img.config.architecture() == host_architecture() &&
                             found->config.architecture() != host_architecture());
    if (better) found = std::move(img);
  }
  return found;
}

// ------------------------------------------------------------------------------------------ gc

PruneReport Store::prune() {
  if (access_ != Access::Exclusive) throw Error("prune: the store must be opened for exclusive access");
  PruneReport report;
  std::set<Digest> live_blobs;
  std::set<std::string> live_chains;
  std::function<void(const Descriptor&)> mark = [&](const Descriptor& d) {
    if (!live_blobs.insert(d.digest).second) return;
    if (!has_blob(d.digest)) return;
    if (is_index_media_type(d.media_type)) {
      for (const auto& m : Index::parse(read_blob(d.digest, kMaxManifestBytes)).manifests) mark(m);
    } else if (is_manifest_media_type(d.media_type)) {
      Image img = load_image(d);
      live_blobs.insert(img.manifest.config.digest);
      for (const auto& l : img.manifest.layers) live_blobs.insert(l.digest);
      for (const auto& c : chain_ids(img.config.diff_ids())) live_chains.insert(c.hex());
    }
  };
  for (const auto& e : read_index()) mark(e.descriptor);
  // The build cache's records are roots too: their layers, and the snapshots that spare a rebuild
  // the unpacking.
  for (const auto& name : list_dir(root_ + "/cache/build")) {
    try {
      json record =
          json::parse(read_file_capped(root_ + "/cache/build/" + name, 64 << 20, "build cache record"));
      for (const auto& blob : record.at("blobs"))
        live_blobs.insert(Digest::parse_or_throw(blob.get<std::string>()));
      for (const auto& chain : record.at("chains")) live_chains.insert(chain.get<std::string>());
    } catch (const std::exception&) {
      // A damaged record keeps nothing alive; the builder treats it as a miss.
    }
  }

  std::string blob_dir = layout_dir() + "/blobs/sha256";
  for (const auto& name : list_dir(blob_dir)) {
    auto d = Digest::from_sha256_hex(name);
    if (d && live_blobs.count(*d)) continue;
    report.reclaimed_bytes += remove_tree(blob_dir + "/" + name);
    if (d) report.deleted_blobs.push_back(*d);
    ::unlink(fmt::format("{}/layers/{}.json", root_, name).c_str());
  }
  // The repo digests of images whose config went (an image's ID is its config's digest).
  for (const auto& name : list_dir(repo_digests_dir())) {
    auto d = Digest::from_sha256_hex(name);
    if (!d || !live_blobs.count(*d)) ::unlink((repo_digests_dir() + "/" + name).c_str());
  }
  for (const auto& name : list_dir(root_ + "/layers")) {
    std::string hex = name.substr(0, name.find('.'));
    auto d = Digest::from_sha256_hex(hex);
    if (!d || !live_blobs.count(*d)) ::unlink((root_ + "/layers/" + name).c_str());
  }
  for (const auto& name : list_dir(root_ + "/snapshots")) {
    if (live_chains.count(name)) continue;
    report.reclaimed_bytes += remove_tree(root_ + "/snapshots/" + name);
    if (auto d = Digest::from_sha256_hex(name)) report.deleted_snapshots.push_back(*d);
  }
  // No writer holds the gc lock now, so whatever is staged belongs to a crashed process.
  for (const auto& name : list_dir(layout_dir())) {
    if (name.starts_with(".") && name.find(".tmp-") != std::string::npos)
      ::unlink((layout_dir() + "/" + name).c_str());
  }
  for (const auto& name : list_dir(tmp_dir())) report.reclaimed_bytes += remove_tree(tmp_dir() + "/" + name);
  return report;
}

}  // namespace kiln
