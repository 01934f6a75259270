// fastpid::broja_solve_interleaved and fastpid::broja_certificate_interleaved:
// the CUDA ops' code and workspace layout (csrc/broja_interleaved.h) run on the
// CPU, joint after joint, so that tests check them on machines without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// The outputs of broja_solve_cpu (csrc/cpu/broja_cpu.h) for p on the CPU, computed as the CUDA op computes them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_interleaved_cpu(const at::Tensor& p,
                                                                                                   double tol,
                                                                                                   int64_t max_iter,
                                                                                                   int64_t patience);

// The outputs of broja_certificate_cpu for p on the CPU, computed as the CUDA op computes them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_interleaved_cpu(const at::Tensor& p,
                                                                                             const at::Tensor& lam1,
                                                                                             const at::Tensor& lam2,
                                                                                             const at::Tensor& w);

}  // namespace fastpid
