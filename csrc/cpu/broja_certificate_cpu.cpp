// The CPU op: csrc/broja.h's certify_joint run joint by joint, in parallel over the batch.
#include "broja_certificate_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "../broja.h"
#include "../broja_checks.h"
#include "workspace.h"

namespace fastpid {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cpu(const at::Tensor& p,
                                                                                 const at::Tensor& lam1,
                                                                                 const at::Tensor& lam2,
                                                                                 const at::Tensor& w) {
  TORCH_CHECK(p.device().is_cpu(), "fastpid::broja_certificate (CPU): expected p on the CPU, got ", p.device());
  check_broja_certificate_args(p, lam1, lam2, w);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  auto q = at::empty_like(p);
  auto value = at::empty({batch}, p.options());
  auto gap = at::empty({batch}, p.options());
  auto entropies = at::empty({batch, 4}, p.options());

  const double* p_data = p.const_data_ptr<double>();
  const double* lam1_data = lam1.const_data_ptr<double>();
  const double* lam2_data = lam2.const_data_ptr<double>();
  const double* w_data = w.const_data_ptr<double>();
  double* q_data = q.mutable_data_ptr<double>();
  double* value_data = value.mutable_data_ptr<double>();
  double* gap_data = gap.mutable_data_ptr<double>();
  double* entropies_data = entropies.mutable_data_ptr<double>();
  const int a = int(n1), b = int(n2), c = int(ny);
  const int64_t cells = n1 * n2 * ny;
  const int64_t grain = std::max<int64_t>(1, 4096 / cells);
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    char* workspace = cpu::thread_workspace(broja::workspace_bytes<double>(a, b, c));
    for (int64_t i = begin; i < end; ++i)
      gap_data[i] = broja::certify_joint<double>(p_data + i * cells, a, b, c, lam1_data + i * n1 * ny,
                                                 lam2_data + i * n2 * ny, w_data + i * n1 * n2, workspace,
                                                 q_data + i * cells, value_data + i, entropies_data + i * 4);
  });
  return {q, value, gap, entropies};
}

}  // namespace fastpid
