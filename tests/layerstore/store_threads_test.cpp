// The store from several threads at once, as a build's stages use it: a layer two threads need is
// unpacked into one snapshot, blobs and build cache records written side by side all land, names
// set at once all stay. Run under KILN_SANITIZE=thread too.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/archive_io.h"
#include "layerstore/files.h"
#include "layerstore/image_ops.h"
#include "layerstore/store.h"

namespace fs = std::filesystem;

namespace {

constexpr int kThreads = 8;

struct ScratchStore {
  kiln::TempDir dir{"/dev/shm", "kiln-store-threads-"};
  std::string root() const { return dir.path() + "/store"; }
};

// A one-layer image with a few files, imported the way `kiln import` does it.
kiln::Image one_layer_image(kiln::Store& store) {
  kiln::StringWriter writer;
  {
    kiln::ArchiveWriter archive(writer, "test layer");
    archive.add_directory("etc/");
    for (int i = 0; i < 50; ++i)
      archive.add_file("etc/file" + std::to_string(i), std::string(1000, 'a' + i % 26));
    archive.finish();
  }
  kiln::StringReader reader(writer.text);
  kiln::ImportOptions options;
  options.name = kiln::Reference::parse("threads:1");
  kiln::import_image(store, reader, options);
  return store.resolve("threads:1");
}

// Runs body(i) for i = 0 .. kThreads-1, each on its own thread, all at once; returns what each
// threw ("" for nothing).
std::vector<std::string> on_threads(const std::function<void(int)>& body) {
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      try {
        body(i);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace

TEST_CASE("threads that need one layer at once share one snapshot", "[store][threads]") {
  ScratchStore scratch;
  kiln::Store store(scratch.root());
  kiln::prepare_archive_locale();
  kiln::Image image = one_layer_image(store);
  std::vector<std::vector<std::string>> dirs(kThreads);
  std::vector<std::string> errors = on_threads([&](int i) { dirs[i] = store.snapshot_dirs(image); });
  for (int i = 0; i < kThreads; ++i) {
    INFO("thread " << i);
    CHECK(errors[i].empty());
    CHECK(dirs[i] == dirs[0]);
  }
  REQUIRE(dirs[0].size() == 1);
  CHECK(fs::exists(dirs[0][0] + "/etc/file7"));
  // Nothing half-made beside the one snapshot: no thread unpacked a second copy and threw it away.
  size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(scratch.root() + "/snapshots")) {
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("blobs, cache records and names written from several threads all land", "[store][threads]") {
  ScratchStore scratch;
  kiln::Store store(scratch.root());
  std::vector<kiln::Digest> digests(kThreads, kiln::sha256_of(""));
  std::vector<std::string> errors = on_threads([&](int i) {
    // One blob every thread writes, one of its own.
    store.put_blob("shared content");
    digests[i] = store.put_blob("content of thread " + std::to_string(i));
    std::string key = kiln::sha256_of("key " + std::to_string(i)).hex();
    store.put_cache_record(key, {{"thread", i}}, {digests[i]}, {});
    auto record = store.get_cache_record(key);
    if (!record || (*record)["thread"] != i) throw std::runtime_error("record not read back");
    std::string config = R"({"architecture":"amd64","os":"linux","created":"2024-01-0)" +
                         std::to_string(i + 1) + R"(T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}})";
    kiln::Manifest m{std::string(kiln::media::kOciManifest),
                     {std::string(kiln::media::kOciConfig),
                      store.put_blob(config),
                      static_cast<int64_t>(config.size()),
                      {},
                      {}},
                     {},
                     {}};
    std::string bytes = m.serialize();
    kiln::Descriptor manifest{std::string(kiln::media::kOciManifest),
                              store.put_blob(bytes),
                              static_cast<int64_t>(bytes.size()),
                              {},
                              {}};
    store.set_name(manifest, kiln::Reference::parse("name" + std::to_string(i) + ":1"));
  });
  for (int i = 0; i < kThreads; ++i) {
    INFO("thread " << i);
    CHECK(errors[i].empty());
    CHECK(store.has_blob(digests[i]));
    CHECK(store.get_cache_record(kiln::sha256_of("key " + std::to_string(i)).hex()).has_value());
  }
  CHECK(store.has_blob(kiln::sha256_of("shared content")));
  // Every name survived the others' updates of index.json.
  std::set<std::string> names;
  for (const kiln::Image& image : store.images()) {
    for (const auto& name : image.names) names.insert(name.familiar());
  }
  for (int i = 0; i < kThreads; ++i) CHECK(names.count("name" + std::to_string(i) + ":1") == 1);
}
