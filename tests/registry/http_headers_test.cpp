#include "registry/http_headers.h"

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using kiln::registry::content_disposition_filename;
using kiln::registry::http_status_text;
using kiln::registry::parse_http_date;

// The expected answers are Go 1.19's (http.ParseTime; mime.ParseMediaType then filepath.Base, as
// BuildKit's HTTP source reads a file name), quirks included: names compared without case, the
// weekday never checked against the date, a one-digit hour accepted, two-digit years from 69 on
// in the 1900s.
TEST_CASE("HTTP dates parse as Go's http.ParseTime parses them", "[http]") {
  const std::vector<std::pair<std::string, std::optional<int64_t>>> cases = {
      {"Sun, 06 Nov 1994 08:49:37 GMT", 784111777},
      {"Sunday, 06-Nov-94 08:49:37 GMT", 784111777},
      {"Sun Nov  6 08:49:37 1994", 784111777},
      {"Thu, 01 Jan 1970 00:00:00 GMT", 0},
      {"Tue, 29 Feb 2000 12:00:00 GMT", 951825600},
      {"Wed, 30 Feb 2000 12:00:00 GMT", std::nullopt},
      {"Sun, 6 Nov 1994 08:49:37 GMT", std::nullopt},
      {"Sun, 06 Nov 1994 08:49:37 UTC", std::nullopt},
      {"", std::nullopt},
      {"yesterday", std::nullopt},
      {"Sun, 06 Nov 1994 08:49:37 GMT extra", std::nullopt},
      {"sun, 06 nov 1994 08:49:37 GMT", 784111777},
      {"Sun, 06 Nov 1994 8:49:37 GMT", 784111777},
      {"Mon, 06 Nov 1994 08:49:37 GMT", 784111777},
      {"Sunday, 06-Nov-68 08:49:37 GMT", 3119417377},
      {"Sunday, 06-Nov-69 08:49:37 GMT", -4806623},
      {"Sun Nov 16 08:49:37 1994", 784975777},
      {"Sun Nov 6 08:49:37 1994", 784111777},
      {"Fri, 31 Dec 9999 23:59:59 GMT", 253402300799},
      {"Sun, 06 Nov 1994 24:00:00 GMT", std::nullopt},
      {"Sun, 06 Nov 1994 08:60:00 GMT", std::nullopt},
      {"Sun, 06 Nov 1994 08:49:37 gmt", std::nullopt},
      {"Sunday, 06-Nov-94 08:49:37 UTC", 784111777},
      {"Xyz, 06 Nov 1994 08:49:37 GMT", std::nullopt},
  };
  for (const auto& [text, expected] : cases) {
    INFO(text);
    CHECK(parse_http_date(text) == expected);
  }
}

TEST_CASE("Content-Disposition gives BuildKit's file name", "[http]") {
  const std::vector<std::pair<std::string, std::optional<std::string>>> cases = {
      {R"(attachment; filename="a.tgz")", "a.tgz"},
      {R"(attachment; filename=a.tgz)", "a.tgz"},
      {R"(attachment; filename*=UTF-8''na%C3%AFve%20file.txt)", "naïve file.txt"},
      {R"(attachment; filename="dir/sub/x.bin")", "x.bin"},
      {R"(attachment; filename="dir/")", std::nullopt},
      {R"(inline)", std::nullopt},
      {R"(attachment; filename="a"; filename="b")", std::nullopt},
      {R"(attachment; filename="unterminated)", std::nullopt},
      {R"(attachment; filename="a\"b.txt")", "a\"b.txt"},
      {R"(attachment; filename="plain.txt"; filename*=UTF-8''ext.txt)", "ext.txt"},
      {R"(attachment;filename=x.txt;)", "x.txt"},
      {R"(ATTACHMENT; FILENAME="Up.TXT")", "Up.TXT"},
      {R"(attachment; filename*=ISO-8859-1''x.txt)", std::nullopt},
      {R"(; filename=a)", std::nullopt},
      {R"(attachment; filename=)", std::nullopt},
      {R"(attachment; filename=a b)", std::nullopt},
      {R"(attachment; name=x)", std::nullopt},
  };
  for (const auto& [value, expected] : cases) {
    INFO(value);
    CHECK(content_disposition_filename(value) == expected);
  }
}

TEST_CASE("status codes have Go's reason phrases", "[http]") {
  CHECK(http_status_text(404) == "Not Found");
  CHECK(http_status_text(503) == "Service Unavailable");
  CHECK(http_status_text(299).empty());
}
