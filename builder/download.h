// ADD's URL sources (`ADD https://example.com/tool.tgz /opt/`), done as BuildKit does them: its
// Dockerfile frontend (frontend/dockerfile/dockerfile2llb, dispatchCopy) makes an HTTP source
// (source/http/httpsource.go) and copies the file it gives.
//
// - The file is named after the last element of the URL's path, `__unnamed__` when the path has
//   none. The frontend always gives the source that name, so Content-Disposition, which the HTTP
//   source would otherwise go by, never names an ADD's file.
// - It is made with mode 0600 and owner 0:0, then copied as any source is: --chmod and --chown apply.
// - Its mtime is the Last-Modified the server sent (as Go's http.ParseTime reads it), the epoch
//   when there was none or it did not parse.
// - It is not unpacked, even if it is an archive, unless the instruction says --unpack=true.
// - A body the server sent gzip-encoded is decoded, as Go's transport decodes it for BuildKit.
//
// The cache key, as BuildKit's:
// - With --checksum, the key is the checksum (and the file's name): the build cache is asked
//   without fetching anything. When the step has to run, the download is hashed as it streams and
//   checked against the checksum before anything is copied; a mismatch names both digests.
// - Without, the URL is fetched on every build and the key is the content's digest, the name and
//   the Last-Modified text: a changed file misses the cache, an unchanged one hits it. When the
//   server sent an ETag, kiln keeps it (ROOT/cache/http/) and the next build asks with
//   If-None-Match: a 304 gives the key from the record without a body. A step that still has to
//   run then fetches the file once more and refuses it if it is not what the key said.
//   (BuildKit tries a HEAD first, for servers that ignore If-None-Match; kiln does not, so such a
//   server's file is downloaded again, with the same key.)
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/copy.h"
#include "layerstore/digest.h"

namespace kiln::builder {

class BuildSession;
class CacheKey;

// The name BuildKit gives a URL's file: the last element of its path, percent-decoded (Go's
// url.Parse and path.Base); `__unnamed__` when the path has none, or does not decode.
std::string url_file_name(std::string_view url);

// The URL sources of one COPY or ADD, from the check of its flags to the copy into the layer.
class UrlSources {
 public:
  // `urls`: the http:// and https:// sources; `checksum`: --checksum as written ("" if absent);
  // `paths` and `heredocs`: how many of the other sources there are; `options`: the instruction's
  // (its destination). Throws UsageError with BuildKit's message for a checksum on COPY, on several
  // sources or on a source that is not a URL, a checksum that is not a sha256 digest, several
  // sources going to a destination without a trailing `/`, and a git repository URL (which
  // BuildKit clones and kiln does not yet).
  UrlSources(BuildSession& session, std::vector<std::string> urls, const std::string& checksum, bool add,
             size_t paths, size_t heredocs, const CopyOptions& options);
  ~UrlSources();
  UrlSources(const UrlSources&) = delete;
  UrlSources& operator=(const UrlSources&) = delete;

  // Adds each source's part of the step's cache key (see above); without --checksum this downloads.
  // `unpack`: --unpack=true. Throws registry::HttpError (`ADD `URL`: HTTP 404 Not Found`),
  // BuildCanceled when the build is stopped during a download, SystemError.
  void add_to_key(CacheKey& key, bool unpack);

  // Copies every source's file into `upper_dir` with `options` (their sources, parents and
  // unpack_archives aside), downloading what add_to_key did not. Throws as add_to_key, and
  // InvalidInputError when a download is not what the key was made with (the --checksum, or the
  // digest recorded with an ETag).
  void copy_into_layer(const CopyOptions& options, bool unpack, const SourceTree& lower,
                       const std::string& upper_dir);

 private:
  struct Source;
  void download(Source& source, bool conditional);

  BuildSession& s_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::optional<Digest> checksum_;
  bool several_ = false;  // more than one source in the instruction: the destination is a directory
};

}  // namespace kiln::builder
