// Backs the process heap with transparent huge pages.
//
// On the virtual machines kiln runs on in CI, the first touch of each 4 KiB page costs about
// 13 µs (measured here: 8 MiB touched page by page takes 27 ms; as four 2 MiB pages, 0.7 ms).
// Parsing a 20,000-line Dockerfile and building its graph touches about 5 MiB of fresh heap, so
// with 4 KiB pages faults were over half of its time. glibc can do this itself
// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), but tunables are read from the environment before main
// runs, and a user's environment is not ours to set.
#pragma once

namespace kiln::cli {

// Call first thing in main, on the main thread, before any large allocation. Large blocks stay on
// the heap instead of separate 4 KiB-page mappings, and the heap grows in one 256 MiB step whose
// whole 2 MiB pages are advised. Costs address space, not memory: a 2 MiB page is taken only when
// something in it is touched. Without transparent huge pages the advice is ignored.
void back_heap_with_huge_pages();

}  // namespace kiln::cli
