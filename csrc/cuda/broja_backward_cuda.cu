// The CUDA op: csrc/broja_backward.h run by one thread per joint, each with a
// private scratch carved from one global-memory buffer (as csrc/cuda/broja_cuda.cu).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <limits>

#include "../broja_backward.h"
#include "../broja_checks.h"
#include "broja_backward_cuda.h"

namespace fastpid {
namespace {

constexpr int kThreadsPerBlock = 128;

// At least one block per multiprocessor, no more asked (as the solve kernel): 89-90
// registers and no spill, where ptxas otherwise kept to 64 and spilled on sm_80.
__global__ void __launch_bounds__(kThreadsPerBlock, 1)
    broja_backward_kernel(const double* __restrict__ p, int64_t batch, int n1, int n2, int ny,
                          const double* __restrict__ lam1, const double* __restrict__ lam2,
                          const double* __restrict__ grad_atoms, double* __restrict__ scratch,
                          double* __restrict__ grad) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch) return;
  const int64_t cells = int64_t(n1) * n2 * ny;
  broja::envelope_gradient<double>(p + i * cells, n1, n2, ny, lam1 + i * int64_t(n1) * ny, lam2 + i * int64_t(n2) * ny,
                                   grad_atoms + i * 5, scratch + i * int64_t(broja::envelope_scratch_size(n1, n2, ny)),
                                   grad + i * cells);
}

}  // namespace

at::Tensor broja_backward_cuda(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                               const at::Tensor& grad_atoms) {
  TORCH_CHECK(p.device().is_cuda(), "fastpid::broja_backward (CUDA): expected p on a CUDA device, got ", p.device());
  check_broja_backward_args(p, lam1, lam2, grad_atoms);
  const int64_t batch = p.size(0);
  const int n1 = int(p.size(1)), n2 = int(p.size(2)), ny = int(p.size(3));
  const c10::cuda::CUDAGuard device_guard(p.device());
  auto grad = at::empty_like(p);
  if (batch == 0) return grad;
  auto scratch = at::empty({batch * int64_t(broja::envelope_scratch_size(n1, n2, ny))}, p.options());
  const int64_t blocks = (batch + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fastpid::broja_backward: batch too large, got ", batch);
  broja_backward_kernel<<<unsigned(blocks), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
      p.const_data_ptr<double>(), batch, n1, n2, ny, lam1.const_data_ptr<double>(), lam2.const_data_ptr<double>(),
      grad_atoms.const_data_ptr<double>(), scratch.mutable_data_ptr<double>(), grad.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad;
}

}  // namespace fastpid
