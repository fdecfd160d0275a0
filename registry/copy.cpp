#include "registry/copy.h"

#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "layerstore/archive_io.h"
#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "layerstore/fsutil.h"
#include "layerstore/image_ops.h"
#include "layerstore/store.h"
#include "registry/pull.h"

namespace kiln::registry {

// ---------------------------------------------------------------------------------------- the pipe

namespace {

// Thrown at the producer when the reader has gone. Not a kiln::Error, so that no retry loop on the
// producer's side (get_blob's) takes it for a failure worth another try.
struct PipeClosed : std::exception {
  const char* what() const noexcept override { return "the reading end of the pipe is closed"; }
};

}  // namespace

// Fills one buffer at a time outside the lock, and hands it over when it is full: the lock is taken
// once a buffer, not once a write.
class BlobPipe::PipeWriter : public Writer {
 public:
  explicit PipeWriter(BlobPipe& pipe) : pipe_(pipe) {}
  void write(std::span<const std::byte> data) override {
    while (!data.empty()) {
      if (!current_.data) current_ = pipe_.take_free();
      size_t n = std::min(data.size(), pipe_.buffer_size_ - current_.length);
      std::memcpy(current_.data.get() + current_.length, data.data(), n);
      current_.length += n;
      data = data.subspan(n);
      if (current_.length == pipe_.buffer_size_) pipe_.put_full(std::exchange(current_, {}));
    }
  }
  // The last buffer, however full.
  void flush() {
    if (current_.data && current_.length > 0) pipe_.put_full(std::exchange(current_, {}));
  }

 private:
  BlobPipe& pipe_;
  Buffer current_;
};

BlobPipe::BlobPipe(Producer produce, size_t buffers, size_t buffer_size)
    : max_buffers_(std::max<size_t>(buffers, 2)),
      buffer_size_(std::max<size_t>(buffer_size, 1)),
      cancel_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!cancel_.valid()) throw_errno("create an eventfd for a blob pipe");
  thread_ = std::thread([this, produce = std::move(produce)] { run(produce); });
}

BlobPipe::~BlobPipe() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(cancel_.get(), &one, sizeof one);  // cannot fail: a fresh count
  thread_.join();
}

void BlobPipe::run(const Producer& produce) {
  std::exception_ptr error;
  try {
    PipeWriter writer(*this);
    produce(writer, cancel_.get());
    writer.flush();
  } catch (const PipeClosed&) {
    // The reader is gone and wants nothing more: stopping is all there is to do.
  } catch (...) {
    error = std::current_exception();
  }
  std::lock_guard lock(mutex_);
  error_ = error;
  producer_done_ = true;
  changed_.notify_all();
}

BlobPipe::Buffer BlobPipe::take_free() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return closed_ || !free_.empty() || allocated_ < max_buffers_; });
  if (closed_) throw PipeClosed();
  if (!free_.empty()) {
    Buffer buffer = std::move(free_.back());
    free_.pop_back();
    buffer.length = 0;
    return buffer;
  }
  ++allocated_;
  lock.unlock();
  // Made only when needed: a small blob takes one buffer, not four.
  return Buffer{std::unique_ptr<std::byte[]>(new std::byte[buffer_size_]), 0};
}

void BlobPipe::put_full(Buffer buffer) {
  std::lock_guard lock(mutex_);
  if (closed_) throw PipeClosed();
  full_.push_back(std::move(buffer));
  changed_.notify_all();
}

size_t BlobPipe::read(std::span<std::byte> buf) {
  if (buf.empty()) return 0;
  for (;;) {
    if (reading_.data && read_pos_ < reading_.length) {
      size_t n = std::min(buf.size(), reading_.length - read_pos_);
      std::memcpy(buf.data(), reading_.data.get() + read_pos_, n);
      read_pos_ += n;
      if (read_pos_ == reading_.length) {
        // Drained: back to the producer at once, not at the next read.
        std::lock_guard lock(mutex_);
        free_.push_back(std::exchange(reading_, {}));
        read_pos_ = 0;
        changed_.notify_all();
      }
      return n;
    }
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return error_ || !full_.empty() || producer_done_; });
    if (error_) std::rethrow_exception(error_);
    if (full_.empty()) return 0;
    reading_ = std::move(full_.front());
    full_.pop_front();
    read_pos_ = 0;
  }
}

// ------------------------------------------------------------------------------------ locations

namespace {

// skopeo's transports that kiln does not speak: named, so that `dir:x` is not taken for an image.
constexpr std::string_view kOtherTransports[] = {
    "dir:", "containers-storage:", "docker-daemon:", "ostree:", "sif:", "tarball:"};

// "PATH[:REST]": at the first colon, as skopeo splits it (a tag such as
// "docker.io/library/busybox:latest" keeps its own colon).
std::pair<std::string, std::string> split_path(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return {std::string(text), ""};
  return {std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
}

Reference with_default_tag(const Reference& ref) {
  if (ref.tag() || ref.digest()) return ref;
  return Reference::parse(ref.str() + ":latest");
}

std::string tag_or_digest(const Reference& ref) {
  return ref.digest() ? ref.digest()->str() : ref.tag().value_or("latest");
}

}  // namespace

ImageLocation ImageLocation::parse(std::string_view text) {
  ImageLocation loc;
  loc.text = std::string(text);
  auto fail = [&](const std::string& why) -> UsageError {
    return UsageError(fmt::format("`{}`: {}", text, why));
  };
  auto reference = [&](std::string_view ref_text) {
    try {
      return Reference::parse(ref_text);
    } catch (const Error& e) {
      throw fail(e.what());
    }
  };
  if (text.starts_with("docker://")) {
    loc.reference = with_default_tag(reference(text.substr(9)));
  } else if (text.starts_with("docker:")) {
    throw fail("a docker: reference starts with // (docker://NAME[:TAG])");
  } else if (text.starts_with("oci:") || text.starts_with("oci-archive:")) {
    bool archive = text.starts_with("oci-archive:");
    loc.kind = archive ? Kind::OciArchive : Kind::OciLayout;
    std::tie(loc.path, loc.tag) = split_path(text.substr(archive ? 12 : 4));
    if (loc.path.empty())
      throw fail(archive ? "no file (oci-archive:FILE[:TAG])" : "no directory (oci:DIR[:TAG])");
  } else if (text.starts_with("docker-archive:")) {
    loc.kind = Kind::DockerArchive;
    std::string name;
    std::tie(loc.path, name) = split_path(text.substr(15));
    if (loc.path.empty()) throw fail("no file (docker-archive:FILE[:NAME:TAG])");
    if (name.starts_with("@")) throw fail("an image chosen by its position (@N) is not supported: name it");
    if (!name.empty()) {
      try {
        loc.reference = with_default_tag(Reference::parse_tagged(name));
      } catch (const Error& e) {
        throw fail(e.what());
      }
    }
  } else {
    for (std::string_view other : kOtherTransports)
      if (text.starts_with(other))
        throw fail(fmt::format(
            "transport {} is not supported (docker://, oci:, oci-archive:, docker-archive:)", other));
    loc.reference = with_default_tag(reference(text));
  }
  return loc;
}

// --------------------------------------------------------------------------------------- sources

namespace {

std::string media_type_of(std::string_view bytes, const std::string& announced) {
  if (!announced.empty()) return announced;
  auto doc = nlohmann::json::parse(bytes, nullptr, false);
  if (doc.is_object() && doc.contains("mediaType") && doc["mediaType"].is_string())
    return doc["mediaType"].get<std::string>();
  return doc.is_object() && doc.contains("manifests") ? std::string(media::kOciIndex)
                                                      : std::string(media::kOciManifest);
}

// Where an image's manifests and blobs are read from.
class Source {
 public:
  virtual ~Source() = default;
  // The manifest or index the location names.
  virtual FetchedManifest top() = 0;
  // A manifest or index an index names, verified against its digest.
  virtual FetchedManifest manifest(const Descriptor& d) = 0;
  // The blob's bytes from `offset` on, as they are: BlobStream, or the destination, verifies them.
  virtual std::unique_ptr<Reader> open_blob(const Descriptor& d, uint64_t offset) = 0;
  // The registry and repository, for a mount within one registry; null for files.
  virtual const Reference* registry_reference() const { return nullptr; }
};

class RegistrySource : public Source {
 public:
  RegistrySource(const Reference& ref, const RegistryOptions& options)
      : ref_(ref), client_(ref.domain(), options) {}
  FetchedManifest top() override { return client_.get_manifest(ref_.path(), tag_or_digest(ref_)); }
  FetchedManifest manifest(const Descriptor& d) override {
    return client_.get_manifest(ref_.path(), d.digest.str());
  }
  std::unique_ptr<Reader> open_blob(const Descriptor& d, uint64_t offset) override {
    return std::make_unique<BlobPipe>([this, digest = d.digest, offset](Writer& out, int cancel_fd) {
      try {
        client_.get_blob(ref_.path(), digest, offset, out, cancel_fd);
      } catch (const HttpError& e) {
        // get_blob has had its retries: the upload this feeds must not take the failure for one of
        // its own and start the download over again.
        throw Error(e.what());
      }
    });
  }
  const Reference* registry_reference() const override { return &ref_; }

 private:
  Reference ref_;
  RegistryClient client_;
};

// An OCI image layout on disk: index.json, blobs/ALGORITHM/HEX.
class LayoutSource : public Source {
 public:
  LayoutSource(std::string dir, Descriptor top, std::string shown)
      : dir_(std::move(dir)), top_(std::move(top)), shown_(std::move(shown)) {}

  // The entry of DIR/index.json whose ref.name is `tag`; with no tag, the only entry.
  static Descriptor find(const std::string& dir, const std::string& tag, const std::string& shown) {
    std::string path = dir + "/index.json";
    if (!path_exists(path))
      throw NotFoundError(fmt::format("`{}` is not an OCI image layout (no index.json)", shown));
    Index index = Index::parse(read_file_capped(path, kMaxManifestBytes, path));
    std::vector<const Descriptor*> found;
    for (const Descriptor& d : index.manifests) {
      auto name = d.annotations.find(std::string(annotation::kRefName));
      if (tag.empty() || (name != d.annotations.end() && name->second == tag)) found.push_back(&d);
    }
    if (found.size() == 1) return *found.front();
    if (found.empty() && !tag.empty())
      throw NotFoundError(fmt::format("`{}` has no image named `{}`", shown, tag));
    if (found.empty()) throw NotFoundError(fmt::format("`{}` holds no image", shown));
    throw InvalidInputError(
        tag.empty() ? fmt::format("`{}` holds {} images: name one (oci:DIR:TAG)", shown, found.size())
                    : fmt::format("`{}` has {} images named `{}`", shown, found.size(), tag));
  }

  FetchedManifest top() override { return manifest(top_); }
  FetchedManifest manifest(const Descriptor& d) override {
    std::string what = fmt::format("`{}`: manifest {}", shown_, d.digest);
    std::string bytes = read_file_capped(blob_path(d), kMaxManifestBytes, what);
    if (d.digest.algorithm() != Digest::Algorithm::Sha256)
      throw InvalidInputError(fmt::format("{}: only sha256 digests are supported", what));
    Digest actual = sha256_of(bytes);
    if (actual != d.digest)
      throw InvalidInputError(fmt::format("{}: digest mismatch (content is {})", what, actual));
    return FetchedManifest{bytes, media_type_of(bytes, d.media_type), actual};
  }
  std::unique_ptr<Reader> open_blob(const Descriptor& d, uint64_t offset) override {
    std::string path = blob_path(d);
    return std::make_unique<OwnedPreadReader>(open_or_throw(path, O_RDONLY), path, offset);
  }

 private:
  // The digest is valid (algorithm and hex only), so the name cannot leave the layout.
  std::string blob_path(const Descriptor& d) const {
    return fmt::format("{}/blobs/{}/{}", dir_, d.digest.algorithm_name(), d.digest.hex());
  }
  std::string dir_;
  Descriptor top_;
  std::string shown_;
};

// Unpacks an OCI archive's layout (oci-layout, index.json, blobs/ALGORITHM/HEX) into `dir`; other
// members are passed over, and no name can leave `dir`. Blobs are verified later, as they are read.
void unpack_oci_archive(const std::string& file, const std::string& dir, const std::string& shown) {
  Fd fd = open_or_throw(file, O_RDONLY);
  FdReader raw(fd.get(), file);
  Compression found = Compression::None;
  auto plain = open_decompressed(raw, &found);
  ArchiveReader tar(*plain, shown);
  std::vector<std::byte> buf(1 << 20);
  while (archive_entry* e = tar.next()) {
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    const char* raw_name = archive_entry_pathname(e);
    std::string_view name = raw_name ? raw_name : "";
    while (name.starts_with("./") || name.starts_with("/")) name.remove_prefix(name.starts_with("/") ? 1 : 2);
    std::string target;
    if (name == "oci-layout" || name == "index.json") {
      target = fmt::format("{}/{}", dir, name);
    } else if (std::vector<std::string> parts = split_on(name, '/');
               parts.size() == 3 && parts[0] == "blobs" && Digest::parse(parts[1] + ":" + parts[2])) {
      make_dirs(fmt::format("{}/blobs/{}", dir, parts[1]));
      target = fmt::format("{}/blobs/{}/{}", dir, parts[1], parts[2]);
    } else {
      continue;
    }
    Fd out = open_or_throw(target, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FdWriter writer(out.get(), target);
    for (size_t n; (n = tar.read_data(buf)) > 0;) writer.write(std::span(buf).first(n));
  }
  if (!path_exists(dir + "/index.json"))
    throw InvalidInputError(fmt::format("`{}` is not an OCI archive (no index.json)", shown));
}

class OciArchiveSource : public Source {
 public:
  OciArchiveSource(const ImageLocation& loc, const std::string& staging)
      : dir_(staging, "copy-src-"), layout_(open(loc, dir_.path())) {}
  FetchedManifest top() override { return layout_.top(); }
  FetchedManifest manifest(const Descriptor& d) override { return layout_.manifest(d); }
  std::unique_ptr<Reader> open_blob(const Descriptor& d, uint64_t offset) override {
    return layout_.open_blob(d, offset);
  }

 private:
  static LayoutSource open(const ImageLocation& loc, const std::string& dir) {
    std::string shown = "oci-archive:" + loc.path;
    unpack_oci_archive(loc.path, dir, shown);
    return LayoutSource(dir, LayoutSource::find(dir, loc.tag, shown), shown);
  }
  TempDir dir_;
  LayoutSource layout_;
};

// A docker-archive is loaded into a store of its own, the way `kiln load` reads it (every layer
// checked against the config's diff IDs); that store's OCI layout is then the source.
class DockerArchiveSource : public Source {
 public:
  DockerArchiveSource(const ImageLocation& loc, const std::string& staging)
      : dir_(staging, "copy-src-"), store_(dir_.path() + "/store"), layout_(open(loc, store_)) {}
  FetchedManifest top() override { return layout_.top(); }
  FetchedManifest manifest(const Descriptor& d) override { return layout_.manifest(d); }
  std::unique_ptr<Reader> open_blob(const Descriptor& d, uint64_t offset) override {
    return layout_.open_blob(d, offset);
  }

 private:
  static LayoutSource open(const ImageLocation& loc, Store& store) {
    std::string shown = "docker-archive:" + loc.path;
    Fd fd = open_or_throw(loc.path, O_RDONLY);
    FdReader in(fd.get(), loc.path);
    load_images(store, in);
    auto chosen = [&]() -> Descriptor {
      if (loc.reference) {
        try {
          return store.resolve(loc.reference->str()).manifest_descriptor;
        } catch (const NotFoundError&) {
          throw NotFoundError(
              fmt::format("`{}` has no image named `{}`", loc.path, loc.reference->familiar()));
        }
      }
      std::vector<Image> images = store.images();
      if (images.size() != 1)
        throw InvalidInputError(fmt::format("`{}` holds {} images: name one (docker-archive:FILE:NAME:TAG)",
                                            loc.path, images.size()));
      return images.front().manifest_descriptor;
    };
    return LayoutSource(store.layout_dir(), chosen(), shown);
  }
  TempDir dir_;
  Store store_;
  LayoutSource layout_;
};

std::unique_ptr<Source> open_source(const ImageLocation& loc, const CopyOptions& options,
                                    const RegistryOptions& registry_options) {
  switch (loc.kind) {
    case ImageLocation::Kind::Registry:
      return std::make_unique<RegistrySource>(*loc.reference, registry_options);
    case ImageLocation::Kind::OciLayout: {
      std::string shown = "oci:" + loc.path;
      return std::make_unique<LayoutSource>(loc.path, LayoutSource::find(loc.path, loc.tag, shown), shown);
    }
    case ImageLocation::Kind::OciArchive:
      return std::make_unique<OciArchiveSource>(loc, options.staging_dir);
    case ImageLocation::Kind::DockerArchive:
      return std::make_unique<DockerArchiveSource>(loc, options.staging_dir);
  }
  throw Error("unknown transport");  // unreachable: every kind returns above
}

// A blob's bytes from any offset, as put_blob's open(offset) asks for them. One source stream
// serves every request that continues where the last one stopped — a chunked upload's next chunk
// goes on with the same download — and a new one starts only where the upload went back (a resumed
// upload, a PUT tried again). A stream read from the first byte to the last is checked against the
// blob's digest as it goes: a wrong blob fails before its last byte is sent, so the registry never
// completes it.
class BlobStream {
 public:
  using Start = std::function<std::unique_ptr<Reader>(uint64_t offset)>;
  BlobStream(const Descriptor& blob, Start start, std::string what)
      : blob_(blob), start_(std::move(start)), what_(std::move(what)) {}

  std::unique_ptr<Reader> open(uint64_t offset) {
    if (!source_ || offset != position_) {
      source_.reset();  // the last stream stops (its thread joined) before another starts
      source_ = start_(offset);
      position_ = offset;
      hash_.reset();
      if (offset == 0 && blob_.digest.algorithm() == Digest::Algorithm::Sha256)
        hash_ = std::make_unique<Sha256>();
    }
    return std::make_unique<View>(*this);
  }

 private:
  class View : public Reader {
   public:
    explicit View(BlobStream& stream) : stream_(stream) {}
    size_t read(std::span<std::byte> buf) override { return stream_.read(buf); }

   private:
    BlobStream& stream_;
  };

  size_t read(std::span<std::byte> buf) {
    uint64_t size = static_cast<uint64_t>(blob_.size);
    if (position_ >= size || buf.empty()) return 0;
    buf = buf.first(static_cast<size_t>(std::min<uint64_t>(buf.size(), size - position_)));
    size_t n = source_->read(buf);
    if (n == 0)
      throw InvalidInputError(
          fmt::format("{}: the source ended after {} of its {} bytes", what_, position_, size));
    position_ += n;
    if (hash_) {
      hash_->update(buf.first(n));
      if (position_ == size) {
        Digest actual = hash_->finish();
        hash_.reset();
        if (actual != blob_.digest)
          throw InvalidInputError(fmt::format("{}: digest mismatch (content is {})", what_, actual));
      }
    }
    return n;
  }

  Descriptor blob_;
  Start start_;
  std::string what_;
  std::unique_ptr<Reader> source_;
  uint64_t position_ = 0;
  std::unique_ptr<Sha256> hash_;
};

// ---------------------------------------------------------------------------------- destinations

// Where an image's blobs and manifests are written. Nothing is named before finish().
class Destination {
 public:
  virtual ~Destination() = default;
  // Whether it can hold an index (and several images): a docker-archive holds one image.
  virtual bool takes_index() const { return true; }
  // Makes the blob exist at the destination, read from `source`. Returns the progress line's end:
  // "done", "skipped: already exists", "mounted from REPO".
  virtual std::string put_blob(Source& source, const Descriptor& blob) = 0;
  // A manifest an index names (with --all-platforms), before the index.
  virtual void put_manifest(const FetchedManifest& m) = 0;
  // The manifest or index the destination names, and then whatever makes it visible.
  virtual void finish(const FetchedManifest& top) = 0;
};

class RegistryDestination : public Destination {
 public:
  RegistryDestination(const Reference& ref, const RegistryOptions& options)
      : ref_(ref), client_(ref.domain(), options) {}

  std::string put_blob(Source& source, const Descriptor& blob) override {
    BlobStream stream(
        blob, [&](uint64_t offset) { return source.open_blob(blob, offset); },
        fmt::format("blob {}", blob.digest));
    // Within one registry a blob is mounted from the source repository, never sent.
    std::optional<std::string> mount_from;
    if (const Reference* from = source.registry_reference();
        from && from->domain() == ref_.domain() && from->path() != ref_.path())
      mount_from = from->path();
    BlobUpload done = client_.put_blob(
        ref_.path(), blob.digest, static_cast<uint64_t>(blob.size),
        [&](uint64_t offset) { return stream.open(offset); }, mount_from);
    switch (done) {
      case BlobUpload::Existed:
        return "skipped: already exists";
      case BlobUpload::Mounted:
        return fmt::format("mounted from {}", *mount_from);
      case BlobUpload::Uploaded:
        break;
    }
    return "done";
  }
  void put_manifest(const FetchedManifest& m) override {
    client_.put_manifest(ref_.path(), m.digest.str(), m.bytes, m.media_type);
  }
  void finish(const FetchedManifest& top) override {
    client_.put_manifest(ref_.path(), tag_or_digest(ref_), top.bytes, top.media_type);
  }

 private:
  Reference ref_;
  RegistryClient client_;
};

// An flock on a directory, held until destruction: writers of one layout's index.json take turns.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) : fd_(open_or_throw(dir, O_RDONLY | O_DIRECTORY)) {
    while (::flock(fd_.get(), LOCK_EX) != 0)
      if (errno != EINTR) throw_errno(fmt::format("lock `{}`", dir));
  }

 private:
  Fd fd_;
};

// An OCI image layout, created when missing. Blobs are checked for size and digest while they are
// written, under a temporary name, and renamed into place only when right; index.json is replaced
// last, under a lock on the directory, keeping every entry but the one for the same name.
class LayoutDestination : public Destination {
 public:
  LayoutDestination(std::string dir, std::string tag, std::string shown)
      : dir_(std::move(dir)), tag_(std::move(tag)), shown_(std::move(shown)) {
    make_dirs(dir_ + "/blobs/sha256");
    std::string layout = dir_ + "/oci-layout";
    if (path_exists(layout)) {
      auto doc = nlohmann::json::parse(read_file_capped(layout, 4096, layout), nullptr, false);
      if (!doc.is_object() || !doc.contains("imageLayoutVersion"))
        throw InvalidInputError(fmt::format("`{}`: not an OCI image layout (oci-layout is not one)", shown_));
    }
  }

  std::string put_blob(Source& source, const Descriptor& blob) override {
    std::string what = fmt::format("`{}`: blob {}", shown_, blob.digest);
    if (blob.digest.algorithm() != Digest::Algorithm::Sha256)
      throw InvalidInputError(fmt::format("{}: only sha256 digests are supported", what));
    std::string path = blob_path(blob.digest);
    uint64_t size = static_cast<uint64_t>(blob.size);
    // As skopeo reuses one: a file of the right size under the digest's name is that blob (whoever
    // wrote it checked it, as this writer does).
    if (struct stat st{};
        ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == size)
      return "skipped: already exists";
    AtomicFile file(path);
    HashingWriter hashed(file);
    auto in = source.open_blob(blob, 0);
    std::vector<std::byte> buf(1 << 20);
    for (size_t n; (n = in->read(buf)) > 0;) {
      if (hashed.size() + n > size)
        throw InvalidInputError(fmt::format("{}: larger than the {} bytes its descriptor says", what, size));
      hashed.write(std::span(buf).first(n));
    }
    if (hashed.size() != size)
      throw InvalidInputError(fmt::format("{}: {} bytes, its descriptor says {}", what, hashed.size(), size));
    if (Digest actual = hashed.digest(); actual != blob.digest)
      throw InvalidInputError(fmt::format("{}: digest mismatch (content is {})", what, actual));
    file.commit();
    return "done";
  }

  void put_manifest(const FetchedManifest& m) override {
    if (!path_exists(blob_path(m.digest))) write_file_atomic(blob_path(m.digest), m.bytes);
  }

  void finish(const FetchedManifest& top) override {
    put_manifest(top);
    DirLock lock(dir_);
    std::string layout = dir_ + "/oci-layout";
    if (!path_exists(layout)) write_file_atomic(layout, R"({"imageLayoutVersion":"1.0.0"})");
    // Edited as JSON, not through Index: fields kiln does not model (another tool's) stay as they are.
    std::string index_path = dir_ + "/index.json";
    nlohmann::ordered_json index = {{"schemaVersion", 2},
                                    {"mediaType", media::kOciIndex},
                                    {"manifests", nlohmann::ordered_json::array()}};
    if (path_exists(index_path)) {
      index = nlohmann::ordered_json::parse(read_file_capped(index_path, kMaxManifestBytes, index_path),
                                            nullptr, false);
      if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
        throw InvalidInputError(fmt::format("`{}`: index.json is not an OCI index", shown_));
    }
    std::string ref_key(annotation::kRefName);
    auto& entries = index["manifests"];
    for (auto it = entries.begin(); it != entries.end();) {
      const auto* name = it->is_object() && it->contains("annotations") && (*it)["annotations"].is_object() &&
                                 (*it)["annotations"].contains(ref_key)
                             ? &(*it)["annotations"][ref_key]
                             : nullptr;
      // The name moves to the new image, as skopeo moves it; without a name, an unnamed entry for
      // the same manifest is not added twice.
      bool replaced = tag_.empty() ? !name && it->value("digest", "") == top.digest.str()
                                   : name && name->is_string() && name->get<std::string>() == tag_;
      it = replaced ? entries.erase(it) : it + 1;
    }
    Descriptor d{top.media_type, top.digest, static_cast<int64_t>(top.bytes.size()), {}, std::nullopt};
    if (!tag_.empty()) d.annotations[ref_key] = tag_;
    entries.push_back(d.to_json());
    write_file_atomic(index_path, index.dump());
  }

 private:
  std::string blob_path(const Digest& d) const { return fmt::format("{}/blobs/sha256/{}", dir_, d.hex()); }
  std::string dir_;
  std::string tag_;
  std::string shown_;
};

// Writes `path` through fn: a regular file (or a new one) is replaced atomically once fn returns,
// so a failure leaves it as it was; a device or fifo (/dev/stdout) is written directly.
void write_output(const std::string& path, const std::function<void(Writer&)>& fn) {
  if (struct stat st{}; ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    Fd fd = open_or_throw(path, O_WRONLY);
    FdWriter out(fd.get(), path);
    fn(out);
    return;
  }
  AtomicFile file(path);
  fn(file);
  file.commit();
}

// An OCI archive is the layout written into a directory of the staging area, then tarred into its
// file (replaced as a whole, as skopeo replaces it).
class OciArchiveDestination : public Destination {
 public:
  OciArchiveDestination(const ImageLocation& loc, const std::string& staging)
      : path_(loc.path),
        dir_(staging, "copy-dst-"),
        layout_(dir_.path(), loc.tag, "oci-archive:" + loc.path) {}
  std::string put_blob(Source& source, const Descriptor& blob) override {
    return layout_.put_blob(source, blob);
  }
  void put_manifest(const FetchedManifest& m) override { layout_.put_manifest(m); }
  void finish(const FetchedManifest& top) override {
    layout_.finish(top);
    write_output(path_, [&](Writer& out) {
      ArchiveWriter tar(out, fmt::format("write `{}`", path_));
      for (const char* name : {"oci-layout", "index.json"})
        tar.add_file(name, read_file_capped(dir_.path() + "/" + name, kMaxManifestBytes, name));
      tar.add_directory("blobs/");
      tar.add_directory("blobs/sha256/");
      std::string blobs = dir_.path() + "/blobs/sha256";
      Fd dir = open_or_throw(blobs, O_RDONLY | O_DIRECTORY);
      std::vector<std::string> names = list_dir_at(dir.get(), blobs);
      std::sort(names.begin(), names.end());
      for (const std::string& name : names) {
        std::string path = blobs + "/" + name;
        Fd fd = open_or_throw(path, O_RDONLY);
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat `{}`", path));
        FdReader content(fd.get(), path);
        tar.add_file_from("blobs/sha256/" + name, content, static_cast<uint64_t>(st.st_size));
      }
      tar.finish();
    });
  }

 private:
  std::string path_;
  TempDir dir_;
  LayoutDestination layout_;
};

// A docker-archive is written by `kiln save` from a store of its own in the staging area: the
// image's blobs go there (verified by the store's blob writers), then save_images writes the file.
class DockerArchiveDestination : public Destination {
 public:
  DockerArchiveDestination(const ImageLocation& loc, const std::string& staging)
      : loc_(loc), dir_(staging, "copy-dst-"), store_(dir_.path() + "/store") {}
  bool takes_index() const override { return false; }
  std::string put_blob(Source& source, const Descriptor& blob) override {
    if (store_.has_blob(blob.digest)) return "skipped: already exists";
    auto writer = store_.new_blob({static_cast<uint64_t>(blob.size), blob.digest});
    auto in = source.open_blob(blob, 0);
    copy_stream(*in, *writer);
    writer->seal(blob.digest, static_cast<uint64_t>(blob.size));
    writer->publish();
    return "done";
  }
  void put_manifest(const FetchedManifest&) override {
    throw InvalidInputError("a docker-archive holds a single image, not an index");
  }
  void finish(const FetchedManifest& top) override {
    if (!is_manifest_media_type(top.media_type))
      throw InvalidInputError(
          fmt::format("a docker-archive holds a single image, not a `{}`", top.media_type));
    store_.put_blob(top.bytes);
    Descriptor d{top.media_type, top.digest, static_cast<int64_t>(top.bytes.size()), {}, std::nullopt};
    store_.set_name(d, loc_.reference);
    // Saved by name, the name goes in RepoTags; by ID, the image has none there.
    std::string saved = loc_.reference ? loc_.reference->str() : store_.load_image(d).id().str();
    write_output(loc_.path, [&](Writer& out) { save_images(store_, {saved}, out); });
  }

 private:
  ImageLocation loc_;
  TempDir dir_;
  Store store_;
};

std::unique_ptr<Destination> open_destination(const ImageLocation& loc, const CopyOptions& options,
                                              const RegistryOptions& registry_options) {
  switch (loc.kind) {
    case ImageLocation::Kind::Registry:
      return std::make_unique<RegistryDestination>(*loc.reference, registry_options);
    case ImageLocation::Kind::OciLayout:
      return std::make_unique<LayoutDestination>(loc.path, loc.tag, "oci:" + loc.path);
    case ImageLocation::Kind::OciArchive:
      return std::make_unique<OciArchiveDestination>(loc, options.staging_dir);
    case ImageLocation::Kind::DockerArchive:
      return std::make_unique<DockerArchiveDestination>(loc, options.staging_dir);
  }
  throw Error("unknown transport");  // unreachable: every kind returns above
}

// ------------------------------------------------------------------------------------------ copy

// What a copy moves: the blobs, each once, then the manifests an index names (each after those it
// names in turn), then the top one.
struct Plan {
  struct Blob {
    Descriptor descriptor;
    bool config = false;
  };
  std::vector<Blob> blobs;
  std::vector<FetchedManifest> manifests;
  std::set<Digest> seen;
};

void plan(Source& source, const FetchedManifest& m, Plan& out, int depth) {
  if (is_index_media_type(m.media_type)) {
    // An index names images, and may name indexes; never itself (content addressing), but the
    // depth is bounded against a source that builds a long chain.
    if (depth > 4) throw InvalidInputError(fmt::format("index {}: nested more than 4 deep", m.digest));
    for (const Descriptor& d : Index::parse(m.bytes).manifests) {
      if (!is_manifest_media_type(d.media_type) && !is_index_media_type(d.media_type))
        throw InvalidInputError(
            fmt::format("index {}: entry {} has media type `{}`, neither a manifest nor an index", m.digest,
                        d.digest, d.media_type));
      if (!out.seen.insert(d.digest).second) continue;
      FetchedManifest child = source.manifest(d);
      plan(source, child, out, depth + 1);
      out.manifests.push_back(std::move(child));
    }
    return;
  }
  if (!is_manifest_media_type(m.media_type))
    throw InvalidInputError(fmt::format("manifest {}: unsupported media type `{}`", m.digest, m.media_type));
  Manifest manifest = Manifest::parse(m.bytes);
  for (const Descriptor& layer : manifest.layers)
    if (out.seen.insert(layer.digest).second) out.blobs.push_back({layer, false});
  // The config last, as Docker and skopeo send it.
  if (out.seen.insert(manifest.config.digest).second) out.blobs.push_back({manifest.config, true});
}

CopyResult run_copy(const ImageLocation& from, const ImageLocation& to, const CopyOptions& options,
                    const RegistryOptions& registry_options) {
  if ((from.is_archive() || to.is_archive()) && options.staging_dir.empty())
    throw Error("an archive needs a staging directory");
  std::mutex say_mutex;
  auto say = [&](const std::string& line) {
    if (!options.progress) return;
    std::lock_guard lock(say_mutex);
    options.progress(line);
  };

  std::unique_ptr<Source> source = open_source(from, options, registry_options);
  FetchedManifest top = source->top();
  if (is_index_media_type(top.media_type) && !options.all_platforms) {
    Platform wanted = options.platform.value_or(host_platform_of_store());
    Index index = Index::parse(top.bytes);
    std::optional<Descriptor> chosen = select_platform(index, wanted);
    if (!chosen) {
      std::string offered;
      for (const Descriptor& d : index.manifests)
        if (d.platform) offered += (offered.empty() ? "" : ", ") + platform_string(*d.platform);
      throw NotFoundError(
          fmt::format("no image for {} in its index (it has {}; --all-platforms copies them all)",
                      platform_string(wanted), offered.empty() ? "none" : offered));
    }
    top = source->manifest(*chosen);
  }
  if (to.kind == ImageLocation::Kind::Registry && to.reference->digest() &&
      *to.reference->digest() != top.digest)
    throw InvalidInputError(fmt::format("the destination names digest {}, but the image's is {}",
                                        *to.reference->digest(), top.digest));
  Plan work;
  plan(*source, top, work, 0);

  std::unique_ptr<Destination> destination = open_destination(to, options, registry_options);
  if (!destination->takes_index() && is_index_media_type(top.media_type))
    throw InvalidInputError(
        "a docker-archive holds a single image: copy one platform (without --all-platforms)");
  for_each_parallel(work.blobs.size(), options.parallel, [&](size_t i) {
    const Plan::Blob& blob = work.blobs[i];
    std::string done = destination->put_blob(*source, blob.descriptor);
    say(fmt::format("Copying {} {} {}", blob.config ? "config" : "blob", blob.descriptor.digest.short_id(),
                    done));
  });
  for (const FetchedManifest& m : work.manifests) destination->put_manifest(m);
  say("Writing manifest to image destination");
  destination->finish(top);
  return CopyResult{top.digest, top.media_type, top.bytes.size()};
}

}  // namespace

CopyResult copy_image(const ImageLocation& source, const ImageLocation& destination,
                      const CopyOptions& options, const RegistryOptions& registry_options) {
  try {
    return run_copy(source, destination, options, registry_options);
  } catch (...) {
    rethrow_with_context(fmt::format("copy `{}` to `{}`", source.text, destination.text));
  }
}

}  // namespace kiln::registry
