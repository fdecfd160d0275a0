// `kiln copy`: an image from one place to another as `skopeo copy` moves it — registries, OCI image
// layouts, OCI archives and docker-archives, in any pairing — without unpacking a layer. Between two
// registries the blobs stream from one to the other through a bounded in-memory pipe (or are
// mounted, within one registry), so neither memory nor disk grows with the image.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "layerstore/digest.h"
#include "layerstore/image.h"
#include "layerstore/io.h"
#include "layerstore/reference.h"
#include "registry/client.h"

namespace kiln::registry {

// One side of a copy, in skopeo's transport syntax.
struct ImageLocation {
  enum class Kind {
    Registry,       // docker://REF, or a bare REF
    OciLayout,      // oci:DIR[:TAG]
    OciArchive,     // oci-archive:FILE[:TAG]
    DockerArchive,  // docker-archive:FILE[:NAME:TAG]
  };
  Kind kind = Kind::Registry;
  // Registry: the image, with a tag (`latest` when none was written) or a digest. DockerArchive:
  // the name the image has (or is given) in the archive, when one was written.
  std::optional<Reference> reference;
  std::string path;  // OciLayout: the directory; the archives: the file
  std::string tag;   // OciLayout, OciArchive: index.json's org.opencontainers.image.ref.name; "" for none
  std::string text;  // as written, for messages

  // Throws UsageError naming the text: an unknown or unsupported transport, an empty path, a
  // malformed reference.
  static ImageLocation parse(std::string_view text);
  bool is_archive() const { return kind == Kind::OciArchive || kind == Kind::DockerArchive; }
};

struct CopyOptions {
  // Every manifest of an index, then the index itself, byte for byte (its digest unchanged).
  // Without it an index resolves to `platform` and only that image is copied (skopeo's default).
  bool all_platforms = false;
  std::optional<Platform> platform;  // nullopt: this machine's
  int parallel = 4;                  // blobs copied at once
  // A directory where archives are unpacked or put together (kiln uses its store's tmp/). Needed
  // only when a side is an archive.
  std::string staging_dir;
  // One line per event, skopeo's words ("Copying blob 3f4a1b2c5d6e done"); may be empty. Called
  // from one thread at a time.
  std::function<void(const std::string&)> progress;
};

struct CopyResult {
  Digest digest;  // what the destination names now: the image's manifest, or the index
  std::string media_type;
  uint64_t size = 0;
};

// Copies the image. Every blob is verified before the destination keeps it: a registry checks the
// digest of what it is sent (and kiln checks a blob streamed whole on its way there, so a wrong one
// is never sent complete); an OCI layout's blobs are checked for size and digest before they are
// renamed into place. Manifests and indexes are copied byte for byte.
//
// Throws with "copy `SRC` to `DST`: " before the cause. A failed copy leaves an OCI layout's
// index.json as it was (blobs already written stay, unreferenced, as skopeo leaves them) and an
// archive destination not created or replaced; a registry may keep blobs, never the manifest.
CopyResult copy_image(const ImageLocation& source, const ImageLocation& destination,
                      const CopyOptions& options, const RegistryOptions& registry_options);

// A bounded in-memory pipe from a producer that pushes bytes into a Writer (RegistryClient::
// get_blob) to a consumer that pulls them from a Reader (the body of RegistryClient::put_blob's
// upload). The producer runs on a thread of its own; at most `buffers` buffers of `buffer_size`
// bytes exist at once, whatever the length of the stream.
class BlobPipe : public Reader {
 public:
  // Writes the stream to its Writer. `cancel_fd` turns readable when the reader has gone: a
  // producer waiting on something else than the pipe (a stalled download) watches it to stop.
  using Producer = std::function<void(Writer&, int cancel_fd)>;
  explicit BlobPipe(Producer produce, size_t buffers = 4, size_t buffer_size = 1 << 20);
  // Closes the reading end, which makes the producer's next write throw (and so stops it), and
  // joins its thread: at once when it is writing or waiting for room; when a producer waiting on
  // its own source sees cancel_fd (a download: within a second).
  ~BlobPipe() override;
  BlobPipe(const BlobPipe&) = delete;
  BlobPipe& operator=(const BlobPipe&) = delete;

  // The next bytes, in the order written; 0 once the producer has returned and everything it wrote
  // has been read. Throws what the producer threw, at the first read after it did (bytes still
  // buffered then are dropped: a failed stream is of no use).
  size_t read(std::span<std::byte> buf) override;

 private:
  class PipeWriter;
  struct Buffer {
    std::unique_ptr<std::byte[]> data;
    size_t length = 0;
  };
  void run(const Producer& produce);
  // Producer side: an empty buffer, waiting for one while all are in use; throws when closed.
  Buffer take_free();
  void put_full(Buffer buffer);

  const size_t max_buffers_;
  const size_t buffer_size_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Buffer> full_;   // written, in order, waiting for the reader
  std::vector<Buffer> free_;  // read, for the producer to fill again
  size_t allocated_ = 0;      // buffers made so far, at most max_buffers_
  bool producer_done_ = false;
  bool closed_ = false;       // the reading end is gone
  std::exception_ptr error_;  // what the producer threw
  Buffer reading_;            // the reader's, outside the lock
  size_t read_pos_ = 0;
  Fd cancel_;  // an eventfd, written when the reading end closes
  std::thread thread_;
};

}  // namespace kiln::registry
