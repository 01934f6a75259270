// fastpid::broja_forward (registered in csrc/fastpid.cpp): fastpid.pid's
// forward for the compiled backends, device-generic (csrc/broja_forward.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// (measures (..., 5): H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2), V in nats; gap (...)
// nats; q (..., n1, n2, ny); lam1 (..., n1, ny); lam2 (..., n2, ny), all
// float64; iterations (...) int64; converged (...) bool; fine (...) bool).
using BrojaForward =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The joints p (..., n1, n2, ny), float32 or float64, checked and rescaled as
// fastpid._checks.check_joint (sum_tolerance: its SUM_TOLERANCE for p's dtype),
// solved to a gap of tol nats (fastpid::broja_solve) and certified
// (fastpid::broja_certificate).  Where a joint fails the check (fine false),
// nothing is solved and every other output is empty.
BrojaForward broja_forward(const at::Tensor& p, bool normalize, double sum_tolerance, double tol, int64_t max_iter,
                           int64_t patience);

}  // namespace fastpid
