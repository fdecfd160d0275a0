#include "layerstore/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "layerstore/archive_io.h"
#include "layerstore/errors.h"
#include "layerstore/fsutil.h"

namespace kiln {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr const char* kOverlayOpaqueXattr = "trusted.overlay.opaque";
constexpr const char* kUserOverlayOpaqueXattr = "user.overlay.opaque";
constexpr size_t kCopyBufferSize = 1 << 20;

struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

[[noreturn]] void refuse(const std::string& entry, const std::string& why) {
  throw InvalidInputError(fmt::format("layer entry `{}`: {}", entry, why));
}

// Overlayfs keeps its own bookkeeping in these xattrs (opaque, redirect, origin, ...). An archive
// must not be able to set them, and a tree written out must not carry them as content.
bool is_overlay_xattr(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

// ------------------------------------------------------------------------------- reading input

// Counts what the archive reader pulls, notices the end of the stream and keeps the upstream
// failure, so that a truncated tar can be told from a malformed one and a decompressor's own error
// reaches the caller unchanged rather than as libarchive's text.
class TrackedReader : public Reader {
 public:
  explicit TrackedReader(Reader& in) : in_(in) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = 0;
    try {
      n = in_.read(buf);
    } catch (...) {
      failure_ = std::current_exception();
      throw;
    }
    if (n == 0) at_end_ = true;
    bytes_ += n;
    return n;
  }
  uint64_t bytes() const { return bytes_; }
  bool at_end() const { return at_end_; }
  std::exception_ptr failure() const { return failure_; }

 private:
  Reader& in_;
  uint64_t bytes_ = 0;
  bool at_end_ = false;
  std::exception_ptr failure_;
};

// A layer tar being read: ArchiveReader plus the refusal messages shared by scan and extract.
class LayerStream {
 public:
  explicit LayerStream(Reader& in) : tracked_(in) {
    try {
      archive_.emplace(tracked_, "layer");
    } catch (const InvalidInputError& e) {
      std::string_view detail = e.what();
      if (detail.starts_with("layer: ")) detail.remove_prefix(7);
      fail("", std::string(detail));
    }
  }

  archive_entry* next() {
    try {
      return archive_->next();
    } catch (const InvalidInputError&) {
      fail("", error_string());
    }
  }

  size_t read_data(std::span<std::byte> buf, const std::string& entry) {
    try {
      return archive_->read_data(buf);
    } catch (const InvalidInputError&) {
      fail(entry, error_string());
    }
  }

  void skip_data(const std::string& entry) {
    if (archive_read_data_skip(archive_->handle()) != ARCHIVE_OK) fail(entry, error_string());
  }

  // Reads what follows the end-of-archive blocks, so that a hash taken upstream covers every byte.
  void drain() {
    NullWriter sink;
    copy_stream(tracked_, sink);
  }

  uint64_t bytes() const { return tracked_.bytes(); }

 private:
  std::string error_string() {
    const char* msg = archive_error_string(archive_->handle());
    return msg ? msg : "";
  }

  [[noreturn]] void fail(const std::string& entry, const std::string& detail) {
    if (tracked_.failure()) std::rethrow_exception(tracked_.failure());
    std::string where = entry.empty() ? "layer" : fmt::format("layer entry `{}`", entry);
    // libarchive reports a cut stream in several ways (or with no text at all); what they share is
    // that the input ended first.
    if (tracked_.at_end() && (detail.empty() || detail.find("runcated") != std::string::npos)) {
      throw InvalidInputError(fmt::format("{}: truncated archive (unexpected end of data after {} bytes)",
                                          where, tracked_.bytes()));
    }
    throw InvalidInputError(
        fmt::format("{}: malformed archive: {}", where, detail.empty() ? "unreadable" : detail));
  }

  TrackedReader tracked_;
  std::optional<ArchiveReader> archive_;
};

// ------------------------------------------------------------------------ entries and refusals

enum class Kind {
  Directory,
  Regular,
  Symlink,
  HardLink,
  CharDevice,
  BlockDevice,
  Fifo,
  Whiteout,        // `.wh.NAME`: parts name what it hides
  OpaqueWhiteout,  // `.wh..wh..opq`: parts name the opaque directory
  WhiteoutMeta,    // other `.wh..wh.` names (aufs bookkeeping), ignored
};

struct LayerEntry {
  std::string name;                // as written in the archive, for messages
  std::vector<std::string> parts;  // normalized, relative to the root
  Kind kind = Kind::Regular;
  std::string link;                     // symlink or hard link target as written
  std::vector<std::string> link_parts;  // hard link target, normalized
};

// Classifies an entry and applies the refusals that need nothing but the entry itself.
LayerEntry parse_entry(archive_entry* e) {
  LayerEntry le;
  const char* raw = archive_entry_pathname(e);
  if (!raw || !*raw) throw InvalidInputError("layer: entry without a name");
  le.name = raw;
  auto parts = normalize_in_root(le.name);
  if (!parts) refuse(le.name, "path leaves the layer root");
  le.parts = std::move(*parts);

  if (!le.parts.empty()) {
    const std::string& base = le.parts.back();
    if (base == kOpaqueMarker) {
      le.parts.pop_back();
      le.kind = Kind::OpaqueWhiteout;
      return le;
    }
    if (base.starts_with(kWhiteoutMetaPrefix) || le.parts.front().starts_with(kWhiteoutMetaPrefix)) {
      le.kind = Kind::WhiteoutMeta;
      return le;
    }
    if (base.starts_with(kWhiteoutPrefix)) {
      std::string hidden = base.substr(kWhiteoutPrefix.size());
      // `.wh..` would hide the directory holding the whiteout, `.wh...` its parent.
      if (hidden.empty() || hidden == "." || hidden == "..") refuse(le.name, "whiteout names no entry");
      le.parts.back() = hidden;
      le.kind = Kind::Whiteout;
      return le;
    }
  }

  if (const char* hard = archive_entry_hardlink(e)) {
    le.link = hard;
    auto target = normalize_in_root(le.link);
    if (!target) refuse(le.name, fmt::format("hard link target `{}` leaves the layer root", le.link));
    if (target->empty()) refuse(le.name, fmt::format("hard link target `{}` is a directory", le.link));
    le.link_parts = std::move(*target);
    le.kind = Kind::HardLink;
  } else {
    switch (archive_entry_filetype(e)) {
      case AE_IFDIR:
        le.kind = Kind::Directory;
        break;
      case AE_IFREG:
        le.kind = Kind::Regular;
        break;
      case AE_IFLNK: {
        le.kind = Kind::Symlink;
        const char* target = archive_entry_symlink(e);
        if (!target || !*target) refuse(le.name, "symlink without a target");
        le.link = target;
        // An absolute target means the container's root, wherever that is mounted. A relative one
        // is joined to the link's directory; if that climbs out, the link is refused (as Docker
        // does) rather than created and trusted never to be followed.
        if (le.link.front() != '/' && !le.parts.empty()) {
          std::string joined = join_components(le.parts, le.parts.size() - 1) + "/" + le.link;
          if (!normalize_in_root(joined)) {
            refuse(le.name, fmt::format("symlink target `{}` leaves the layer root", le.link));
          }
        }
        break;
      }
      case AE_IFCHR:
        le.kind = Kind::CharDevice;
        break;
      case AE_IFBLK:
        le.kind = Kind::BlockDevice;
        break;
      case AE_IFIFO:
        le.kind = Kind::Fifo;
        break;
      default:
        refuse(le.name, "unsupported entry type");
    }
  }
  if (le.parts.empty() && le.kind != Kind::Directory)
    refuse(le.name, "names the layer root but is not a directory");
  return le;
}

// ------------------------------------------------------------------------------------ extracting

struct timespec entry_mtime(archive_entry* e) {
  return {static_cast<time_t>(archive_entry_mtime(e)), static_cast<long>(archive_entry_mtime_nsec(e))};
}

std::array<struct timespec, 2> entry_times(archive_entry* e) {
  struct timespec mtime = entry_mtime(e);
  struct timespec atime = mtime;
  if (archive_entry_atime_is_set(e)) {
    atime = {static_cast<time_t>(archive_entry_atime(e)), static_cast<long>(archive_entry_atime_nsec(e))};
  }
  return {atime, mtime};
}

class Extractor {
 public:
  Extractor(int root_dirfd, const ExtractOptions& options)
      : root_(root_dirfd), options_(options), buffer_(kCopyBufferSize) {}

  void extract(archive_entry* e, LayerStream& in, ExtractStats& stats) {
    LayerEntry le = parse_entry(e);
    try {
      switch (le.kind) {
        case Kind::WhiteoutMeta:
          return;
        case Kind::Whiteout:
          if (options_.whiteouts == WhiteoutMode::Apply) {
            apply_whiteout(le);
          } else {
            store_whiteout(le, e);
          }
          return;
        case Kind::OpaqueWhiteout:
          if (options_.whiteouts == WhiteoutMode::Apply) {
            apply_opaque(le);
          } else {
            store_opaque(le);
          }
          return;
        default:
          break;
      }
      if (le.parts.empty()) {
        if (!options_.skip_root_entry) root_directory(e);
        return;
      }
      std::string path = join_components(le.parts);
      Fd parent = open_dir_creating(le.parts, le.parts.size() - 1);
      const std::string& base = le.parts.back();
      if (le.kind == Kind::HardLink) {
        hard_link(le, e, parent.get(), path);
        created_.insert(path);
        return;
      }
      if (auto existing = stat_at(parent.get(), base)) {
        // As Docker: anything but a directory landing on a directory replaces what was there.
        if (!(S_ISDIR(existing->st_mode) && le.kind == Kind::Directory))
          remove_tree_at(parent.get(), base, path);
      }
      if (create(le, e, in, parent.get(), path)) {
        created_.insert(path);
      } else {
        ++stats.skipped_devices;
      }
    } catch (const InvalidInputError&) {
      throw;  // names the entry already, or is the upstream decompressor's own error
    } catch (...) {
      rethrow_with_context(fmt::format("layer entry `{}`", le.name));
    }
  }

  // Directory modes and mtimes go last, deepest first: writing an entry changes its directory's
  // mtime, and a read-only mode would stop an unprivileged extraction from filling it.
  void finish() {
    for (auto it = directory_order_.rbegin(); it != directory_order_.rend(); ++it) {
      const DirectoryMeta& meta = directories_.at(*it);
      Fd dir = open_in_root(root_, *it, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!dir.valid()) {
        // Replaced or whited out by a later entry of the same archive: nothing left to stamp.
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
        throw_errno(fmt::format("layer: open directory `{}`", *it));
      }
      if (::fchmod(dir.get(), meta.mode) != 0) throw_errno(fmt::format("layer: chmod `{}`", *it));
      if (::futimens(dir.get(), meta.times.data()) != 0)
        throw_errno(fmt::format("layer: set times of `{}`", *it));
    }
  }

 private:
  struct DirectoryMeta {
    mode_t mode;
    std::array<struct timespec, 2> times;
  };

  // Opens the directory named by the first `count` parts, creating missing ones (0755, as Docker
  // does for parents an archive leaves out).
  Fd open_dir_creating(const std::vector<std::string>& parts, size_t count) {
    std::string relative = join_components(parts, count);
    Fd dir = open_in_root(root_, relative, O_RDONLY | O_DIRECTORY);
    if (dir.valid()) return dir;
    if (errno != ENOENT) throw_errno(fmt::format("open directory `{}`", relative));
    Fd at = open_in_root(root_, "", O_RDONLY | O_DIRECTORY);
    if (!at.valid()) throw_errno("open the layer root");
    for (size_t i = 0; i < count; ++i) {
      std::string sub = join_components(parts, i + 1);
      Fd next = open_in_root(root_, sub, O_RDONLY | O_DIRECTORY);
      if (!next.valid()) {
        if (errno != ENOENT) throw_errno(fmt::format("open directory `{}`", sub));
        if (::mkdirat(at.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
          throw_errno(fmt::format("create directory `{}`", sub));
        }
        created_.insert(sub);
        next = open_in_root(root_, sub, O_RDONLY | O_DIRECTORY);
        if (!next.valid()) throw_errno(fmt::format("open directory `{}`", sub));
        if (options_.on_implicit_dir) options_.on_implicit_dir(next.get(), sub);
      }
      at = std::move(next);
    }
    return at;
  }

  // Returns false for a device node the process may not create (left out, counted by the caller).
  bool create(const LayerEntry& le, archive_entry* e, LayerStream& in, int parent, const std::string& path) {
    const std::string& base = le.parts.back();
    mode_t perm = archive_entry_perm(e);
    switch (le.kind) {
      case Kind::Directory: {
        if (::mkdirat(parent, base.c_str(), 0700) != 0 && errno != EEXIST) {
          throw_errno(fmt::format("create directory `{}`", path));
        }
        Fd dir(::openat(parent, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir.valid()) throw_errno(fmt::format("open directory `{}`", path));
        if (options_.same_owner) chown_fd(dir.get(), e, path);
        set_xattrs(dir.get(), -1, "", e, path);
        defer_directory(path, perm, e);
        return true;
      }
      case Kind::Regular: {
        Fd file(::openat(parent, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!file.valid()) throw_errno(fmt::format("create `{}`", path));
        FdWriter out(file.get(), path);
        while (size_t n = in.read_data(buffer_, le.name)) out.write(std::span(buffer_).first(n));
        if (options_.same_owner) chown_fd(file.get(), e, path);
        set_xattrs(file.get(), -1, "", e, path);
        // After chown, which clears setuid and setgid.
        if (::fchmod(file.get(), perm) != 0) throw_errno(fmt::format("chmod `{}`", path));
        auto times = entry_times(e);
        if (::futimens(file.get(), times.data()) != 0) throw_errno(fmt::format("set times of `{}`", path));
        return true;
      }
      case Kind::Symlink:
        if (::symlinkat(le.link.c_str(), parent, base.c_str()) != 0)
          throw_errno(fmt::format("create symlink `{}`", path));
        finish_at(parent, base, e, path, /*set_mode=*/false);
        return true;
      case Kind::CharDevice:
      case Kind::BlockDevice:
      case Kind::Fifo: {
        mode_t type = le.kind == Kind::CharDevice    ? S_IFCHR
                      : le.kind == Kind::BlockDevice ? S_IFBLK
                                                     : S_IFIFO;
        dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
        if (::mknodat(parent, base.c_str(), type | (perm & 0777), dev) != 0) {
          if (errno == EPERM && type != S_IFIFO) return false;
          throw_errno(fmt::format("create device `{}`", path));
        }
        finish_at(parent, base, e, path, /*set_mode=*/true);
        return true;
      }
      default:
        throw Error("unexpected entry kind");  // whiteouts and hard links are handled by the caller
    }
  }

  void hard_link(const LayerEntry& le, archive_entry* e, int parent, const std::string& path) {
    std::string target = join_components(le.link_parts);
    Fd target_dir =
        open_in_root(root_, join_components(le.link_parts, le.link_parts.size() - 1), O_RDONLY | O_DIRECTORY);
    std::optional<struct stat> target_st;
    if (target_dir.valid()) target_st = stat_at(target_dir.get(), le.link_parts.back());
    if (!target_st) {
      if (errno == ENOENT || errno == ENOTDIR)
        refuse(le.name, fmt::format("hard link target `{}` does not exist", le.link));
      throw_errno(fmt::format("hard link target `{}`", target));
    }
    if (S_ISDIR(target_st->st_mode))
      refuse(le.name, fmt::format("hard link target `{}` is a directory", le.link));
    const std::string& base = le.parts.back();
    if (auto existing = stat_at(parent, base)) {
      if (existing->st_dev == target_st->st_dev && existing->st_ino == target_st->st_ino) return;
      remove_tree_at(parent, base, path);
    }
    // Flags 0: a link to a symlink links the symlink itself, never what it points to.
    if (::linkat(target_dir.get(), le.link_parts.back().c_str(), parent, base.c_str(), 0) != 0) {
      throw_errno(fmt::format("create hard link `{}` to `{}`", path, target));
    }
    // As Docker does, the link's own header sets owner, mode and times of the inode it shares
    // (a link to a symlink is left as the symlink was).
    if (!S_ISLNK(target_st->st_mode)) finish_at(parent, base, e, path, true);
  }

  void apply_whiteout(const LayerEntry& le) {
    std::string hidden = join_components(le.parts);
    Fd dir = open_in_root(root_, join_components(le.parts, le.parts.size() - 1), O_RDONLY | O_DIRECTORY);
    if (!dir.valid()) {
      if (errno == ENOENT || errno == ENOTDIR) return;  // nothing there to hide
      throw_errno(fmt::format("open directory of `{}`", hidden));
    }
    remove_tree_at(dir.get(), le.parts.back(), hidden);
  }

  void store_whiteout(const LayerEntry& le, archive_entry* e) {
    std::string hidden = join_components(le.parts);
    Fd dir = open_dir_creating(le.parts, le.parts.size() - 1);
    const std::string& base = le.parts.back();
    remove_tree_at(dir.get(), base, hidden);
    if (::mknodat(dir.get(), base.c_str(), S_IFCHR, makedev(0, 0)) != 0) {
      if (errno == EPERM) {
        throw SystemError(
            fmt::format("create overlay whiteout `{}` (overlay snapshots need CAP_MKNOD)", hidden), EPERM);
      }
      throw_errno(fmt::format("create overlay whiteout `{}`", hidden));
    }
    // The entry's own metadata is kept on the device, so writing the tree back reproduces it.
    finish_at(dir.get(), base, e, hidden, /*set_mode=*/true);
  }

  void apply_opaque(const LayerEntry& le) {
    std::string path = join_components(le.parts);
    Fd dir = open_in_root(root_, path, O_RDONLY | O_DIRECTORY);
    if (!dir.valid()) {
      if (errno == ENOENT || errno == ENOTDIR) return;
      throw_errno(fmt::format("open directory `{}`", path));
    }
    remove_not_created(dir.get(), path);
  }

  // An opaque directory keeps only what this archive put into it; lower layers' entries go.
  void remove_not_created(int dirfd, const std::string& path) {
    for (const auto& name : list_dir_at(dirfd, path.empty() ? "." : path)) {
      std::string child = path.empty() ? name : path + "/" + name;
      if (!created_.contains(child)) {
        remove_tree_at(dirfd, name, child);
        continue;
      }
      auto st = stat_at(dirfd, name);
      if (st && S_ISDIR(st->st_mode)) {
        Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub.valid()) throw_errno(fmt::format("open directory `{}`", child));
        remove_not_created(sub.get(), child);
      }
    }
  }

  void store_opaque(const LayerEntry& le) {
    std::string path = join_components(le.parts);
    Fd dir = open_dir_creating(le.parts, le.parts.size());
    if (::fsetxattr(dir.get(), kOverlayOpaqueXattr, "y", 1, 0) == 0) return;
    // Unprivileged overlayfs (userxattr) reads the user.* spelling instead.
    if (errno == EPERM && ::fsetxattr(dir.get(), kUserOverlayOpaqueXattr, "y", 1, 0) == 0) return;
    throw_errno(fmt::format("mark `{}` opaque", path.empty() ? "." : path));
  }

  void root_directory(archive_entry* e) {
    Fd root = open_in_root(root_, "", O_RDONLY | O_DIRECTORY);
    if (!root.valid()) throw_errno("open the layer root");
    if (options_.same_owner) chown_fd(root.get(), e, ".");
    set_xattrs(root.get(), -1, "", e, ".");
    defer_directory("", archive_entry_perm(e), e);
  }

  void defer_directory(const std::string& path, mode_t perm, archive_entry* e) {
    auto [it, inserted] = directories_.insert_or_assign(path, DirectoryMeta{perm, entry_times(e)});
    if (inserted) directory_order_.push_back(path);
  }

  std::pair<uid_t, gid_t> owner_of(archive_entry* e) const {
    if (options_.owner) return *options_.owner;
    return {static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e))};
  }

  void chown_fd(int fd, archive_entry* e, const std::string& path) {
    auto [uid, gid] = owner_of(e);
    if (::fchown(fd, uid, gid) != 0) throw_errno(fmt::format("chown `{}`", path));
  }

  // Owner, xattrs, mode and times of something that cannot be opened (a symlink, a device).
  void finish_at(int parent, const std::string& base, archive_entry* e, const std::string& path,
                 bool set_mode) {
    if (options_.same_owner &&
        ::fchownat(parent, base.c_str(), owner_of(e).first, owner_of(e).second, AT_SYMLINK_NOFOLLOW) != 0) {
      throw_errno(fmt::format("chown `{}`", path));
    }
    set_xattrs(-1, parent, base, e, path);
    if (set_mode && ::fchmodat(parent, base.c_str(), archive_entry_perm(e), 0) != 0) {
      throw_errno(fmt::format("chmod `{}`", path));
    }
    auto times = entry_times(e);
    if (::utimensat(parent, base.c_str(), times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
      throw_errno(fmt::format("set times of `{}`", path));
    }
  }

  // Sets the entry's xattrs on `fd`, or when fd is -1 on `base` in `parent` without following it.
  void set_xattrs(int fd, int parent, const std::string& base, archive_entry* e, const std::string& path) {
    if (archive_entry_xattr_reset(e) == 0) return;
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    std::string via_proc = fd < 0 ? proc_path(parent, base) : "";
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      if (is_overlay_xattr(name)) continue;  // see is_overlay_xattr: never taken from an archive
      int rc = fd >= 0 ? ::fsetxattr(fd, name, value, size, 0)
                       : ::lsetxattr(via_proc.c_str(), name, value, size, 0);
      if (rc == 0) continue;
      // trusted.* needs CAP_SYS_ADMIN; an unprivileged extraction leaves them out, as Docker's
      // rootless mode does.
      if (std::string_view(name).starts_with("trusted.") && (errno == EPERM || errno == ENOTSUP)) continue;
      throw_errno(fmt::format("set xattr {} on `{}`", name, path));
    }
  }

  int root_;
  ExtractOptions options_;
  std::vector<std::byte> buffer_;
  std::unordered_set<std::string> created_;  // paths this archive made (what an opaque dir keeps)
  std::unordered_map<std::string, DirectoryMeta> directories_;
  std::vector<std::string> directory_order_;
};

// -------------------------------------------------------------------------------------- writing

bool is_overlay_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

std::string read_xattr_value(int fd, const std::string& via_proc, const std::string& name,
                             const std::string& path) {
  for (;;) {
    ssize_t size = fd >= 0 ? ::fgetxattr(fd, name.c_str(), nullptr, 0)
                           : ::lgetxattr(via_proc.c_str(), name.c_str(), nullptr, 0);
    if (size < 0) throw_errno(fmt::format("read xattr {} of `{}`", name, path));
    std::string value(static_cast<size_t>(size), '\0');
    ssize_t got = fd >= 0 ? ::fgetxattr(fd, name.c_str(), value.data(), value.size())
                          : ::lgetxattr(via_proc.c_str(), name.c_str(), value.data(), value.size());
    if (got >= 0) {
      value.resize(static_cast<size_t>(got));
      return value;
    }
    if (errno != ERANGE) throw_errno(fmt::format("read xattr {} of `{}`", name, path));
    // Grew between the two calls: ask again.
  }
}

// xattrs of `fd` (or, when fd is -1, of `base` in `parent` without following it), sorted by name,
// without overlayfs's bookkeeping and without security.selinux (a host's label, not content).
std::vector<std::pair<std::string, std::string>> read_xattrs(int fd, int parent, const std::string& base,
                                                             const std::string& path) {
  std::string via_proc = fd < 0 ? proc_path(parent, base) : "";
  std::string names;
  for (;;) {
    ssize_t size = fd >= 0 ? ::flistxattr(fd, nullptr, 0) : ::llistxattr(via_proc.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP) return {};
      throw_errno(fmt::format("list xattrs of `{}`", path));
    }
    names.assign(static_cast<size_t>(size), '\0');
    ssize_t got = fd >= 0 ? ::flistxattr(fd, names.data(), names.size())
                          : ::llistxattr(via_proc.c_str(), names.data(), names.size());
    if (got >= 0) {
      names.resize(static_cast<size_t>(got));
      break;
    }
    if (errno != ERANGE) throw_errno(fmt::format("list xattrs of `{}`", path));
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t pos = 0; pos < names.size();) {
    std::string name = names.c_str() + pos;
    pos += name.size() + 1;
    if (name.empty() || is_overlay_xattr(name) || name == "security.selinux") continue;
    out.emplace_back(name, read_xattr_value(fd, via_proc, name, path));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_opaque_dir(int dirfd) {
  char value[2] = {};
  for (const char* name : {kOverlayOpaqueXattr, kUserOverlayOpaqueXattr}) {
    ssize_t n = ::fgetxattr(dirfd, name, value, sizeof value);
    if (n == 1 && value[0] == 'y') return true;
  }
  return false;
}

// Walks one directory tree (a layer, whiteouts written as OCI whiteouts) or a stack of them (the
// merged view, whiteouts applied) and writes it in a fixed order with fixed metadata: children in
// byte order of their names, each directory right before its contents.
class TreeWriter {
 public:
  TreeWriter(Writer& out, const TarWriteOptions& options, bool flatten)
      : archive_(out, "tar"), options_(options), flatten_(flatten), buffer_(kCopyBufferSize) {}

  void write(std::span<const int> layers_top_first) {
    std::vector<int> root_layers;
    for (int fd : layers_top_first) {
      root_layers.push_back(fd);
      if (!is_opaque_dir(fd)) continue;
      if (flatten_) break;  // hides the layers below
      struct stat st {};
      if (::fstat(fd, &st) != 0) throw_errno("stat the layer root");
      write_marker(std::string(kOpaqueMarker), st);
    }
    walk(root_layers, "");
    archive_.finish();
  }

 private:
  // `layers`: the directory at `prefix` in each layer that contributes to it, top first.
  void walk(std::span<const int> layers, const std::string& prefix) {
    std::map<std::string, size_t> topmost;
    for (size_t i = 0; i < layers.size(); ++i) {
      for (auto& name : list_dir_at(layers[i], prefix.empty() ? "." : prefix)) {
        topmost.emplace(std::move(name), i);
      }
    }
    struct Child {
      std::string order_key;  // the name as written: a whiteout sorts as `.wh.NAME`
      std::string name;
      size_t layer;
      struct stat st;
    };
    std::vector<Child> children;
    for (auto& [name, layer] : topmost) {
      auto st = stat_at(layers[layer], name);
      if (!st) throw_errno(fmt::format("stat `{}{}`", prefix, name));
      if (is_overlay_whiteout(*st) && flatten_) continue;  // hides lower layers, is not itself content
      std::string key = is_overlay_whiteout(*st) ? std::string(kWhiteoutPrefix) + name : name;
      children.push_back(Child{std::move(key), name, layer, *st});
    }
    // std::string compares as unsigned bytes.
    std::sort(children.begin(), children.end(),
              [](const Child& a, const Child& b) { return a.order_key < b.order_key; });
    for (const Child& child : children) {
      const std::string& name = child.name;
      size_t layer = child.layer;
      int dirfd = layers[layer];
      std::string path = prefix + name;
      const struct stat& st = child.st;
      if (is_overlay_whiteout(st)) {
        write_marker(prefix + child.order_key, st);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) {
        write_entry(path, st, dirfd, name, -1);
        continue;
      }
      Fd dir(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!dir.valid()) throw_errno(fmt::format("open directory `{}`", path));
      bool opaque = is_opaque_dir(dir.get());
      write_entry(path + "/", st, dirfd, name, dir.get());
      if (!flatten_ && opaque) write_marker(path + "/" + std::string(kOpaqueMarker), st);
      std::vector<Fd> lower;
      std::vector<int> child_layers{dir.get()};
      for (size_t j = layer + 1; flatten_ && !opaque && j < layers.size(); ++j) {
        auto lower_st = stat_at(layers[j], name);
        if (!lower_st) {
          if (errno == ENOENT) continue;
          throw_errno(fmt::format("stat `{}`", path));
        }
        // A whiteout or a non-directory in this layer hides the layers below it.
        if (!S_ISDIR(lower_st->st_mode)) break;
        Fd lower_dir(::openat(layers[j], name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!lower_dir.valid()) throw_errno(fmt::format("open directory `{}`", path));
        opaque = is_opaque_dir(lower_dir.get());
        child_layers.push_back(lower_dir.get());
        lower.push_back(std::move(lower_dir));
      }
      walk(child_layers, path + "/");
    }
  }

  int64_t clamped_mtime(const struct stat& st) const {
    int64_t mtime = st.st_mtim.tv_sec;
    if (options_.source_date_epoch) mtime = std::min(mtime, *options_.source_date_epoch);
    return mtime;
  }

  EntryPtr new_entry(const std::string& name, const struct stat& st) const {
    EntryPtr e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_perm(e.get(), st.st_mode & 07777);
    const std::optional<IdMap>& ids = options_.id_map;
    archive_entry_set_uid(e.get(), ids ? ids->container_uid(st.st_uid) : st.st_uid);
    archive_entry_set_gid(e.get(), ids ? ids->container_gid(st.st_gid) : st.st_gid);
    // Whole seconds: sub-second times would cost a PAX record per entry and say nothing useful.
    archive_entry_set_mtime(e.get(), clamped_mtime(st), 0);
    return e;
  }

  // An empty regular file carrying `st`'s owner, mode and mtime: a `.wh.` whiteout or opaque marker.
  void write_marker(const std::string& name, const struct stat& st) {
    EntryPtr e = new_entry(name, st);
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_size(e.get(), 0);
    archive_.write_header(e.get());
  }

  // `object_fd`: the entry already opened (directories), or -1.
  void write_entry(const std::string& name, const struct stat& st, int dirfd, const std::string& base,
                   int object_fd) {
    if (S_ISSOCK(st.st_mode)) return;  // a socket has no tar form; Docker leaves them out too
    EntryPtr e = new_entry(name, st);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [first, inserted] = hard_links_.try_emplace({st.st_dev, st.st_ino}, name);
      if (!inserted) {
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_hardlink(e.get(), first->second.c_str());
        archive_entry_set_size(e.get(), 0);
        archive_.write_header(e.get());
        return;
      }
    }
    Fd file;
    if (S_ISREG(st.st_mode)) {
      file = Fd(::openat(dirfd, base.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!file.valid()) throw_errno(fmt::format("open `{}`", name));
      object_fd = file.get();
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_size(e.get(), st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
      archive_entry_set_filetype(e.get(), AE_IFDIR);
    } else if (S_ISLNK(st.st_mode)) {
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(dirfd, base.c_str(), target.data(), target.size());
      if (n < 0) throw_errno(fmt::format("read symlink `{}`", name));
      if (static_cast<size_t>(n) >= target.size())
        throw Error(fmt::format("symlink `{}` changed while being read", name));
      target.resize(static_cast<size_t>(n));
      archive_entry_set_symlink(e.get(), target.c_str());
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      archive_entry_set_filetype(e.get(), S_ISCHR(st.st_mode) ? AE_IFCHR : AE_IFBLK);
      archive_entry_set_rdevmajor(e.get(), major(st.st_rdev));
      archive_entry_set_rdevminor(e.get(), minor(st.st_rdev));
    } else if (S_ISFIFO(st.st_mode)) {
      archive_entry_set_filetype(e.get(), AE_IFIFO);
    }
    for (const auto& [key, value] : read_xattrs(object_fd, dirfd, base, name)) {
      archive_entry_xattr_add_entry(e.get(), key.c_str(), value.data(), value.size());
    }
    archive_.write_header(e.get());
    if (file.valid()) copy_contents(file.get(), static_cast<uint64_t>(st.st_size), name);
  }

  void copy_contents(int fd, uint64_t size, const std::string& name) {
    FdReader in(fd, name);
    uint64_t done = 0;
    while (done < size) {
      size_t n = in.read(std::span(buffer_).first(std::min<uint64_t>(buffer_.size(), size - done)));
      if (n == 0)
        throw Error(fmt::format("`{}` shrank while being archived ({} of {} bytes)", name, done, size));
      archive_.write_data(std::span(buffer_).first(n));
      done += n;
    }
  }

  struct InodeHash {
    size_t operator()(const std::pair<dev_t, ino_t>& k) const {
      return std::hash<uint64_t>()(static_cast<uint64_t>(k.second) * 31 + static_cast<uint64_t>(k.first));
    }
  };

  ArchiveWriter archive_;
  TarWriteOptions options_;
  bool flatten_;
  std::vector<std::byte> buffer_;
  // First name written for each multiply-linked inode; later names become hard links to it.
  std::unordered_map<std::pair<dev_t, ino_t>, std::string, InodeHash> hard_links_;
};

}  // namespace

ExtractStats extract_tar(Reader& tar, int root_dirfd, const ExtractOptions& options) {
  LayerStream in(tar);
  Extractor extractor(root_dirfd, options);
  ExtractStats stats;
  while (archive_entry* e = in.next()) {
    ++stats.entries;
    extractor.extract(e, in, stats);
  }
  extractor.finish();
  in.drain();
  return stats;
}

ScanStats scan_tar(Reader& tar) {
  LayerStream in(tar);
  ScanStats stats;
  // Every earlier entry (true for directories): what a hard link may point at.
  std::unordered_map<std::string, bool> seen;
  while (archive_entry* e = in.next()) {
    ++stats.entries;
    LayerEntry le = parse_entry(e);
    if (le.kind == Kind::HardLink) {
      auto target = seen.find(join_components(le.link_parts));
      if (target == seen.end()) refuse(le.name, fmt::format("hard link target `{}` does not exist", le.link));
      if (target->second) refuse(le.name, fmt::format("hard link target `{}` is a directory", le.link));
    }
    if (le.kind != Kind::Whiteout && le.kind != Kind::OpaqueWhiteout && le.kind != Kind::WhiteoutMeta) {
      seen[join_components(le.parts)] = le.kind == Kind::Directory;
    }
    in.skip_data(le.name);
  }
  in.drain();
  stats.tar_bytes = in.bytes();
  return stats;
}

void write_tar_from_dir(int root_dirfd, Writer& out, const TarWriteOptions& options) {
  TreeWriter writer(out, options, /*flatten=*/false);
  const int layers[] = {root_dirfd};
  writer.write(layers);
}

void write_flattened_tar(std::span<const int> layer_dirfds_top_first, Writer& out,
                         const TarWriteOptions& options) {
  TreeWriter writer(out, options, /*flatten=*/true);
  writer.write(layer_dirfds_top_first);
}

}  // namespace kiln
