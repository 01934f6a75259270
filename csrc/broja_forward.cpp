// fastpid::broja_forward: the forward of fastpid.pid for the compiled backends
// in one call, on any device that has the solve and certificate ops (CPU, CUDA).
//
// It checks and rescales the joints as fastpid._checks.check_joint does (the
// same ATen ops, so both accept the same joints and rescale them alike), then
// solves them (fastpid::broja_solve) and certifies the solution
// (fastpid::broja_certificate) without returning to Python in between.  A
// joint that fails the test is not solved: the outputs are then empty and
// `fine` says which joints failed, for fastpid._checks.raise_for_values to
// name the first and its problem.
#include "broja_forward.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

namespace fastpid {
namespace {

using Solve = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, double, int64_t,
                                                                                     int64_t);
using Certify = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                           const at::Tensor&, const at::Tensor&);

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// `sizes` followed by `more`.
std::vector<int64_t> shape(at::IntArrayRef sizes, std::initializer_list<int64_t> more) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out.insert(out.end(), more);
  return out;
}

}  // namespace

BrojaForward broja_forward(const at::Tensor& p, bool normalize, double sum_tolerance, double tol, int64_t max_iter,
                           int64_t patience) {
  constexpr const char* name = "fastpid::broja_forward";
  TORCH_CHECK(p.scalar_type() == at::kDouble || p.scalar_type() == at::kFloat, name,
              ": expected p of dtype float32 or float64, got ", p.scalar_type());
  TORCH_CHECK(p.dim() >= 3 && p.numel() > 0, name, ": expected p of shape (..., n1, n2, ny) with no empty axis, got ",
              p.sizes());
  const int64_t n1 = p.size(-3), n2 = p.size(-2), ny = p.size(-1);
  const at::IntArrayRef batch = p.sizes().slice(0, p.dim() - 3);
  // check_joint's test and rescaling.
  const at::Tensor flat = p.reshape({-1, n1 * n2 * ny});
  const at::Tensor total = flat.sum(1);
  const at::Tensor summed = normalize ? at::isfinite(total) & (total > 0) : (total - 1).abs() <= sum_tolerance;
  const at::Tensor fine = summed & (flat.amin(1) >= 0);
  if (!fine.all().item<bool>()) {
    const at::Tensor none = at::empty({0}, p.options().dtype(at::kDouble));
    return {none, none, none, none, none, none, none, fine.reshape(batch)};
  }
  const at::Tensor joint = (flat / total.unsqueeze(1)).to(at::kDouble).view({-1, n1, n2, ny});
  static const auto solve = op<Solve>("fastpid::broja_solve");
  static const auto certify = op<Certify>("fastpid::broja_certificate");
  const auto [lam1, lam2, w, iterations, converged] = solve.call(joint, tol, max_iter, patience);
  const auto [q, value, gap, entropies] = certify.call(joint, lam1, lam2, w);
  return {at::cat({entropies, value.unsqueeze(1)}, 1).view(shape(batch, {5})),
          gap.view(batch),
          q.view(p.sizes()),
          lam1.view(shape(batch, {n1, ny})),
          lam2.view(shape(batch, {n2, ny})),
          iterations.view(batch),
          converged.view(batch),
          fine.reshape(batch)};
}

}  // namespace fastpid
