#include "parser/dockerfile.h"

#include <catch2/catch.hpp>

using namespace kiln::parser;

TEST_CASE("an instruction copies as a value, its ONBUILD trigger included", "[parser][dockerfile]") {
  Dockerfile file = parse_dockerfile("FROM scratch\nONBUILD RUN make\n");
  const Instruction& onbuild = file.instructions.at(1);
  REQUIRE(onbuild.trigger);
  Instruction copy = onbuild;
  REQUIRE(copy.trigger);
  CHECK(copy.trigger.get() != onbuild.trigger.get());
  copy.trigger->arguments.front() = "changed";
  CHECK(onbuild.trigger->arguments.front() == "make");
  Instruction assigned;
  assigned = copy;
  CHECK(assigned.trigger->arguments.front() == "changed");
  Instruction moved = std::move(copy);
  CHECK(moved.trigger->keyword == Keyword::kRun);
}
