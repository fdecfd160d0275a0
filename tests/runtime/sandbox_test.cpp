// run_sandbox called again and again in one process, as the builder will call it for each RUN.
#include "runtime/sandbox.h"

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "layerstore/files.h"
#include "runtime/spec.h"
#include "tests/skip.h"

namespace {

// A root with Debian's busybox-static as /bin/busybox, /bin/sh and /bin/true, and the directories
// Docker's mounts need; the test is skipped when this host cannot run the sandbox.
std::string busybox_root(const kiln::TempDir& dir) {
  if (::geteuid() != 0) KILN_SKIP("needs root for namespaces and mounts");
  if (::access("/bin/busybox", X_OK) != 0) KILN_SKIP("needs /bin/busybox (busybox-static)");
  std::string root = dir.path() + "/rootfs";
  for (const char* sub : {"", "/bin", "/proc", "/dev", "/sys", "/etc", "/tmp"})
    kiln::make_dirs(root + sub, 0755);
  std::filesystem::copy_file("/bin/busybox", root + "/bin/busybox");
  for (const char* applet : {"sh", "true"})
    std::filesystem::create_symlink("busybox", root + "/bin/" + applet);
  return root;
}

size_t heap_in_use() {
  return ::mallinfo2().uordblks;
}

}  // namespace

TEST_CASE("the sandbox leaves nothing of its processes allocated in kiln", "[sandbox]") {
  kiln::TempDir dir{"/tmp", "kiln-sandbox-test-"};
  std::string root = busybox_root(dir);
  nlohmann::json spec = kiln::runtime::default_spec(root);
  kiln::runtime::SandboxOptions options;
  options.bundle_dir = dir.path();

  auto run = [&](std::vector<std::string> args) {
    spec["process"]["args"] = args;
    return kiln::runtime::run_sandbox(spec, options).code;
  };
  auto round = [&] {
    CHECK(run({"/bin/true"}) == 0);
    CHECK(run({"sh", "-c", "exit 7"}) == 7);
    // The failure travels as an exception in the container's process before it exits.
    CHECK(run({"/no/such/command"}) == kiln::runtime::kExitCommandNotFound);
  };
  // The first round allocates what stays for good (stdio's buffers and the like).
  round();
  size_t before = heap_in_use();
  for (int i = 0; i < 10; ++i) round();
  // Under a sanitizer the process runs in a copy of kiln's memory and mallinfo2 does not see the
  // sanitizer's heap; AddressSanitizer's leak check covers this instead.
  CHECK(heap_in_use() == before);
}
