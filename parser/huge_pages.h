// Large arrays that are filled once, backed by huge pages where the kernel offers them on request
// (transparent_hugepage set to madvise). On machines where each first touch of a 4 KiB page costs
// microseconds (virtual machines especially), one 2 MiB fault replaces hundreds.
#pragma once

#include <cstddef>
#include <vector>

namespace kiln::parser {

// Advises the whole 2 MiB pages inside [data, data + bytes). A kernel without transparent huge
// pages ignores the advice; nothing else changes.
void advise_huge_pages(void* data, std::size_t bytes);

// Reserves room for `count` elements and advises it before anything is written to it.
template <typename T>
void reserve_on_huge_pages(std::vector<T>& vector, std::size_t count) {
  vector.reserve(count);
  advise_huge_pages(vector.data(), vector.capacity() * sizeof(T));
}

}  // namespace kiln::parser
