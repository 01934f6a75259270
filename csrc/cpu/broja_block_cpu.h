// fastpid::broja_solve_block on the CPU: the block-per-joint CUDA op's code
// (csrc/broja_block.h) run by emulated teams, so that tests check it on
// machines without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// The outputs of broja_solve_cpu (csrc/cpu/broja_cpu.h) for p on the CPU, computed as the block-per-joint CUDA op
// computes them with teams of `lanes`.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_block_cpu(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience, int64_t lanes);

}  // namespace fastpid
