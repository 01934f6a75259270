// Argument checks shared by the CPU and CUDA implementations of the fastpid ops.
#pragma once

#include <limits>

#include <ATen/ATen.h>

namespace fastpid {

// p: float64, contiguous, (B, n1, n2, ny) with positive alphabet sizes small
// enough for the int-indexed per-joint arrays (the largest holds n1 n2 ny²
// entries).  The device is checked by each implementation.
inline void check_joint_arg(const char* op, const at::Tensor& p) {
  TORCH_CHECK(p.scalar_type() == at::kDouble, op, ": expected p of dtype float64, got ", p.scalar_type());
  TORCH_CHECK(p.dim() == 4, op, ": expected p of shape (B, n1, n2, ny), got ", p.sizes());
  TORCH_CHECK(p.is_contiguous(), op, ": expected a contiguous p (call .contiguous())");
  const int64_t n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  TORCH_CHECK(n1 > 0 && n2 > 0 && ny > 0, op, ": alphabet sizes must be positive, got ", p.sizes());
  TORCH_CHECK(n1 * n2 * ny * ny <= std::numeric_limits<int>::max(), op, ": joint too large, got ", p.sizes());
}

// A tensor that goes with the joint p (checked first): float64, contiguous, on
// p's device, of shape `shape` (named `shape_name` in the message).
inline void check_arg_of_joint(const char* op, const at::Tensor& p, const char* name, const at::Tensor& tensor,
                               const char* shape_name, at::IntArrayRef shape) {
  TORCH_CHECK(tensor.scalar_type() == at::kDouble, op, ": expected ", name, " of dtype float64, got ",
              tensor.scalar_type());
  TORCH_CHECK(tensor.is_contiguous(), op, ": expected a contiguous ", name);
  TORCH_CHECK(tensor.device() == p.device(), op, ": expected ", name, " on ", p.device(), " like p, got ",
              tensor.device());
  TORCH_CHECK(tensor.sizes() == shape, op, ": expected ", name, " ", shape_name, " = ", shape, " for p ",
              p.sizes(), ", got ", tensor.sizes());
}

// p as check_joint_arg; max_iter and patience non-negative ints.
inline void check_broja_solve_args(const at::Tensor& p, int64_t max_iter, int64_t patience) {
  constexpr const char* op = "fastpid::broja_solve";
  check_joint_arg(op, p);
  TORCH_CHECK(max_iter >= 0 && max_iter <= std::numeric_limits<int>::max(), op,
              ": max_iter must be a non-negative int, got ", max_iter);
  TORCH_CHECK(patience >= 0 && patience <= std::numeric_limits<int>::max(), op,
              ": patience must be a non-negative int, got ", patience);
}

// p as check_joint_arg, with a dual solution lam1 (B, n1, ny), lam2 (B, n2, ny).
inline void check_joint_and_duals(const char* op, const at::Tensor& p, const at::Tensor& lam1,
                                  const at::Tensor& lam2) {
  check_joint_arg(op, p);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  check_arg_of_joint(op, p, "lam1", lam1, "(B, n1, ny)", {batch, n1, ny});
  check_arg_of_joint(op, p, "lam2", lam2, "(B, n2, ny)", {batch, n2, ny});
}

// p, lam1, lam2 as check_joint_and_duals; grad_atoms (B, 5).
inline void check_broja_backward_args(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                                      const at::Tensor& grad_atoms) {
  constexpr const char* op = "fastpid::broja_backward";
  check_joint_and_duals(op, p, lam1, lam2);
  check_arg_of_joint(op, p, "grad_atoms", grad_atoms, "(B, 5)", {p.size(0), 5});
}

// p, lam1, lam2 as check_joint_and_duals; w (B, n1, n2).
inline void check_broja_certificate_args(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                                         const at::Tensor& w) {
  constexpr const char* op = "fastpid::broja_certificate";
  check_joint_and_duals(op, p, lam1, lam2);
  check_arg_of_joint(op, p, "w", w, "(B, n1, n2)", {p.size(0), p.size(1), p.size(2)});
}

}  // namespace fastpid
