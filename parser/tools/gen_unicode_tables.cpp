// Prints the code point tables between the GENERATED markers of parser/unicode.cpp. Not part of the
// build: ICU is a generator-time source only, so that the parser itself needs no Unicode library.
// Go's unicode.IsLetter is general category L and unicode.IsDigit is Nd; ICU 72 implements
// Unicode 15.0, the version of the Go releases BuildKit is built with.
//
//   g++ -O2 parser/tools/gen_unicode_tables.cpp -o /tmp/gen -licuuc && /tmp/gen
#include <unicode/uchar.h>

#include <cstdio>
#include <utility>
#include <vector>

namespace {

template <class Predicate>
void print_ranges(const char* name, Predicate holds) {
  std::vector<std::pair<UChar32, UChar32>> ranges;
  for (UChar32 c = 0; c <= 0x10FFFF; ++c) {
    if (!holds(c)) continue;
    if (!ranges.empty() && ranges.back().second == c - 1) {
      ranges.back().second = c;
    } else {
      ranges.push_back({c, c});
    }
  }
  std::printf("// %zu ranges\nconstexpr CodePointRange %s[] = {\n", ranges.size(), name);
  int column = 0;
  for (auto [first, last] : ranges) {
    std::printf("%s{0x%04X, 0x%04X},", column == 0 ? "    " : " ", first, last);
    if (++column == 5) {
      std::printf("\n");
      column = 0;
    }
  }
  std::printf("%s};\n\n", column != 0 ? "\n" : "");
}

}  // namespace

int main() {
  print_ranges("kLetterRanges", [](UChar32 c) { return (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0; });
  print_ranges("kDecimalDigitRanges", [](UChar32 c) { return u_charType(c) == U_DECIMAL_DIGIT_NUMBER; });
}
