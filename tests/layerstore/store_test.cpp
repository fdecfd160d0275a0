#include "layerstore/store.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "layerstore/errors.h"
#include "layerstore/files.h"

namespace fs = std::filesystem;

namespace {

struct ScratchStore {
  kiln::TempDir dir{"/dev/shm", "kiln-store-test-"};
  std::string root() const { return dir.path() + "/store"; }
};

// A minimal image (config + manifest, no layers) put straight into the store.
kiln::Descriptor put_image(kiln::Store& store, const std::string& created) {
  std::string config = R"({"architecture":"amd64","os":"linux","created":")" + created +
                       R"(","rootfs":{"type":"layers","diff_ids":[]}})";
  kiln::Digest config_digest = store.put_blob(config);
  kiln::Manifest m{
      std::string(kiln::media::kOciManifest),
      {std::string(kiln::media::kOciConfig), config_digest, static_cast<int64_t>(config.size()), {}, {}},
      {},
      {}};
  std::string bytes = m.serialize();
  return {std::string(kiln::media::kOciManifest),
          store.put_blob(bytes),
          static_cast<int64_t>(bytes.size()),
          {},
          {}};
}

size_t count_files(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST_CASE("blobs become visible only when published, under their digest", "[store]") {
  ScratchStore s;
  kiln::Store store(s.root());
  std::string blobs = store.layout_dir() + "/blobs/sha256";
  {
    auto w = store.new_blob();
    w->write(kiln::as_bytes("hello"));
    CHECK(count_files(blobs) == 0);
    kiln::Digest d = w->seal(kiln::sha256_of("hello"), 5);
    CHECK(count_files(blobs) == 0);
    w->publish();
    CHECK(store.has_blob(d));
    CHECK(store.read_blob(d, 100) == "hello");
  }
  {
    auto w = store.new_blob();
    w->write(kiln::as_bytes("tampered"));
    CHECK_THROWS_WITH(w->seal(kiln::sha256_of("original")), Catch::Contains("digest mismatch"));
  }
  {
    auto w = store.new_blob();
    w->write(kiln::as_bytes("abandoned"));
    w->seal();
    // never published: dropping it leaves nothing behind
  }
  CHECK(count_files(blobs) == 1);
  CHECK_THROWS_AS(store.open_blob(kiln::sha256_of("nope")), kiln::NotFoundError);
  CHECK_THROWS_WITH(store.read_blob(kiln::sha256_of("hello"), 2), Catch::Contains("larger than 2 bytes"));
}

TEST_CASE("a blob hashed in the background: the same digest, mismatches caught, resumes hashed", "[store]") {
  ScratchStore s;
  kiln::Store store(s.root());
  // 3 MiB and a bit, in uneven pieces: the hashing thread meets the writer mid-piece.
  std::string content;
  for (uint64_t i = 0; content.size() < (3 << 20) + 12345; ++i) content += std::to_string(i * 7919) + ",";
  kiln::Digest digest = kiln::sha256_of(content);
  auto write_pieces = [&](kiln::Store::BlobWriter& w, size_t from, size_t to) {
    for (size_t at = from, piece = 1; at < to; at += piece, piece = piece * 3 % 70001 + 1)
      w.write(kiln::as_bytes(std::string_view(content).substr(at, std::min(piece, to - at))));
  };
  {
    auto w = store.new_blob();
    w->hash_in_background();
    write_pieces(*w, 0, content.size());
    CHECK(w->seal(digest, content.size()) == digest);
    w->publish();
    CHECK(store.read_blob(digest, 8 << 20) == content);
  }
  {
    auto w = store.new_blob();
    w->hash_in_background();
    write_pieces(*w, 0, content.size() - 1);
    w->write(kiln::as_bytes("?"));
    CHECK_THROWS_WITH(w->seal(digest), Catch::Contains("digest mismatch"));
  }
  {
    // Dropped mid-stream: the hashing thread stops with it.
    auto w = store.new_blob();
    w->hash_in_background();
    write_pieces(*w, 0, 100000);
  }
  // A resumed download: what the first writer left is hashed when the second opens it, the rest
  // in the background.
  kiln::Digest resumed = kiln::sha256_of(content + "resumed");
  std::string whole = content + "resumed";
  {
    auto w = store.resumable_blob(resumed, whole.size());
    w->hash_in_background();
    w->write(kiln::as_bytes(std::string_view(whole).substr(0, 1 << 20)));
  }
  auto w = store.resumable_blob(resumed, whole.size());
  REQUIRE(w->resumed_from() == 1 << 20);
  w->hash_in_background();
  w->write(kiln::as_bytes(std::string_view(whole).substr(1 << 20)));
  CHECK(w->seal() == resumed);
}

TEST_CASE("a blob announced at N bytes refuses byte N+1 as it arrives, and nothing is published", "[store]") {
  ScratchStore s;
  kiln::Store store(s.root());
  std::string blobs = store.layout_dir() + "/blobs/sha256";
  auto file_size = [](const kiln::Store::BlobWriter& w) {
    struct stat st {};
    REQUIRE(::fstat(w.fd(), &st) == 0);
    return st.st_size;
  };
  auto refusal = [](auto&& write) -> std::string {
    try {
      write();
    } catch (const kiln::InvalidInputError& e) {
      return e.what();
    }
    return "<no InvalidInputError>";
  };
  kiln::Digest hello = kiln::sha256_of("hello");

  SECTION("byte by byte: the sixth byte is refused by write()") {
    auto w = store.new_blob({.size = 5, .digest = hello});
    for (char c : std::string_view("hello")) w->write(kiln::as_bytes(std::string_view(&c, 1)));
    CHECK(refusal([&] { w->write(kiln::as_bytes("!")); }) ==
          fmt::format("blob {}: more than the expected 5 bytes", hello));
    CHECK(file_size(*w) == 5);
    CHECK(w->size() == 5);
    CHECK_THROWS_WITH(w->seal(), fmt::format("blob {}: sealed after a failed write", hello));
  }
  SECTION("a chunk that crosses the limit is refused whole, and names a blob of unknown digest as new") {
    auto w = store.new_blob({.size = 5});
    w->write(kiln::as_bytes("hel"));
    CHECK(refusal([&] { w->write(kiln::as_bytes("lo!")); }) == "new blob: more than the expected 5 bytes");
    CHECK(file_size(*w) == 3);
    CHECK_THROWS_WITH(w->write(kiln::as_bytes("lo")), "new blob: written to after a failed write");
  }
  SECTION("exactly N bytes seal against the expectation; fewer are a size mismatch") {
    auto w = store.new_blob({.size = 5, .digest = hello});
    w->write(kiln::as_bytes("hello"));
    CHECK(w->seal() == hello);
    auto short_blob = store.new_blob({.size = 6});
    short_blob->write(kiln::as_bytes("hello"));
    CHECK(refusal([&] { short_blob->seal(); }) ==
          fmt::format("blob {}: size mismatch (expected 6 bytes, got 5)", hello));
    auto forged = store.new_blob({.size = 5, .digest = kiln::sha256_of("olleh")});
    forged->write(kiln::as_bytes("hello"));
    CHECK_THAT(refusal([&] { forged->seal(); }), Catch::Contains("digest mismatch"));
  }
  CHECK(count_files(blobs) == 0);
}

TEST_CASE("the store is an OCI layout with names in index.json", "[store]") {
  ScratchStore s;
  kiln::Store store(s.root());
  CHECK(kiln::read_file_capped(store.layout_dir() + "/oci-layout", 100, "oci-layout") ==
        R"({"imageLayoutVersion":"1.0.0"})");
  auto a = put_image(store, "2024-01-01T00:00:00Z");
  auto b = put_image(store, "2024-01-02T00:00:00Z");
  store.set_name(a, kiln::Reference::parse("busybox"));
  store.set_name(a, kiln::Reference::parse("busybox:other"));
  std::string index = kiln::read_file_capped(store.layout_dir() + "/index.json", 1 << 20, "index");
  CHECK_THAT(index,
             Catch::Contains(R"("org.opencontainers.image.ref.name":"docker.io/library/busybox:latest")"));

  auto images = store.images();
  REQUIRE(images.size() == 1);
  CHECK(images[0].names.size() == 2);
  CHECK(store.resolve("busybox").manifest_descriptor.digest == a.digest);
  CHECK(store.resolve(images[0].id().hex().substr(0, 8)).id() == images[0].id());
  CHECK(store.resolve(images[0].id().str()).id() == images[0].id());
  CHECK_THROWS_WITH(store.resolve("nothing"), "no such image: `nothing`");

  // Moving a name leaves the previous holder untagged if that was its last name.
  store.set_name(b, kiln::Reference::parse("busybox:other"));
  store.set_name(b, kiln::Reference::parse("busybox:latest"));
  images = store.images();
  REQUIRE(images.size() == 2);
  auto untagged =
      std::find_if(images.begin(), images.end(), [](const kiln::Image& i) { return i.names.empty(); });
  REQUIRE(untagged != images.end());
  CHECK(untagged->manifest_descriptor.digest == a.digest);

  CHECK(store.remove_name(kiln::Reference::parse("busybox:other"), false));
  CHECK_FALSE(store.remove_name(kiln::Reference::parse("busybox:other"), false));
  store.remove_image(a.digest);
  CHECK(store.images().size() == 1);
}

TEST_CASE("a name resolves to its image whatever state other images are in", "[store]") {
  ScratchStore s;
  kiln::Store store(s.root());
  auto good = put_image(store, "2024-01-01T00:00:00Z");
  auto broken = put_image(store, "2024-01-02T00:00:00Z");
  store.set_name(good, kiln::Reference::parse("good"));
  store.set_name(broken, kiln::Reference::parse("broken"));
  // The broken image's manifest no longer matches its digest.
  std::string manifest = store.layout_dir() + "/blobs/sha256/" + broken.digest.hex();
  fs::permissions(manifest, fs::perms::owner_write, fs::perm_options::add);
  kiln::write_file_atomic(manifest, "{}", kiln::Durability::Volatile);

  CHECK(store.resolve("good").manifest_descriptor.digest == good.digest);
  CHECK(store.resolve("good").names == std::vector{kiln::Reference::parse("good")});
  // By a repo digest too.
  kiln::Reference by_digest = kiln::Reference::parse("good@" + kiln::sha256_of("index").str());
  store.add_repo_digest(store.resolve("good").id(), by_digest);
  CHECK(store.resolve(by_digest.str()).manifest_descriptor.digest == good.digest);
  CHECK_THROWS_WITH(store.resolve("broken"), Catch::Contains("does not match its digest"));
}

TEST_CASE("prune removes unreferenced blobs and leftovers of crashed writers", "[store]") {
  ScratchStore s;
  kiln::Digest orphan = kiln::sha256_of("orphan");
  std::optional<kiln::Descriptor> kept_holder;
  {
    kiln::Store store(s.root());
    kept_holder = put_image(store, "2024-01-01T00:00:00Z");
    const auto& kept = *kept_holder;
    store.set_name(kept, kiln::Reference::parse("kept"));
    store.put_blob("orphan");
    kiln::write_file_atomic(store.tmp_dir() + "/leftover", "x");
  }
  const auto& kept = *kept_holder;
  kiln::Store store(s.root(), kiln::Store::Access::Exclusive);
  kiln::PruneReport r = store.prune();
  REQUIRE(r.deleted_blobs.size() == 1);
  CHECK(r.deleted_blobs[0] == orphan);
  CHECK(r.reclaimed_bytes >= 6);
  CHECK_FALSE(store.has_blob(orphan));
  CHECK(store.has_blob(kept.digest));
  CHECK(count_files(store.tmp_dir()) == 0);
  CHECK(store.resolve("kept").manifest_descriptor.digest == kept.digest);
}

TEST_CASE("a repo digest finds its image, belongs to one image, and goes with it", "[store]") {
  ScratchStore s;
  std::optional<kiln::Digest> a_id, b_id;
  // An index's digest, under which a registry holds the images (not a manifest in the store).
  kiln::Reference by_index = kiln::Reference::parse("registry.test/app@" + kiln::sha256_of("index").str());
  {
    kiln::Store store(s.root());
    auto a = put_image(store, "2024-01-01T00:00:00Z");
    auto b = put_image(store, "2024-01-02T00:00:00Z");
    store.set_name(a, kiln::Reference::parse("registry.test/app:1"));
    store.set_name(b, std::nullopt);
    a_id = store.resolve("registry.test/app:1").id();
    b_id = store.resolve(b.digest.str()).id();
    CHECK_THROWS_AS(store.resolve(by_index.str()), kiln::NotFoundError);

    store.add_repo_digest(*a_id, by_index);
    store.add_repo_digest(*a_id, by_index);  // recorded once
    CHECK(store.repo_digests(*a_id) == std::vector{by_index});
    CHECK(store.resolve(by_index.str()).id() == a_id);
    // A tag beside the digest is not part of it; another repository's digest is another reference.
    CHECK(store.resolve("registry.test/app:other@" + by_index.digest()->str()).id() == a_id);
    CHECK_THROWS_AS(store.resolve("registry.test/else@" + by_index.digest()->str()), kiln::NotFoundError);

    // Given to another image, it leaves the first (Docker's reference store holds one image per
    // reference): the untagged image is found by it now.
    store.add_repo_digest(*b_id, by_index);
    CHECK(store.repo_digests(*a_id).empty());
    CHECK(store.resolve(by_index.str()).id() == b_id);

    CHECK(store.remove_repo_digest(by_index));
    CHECK_FALSE(store.remove_repo_digest(by_index));
    CHECK(store.repo_digests(*b_id).empty());
    CHECK_THROWS_AS(store.resolve(by_index.str()), kiln::NotFoundError);

    store.add_repo_digest(*b_id, by_index);
    store.remove_image(b.digest);
    CHECK_THROWS_AS(store.resolve(by_index.str()), kiln::NotFoundError);  // the record alone finds nothing
  }
  kiln::Store store(s.root(), kiln::Store::Access::Exclusive);
  store.prune();
  CHECK_FALSE(fs::exists(s.root() + "/registry/digests/" + b_id->hex()));  // its config went
}

TEST_CASE("several processes can name images in one store at once", "[store]") {
  ScratchStore s;
  { kiln::Store store(s.root()); }
  constexpr int kProcesses = 6;
  constexpr int kNamesEach = 15;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        kiln::Store store(s.root());
        for (int i = 0; i < kNamesEach; ++i) {
          auto d = put_image(store, "2024-01-01T00:00:0" + std::to_string(p) + "Z");
          store.set_name(d, kiln::Reference::parse("p" + std::to_string(p) + ":" + std::to_string(i)));
        }
        _exit(0);
      } catch (...) {
        _exit(1);
      }
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  kiln::Store store(s.root());
  size_t names = 0;
  for (const auto& img : store.images()) names += img.names.size();
  CHECK(names == kProcesses * kNamesEach);  // no update lost to a race on index.json
}

TEST_CASE("exclusive access is taken only when no one else has the store open", "[store]") {
  ScratchStore s;
  {
    kiln::Store shared(s.root());
    // flock conflicts between open file descriptions, so a second open in this process counts.
    CHECK_FALSE(kiln::Store::try_open_exclusive(s.root()).has_value());
  }
  auto exclusive = kiln::Store::try_open_exclusive(s.root() + "/");
  REQUIRE(exclusive.has_value());
  CHECK(exclusive->root() == s.root());
  CHECK_NOTHROW(exclusive->prune());
  CHECK_FALSE(kiln::Store::try_open_exclusive(s.root()).has_value());
}
