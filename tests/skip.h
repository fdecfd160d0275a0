// KILN_SKIP: how a unit test that needs what this host or user lacks (root, a tool, a cgroup
// controller) says so. ctest then reports it as skipped, with the reason in the test's output,
// instead of passing a test that checked nothing.
#pragma once

#include <catch2/catch.hpp>

namespace kiln::test {

// Marks the running test case as skipped. test_main.cpp exits with 77, ctest's SKIP_RETURN_CODE,
// when every test case the process ran was skipped and no assertion failed (ctest runs one test
// case per process).
void mark_skipped();

}  // namespace kiln::test

// Ends the running test case as skipped; `reason` is streamed as WARN streams it. Catch2 2.x has no
// skip of its own (3.x's SKIP replaces this): the test case is left by Catch's own exception for an
// aborted test, which Catch does not count as a failure. Being an exception, it works from helpers
// and sections too and unwinds the stack, so temporary directories are removed; an assertion that
// failed before it still fails the test.
#define KILN_SKIP(reason)                  \
  do {                                     \
    WARN("skipped: " << reason);           \
    ::kiln::test::mark_skipped();          \
    throw ::Catch::TestFailureException(); \
  } while (false)
