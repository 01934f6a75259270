// The CPU implementation of fastpid::broja_backward (registered in csrc/fastpid.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace fastpid {

// ∂(Σ_a grad_atoms[b, a] atom_a)/∂p for a batch p (B, n1, n2, ny) of joints (any
// positive scale) with dual solutions lam1 (B, n1, ny), lam2 (B, n2, ny) and
// upstream gradients grad_atoms (B, 5) of (R, U1, U2, S, MI) in bits, all
// float64 and contiguous on the CPU: a float64 tensor shaped like p
// (csrc/broja_backward.h has the math).
at::Tensor broja_backward_cpu(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                              const at::Tensor& grad_atoms);

}  // namespace fastpid
