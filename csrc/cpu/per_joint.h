// The CPU ops' loops over the joints of a batch (solve joint by joint or in
// lanes, certify), compiled once per instruction set: for the x86-64 baseline
// in csrc/cpu/broja_cpu.cpp and csrc/cpu/broja_certificate_cpu.cpp, for AVX2 +
// FMA (x86-64-v3) in csrc/cpu/broja_cpu_avx2.cpp, each copy in the inline
// namespace FASTPID_ISA of csrc/broja.h.  The ops pick one at run time
// (cpu::instruction_set).
#pragma once

#include <math.h>
#include <stdint.h>

#include <vector>

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
  int elimination;          // broja::Elimination of the Newton systems (an int: that type is per instruction set)
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

// Solve (certify) the joints index[begin], …, index[end − 1] of the batch in
// one ScopedWorkspace: the baseline copy, and the AVX2 + FMA copy (defined on
// x86-64 with GCC or Clang only).  The *_lanes functions (AVX2 only) take them
// kLanes at a time (csrc/cpu/lanes.h: joints whose marginals have no zero,
// pinned at the first x2), and move λ to the reference's gauge (heaviest x2 pinned).
void solve_joints_baseline(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void solve_joints_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void solve_lanes_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end);
void certify_joints_baseline(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end);
void certify_joints_avx2(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end);
void certify_lanes_avx2(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end);

// Joints with more dual variables (n1 + n2) ny than this are solved one by one:
// their own cell loops fill vectors (measured: bench/README.md).
constexpr int64_t kLaneMaxDuals = 128;

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

// Solves the joints index[begin..end) one by one with `elimination`; appends
// those it leaves unconverged to `unconverged` (when not null).
inline void solve_each(const cpu::SolveArgs& a, Elimination elimination, const int64_t* index, int64_t begin,
                       int64_t end, std::vector<int64_t>* unconverged) {
  const ScopedWorkspace workspace(workspace_bytes<double>(a.n1, a.n2, a.ny, elimination));
  const int64_t cells = int64_t(a.n1) * a.n2 * a.ny;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t i = index ? index[j] : j;
    double* lam1 = a.lam1 + i * a.n1 * a.ny;
    double* lam2 = a.lam2 + i * a.n2 * a.ny;
    double* w = a.w + i * a.n1 * a.n2;
    const Result<double> result = solve_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.tol, a.max_iter, a.patience,
                                                      elimination, workspace.data, 0, lam1, lam2, w);
    a.iterations[i] = int64_t(result.iterations);
    a.converged[i] = result.converged;
    if (unconverged != nullptr && !result.converged) unconverged->push_back(i);
  }
}

// The joints index[begin..end) solved with the elimination of a.elimination.
// The pair elimination stalls on some degenerate joints (its capacitance
// formula cancels where the per-y blocks are near-singular: docs/pid-math.md,
// "Pair elimination"); those it leaves unconverged are solved again by the
// side elimination where its workspace is at most kSideRescueBytes.
inline void solve_joints(const cpu::SolveArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const Elimination elimination = Elimination(a.elimination);
  const bool rescue = elimination == Elimination::kPairs &&
                      workspace_bytes<double>(a.n1, a.n2, a.ny, Elimination::kSide) <= kSideRescueBytes;
  std::vector<int64_t> unconverged;
  solve_each(a, elimination, index, begin, end, rescue ? &unconverged : nullptr);
  if (!unconverged.empty())
    solve_each(a, Elimination::kSide, unconverged.data(), 0, int64_t(unconverged.size()), nullptr);
}

inline void certify_joints(const cpu::CertifyArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const ScopedWorkspace workspace(workspace_bytes<double>(a.n1, a.n2, a.ny, Elimination::kNone));
  const int64_t cells = int64_t(a.n1) * a.n2 * a.ny;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t i = index ? index[j] : j;
    a.gap[i] = certify_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.lam1 + i * a.n1 * a.ny,
                                     a.lam2 + i * a.n2 * a.ny, a.w + i * a.n1 * a.n2, workspace.data, 0,
                                     a.q + i * cells, a.value + i, a.entropies + i * 4);
  }
}

#ifdef FASTPID_LANES  // csrc/cpu/lanes.h: the AVX2 copy only
// ---------------------------------------------------------------- lanes

// The workspace of solve_joint / certify_joint on Lanes for n1 × n2 × ny
// joints, then `staging` Lanes (64-byte aligned) for the interleaved joints.
struct LaneWorkspace {
  LaneWorkspace(int n1, int n2, int ny, size_t staging)
      : solver_bytes((workspace_bytes<Lanes>(n1, n2, ny, Elimination::kSide) + 63) / 64 * 64),
        workspace(solver_bytes + staging * sizeof(Lanes) + 64) {}
  Lanes* staging() const {
    char* start = workspace.data + solver_bytes;
    return reinterpret_cast<Lanes*>(start + (64 - reinterpret_cast<uintptr_t>(start) % 64) % 64);
  }
  const size_t solver_bytes;
  const ScopedWorkspace workspace;
};

// The joints of the group starting at index[g] (the last group of [·, end)
// padded with its last joint).
inline void lane_group(const int64_t* index, int64_t g, int64_t end, int64_t* joint) {
  for (int l = 0; l < kLanes; ++l) joint[l] = index[g + l < end ? g + l : end - 1];
}

// dst[c] lane l = src[joint[l] n + c], c < n: the joints' rows side by side.
inline void interleave(Lanes* dst, const double* src, const int64_t* joint, int64_t n) {
  for (int l = 0; l < kLanes; ++l)
    for (int64_t c = 0; c < n; ++c) dst[c].v[l] = src[joint[l] * n + c];
}

// dst[c] = src[c] lane l, c < n.
inline void lane_of(double* dst, const Lanes* src, int l, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] = src[c].v[l];
}

// Moves a solution λ of a joint with positive marginals P2 (n2 × ny) to the
// reference's gauge: λ1(·, y) + c, λ2(·, y) − c (λ1 + λ2, Q and the dual value
// unchanged) with λ2 = log P2 at broja.h's pin for one joint (gauge_pin<double>).
inline void to_heaviest_gauge(const double* p2, int n1, int n2, int ny, double* lam1, double* lam2) {
  for (int y = 0; y < ny; ++y) {
    const int pin = gauge_pin<double>(p2 + y, nullptr, n2, ny);
    const double pinned = log(p2[pin * ny + y]);
    const double c = lam2[pin * ny + y] - pinned;
    for (int x1 = 0; x1 < n1; ++x1) lam1[x1 * ny + y] += c;
    for (int x2 = 0; x2 < n2; ++x2) lam2[x2 * ny + y] -= c;
    lam2[pin * ny + y] = pinned;
  }
}

// solve_joint<Lanes> over groups of kLanes joints, then each joint's solution
// moved to the reference's gauge.
inline void solve_lanes(const cpu::SolveArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const int n1 = a.n1, n2 = a.n2, ny = a.ny, c1 = n1 * ny, c2 = n2 * ny, np = n1 * n2, cells = np * ny;
  const LaneWorkspace workspace(n1, n2, ny, cells + c1 + c2 + np + (c2 + kLanes - 1) / kLanes);
  Lanes* p = workspace.staging();
  Lanes* lam1 = p + cells;
  Lanes* lam2 = lam1 + c1;
  Lanes* w = lam2 + c2;
  double* p2 = reinterpret_cast<double*>(w + np);
  for (int64_t g = begin; g < end; g += kLanes) {
    int64_t joint[kLanes];
    lane_group(index, g, end, joint);
    interleave(p, a.p, joint, cells);
    const Result<Lanes> result = solve_joint<Lanes>(p, n1, n2, ny, Lanes(a.tol), a.max_iter, a.patience,
                                                    Elimination::kSide, workspace.workspace.data, 0, lam1, lam2, w);
    for (int l = 0; l < kLanes && g + l < end; ++l) {
      const int64_t i = joint[l];
      lane_of(a.lam1 + i * c1, lam1, l, c1);
      lane_of(a.lam2 + i * c2, lam2, l, c2);
      lane_of(a.w + i * np, w, l, np);
      for (int k = 0; k < c2; ++k) p2[k] = 0.0;
      for (int c = 0; c < cells; ++c) p2[c % c2] += a.p[i * cells + c];  // cell (x1 n2 + x2) ny + y
      to_heaviest_gauge(p2, n1, n2, ny, a.lam1 + i * c1, a.lam2 + i * c2);
      a.iterations[i] = int64_t(result.iterations.v[l]);
      a.converged[i] = result.converged.v[l] != 0;
    }
  }
}

// certify_joint<Lanes> over groups of kLanes joints.
inline void certify_lanes(const cpu::CertifyArgs& a, const int64_t* index, int64_t begin, int64_t end) {
  const int n1 = a.n1, n2 = a.n2, ny = a.ny, c1 = n1 * ny, c2 = n2 * ny, np = n1 * n2, cells = np * ny;
  const LaneWorkspace workspace(n1, n2, ny, 2 * cells + c1 + c2 + np + 1 + 4);  // … q, value, 4 entropies
  Lanes* p = workspace.staging();
  Lanes* lam1 = p + cells;
  Lanes* lam2 = lam1 + c1;
  Lanes* w = lam2 + c2;
  Lanes* q = w + np;
  Lanes* value = q + cells;
  Lanes* entropies = value + 1;
  for (int64_t g = begin; g < end; g += kLanes) {
    int64_t joint[kLanes];
    lane_group(index, g, end, joint);
    interleave(p, a.p, joint, cells);
    interleave(lam1, a.lam1, joint, c1);
    interleave(lam2, a.lam2, joint, c2);
    interleave(w, a.w, joint, np);
    const Lanes gap =
        certify_joint<Lanes>(p, n1, n2, ny, lam1, lam2, w, workspace.workspace.data, 0, q, value, entropies);
    for (int l = 0; l < kLanes && g + l < end; ++l) {
      const int64_t i = joint[l];
      lane_of(a.q + i * cells, q, l, cells);
      lane_of(a.entropies + i * 4, entropies, l, 4);
      a.value[i] = value->v[l];
      a.gap[i] = gap.v[l];
    }
  }
}
#endif  // FASTPID_LANES

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
