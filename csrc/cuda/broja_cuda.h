// The CUDA implementations of fastpid::broja_solve and fastpid::broja_certificate
// (registered in csrc/fastpid.cpp when the extension is built with CUDA, i.e.
// with WITH_CUDA defined).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// Solves a batch p (B, n1, n2, ny) of joints, float64, contiguous, on a CUDA
// device, one thread per joint running csrc/broja.h (the code of the CPU op):
// (lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2) float64,
//  iterations (B,) int64, converged (B,) bool) on p's device, as fastpid.solver.solve.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_cuda(const at::Tensor& p, double tol,
                                                                                        int64_t max_iter,
                                                                                        int64_t patience);

// The certificate of solutions lam1, lam2, w of a batch p on a CUDA device, one
// thread per joint running csrc/broja.h's certify_joint: the outputs of
// broja_certificate_cpu (csrc/cpu/broja_certificate_cpu.h) on p's device.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cuda(const at::Tensor& p,
                                                                                  const at::Tensor& lam1,
                                                                                  const at::Tensor& lam2,
                                                                                  const at::Tensor& w);

}  // namespace fastpid
