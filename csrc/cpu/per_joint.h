// The CPU ops' loops over the joints of a batch (solve, certify), compiled once
// per instruction set: for the x86-64 baseline in csrc/cpu/broja_cpu.cpp and
// csrc/cpu/broja_certificate_cpu.cpp, for AVX2 + FMA (x86-64-v3) in
// csrc/cpu/broja_cpu_avx2.cpp, each copy in the inline namespace FASTPID_ISA of
// csrc/broja.h.  The ops pick one at run time (cpu::instruction_set).
#pragma once

#include <stdint.h>

#include "../broja.h"
#include "workspace.h"

namespace fastpid {
namespace cpu {

// A batch (B, n1, n2, ny) of float64 joints and the outputs of fastpid::broja_solve.
struct SolveArgs {
  const double* p;
  int n1, n2, ny;
  double tol;
  int max_iter, patience;
  double *lam1, *lam2, *w;  // (B, n1, ny), (B, n2, ny), (B, n1, n2)
  int64_t* iterations;
  bool* converged;
};

// Solutions of a batch (B, n1, n2, ny) of float64 joints and the outputs of fastpid::broja_certificate.
struct CertifyArgs {
  const double *p, *lam1, *lam2, *w;  // (B, n1, n2, ny), (B, n1, ny), (B, n2, ny), (B, n1, n2)
  int n1, n2, ny;
  double *q, *value, *gap, *entropies;  // (B, n1, n2, ny), (B), (B), (B, 4)
};

// Solves (certifies) joints [begin, end) in one ScopedWorkspace: the
// baseline copy, and the AVX2 + FMA copy (defined on x86-64 with GCC or Clang only).
void solve_joints_baseline(const SolveArgs& args, int64_t begin, int64_t end);
void solve_joints_avx2(const SolveArgs& args, int64_t begin, int64_t end);
void certify_joints_baseline(const CertifyArgs& args, int64_t begin, int64_t end);
void certify_joints_avx2(const CertifyArgs& args, int64_t begin, int64_t end);

}  // namespace cpu

namespace broja {
inline namespace FASTPID_ISA {

// A workspace of cpu::acquire_workspace for the scope of a loop over joints
// (in the copy's namespace, like all code compiled once per instruction set).
struct ScopedWorkspace {
  explicit ScopedWorkspace(size_t bytes) : data(cpu::acquire_workspace(bytes)) {}
  ~ScopedWorkspace() { cpu::release_workspace(data); }
  ScopedWorkspace(const ScopedWorkspace&) = delete;
  ScopedWorkspace& operator=(const ScopedWorkspace&) = delete;
  char* const data;
};

inline void solve_joints(const cpu::SolveArgs& a, int64_t begin, int64_t end) {
  const ScopedWorkspace workspace(workspace_bytes<double>(a.n1, a.n2, a.ny));
  const int64_t cells = int64_t(a.n1) * a.n2 * a.ny;
  for (int64_t i = begin; i < end; ++i) {
    const Result result = solve_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.tol, a.max_iter, a.patience,
                                              workspace.data, a.lam1 + i * a.n1 * a.ny,
                                              a.lam2 + i * a.n2 * a.ny, a.w + i * a.n1 * a.n2);
    a.iterations[i] = result.iterations;
    a.converged[i] = result.converged;
  }
}

inline void certify_joints(const cpu::CertifyArgs& a, int64_t begin, int64_t end) {
  const ScopedWorkspace workspace(workspace_bytes<double>(a.n1, a.n2, a.ny));
  const int64_t cells = int64_t(a.n1) * a.n2 * a.ny;
  for (int64_t i = begin; i < end; ++i)
    a.gap[i] = certify_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.lam1 + i * a.n1 * a.ny,
                                     a.lam2 + i * a.n2 * a.ny, a.w + i * a.n1 * a.n2, workspace.data, a.q + i * cells,
                                     a.value + i, a.entropies + i * 4);
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
