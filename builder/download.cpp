#include "builder/download.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "builder/cache_key.h"
#include "builder/session.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "registry/http.h"
#include "registry/http_headers.h"

namespace kiln::builder {
namespace {

constexpr std::string_view kUnnamed = "__unnamed__";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A URL's path as Go's url.Parse gives it: after the scheme and authority, before the query and the
// fragment, percent-decoded. nullopt for a malformed escape, which Go refuses.
std::optional<std::string> url_path(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::nullopt;
  std::string_view rest = url.substr(scheme + 3);
  size_t authority_end = rest.find_first_of("/?#");
  if (authority_end == std::string_view::npos || rest[authority_end] != '/') return std::string();
  rest = rest.substr(authority_end);
  rest = rest.substr(0, rest.find_first_of("?#"));
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] != '%') {
      out += rest[i];
      continue;
    }
    if (i + 2 >= rest.size() || hex_digit(rest[i + 1]) < 0 || hex_digit(rest[i + 2]) < 0) return std::nullopt;
    out += static_cast<char>(hex_digit(rest[i + 1]) * 16 + hex_digit(rest[i + 2]));
    i += 2;
  }
  return out;
}

// Go's path.Base.
std::string path_base(std::string path) {
  if (path.empty()) return ".";
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.empty()) return "/";
  return path.substr(path.rfind('/') + 1);
}

// What kiln keeps of an ETag-bearing download (ROOT/cache/http/<sha256 of the URL>.json), so that
// the next build can ask with If-None-Match, as BuildKit keeps it with the download it made.
struct HttpRecord {
  std::string etag;  // without W/, as BuildKit compares them
  Digest digest;
  std::string last_modified;
};

std::string record_path(const BuildSession& session, const std::string& url) {
  return fmt::format("{}/cache/http/{}.json", session.store.root(), sha256_of(url).hex());
}

std::string etag_value(std::string_view etag) {
  return std::string(etag.starts_with("W/") ? etag.substr(2) : etag);
}

// A record that is missing or unreadable is no record: the download is then unconditional.
std::optional<HttpRecord> read_record(const std::string& path, const std::string& url) {
  if (!path_exists(path)) return std::nullopt;
  try {
    nlohmann::json doc = nlohmann::json::parse(read_file_capped(path, 64 << 10, "HTTP cache record"));
    std::optional<Digest> digest = Digest::parse(doc.at("digest").get<std::string>());
    std::string etag = doc.at("etag").get<std::string>();
    if (!digest || etag.empty() || doc.at("url").get<std::string>() != url) return std::nullopt;
    return HttpRecord{etag, *digest, doc.at("last_modified").get<std::string>()};
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

std::string url_file_name(std::string_view url) {
  std::optional<std::string> path = url_path(url);
  if (!path) return std::string(kUnnamed);
  std::string base = path_base(*path);
  // BuildKit would name a file ".." too, and then copy the directory above it; and a NUL cannot be
  // in a file name. Neither names anything here.
  if (base == "." || base == "/" || base == ".." || base.find('\0') != std::string::npos)
    return std::string(kUnnamed);
  return base;
}

struct UrlSources::Source {
  std::string url;
  std::string name;
  std::unique_ptr<TempDir> dir;  // holds the file `name` once downloaded
  bool fetched = false;
  // What the cache key says the file is: the --checksum, or the digest of the download (or of the
  // record a 304 confirmed), with the Last-Modified text that came with it.
  std::optional<Digest> expected;
  std::string last_modified;
};

UrlSources::UrlSources(BuildSession& session, std::vector<std::string> urls, const std::string& checksum,
                       bool add, size_t paths, size_t heredocs, const CopyOptions& options)
    : s_(session) {
  std::string instruction = add ? "ADD" : "COPY";
  if (!checksum.empty()) {
    // BuildKit's checks and messages, in its order.
    if (!add) throw UsageError("checksum can't be specified for COPY");
    if (urls.size() + paths != 1) throw UsageError("checksum can't be specified for multiple sources");
    if (urls.empty()) throw UsageError("checksum requires HTTP(S) or Git sources");
  }
  several_ = urls.size() + paths + heredocs > 1;
  for (std::string& url : urls) {
    std::optional<std::string> path = url_path(url);
    if (path && path->ends_with(".git")) {
      // BuildKit clones such a URL (a git source) instead of downloading it.
      throw UsageError(fmt::format("{} {}: git repositories are not supported yet", instruction, url));
    }
    auto source = std::make_unique<Source>();
    source->name = url_file_name(url);
    source->url = std::move(url);
    sources_.push_back(std::move(source));
  }
  if (!checksum.empty()) {
    checksum_ = Digest::parse(checksum);
    if (!checksum_) {
      throw UsageError(fmt::format("{} --checksum={}: not a digest (sha256:<64 hexadecimal digits>)",
                                   instruction, checksum));
    }
    // BuildKit hashes downloads with sha256 only, so another algorithm could never match.
    if (checksum_->algorithm() != Digest::Algorithm::Sha256)
      throw UsageError(
          fmt::format("{} --checksum={}: only sha256 checksums can be verified", instruction, checksum));
  }
  if (!sources_.empty() && several_ && !options.dest_is_dir) {
    throw UsageError(fmt::format(
        "When using {} with more than one source file, the destination must be a directory and end with a /",
        instruction));
  }
}

UrlSources::~UrlSources() = default;

void UrlSources::add_to_key(CacheKey& key, bool unpack) {
  for (const std::unique_ptr<Source>& source : sources_) {
    if (checksum_) {
      source->expected = checksum_;
    } else {
      download(*source, true);
    }
    // BuildKit's key of an HTTP source leaves the URL out: two URLs serving the same file are one.
    key.add("url", fmt::format("{}\n{}\n{}\n{}", source->name, source->expected->str(),
                               checksum_ ? "" : source->last_modified, unpack ? "unpack" : ""));
  }
}

void UrlSources::copy_into_layer(const CopyOptions& options, bool unpack, const SourceTree& lower,
                                 const std::string& upper_dir) {
  for (const std::unique_ptr<Source>& source : sources_) {
    if (!source->fetched) download(*source, false);
    std::shared_ptr<SourceTree> tree = SourceTree::directory(source->dir->path());
    CopyOptions file_options = options;
    file_options.sources = {source->name};
    file_options.keep_owners = false;
    file_options.parents = false;
    file_options.unpack_archives = unpack;
    file_options.dest_is_dir = options.dest_is_dir || several_;
    // The file is the selection as it is: a URL's name is no wildcard pattern (BuildKit copies
    // it without AllowWildcard).
    CopySelection selection;
    CopySelection::Item item;
    item.source = source->name;
    item.match = source->name;
    std::optional<SourceTree::Entry> top = tree->lookup(source->name, false);
    if (!top)
      throw Error(
          fmt::format("ADD `{}`: the download is missing from `{}`", source->url, source->dir->path()));
    item.top = *top;
    selection.items.push_back(std::move(item));
    copy_into(*tree, selection, file_options, lower, upper_dir);
  }
}

void UrlSources::download(Source& source, bool conditional) {
  std::string what = fmt::format("ADD `{}`", source.url);
  std::string records = record_path(s_, source.url);
  std::optional<HttpRecord> record;
  if (conditional) record = read_record(records, source.url);

  // The download lands in a directory of its own under the store's tmp/, removed with everything
  // in it on any failure: a checksum mismatch leaves nothing behind.
  auto dir = std::make_unique<TempDir>(s_.store.tmp_dir(), "download-");
  std::string path = dir->path() + "/" + source.name;
  Fd file = open_or_throw(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  // BuildKit's 0600, whatever kiln's umask.
  if (::fchmod(file.get(), 0600) != 0) throw_errno(fmt::format("{}: chmod `{}`", what, path));
  FdWriter out(file.get(), path);
  HashingWriter hashing(out);

  registry::HttpOptions http;
  http.cancel_fd = s_.cancel_fd();
  registry::HttpClient client(http);
  registry::HttpRequest request;
  request.url = source.url;
  request.what = what;
  request.decode_gzip = true;
  if (record) request.headers.push_back("If-None-Match: " + record->etag);
  registry::HttpResponse response;
  try {
    response = client.get(request, hashing);
  } catch (const registry::HttpError&) {
    s_.check_canceled();  // a transfer stopped by Ctrl-C is the build's cancellation
    throw;
  }

  if (response.status == 304) {
    if (!record)
      throw InvalidInputError(fmt::format("{}: HTTP 304 Not Modified to an unconditional request", what));
    // A 304 without an ETag answers for the one ETag asked about (BuildKit, moby/buildkit#905).
    std::string answered = etag_value(response.etag);
    if (!answered.empty() && answered != record->etag) {
      throw InvalidInputError(fmt::format("{}: HTTP 304 Not Modified for ETag {}, not for {} asked about",
                                          what, answered, record->etag));
    }
    source.expected = record->digest;
    source.last_modified = record->last_modified;
    source.fetched = false;  // `dir` goes: the step fetches again only if the cache misses
    return;
  }

  Digest digest = hashing.digest();
  if (source.expected && digest != *source.expected) {
    if (checksum_) {
      throw InvalidInputError(
          fmt::format("{}: digest mismatch: the download is {}, --checksum is {}", what, digest, *checksum_));
    }
    throw InvalidInputError(
        fmt::format("{}: the file changed during the build: {} when the build cache was asked, {} now", what,
                    *source.expected, digest));
  }
  // The mtime the key was made with, when it was made from an earlier answer (a 304's record).
  std::string last_modified =
      source.expected && !checksum_ ? source.last_modified : response.last_modified_text;
  time_t mtime = registry::parse_http_date(last_modified).value_or(0);
  const struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
  if (::futimens(file.get(), times) != 0) throw_errno(fmt::format("{}: set the mtime of `{}`", what, path));
  file.reset();

  if (conditional) {
    if (!response.etag.empty()) {
      nlohmann::json doc = {{"url", source.url},
                            {"etag", etag_value(response.etag)},
                            {"digest", digest.str()},
                            {"last_modified", response.last_modified_text}};
      make_dirs(s_.store.root() + "/cache/http", 0700);
      write_file_atomic(records, doc.dump(), Durability::Volatile);
    } else if (record) {
      // The server no longer sends the ETag: the record would only ask about a stale one.
      ::unlink(records.c_str());
    }
  }
  source.expected = digest;
  source.last_modified = last_modified;
  source.dir = std::move(dir);
  source.fetched = true;
}

}  // namespace kiln::builder
