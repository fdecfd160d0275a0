// The unit tests' main: Catch2's, plus the exit code 77 that makes ctest report a skipped test.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "runtime/step.h"
#include "tests/skip.h"

namespace kiln::test {
namespace {

int test_cases_run = 0;
int test_cases_skipped = 0;
bool current_test_case_skipped = false;

// Counts the test cases that ran and those that KILN_SKIP ended.
class SkipCounter : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    current_test_case_skipped = false;
    TestEventListenerBase::testCaseStarting(info);
  }

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    ++test_cases_run;
    if (current_test_case_skipped) ++test_cases_skipped;
    TestEventListenerBase::testCaseEnded(stats);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SkipCounter)

void mark_skipped() {
  current_test_case_skipped = true;
}

}  // namespace kiln::test

int main(int argc, char** argv) {
  // The step runner's tests start this binary again as a step's supervisor (runtime/step.h).
  kiln::runtime::run_step_supervisor_if_asked(argc, argv);
  // Catch's code is the number of failed assertions (or, for --list-test-names-only, which
  // catch_discover_tests reads, the number of tests listed), and is passed on unchanged...
  int code = Catch::Session().run(argc, argv);
  using kiln::test::test_cases_run, kiln::test::test_cases_skipped;
  if (test_cases_run == 0) return code;
  if (code == 0 && test_cases_skipped == test_cases_run) return 77;
  // ...except that 77 failed assertions must not read as a skip.
  return code == 77 ? 78 : code;
}
