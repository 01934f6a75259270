// The CUDA implementation of fastpid::broja_solve_block (registered in
// csrc/fastpid.cpp when the extension is built with CUDA).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// Solves a batch p (B, n1, n2, ny) of joints, float64, contiguous, on a CUDA
// device, a thread block of `lanes` threads per joint running csrc/broja.h's
// solve_joint split among them (csrc/broja_block.h): the outputs of
// broja_solve_cuda (csrc/cuda/broja_cuda.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_block_cuda(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience, int64_t lanes);

}  // namespace fastpid
