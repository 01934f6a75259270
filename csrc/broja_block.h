// The block-per-joint solver, written once for the device and the host.
//
// A team of threads (a CUDA thread block) solves one joint: csrc/broja.h's
// solve_joint compiled with FASTPID_TEAM 1, where every loop over the joint's
// arrays is split among the team's lanes and sums and extremes are reduced
// across them (broja/common.h, Team).  The joint's workspace is contiguous, as
// on the CPU; a team solves joint after joint in its own workspace, pulling
// the next joint from a counter, so that the memory is bounded by the number
// of teams, not by the batch (docs/gpu.md, "The block-per-joint solver").
//
// csrc/cuda/broja_block_cuda.cu compiles this for the device (a thread block
// per team); csrc/cpu/broja_block_cpu.cpp compiles the same code for the host
// and emulates the team (its lanes run one after the other between syncs), so
// that the tests run the device's code on any machine.  The solver copy is
// compiled in its own namespace (FASTPID_ISA): include this header before any
// other solver header.
#pragma once

#ifdef FASTPID_ISA
#error "csrc/broja_block.h compiles its own copy of the solver: include it before the other solver headers"
#endif
#define FASTPID_TEAM 1
#ifdef __CUDACC__
#define FASTPID_ISA block_device
#else
#define FASTPID_ISA block_host
#endif
#include <algorithm>
#include <limits>
#include <tuple>

#include "broja.h"
#include "broja_checks.h"
#include "device_solve_args.h"

namespace fastpid {
namespace block {

// The side elimination: a team's copy has no pair elimination (broja/iteration.h, kPairsHere).
constexpr broja::Elimination kElimination = broja::Elimination::kSide;
// Lanes per team: at most one block of them fits a multiprocessor's registers.
constexpr int kMaxLanes = broja::kMaxTeamLanes;

using SolveArgs = DeviceSolveArgs;  // workspace_bytes: a team's, lanes: its threads

// Joint i solved by `team` (every lane calls it) in its workspace.
FASTPID_HOST_DEVICE FASTPID_FORCE_INLINE void solve(const SolveArgs& a, int64_t i, char* workspace,
                                                    const broja::Team& team) {
  const int64_t c1 = int64_t(a.n1) * a.ny, c2 = int64_t(a.n2) * a.ny, np = int64_t(a.n1) * a.n2;
  // What the arrays' offsets count from: the workspace's first 64-byte boundary, as attach lays it out.
  if (team.leader()) broja::team_workspace() = workspace + (64 - reinterpret_cast<uintptr_t>(workspace) % 64) % 64;
  team.sync();
  const broja::Result<double> result =
      broja::solve_joint<double>(a.p + i * np * a.ny, a.n1, a.n2, a.ny, a.tol, a.max_iter, a.patience, kElimination,
                                 workspace, 0, a.lam1 + i * c1, a.lam2 + i * c2, a.w + i * np, team);
  if (team.leader()) {
    a.iterations[i] = int64_t(result.iterations);
    a.converged[i] = result.converged;
  }
}

// fastpid::broja_solve_block on p (checked, on the device run_all runs on) by
// teams of `lanes`, with `teams` workspaces, where run_all(args) has the teams
// solve every joint i < args.batch (`teams` at most the batch).
template <typename RunAll>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_batch(const at::Tensor& p, double tol,
                                                                                   int64_t max_iter, int64_t patience,
                                                                                   int64_t lanes, int64_t teams,
                                                                                   const char* op, RunAll run_all) {
  check_broja_solve_args(p, max_iter, patience);
  TORCH_CHECK(lanes >= 1 && lanes <= kMaxLanes, op, ": expected lanes between 1 and ", kMaxLanes, ", got ", lanes);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  check_workspace(op, n1, n2, ny, kElimination);
  auto outputs = empty_solve_outputs(p);
  auto& [lam1, lam2, w, iterations, converged] = outputs;
  if (batch == 0) return outputs;
  teams = std::max<int64_t>(1, std::min(teams, batch));
  const size_t bytes = broja::workspace_bytes<double>(int(n1), int(n2), int(ny), kElimination, int(lanes));
  const size_t team_bytes = (bytes + 63) & ~size_t(63);
  TORCH_CHECK(team_bytes <= std::numeric_limits<uint32_t>::max(), op,
              ": a joint's workspace past 4 GiB (its arrays are 32-bit offsets), got ", p.sizes());
  TORCH_CHECK(team_bytes <= size_t(std::numeric_limits<int64_t>::max()) / size_t(teams), op,
              ": workspace too large, got ", p.sizes());
  const at::Tensor workspace = at::empty({int64_t(team_bytes) * teams}, p.options().dtype(at::kByte));
  run_all(SolveArgs{p.const_data_ptr<double>(), batch, int(n1), int(n2), int(ny), tol, int(max_iter), int(patience),
                    static_cast<char*>(workspace.mutable_data_ptr()), team_bytes, lam1.mutable_data_ptr<double>(),
                    lam2.mutable_data_ptr<double>(), w.mutable_data_ptr<double>(),
                    iterations.mutable_data_ptr<int64_t>(), converged.mutable_data_ptr<bool>(), int(lanes)},
          teams);
  return outputs;
}

}  // namespace block
}  // namespace fastpid
