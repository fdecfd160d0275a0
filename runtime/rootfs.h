// A container's root filesystem as plain files: the image's layer snapshots flattened into one
// directory (whiteouts applied), for `kiln bundle` and for hosts where overlayfs cannot be
// mounted (kiln inside a container whose own storage is overlay, a kernel without overlay).
#pragma once

#include <string>
#include <vector>

namespace kiln::runtime {

// Writes the merged view of `lower_dirs` (overlay-style snapshot directories, bottom layer first)
// into the existing directory `target`, owners and modes kept (as root; a user namespace's root
// keeps the IDs its maps cover). Streams: the flattening writer and the hostile-input extractor
// are joined by a pipe. Throws kiln::Error naming what failed.
void flatten_layers(const std::vector<std::string>& lower_dirs, const std::string& target);

}  // namespace kiln::runtime
