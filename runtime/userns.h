// A rootless command's user namespace: the caller becomes root of a new user namespace whose IDs
// 1..N are its subordinate range (/etc/subuid, /etc/subgid, through newuidmap and newgidmap), as
// podman does before it touches its storage. Inside, kiln unpacks layers with their owners, chowns
// copied files, reads every file of a layer it writes and mounts overlay (userxattr) for its steps,
// as root does outside.
#pragma once

namespace kiln::runtime {

// Whether this process is root of a user namespace other than the initial one.
bool in_user_namespace();

// Moves the rest of the command into a new user namespace. The process forks: the child returns
// from this function as root of the namespace and goes on with the command; the parent passes
// SIGINT, SIGTERM, SIGHUP and SIGQUIT on to it and exits with its status, never returning. As root
// (isolation=rootless), IDs 0..65535 map to themselves. Must be called before any thread starts.
// Throws SandboxError when the kernel or the ID helpers refuse (with the usual causes named).
void become_root_in_user_namespace();

}  // namespace kiln::runtime
