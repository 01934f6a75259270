// The CPU op: csrc/broja.h run on the joints of a batch in parallel, with the
// copy of the solver built for the processor (csrc/cpu/per_joint.h): small
// joints whose marginals have no zero kLanes at a time (csrc/cpu/lanes.h), the
// others, and those the lanes leave unconverged, one by one.
#include "broja_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../broja_checks.h"
#include "per_joint.h"

namespace fastpid {
namespace cpu {

void solve_joints_baseline(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::baseline::solve_joints(args, index, begin, end);
}

const char* instruction_set() {
#if defined(__x86_64__) && defined(__GNUC__)
  // FASTPID_CPU_ISA=baseline forces the baseline copy (tests compare the two).
  const char* forced = std::getenv("FASTPID_CPU_ISA");
  if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return "baseline";
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2 ? "avx2" : "baseline";
#else
  return "baseline";
#endif
}

int elimination(int n1, int n2, int ny) {
  // FASTPID_ELIMINATION=side or =pairs forces one (tests run both on the same joints).
  const char* forced = std::getenv("FASTPID_ELIMINATION");
  if (forced != nullptr && std::strcmp(forced, "side") == 0) return int(broja::Elimination::kSide);
  if (forced != nullptr && std::strcmp(forced, "pairs") == 0) return int(broja::Elimination::kPairs);
  return int(broja::choose_elimination(n1, n2, ny));
}

// Whether the marginals P1(x1, y), P2(x2, y) of the joint p (n1 × n2 × ny) are
// all positive; p1, p2 hold n1 ny and n2 ny values of scratch.
static bool marginals_positive(const double* p, int64_t n1, int64_t n2, int64_t ny, double* p1, double* p2) {
  std::fill(p1, p1 + n1 * ny, 0.0);
  std::fill(p2, p2 + n2 * ny, 0.0);
  for (int64_t x1 = 0; x1 < n1; ++x1)
    for (int64_t x2 = 0; x2 < n2; ++x2)
      for (int64_t y = 0; y < ny; ++y) {
        const double v = p[(x1 * n2 + x2) * ny + y];
        p1[x1 * ny + y] += v;
        p2[x2 * ny + y] += v;
      }
  return std::all_of(p1, p1 + n1 * ny, [](double v) { return v > 0.0; }) &&
         std::all_of(p2, p2 + n2 * ny, [](double v) { return v > 0.0; });
}

void split_for_lanes(const double* p, int64_t batch, int64_t n1, int64_t n2, int64_t ny, bool has_lanes,
                     std::vector<int64_t>& in_lanes, std::vector<int64_t>& alone) {
  const char* lanes = std::getenv("FASTPID_CPU_LANES");
  const bool small = has_lanes && (n1 + n2) * ny <= kLaneMaxDuals && (lanes == nullptr || std::strcmp(lanes, "0") != 0);
  std::vector<double> marginals((n1 + n2) * ny);
  for (int64_t i = 0; i < batch; ++i) {
    const bool positive =
        small && marginals_positive(p + i * n1 * n2 * ny, n1, n2, ny, marginals.data(), marginals.data() + n1 * ny);
    (positive ? in_lanes : alone).push_back(i);
  }
}

}  // namespace cpu

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cpu(const at::Tensor& p, double tol,
                                                                                       int64_t max_iter,
                                                                                       int64_t patience) {
  TORCH_CHECK(p.device().is_cpu(), "fastpid::broja_solve (CPU): expected p on the CPU, got ", p.device());
  check_broja_solve_args(p, max_iter, patience);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  const int elimination = cpu::elimination(int(n1), int(n2), int(ny));
  check_workspace("fastpid::broja_solve", n1, n2, ny, broja::Elimination(elimination));

  auto outputs = empty_solve_outputs(p);
  auto& [lam1, lam2, w, iterations, converged] = outputs;
  const cpu::SolveArgs args{p.const_data_ptr<double>(),
                            int(n1),
                            int(n2),
                            int(ny),
                            tol,
                            int(max_iter),
                            int(patience),
                            elimination,
                            lam1.mutable_data_ptr<double>(),
                            lam2.mutable_data_ptr<double>(),
                            w.mutable_data_ptr<double>(),
                            iterations.mutable_data_ptr<int64_t>(),
                            converged.mutable_data_ptr<bool>()};
  auto solve_joints = cpu::solve_joints_baseline;
  decltype(solve_joints) solve_lanes = nullptr;  // the AVX2 copy's only (cpu::split_for_lanes)
#if defined(__x86_64__) && defined(__GNUC__)
  if (std::strcmp(cpu::instruction_set(), "avx2") == 0) {
    solve_joints = cpu::solve_joints_avx2;
    solve_lanes = cpu::solve_lanes_avx2;
  }
#endif
  // Each thread solves its chunk of joints in its own workspace.  A batch of fewer than
  // ~4096 cells in all is not worth a second thread.
  const int64_t grain = std::max<int64_t>(1, 4096 / (n1 * n2 * ny));
  std::vector<int64_t> in_lanes, alone;
  cpu::split_for_lanes(args.p, batch, n1, n2, ny, solve_lanes != nullptr, in_lanes, alone);
  const auto run = [&](auto solve, const std::vector<int64_t>& joints, int64_t group) {
    cpu::parallel_over(joints, group, grain,
                       [&](const int64_t* index, int64_t begin, int64_t end) { solve(args, index, begin, end); });
  };
  run(solve_lanes, in_lanes, cpu::kLanes);
  for (const int64_t i : in_lanes)  // a joint the lanes leave unconverged gets the one-by-one solve's answer
    if (!args.converged[i]) alone.push_back(i);
  run(solve_joints, alone, 1);
  return outputs;
}

}  // namespace fastpid
