// The BROJA solver for one joint: the per-joint form of fastpid/solver.py.
//
// fastpid/solver.py is the readable (batched torch) version and the reference;
// these headers run the same iteration on one joint at a time, for the compiled
// backends, with T = double, or on four joints side by side in vector lanes
// with T = Lanes (csrc/cpu/lanes.h; the CPU op's path for small joints).  They
// are plain C++ over pointers into a caller-provided workspace (no allocation,
// no STL, no exceptions, no torch types), so that a CUDA kernel can compile the
// same code: every function is FASTPID_HOST_DEVICE.  The workspace is read
// through Ptr (broja/common.h): raw pointers, or for the CUDA kernels the
// workspaces of a warp's joints interleaved (csrc/broja_interleaved.h).
//
// The algorithm, its linear algebra and its costs are in docs/pid-math.md;
// the code is split by concern:
//
//   broja/common.h       scalar helpers, masks, constants, dense kernels
//   broja/joint.h        the joint, its workspace layout, set-up and start,
//                        the choice of elimination
//   broja/certificate.h  the duality-gap certificate and the entropies
//   broja/schur.h        side elimination: E blocks, Schur complement on K
//   broja/pairs.h        pair elimination: per-y blocks, capacitance system
//   broja/iteration.h    products with M, refinement, the predictor-corrector
//                        step and solve_joint
#pragma once

#include "broja/iteration.h"
