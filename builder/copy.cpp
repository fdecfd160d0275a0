#include "builder/copy.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>

#include "builder/checksum_cache.h"
#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/fsutil.h"
#include "layerstore/tar.h"

namespace kiln::builder {
namespace {

bool has_wildcards(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '*' || path[i] == '?' || path[i] == '[') return true;
    if (path[i] == '\\') ++i;
  }
  return false;
}

// One path component against a pattern component, as Go's filepath.Match.
bool component_matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size() && !path.empty()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// The paths of `tree` that `pattern` (cleaned, relative) matches, component by component; a
// directory that matched is not searched further (BuildKit walks and skips a matched directory).
std::vector<std::string> glob(const SourceTree& tree, const std::string& pattern) {
  std::vector<std::string> parts = split_path(pattern);
  std::vector<std::string> current = {""};
  for (size_t i = 0; i < parts.size(); ++i) {
    std::vector<std::string> next;
    bool last = i + 1 == parts.size();
    for (const std::string& dir : current) {
      if (!has_wildcards(parts[i])) {
        std::string literal;
        for (size_t c = 0; c < parts[i].size(); ++c) {
          if (parts[i][c] == '\\' && c + 1 < parts[i].size()) ++c;
          literal += parts[i][c];
        }
        std::string child = join_path(dir, literal);
        auto entry = tree.lookup(child);
        if (entry && (last || S_ISDIR(entry->st.st_mode))) next.push_back(child);
        continue;
      }
      for (const std::string& name : tree.list(dir)) {
        if (!component_matches(parts[i], name)) continue;
        std::string child = join_path(dir, name);
        auto entry = tree.lookup(child);
        if (!entry) continue;
        if (last || S_ISDIR(entry->st.st_mode)) next.push_back(child);
      }
    }
    current = std::move(next);
  }
  return current;
}

// A path relative to `base` (which is a prefix of it, or "").
std::string relative_to(const std::string& base, const std::string& path) {
  if (base.empty()) return path;
  if (path == base) return "";
  return path.substr(base.size() + 1);
}

// Whether an --exclude pattern leaves `relative` (to the copied source) out.
bool excluded_by(const std::vector<std::string>& patterns, const std::string& relative) {
  std::vector<std::string> parts = split_path(relative);
  for (const std::string& pattern : patterns) {
    std::vector<std::string> pattern_parts = split_path(clean_relative(pattern));
    if (pattern_parts.empty() || pattern_parts.size() > parts.size()) continue;
    // A pattern that matches a directory leaves out everything under it.
    bool matched = true;
    for (size_t i = 0; i < pattern_parts.size() && matched; ++i) {
      matched = component_matches(pattern_parts[i], parts[i]);
    }
    if (matched) return true;
  }
  return false;
}

// Walks the directory `dir` of `tree`, each directory before what it holds, names in byte order;
// what the filter or --exclude leaves out is skipped. A directory left out that a later `!` rule
// may reach into is walked, and kept when something under it is.
void walk(const SourceTree& tree, const std::string& root, const std::string& dir,
          const std::vector<std::string>& excludes, std::vector<SourceTree::Entry>& out) {
  for (const std::string& name : tree.list(dir)) {
    std::string path = join_path(dir, name);
    std::string relative = relative_to(root, path);
    if (!excludes.empty() && excluded_by(excludes, relative)) continue;
    if (tree.excluded(path)) {
      // Left out, but listed: a directory a later `!` rule reaches into. It is kept only as the
      // way to what is let in under it.
      auto dir_entry = tree.lookup(path, false);
      if (!dir_entry || !S_ISDIR(dir_entry->st.st_mode)) continue;
      std::vector<SourceTree::Entry> below;
      walk(tree, root, path, excludes, below);
      if (below.empty()) continue;
      out.push_back(*dir_entry);
      out.insert(out.end(), std::make_move_iterator(below.begin()), std::make_move_iterator(below.end()));
      continue;
    }
    std::optional<SourceTree::Entry> entry = tree.lookup(path);
    if (!entry) continue;
    out.push_back(*entry);
    if (S_ISDIR(entry->st.st_mode)) walk(tree, root, path, excludes, out);
  }
}

// chmod(1)'s symbolic modes, as BSD's setmode reads them (BuildKit's parser is a port of it).
constexpr mode_t kStandardBits = 06777;  // a: set-id and permission bits, not the sticky bit
constexpr mode_t kSticky = 01000;
constexpr uint8_t kCopySet = 1, kCopyClear = 2, kCopyToUser = 4, kCopyToGroup = 8, kCopyToOther = 16;

// Appends the ops for `op` ('+', '-', '=', 'X', 'Y', or 'u'/'g'/'o' with `arg` the operator) on
// the classes in `who` (0: all of them, BuildKit's umask being 0).
void add_op(std::vector<ChmodSpec::Op>& ops, char op, mode_t who, mode_t arg, char copy_op = 0) {
  switch (op) {
    case '=':
      ops.push_back({'-', 0, who ? who : kStandardBits});
      op = '+';
      [[fallthrough]];
    case '+':
    case '-':
    case 'X':
    case 'Y':
      ops.push_back({op, 0, who ? (who & arg) : arg});
      return;
    default: {  // 'u', 'g', 'o': copy a class's bits
      ChmodSpec::Op copy{op, 0, static_cast<mode_t>(~mode_t{0})};
      if (who == 0) {
        copy.flags = kCopyToUser | kCopyToGroup | kCopyToOther;
      } else {
        if (who & 0400) copy.flags |= kCopyToUser;
        if (who & 0040) copy.flags |= kCopyToGroup;
        if (who & 0004) copy.flags |= kCopyToOther;
      }
      copy.flags |= copy_op == '+' ? kCopySet : copy_op == '-' ? kCopyClear : (kCopySet | kCopyClear);
      ops.push_back(copy);
      return;
    }
  }
}

// BuildKit's messages: the first for anything that starts like a number.
[[noreturn]] void bad_chmod(const std::string& text) {
  if (!text.empty() && text[0] >= '0' && text[0] <= '9') {
    throw UsageError(fmt::format(
        "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777", text));
  }
  throw UsageError(fmt::format("invalid chmod parameter: '{}': invalid syntax", text));
}

}  // namespace

mode_t ChmodSpec::apply(mode_t mode, bool directory) const {
  if (octal) return *octal & 07777;
  const mode_t before = mode & 07777;
  mode_t result = before;
  for (const Op& op : ops) {
    switch (op.cmd) {
      case '+':
        result |= op.bits;
        break;
      case '-':
        result &= ~op.bits;
        break;
      case 'X':
      case 'Y':
        // Linux's X: only for a directory, or a file someone could run before the change.
        if (directory || (before & 0111)) result = op.cmd == 'X' ? (result | op.bits) : (result & ~op.bits);
        break;
      default: {
        int from = op.cmd == 'u' ? 6 : op.cmd == 'g' ? 3 : 0;
        mode_t value = (result >> from) & 07;
        const std::pair<uint8_t, int> targets[] = {{kCopyToUser, 6}, {kCopyToGroup, 3}, {kCopyToOther, 0}};
        if (op.flags & kCopyClear) {
          mode_t clear = (op.flags & kCopySet) ? 07 : value;
          for (auto [flag, shift] : targets) {
            if (op.flags & flag) result &= ~((clear << shift) & op.bits);
          }
        }
        if (op.flags & kCopySet) {
          for (auto [flag, shift] : targets) {
            if (op.flags & flag) result |= (value << shift) & op.bits;
          }
        }
        break;
      }
    }
  }
  return result & 07777;
}

ChmodSpec parse_chmod(const std::string& text) {
  ChmodSpec spec;
  spec.symbolic = text;
  if (text.empty()) bad_chmod(text);
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; })) {
    // strconv.ParseUint(text, 8, 32): any number of digits, leading zeros included.
    uint64_t value = 0;
    for (char c : text) {
      value = value * 8 + static_cast<uint64_t>(c - '0');
      if (value > 07777) bad_chmod(text);
    }
    spec.octal = static_cast<mode_t>(value);
    return spec;
  }
  if (text[0] >= '0' && text[0] <= '9') bad_chmod(text);
  // Clauses [ugoa]*([-+=]([rwxXst]*|[ugo]))+ joined by commas.
  size_t i = 0;
  while (true) {
    mode_t who = 0;
    for (; i < text.size(); ++i) {
      char c = text[i];
      if (c == 'a') {
        who |= kStandardBits;
      } else if (c == 'u') {
        who |= 04700;
      } else if (c == 'g') {
        who |= 02070;
      } else if (c == 'o') {
        who |= 00007;
      } else {
        break;
      }
    }
    bool equal_done = false;
    do {  // one or more operators for these classes
      if (i >= text.size() || std::string_view("+-=").find(text[i]) == std::string_view::npos)
        bad_chmod(text);
      char op = text[i++];
      if (op == '=') equal_done = false;
      who &= ~kSticky;
      mode_t perm = 0;
      bool x_if = false;
      for (;; ++i) {
        char c = i < text.size() ? text[i] : '\0';
        if (c == 'r') {
          perm |= 0444;
        } else if (c == 'w') {
          perm |= 0222;
        } else if (c == 'x') {
          perm |= 0111;
        } else if (c == 'X') {
          x_if = true;
        } else if (c == 's') {
          // Set-id bits mean nothing for "other" alone.
          if (who == 0 || (who & ~mode_t{0007})) perm |= 06000;
        } else if (c == 't') {
          if (who == 0 || (who & ~mode_t{0007})) {
            who |= kSticky;
            perm |= kSticky;
          }
        } else if (c == 'u' || c == 'g' || c == 'o') {
          if (perm) add_op(spec.ops, op, who, perm);
          perm = 0;
          if (op == '=') equal_done = true;
          if (x_if) add_op(spec.ops, op == '-' ? 'Y' : 'X', who, 0111);
          x_if = false;
          add_op(spec.ops, c, who, 0, op);
        } else {
          if (perm || (op == '=' && !equal_done)) {
            if (op == '=') equal_done = true;
            add_op(spec.ops, op, who, perm);
          }
          if (x_if) add_op(spec.ops, op == '-' ? 'Y' : 'X', who, 0111);
          break;
        }
      }
    } while (i < text.size() && text[i] != ',');
    if (i >= text.size()) break;
    ++i;  // the comma; a clause must follow it
    if (i >= text.size()) bad_chmod(text);
  }
  return spec;
}

CopySelection select_sources(const SourceTree& tree, const CopyOptions& options) {
  CopySelection selection;
  for (const std::string& written : options.sources) {
    std::string pattern = clean_relative(written);
    std::vector<std::string> matches;
    bool wildcard = has_wildcards(pattern);
    if (wildcard) {
      matches = glob(tree, pattern);
    } else {
      matches.push_back(pattern);
    }
    for (const std::string& match : matches) {
      // The named source is followed when it is a symlink (BuildKit's FollowSymlinks); what lies
      // under a directory is copied as it is.
      std::optional<std::string> resolved = tree.resolve(match, true);
      std::optional<SourceTree::Entry> top;
      if (resolved) top = tree.lookup(*resolved);
      if (!top) {
        throw NotFoundError(fmt::format("{} failed: \"/{}\": not found", options.instruction, pattern));
      }
      CopySelection::Item item;
      item.source = *resolved;
      item.top = *top;
      item.directory = S_ISDIR(top->st.st_mode);
      if (item.directory) walk(tree, item.source, item.source, options.excludes, item.entries);
      selection.items.push_back(std::move(item));
    }
  }
  size_t files = 0;
  for (const auto& item : selection.items) {
    if (!item.directory) ++files;
  }
  if (!options.dest_is_dir && (options.sources.size() > 1 || files > 1)) {
    throw UsageError(fmt::format(
        "When using {} with more than one source file, the destination must be a directory and end with a /",
        options.instruction));
  }
  return selection;
}

Digest selection_digest(const SourceTree& tree, const CopySelection& selection, ChecksumCache* checksums) {
  Sha256 hash;
  auto add = [&](std::string_view text) {
    hash.update(as_bytes(text));
    hash.update(as_bytes(std::string_view("\0", 1)));
  };
  auto add_entry = [&](const SourceTree::Entry& entry, const std::string& relative) {
    add(relative);
    add(fmt::format("{:o}", entry.st.st_mode));
    if (S_ISREG(entry.st.st_mode)) {
      if (checksums) {
        add(checksums->file_digest_lazy(entry.path, entry.st, [&] { return tree.open_file(entry); }).hex());
      } else {
        Fd fd = tree.open_file(entry);
        Sha256 content;
        FdReader reader(fd.get(), entry.path);
        std::vector<std::byte> buffer(1 << 16);
        for (size_t n; (n = reader.read(buffer)) > 0;) content.update(std::span(buffer.data(), n));
        add(content.finish().hex());
      }
    } else if (S_ISLNK(entry.st.st_mode)) {
      add(tree.read_link(entry));
    } else if (S_ISCHR(entry.st.st_mode) || S_ISBLK(entry.st.st_mode)) {
      add(fmt::format("{}:{}", major(entry.st.st_rdev), minor(entry.st.st_rdev)));
    }
  };
  for (const auto& item : selection.items) {
    add(item.directory ? "dir" : "file");
    add(item.source);
    add_entry(item.top, base_of(item.source));
    for (const auto& entry : item.entries) add_entry(entry, relative_to(item.source, entry.path));
  }
  return hash.finish();
}

namespace {

// Writes into the upper directory, making the directories on the way as the root below has them.
class UpperWriter {
 public:
  UpperWriter(const SourceTree& lower, const std::string& upper_dir, const CopyOptions& options)
      : lower_(lower),
        upper_dir_(upper_dir),
        options_(options),
        upper_(open_or_throw(upper_dir, O_RDONLY | O_DIRECTORY)) {}

  // The destination as the root resolves it (symlinks followed inside it), unless --link.
  std::string resolve_dest(const std::string& dest) const {
    std::string cleaned = clean_relative(dest);
    if (options_.link) return cleaned;
    return lower_.resolve(cleaned, true).value_or(cleaned);
  }

  // Whether `path` is a directory in the layer being made or in the root below.
  bool is_dir(const std::string& path) {
    if (path.empty()) return true;
    if (auto st = stat_at(upper_.get(), path)) return S_ISDIR(st->st_mode);
    if (options_.link) return false;
    auto entry = lower_.lookup(path);
    return entry && S_ISDIR(entry->st.st_mode);
  }

  // Makes `path` and its parents directories in the upper directory.
  void ensure_dir(const std::string& path, const struct stat* metadata = nullptr) {
    if (path.empty()) return;
    std::vector<std::string> parts = split_path(path);
    for (size_t i = 0; i < parts.size(); ++i) {
      std::string prefix = join_components(parts, i + 1);
      if (auto st = stat_at(upper_.get(), prefix)) {
        if (!S_ISDIR(st->st_mode))
          throw Error(fmt::format("{}: cannot copy to non-directory: /{}", options_.instruction, prefix));
        continue;
      }
      std::optional<SourceTree::Entry> below;
      if (!options_.link) below = lower_.lookup(prefix);
      if (below && !S_ISDIR(below->st.st_mode)) {
        throw Error(fmt::format("{}: cannot copy to non-directory: /{}", options_.instruction, prefix));
      }
      bool last = i + 1 == parts.size();
      if (::mkdirat(upper_.get(), prefix.c_str(), 0755) != 0)
        throw_errno(fmt::format("create `/{}`", prefix));
      if (below) {
        // What overlayfs's copy-up would keep of a directory the root has.
        set_owner(prefix, below->st.st_uid, below->st.st_gid);
        set_mode(prefix, below->st.st_mode & 07777);
        dir_times_.emplace_back(prefix, below->st.st_mtim);
      } else if (last && metadata) {
        apply_metadata(prefix, *metadata, true);
      } else {
        auto [uid, gid] = options_.chown.value_or(std::make_pair(uid_t{0}, gid_t{0}));
        set_owner(prefix, uid, gid);
        mode_t mode = options_.chmod ? options_.chmod->apply(0755, true) : 0755;
        set_mode(prefix, mode);
        dir_times_.emplace_back(prefix, new_time());
      }
    }
  }

  void copy_entry(const SourceTree& tree, const SourceTree::Entry& entry, const std::string& target) {
    const struct stat& st = entry.st;
    if (auto existing = stat_at(upper_.get(), target)) {
      if (S_ISDIR(existing->st_mode) && S_ISDIR(st.st_mode)) {
        apply_metadata(target, st, true);
        return;
      }
      remove_tree_at(upper_.get(), target, "/" + target);
    }
    if (S_ISDIR(st.st_mode)) {
      if (::mkdirat(upper_.get(), target.c_str(), 0700) != 0)
        throw_errno(fmt::format("create `/{}`", target));
      apply_metadata(target, st, true);
      return;
    }
    if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1) {
        auto key = std::make_tuple(entry.layer, st.st_dev, st.st_ino);
        if (auto it = links_.find(key); it != links_.end()) {
          if (::linkat(upper_.get(), it->second.c_str(), upper_.get(), target.c_str(), 0) == 0) return;
        }
        links_[key] = target;
      }
      Fd in = tree.open_file(entry);
      Fd out(
          ::openat(upper_.get(), target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!out.valid()) throw_errno(fmt::format("create `/{}`", target));
      copy_content(in.get(), out.get(), static_cast<uint64_t>(st.st_size), target);
      apply_metadata_fd(out.get(), target, st);
      return;
    }
    if (S_ISLNK(st.st_mode)) {
      std::string link = tree.read_link(entry);
      if (::symlinkat(link.c_str(), upper_.get(), target.c_str()) != 0)
        throw_errno(fmt::format("create the link `/{}`", target));
      auto [uid, gid] = owner_for(st);
      if (::fchownat(upper_.get(), target.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != EPERM) {
        throw_errno(fmt::format("set the owner of `/{}`", target));
      }
      const struct timespec times[2] = {st.st_mtim, st.st_mtim};
      ::utimensat(upper_.get(), target.c_str(), times, AT_SYMLINK_NOFOLLOW);
      return;
    }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
      if (::mknodat(upper_.get(), target.c_str(), st.st_mode, st.st_rdev) != 0) {
        throw_errno(fmt::format("create the node `/{}`", target));
      }
      apply_metadata(target, st, false);
      return;
    }
    // Sockets are not copied (Docker leaves them out too).
  }

  // A file's owner in the layer: --chown, else its own from a stage or image, else root's.
  std::pair<uid_t, gid_t> owner_for(const struct stat& st) const {
    if (options_.chown) return *options_.chown;
    if (options_.keep_owners) return {st.st_uid, st.st_gid};
    return {0, 0};
  }

  void apply_metadata(const std::string& target, const struct stat& st, bool directory) {
    auto [uid, gid] = owner_for(st);
    set_owner(target, uid, gid);
    mode_t mode = options_.chmod ? options_.chmod->apply(st.st_mode, directory) : (st.st_mode & 07777);
    set_mode(target, mode);
    if (directory) {
      dir_times_.emplace_back(target, st.st_mtim);
    } else {
      const struct timespec times[2] = {st.st_mtim, st.st_mtim};
      if (::utimensat(upper_.get(), target.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno(fmt::format("set the times of `/{}`", target));
      }
    }
  }

  void apply_metadata_fd(int fd, const std::string& target, const struct stat& st) {
    auto [uid, gid] = owner_for(st);
    if (::fchown(fd, uid, gid) != 0 && errno != EPERM)
      throw_errno(fmt::format("set the owner of `/{}`", target));
    // After the owner: chown clears the set-id bits.
    mode_t mode = options_.chmod ? options_.chmod->apply(st.st_mode, false) : (st.st_mode & 07777);
    if (::fchmod(fd, mode) != 0) throw_errno(fmt::format("set the mode of `/{}`", target));
    const struct timespec times[2] = {st.st_mtim, st.st_mtim};
    if (::futimens(fd, times) != 0) throw_errno(fmt::format("set the times of `/{}`", target));
  }

  // Directories' times last, deepest first: filling a directory moves its mtime.
  void finish() {
    std::sort(dir_times_.begin(), dir_times_.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (const auto& [path, time] : dir_times_) {
      const struct timespec times[2] = {time, time};
      ::utimensat(upper_.get(), path.c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
  }

  int upper_fd() const { return upper_.get(); }

 private:
  struct timespec new_time() const {
    struct timespec now {};
    if (options_.source_date_epoch) {
      now.tv_sec = *options_.source_date_epoch;
    } else {
      ::clock_gettime(CLOCK_REALTIME, &now);
    }
    return now;
  }

  void set_owner(const std::string& path, uid_t uid, gid_t gid) {
    if (::fchownat(upper_.get(), path.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != EPERM) {
      throw_errno(fmt::format("set the owner of `/{}`", path));
    }
  }
  void set_mode(const std::string& path, mode_t mode) {
    if (::fchmodat(upper_.get(), path.c_str(), mode, 0) != 0)
      throw_errno(fmt::format("set the mode of `/{}`", path));
  }

  static void copy_content(int in, int out, uint64_t size, const std::string& target) {
    uint64_t done = 0;
    bool kernel_copy = true;
    while (done < size) {
      ssize_t n = -1;
      if (kernel_copy) {
        n = ::copy_file_range(in, nullptr, out, nullptr, size - done, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
          kernel_copy = false;
          continue;
        }
      } else {
        char buffer[1 << 16];
        n = ::read(in, buffer, sizeof buffer);
        if (n > 0) FdWriter(out, target).write(std::as_bytes(std::span(buffer, static_cast<size_t>(n))));
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno(fmt::format("copy into `/{}`", target));
      }
      if (n == 0) break;  // the source shrank while it was copied
      done += static_cast<uint64_t>(n);
    }
  }

  const SourceTree& lower_;
  std::string upper_dir_;
  const CopyOptions& options_;
  Fd upper_;
  std::vector<std::pair<std::string, struct timespec>> dir_times_;
  std::map<std::tuple<size_t, dev_t, ino_t>, std::string> links_;
};

// An archive ADD unpacks: tar, plain or compressed.
bool is_archive(const SourceTree& tree, const SourceTree::Entry& entry) {
  if (!S_ISREG(entry.st.st_mode) || entry.st.st_size < 6) return false;
  Fd fd = tree.open_file(entry);
  std::byte head[512] = {};
  ssize_t n = ::pread(fd.get(), head, sizeof head, 0);
  if (n < 6) return false;
  Compression c = detect_compression(std::span(head, static_cast<size_t>(n)));
  if (c != Compression::None) return true;
  return n >= 262 && std::string_view(reinterpret_cast<const char*>(head) + 257, 5) == "ustar";
}

}  // namespace

void copy_into(const SourceTree& tree, const CopySelection& selection, const CopyOptions& options,
               const SourceTree& lower, const std::string& upper_dir) {
  UpperWriter writer(lower, upper_dir, options);
  std::string dest = writer.resolve_dest(options.dest);
  for (const auto& item : selection.items) {
    if (item.directory) {
      writer.ensure_dir(dest, &item.top.st);
      for (const auto& entry : item.entries) {
        writer.copy_entry(tree, entry, join_path(dest, relative_to(item.source, entry.path)));
      }
      continue;
    }
    if (options.unpack_archives && is_archive(tree, item.top)) {
      writer.ensure_dir(dest);
      Fd in = tree.open_file(item.top);
      FdReader raw(in.get(), item.source);
      auto tar = open_decompressed(raw, nullptr);
      Fd target =
          openat_or_throw(writer.upper_fd(), dest.empty() ? "." : dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      try {
        extract_tar(*tar, target.get(), ExtractOptions{WhiteoutMode::Apply, ::geteuid() == 0});
      } catch (...) {
        rethrow_with_context(fmt::format("{} `{}`", options.instruction, item.source));
      }
      continue;
    }
    bool into_dir = options.dest_is_dir || writer.is_dir(dest);
    std::string target = into_dir ? join_path(dest, base_of(item.source)) : dest;
    if (target.empty())
      throw UsageError(fmt::format("{}: cannot copy a file onto the root directory", options.instruction));
    writer.ensure_dir(parent_of(target));
    writer.copy_entry(tree, item.top, target);
  }
  writer.finish();
}

}  // namespace kiln::builder
