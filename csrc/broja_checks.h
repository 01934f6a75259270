// Argument checks shared by the CPU and CUDA implementations of the fastpid ops.
#pragma once

#include <limits>
#include <utility>

#include <ATen/ATen.h>

namespace fastpid {

// p: float64, contiguous, (B, n1, n2, ny) with positive alphabet sizes small
// enough for the int-indexed per-joint arrays (the largest holds n1 n2 ny²
// entries); max_iter and patience non-negative ints.  The device is checked by
// each implementation.
inline void check_broja_solve_args(const at::Tensor& p, int64_t max_iter, int64_t patience) {
  TORCH_CHECK(p.scalar_type() == at::kDouble, "fastpid::broja_solve: expected p of dtype float64, got ",
              p.scalar_type());
  TORCH_CHECK(p.dim() == 4, "fastpid::broja_solve: expected p of shape (B, n1, n2, ny), got ", p.dim(),
              " dimensions");
  TORCH_CHECK(p.is_contiguous(), "fastpid::broja_solve: expected a contiguous p (call .contiguous())");
  const int64_t n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  TORCH_CHECK(n1 > 0 && n2 > 0 && ny > 0, "fastpid::broja_solve: alphabet sizes must be positive, got ",
              p.sizes());
  TORCH_CHECK(n1 * n2 * ny * ny <= std::numeric_limits<int>::max(),
              "fastpid::broja_solve: joint too large, got ", p.sizes());
  TORCH_CHECK(max_iter >= 0 && max_iter <= std::numeric_limits<int>::max(),
              "fastpid::broja_solve: max_iter must be a non-negative int, got ", max_iter);
  TORCH_CHECK(patience >= 0 && patience <= std::numeric_limits<int>::max(),
              "fastpid::broja_solve: patience must be a non-negative int, got ", patience);
}

// p (B, n1, n2, ny), lam1 (B, n1, ny), lam2 (B, n2, ny), grad_atoms (B, 5): float64, contiguous,
// on p's device (checked by each implementation).
inline void check_broja_backward_args(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                                      const at::Tensor& grad_atoms) {
  const std::pair<const char*, const at::Tensor*> args[] = {
      {"p", &p}, {"lam1", &lam1}, {"lam2", &lam2}, {"grad_atoms", &grad_atoms}};
  for (const auto& [name, tensor] : args) {
    TORCH_CHECK(tensor->scalar_type() == at::kDouble, "fastpid::broja_backward: expected ", name,
                " of dtype float64, got ", tensor->scalar_type());
    TORCH_CHECK(tensor->is_contiguous(), "fastpid::broja_backward: expected a contiguous ", name);
    TORCH_CHECK(tensor->device() == p.device(), "fastpid::broja_backward: expected ", name, " on ", p.device(),
                " like p, got ", tensor->device());
  }
  TORCH_CHECK(p.dim() == 4, "fastpid::broja_backward: expected p of shape (B, n1, n2, ny), got ", p.sizes());
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  TORCH_CHECK(lam1.sizes() == at::IntArrayRef({batch, n1, ny}) && lam2.sizes() == at::IntArrayRef({batch, n2, ny}) &&
                  grad_atoms.sizes() == at::IntArrayRef({batch, 5}),
              "fastpid::broja_backward: expected lam1 (B, n1, ny), lam2 (B, n2, ny), grad_atoms (B, 5) for p ",
              p.sizes(), ", got ", lam1.sizes(), ", ", lam2.sizes(), ", ", grad_atoms.sizes());
  TORCH_CHECK(n1 * n2 * ny <= std::numeric_limits<int>::max(), "fastpid::broja_backward: joint too large, got ",
              p.sizes());
}

// p (B, n1, n2, ny), lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2): float64,
// contiguous, on p's device (checked by each implementation).
inline void check_broja_certificate_args(const at::Tensor& p, const at::Tensor& lam1, const at::Tensor& lam2,
                                         const at::Tensor& w) {
  const std::pair<const char*, const at::Tensor*> args[] = {{"p", &p}, {"lam1", &lam1}, {"lam2", &lam2}, {"w", &w}};
  for (const auto& [name, tensor] : args) {
    TORCH_CHECK(tensor->scalar_type() == at::kDouble, "fastpid::broja_certificate: expected ", name,
                " of dtype float64, got ", tensor->scalar_type());
    TORCH_CHECK(tensor->is_contiguous(), "fastpid::broja_certificate: expected a contiguous ", name);
    TORCH_CHECK(tensor->device() == p.device(), "fastpid::broja_certificate: expected ", name, " on ",
                p.device(), " like p, got ", tensor->device());
  }
  TORCH_CHECK(p.dim() == 4, "fastpid::broja_certificate: expected p of shape (B, n1, n2, ny), got ", p.sizes());
  const int64_t batch = p.size(0), n1 = p.size(1), n2 = p.size(2), ny = p.size(3);
  TORCH_CHECK(lam1.sizes() == at::IntArrayRef({batch, n1, ny}) && lam2.sizes() == at::IntArrayRef({batch, n2, ny}) &&
                  w.sizes() == at::IntArrayRef({batch, n1, n2}),
              "fastpid::broja_certificate: expected lam1 (B, n1, ny), lam2 (B, n2, ny), w (B, n1, n2) for p ",
              p.sizes(), ", got ", lam1.sizes(), ", ", lam2.sizes(), ", ", w.sizes());
  TORCH_CHECK(n1 > 0 && n2 > 0 && ny > 0, "fastpid::broja_certificate: alphabet sizes must be positive, got ",
              p.sizes());
  TORCH_CHECK(n1 * n2 * ny * ny <= std::numeric_limits<int>::max(),
              "fastpid::broja_certificate: joint too large, got ", p.sizes());
}

}  // namespace fastpid
