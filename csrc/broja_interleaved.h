// The CUDA ops' solver and workspace layout, written once for the device and the host.
//
// One thread per joint runs csrc/broja.h's solve_joint (certify_joint), each
// in its own workspace as on the CPU, but the workspaces of the kGroup = 32
// joints of a warp are interleaved element by element (FASTPID_INTERLEAVE,
// csrc/broja/common.h): element i of the joint in lane l lies at
// i kGroup + l, so that when the warp's threads read element i of their joints
// they read 256 contiguous bytes, not 32 bytes in 32 places (docs/gpu.md).
//
// csrc/cuda/broja_cuda.cu compiles this for the device (one thread per joint);
// csrc/cpu/broja_interleaved_cpu.cpp compiles the same code for the host and
// runs the joints of each group one after the other (fastpid::broja_solve_interleaved,
// fastpid::broja_certificate_interleaved), so that the tests run the device's
// code and layout on any machine.  The solver copy is compiled in its own
// namespace (FASTPID_ISA): include this header before any other solver header.
#pragma once

#ifdef FASTPID_ISA
#error "csrc/broja_interleaved.h compiles its own copy of the solver: include it before the other solver headers"
#endif
#define FASTPID_INTERLEAVE 32
#ifdef __CUDACC__
#define FASTPID_ISA interleaved_device
#else
#define FASTPID_ISA interleaved_host
#endif
#include <limits>
#include <tuple>
#include <utility>

#include "broja.h"
#include "broja_checks.h"
#include "device_solve_args.h"

namespace fastpid {
namespace interleaved {

constexpr int kGroup = broja::kInterleave;  // joints per interleaved workspace: a warp's
// The side elimination: the device copy has no pair elimination
// (broja/iteration.h, kPairsHere), so that its registers are the side elimination's.
constexpr broja::Elimination kElimination = broja::Elimination::kSide;

using SolveArgs = DeviceSolveArgs;  // workspace_bytes: a group's, lanes: 1

// A batch of joints and solutions, the group workspaces (group_bytes each) and the
// outputs of fastpid::broja_certificate.
struct CertifyArgs {
  const double *p, *lam1, *lam2, *w;
  int64_t batch;
  int n1, n2, ny;
  char* workspace;
  size_t group_bytes;
  double *q, *value, *gap, *entropies;
};

// The workspace of joint i's group (its lane in it: i % kGroup).
FASTPID_HOST_DEVICE inline char* group_workspace(char* workspace, size_t group_bytes, int64_t i) {
  return workspace + size_t(i / kGroup) * group_bytes;
}

FASTPID_HOST_DEVICE FASTPID_FORCE_INLINE void solve(const SolveArgs& a, int64_t i) {
  const int64_t c1 = int64_t(a.n1) * a.ny, c2 = int64_t(a.n2) * a.ny, np = int64_t(a.n1) * a.n2;
  const broja::Result<double> result =
      broja::solve_joint<double>(a.p + i * np * a.ny, a.n1, a.n2, a.ny, a.tol, a.max_iter, a.patience, kElimination,
                                 group_workspace(a.workspace, a.workspace_bytes, i), int(i % kGroup), a.lam1 + i * c1,
                                 a.lam2 + i * c2, a.w + i * np);
  a.iterations[i] = int64_t(result.iterations);
  a.converged[i] = result.converged;
}

FASTPID_HOST_DEVICE FASTPID_FORCE_INLINE void certify(const CertifyArgs& a, int64_t i) {
  const int64_t c1 = int64_t(a.n1) * a.ny, c2 = int64_t(a.n2) * a.ny, np = int64_t(a.n1) * a.n2, cells = np * a.ny;
  a.gap[i] = broja::certify_joint<double>(a.p + i * cells, a.n1, a.n2, a.ny, a.lam1 + i * c1, a.lam2 + i * c2,
                                          a.w + i * np, group_workspace(a.workspace, a.group_bytes, i), int(i % kGroup),
                                          a.q + i * cells, a.value + i, a.entropies + i * 4);
}

// The group workspaces of the joints p (B, n1, n2, ny), on p's device: the
// buffer and the bytes of each group (a multiple of 64; the solver aligns its
// start itself, and workspace_bytes has room for that).
inline std::pair<at::Tensor, size_t> group_workspaces(const at::Tensor& p, broja::Elimination elimination,
                                                      const char* op) {
  const int64_t groups = (p.size(0) + kGroup - 1) / kGroup;
  const size_t bytes =
      broja::workspace_bytes<double>(int(p.size(1)), int(p.size(2)), int(p.size(3)), elimination) * kGroup;
  const size_t group_bytes = (bytes + 63) & ~size_t(63);
  TORCH_CHECK(group_bytes <= size_t(std::numeric_limits<int64_t>::max()) / size_t(groups), op,
              ": workspace too large, got ", p.sizes());
  return {at::empty({int64_t(group_bytes) * groups}, p.options().dtype(at::kByte)), group_bytes};
}

// fastpid::broja_solve on p (checked, on the device run_all runs on), where
// run_all(args) runs solve(args, i) for every joint i < args.batch.
template <typename RunAll>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_batch(const at::Tensor& p, double tol,
                                                                                   int64_t max_iter, int64_t patience,
                                                                                   const char* op, RunAll run_all) {
  check_broja_solve_args(p, max_iter, patience);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  check_workspace(op, n1, n2, ny, kElimination);
  auto outputs = empty_solve_outputs(p);
  auto& [lam1, lam2, w, iterations, converged] = outputs;
  if (batch == 0) return outputs;
  const auto [workspace, group_bytes] = group_workspaces(p, kElimination, op);
  run_all(SolveArgs{p.const_data_ptr<double>(), batch, int(n1), int(n2), int(ny), tol, int(max_iter), int(patience),
                    static_cast<char*>(workspace.mutable_data_ptr()), group_bytes, lam1.mutable_data_ptr<double>(),
                    lam2.mutable_data_ptr<double>(), w.mutable_data_ptr<double>(),
                    iterations.mutable_data_ptr<int64_t>(), converged.mutable_data_ptr<bool>(), 1});
  return outputs;
}

// fastpid::broja_certificate likewise, run_all(args) running certify(args, i).
template <typename RunAll>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> certify_batch(const at::Tensor& p, const at::Tensor& lam1,
                                                                         const at::Tensor& lam2, const at::Tensor& w,
                                                                         const char* op, RunAll run_all) {
  check_broja_certificate_args(p, lam1, lam2, w);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  auto outputs = empty_certificate_outputs(p);
  auto& [q, value, gap, entropies] = outputs;
  if (batch == 0) return outputs;
  const auto [workspace, group_bytes] = group_workspaces(p, broja::Elimination::kNone, op);
  run_all(CertifyArgs{p.const_data_ptr<double>(), lam1.const_data_ptr<double>(), lam2.const_data_ptr<double>(),
                      w.const_data_ptr<double>(), batch, int(n1), int(n2), int(ny),
                      static_cast<char*>(workspace.mutable_data_ptr()), group_bytes, q.mutable_data_ptr<double>(),
                      value.mutable_data_ptr<double>(), gap.mutable_data_ptr<double>(),
                      entropies.mutable_data_ptr<double>()});
  return outputs;
}

}  // namespace interleaved
}  // namespace fastpid
