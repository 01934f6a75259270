// The CUDA ops fastpid::broja_solve and fastpid::broja_certificate: csrc/broja.h
// run by one thread per joint.
//
// Each thread solves (certifies) its joint with exactly the code of the CPU op
// (broja::solve_joint<double>, broja::certify_joint<double>, compiled
// __host__ __device__), in a private workspace carved from one global-memory
// buffer that torch allocates (so it comes from the caching allocator and is
// ordered on the current stream).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that needs the cuBLAS/cuSPARSE headers
#include <c10/util/Exception.h>

#include <limits>
#include <utility>

#include "../broja.h"
#include "../broja_checks.h"
#include "broja_cuda.h"

namespace fastpid {
namespace {

constexpr int kThreadsPerBlock = 64;
// One thread per joint eliminates a side, as before the pairs elimination
// existed; which kernel and elimination fit each regime on the GPU is still to
// be measured on one.
constexpr broja::Elimination kElimination = broja::Elimination::kSide;

// At least one block per multiprocessor, no more asked: ptxas then gives the solve
// the registers it needs (246 on sm_90, 252 on sm_80: no stack, no spills) instead
// of spilling to fit more blocks (168 registers and 3.9 KB of spill loads per
// thread without the 1).  Four blocks of 64 threads fit a multiprocessor; whether
// more joints per multiprocessor with spills would pay is the GPU run's to measure.
__global__ void __launch_bounds__(kThreadsPerBlock, 1)
    broja_solve_kernel(const double* __restrict__ p, int64_t batch, int n1, int n2, int ny, double tol, int max_iter,
                       int patience, char* __restrict__ workspace, size_t workspace_stride, double* __restrict__ lam1,
                       double* __restrict__ lam2, double* __restrict__ w, int64_t* __restrict__ iterations,
                       bool* __restrict__ converged) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch) return;
  const int64_t cells = int64_t(n1) * n2 * ny;
  const broja::Result<double> result = broja::solve_joint<double>(
      p + i * cells, n1, n2, ny, tol, max_iter, patience, kElimination, workspace + size_t(i) * workspace_stride,
      lam1 + i * int64_t(n1) * ny, lam2 + i * int64_t(n2) * ny, w + i * int64_t(n1) * n2);
  iterations[i] = int64_t(result.iterations);
  converged[i] = result.converged;
}

__global__ void __launch_bounds__(kThreadsPerBlock)
    broja_certificate_kernel(const double* __restrict__ p, const double* __restrict__ lam1,
                             const double* __restrict__ lam2, const double* __restrict__ w, int64_t batch, int n1,
                             int n2, int ny, char* __restrict__ workspace, size_t workspace_stride,
                             double* __restrict__ q, double* __restrict__ value, double* __restrict__ gap,
                             double* __restrict__ entropies) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch) return;
  const int64_t cells = int64_t(n1) * n2 * ny;
  gap[i] = broja::certify_joint<double>(
      p + i * cells, n1, n2, ny, lam1 + i * int64_t(n1) * ny, lam2 + i * int64_t(n2) * ny, w + i * int64_t(n1) * n2,
      workspace + size_t(i) * workspace_stride, q + i * cells, value + i, entropies + i * 4);
}

// One workspace per joint of p (B, n1, n2, ny), each a multiple of 64 bytes
// (solve_joint and certify_joint align their start to 64 bytes themselves;
// workspace_bytes includes room for that): the buffer and the stride.
std::pair<at::Tensor, size_t> joint_workspaces(const at::Tensor& p, const char* op) {
  const int64_t batch = p.size(0);
  const size_t stride =
      (broja::workspace_bytes<double>(int(p.size(1)), int(p.size(2)), int(p.size(3)), kElimination) + 63) & ~size_t(63);
  TORCH_CHECK(stride <= size_t(std::numeric_limits<int64_t>::max()) / size_t(batch), op,
              ": workspace too large for the CUDA backend, got ", p.sizes());
  return {at::empty({int64_t(stride) * batch}, p.options().dtype(at::kByte)), stride};
}

// Blocks of kThreadsPerBlock threads for one thread per joint.
unsigned blocks_for(int64_t batch, const char* op) {
  const int64_t blocks = (batch + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), op, ": batch too large, got ", batch);
  return unsigned(blocks);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cuda(const at::Tensor& p, double tol,
                                                                                        int64_t max_iter,
                                                                                        int64_t patience) {
  TORCH_CHECK(p.device().is_cuda(), "fastpid::broja_solve (CUDA): expected p on a CUDA device, got ", p.device());
  check_broja_solve_args(p, max_iter, patience);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  check_workspace("fastpid::broja_solve", n1, n2, ny, kElimination);

  const c10::cuda::CUDAGuard device_guard(p.device());
  auto lam1 = at::empty({batch, n1, ny}, p.options());
  auto lam2 = at::empty({batch, n2, ny}, p.options());
  auto w = at::empty({batch, n1, n2}, p.options());
  auto iterations = at::empty({batch}, p.options().dtype(at::kLong));
  auto converged = at::empty({batch}, p.options().dtype(at::kBool));
  if (batch == 0) return {lam1, lam2, w, iterations, converged};

  constexpr const char* op = "fastpid::broja_solve";
  const auto [workspace, stride] = joint_workspaces(p, op);
  // The current stream (at::cuda::getCurrentCUDAStream is this same function).
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  broja_solve_kernel<<<blocks_for(batch, op), kThreadsPerBlock, 0, stream>>>(
      p.const_data_ptr<double>(), batch, int(n1), int(n2), int(ny), tol, int(max_iter), int(patience),
      static_cast<char*>(workspace.mutable_data_ptr()), stride, lam1.mutable_data_ptr<double>(),
      lam2.mutable_data_ptr<double>(), w.mutable_data_ptr<double>(), iterations.mutable_data_ptr<int64_t>(),
      converged.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {lam1, lam2, w, iterations, converged};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cuda(const at::Tensor& p,
                                                                                  const at::Tensor& lam1,
                                                                                  const at::Tensor& lam2,
                                                                                  const at::Tensor& w) {
  TORCH_CHECK(p.device().is_cuda(), "fastpid::broja_certificate (CUDA): expected p on a CUDA device, got ", p.device());
  check_broja_certificate_args(p, lam1, lam2, w);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);

  const c10::cuda::CUDAGuard device_guard(p.device());
  auto q = at::empty_like(p);
  auto value = at::empty({batch}, p.options());
  auto gap = at::empty({batch}, p.options());
  auto entropies = at::empty({batch, 4}, p.options());
  if (batch == 0) return {q, value, gap, entropies};

  constexpr const char* op = "fastpid::broja_certificate";
  const auto [workspace, stride] = joint_workspaces(p, op);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  broja_certificate_kernel<<<blocks_for(batch, op), kThreadsPerBlock, 0, stream>>>(
      p.const_data_ptr<double>(), lam1.const_data_ptr<double>(), lam2.const_data_ptr<double>(),
      w.const_data_ptr<double>(), batch, int(n1), int(n2), int(ny), static_cast<char*>(workspace.mutable_data_ptr()),
      stride, q.mutable_data_ptr<double>(), value.mutable_data_ptr<double>(), gap.mutable_data_ptr<double>(),
      entropies.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {q, value, gap, entropies};
}

}  // namespace fastpid
