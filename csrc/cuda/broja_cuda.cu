// The CUDA ops fastpid::broja_solve and fastpid::broja_certificate: one thread
// per joint, running csrc/broja_interleaved.h (the CPU op's solver, with the
// workspaces of a warp's 32 joints interleaved) in a workspace that torch
// allocates (so it comes from the caching allocator and is ordered on the
// current stream).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that needs the cuBLAS/cuSPARSE headers
#include <c10/util/Exception.h>

#include <limits>

#include "../broja_interleaved.h"  // the solver's interleaved copy: no other solver header here
#include "broja_cuda.h"

namespace fastpid {
namespace {

// One warp, one interleaved group, per block: blocks retire as a whole, so a warp
// whose joints need more iterations would keep a block partner's registers; with a
// warp per block the multiprocessor takes the next block as soon as one is done.
// (Eight warps of the solve kernel fit a multiprocessor, within the 32 blocks it holds.)
constexpr int kThreadsPerBlock = interleaved::kGroup;

// At least one block per multiprocessor, no more asked: ptxas then gives each kernel
// the registers it needs (no stack, no spills) instead of spilling to fit more
// blocks (bench/results/cuda-build-2026-12-07.md).  Whether more joints per
// multiprocessor with spills would pay is the GPU run's to measure.
__global__ void __launch_bounds__(kThreadsPerBlock, 1) broja_solve_kernel(const interleaved::SolveArgs args) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < args.batch) interleaved::solve(args, i);
}

__global__ void __launch_bounds__(kThreadsPerBlock, 1) broja_certificate_kernel(const interleaved::CertifyArgs args) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < args.batch) interleaved::certify(args, i);
}

// kernel<<<…>>>(args) with one thread per joint of args.batch, on the current
// stream (at::cuda::getCurrentCUDAStream is this same function).
template <typename Args>
void launch_per_joint(void (*kernel)(Args), const Args& args, const char* op) {
  const int64_t blocks = (args.batch + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), op, ": batch too large, got ", args.batch);
  kernel<<<unsigned(blocks), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cuda(const at::Tensor& p, double tol,
                                                                                        int64_t max_iter,
                                                                                        int64_t patience) {
  constexpr const char* op = "fastpid::broja_solve";
  TORCH_CHECK(p.device().is_cuda(), op, " (CUDA): expected p on a CUDA device, got ", p.device());
  const c10::cuda::CUDAGuard device_guard(p.device());
  return interleaved::solve_batch(p, tol, max_iter, patience, op, [&](const interleaved::SolveArgs& args) {
    launch_per_joint(broja_solve_kernel, args, op);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cuda(const at::Tensor& p,
                                                                                  const at::Tensor& lam1,
                                                                                  const at::Tensor& lam2,
                                                                                  const at::Tensor& w) {
  constexpr const char* op = "fastpid::broja_certificate";
  TORCH_CHECK(p.device().is_cuda(), op, " (CUDA): expected p on a CUDA device, got ", p.device());
  const c10::cuda::CUDAGuard device_guard(p.device());
  return interleaved::certify_batch(p, lam1, lam2, w, op, [&](const interleaved::CertifyArgs& args) {
    launch_per_joint(broja_certificate_kernel, args, op);
  });
}

}  // namespace fastpid
