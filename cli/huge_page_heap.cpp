#include "cli/huge_page_heap.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

namespace kiln::cli {

// Volatile, or the compiler drops the allocation as unused.
static void* volatile head_of_heap = nullptr;

void back_heap_with_huge_pages() {
  constexpr std::size_t kHeapStep = std::size_t{256} << 20;
  constexpr std::size_t kProbe = kHeapStep - (std::size_t{4} << 20);
  constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;
  // Blocks under 256 MiB come from the heap (glibc's default sends anything from 128 KiB up to its
  // own mapping), and each growth adds 256 MiB more than asked, so the advised region is one
  // mapping that later growth rarely has to leave.
  (void)::mallopt(M_MMAP_THRESHOLD, static_cast<int>(kHeapStep));
  (void)::mallopt(M_TOP_PAD, static_cast<int>(kHeapStep));
  // Grow the heap now, by more than any fresh heap has free. Volatile, or the compiler drops the
  // malloc/free pair. malloc writes nothing inside the block, only headers at its two ends, and a
  // 2 MiB page written before the advice is split into 4 KiB pages for good: so the advice covers
  // the inside of this block and no more. free keeps the heap's first 256 MiB mapped (the pad).
  void* volatile probe = std::malloc(kProbe);
  auto next_block = reinterpret_cast<std::uintptr_t>(probe);
  bool on_heap = probe != nullptr && reinterpret_cast<std::uintptr_t>(::sbrk(0)) >= next_block + kProbe;
  std::free(probe);
  std::uintptr_t begin = (next_block + kHugePage - 1) & ~(kHugePage - 1);
  std::uintptr_t end = (next_block + kProbe) & ~(kHugePage - 1);
  // A sanitizer's allocator, or a heap that cannot grow (brk refused), leaves nothing to do.
  if (!on_heap || end <= begin) return;
  // Advice only: a kernel without transparent huge pages declines it and nothing else changes.
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  // The heap starts mid-way through a 2 MiB page, and up to that boundary it can only have 4 KiB
  // pages, where the next allocations would land. One block, kept and never written, covers that
  // head so that they start on the first huge page instead.
  if (begin > next_block) head_of_heap = std::malloc(begin - next_block);
}

}  // namespace kiln::cli
