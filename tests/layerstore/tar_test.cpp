#include "layerstore/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "layerstore/archive_io.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "tests/skip.h"

namespace fs = std::filesystem;

namespace {

using kiln::StringWriter;

// Hands out at most `chunk` bytes per read, so that streaming paths see several reads.
struct StringReader : kiln::Reader {
  explicit StringReader(std::string s, size_t chunk = 4096) : data(std::move(s)), chunk_size(chunk) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = std::min({buf.size(), data.size() - pos, chunk_size});
    std::memcpy(buf.data(), data.data() + pos, n);
    pos += n;
    return n;
  }
  std::string data;
  size_t chunk_size;
  size_t pos = 0;
};

struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// Builds test archives entry by entry through kiln's own ArchiveWriter.
class TarBuilder {
 public:
  TarBuilder() : tar_(out_, "test") {}

  TarBuilder& file(const std::string& name, std::string_view content = "x", mode_t perm = 0644,
                   int64_t mtime = 1000) {
    auto e = entry(name, AE_IFREG, perm, mtime);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(content.size()));
    tar_.write_header(e.get());
    tar_.write_data(kiln::as_bytes(content));
    return *this;
  }
  TarBuilder& dir(const std::string& name, mode_t perm = 0755, int64_t mtime = 1000) {
    tar_.write_header(entry(name, AE_IFDIR, perm, mtime).get());
    return *this;
  }
  TarBuilder& symlink(const std::string& name, const std::string& target) {
    auto e = entry(name, AE_IFLNK, 0777, 1000);
    archive_entry_set_symlink(e.get(), target.c_str());
    tar_.write_header(e.get());
    return *this;
  }
  TarBuilder& hardlink(const std::string& name, const std::string& target, mode_t perm = 0644,
                       int64_t mtime = 1000) {
    auto e = entry(name, AE_IFREG, perm, mtime);
    archive_entry_set_hardlink(e.get(), target.c_str());
    tar_.write_header(e.get());
    return *this;
  }
  TarBuilder& device(const std::string& name, mode_t type, unsigned major, unsigned minor) {
    auto e = entry(name, type, 0666, 1000);
    archive_entry_set_rdev(e.get(), makedev(major, minor));
    tar_.write_header(e.get());
    return *this;
  }
  std::string done() {
    tar_.finish();
    return out_.text;
  }

 private:
  std::unique_ptr<archive_entry, EntryFree> entry(const std::string& name, mode_t type, mode_t perm,
                                                  int64_t mtime) {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), perm);
    archive_entry_set_mtime(e.get(), mtime, 0);
    return e;
  }
  StringWriter out_;
  kiln::ArchiveWriter tar_;
};

struct ReadEntry {
  std::string name;
  mode_t type = 0;
  mode_t perm = 0;
  int64_t uid = 0, gid = 0, mtime = 0;
  std::string content, symlink, hardlink;
  std::map<std::string, std::string> xattrs;
  bool has_uname = false;
};

std::vector<ReadEntry> read_tar(const std::string& tar) {
  StringReader in(tar);
  kiln::ArchiveReader reader(in, "test");
  std::vector<ReadEntry> out;
  while (archive_entry* e = reader.next()) {
    ReadEntry r;
    r.name = archive_entry_pathname(e);
    r.type = archive_entry_filetype(e);
    r.perm = archive_entry_perm(e);
    r.uid = archive_entry_uid(e);
    r.gid = archive_entry_gid(e);
    r.mtime = archive_entry_mtime(e);
    const char* uname = archive_entry_uname(e);
    const char* gname = archive_entry_gname(e);
    r.has_uname = (uname && *uname) || (gname && *gname);
    if (const char* s = archive_entry_symlink(e)) r.symlink = s;
    if (const char* h = archive_entry_hardlink(e)) r.hardlink = h;
    archive_entry_xattr_reset(e);
    const char* xname = nullptr;
    const void* xvalue = nullptr;
    size_t xsize = 0;
    while (archive_entry_xattr_next(e, &xname, &xvalue, &xsize) == ARCHIVE_OK) {
      r.xattrs[xname] = std::string(static_cast<const char*>(xvalue), xsize);
    }
    std::byte buf[4096];
    while (size_t n = reader.read_data(buf)) r.content.append(reinterpret_cast<const char*>(buf), n);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> names_of(const std::vector<ReadEntry>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  return names;
}

struct Scratch {
  kiln::TempDir dir{"/dev/shm", "kiln-tar-test-"};
  std::string path(const std::string& rel) const { return dir.path() + "/" + rel; }
  kiln::Fd open(const std::string& rel) const {
    fs::create_directories(path(rel));
    return kiln::open_or_throw(path(rel), O_RDONLY | O_DIRECTORY);
  }
};

void write_text(const std::string& path, std::string_view content, mode_t perm = 0644) {
  kiln::Fd fd = kiln::open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, perm);
  kiln::FdWriter(fd.get(), path).write(kiln::as_bytes(content));
  REQUIRE(::fchmod(fd.get(), perm) == 0);
}

std::string read_text(const std::string& path) {
  return kiln::read_file_capped(path, 1 << 20, path);
}

void set_mtime(const std::string& path, time_t seconds) {
  struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

std::string xattr_of(const std::string& path, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
  return n < 0 ? std::string("<none>") : std::string(buf, static_cast<size_t>(n));
}

void make_whiteout(const std::string& path) {
  REQUIRE(::mknod(path.c_str(), S_IFCHR, makedev(0, 0)) == 0);
}

bool is_root() {
  return ::geteuid() == 0;
}

// The message of the InvalidInputError that `f` throws; any other outcome shows up in the comparison.
template <typename F>
std::string invalid_input_message(F&& f) {
  try {
    f();
  } catch (const kiln::InvalidInputError& e) {
    return e.what();
  }
  return "<no InvalidInputError>";
}

std::string write_dir(int dirfd, const kiln::TarWriteOptions& options = {}) {
  StringWriter out;
  kiln::write_tar_from_dir(dirfd, out, options);
  return out.text;
}

kiln::ExtractStats extract(const std::string& tar, int root,
                           kiln::WhiteoutMode mode = kiln::WhiteoutMode::Apply) {
  StringReader in(tar);
  return kiln::extract_tar(in, root, kiln::ExtractOptions{mode, is_root()});
}

// A small tree with one of everything a layer holds.
void populate(const Scratch& s, const std::string& root) {
  fs::create_directories(s.path(root + "/d/sub"));
  write_text(s.path(root + "/d/f"), "hello\n", 0640);
  write_text(s.path(root + "/setuid"), "#!/bin/sh\n", 04755);
  REQUIRE(::link(s.path(root + "/d/f").c_str(), s.path(root + "/d/hard").c_str()) == 0);
  REQUIRE(::symlink("d/f", s.path(root + "/link").c_str()) == 0);
  REQUIRE(::mkfifo(s.path(root + "/fifo").c_str(), 0600) == 0);
  REQUIRE(::lsetxattr(s.path(root + "/d/f").c_str(), "user.kiln", "v1", 2, 0) == 0);
  if (is_root()) {
    REQUIRE(::lchown(s.path(root + "/setuid").c_str(), 1234, 5678) == 0);
    REQUIRE(::chmod(s.path(root + "/setuid").c_str(), 04755) == 0);  // chown cleared setuid
    REQUIRE(::lchown(s.path(root + "/link").c_str(), 42, 43) == 0);
  }
  REQUIRE(::chmod(s.path(root + "/d").c_str(), 0750) == 0);
  for (const char* p : {"/d/f", "/setuid", "/link", "/fifo", "/d/sub", "/d"})
    set_mtime(s.path(root + p), 1600000000);
}

}  // namespace

TEST_CASE("a tree written and extracted again keeps modes, owners, mtimes, links and xattrs", "[tar]") {
  Scratch s;
  kiln::Fd src = s.open("src");
  populate(s, "src");
  std::string tar = write_dir(src.get());
  kiln::Fd dst = s.open("dst");
  auto stats = extract(tar, dst.get());
  CHECK(stats.entries == 7);
  CHECK(stats.skipped_devices == 0);

  for (const char* p : {"d", "d/f", "d/sub", "setuid", "link", "fifo"}) {
    INFO(p);
    struct stat a = lstat_of(s.path(std::string("src/") + p));
    struct stat b = lstat_of(s.path(std::string("dst/") + p));
    CHECK(a.st_mode == b.st_mode);
    CHECK(a.st_mtim.tv_sec == b.st_mtim.tv_sec);
    if (is_root()) {
      CHECK(a.st_uid == b.st_uid);
      CHECK(a.st_gid == b.st_gid);
    }
  }
  CHECK((lstat_of(s.path("dst/setuid")).st_mode & 07777) == 04755);
  CHECK(read_text(s.path("dst/d/f")) == "hello\n");
  CHECK(fs::read_symlink(s.path("dst/link")) == "d/f");
  CHECK(lstat_of(s.path("dst/d/hard")).st_ino == lstat_of(s.path("dst/d/f")).st_ino);
  CHECK(xattr_of(s.path("dst/d/f"), "user.kiln") == "v1");
  CHECK(S_ISFIFO(lstat_of(s.path("dst/fifo")).st_mode));
}

TEST_CASE("written tars are deterministic: sorted, numeric owners, no names, clamped mtimes", "[tar]") {
  Scratch s;
  kiln::Fd src = s.open("src");
  populate(s, "src");
  fs::create_directories(s.path("src/a"));
  write_text(s.path("src/a/b"), "1");
  write_text(s.path("src/a-c"), "2");
  write_text(s.path("src/Z"), "3");
  set_mtime(s.path("src/a"), 1000);

  std::string first = write_dir(src.get());
  // Reading the tree (atime) and walking it again must not change a byte.
  std::string second = write_dir(src.get());
  CHECK(first == second);

  auto entries = read_tar(first);
  CHECK(names_of(entries) == std::vector<std::string>{"Z", "a/", "a/b", "a-c", "d/", "d/f", "d/hard",
                                                      "d/sub/", "fifo", "link", "setuid"});
  for (const auto& e : entries) {
    INFO(e.name);
    CHECK_FALSE(e.has_uname);
    CHECK(e.name.front() != '/');
    CHECK_FALSE(e.name.starts_with("./"));
  }
  CHECK(entries[6].hardlink == "d/f");
  CHECK(entries[5].xattrs.at("user.kiln") == "v1");
  CHECK(entries[9].symlink == "d/f");
  if (is_root()) CHECK((entries[10].uid == 1234 && entries[10].gid == 5678));
  CHECK(first.find("LIBARCHIVE.xattr") == std::string::npos);
  CHECK(first.find("SCHILY.xattr.user.kiln") != std::string::npos);

  auto clamped = read_tar(write_dir(src.get(), kiln::TarWriteOptions{1500}));
  for (const auto& e : clamped) {
    INFO(e.name);
    CHECK(e.mtime == (e.name == "a/" ? 1000 : 1500));
  }
}

TEST_CASE("with an ID map, owners are written as the user namespace shows them", "[tar]") {
  if (!is_root()) {
    WARN("skipped: giving files to other owners needs root");
    return;
  }
  Scratch s;
  kiln::Fd src = s.open("src");
  // A rootless container's upper directory as the host sees it: the caller is 1001:1002, its
  // subordinate ranges start at 100000 and 200000.
  kiln::IdMap map{{{0, 1001, 1}, {1, 100000, 65536}}, {{0, 1002, 1}, {1, 200000, 65536}}};
  fs::create_directories(s.path("src/d"));
  for (const char* file : {"made-by-root", "chowned", "first-sub", "last-sub", "past-range", "host-root"})
    write_text(s.path(std::string("src/") + file), file);
  REQUIRE(::symlink("../chowned", s.path("src/d/link").c_str()) == 0);
  make_whiteout(s.path("src/gone"));
  struct Owner {
    const char* path;
    uid_t uid;
    gid_t gid;
  };
  for (const Owner& o :
       {Owner{"made-by-root", 1001, 1002}, Owner{"chowned", 100999, 200999},
        Owner{"first-sub", 100000, 200000}, Owner{"last-sub", 165535, 265535},
        Owner{"past-range", 165536, 265536}, Owner{"host-root", 0, 0}, Owner{"d", 1001, 200999},
        Owner{"d/link", 100999, 1002}, Owner{"gone", 100000, 200000}}) {
    REQUIRE(::lchown(s.path(std::string("src/") + o.path).c_str(), o.uid, o.gid) == 0);
  }
  REQUIRE(::link(s.path("src/chowned").c_str(), s.path("src/hard").c_str()) == 0);

  auto owners_in = [](const std::string& tar) {
    std::map<std::string, std::string> out;
    for (const auto& e : read_tar(tar)) out[e.name] = fmt::format("{}:{}", e.uid, e.gid);
    return out;
  };
  const std::map<std::string, std::string> mapped = {
      {".wh.gone", "1:1"},          {"chowned", "1000:1000"},    {"d/", "0:1000"},
      {"d/link", "1000:0"},         {"first-sub", "1:1"},        {"hard", "1000:1000"},
      {"host-root", "65534:65534"}, {"last-sub", "65536:65536"}, {"made-by-root", "0:0"},
      {"past-range", "65534:65534"}};
  CHECK(owners_in(write_dir(src.get(), {.id_map = map})) == mapped);
  // Without a map the host's IDs are written as they are.
  CHECK(owners_in(write_dir(src.get())).at("chowned") == "100999:200999");
  // An empty map leaves every owner outside it.
  for (const auto& [name, owner] : owners_in(write_dir(src.get(), {.id_map = kiln::IdMap{}}))) {
    INFO(name);
    CHECK(owner == "65534:65534");
  }

  // A flattened tree maps every layer's owners, those of the lower ones too.
  kiln::Fd below = s.open("below");
  write_text(s.path("below/flat-only-below"), "x");
  REQUIRE(::lchown(s.path("below/flat-only-below").c_str(), 100001, 200001) == 0);
  const int layers[] = {src.get(), below.get()};
  StringWriter flat;
  kiln::write_flattened_tar(layers, flat, {.id_map = map});
  auto flat_owners = owners_in(flat.text);
  CHECK(flat_owners.at("flat-only-below") == "2:2");
  CHECK(flat_owners.at("chowned") == "1000:1000");
}

TEST_CASE("hostile archives are refused by scan and by extract with the same message", "[tar]") {
  struct Case {
    const char* what;
    std::string tar;
    std::string message;
  };
  std::vector<Case> cases = {
      {"traversal", TarBuilder().dir("etc/").file("../evil").done(),
       "layer entry `../evil`: path leaves the layer root"},
      {"nested traversal", TarBuilder().dir("a/").file("a/../../evil").done(),
       "layer entry `a/../../evil`: path leaves the layer root"},
      {"symlink escape", TarBuilder().symlink("up", "../../../../../../..").file("up/tmp/kiln-escape").done(),
       "layer entry `up`: symlink target `../../../../../../..` leaves the layer root"},
      {"nested symlink escape", TarBuilder().dir("a/").symlink("a/up", "../..").done(),
       "layer entry `a/up`: symlink target `../..` leaves the layer root"},
      {"hard link escape", TarBuilder().file("ok").hardlink("passwd", "../../../../etc/passwd").done(),
       "layer entry `passwd`: hard link target `../../../../etc/passwd` leaves the layer root"},
      {"dangling hard link", TarBuilder().hardlink("ghost", "not/in/archive").done(),
       "layer entry `ghost`: hard link target `not/in/archive` does not exist"},
      {"whiteout escape", TarBuilder().file("ok").file("../.wh.victim", "").done(),
       "layer entry `../.wh.victim`: path leaves the layer root"},
      {"whiteout of the parent", TarBuilder().dir("a/").file("a/.wh..", "").done(),
       "layer entry `a/.wh..`: whiteout names no entry"},
  };
  for (const auto& c : cases) {
    SECTION(c.what) {
      StringReader scan_in(c.tar);
      CHECK_THROWS_MATCHES(kiln::scan_tar(scan_in), kiln::InvalidInputError, Catch::Message(c.message));
      Scratch s;
      kiln::Fd root = s.open("root");
      CHECK_THROWS_MATCHES(extract(c.tar, root.get()), kiln::InvalidInputError, Catch::Message(c.message));
      CHECK_FALSE(fs::exists(s.path("evil")));
      CHECK_FALSE(fs::exists("/tmp/kiln-escape"));
      CHECK_FALSE(fs::exists(s.path("root/up")));  // refused before anything of it was made
    }
  }
}

TEST_CASE("symlinks inside the root are followed inside it, absolute ones against the root", "[tar]") {
  Scratch s;
  kiln::Fd root = s.open("root");
  std::string tar = TarBuilder()
                        .symlink("abs", "/")
                        .dir("usr/")
                        .symlink("lib", "usr")
                        .file("abs/tmp/kiln-inside", "in")
                        .file("lib/libx.so", "so")
                        .done();
  StringReader scan_in(tar);
  CHECK(kiln::scan_tar(scan_in).entries == 5);
  extract(tar, root.get());
  CHECK_FALSE(fs::exists("/tmp/kiln-inside"));
  CHECK(read_text(s.path("root/tmp/kiln-inside")) == "in");
  CHECK(read_text(s.path("root/usr/libx.so")) == "so");
}

TEST_CASE("a cut stream is reported as truncated, a garbage one as malformed", "[tar]") {
  std::string big(20000, 'q');
  std::string tar = TarBuilder().dir("d/").file("d/big", big).file("d/after").done();
  for (size_t cut : {size_t{700}, size_t{1024 + 512 + 100}, size_t{6000}, tar.size() - 3000}) {
    INFO("cut at " << cut);
    std::string part = tar.substr(0, cut);
    StringReader scan_in(part);
    CHECK_THAT(invalid_input_message([&] { kiln::scan_tar(scan_in); }), Catch::Contains("truncated archive"));
    Scratch s;
    kiln::Fd root = s.open("root");
    CHECK_THAT(invalid_input_message([&] { extract(part, root.get()); }),
               Catch::Contains("truncated archive"));
  }
  StringReader junk(std::string(3000, 'j'));
  CHECK_THAT(invalid_input_message([&] { kiln::scan_tar(junk); }), Catch::Contains("malformed"));
}

TEST_CASE("scan_tar reads the stream to its very end and writes nothing", "[tar]") {
  std::string tar =
      TarBuilder().dir("d/").file("d/f", std::string(100000, 'z')).hardlink("d/g", "d/f").done();
  std::string with_trailer = tar + std::string(5000, '\0');
  StringReader in(with_trailer, 1 << 20);
  auto stats = kiln::scan_tar(in);
  CHECK(stats.entries == 3);
  CHECK(stats.tar_bytes == with_trailer.size());
  CHECK(in.pos == with_trailer.size());
}

TEST_CASE("files replace directories and directories replace files, as Docker does", "[tar]") {
  Scratch s;
  kiln::Fd root = s.open("root");
  extract(TarBuilder().file("x", "file").dir("y/").file("y/z").dir("keep/").file("keep/old").done(),
          root.get());
  extract(TarBuilder()
              .dir("x/")
              .file("x/a", "in dir")
              .file("y", "now a file")
              .dir("keep/", 0700)
              .file("keep/new")
              .done(),
          root.get());
  CHECK(read_text(s.path("root/x/a")) == "in dir");
  CHECK(read_text(s.path("root/y")) == "now a file");
  CHECK(fs::exists(s.path("root/keep/old")));  // a directory onto a directory merges
  CHECK(fs::exists(s.path("root/keep/new")));
  CHECK((lstat_of(s.path("root/keep")).st_mode & 07777) == 0700);
  CHECK(lstat_of(s.path("root/keep")).st_mtim.tv_sec == 1000);
}

TEST_CASE("Apply mode deletes what whiteouts name and empties opaque directories", "[tar]") {
  Scratch s;
  kiln::Fd root = s.open("root");
  extract(TarBuilder()
              .dir("a/")
              .file("a/keep")
              .file("a/gone")
              .dir("a/sub/")
              .file("a/sub/deep")
              .file("b")
              .dir("o/")
              .file("o/old")
              .dir("o/old-dir/")
              .file("o/old-dir/f")
              .done(),
          root.get());
  extract(TarBuilder()
              .file("a/.wh.gone", "")
              .file("a/.wh.sub", "")
              .file(".wh.b", "")
              .file(".wh.never-there", "")
              .dir("o/")
              .file("o/.wh..wh..opq", "")
              .file("o/new")
              .file(".wh..wh.plnk", "")
              .done(),
          root.get());
  CHECK(fs::exists(s.path("root/a/keep")));
  CHECK_FALSE(fs::exists(s.path("root/a/gone")));
  CHECK_FALSE(fs::exists(s.path("root/a/sub")));
  CHECK_FALSE(fs::exists(s.path("root/b")));
  CHECK_FALSE(fs::exists(s.path("root/o/old")));
  CHECK_FALSE(fs::exists(s.path("root/o/old-dir")));
  CHECK(fs::exists(s.path("root/o/new")));
  CHECK_FALSE(fs::exists(s.path("root/.wh..wh.plnk")));
  CHECK_FALSE(fs::exists(s.path("root/a/.wh.gone")));
}

TEST_CASE("Overlay mode stores whiteouts as overlayfs does, and writing turns them back", "[tar]") {
  if (!is_root()) KILN_SKIP("overlay whiteouts need CAP_MKNOD and trusted.* xattrs");
  Scratch s;
  kiln::Fd root = s.open("root");
  std::string layer = TarBuilder()
                          .dir("d/", 0711, 2000)
                          .file("d/.wh..wh..opq", "", 0644, 2000)
                          .file("d/new")
                          .file(".wh.gone", "", 0600, 3000)
                          .done();
  StringReader scan_in(layer);
  CHECK(kiln::scan_tar(scan_in).entries == 4);
  extract(layer, root.get(), kiln::WhiteoutMode::Overlay);
  struct stat wh = lstat_of(s.path("root/gone"));
  CHECK(S_ISCHR(wh.st_mode));
  CHECK(wh.st_rdev == makedev(0, 0));
  CHECK(xattr_of(s.path("root/d"), "trusted.overlay.opaque") == "y");
  CHECK_FALSE(fs::exists(s.path("root/.wh.gone")));

  std::string written = write_dir(root.get());
  auto entries = read_tar(written);
  REQUIRE(names_of(entries) == std::vector<std::string>{".wh.gone", "d/", "d/.wh..wh..opq", "d/new"});
  CHECK(entries[0].type == AE_IFREG);
  CHECK(entries[0].content.empty());
  CHECK(entries[0].perm == 0600);
  CHECK(entries[0].mtime == 3000);
  CHECK(entries[1].xattrs.empty());  // the opaque xattr became the marker, not content
  CHECK(entries[2].type == AE_IFREG);

  // Through a second snapshot, byte for byte.
  kiln::Fd again = s.open("again");
  extract(written, again.get(), kiln::WhiteoutMode::Overlay);
  CHECK(write_dir(again.get()) == written);
}

TEST_CASE("a flattened tar merges layers: upper wins, whiteouts and opaque directories hide", "[tar]") {
  Scratch s;
  kiln::Fd bottom = s.open("l2");
  kiln::Fd middle = s.open("l1");
  kiln::Fd top = s.open("l0");
  // Bottom layer.
  fs::create_directories(s.path("l2/etc"));
  write_text(s.path("l2/etc/passwd"), "bottom");
  write_text(s.path("l2/etc/group"), "bottom");
  fs::create_directories(s.path("l2/var/cache"));
  write_text(s.path("l2/var/cache/x"), "x");
  fs::create_directories(s.path("l2/opt"));
  write_text(s.path("l2/opt/lib"), "old");
  fs::create_directories(s.path("l2/data"));
  write_text(s.path("l2/data/f"), "hidden by a file above");
  write_text(s.path("l2/shared"), "one inode");
  REQUIRE(::link(s.path("l2/shared").c_str(), s.path("l2/shared-too").c_str()) == 0);
  // Middle layer: replaces passwd, deletes var, makes opt opaque, turns data into a file.
  fs::create_directories(s.path("l1/etc"));
  write_text(s.path("l1/etc/passwd"), "middle");
  if (is_root()) {
    make_whiteout(s.path("l1/var"));
  }
  fs::create_directories(s.path("l1/opt"));
  REQUIRE(::setxattr(s.path("l1/opt").c_str(), is_root() ? "trusted.overlay.opaque" : "user.overlay.opaque",
                     "y", 1, 0) == 0);
  write_text(s.path("l1/opt/new"), "new");
  write_text(s.path("l1/data"), "a file now");
  // Top layer: deletes group, adds hosts, brings var back with only fresh content.
  fs::create_directories(s.path("l0/etc"));
  if (is_root()) make_whiteout(s.path("l0/etc/group"));
  write_text(s.path("l0/etc/hosts"), "top");
  fs::create_directories(s.path("l0/var"));
  write_text(s.path("l0/var/fresh"), "fresh");

  const int layers[] = {top.get(), middle.get(), bottom.get()};
  StringWriter out;
  kiln::write_flattened_tar(layers, out);
  auto entries = read_tar(out.text);
  std::map<std::string, std::string> content;
  for (const auto& e : entries) content[e.name] = e.content;
  // Without the whiteouts the layers merge differently, and none of the checks below hold.
  if (!is_root()) KILN_SKIP("whiteout devices need CAP_MKNOD");
  CHECK(names_of(entries) == std::vector<std::string>{"data", "etc/", "etc/hosts", "etc/passwd", "opt/",
                                                      "opt/new", "shared", "shared-too", "var/",
                                                      "var/fresh"});
  CHECK(content["etc/passwd"] == "middle");
  CHECK(content["data"] == "a file now");
  CHECK(entries[7].hardlink == "shared");
  for (const auto& e : entries) CHECK(e.xattrs.empty());

  StringWriter again;
  kiln::write_flattened_tar(layers, again);
  CHECK(again.text == out.text);
}

TEST_CASE("device nodes the process may not create are left out and counted", "[tar]") {
  if (::geteuid() != 0) KILN_SKIP("needs root to drop to an unprivileged user in a child process");
  Scratch s;
  std::string tar = TarBuilder()
                        .dir("dev")
                        .device("dev/null", AE_IFCHR, 1, 3)
                        .device("dev/sda", AE_IFBLK, 8, 0)
                        .file("etc/hostname", "box\n")
                        .done();
  kiln::Fd root = s.open("rootfs");
  REQUIRE(::chown(s.path("rootfs").c_str(), 65534, 65534) == 0);
  REQUIRE(::chmod(s.dir.path().c_str(), 0755) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // An unprivileged user has no CAP_MKNOD: extraction goes on without the devices.
    int code = 0;
    try {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0)
        ::_exit(10);
      StringReader in(tar);
      kiln::ExtractStats stats = kiln::extract_tar(in, root.get(), {kiln::WhiteoutMode::Apply, false});
      if (stats.skipped_devices != 2) code = 11;
    } catch (...) {
      code = 12;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(read_text(s.path("rootfs/etc/hostname")) == "box\n");
  CHECK_FALSE(fs::exists(fs::symlink_status(s.path("rootfs/dev/null"))));
  CHECK_FALSE(fs::exists(fs::symlink_status(s.path("rootfs/dev/sda"))));

  // Root makes them.
  Scratch as_root;
  kiln::Fd root2 = as_root.open("rootfs");
  StringReader in(tar);
  kiln::ExtractStats stats = kiln::extract_tar(in, root2.get(), {kiln::WhiteoutMode::Apply, true});
  CHECK(stats.skipped_devices == 0);
  struct stat st {};
  REQUIRE(::lstat(as_root.path("rootfs/dev/null").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == makedev(1, 3));
}

TEST_CASE("a hard link's header sets the metadata of the inode it shares, as Docker does", "[tar]") {
  Scratch s;
  std::string tar = TarBuilder()
                        .file("bin/tool", "#!/bin/sh\n", 0600, 1000)
                        .hardlink("bin/alias", "bin/tool", 0755, 2000)
                        .done();
  kiln::Fd root = s.open("rootfs");
  StringReader in(tar);
  kiln::extract_tar(in, root.get(), {kiln::WhiteoutMode::Apply, true});
  struct stat a {
  }, b{};
  REQUIRE(::lstat(s.path("rootfs/bin/tool").c_str(), &a) == 0);
  REQUIRE(::lstat(s.path("rootfs/bin/alias").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK((a.st_mode & 07777) == 0755);
  CHECK(a.st_mtime == 2000);
  CHECK(a.st_nlink == 2);
}
