#include "builder/copy.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "builder/checksum_cache.h"
#include "builder/glob.h"
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
  return GlobPattern(pattern).matches(name);
}

std::vector<std::string> split_path(const std::string& path) {
  return path.empty() ? std::vector<std::string>{} : split_on(path, '/');
}

// A path relative to `base` (which is a prefix of it, or "").
std::string relative_to(const std::string& base, const std::string& path) {
  if (base.empty()) return path;
  if (path == base) return "";
  return path.substr(base.size() + 1);
}

NotFoundError not_found(const CopyOptions& options, const std::string& path) {
  return NotFoundError(fmt::format("{} failed: \"/{}\": not found", options.instruction, path));
}

// The paths of `tree` that the wildcard `pattern` (cleaned, relative) matches, as BuildKit's
// ResolveWildcards finds them: the components before the first wildcard are a directory, found
// with symlinks followed (a missing one is an error: BuildKit's walk cannot start); below it the
// rest is matched component by component through real directories only, and a directory that
// matches is not searched further. In the order Go's filepath.Walk visits them (by name, directory
// by directory).
std::vector<std::string> glob(const SourceTree& tree, const std::string& pattern,
                              const CopyOptions& options) {
  std::vector<std::string> parts = split_path(pattern);
  size_t first = 0;
  while (first < parts.size() && !has_wildcards(parts[first])) ++first;
  // Kept as written, backslashes too: BuildKit unescapes only what filepath.Match reads.
  std::string prefix = join_components(parts, first);
  std::string base = prefix.empty() ? "" : tree.resolve(prefix, true).value_or(prefix);
  if (!tree.lookup(base)) throw not_found(options, base);

  std::vector<std::string> current = {base};
  for (size_t i = first; i < parts.size(); ++i) {
    std::vector<std::string> next;
    bool last = i + 1 == parts.size();
    for (const std::string& dir : current) {
      for (const SourceTree::Entry& entry : tree.entries(dir)) {
        if (!component_matches(parts[i], base_of(entry.path))) continue;
        if (last || S_ISDIR(entry.st.st_mode)) next.push_back(entry.path);
      }
    }
    current = std::move(next);
  }
  return current;
}

// `path` (components) matches `pattern` (components) in full, `**` standing for any number of
// components, every other component as component_matches has it (patternmatcher's reading of
// .dockerignore-style patterns, which --exclude and --parents use).
bool parts_match(const std::vector<std::string>& pattern, size_t p, const std::vector<std::string>& path,
                 size_t s) {
  if (p == pattern.size()) return s == path.size();
  if (pattern[p] == "**") {
    for (size_t k = s; k <= path.size(); ++k) {
      if (parts_match(pattern, p + 1, path, k)) return true;
    }
    return false;
  }
  return s < path.size() && component_matches(pattern[p], path[s]) &&
         parts_match(pattern, p + 1, path, s + 1);
}

// `relative` or a directory above it matches `pattern`: what matches a directory takes in
// everything under it (patternmatcher's MatchesUsingParentResults along a walk).
bool matches_or_below(const std::vector<std::string>& pattern, const std::string& relative) {
  std::vector<std::string> parts = split_path(relative);
  for (size_t n = 1; n <= parts.size(); ++n) {
    std::vector<std::string> prefix(parts.begin(), parts.begin() + static_cast<ptrdiff_t>(n));
    if (parts_match(pattern, 0, prefix, 0)) return true;
  }
  return false;
}

// Whether an --exclude pattern leaves `relative` (to the copied source) out.
bool excluded_by(const std::vector<std::vector<std::string>>& patterns, const std::string& relative) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const auto& pattern) {
    return !pattern.empty() && matches_or_below(pattern, relative);
  });
}

std::vector<std::vector<std::string>> split_patterns(const std::vector<std::string>& patterns) {
  std::vector<std::vector<std::string>> out;
  for (const std::string& pattern : patterns) out.push_back(split_path(clean_relative(pattern)));
  return out;
}

using EntryVisitor = std::function<void(const SourceTree::Entry&)>;

// Visits the directories left out that were passed on the way down, once something under them is
// visited: they are there only as the way to it.
void visit_pending(std::vector<SourceTree::Entry>& pending, const EntryVisitor& visit) {
  for (const SourceTree::Entry& entry : pending) visit(entry);
  pending.clear();
}

// Walks the directory `dir` of `tree`, each directory before what it holds, names in byte order;
// what the filter or --exclude leaves out is skipped. A directory left out that a later `!` rule
// may reach into is walked, and visited when something under it is (`pending`: such directories on
// the way down, not yet visited).
void walk(const SourceTree& tree, const std::string& root, const std::string& dir,
          const std::vector<std::vector<std::string>>& excludes, std::vector<SourceTree::Entry>& pending,
          const EntryVisitor& visit) {
  for (SourceTree::Entry& entry : tree.entries(dir)) {
    if (!excludes.empty() && excluded_by(excludes, relative_to(root, entry.path))) continue;
    std::string path = entry.path;
    if (entry.excluded) {  // only directories are kept as excluded
      pending.push_back(std::move(entry));
      size_t depth = pending.size();
      walk(tree, root, path, excludes, pending, visit);
      if (pending.size() == depth) pending.pop_back();
      continue;
    }
    visit_pending(pending, visit);
    bool directory = S_ISDIR(entry.st.st_mode);
    visit(entry);
    if (directory) walk(tree, root, path, excludes, pending, visit);
  }
}

// --parents: walks `dir` as walk() does, visiting what `pattern` takes in (a match and everything
// below it) and the directories above what is visited, which BuildKit makes only once something
// under them is copied (`pending`: the directories on the way down not yet visited).
void walk_parents(const SourceTree& tree, const std::string& root, const std::string& dir,
                  const std::vector<std::string>& pattern, bool taken_above,
                  const std::vector<std::vector<std::string>>& excludes,
                  std::vector<SourceTree::Entry>& pending, const EntryVisitor& visit) {
  for (SourceTree::Entry& entry : tree.entries(dir)) {
    std::string relative = relative_to(root, entry.path);
    if (!excludes.empty() && excluded_by(excludes, relative)) continue;
    bool taken = taken_above || parts_match(pattern, 0, split_path(relative), 0);
    if (!S_ISDIR(entry.st.st_mode)) {
      if (!taken) continue;
      visit_pending(pending, visit);
      visit(entry);
      continue;
    }
    std::string path = entry.path;
    if (taken && !entry.excluded) {
      visit_pending(pending, visit);
      visit(entry);
    } else {
      pending.push_back(std::move(entry));
    }
    size_t depth = pending.size();
    walk_parents(tree, root, path, pattern, taken, excludes, pending, visit);
    if (pending.size() == depth && depth > 0 && pending.back().path == path) pending.pop_back();
  }
}

// `pattern`'s matches when it has wildcards, else `pattern` itself (which must then exist).
std::vector<std::string> expand_wildcards(const SourceTree& tree, const std::string& pattern,
                                          const CopyOptions& options) {
  return has_wildcards(pattern) ? glob(tree, pattern, options) : std::vector{pattern};
}

// The item for one matched source. The source is followed when it is a symlink (BuildKit's
// FollowSymlinks); what lies under a directory is copied as it is. BuildKit names where the links
// led: `"/missing": not found` for a dangling link.
CopySelection::Item matched_item(
    const SourceTree& tree, const std::string& match, const CopyOptions& options,
    const std::shared_ptr<const std::vector<std::vector<std::string>>>& excludes) {
  std::optional<std::string> resolved = tree.resolve(match, true);
  std::optional<SourceTree::Entry> top;
  if (resolved) top = tree.lookup(*resolved);
  if (!top) throw not_found(options, tree.resolve_for_write(match));
  CopySelection::Item item;
  item.match = match;
  item.source = *resolved;
  item.top = *top;
  item.excludes = excludes;
  return item;
}

// One source of COPY --parents: `base/./pattern` keeps the pattern's paths below `base`, a source
// without `/./` keeps its whole path (BuildKit copies the tree's root with the source as an
// include pattern). A source without wildcards must exist.
void select_parents(const SourceTree& tree, const std::string& written, const CopyOptions& options,
                    const std::shared_ptr<const std::vector<std::vector<std::string>>>& excludes,
                    CopySelection& selection) {
  std::string base_written;
  std::string pattern_written = written;
  if (size_t pivot = written.find("/./"); pivot != std::string::npos) {
    base_written = written.substr(0, pivot);
    pattern_written = written.substr(pivot + 3);
  }
  std::string base = clean_relative(base_written);
  std::string pattern = clean_relative(pattern_written);
  if (!has_wildcards(base) && !has_wildcards(pattern)) {
    std::string required = join_path(base, pattern);
    std::optional<std::string> resolved = tree.resolve(required, false);
    if (!resolved || !tree.lookup(*resolved)) throw not_found(options, required);
  }
  for (const std::string& match : expand_wildcards(tree, base, options)) {
    CopySelection::Item item = matched_item(tree, match, options, excludes);
    item.directory = true;
    item.parents_pattern = split_path(pattern);
    selection.items.push_back(std::move(item));
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
  auto excludes =
      std::make_shared<const std::vector<std::vector<std::string>>>(split_patterns(options.excludes));
  for (const std::string& written : options.sources) {
    if (options.parents) {
      select_parents(tree, written, options, excludes, selection);
      continue;
    }
    for (const std::string& match : expand_wildcards(tree, clean_relative(written), options)) {
      CopySelection::Item item = matched_item(tree, match, options, excludes);
      item.directory = S_ISDIR(item.top.st.st_mode);
      selection.items.push_back(std::move(item));
    }
  }
  return selection;
}

void for_each_entry(const SourceTree& tree, const CopySelection::Item& item, const EntryVisitor& visit) {
  if (!item.directory || !S_ISDIR(item.top.st.st_mode)) return;
  static const std::vector<std::vector<std::string>> kNoExcludes;
  const auto& excludes = item.excludes ? *item.excludes : kNoExcludes;
  std::vector<SourceTree::Entry> pending;
  if (item.parents_pattern) {
    walk_parents(tree, item.source, item.source, *item.parents_pattern, item.parents_pattern->empty(),
                 excludes, pending, visit);
  } else {
    walk(tree, item.source, item.source, excludes, pending, visit);
  }
}

namespace {

// The sha256 (hex) of a regular file of `tree`, through the checksum cache when there is one.
std::string file_digest_hex(const SourceTree& tree, const SourceTree::Entry& entry,
                            ChecksumCache* checksums) {
  if (checksums)
    return checksums->file_digest_lazy(entry.path, entry.st, [&] { return tree.open_file(entry); }).hex();
  Fd fd = tree.open_file(entry);
  Sha256 content;
  FdReader reader(fd.get(), entry.path);
  constexpr size_t kBufferSize = 1 << 16;
  auto buffer = std::make_unique_for_overwrite<std::byte[]>(kBufferSize);
  for (size_t n; (n = reader.read(std::span(buffer.get(), kBufferSize))) > 0;)
    content.update(std::span(buffer.get(), n));
  return content.finish().hex();
}

// Hashes the files of a batch on several threads: the caller's and up to `threads - 1` workers,
// started on the first batch with two large files the checksum cache does not know (a warm
// build's key starts none). Each batch is finished before the next is taken, so memory holds one.
class ParallelHasher {
 public:
  struct Item {
    const SourceTree::Entry* entry;
    std::string digest_hex;
  };

  ParallelHasher(const SourceTree& tree, ChecksumCache* checksums, unsigned threads)
      : tree_(tree), checksums_(checksums), threads_(std::max(threads, 1U)) {}
  ParallelHasher(const ParallelHasher&) = delete;
  ParallelHasher& operator=(const ParallelHasher&) = delete;
  ~ParallelHasher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  // Fills in every item's digest. Throws what hashing one of them threw.
  void hash(std::vector<Item>& items) {
    // Small files are read by the caller alone: opening files of one directory from several threads
    // contends on the directory's entry in the kernel, which cost more than it saved (1 KiB files:
    // 2.4-3.0 s against 2.2-2.3 s for 100,000 of them). Large ones are worth a thread each.
    constexpr off_t kLargeFile = 1 << 20;
    std::vector<size_t> small, large;
    for (size_t i = 0; i < items.size(); ++i) {
      Item& item = items[i];
      std::optional<Digest> known =
          checksums_ ? checksums_->lookup(item.entry->path, item.entry->st) : std::nullopt;
      if (known) {
        item.digest_hex = known->hex();
      } else {
        (item.entry->st.st_size >= kLargeFile ? large : small).push_back(i);
      }
    }
    if (threads_ == 1 || large.size() < 2) {
      small.insert(small.end(), large.begin(), large.end());
      large.clear();
    }
    if (!large.empty()) {
      if (workers_.empty()) {
        for (unsigned i = 1; i < threads_; ++i) workers_.emplace_back([this] { work(); });
      }
      {
        std::lock_guard lock(mutex_);
        batch_ = &items;
        todo_ = &large;
        next_ = 0;
        done_ = 0;
        error_ = nullptr;
        ++generation_;
      }
      work_ready_.notify_all();
    }
    std::exception_ptr error;
    for (size_t i : small) {
      try {
        items[i].digest_hex = file_digest_hex(tree_, *items[i].entry, checksums_);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    if (!large.empty()) {
      run_batch();  // the caller takes large files too once its small ones are done
      std::unique_lock lock(mutex_);
      batch_done_.wait(lock, [&] { return done_ == large.size(); });
      batch_ = nullptr;
      todo_ = nullptr;
      if (!error) error = error_;
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  // Takes files of the current batch until none is left.
  void run_batch() {
    for (;;) {
      size_t index;
      {
        std::lock_guard lock(mutex_);
        if (!todo_ || next_ == todo_->size()) return;
        index = (*todo_)[next_++];
      }
      Item& item = (*batch_)[index];
      std::string digest;
      std::exception_ptr error;
      try {
        digest = file_digest_hex(tree_, *item.entry, checksums_);
      } catch (...) {
        error = std::current_exception();
      }
      bool last;
      {
        std::lock_guard lock(mutex_);
        item.digest_hex = std::move(digest);
        if (error && !error_) error_ = error;
        last = ++done_ == todo_->size();
      }
      if (last) batch_done_.notify_all();
    }
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      run_batch();
    }
  }

  const SourceTree& tree_;
  ChecksumCache* checksums_;
  const unsigned threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable batch_done_;
  std::vector<Item>* batch_ = nullptr;         // guarded by mutex_, as the three below
  const std::vector<size_t>* todo_ = nullptr;  // indices into batch_ of the files to hash
  size_t next_ = 0;
  size_t done_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace

Digest selection_digest(const SourceTree& tree, const CopySelection& selection, ChecksumCache* checksums,
                        unsigned threads) {
  Sha256 hash;
  auto add = [&](std::string_view text) {
    hash.update(as_bytes(text));
    hash.update(as_bytes(std::string_view("\0", 1)));
  };
  // Entries wait in walk order until a batch's files are hashed, then go into the digest in order.
  constexpr size_t kBatch = 512;
  struct Waiting {
    SourceTree::Entry entry;
    std::string relative;
  };
  std::vector<Waiting> waiting;
  std::vector<ParallelHasher::Item> files;
  ParallelHasher hasher(tree, checksums, threads);
  auto flush = [&] {
    files.clear();
    for (const Waiting& w : waiting) {
      if (S_ISREG(w.entry.st.st_mode)) files.push_back({&w.entry, {}});
    }
    hasher.hash(files);
    size_t next_file = 0;
    for (const Waiting& w : waiting) {
      const SourceTree::Entry& entry = w.entry;
      add(w.relative);
      add(fmt::format("{:o}", entry.st.st_mode));
      if (S_ISREG(entry.st.st_mode)) {
        add(files[next_file++].digest_hex);
      } else if (S_ISLNK(entry.st.st_mode)) {
        add(tree.read_link(entry));
      } else if (S_ISCHR(entry.st.st_mode) || S_ISBLK(entry.st.st_mode)) {
        add(fmt::format("{}:{}", major(entry.st.st_rdev), minor(entry.st.st_rdev)));
      }
    }
    waiting.clear();
  };
  auto add_entry = [&](const SourceTree::Entry& entry, std::string relative) {
    waiting.push_back({entry, std::move(relative)});
    if (waiting.size() == kBatch) flush();
  };
  for (const auto& item : selection.items) {
    flush();  // the item's own fields follow what came before it
    add(item.directory ? "dir" : "file");
    add(item.match);  // a file copied into a directory takes the name it was matched by
    add(item.source);
    add_entry(item.top, base_of(item.source));
    for_each_entry(tree, item,
                   [&](const auto& entry) { add_entry(entry, relative_to(item.source, entry.path)); });
  }
  flush();
  return hash.finish();
}

namespace {

// The process's umask, read without changing it (umask(2) can only be read by setting it, which
// would race with other threads making files); 022 when /proc does not say.
mode_t process_umask() {
  Fd status(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  if (!status.valid()) return 022;
  char buffer[4096];
  ssize_t n = ::read(status.get(), buffer, sizeof buffer - 1);
  if (n <= 0) return 022;
  std::string_view text(buffer, static_cast<size_t>(n));
  size_t at = text.find("Umask:");
  if (at == std::string_view::npos) return 022;
  mode_t value = 0;
  for (size_t i = at + 6; i < text.size() && text[i] != '\n'; ++i) {
    if (text[i] >= '0' && text[i] <= '7') value = value * 8 + static_cast<mode_t>(text[i] - '0');
  }
  return value & 0777;
}

// Writes into the upper directory, making the directories on the way as the root below has them.
class UpperWriter {
 public:
  UpperWriter(const SourceTree& lower, const CopyOptions& options, const std::string& upper_dir)
      : lower_(lower),
        options_(options),
        upper_(open_or_throw(upper_dir, O_RDONLY | O_DIRECTORY)),
        umask_(process_umask()),
        root_owned_copy_(::geteuid() == 0 && ::getegid() == 0 && !options.keep_owners &&
                         (!options.chown || *options.chown == std::make_pair(uid_t{0}, gid_t{0}))) {}

  // The destination as the root resolves it (symlinks followed inside it, as far as it exists),
  // unless --link.
  std::string resolve_dest(const std::string& dest) const {
    std::string cleaned = clean_relative(dest);
    if (options_.link) return cleaned;
    return lower_.resolve_for_write(cleaned);
  }

  // Whether `path` is a directory in the layer being made or in the root below.
  bool is_dir(const std::string& path) {
    if (path.empty()) return true;
    if (auto st = stat_at(upper_.get(), path)) return S_ISDIR(st->st_mode);
    auto below = lower_at(path);
    return below && S_ISDIR(below->st_mode);
  }

  // Each source is copied by a copier of its own in BuildKit: hard links are kept within one.
  void next_source() { links_.clear(); }

  // Makes `path` and its parents directories in the upper directory, as fsutil's MkdirAll makes
  // them in the root: what the root has already is kept as it is (copied up), what is missing is
  // made 0755 (the --chmod mode when `with_chmod`: BuildKit since fsutil #228), owned by --chown's
  // owner or root.
  void ensure_dir(const std::string& path, bool with_chmod = true) {
    if (path.empty()) return;
    std::vector<std::string> parts = split_path(path);
    for (size_t i = 0; i < parts.size(); ++i) {
      std::string prefix = join_components(parts, i + 1);
      if (auto st = stat_at(upper_.get(), prefix)) {
        if (!S_ISDIR(st->st_mode)) throw not_a_directory(prefix);
        continue;
      }
      std::optional<struct stat> below = lower_at(prefix);
      if (below && !S_ISDIR(below->st_mode)) throw not_a_directory(prefix);
      if (::mkdirat(upper_.get(), prefix.c_str(), 0755) != 0)
        throw_errno(fmt::format("create `/{}`", prefix));
      if (below) {
        // What overlayfs's copy-up would keep of a directory the root has.
        set_owner(prefix, below->st_uid, below->st_gid);
        set_mode(prefix, below->st_mode & 07777);
        dir_times_.emplace_back(prefix, below->st_mtim);
        continue;
      }
      fresh_dirs_.insert(prefix);
      auto [uid, gid] = options_.chown.value_or(std::make_pair(uid_t{0}, gid_t{0}));
      set_owner(prefix, uid, gid);
      set_mode(prefix, with_chmod && options_.chmod ? options_.chmod->apply(0755, true) : 0755);
      dir_times_.emplace_back(prefix, new_time());
    }
  }

  // Copies one entry of the source to `target`, as fsutil's copier does: a directory merges with
  // one that is there (taking the source's owner, mode and times), anything else replaces what is
  // there unless that is a directory; a directory onto a non-directory is an error.
  void copy_entry(const SourceTree& tree, const SourceTree::Entry& entry, const std::string& target) {
    const struct stat& st = entry.st;
    if (S_ISDIR(st.st_mode)) {
      std::optional<struct stat> below = lower_at(target);
      if (below && !S_ISDIR(below->st_mode)) throw not_a_directory(target);
      if (::mkdirat(upper_.get(), target.c_str(), 0700) != 0) {
        if (errno != EEXIST) throw_errno(fmt::format("create `/{}`", target));
        auto there = stat_at(upper_.get(), target);
        if (!there || !S_ISDIR(there->st_mode)) throw not_a_directory(target);
      } else if (!below) {
        fresh_dirs_.insert(target);
      }
      apply_metadata(target, st, true);
      return;
    }
    if (auto below = lower_at(target); below && S_ISDIR(below->st_mode)) throw directory_in_the_way(target);
    if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1) {
        auto key = std::make_tuple(entry.layer, st.st_dev, st.st_ino);
        if (auto it = links_.find(key); it != links_.end()) {
          create_or_replace(target, [&] {
            return ::linkat(upper_.get(), it->second.c_str(), upper_.get(), target.c_str(), 0) == 0;
          });
          return;
        }
        links_[key] = target;
      }
      Fd in = tree.open_file(entry);
      // Two of the six calls a small file costs can go: the mode is given to openat when the umask
      // leaves it whole (no set-id bits, which a chown would clear), and the owner is left as it
      // is when the file is root's in a directory this copy made as root's.
      mode_t mode = mode_for(st, false);
      bool mode_at_create = (mode & 07000) == 0 && (mode & umask_) == 0;
      bool owner_at_create = root_owned_copy_ && fresh_dirs_.contains(parent_of(target));
      Fd out;
      create_or_replace(target, [&] {
        out = Fd(::openat(upper_.get(), target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          mode_at_create ? mode : 0600));
        return out.valid();
      });
      copy_content(in.get(), out.get(), static_cast<uint64_t>(st.st_size), target);
      if (!owner_at_create) {
        auto [uid, gid] = owner_for(st);
        if (::fchown(out.get(), uid, gid) != 0 && errno != EPERM)
          throw_errno(fmt::format("set the owner of `/{}`", target));
      }
      // After the owner: chown clears the set-id bits.
      if (!mode_at_create && ::fchmod(out.get(), mode) != 0)
        throw_errno(fmt::format("set the mode of `/{}`", target));
      const struct timespec times[2] = {st.st_mtim, st.st_mtim};
      if (::futimens(out.get(), times) != 0) throw_errno(fmt::format("set the times of `/{}`", target));
      return;
    }
    if (S_ISLNK(st.st_mode)) {
      std::string link = tree.read_link(entry);
      create_or_replace(target, [&] { return ::symlinkat(link.c_str(), upper_.get(), target.c_str()) == 0; });
      auto [uid, gid] = owner_for(st);
      if (::fchownat(upper_.get(), target.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != EPERM) {
        throw_errno(fmt::format("set the owner of `/{}`", target));
      }
      const struct timespec times[2] = {st.st_mtim, st.st_mtim};
      ::utimensat(upper_.get(), target.c_str(), times, AT_SYMLINK_NOFOLLOW);
      return;
    }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
      create_or_replace(target,
                        [&] { return ::mknodat(upper_.get(), target.c_str(), st.st_mode, st.st_rdev) == 0; });
      apply_metadata(target, st, false);
      return;
    }
    // Sockets are not copied (a layer cannot hold one).
  }

  // ADD of a local archive: unpacked into the destination, always a directory (made 0755 without
  // --chmod's mode, which BuildKit does not apply to an archive), as Docker's archive.Untar unpacks
  // into the root: the archive's own entry for the directory is ignored, its entries keep their
  // owners unless --chown gives one, and a directory it leaves out is the root's when the root has
  // it, else a new one of root's.
  void unpack(const SourceTree& tree, const CopySelection::Item& item, const std::string& dest) {
    ensure_dir(dest, /*with_chmod=*/false);
    Fd in = tree.open_file(item.top);
    FdReader raw(in.get(), item.source);
    auto tar = open_decompressed(raw, nullptr);
    Fd target = openat_or_throw(upper_.get(), dest.empty() ? "." : dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    ExtractOptions extract{WhiteoutMode::Apply, ::geteuid() == 0};
    extract.owner = options_.chown;
    extract.skip_root_entry = true;
    extract.on_implicit_dir = [&](int dirfd, const std::string& relative) {
      std::string path = join_path(dest, relative);
      std::optional<struct stat> below = lower_at(path);
      if (!below) {
        fresh_dirs_.insert(path);
        return;
      }
      if (!S_ISDIR(below->st_mode)) throw not_a_directory(path);
      if (::fchown(dirfd, below->st_uid, below->st_gid) != 0 && errno != EPERM)
        throw_errno(fmt::format("set the owner of `/{}`", path));
      if (::fchmod(dirfd, below->st_mode & 07777) != 0)
        throw_errno(fmt::format("set the mode of `/{}`", path));
      dir_times_.emplace_back(path, below->st_mtim);
    };
    try {
      extract_tar(*tar, target.get(), extract);
    } catch (...) {
      rethrow_with_context(fmt::format("{} `{}`", options_.instruction, item.source));
    }
  }

  // Directories' times last, deepest first: filling a directory moves its mtime.
  void finish() {
    std::stable_sort(dir_times_.begin(), dir_times_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (const auto& [path, time] : dir_times_) {
      const struct timespec times[2] = {time, time};
      ::utimensat(upper_.get(), path.empty() ? "." : path.c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
  }

 private:
  Error not_a_directory(const std::string& path) const {
    return Error(fmt::format("{}: cannot copy to non-directory: /{}", options_.instruction, path));
  }
  Error directory_in_the_way(const std::string& path) const {
    return Error(fmt::format("{}: cannot replace the directory /{} with a file", options_.instruction, path));
  }

  // What the root below has at `path` (lstat), unless --link (the layer is made as on an empty
  // root) or the path is under a directory this copy made, where the root has nothing.
  std::optional<struct stat> lower_at(const std::string& path) const {
    if (options_.link || fresh_dirs_.contains(parent_of(path))) return std::nullopt;
    std::optional<SourceTree::Entry> entry = lower_.lookup(path, false);
    if (!entry) return std::nullopt;
    return entry->st;
  }

  // Runs `create` (false with errno set when it fails). Something in the way in the upper
  // directory (from an earlier source of the same instruction) is removed first, unless it is a
  // directory: tried first and handled on EEXIST, which saves a stat for every new file.
  template <typename Create>
  void create_or_replace(const std::string& target, Create&& create) {
    if (create()) return;
    if (errno == EEXIST) {
      auto there = stat_at(upper_.get(), target);
      if (there && S_ISDIR(there->st_mode)) throw directory_in_the_way(target);
      remove_tree_at(upper_.get(), target, "/" + target);
      if (create()) return;
    }
    throw_errno(fmt::format("create `/{}`", target));
  }

  // A file's owner in the layer: --chown, else its own from a stage or image, else root's.
  std::pair<uid_t, gid_t> owner_for(const struct stat& st) const {
    if (options_.chown) return *options_.chown;
    if (options_.keep_owners) return {st.st_uid, st.st_gid};
    return {0, 0};
  }

  mode_t mode_for(const struct stat& st, bool directory) const {
    return options_.chmod ? options_.chmod->apply(st.st_mode, directory) : (st.st_mode & 07777);
  }

  void apply_metadata(const std::string& target, const struct stat& st, bool directory) {
    auto [uid, gid] = owner_for(st);
    set_owner(target, uid, gid);
    set_mode(target, mode_for(st, directory));
    if (directory) {
      dir_times_.emplace_back(target, st.st_mtim);
    } else {
      const struct timespec times[2] = {st.st_mtim, st.st_mtim};
      if (::utimensat(upper_.get(), target.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno(fmt::format("set the times of `/{}`", target));
      }
    }
  }

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
    std::vector<std::byte> buffer;
    while (done < size) {
      ssize_t n = -1;
      if (kernel_copy) {
        n = ::copy_file_range(in, nullptr, out, nullptr, size - done, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
          kernel_copy = false;
          continue;
        }
      } else {
        if (buffer.empty()) buffer.resize(std::min<uint64_t>(size - done, 1 << 20));
        n = ::read(in, buffer.data(), buffer.size());
        if (n > 0) FdWriter(out, target).write(std::span(buffer.data(), static_cast<size_t>(n)));
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
  const CopyOptions& options_;
  Fd upper_;
  std::vector<std::pair<std::string, struct timespec>> dir_times_;
  std::map<std::tuple<size_t, dev_t, ino_t>, std::string> links_;
  // Directories this copy made where the root has nothing: what goes under them needs no look at
  // the root (most of a large copy into a new directory).
  std::unordered_set<std::string> fresh_dirs_;
  mode_t umask_;
  // Everything this copy makes is root's and kiln runs as root: a file made in a directory this
  // copy made (root's, so no set-group-ID directory hands it another group) is root's already.
  bool root_owned_copy_;
};

// The checksum of a tar header block, as Go's archive/tar checks it: the unsigned or the signed sum
// of its bytes, the checksum field counted as spaces, equal to the octal number in that field.
bool tar_header_checksum_ok(const std::array<unsigned char, 512>& block) {
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < block.size(); ++i) {
    unsigned char c = (i >= 148 && i < 156) ? ' ' : block[i];
    unsigned_sum += c;
    signed_sum += static_cast<signed char>(c);
  }
  std::string_view field(reinterpret_cast<const char*>(block.data()) + 148, 8);
  while (!field.empty() && (field.front() == ' ' || field.front() == '\0')) field.remove_prefix(1);
  while (!field.empty() && (field.back() == ' ' || field.back() == '\0')) field.remove_suffix(1);
  int64_t value = 0;
  for (char c : field) {
    if (c < '0' || c > '7') return false;
    value = value * 8 + (c - '0');
  }
  return static_cast<uint64_t>(value) == unsigned_sum || value == signed_sum;
}

// Whether ADD unpacks the file, as BuildKit's isArchivePath decides: it decompresses (plain, gzip,
// bzip2, xz, zstd) and Go's tar reader finds a first header in it. A file that only looks like an
// archive (a gzip of text, a name ending in .tar.gz, an empty tar) is copied as it is.
bool is_archive(const SourceTree& tree, const SourceTree::Entry& entry) {
  if (!S_ISREG(entry.st.st_mode)) return false;
  Fd fd = tree.open_file(entry);
  FdReader raw(fd.get(), entry.path);
  try {
    auto in = open_decompressed(raw, nullptr);
    auto read_block = [&](std::array<unsigned char, 512>& block) {
      size_t got = 0;
      auto bytes = std::as_writable_bytes(std::span(block));
      while (got < block.size()) {
        size_t n = in->read(bytes.subspan(got));
        if (n == 0) return false;
        got += n;
      }
      return true;
    };
    std::array<unsigned char, 512> block{};
    if (!read_block(block)) return false;
    auto zero = [](const auto& b) {
      return std::all_of(b.begin(), b.end(), [](unsigned char c) { return c == 0; });
    };
    // A zero block first: the end of an empty archive, or (another block following) a bad header.
    if (zero(block)) return false;
    return tar_header_checksum_ok(block);
  } catch (const InvalidInputError&) {
    return false;  // not the compressed stream it looked like: copied as it is, as BuildKit does
  }
}

}  // namespace

void copy_into(const SourceTree& tree, const CopySelection& selection, const CopyOptions& options,
               const SourceTree& lower, const std::string& upper_dir) {
  UpperWriter writer(lower, options, upper_dir);
  std::string dest = writer.resolve_dest(options.dest);
  for (const auto& item : selection.items) {
    writer.next_source();
    if (item.directory) {
      // The directory's contents, into the destination made as a parent would be (BuildKit does
      // not give it the source directory's mode or owner).
      writer.ensure_dir(dest);
      for_each_entry(tree, item, [&](const auto& entry) {
        writer.copy_entry(tree, entry, join_path(dest, relative_to(item.source, entry.path)));
      });
      continue;
    }
    if (options.unpack_archives && is_archive(tree, item.top)) {
      writer.unpack(tree, item, dest);
      continue;
    }
    bool into_dir = options.dest_is_dir || writer.is_dir(dest);
    std::string target = into_dir ? join_path(dest, base_of(item.match)) : dest;
    writer.ensure_dir(into_dir ? dest : parent_of(target));
    writer.copy_entry(tree, item.top, target);
  }
  writer.finish();
}

}  // namespace kiln::builder
