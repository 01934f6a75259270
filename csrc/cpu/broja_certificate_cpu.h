// The CPU implementation of fastpid::broja_certificate (registered in csrc/fastpid.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// The certificate of solutions lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2)
// of a batch p (B, n1, n2, ny) of normalised joints, all float64 and contiguous
// on the CPU, as fastpid.solver.certificate: (q (B, n1, n2, ny), Q rounded onto
// Δ_P; value (B,) = f(Q); gap (B,) = f(Q) − dual(λ made feasible); entropies
// (B, 4) = H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2) of p), in nats.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_cpu(const at::Tensor& p,
                                                                                 const at::Tensor& lam1,
                                                                                 const at::Tensor& lam2,
                                                                                 const at::Tensor& w);

}  // namespace fastpid
