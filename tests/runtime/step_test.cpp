// run_step from several threads at once, as the builder's stages call it: every step gets its own
// output and exit code, none waits for another's pipes, a cancelled step dies at once, and what a
// step writes lands in its own upper directory. Run under KILN_SANITIZE=thread too.
#include "runtime/step.h"

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/files.h"
#include "runtime/capabilities.h"
#include "tests/skip.h"

namespace {

// A layer with Debian's busybox-static as /bin/busybox and a few applets.
std::string busybox_layer(const kiln::TempDir& dir) {
  if (::geteuid() != 0) KILN_SKIP("needs root for namespaces and mounts");
  if (::access("/bin/busybox", X_OK) != 0) KILN_SKIP("needs /bin/busybox (busybox-static)");
  std::string layer = dir.path() + "/layer";
  for (const char* sub : {"", "/bin", "/tmp", "/etc"}) kiln::make_dirs(layer + sub, 0755);
  std::filesystem::copy_file("/bin/busybox", layer + "/bin/busybox");
  for (const char* applet : {"sh", "echo", "sleep", "cat", "true"}) {
    std::filesystem::create_symlink("busybox", layer + "/bin/" + applet);
  }
  return layer;
}

class Collect : public kiln::runtime::StepOutput {
 public:
  void write(int stream, std::string_view data) override {
    std::lock_guard lock(mutex_);
    (stream == 1 ? out : err).append(data);
  }
  // While the step still writes: under the lock.
  bool out_contains(std::string_view text) {
    std::lock_guard lock(mutex_);
    return out.find(text) != std::string::npos;
  }
  std::string out, err;

 private:
  std::mutex mutex_;
};

kiln::runtime::StepSpec make_step(const kiln::TempDir& dir, const std::string& layer, const std::string& name,
                                  std::vector<std::string> args) {
  kiln::runtime::StepSpec step;
  std::string base = dir.path() + "/" + name;
  step.lowers = {layer};
  step.upper_dir = base + "/upper";
  step.work_dir = base + "/work";
  step.dir = base + "/step";
  for (const std::string& d : {step.upper_dir, step.work_dir, step.dir}) kiln::make_dirs(d, 0755);
  step.args = std::move(args);
  step.env = {"PATH=/bin"};
  step.hostname = "buildkitsandbox";
  step.host_network = true;
  step.capabilities = kiln::runtime::default_capabilities();
  return step;
}

}  // namespace

TEST_CASE("steps run from several threads at once keep their own output, exit code and layer", "[step]") {
  kiln::TempDir dir{"/tmp", "kiln-step-test-"};
  std::string layer = busybox_layer(dir);
  constexpr int kSteps = 6;
  std::vector<Collect> outputs(kSteps);
  std::vector<int> codes(kSteps, -1);
  std::vector<std::string> errors(kSteps);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSteps; ++i) {
    threads.emplace_back([&, i] {
      try {
        std::string script = "echo out-" + std::to_string(i) + "; echo err-" + std::to_string(i) +
                             " >&2; echo " + std::to_string(i) + " > /tmp/mine; exit " + std::to_string(i);
        kiln::runtime::StepSpec step = make_step(dir, layer, "s" + std::to_string(i), {"sh", "-c", script});
        step.output = &outputs[i];
        codes[i] = kiln::runtime::run_step(step).code;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kSteps; ++i) {
    INFO("step " << i);
    CHECK(errors[i].empty());
    CHECK(codes[i] == i);
    CHECK(outputs[i].out == "out-" + std::to_string(i) + "\n");
    CHECK(outputs[i].err == "err-" + std::to_string(i) + "\n");
    std::string mine =
        kiln::read_file_capped(dir.path() + "/s" + std::to_string(i) + "/upper/tmp/mine", 100, "mine");
    CHECK(mine == std::to_string(i) + "\n");
  }
}

TEST_CASE("a cancelled step is killed at once, with what it started", "[step]") {
  kiln::TempDir dir{"/tmp", "kiln-step-test-"};
  std::string layer = busybox_layer(dir);
  kiln::Fd cancel(::eventfd(0, EFD_CLOEXEC));
  REQUIRE(cancel.valid());
  Collect output;
  kiln::runtime::StepSpec step =
      make_step(dir, layer, "c", {"sh", "-c", "sleep 60 & echo started; sleep 60"});
  step.output = &output;
  step.cancel_fd = cancel.get();
  std::atomic<bool> done{false};
  kiln::runtime::StepExit exit;
  auto started = std::chrono::steady_clock::now();
  std::thread runner([&] {
    exit = kiln::runtime::run_step(step);
    done = true;
  });
  // Cancel once the step runs; bounded wait.
  for (int i = 0; i < 100 && !output.out_contains("started"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  uint64_t one = 1;
  REQUIRE(::write(cancel.get(), &one, sizeof one) == sizeof one);
  runner.join();
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(exit.canceled);
  CHECK(exit.code == 128 + 9);
  CHECK(took < std::chrono::seconds(10));
}
