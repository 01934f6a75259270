// The CPU implementation of fastpid::broja_solve (registered in csrc/fastpid.cpp).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace fastpid {

// Solves a batch p (B, n1, n2, ny) of joints, float64, contiguous, on the CPU:
// (lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2) float64,
//  iterations (B,) int64, converged (B,) bool), as fastpid.solver.solve.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cpu(const at::Tensor& p, double tol,
                                                                                       int64_t max_iter,
                                                                                       int64_t patience);

namespace cpu {

// The copy of the solver broja_solve_cpu runs: "avx2" (AVX2 + FMA, where the
// processor has both) or "baseline"; FASTPID_CPU_ISA=baseline forces the latter.
const char* instruction_set();

// The broja::Elimination (as an int) of an n1 × n2 × ny joint's Newton systems:
// broja::choose_elimination's, unless FASTPID_ELIMINATION=side or =pairs forces one.
int elimination(int n1, int n2, int ny);

// The joints of a batch p (B, n1, n2, ny) that the CPU ops take in lanes
// (csrc/cpu/lanes.h), in_lanes, and the others, alone: in lanes go joints of at
// most kLaneMaxDuals dual variables (n1 + n2) ny whose marginals P1, P2 have no
// zero, where the copy of the solver has lanes (has_lanes: the AVX2 copy; in
// the baseline one 32-byte vectors are pairs of SSE2 ones and exp/log scalar
// calls, slower than one joint at a time) and FASTPID_CPU_LANES is not 0 (tests
// compare the two, benchmarks time them).
void split_for_lanes(const double* p, int64_t batch, int64_t n1, int64_t n2, int64_t ny, bool has_lanes,
                     std::vector<int64_t>& in_lanes, std::vector<int64_t>& alone);

// f(begin, end) on the joints of `joints` (B of them) in parallel, in chunks of
// whole groups of `group` joints and at least `grain` joints.
template <typename F>
void parallel_over(const std::vector<int64_t>& joints, int64_t group, int64_t grain, const F& f) {
  const int64_t count = int64_t(joints.size()), groups = (count + group - 1) / group;
  at::parallel_for(0, groups, std::max<int64_t>(1, grain / group),
                   [&](int64_t begin, int64_t end) { f(joints.data(), begin * group, std::min(end * group, count)); });
}

}  // namespace cpu
}  // namespace fastpid
