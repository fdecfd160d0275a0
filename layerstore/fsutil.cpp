#include "layerstore/fsutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "layerstore/errors.h"

namespace kiln {

namespace {

// Lexical normalisation; a `..` at the root fails when clamp_at_root is off, else stays there.
std::optional<std::vector<std::string>> normalize(std::string_view path, bool clamp_at_root) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) {
        parts.pop_back();
      } else if (!clamp_at_root) {
        return std::nullopt;
      }
      continue;
    }
    parts.emplace_back(part);
  }
  return parts;
}

}  // namespace

std::optional<std::vector<std::string>> normalize_in_root(std::string_view path) {
  return normalize(path, /*clamp_at_root=*/false);
}

std::vector<std::string> normalize_clamped(std::string_view path) {
  return *normalize(path, /*clamp_at_root=*/true);
}

std::vector<std::string> split_on(std::string_view text, char separator) {
  std::vector<std::string> pieces;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(separator, start);
    if (end == std::string_view::npos) {
      pieces.emplace_back(text.substr(start));
      return pieces;
    }
    pieces.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
}

std::string join_components(const std::vector<std::string>& parts, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < parts.size(); ++i) {
    if (i > 0) out.push_back('/');
    out += parts[i];
  }
  return out;
}

namespace {

// Without openat2 the walk goes one component at a time and refuses every symlink (ENOTDIR on the
// way, ELOOP last; with O_PATH a last symlink is opened as itself): safe, only less permissive
// than the kernel's in-root resolution.
Fd open_in_root_by_walking(int root_dirfd, const std::string& relative, int flags) {
  auto parts = normalize_in_root(relative);
  if (!parts) {
    errno = EXDEV;
    return Fd();
  }
  if (parts->empty()) return Fd(::openat(root_dirfd, ".", flags | O_CLOEXEC));
  Fd current;
  int at = root_dirfd;
  for (size_t i = 0; i + 1 < parts->size(); ++i) {
    Fd next(::openat(at, (*parts)[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) return Fd();
    current = std::move(next);
    at = current.get();
  }
  // Following a last symlink here would resolve it against the host's root.
  return Fd(::openat(at, parts->back().c_str(), flags | O_CLOEXEC | O_NOFOLLOW, 0));
}

}  // namespace

Fd open_in_root(int root_dirfd, const std::string& relative, int flags) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const char* path = relative.empty() ? "." : relative.c_str();
  long fd = ::syscall(SYS_openat2, root_dirfd, path, &how, sizeof how);
  if (fd >= 0) return Fd(static_cast<int>(fd));
  // EAGAIN: a concurrent rename raced the in-root lookup, which the kernel refuses to guess about.
  for (int retry = 0; retry < 8 && errno == EAGAIN; ++retry) {
    fd = ::syscall(SYS_openat2, root_dirfd, path, &how, sizeof how);
    if (fd >= 0) return Fd(static_cast<int>(fd));
  }
  if (errno == ENOSYS) return open_in_root_by_walking(root_dirfd, relative, flags);
  return Fd();
}

std::optional<struct stat> stat_at(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::nullopt;
  return st;
}

std::vector<std::string> list_dir_at(int dirfd, const std::string& shown) {
  Fd own(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!own.valid()) throw_errno(fmt::format("open directory `{}`", shown));
  DIR* dir = ::fdopendir(own.get());
  if (!dir) throw_errno(fmt::format("open directory `{}`", shown));
  own.release();  // the DIR stream owns it now
  std::vector<std::string> names;
  errno = 0;
  while (dirent* d = ::readdir(dir)) {
    std::string_view n = d->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) throw_errno(fmt::format("read directory `{}`", shown), err);
  return names;
}

std::vector<std::string> list_dir(const std::string& path) {
  Fd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    if (errno == ENOENT) return {};
    throw_errno(fmt::format("read directory `{}`", path));
  }
  std::vector<std::string> names = list_dir_at(dir.get(), path);
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t remove_tree_at(int dirfd, const std::string& name, const std::string& shown) {
  auto st = stat_at(dirfd, name);
  if (!st) {
    if (errno == ENOENT) return 0;
    throw_errno(fmt::format("remove `{}`", shown));
  }
  if (S_ISDIR(st->st_mode)) {
    Fd dir(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir.valid()) throw_errno(fmt::format("remove `{}`", shown));
    // Extracted directories keep their archive modes, which may deny writing: open them up so
    // their entries can be unlinked (root passes anyway; this is for unprivileged runs).
    if ((st->st_mode & 0700) != 0700) ::fchmod(dir.get(), (st->st_mode & 07777) | 0700);
    uint64_t freed = 0;
    for (const auto& child : list_dir_at(dir.get(), shown))
      freed += remove_tree_at(dir.get(), child, shown + "/" + child);
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      throw_errno(fmt::format("remove `{}`", shown));
    }
    return freed;
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0) {
    if (errno == ENOENT) return 0;
    throw_errno(fmt::format("remove `{}`", shown));
  }
  return S_ISREG(st->st_mode) && st->st_nlink == 1 ? static_cast<uint64_t>(st->st_size) : 0;
}

std::string proc_path(int dirfd, const std::string& name) {
  return fmt::format("/proc/self/fd/{}/{}", dirfd, name);
}

}  // namespace kiln
