#include "builder/copy.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>

#include "builder/checksum_cache.h"
#include "layerstore/compress.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"

using kiln::builder::CopyOptions;
using kiln::builder::CopySelection;
using kiln::builder::parse_chmod;
using kiln::builder::SourceTree;

namespace {

// Test files need no fsync.
void write(const std::string& path, std::string_view content, mode_t mode = 0644) {
  kiln::write_file_atomic(path, content, kiln::Durability::Volatile);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

void make_dir(const std::string& path, mode_t mode = 0755) {
  kiln::make_dirs(path);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

void symlink(const std::string& target, const std::string& path) {
  REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
}

std::string slurp(const std::string& path) {
  return kiln::read_file_capped(path, 1 << 20, path);
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

std::string scratch_parent() {
  return std::filesystem::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

// A build context like the e2e scenarios': files, a directory with a subdirectory, symlinks.
struct Context {
  kiln::TempDir dir{scratch_parent(), "kiln-copy-test-"};
  std::string root = dir.path() + "/ctx";
  Context() {
    make_dir(root);
    write(root + "/a.txt", "alpha");
    write(root + "/b.txt", "bravo", 0600);
    make_dir(root + "/dir", 0750);
    make_dir(root + "/dir/sub", 0700);
    write(root + "/dir/sub/x", "x");
    write(root + "/dir/y", "y");
    make_dir(root + "/dir2/a");
    make_dir(root + "/dir2/b");
    make_dir(root + "/dir2/c");
    write(root + "/dir2/a/x", "ax");
    write(root + "/dir2/b/x", "bx");
    write(root + "/dir2/c/y", "cy");
    symlink("a.txt", root + "/link-to-a");
    symlink("dir", root + "/link-to-dir");
    symlink("missing", root + "/dangling");
  }
  std::shared_ptr<SourceTree> tree() const { return SourceTree::directory(root); }
};

CopyOptions copy_of(std::vector<std::string> sources, std::string dest) {
  CopyOptions options;
  options.sources = std::move(sources);
  options.dest_is_dir = dest.ends_with("/");
  options.dest = dest;
  return options;
}

// The items as "match -> source (dir|file)" and every entry's path, to compare in one go.
std::vector<std::string> describe(const kiln::builder::SourceTree& tree, const CopySelection& selection) {
  std::vector<std::string> out;
  for (const auto& item : selection.items) {
    out.push_back(item.match + " -> " + item.source + (item.directory ? " (dir)" : " (file)"));
    kiln::builder::for_each_entry(tree, item, [&](const auto& entry) { out.push_back("  " + entry.path); });
  }
  return out;
}

using Lines = std::vector<std::string>;

std::string select_error(const SourceTree& tree, const CopyOptions& options) {
  try {
    kiln::builder::select_sources(tree, options);
  } catch (const kiln::NotFoundError& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("parse_chmod: octal as strconv.ParseUint(text, 8, 32) takes it") {
  CHECK(*parse_chmod("755").octal == 0755);
  CHECK(*parse_chmod("0640").octal == 0640);
  CHECK(*parse_chmod("00000644").octal == 0644);  // any number of digits
  CHECK(*parse_chmod("4755").octal == 04755);     // set-id bits kept (BuildKit since fsutil #228)
  CHECK(*parse_chmod("7777").octal == 07777);
  CHECK(*parse_chmod("0").octal == 0);
  CHECK(parse_chmod("4755").apply(0644, false) == 04755);
  CHECK(parse_chmod("0600").apply(04755, false) == 0600);  // the source's set-id bits do not survive
  CHECK(parse_chmod("750").apply(0700, true) == 0750);
}

TEST_CASE("parse_chmod: BuildKit's messages for values it refuses") {
  auto message = [](const std::string& text) {
    try {
      parse_chmod(text);
    } catch (const kiln::UsageError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  // Anything that starts like a number gets the octal message, as BuildKit returns it for a
  // strconv.NumError.
  for (const char* text : {"8", "999", "17777", "0o755", "755x", "0x1ed"}) {
    CHECK(message(text) ==
          fmt::format("invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777",
                      text));
  }
  // What BSD's setmode (libbsd) refuses.
  for (const char* text : {"u", "u+r,", "z+x", "+755", "ux", ",u+x", "u+x,,g+x", "a+x y"}) {
    CHECK(message(text) == fmt::format("invalid chmod parameter: '{}': invalid syntax", text));
  }
  CHECK(message("a+") == "accepted");  // an operator with no permissions changes nothing
  CHECK(message("=") == "accepted");
}

TEST_CASE("ChmodSpec::apply: symbolic modes as BSD's setmode applies them") {
  // Expected values are libbsd's setmode/getmode with a umask of 0 (BuildKit's parser is a port of
  // BSD's), for these modes in this order: files 0644 0755 0600 04755 02710, directories 0750
  // 01777 02750 0700.
  const std::vector<std::pair<mode_t, bool>> bases = {{0644, false},  {0755, false},  {0600, false},
                                                      {04755, false}, {02710, false}, {0750, true},
                                                      {01777, true},  {02750, true},  {0700, true}};
  const std::vector<std::pair<std::string, std::vector<mode_t>>> table = {
      {"u+x", {0744, 0755, 0700, 04755, 02710, 0750, 01777, 02750, 0700}},
      {"go-w", {0644, 0755, 0600, 04755, 02710, 0750, 01755, 02750, 0700}},
      {"a=rX", {0444, 0555, 0444, 0555, 0555, 0555, 01555, 0555, 0555}},
      {"a+X", {0644, 0755, 0600, 04755, 02711, 0751, 01777, 02751, 0711}},
      {"+x", {0755, 0755, 0711, 04755, 02711, 0751, 01777, 02751, 0711}},
      {"+w", {0666, 0777, 0622, 04777, 02732, 0772, 01777, 02772, 0722}},
      {"=r", {0444, 0444, 0444, 0444, 0444, 0444, 01444, 0444, 0444}},
      {"u=rwx,go=rx", {0755, 0755, 0755, 0755, 0755, 0755, 01755, 0755, 0755}},
      {"g=u", {0664, 0775, 0660, 04775, 02770, 0770, 01777, 02770, 0770}},
      {"go=u-w", {0644, 0755, 0644, 04755, 02755, 0755, 01755, 02755, 0755}},
      {"u+s", {04644, 04755, 04600, 04755, 06710, 04750, 05777, 06750, 04700}},
      {"g+s", {02644, 02755, 02600, 06755, 02710, 02750, 03777, 02750, 02700}},
      {"o+s", {0644, 0755, 0600, 04755, 02710, 0750, 01777, 02750, 0700}},
      {"+s", {06644, 06755, 06600, 06755, 06710, 06750, 07777, 06750, 06700}},
      {"+t", {01644, 01755, 01600, 05755, 03710, 01750, 01777, 03750, 01700}},
      {"o+t", {0644, 0755, 0600, 04755, 02710, 0750, 01777, 02750, 0700}},
      {"a+t", {01644, 01755, 01600, 05755, 03710, 01750, 01777, 03750, 01700}},
      {"+xt", {01644, 01755, 01600, 05755, 03710, 01750, 01777, 03750, 01700}},  // BSD: t only
      {"a+xt", {01755, 01755, 01711, 05755, 03711, 01751, 01777, 03751, 01711}},
      {"u-x,g+w,o=", {0660, 0670, 0620, 04670, 02630, 0670, 01670, 02670, 0620}},
      {"ug+rw", {0664, 0775, 0660, 04775, 02770, 0770, 01777, 02770, 0760}},
      {"a-rwx", {0, 0, 0, 04000, 02000, 0, 01000, 02000, 0}},
      {"u=", {044, 055, 0, 055, 02010, 050, 01077, 02050, 0}},
      {"g+u", {0664, 0775, 0660, 04775, 02770, 0770, 01777, 02770, 0770}},
      {"o-g", {0640, 0750, 0600, 04750, 02710, 0750, 01770, 02750, 0700}},
      {"=", {0, 0, 0, 0, 0, 0, 01000, 0, 0}},
      {"a+", {0644, 0755, 0600, 04755, 02710, 0750, 01777, 02750, 0700}},
      {"u+r-w", {0444, 0555, 0400, 04555, 02510, 0550, 01577, 02550, 0500}},
      {"u=rwX,go=rX", {0644, 0755, 0644, 0755, 0755, 0755, 01755, 0755, 0755}},
      {"+X", {0644, 0755, 0600, 04755, 02711, 0751, 01777, 02751, 0711}},
      {"ug=rwX,o=", {0660, 0770, 0660, 0770, 0770, 0770, 01770, 0770, 0770}},
      {"a-s", {0644, 0755, 0600, 0755, 0710, 0750, 01777, 0750, 0700}},
      {"u=s", {04044, 04055, 04000, 04055, 06010, 04050, 05077, 06050, 04000}},
      {"a=rwx,g-s", {0777, 0777, 0777, 0777, 0777, 0777, 01777, 0777, 0777}},
      {"=X", {0, 0111, 0, 0111, 0111, 0111, 01111, 0111, 0111}},
      {"u=X", {044, 0155, 0, 0155, 02110, 0150, 01177, 02150, 0100}},
      {"-x", {0644, 0644, 0600, 04644, 02600, 0640, 01666, 02640, 0600}},
      {"go=", {0600, 0700, 0600, 04700, 0700, 0700, 01700, 0700, 0700}},
      {"a=r,u+w", {0644, 0644, 0644, 0644, 0644, 0644, 01644, 0644, 0644}},
      {"o=u", {0646, 0757, 0606, 04757, 02717, 0757, 01777, 02757, 0707}},
      {"u=g", {0444, 0555, 0, 04555, 02110, 0550, 01777, 02550, 0}},
      {"g-w+x", {0654, 0755, 0610, 04755, 02710, 0750, 01757, 02750, 0710}},
      {"u+rwx,g=u,o=g", {0777, 0777, 0777, 04777, 02777, 0777, 01777, 02777, 0777}},
      {"ugo+rwx", {0777, 0777, 0777, 04777, 02777, 0777, 01777, 02777, 0777}},
      {"a=,u=rwx", {0700, 0700, 0700, 0700, 0700, 0700, 01700, 0700, 0700}},
      // Not BSD's: libbsd's X adds even with `-` (0755 stays 0755); BuildKit moved to Linux's X
      // (fsutil #232), which takes the execute bits away where X would have given them.
      {"a-X", {0644, 0644, 0600, 04644, 02600, 0640, 01666, 02640, 0600}},
  };
  for (const auto& [text, expected] : table) {
    auto spec = parse_chmod(text);
    for (size_t i = 0; i < bases.size(); ++i) {
      INFO(text << " on " << (bases[i].second ? "directory " : "file ") << std::oct << bases[i].first);
      CHECK(fmt::format("{:04o}", spec.apply(bases[i].first, bases[i].second)) ==
            fmt::format("{:04o}", expected[i]));
    }
  }
}

TEST_CASE("select_sources: files, directories, '.', symlinks named as sources") {
  Context ctx;
  auto tree = ctx.tree();
  auto selection =
      kiln::builder::select_sources(*tree, copy_of({"a.txt", "dir", "link-to-a", "link-to-dir"}, "/d/"));
  CHECK(describe(*tree, selection) == Lines{"a.txt -> a.txt (file)", "dir -> dir (dir)", "  dir/sub",
                                            "  dir/sub/x", "  dir/y", "link-to-a -> a.txt (file)",
                                            "link-to-dir -> dir (dir)", "  dir/sub", "  dir/sub/x",
                                            "  dir/y"});
  auto all = kiln::builder::select_sources(*tree, copy_of({"."}, "/ctx/"));
  REQUIRE(all.items.size() == 1);
  CHECK(all.items[0].source.empty());
  CHECK(all.items[0].directory);
  // Symlinks under a copied directory are entries of their own, not followed.
  int links = 0;
  kiln::builder::for_each_entry(*tree, all.items[0], [&](const auto& e) {
    if (e.path == "link-to-dir" && S_ISLNK(e.st.st_mode)) ++links;
  });
  CHECK(links == 1);
}

TEST_CASE("select_sources: wildcards as BuildKit's ResolveWildcards matches them") {
  Context ctx;
  auto tree = ctx.tree();
  auto matches = [&](const std::string& pattern) {
    Lines out;
    for (const auto& item : kiln::builder::select_sources(*tree, copy_of({pattern}, "/w/")).items)
      out.push_back(item.match);
    return out;
  };
  CHECK(matches("*.txt") == Lines{"a.txt", "b.txt"});
  CHECK(matches("dir2/*/x") == Lines{"dir2/a/x", "dir2/b/x"});
  CHECK(matches("dir2/[ab]") == Lines{"dir2/a", "dir2/b"});
  CHECK(matches("d*r") == Lines{"dir"});                 // a matched directory is not searched further
  CHECK(matches("nomatch*").empty());                    // no match is no error
  CHECK(matches("link-to-dir/s*") == Lines{"dir/sub"});  // the directory before the wildcard is followed
  CHECK(matches("link-to-dir/*/x") == Lines{"dir/sub/x"});
  // Below a wildcard the walk does not follow symlinks: not link-to-dir/sub.
  CHECK(matches("*/sub") == Lines{"dir/sub"});
  // BuildKit's walk cannot start in a directory that is not there.
  CHECK(select_error(*tree, copy_of({"nosuchdir/*.txt"}, "/x/")) == "COPY failed: \"/nosuchdir\": not found");
}

TEST_CASE("select_sources: a missing source names the path, where a link led for a dangling one") {
  Context ctx;
  auto tree = ctx.tree();
  CHECK(select_error(*tree, copy_of({"missing"}, "/x")) == "COPY failed: \"/missing\": not found");
  CHECK(select_error(*tree, copy_of({"a.txt", "dir/nope"}, "/x/")) ==
        "COPY failed: \"/dir/nope\": not found");
  // BuildKit reports the link's target: `"/missing": not found`, for a link named `dangling`.
  CHECK(select_error(*tree, copy_of({"dangling"}, "/x")) == "COPY failed: \"/missing\": not found");
  auto add = copy_of({"gone"}, "/x");
  add.instruction = "ADD";
  CHECK(select_error(*tree, add) == "ADD failed: \"/gone\": not found");
  // Several sources onto a path that is not a directory: no error (BuildKit copies them in turn).
  CHECK(kiln::builder::select_sources(*tree, copy_of({"a.txt", "b.txt"}, "/x")).items.size() == 2);
}

TEST_CASE("select_sources: --exclude patterns, ** and directories") {
  Context ctx;
  auto tree = ctx.tree();
  auto options = copy_of({"."}, "/x/");
  options.excludes = {"dir/sub", "*.txt", "**/x"};
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, options)) ==
        Lines{" ->  (dir)", "  dangling", "  dir", "  dir/y", "  dir2", "  dir2/a", "  dir2/b", "  dir2/c",
              "  dir2/c/y", "  link-to-a", "  link-to-dir"});
  // Patterns are relative to the source copied, and a named file is copied whatever they say (BuildKit
  // matches them only below the source).
  options.sources = {"dir", "a.txt"};
  options.excludes = {"sub/*", "a.txt"};
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, options)) ==
        Lines{"dir -> dir (dir)", "  dir/sub", "  dir/y", "a.txt -> a.txt (file)"});
}

TEST_CASE("select_sources: --parents keeps the matched paths below the tree's root or the /./ pivot") {
  Context ctx;
  auto tree = ctx.tree();
  auto options = copy_of({"dir/sub/x", "dir2/*/x"}, "/p/");
  options.parents = true;
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, options)) ==
        Lines{" ->  (dir)", "  dir", "  dir/sub", "  dir/sub/x", " ->  (dir)", "  dir2", "  dir2/a",
              "  dir2/a/x", "  dir2/b", "  dir2/b/x"});
  options.sources = {"dir/./sub"};  // a matched directory takes everything below it
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, options)) ==
        Lines{"dir -> dir (dir)", "  dir/sub", "  dir/sub/x"});
  options.sources = {"dir/./nope"};  // without wildcards the path must exist
  CHECK(select_error(*tree, options) == "COPY failed: \"/dir/nope\": not found");
  options.sources = {"dir2/./*/y"};
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, options)) ==
        Lines{"dir2 -> dir2 (dir)", "  dir2/c", "  dir2/c/y"});
}

namespace {

// A lower root (a host directory standing for the image below) and an empty upper directory.
struct Copy {
  Context ctx;
  std::string lower_dir = ctx.dir.path() + "/lower";
  std::string upper = ctx.dir.path() + "/upper";
  Copy() {
    make_dir(lower_dir);
    make_dir(lower_dir + "/etc");
    write(lower_dir + "/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    make_dir(lower_dir + "/srv", 0700);
    write(lower_dir + "/srv/file", "f");
    make_dir(lower_dir + "/tmp", 01777);
    symlink("srv", lower_dir + "/lnk");
    make_dir(upper);
  }
  void run(const CopyOptions& options) {
    auto tree = ctx.tree();
    auto lower = SourceTree::directory(lower_dir);
    auto selection = kiln::builder::select_sources(*tree, options);
    kiln::builder::copy_into(*tree, selection, options, *lower, upper);
  }
  std::string error(const CopyOptions& options) {
    try {
      run(options);
    } catch (const kiln::Error& error) {
      return error.what();
    }
    return "";
  }
  mode_t mode(const std::string& path) { return lstat_of(upper + path).st_mode & 07777; }
};

}  // namespace

TEST_CASE("copy_into: a directory's contents go into a destination made 0755, not with its mode") {
  Copy copy;
  copy.run(copy_of({"dir"}, "/d1"));
  CHECK(copy.mode("/d1") == 0755);  // dir is 0750
  CHECK(copy.mode("/d1/sub") == 0700);
  CHECK(slurp(copy.upper + "/d1/sub/x") == "x");
  auto chmod = copy_of({"dir"}, "/d2/x/");
  chmod.chmod = parse_chmod("0640");
  copy.run(chmod);
  // BuildKit since fsutil #228 gives the directories it makes --chmod's mode.
  CHECK(copy.mode("/d2") == 0640);
  CHECK(copy.mode("/d2/x") == 0640);
  CHECK(copy.mode("/d2/x/sub") == 0640);
  CHECK(copy.mode("/d2/x/y") == 0640);
}

TEST_CASE("copy_into: the destination through the image's symlinks, its directories as they are") {
  Copy copy;
  copy.run(copy_of({"a.txt"}, "/lnk/new/deep/"));
  CHECK(slurp(copy.upper + "/srv/new/deep/a.txt") == "alpha");
  CHECK(copy.mode("/srv") == 0700);  // copied up as the image has it
  CHECK(copy.mode("/srv/new") == 0755);
  copy.run(copy_of({"b.txt"}, "/tmp"));  // an existing directory without a trailing slash
  CHECK(copy.mode("/tmp") == 01777);
  CHECK(copy.mode("/tmp/b.txt") == 0600);
  copy.run(copy_of({"link-to-a"}, "/tmp/"));  // named as matched, content followed
  CHECK(slurp(copy.upper + "/tmp/link-to-a") == "alpha");
}

TEST_CASE("copy_into: a file onto a directory, a directory onto a file, are refused as BuildKit does") {
  Copy copy;
  CHECK(copy.error(copy_of({"dir"}, "/srv/file")) == "COPY: cannot copy to non-directory: /srv/file");
  CHECK(copy.error(copy_of({"a.txt"}, "/srv/file/")) == "COPY: cannot copy to non-directory: /srv/file");
  write(copy.ctx.root + "/etc", "a file named etc");
  CHECK(copy.error(copy_of({"etc"}, "/")) == "COPY: cannot replace the directory /etc with a file");
  // Several sources one after the other onto one path: the last file stays, a directory after a
  // file is refused.
  copy.run(copy_of({"a.txt", "b.txt"}, "/one"));
  CHECK(slurp(copy.upper + "/one") == "bravo");
  CHECK(copy.error(copy_of({"a.txt", "dir2"}, "/two")) == "COPY: cannot copy to non-directory: /two");
}

TEST_CASE("copy_into: hard links are kept within a source, not across sources") {
  Copy copy;
  write(copy.ctx.root + "/dir/hard1", "h");
  REQUIRE(::link((copy.ctx.root + "/dir/hard1").c_str(), (copy.ctx.root + "/dir/hard2").c_str()) == 0);
  copy.run(copy_of({"dir"}, "/d/"));
  CHECK(lstat_of(copy.upper + "/d/hard1").st_ino == lstat_of(copy.upper + "/d/hard2").st_ino);
  copy.run(copy_of({"dir/hard1", "dir/hard2"}, "/e/"));
  CHECK(lstat_of(copy.upper + "/e/hard1").st_ino != lstat_of(copy.upper + "/e/hard2").st_ino);
}

TEST_CASE("copy_into: ADD unpacks what decompresses to a tar header, and copies what only looks like one") {
  Copy copy;
  // A v7 header (no ustar magic) for "v7file", 2 bytes: Go's tar reader takes it, so does ADD.
  std::string v7(512, '\0');
  std::memcpy(v7.data(), "v7file", 6);
  std::memcpy(v7.data() + 100, "0000644", 7);
  std::memcpy(v7.data() + 108, "0000000", 7);
  std::memcpy(v7.data() + 116, "0000000", 7);
  std::memcpy(v7.data() + 124, "00000000002", 11);
  std::memcpy(v7.data() + 136, "00000000000", 11);
  v7[156] = '0';
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(v7[i]);
  std::snprintf(v7.data() + 148, 8, "%06o", sum);
  v7 += std::string("hi") + std::string(510, '\0') + std::string(1024, '\0');
  write(copy.ctx.root + "/v7.tar", v7);
  // A gzip of text, a .tar.gz that is text, an all-zero "tar", an empty file.
  kiln::StringWriter gz;
  auto compressor = kiln::make_compressor(kiln::Compression::Gzip, gz);
  compressor->write(kiln::as_bytes(std::string_view("not an archive\n")));
  compressor->finish();
  write(copy.ctx.root + "/fake.gz", gz.text);
  write(copy.ctx.root + "/text.tar.gz", "plain text\n");
  write(copy.ctx.root + "/zeros.tar", std::string(1024, '\0'));
  write(copy.ctx.root + "/empty.tar", "");
  auto add = copy_of({"v7.tar", "fake.gz", "text.tar.gz", "zeros.tar", "empty.tar"}, "/x/");
  add.unpack_archives = true;
  add.instruction = "ADD";
  add.chmod = parse_chmod("0600");  // not applied to what an archive holds
  copy.run(add);
  CHECK(slurp(copy.upper + "/x/v7file") == "hi");
  CHECK(copy.mode("/x/v7file") == 0644);
  CHECK(copy.mode("/x") == 0755);  // the destination of an archive is made without --chmod's mode
  CHECK(slurp(copy.upper + "/x/fake.gz") == gz.text);
  CHECK(slurp(copy.upper + "/x/text.tar.gz") == "plain text\n");
  CHECK(copy.mode("/x/zeros.tar") == 0600);
  CHECK(slurp(copy.upper + "/x/empty.tar").empty());
}

TEST_CASE(
    "select_sources: what the .dockerignore filter leaves out, and a directory a later ! rule reaches into") {
  Context ctx;
  kiln::builder::PathFilter filter;
  // As `dir`, `b.txt` then `!dir/sub` would: dir is left out but what is under dir/sub comes back.
  filter.excluded = [](std::string_view path) { return path == "b.txt" || path == "dir" || path == "dir/y"; };
  filter.may_include_below = [](std::string_view dir) { return dir == "dir"; };
  auto tree = SourceTree::directory(ctx.root, filter);
  CHECK(select_error(*tree, copy_of({"b.txt"}, "/x")) == "COPY failed: \"/b.txt\": not found");
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, copy_of({"*.txt"}, "/x/"))) ==
        Lines{"a.txt -> a.txt (file)"});
  CHECK(describe(*tree, kiln::builder::select_sources(*tree, copy_of({"dir"}, "/x/"))) ==
        Lines{"dir -> dir (dir)", "  dir/sub", "  dir/sub/x"});
  Lines all = describe(*tree, kiln::builder::select_sources(*tree, copy_of({"."}, "/x/")));
  CHECK(std::find(all.begin(), all.end(), "  dir/sub/x") != all.end());
  CHECK(std::find(all.begin(), all.end(), "  dir/y") == all.end());
  CHECK(std::find(all.begin(), all.end(), "  b.txt") == all.end());
}

TEST_CASE("selection_digest: the same key on any number of hashing threads, and every byte counts") {
  Context ctx;
  // Enough files for several batches, a few of them large enough to take a while.
  for (int d = 0; d < 4; ++d) {
    make_dir(fmt::format("{}/many/d{}", ctx.root, d));
    for (int f = 0; f < 400; ++f) {
      write(fmt::format("{}/many/d{}/f{}", ctx.root, d, f), fmt::format("file {} of {}", f, d));
    }
  }
  // Large files are hashed on several threads: six of them, in two batches.
  for (int b = 0; b < 6; ++b)
    write(fmt::format("{}/many/d{}/big{}", ctx.root, b % 4, b), std::string(2 << 20, char('a' + b)));
  auto tree = ctx.tree();
  auto selection = kiln::builder::select_sources(*tree, copy_of({"."}, "/x/"));
  const kiln::Digest one = kiln::builder::selection_digest(*tree, selection, nullptr, 1);
  CHECK(kiln::builder::selection_digest(*tree, selection, nullptr, 2) == one);
  CHECK(kiln::builder::selection_digest(*tree, selection, nullptr, 8) == one);
  // Through a checksum cache: first every file is hashed, then every one is known.
  kiln::builder::ChecksumCache cache(ctx.dir.path() + "/checksums", ctx.root);
  CHECK(kiln::builder::selection_digest(*tree, selection, &cache, 4) == one);
  CHECK(kiln::builder::selection_digest(*tree, selection, &cache, 4) == one);
  // One byte of one file among 1,600 changes the key, on one thread or several; so does one byte
  // of a large file.
  write(ctx.root + "/many/d2/f399", "file 399 of 3");
  std::string big(2 << 20, 'e');
  big[12345] = 'x';
  write(ctx.root + "/many/d0/big4", big);
  auto changed = kiln::builder::select_sources(*tree, copy_of({"."}, "/x/"));
  const kiln::Digest after = kiln::builder::selection_digest(*tree, changed, nullptr, 1);
  CHECK(after != one);
  CHECK(kiln::builder::selection_digest(*tree, changed, &cache, 4) == after);
}
