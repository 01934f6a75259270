// The CPU op: csrc/broja_backward.h run joint by joint, in parallel over the batch.
#include "broja_backward_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "../broja_backward.h"
#include "../broja_checks.h"

namespace fastpid {

at::Tensor broja_backward_cpu(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                              const at::Tensor& grad_atoms) {
  TORCH_CHECK(p.device().is_cpu(), "fastpid::broja_backward (CPU): expected p on the CPU, got ", p.device());
  check_broja_backward_args(p, lam1, lam2, grad_atoms);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  auto grad = at::empty_like(p);

  const double* p_data = p.const_data_ptr<double>();
  const double* lam1_data = lam1.const_data_ptr<double>();
  const double* lam2_data = lam2.const_data_ptr<double>();
  const double* atoms_data = grad_atoms.const_data_ptr<double>();
  double* grad_data = grad.mutable_data_ptr<double>();
  const int a = int(n1), b = int(n2), c = int(ny);
  const int64_t grain = std::max<int64_t>(1, 4096 / (n1 * n2 * ny));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(broja::envelope_scratch_size(a, b, c));
    for (int64_t i = begin; i < end; ++i)
      broja::envelope_gradient<double>(p_data + i * n1 * n2 * ny, a, b, c, lam1_data + i * n1 * ny,
                                       lam2_data + i * n2 * ny, atoms_data + i * 5, scratch.data(),
                                       grad_data + i * n1 * n2 * ny);
  });
  return grad;
}

}  // namespace fastpid
