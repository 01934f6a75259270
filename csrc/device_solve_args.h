// The batch the CUDA solve kernels take: csrc/broja_interleaved.h (a thread per
// joint) and csrc/broja_block.h (a thread block per joint).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace fastpid {

// A batch (B, n1, n2, ny) of float64 joints, their workspaces (workspace_bytes
// each: a group's of 32 interleaved joints, or a team's) and the outputs of
// fastpid::broja_solve.
struct DeviceSolveArgs {
  const double* p;
  int64_t batch;
  int n1, n2, ny;
  double tol;
  int max_iter, patience;
  char* workspace;
  size_t workspace_bytes;
  double *lam1, *lam2, *w;
  int64_t* iterations;
  bool* converged;
  int lanes;  // threads per joint: the block kernel's team, 1 for a thread per joint
};

}  // namespace fastpid
