// Reading the table files Go's own answers were recorded in (testdata/builder, made by
// tests/builder/oracle): fields separated by a character, bytes outside 0x21-0x7e (and `%`, `|`,
// `#`) written as %XX.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::test {

inline std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

inline std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  for (std::size_t bar; (bar = line.find(separator, start)) != std::string::npos; start = bar + 1) {
    fields.push_back(line.substr(start, bar - start));
  }
  fields.push_back(line.substr(start));
  return fields;
}

}  // namespace kiln::test
