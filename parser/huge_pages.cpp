#include "parser/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace kiln::parser {

void advise_huge_pages(void* data, std::size_t bytes) {
  constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;
  auto start = reinterpret_cast<std::uintptr_t>(data);
  std::uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  std::uintptr_t end = (start + bytes) & ~(kHugePage - 1);
  // Advice only: a kernel that declines it leaves the memory as it was.
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace kiln::parser
