#include "parser/text.h"

#include <catch2/catch.hpp>
#include <limits>

using kiln::parser::text::parse_integer;

TEST_CASE("integers are read whole, as Go's strconv.ParseInt reads them", "[parser][text]") {
  CHECK(parse_integer("3") == 3);
  CHECK(parse_integer("+3") == 3);
  CHECK(parse_integer("-1") == -1);
  CHECK(parse_integer("0755", 8) == 0755);
  CHECK(parse_integer("9223372036854775807") == std::numeric_limits<long long>::max());
  CHECK(parse_integer("-9223372036854775808") == std::numeric_limits<long long>::min());
  CHECK_FALSE(parse_integer("9223372036854775808"));
  CHECK_FALSE(parse_integer(""));
  CHECK_FALSE(parse_integer("-"));
  CHECK_FALSE(parse_integer(" 3"));
  CHECK_FALSE(parse_integer("1-2"));
  CHECK_FALSE(parse_integer("8", 8));
}
