// The CUDA op fastpid::broja_solve_block: a thread block per team running
// csrc/broja_block.h, persistent: as many blocks as the device holds at once,
// each pulling joints from a counter and solving them in its own workspace
// (so that a joint that needs more iterations holds only its own block).
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that needs the cuBLAS/cuSPARSE headers
#include <c10/util/Exception.h>

#include <algorithm>

#include "../broja_block.h"  // the solver's team copy: no other solver header here
#include "broja_block_cuda.h"

namespace fastpid {
namespace {

__global__ void __launch_bounds__(block::kMaxLanes, 1)
    broja_solve_block_kernel(const block::SolveArgs args, unsigned long long* next_joint) {
  __shared__ unsigned long long joint;
  broja::Team team;
  char* workspace = args.workspace + size_t(blockIdx.x) * args.workspace_bytes;
  for (;;) {
    if (team.leader()) joint = atomicAdd(next_joint, 1ull);
    __syncthreads();
    const unsigned long long i = joint;
    __syncthreads();  // every lane has read it before the leader takes the next
    if (i >= static_cast<unsigned long long>(args.batch)) return;
    block::solve(args, int64_t(i), workspace, team);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_block_cuda(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience, int64_t lanes) {
  constexpr const char* op = "fastpid::broja_solve_block";
  TORCH_CHECK(p.device().is_cuda(), op, " (CUDA): expected p on a CUDA device, got ", p.device());
  const c10::cuda::CUDAGuard device_guard(p.device());
  int multiprocessors = 0, per_multiprocessor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, p.device().index()));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_multiprocessor, broja_solve_block_kernel, int(std::clamp<int64_t>(lanes, 1, block::kMaxLanes)), 0));
  TORCH_CHECK(per_multiprocessor > 0, op, ": a block of ", lanes, " threads does not fit a multiprocessor");
  const int64_t teams = int64_t(multiprocessors) * per_multiprocessor;
  return block::solve_batch(
      p, tol, max_iter, patience, lanes, teams, op, [&](const block::SolveArgs& args, int64_t teams) {
        const at::Tensor next_joint = at::zeros({1}, p.options().dtype(at::kLong));
        broja_solve_block_kernel<<<unsigned(teams), unsigned(args.lanes), 0, c10::cuda::getCurrentCUDAStream()>>>(
            args, reinterpret_cast<unsigned long long*>(next_joint.mutable_data_ptr<int64_t>()));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace fastpid
