// The CUDA ops' per-thread code on the CPU: group after group, the joints of a
// group in parallel (with several threads, lanes that shared an element of the
// interleaved workspace would corrupt each other's solves, as on the device).
#include "broja_interleaved_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "../broja_interleaved.h"  // the solver's interleaved copy: no other solver header here

namespace fastpid {
namespace {

// Runs each(args, i) for every joint i of args.batch, the joints of one group at a time.
template <typename Args>
void each_joint(const Args& args, void (*each)(const Args&, int64_t)) {
  for (int64_t first = 0; first < args.batch; first += interleaved::kGroup)
    at::parallel_for(first, std::min(first + interleaved::kGroup, args.batch), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) each(args, i);
    });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_interleaved_cpu(const at::Tensor& p,
                                                                                                   double tol,
                                                                                                   int64_t max_iter,
                                                                                                   int64_t patience) {
  constexpr const char* op = "fastpid::broja_solve_interleaved";
  TORCH_CHECK(p.device().is_cpu(), op, ": expected p on the CPU, got ", p.device());
  return interleaved::solve_batch(p, tol, max_iter, patience, op,
                                  [](const interleaved::SolveArgs& args) { each_joint(args, &interleaved::solve); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_interleaved_cpu(const at::Tensor& p,
                                                                                             const at::Tensor& lam1,
                                                                                             const at::Tensor& lam2,
                                                                                             const at::Tensor& w) {
  constexpr const char* op = "fastpid::broja_certificate_interleaved";
  TORCH_CHECK(p.device().is_cpu(), op, ": expected p on the CPU, got ", p.device());
  return interleaved::certify_batch(
      p, lam1, lam2, w, op, [](const interleaved::CertifyArgs& args) { each_joint(args, &interleaved::certify); });
}

}  // namespace fastpid
