// The CPU ops' loops over the joints of a batch (solve joint by joint or in
// lanes, certify), compiled once per instruction set: for the x86-64 baseline
// in csrc/cpu/broja_cpu.cpp and csrc/cpu/broja_certificate_cpu.cpp, for AVX2 +
// FMA (x86-64-v3) in csrc/cpu/broja_cpu_avx2.cpp, each copy in the inline
// namespace FASTPID_ISA of csrc/broja.h.  The ops pick one at run time
// (cpu::instruction_set).
#pragma once

#include <math.h>
#include <stdint.h>

#include "../broja.h"
#include "lanes.h"
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
// baseline copy, and the AVX2 + FMA copy (defined on x86-64 with GCC or Clang
// only).  The solves take the joints index[begin], …, index[end − 1] of the
// batch (index null: begin, …, end − 1); solve_lanes_* solves them kLanes at a
// time (csrc/cpu/lanes.h: joints whose marginals have no zero, pinned at the
// first x2), then moves λ to the reference's gauge (heaviest x2 pinned).
void solve_joints_baseline(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void solve_joints_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void solve_lanes_baseline(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void solve_lanes_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void certify_joints_baseline(const CertifyArgs& args, int64_t begin, int64_t end);
void certify_joints_avx2(const CertifyArgs& args, int64_t begin, int64_t end);

// Joints with more dual variables (n1 + n2) ny than this are solved one by one:
// their own cell loops fill vectors (measured: bench/README.md).
constexpr int64_t kLaneMaxDuals = 128;

// Whether the marginals P1(x1, y), P2(x2, y) of the joint p (n1 × n2 × ny) are all positive.
inline bool marginals_positive(const double* p, int n1, int n2, int ny, double* p1, double* p2) {
  for (int i = 0; i < n1 * ny; ++i) p1[i] = 0.0;
  for (int i = 0; i < n2 * ny; ++i) p2[i] = 0.0;
  for (int x1 = 0; x1 < n1; ++x1)
    for (int x2 = 0; x2 < n2; ++x2)
      for (int y = 0; y < ny; ++y) {
        const double v = p[(x1 * n2 + x2) * ny + y];
        p1[x1 * ny + y] += v;
        p2[x2 * ny + y] += v;
      }
  bool positive = true;
  for (int i = 0; i < n1 * ny; ++i) positive = positive && p1[i] > 0.0;
  for (int i = 0; i < n2 * ny; ++i) positive = positive && p2[i] > 0.0;
  return positive;
}

// Moves a solution λ of a joint with positive marginals P2 (n2 × ny) to the
// reference's gauge: λ1(·, y) + c, λ2(·, y) − c (λ1 + λ2, Q and the dual value
// unchanged) with λ2 = log P2 at the first x2 of largest P2(x2, y).
inline void to_heaviest_gauge(const double* p2, int n1, int n2, int ny, double* lam1, double* lam2) {
  for (int y = 0; y < ny; ++y) {
    int pin = 0;
    for (int x2 = 1; x2 < n2; ++x2)
      if (p2[x2 * ny + y] > p2[pin * ny + y]) pin = x2;
    const double pinned = log(p2[pin * ny + y]);
    const double c = lam2[pin * ny + y] - pinned;
    for (int x1 = 0; x1 < n1; ++x1) lam1[x1 * ny + y] += c;
    for (int x2 = 0; x2 < n2; ++x2) lam2[x2 * ny + y] -= c;
    lam2[pin * ny + y] = pinned;
  }
}

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

inline void solve_joints(const cpu::SolveArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const ScopedWorkspace workspace(workspace_bytes<double>(a.n1, a.n2, a.ny));
  const int64_t cells = int64_t(a.n1) * a.n2 * a.ny;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t i = index ? index[j] : j;
    const Result<double> result = solve_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.tol, a.max_iter, a.patience,
                                              workspace.data, a.lam1 + i * a.n1 * a.ny,
                                              a.lam2 + i * a.n2 * a.ny, a.w + i * a.n1 * a.n2);
    a.iterations[i] = int64_t(result.iterations);
    a.converged[i] = result.converged;
  }
}

// solve_joint<Lanes> over groups of kLanes joints (the last padded with
// copies of its last joint): the joints are interleaved cell by cell into one
// Lanes joint, solved, and the lanes' solutions written back.
inline void solve_lanes(const cpu::SolveArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const int n1 = a.n1, n2 = a.n2, ny = a.ny, c1 = n1 * ny, c2 = n2 * ny, np = n1 * n2;
  const int cells = np * ny;
  const size_t solve_bytes = (workspace_bytes<Lanes>(n1, n2, ny) + 63) / 64 * 64;
  const ScopedWorkspace workspace(solve_bytes + sizeof(Lanes) * (cells + c1 + c2 + np) + sizeof(double) * c2 + 64);
  char* staging = workspace.data + solve_bytes;
  staging += (64 - reinterpret_cast<uintptr_t>(staging) % 64) % 64;
  Lanes* p = reinterpret_cast<Lanes*>(staging);
  Lanes* lam1 = p + cells;
  Lanes* lam2 = lam1 + c1;
  Lanes* w = lam2 + c2;
  double* p2 = reinterpret_cast<double*>(w + np);
  for (int64_t g = begin; g < end; g += cpu::kLanes) {
    int64_t joint[cpu::kLanes];
    for (int l = 0; l < cpu::kLanes; ++l) joint[l] = index[g + l < end ? g + l : end - 1];
    for (int l = 0; l < cpu::kLanes; ++l) {
      const double* pl = a.p + joint[l] * cells;
      for (int c = 0; c < cells; ++c) p[c].v[l] = pl[c];
    }
    const Result<Lanes> result = solve_joint<Lanes>(p, n1, n2, ny, Lanes(a.tol), a.max_iter, a.patience,
                                                    workspace.data, lam1, lam2, w);
    for (int l = 0; l < cpu::kLanes && g + l < end; ++l) {
      const int64_t i = joint[l];
      double* lam1_i = a.lam1 + i * c1;
      double* lam2_i = a.lam2 + i * c2;
      for (int k = 0; k < c1; ++k) lam1_i[k] = lam1[k].v[l];
      for (int k = 0; k < c2; ++k) lam2_i[k] = lam2[k].v[l];
      for (int k = 0; k < np; ++k) a.w[i * np + k] = w[k].v[l];
      for (int k = 0; k < c2; ++k) p2[k] = 0.0;
      for (int c = 0; c < cells; ++c) p2[c % c2] += p[c].v[l];  // cell (x1 n2 + x2) ny + y
      cpu::to_heaviest_gauge(p2, n1, n2, ny, lam1_i, lam2_i);
      a.iterations[i] = int64_t(result.iterations.v[l]);
      a.converged[i] = result.converged.v[l] != 0;
    }
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
