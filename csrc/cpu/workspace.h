// Scratch memory of the CPU ops (csrc/broja.h's workspace).
#pragma once

#include <stddef.h>

namespace fastpid {
namespace cpu {

// At least `bytes` bytes of uninitialised memory for the calling thread, until
// release_workspace.  Up to kCachedWorkspaceBytes come from a buffer kept per
// thread (the threads of at::parallel_for persist), so that solving a joint or
// a small batch does not map, fault in and zero fresh pages every call; larger
// requests, and one made while the thread's buffer is in use, get memory of
// their own, freed on release.  Defined in workspace.cpp, compiled for the
// baseline instruction set.
constexpr size_t kCachedWorkspaceBytes = size_t(2) << 20;  // 64×64×4 and 32×32×8 joints fit
char* acquire_workspace(size_t bytes);
void release_workspace(char* workspace);

}  // namespace cpu
}  // namespace fastpid
