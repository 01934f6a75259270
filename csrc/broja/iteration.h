// The interior-point iteration on one joint (docs/pid-math.md, "The
// interior-point iteration" and "Solving the Newton system"; fastpid/solver.py
// has the step rules): products with the Newton matrix and iterative
// refinement, the predictor-corrector step, the safeguards, and solve_joint
// with its stopping rules.  What is particular to this code:
//
// - The gauge pins λ2 at the heaviest x2 of each target value (first index on
//   ties, like torch.argmax); masked variables are removed from the system.
// - Refinement: a step is taken only while the componentwise backward error
//   exceeds kRefinementBerr ulps (the reference always takes all of them);
//   this skips most steps and changes no iteration count.
// - The certificate is taken only where it can decide something: at iterates
//   whose complementarity Σ_k w_k h_k is at most kCertifyAbove × max(tol,
//   kStallGap), at the last iteration allowed and where a step fails.
// - Where the reference can make no further progress (a factorisation that
//   fails even with the largest shift, a non-finite step, no acceptable step
//   length) the joint stops with its best iterate, as the reference's does;
//   NaN never reaches the returned values.
#pragma once

#include "certificate.h"
#include "pairs.h"
#include "schur.h"

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// The Newton matrix factorised, with the diagonal shift `shift`, and solved by
// the joint's elimination.  The pairs elimination orders the pairs by the sign
// of their c, a branch on values: joints in vector lanes (csrc/cpu/lanes.h)
// always eliminate a side.  Device code has no pairs elimination (the CUDA
// kernel eliminates a side: csrc/cuda/broja_cuda.cu), so that its registers
// are those of the side elimination; nor has a team's copy (csrc/broja_block.h).
#if defined(__CUDA_ARCH__) || FASTPID_TEAM
template <typename T>
constexpr bool kPairsHere = false;
#else
template <typename T>
constexpr bool kPairsHere = kScalar<T>;
#endif
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> factor(Joint<T>& J, T shift) {
  if constexpr (kPairsHere<T>)
    if (J.elimination == Elimination::kPairs) return pairs_factor(J, shift);
  return side_factor(J, shift);
}
template <typename T>
FASTPID_HOST_DEVICE inline void solve_factored(Joint<T>& J, ConstPtr<T> r1, ConstPtr<T> r2, Ptr<T> x1, Ptr<T> x2) {
  if constexpr (kPairsHere<T>)
    if (J.elimination == Elimination::kPairs) return pairs_solve(J, r1, r2, x1, x2);
  side_solve(J, r1, r2, x1, x2);
}

// solver._cholesky_with_shift's factorisation: no shift, then 1e-14, raised ×100 while
// the factorisation fails, at most kMaxShiftRaises attempts in all.  (Lanes:
// each joint keeps the shift that worked for it; a factorisation repeated with
// the same shift gives the same factor.)
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> factor_with_shift(Joint<T>& J) {
  for (int k = J.team.rank(); k < J.np; k += J.team.size()) J.c[k] = J.pair[k] ? J.w[k] / J.h[k] - J.w[k] : T(0);
  J.team.sync();
  T shift = T(0);
  Mask<T> ok = factor(J, shift);
  for (int attempt = 1; attempt < kMaxShiftRaises && !all_(ok); ++attempt) {
    shift = where(ok, shift, where(shift > T(0), shift * T(100), T(kRegularization)));
    ok = factor(J, shift);
  }
  return ok;
}

// (e1, e2) += M (x1, x2) and (m1, m2) += |M| |x| (the bound below), pair by
// pair, over the cells only (s and q vanish off them); Dense as in pair_softmax.
// Each pair's c_k ⟨s_k, x⟩ and its bound first (J.pair_terms), then the sums by
// rows and columns.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void add_products(Joint<T>& J, ConstPtr<T> x1, ConstPtr<T> x2, Ptr<T> e1, Ptr<T> e2,
                                             Ptr<T> m1, Ptr<T> m2) {
  const int n2 = J.n2, ny = J.ny, np = J.np, pairs = pairs_with_cells<Dense>(J);
  const Team team = J.team;
  Ptr<T> dots = J.pair_terms;
  Ptr<T> dots_abs = J.pair_terms + np;
  for (int v = team.rank(); v < pairs; v += team.size()) {
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> sk = J.s + c.k * ny;
    ConstPtr<T> a = x1 + c.k / n2 * ny;
    ConstPtr<T> b = x2 + c.k % n2 * ny;
    T dot = T(0), dot_abs = T(0);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      dot += sk[y] * (a[y] + b[y]);
      dot_abs += sk[y] * (fabs_(a[y]) + fabs_(b[y]));
    }
    const T ck = J.c[c.k];
    dots[c.k] = dot * ck;
    dots_abs[c.k] = dot_abs * fabs_(ck);
  }
  team.sync();
  sum_by_rows_and_columns<Dense>(J, [&](const PairCells& c, int, int y, int a1, int b1, bool to_row, bool to_column) {
    const T sky = J.s[c.k * ny + y], qky = J.q[c.k * ny + y];
    const T a = x1[a1 + y], b = x2[b1 + y];
    const T value = qky * (a + b) + sky * dots[c.k];
    const T bound = qky * (fabs_(a) + fabs_(b)) + sky * dots_abs[c.k];
    if (to_row) {
      e1[a1 + y] += value;
      m1[a1 + y] += bound;
    }
    if (to_column) {
      e2[b1 + y] += value;
      m2[b1 + y] += bound;
    }
  });
}

// (e1, e2) ← (r1, r2) − M (x1, x2) on the free variables (0 elsewhere), with the
// unshifted matrix M = Σ_k E_kᵀ [diag(q_k) + c_k s_k s_kᵀ] E_k, and returns the
// componentwise backward error max_i |e_i| / (|M| |x| + |r|)_i (LAPACK's berr, with
// |M| bounded by Σ_k E_kᵀ |diag(q_k) + c_k s_k s_kᵀ| E_k).
template <typename T>
FASTPID_HOST_DEVICE inline T residual(Joint<T>& J, ConstPtr<T> r1, ConstPtr<T> r2, ConstPtr<T> x1, ConstPtr<T> x2,
                                      Ptr<T> e1, Ptr<T> e2) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  const Team team = J.team;
  Ptr<T> m1 = J.t1;  // |M| |x|
  Ptr<T> m2 = J.t2;
  for (int i = team.rank(); i < n1 * ny; i += team.size()) e1[i] = m1[i] = T(0);
  for (int i = team.rank(); i < n2 * ny; i += team.size()) e2[i] = m2[i] = T(0);
  if (J.dense)
    add_products<true>(J, x1, x2, e1, e2, m1, m2);
  else
    add_products<false>(J, x1, x2, e1, e2, m1, m2);
  T berr = T(0);
  for (int i = team.rank(); i < n1 * ny; i += team.size()) {
    e1[i] = J.on1[i] ? r1[i] - e1[i] : T(0);
    const T scale = m1[i] + fabs_(r1[i]);
    if (J.on1[i]) berr = where(scale > T(0), max_(berr, fabs_(e1[i]) / scale), berr);
  }
  for (int i = team.rank(); i < n2 * ny; i += team.size()) {
    e2[i] = J.free2[i] ? r2[i] - e2[i] : T(0);
    const T scale = m2[i] + fabs_(r2[i]);
    if (J.free2[i]) berr = where(scale > T(0), max_(berr, fabs_(e2[i]) / scale), berr);
  }
  return team.max(berr);
}

// The right-hand side's pair terms, s_k f_k with f_k = (rc_k + w_k primal_k) / h_k, added
// over the cells (Dense as in pair_softmax); rc is updated in place.  Each pair's f_k
// first (J.pair_terms), then the sums by rows and columns.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void add_pair_terms(Joint<T>& J, Ptr<T> rc) {
  const int ny = J.ny, pairs = pairs_with_cells<Dense>(J);
  const Team team = J.team;
  Ptr<T> f = J.pair_terms;
  for (int v = team.rank(); v < pairs; v += team.size()) {
    const int k = pair_cells<Dense>(J, v).k;
    rc[k] += J.w[k] * J.primal[k];
    f[k] = rc[k] / J.h[k];
  }
  team.sync();
  sum_by_rows_and_columns<Dense>(J, [&](const PairCells& c, int, int y, int a, int b, bool to_row, bool to_column) {
    const T value = J.s[c.k * ny + y] * f[c.k];
    if (to_row) J.rhs1[a + y] += value;
    if (to_column) J.rhs2[b + y] += value;
  });
}

// The slopes ⟨s_k, Δλ1 + Δλ2⟩ of the pairs with cells into slope (0 elsewhere).
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void pair_slopes(Joint<T>& J, Ptr<T> slope) {
  const int n2 = J.n2, ny = J.ny, pairs = pairs_with_cells<Dense>(J);
  const Team team = J.team;
  for (int k = team.rank(); k < J.np; k += team.size()) slope[k] = T(0);
  team.sync();
  for (int v = team.rank(); v < pairs; v += team.size()) {
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> sk = J.s + c.k * ny;
    ConstPtr<T> a = J.d1 + c.k / n2 * ny;
    ConstPtr<T> b = J.d2 + c.k % n2 * ny;
    T sum = T(0);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      sum += sk[y] * (a[y] + b[y]);
    }
    slope[c.k] = sum;
  }
}

// Δλ, Δw, Δh for the complementarity target rc (solver.newton_direction);
// rc is overwritten by rc + w (g + h).
template <typename T>
FASTPID_HOST_DEVICE inline void newton_direction(Joint<T>& J, Ptr<T> rc, Ptr<T> dw, Ptr<T> dh) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  const Team team = J.team;
  for (int i = team.rank(); i < n1 * ny; i += team.size()) J.rhs1[i] = J.r1[i];
  for (int i = team.rank(); i < n2 * ny; i += team.size()) J.rhs2[i] = J.r2[i];
  if (J.dense)
    add_pair_terms<true>(J, rc);
  else
    add_pair_terms<false>(J, rc);
  for (int i = team.rank(); i < n1 * ny; i += team.size()) J.rhs1[i] = J.on1[i] ? -J.rhs1[i] : T(0);
  for (int i = team.rank(); i < n2 * ny; i += team.size()) J.rhs2[i] = J.free2[i] ? -J.rhs2[i] : T(0);
  team.sync();
  solve_factored(J, J.rhs1, J.rhs2, J.d1, J.d2);
  // Iterative refinement with the unshifted matrix, at most kRefinementSteps
  // steps as in the reference, while the backward error exceeds a few ulps.
  const int steps = J.elimination == Elimination::kPairs ? kPairsRefinementSteps : kRefinementSteps;
  for (int t = 0; t < steps; ++t) {
    const T berr = residual(J, J.rhs1, J.rhs2, J.d1, J.d2, J.e1, J.e2);
    const Mask<T> refine = !(berr <= T(kRefinementBerr) * Limits<T>::epsilon());
    if (!any_(refine)) break;
    team.sync();  // the residual's reads of d are done
    solve_factored(J, J.e1, J.e2, J.f1, J.f2);
    for (int i = team.rank(); i < n1 * ny; i += team.size()) J.d1[i] = where(refine, J.d1[i] + J.f1[i], J.d1[i]);
    for (int i = team.rank(); i < n2 * ny; i += team.size()) J.d2[i] = where(refine, J.d2[i] + J.f2[i], J.d2[i]);
    team.sync();
  }
  if (J.dense)
    pair_slopes<true>(J, dw);
  else
    pair_slopes<false>(J, dw);
  team.sync();
  for (int k = team.rank(); k < J.np; k += team.size()) {
    const T slope = dw[k];
    dh[k] = J.pair[k] ? -J.primal[k] - slope : T(0);
    dw[k] = J.pair[k] ? (rc[k] + J.w[k] * slope) / J.h[k] : T(0);
  }
  team.sync();
}

// Largest α ≤ 1 with value + α delta ≥ 0 (solver.max_step).
template <typename T>
FASTPID_HOST_DEVICE inline T max_step(const Team& team, ConstPtr<T> value, ConstPtr<T> delta, int n) {
  // The min over the decreasing entries, NaN if any ratio is NaN; without branches on the values.
  T alpha = T(1), nan = T(0);
  Mask<T> any_nan = T(0) != T(0);
  for (int k = team.rank(); k < n; k += team.size()) {
    const T r = where(delta[k] < T(0), -value[k] / delta[k], T(1));
    any_nan = any_nan | (r != r);
    nan = where(r != r, r, nan);
    alpha = where(r < alpha, r, alpha);
  }
  return team.min(where(any_nan, nan, alpha));
}

// One predictor-corrector step, for the joints in `active`, from the current
// iterate (g, s, q and r of primal_residuals); g and s are then those of the
// new iterate.  False (per joint), with the iterate untouched, for joints not
// active and where the reference could make no more progress: the
// factorisation fails, the step is not finite, or every backtrack violates the
// constraints by more than allowed (the reference then takes α = 0, or steps
// into NaN, from where its best iterate can no longer change).
template <typename T>
FASTPID_HOST_DEVICE FASTPID_FORCE_INLINE Mask<T> step(Joint<T>& J, Mask<T> active) {
  const int np = J.np, n1 = J.n1, n2 = J.n2, ny = J.ny;
  const Team team = J.team;  // every loop split among its lanes, sums and extremes reduced
  const int lane = team.rank(), lanes = team.size();
  T mu = T(0);
  for (int k = lane; k < np; k += lanes) {
    J.primal[k] = J.pair[k] ? J.g[k] + J.h[k] : T(0);
    J.comp[k] = J.pair[k] ? J.w[k] * J.h[k] : T(0);
    mu += J.comp[k];
  }
  mu = team.sum(mu) / J.total_weight;
  Mask<T> ok = active & factor_with_shift(J);
  if (!any_(ok)) return ok;
  // Predictor: the affine-scaling direction.
  for (int k = lane; k < np; k += lanes) J.rc[k] = -J.comp[k];
  team.sync();
  newton_direction(J, J.rc, J.dw_a, J.dh_a);
  const T alpha_a = min_(max_step(team, J.w, J.dw_a, np), max_step(team, J.h, J.dh_a, np));
  T mu_a = T(0);
  for (int k = lane; k < np; k += lanes)
    if (J.pair[k]) mu_a += (J.w[k] + alpha_a * J.dw_a[k]) * (J.h[k] + alpha_a * J.dh_a[k]);
  mu_a = team.sum(mu_a) / J.total_weight;
  const T mu_floor = where(mu < Limits<T>::tiny(), Limits<T>::tiny(), mu);
  T ratio = mu_a / mu_floor;
  ratio = where(ratio < T(0), T(0), where(ratio > T(1), T(1), ratio));
  // σ ≥ kInfeasibilityCentring max |r_d| / μ (docs/pid-math.md, "Infeasibility and centring": μ falls no faster than
  // the marginal residual), at most 1.
  T infeasibility = T(0);
  for (int i = lane; i < n1 * ny; i += lanes) infeasibility = max_(infeasibility, fabs_(J.r1[i]));
  for (int i = lane; i < n2 * ny; i += lanes) infeasibility = max_(infeasibility, fabs_(J.r2[i]));
  infeasibility = team.max(infeasibility);
  T sigma_floor = T(kInfeasibilityCentring) * infeasibility / mu_floor;
  sigma_floor = where(sigma_floor > T(1), T(1), sigma_floor);  // NaN stays NaN
  const T sigma_mu = max_(ratio * ratio * ratio, sigma_floor) * mu;
  // Corrector: centring plus the second-order term.
  for (int k = lane; k < np; k += lanes)
    J.rc[k] = J.pair[k] ? sigma_mu * J.weight[k] - J.comp[k] - J.dw_a[k] * J.dh_a[k] : T(0);
  team.sync();
  newton_direction(J, J.rc, J.dw, J.dh);
  T fraction = T(1) - mu;
  fraction = where(fraction < T(kFractionToBoundary), T(kFractionToBoundary),
                   where(fraction > T(kMaxFractionToBoundary), T(kMaxFractionToBoundary), fraction));
  T alpha = fraction * min_(max_step(team, J.w, J.dw, np), max_step(team, J.h, J.dh, np));
  ok = ok & finite(alpha) & (alpha > T(0));
  Mask<T> finite_step = T(0) == T(0);
  for (int k = lane; k < np; k += lanes) finite_step = finite_step & finite(J.dw[k]) & finite(J.dh[k]);
  for (int i = lane; i < n1 * ny; i += lanes) finite_step = finite_step & finite(J.d1[i]);
  for (int i = lane; i < n2 * ny; i += lanes) finite_step = finite_step & finite(J.d2[i]);
  ok = ok & team.all(finite_step);
  if (!any_(ok)) return ok;
  // Safeguard: λ may leave the feasible set by no more than it already has or
  // kMaxViolation; halve the step until it does not.
  T allowed = T(kMaxViolation);
  for (int k = lane; k < np; k += lanes) allowed = max_(allowed, J.g[k]);
  allowed = team.max(allowed);
  for (int i = lane; i < n1 * ny; i += lanes) J.lam1_0[i] = J.lam1[i];
  for (int i = lane; i < n2 * ny; i += lanes) J.lam2_0[i] = J.lam2[i];
  Mask<T> pending = ok;  // joints still looking for a step length
  for (int t = 0; t < kMaxBacktracks && any_(pending); ++t) {
    if (t > 0) alpha = where(pending, alpha / T(2), alpha);
    for (int i = lane; i < n1 * ny; i += lanes) J.lam1[i] = where(ok, J.lam1_0[i] + alpha * J.d1[i], J.lam1_0[i]);
    for (int i = lane; i < n2 * ny; i += lanes) J.lam2[i] = where(ok, J.lam2_0[i] + alpha * J.d2[i], J.lam2_0[i]);
    team.sync();
    pair_softmax(J);
    Mask<T> within = T(0) == T(0);
    for (int k = lane; k < np; k += lanes) within = within & (J.g[k] <= allowed);
    pending = pending & !team.all(within);
  }
  const Mask<T> stepped = ok & !pending;
  if (any_(pending)) {
    for (int i = lane; i < n1 * ny; i += lanes) J.lam1[i] = where(stepped, J.lam1[i], J.lam1_0[i]);
    for (int i = lane; i < n2 * ny; i += lanes) J.lam2[i] = where(stepped, J.lam2[i], J.lam2_0[i]);
    team.sync();
    pair_softmax(J);
  }
  for (int k = lane; k < np; k += lanes) {
    J.w[k] = where(stepped, J.w[k] + alpha * J.dw[k], J.w[k]);
    J.h[k] = where(stepped, J.h[k] + alpha * J.dh[k], J.h[k]);
  }
  team.sync();
  return stepped;
}

// ---------------------------------------------------------------- the solve

template <typename T>
struct Result {
  T iterations;       // index of the returned (best) iterate
  Mask<T> converged;  // its gap ≤ tol
};

// Solves one joint p (n1 × n2 × ny, contiguous) as solver.solve does and writes
// the best iterate's λ1 (n1 × ny), λ2 (n2 × ny) and w (n1 × n2), solving the
// Newton systems by `elimination` (kSide or kPairs; kPairs for scalar T only).
// `workspace` holds workspace_bytes<T>(n1, n2, ny, elimination, team.size())
// bytes for each of the kInterleave joints that share it, this one at `lane`
// (0 where kInterleave is 1); it needs no initialisation.  Every lane of `team`
// calls it with the same arguments (a team's copy: csrc/broja_block.h).
template <typename T>
FASTPID_HOST_DEVICE FASTPID_FORCE_INLINE Result<T> solve_joint(const T* p, int n1, int n2, int ny, T tol, int max_iter,
                                                               int patience, Elimination elimination, void* workspace,
                                                               int lane, T* lam1_out, T* lam2_out, T* w_out,
                                                               const Team& team = Team()) {
  Joint<T> J;
  attach(J, workspace, lane, n1, n2, ny, elimination, team);
  set_up(J, p);
  const int c1 = n1 * ny, c2 = n2 * ny, np = J.np;
  const int first = team.rank(), lanes = team.size();  // each lane copies its own entries
  for (int i = first; i < c1; i += lanes) J.best_lam1[i] = J.lam1[i];
  for (int i = first; i < c2; i += lanes) J.best_lam2[i] = J.lam2[i];
  for (int k = first; k < np; k += lanes) J.best_w[k] = J.w[k];
  Result<T> result{T(0), T(0) != T(0)};
  T best_gap = Limits<T>::inf(), stalled = T(0);
  Mask<T> stopped = T(0) != T(0);  // done, or no step possible
  // The gap of the current iterate, for the joints in `take`: the best
  // iterate, the stall count and the stop (certificate_gap needs g, s current:
  // set_up and step leave them so; it also leaves the residuals step needs).
  const auto take_certificate = [&](Mask<T> take, int iteration) {
    const T gap = certificate_gap(J);
    const Mask<T> improved = gap < best_gap / T(2);
    const Mask<T> better = take & (gap < best_gap);
    if (any_(better)) {
      best_gap = where(better, gap, best_gap);
      for (int i = first; i < c1; i += lanes) J.best_lam1[i] = where(better, J.lam1[i], J.best_lam1[i]);
      for (int i = first; i < c2; i += lanes) J.best_lam2[i] = where(better, J.lam2[i], J.best_lam2[i]);
      for (int k = first; k < np; k += lanes) J.best_w[k] = where(better, J.w[k], J.best_w[k]);
      result.iterations = where(better, T(iteration), result.iterations);
    }
    stalled = where(take, where(gap != gap, T(patience), where(improved, T(0), stalled + T(1))), stalled);
    stopped = stopped | (take & ((best_gap <= tol) | ((stalled >= T(patience)) & (best_gap <= T(kStallGap)))));
  };
  const T far = T(kCertifyAbove) * max_(tol, T(kStallGap));
  for (int iteration = 0; iteration <= max_iter; ++iteration) {
    T complementarity = T(0);
    for (int k = first; k < np; k += lanes)
      if (J.pair[k]) complementarity += J.w[k] * J.h[k];
    complementarity = team.sum(complementarity);
    const Mask<T> near = iteration == max_iter ? T(0) == T(0) : !(complementarity > far);  // NaN: near
    const Mask<T> take = (!stopped) & near;
    if (any_(take))
      take_certificate(take, iteration);
    else
      primal_residuals(J);
    if (all_(stopped) || iteration == max_iter) break;
    const Mask<T> failed = (!stopped) & !step(J, !stopped);                 // iterate (and g, s) untouched
    if (any_(failed & !take)) take_certificate(failed & !take, iteration);  // it stops with its best iterate
    stopped = stopped | failed;
    if (all_(stopped)) break;
  }
  result.converged = best_gap <= tol;
  for (int i = first; i < c1; i += lanes) lam1_out[i] = J.best_lam1[i];
  for (int i = first; i < c2; i += lanes) lam2_out[i] = J.best_lam2[i];
  for (int k = first; k < np; k += lanes) w_out[k] = J.best_w[k];
  return result;
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
