// The CUDA implementation of fastpid::broja_backward (registered in csrc/fastpid.cpp
// when the extension is built with CUDA, i.e. with WITH_CUDA defined).
#pragma once

#include <ATen/core/Tensor.h>

namespace fastpid {

// As broja_backward_cpu (csrc/cpu/broja_backward_cpu.h), on a CUDA device: one
// thread per joint running csrc/broja_backward.h.
at::Tensor broja_backward_cuda(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                               const at::Tensor& grad_atoms);

}  // namespace fastpid
