// The CPU implementation of fastpid::broja_solve (registered in csrc/fastpid.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// Solves a batch p (B, n1, n2, ny) of joints, float64, contiguous, on the CPU:
// (lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2) float64,
//  iterations (B,) int64, converged (B,) bool), as fastpid.solver.solve.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cpu(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience);

namespace cpu {

// The copy of the solver broja_solve_cpu runs: "avx2" (AVX2 + FMA, where the
// processor has both) or "baseline"; FASTPID_CPU_ISA=baseline forces the latter.
const char* instruction_set();

}  // namespace cpu
}  // namespace fastpid
