// The CPU op: csrc/broja.h's certify_joint run on the joints of a batch in
// parallel, with the copy built for the processor (csrc/cpu/per_joint.h): in
// lanes where the solve op uses them (cpu::split_for_lanes), else joint by joint.
#include "broja_certificate_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>

#include "../broja_checks.h"
#include "broja_cpu.h"
#include "per_joint.h"

namespace fastpid {
namespace cpu {

void certify_joints_baseline(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::baseline::certify_joints(args, index, begin, end);
}

}  // namespace cpu

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cpu(const at::Tensor& p,
                                                                                 const at::Tensor& lam1,
                                                                                 const at::Tensor& lam2,
                                                                                 const at::Tensor& w) {
  TORCH_CHECK(p.device().is_cpu(), "fastpid::broja_certificate (CPU): expected p on the CPU, got ", p.device());
  check_broja_certificate_args(p, lam1, lam2, w);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  auto outputs = empty_certificate_outputs(p);
  auto& [q, value, gap, entropies] = outputs;
  const cpu::CertifyArgs args{p.const_data_ptr<double>(),
                              lam1.const_data_ptr<double>(),
                              lam2.const_data_ptr<double>(),
                              w.const_data_ptr<double>(),
                              int(n1),
                              int(n2),
                              int(ny),
                              q.mutable_data_ptr<double>(),
                              value.mutable_data_ptr<double>(),
                              gap.mutable_data_ptr<double>(),
                              entropies.mutable_data_ptr<double>()};
  auto certify_joints = cpu::certify_joints_baseline;
  decltype(certify_joints) certify_lanes = nullptr;  // the AVX2 copy's only (cpu::split_for_lanes)
#if defined(__x86_64__) && defined(__GNUC__)
  if (std::strcmp(cpu::instruction_set(), "avx2") == 0) {
    certify_joints = cpu::certify_joints_avx2;
    certify_lanes = cpu::certify_lanes_avx2;
  }
#endif
  const int64_t grain = std::max<int64_t>(1, 4096 / (n1 * n2 * ny));
  std::vector<int64_t> in_lanes, alone;
  cpu::split_for_lanes(args.p, batch, n1, n2, ny, certify_lanes != nullptr, in_lanes, alone);
  cpu::parallel_over(in_lanes, cpu::kLanes, grain,
                     [&](const int64_t* index, int64_t begin, int64_t end) { certify_lanes(args, index, begin, end); });
  cpu::parallel_over(alone, 1, grain, [&](const int64_t* index, int64_t begin, int64_t end) {
    certify_joints(args, index, begin, end);
  });
  return outputs;
}

}  // namespace fastpid
