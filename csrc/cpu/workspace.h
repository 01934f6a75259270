// Scratch memory of the CPU ops (csrc/broja.h's workspace), one buffer per thread.
#pragma once

#include <stddef.h>

namespace fastpid {
namespace cpu {

// At least `bytes` bytes of uninitialised memory for the calling thread, valid
// until its next call.  The buffer only grows and is kept between calls (the
// threads of at::parallel_for persist), so that solving a joint or a small
// batch does not map, fault in and zero fresh pages every time: for one
// 20×20×6 joint that cost about as much as the Python side of fastpid.pid.
// Defined in workspace.cpp, compiled for the baseline instruction set.
char* thread_workspace(size_t bytes);

}  // namespace cpu
}  // namespace fastpid
