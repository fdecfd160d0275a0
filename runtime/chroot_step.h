// A step without new namespaces, for hosts that allow none (kiln inside an unprivileged container
// whose seccomp profile refuses unshare and mount: kaniko's reason to exist, buildah's
// --isolation chroot). The step's layers are copied into a root directory, the process runs
// chrooted into it with the step's user, environment and working directory, and what it changed is
// found by comparing the tree with its state before (type, mode, owner, size, mtime, inode, link
// target) and written into the upper directory as an overlay layer would hold it: new and changed
// entries, whiteouts (0:0 devices) for removed ones, opaque directories for replaced ones.
//
// What it cannot give, having no namespaces: its own PID, network, hostname, /proc, /sys and
// mounts (RUN --mount is refused), and no isolation from the host beyond the chroot: for builds
// that are trusted, as under kaniko.
#pragma once

#include "runtime/step.h"

namespace kiln::runtime {

// Runs `step` chrooted (see above). Needs CAP_SYS_CHROOT, and CAP_MKNOD when the step removes
// files (whiteouts). Throws SandboxError when the step cannot be run, with the cause.
StepExit run_step_chroot(const StepSpec& step);

// Whether this process may create the namespaces a sandboxed step needs (a mount namespace as root;
// a user namespace otherwise); when not, `why` says what refused.
bool namespaces_available(std::string& why);

}  // namespace kiln::runtime
