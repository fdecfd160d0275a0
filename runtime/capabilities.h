// Linux capabilities as Docker names and grants them: the default set every container gets,
// --cap-add/--cap-drop/--privileged resolved the way Docker resolves them, and the sets applied to
// the container's process just before it runs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::runtime {

// Names as the OCI runtime spec writes them ("CAP_CHOWN"), in the kernel's numbering: every
// capability the kernel has and the calling process's bounding set holds.
std::vector<std::string> all_capabilities();
// Docker's default grant: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID,
// SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE.
std::vector<std::string> default_capabilities();

// The capability's number, or -1 for a name the kernel does not have ("CAP_" prefix required).
int capability_number(std::string_view name);

// Docker's resolution (moby's TweakCapabilities): --privileged grants every capability;
// --cap-add ALL grants every capability but those dropped; --cap-drop ALL grants only those added;
// otherwise the base set minus the dropped plus the added. Names are case-insensitive and the
// "CAP_" prefix is optional. Throws UsageError naming an unknown capability.
std::vector<std::string> resolve_capabilities(const std::vector<std::string>& base,
                                              const std::vector<std::string>& add,
                                              const std::vector<std::string>& drop, bool privileged);

// The sets for the process, as the OCI spec's process.capabilities lists them.
struct CapabilitySets {
  std::vector<std::string> bounding, effective, permitted, inheritable, ambient;
};

// Drops from the calling process's bounding set every capability the sets' bounding list lacks.
// Needs CAP_SETPCAP: call before changing to the container's user. Returns 0 or the errno of the
// call that failed (the caller is a freshly cloned child that reports errors through a pipe, not
// by throwing).
int drop_bounding_set(const CapabilitySets& sets);

// Sets effective, permitted and inheritable, then raises the ambient ones. Call after changing to
// the container's user (with PR_SET_KEEPCAPS set before the change, so that the permitted set
// survives it) and before exec. Returns 0 or an errno, as drop_bounding_set.
int apply_capabilities(const CapabilitySets& sets);

// A mask of capability numbers, for comparing with /proc/PID/status's CapEff and friends.
std::uint64_t capability_mask(const std::vector<std::string>& names);

}  // namespace kiln::runtime
