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

void solve_lanes_baseline(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::baseline::solve_lanes(args, index, begin, end);
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

// Whether small joints go in lanes; FASTPID_CPU_LANES=0 solves every joint one
// by one (tests compare the two, benchmarks time them).
bool lanes_enabled() {
  const char* lanes = std::getenv("FASTPID_CPU_LANES");
  return lanes == nullptr || std::strcmp(lanes, "0") != 0;
}

}  // namespace cpu

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cpu(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience) {
  TORCH_CHECK(p.device().is_cpu(), "fastpid::broja_solve (CPU): expected p on the CPU, got ", p.device());
  check_broja_solve_args(p, max_iter, patience);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);

  auto lam1 = at::empty({batch, n1, ny}, p.options());
  auto lam2 = at::empty({batch, n2, ny}, p.options());
  auto w = at::empty({batch, n1, n2}, p.options());
  auto iterations = at::empty({batch}, p.options().dtype(at::kLong));
  auto converged = at::empty({batch}, p.options().dtype(at::kBool));
  const cpu::SolveArgs args{p.const_data_ptr<double>(), int(n1), int(n2), int(ny), tol, int(max_iter),
                            int(patience), lam1.mutable_data_ptr<double>(), lam2.mutable_data_ptr<double>(),
                            w.mutable_data_ptr<double>(), iterations.mutable_data_ptr<int64_t>(),
                            converged.mutable_data_ptr<bool>()};
  auto solve_joints = cpu::solve_joints_baseline;
  auto solve_lanes = cpu::solve_lanes_baseline;
#if defined(__x86_64__) && defined(__GNUC__)
  if (std::strcmp(cpu::instruction_set(), "avx2") == 0) {
    solve_joints = cpu::solve_joints_avx2;
    solve_lanes = cpu::solve_lanes_avx2;
  }
#endif
  // Each thread solves its chunk of joints in its own workspace.  A batch of fewer than
  // ~4096 cells in all is not worth a second thread.
  const int64_t cells = n1 * n2 * ny;
  const int64_t grain = std::max<int64_t>(1, 4096 / cells);
  const auto one_by_one = [&](const int64_t* index, int64_t count) {
    at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) { solve_joints(args, index, begin, end); });
  };
  if ((n1 + n2) * ny > cpu::kLaneMaxDuals || !cpu::lanes_enabled()) {
    one_by_one(nullptr, batch);
    return {lam1, lam2, w, iterations, converged};
  }
  std::vector<int64_t> in_lanes, alone;
  std::vector<double> marginals((n1 + n2) * ny);
  for (int64_t i = 0; i < batch; ++i) {
    const bool positive = cpu::marginals_positive(args.p + i * cells, int(n1), int(n2), int(ny), marginals.data(),
                                                  marginals.data() + n1 * ny);
    (positive ? in_lanes : alone).push_back(i);
  }
  const int64_t lanes = cpu::kLanes, groups = (int64_t(in_lanes.size()) + lanes - 1) / lanes;
  at::parallel_for(0, groups, std::max<int64_t>(1, grain / lanes), [&](int64_t begin, int64_t end) {
    solve_lanes(args, in_lanes.data(), begin * lanes, std::min<int64_t>(end * lanes, in_lanes.size()));
  });
  for (const int64_t i : in_lanes)  // a joint the lanes leave unconverged gets the one-by-one solve's answer
    if (!args.converged[i]) alone.push_back(i);
  one_by_one(alone.data(), int64_t(alone.size()));
  return {lam1, lam2, w, iterations, converged};
}

}  // namespace fastpid
