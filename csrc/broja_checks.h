// Argument checks and outputs shared by the CPU and CUDA implementations of the fastpid ops.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>

#include "broja/joint.h"

namespace fastpid {
// Once per copy of the solver (FASTPID_ISA, csrc/broja/common.h): the checks name
// its types and workspace sizes, which are distinct entities in each copy.
inline namespace FASTPID_ISA {

// p: float64, contiguous, (B, n1, n2, ny) with positive alphabet sizes.  The
// device is checked by each implementation, the size of the solver's
// workspace by check_workspace.
inline void check_joint_arg(const char* op, const at::Tensor& p) {
  TORCH_CHECK(p.scalar_type() == at::kDouble, op, ": expected p of dtype float64, got ", p.scalar_type());
  TORCH_CHECK(p.dim() == 4, op, ": expected p of shape (B, n1, n2, ny), got ", p.sizes());
  TORCH_CHECK(p.is_contiguous(), op, ": expected a contiguous p (call .contiguous())");
  const int64_t n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  TORCH_CHECK(n1 > 0 && n2 > 0 && ny > 0, op, ": alphabet sizes must be positive, got ", p.sizes());
}

// The memory one joint's solver workspace may take: FASTPID_MEMORY_GIB GiB
// (default kDefaultMemoryGiB).
constexpr double kDefaultMemoryGiB = 8;
inline double memory_budget_bytes() {
  const char* setting = std::getenv("FASTPID_MEMORY_GIB");
  const double gib = setting != nullptr ? std::atof(setting) : kDefaultMemoryGiB;
  return (gib > 0 ? gib : kDefaultMemoryGiB) * double(1 << 30);
}

inline const char* elimination_name(broja::Elimination elimination) {
  return elimination == broja::Elimination::kPairs  ? "pair elimination"
         : elimination == broja::Elimination::kSide ? "side elimination"
                                                    : "certificate";
}

// Bytes of the workspace of one n1 × n2 × ny joint solved with `elimination`
// (broja::workspace_bytes), after checking that it can be solved: every
// per-joint array within the solver's index range (2^31 − 1 elements, int
// indices; 16 GiB of float64) and the workspace within the memory budget.
// Raises ValueError (TORCH_CHECK_VALUE) naming the joint, the memory it needs
// and the budget otherwise.
inline int64_t check_workspace(const char* op, int64_t n1, int64_t n2, int64_t ny, broja::Elimination elimination) {
  TORCH_CHECK_VALUE(n1 > 0 && n2 > 0 && ny > 0, op, ": alphabet sizes must be positive, got ", n1, "×", n2, "×", ny);
  // Element counts in double: no overflow whatever the sizes.
  const double a = double(n1), b = double(n2), c = double(ny), pairs = a * b, cells = pairs * c;
  const double e = std::max(a, b) * c, k = std::min(a, b) * c, pad = broja::kPadding * 2;
  double largest = cells;
  if (elimination == broja::Elimination::kSide) largest = std::max({largest, e * (k + pad), (k + pad) * (k + pad)});
  if (elimination == broja::Elimination::kPairs)
    largest = std::max({largest, c * (a + b) * (a + b), (pairs + pad) * (pairs + pad)});
  const std::string joint = std::to_string(n1) + "×" + std::to_string(n2) + "×" + std::to_string(ny);
  TORCH_CHECK_VALUE(largest < double(std::numeric_limits<int>::max()), op, ": a ", joint,
                    " joint is beyond the solver's index range: its ", elimination_name(elimination),
                    " needs an array of ", largest, " elements, at most 2^31 − 1 are supported");
  const double bytes = double(broja::workspace_bytes<double>(int(n1), int(n2), int(ny), elimination));
  const double budget = memory_budget_bytes();
  TORCH_CHECK_VALUE(bytes <= budget, op, ": a ", joint, " joint needs ", bytes / double(1 << 30),
                    " GiB of solver workspace (", elimination_name(elimination), "), more than the memory budget of ",
                    budget / double(1 << 30), " GiB; set the environment variable FASTPID_MEMORY_GIB to raise it");
  return int64_t(bytes);
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
  TORCH_CHECK(tensor.sizes() == shape, op, ": expected ", name, " ", shape_name, " = ", shape, " for p ", p.sizes(),
              ", got ", tensor.sizes());
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
inline void check_joint_and_duals(const char* op, const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2) {
  check_joint_arg(op, p);
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  check_workspace(op, n1, n2, ny, broja::Elimination::kNone);
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

// The outputs of fastpid::broja_solve for the joints p (B, n1, n2, ny), unset, on
// p's device: lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2), iterations (B)
// int64, converged (B) bool.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_solve_outputs(const at::Tensor& p) {
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  return {at::empty({batch, n1, ny}, p.options()), at::empty({batch, n2, ny}, p.options()),
          at::empty({batch, n1, n2}, p.options()), at::empty({batch}, p.options().dtype(at::kLong)),
          at::empty({batch}, p.options().dtype(at::kBool))};
}

// The outputs of fastpid::broja_certificate likewise: q like p, value (B), gap (B), entropies (B, 4).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_certificate_outputs(const at::Tensor& p) {
  const int64_t batch = p.size(0);
  return {at::empty_like(p), at::empty({batch}, p.options()), at::empty({batch}, p.options()),
          at::empty({batch, 4}, p.options())};
}

}  // namespace FASTPID_ISA
}  // namespace fastpid
