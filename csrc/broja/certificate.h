// The duality-gap certificate of an iterate (docs/pid-math.md, "Certificate"):
// Q rounded onto the polytope, f(Q), the dual made feasible; and the entropies
// that turn f(Q) into the atoms.
#pragma once

#include "joint.h"

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// ---------------------------------------------------------------- certificate

// q = w s and the residuals r = marginals(q) − (P1, P2) of the current
// iterate, given s of pair_softmax (the Newton step needs them); leaves the
// marginals of q in t1, t2.  Over every (pair, y): s vanishes off the cells.
template <typename T>
FASTPID_HOST_DEVICE inline void primal_residuals(Joint<T>& J) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  const Team team = J.team;
  Ptr<T> rows = J.t1;
  Ptr<T> cols = J.t2;
  for (int i = team.rank(); i < n1 * ny; i += team.size()) rows[i] = T(0);
  for (int i = team.rank(); i < n2 * ny; i += team.size()) cols[i] = T(0);
  team.sync();
  sum_by_rows_and_columns<true>(J, [&](const PairCells& c, int, int y, int a, int b, bool to_row, bool to_column) {
    if (to_row) J.q[c.k * ny + y] = J.w[c.k] * J.s[c.k * ny + y];  // the row pass comes first
    const T v = J.q[c.k * ny + y];
    if (to_row) rows[a + y] += v;
    if (to_column) cols[b + y] += v;
  });
  for (int i = team.rank(); i < n1 * ny; i += team.size()) J.r1[i] = rows[i] - J.p1[i];
  for (int i = team.rank(); i < n2 * ny; i += team.size()) J.r2[i] = cols[i] - J.p2[i];
  team.sync();
}

// The duality gap of the current iterate (solver.certificate), given g, s of
// pair_softmax and the residuals of primal_residuals.  Also leaves the rounded
// Q in qr and f(Q) in *value.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline T certificate_gap_over(Joint<T>& J, T* value_out) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, pairs = pairs_with_cells<Dense>(J);
  Ptr<T> rows = J.t1;
  Ptr<T> cols = J.t2;
  // Rounding: rows scaled down to P1, then columns to P2, then the rank-one deficit.
  for (int i = 0; i < n1 * ny; ++i) rows[i] = where(rows[i] > J.p1[i], J.p1[i] / rows[i], T(1));
  for (int i = 0; i < n2 * ny; ++i) cols[i] = T(0);
  for (int v = 0; v < pairs; ++v) {  // off the cells Q stays 0 (set_up_support)
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> scale = rows + c.k / n2 * ny;
    Ptr<T> ck = cols + c.k % n2 * ny;
    ConstPtr<T> qk = J.q + c.k * ny;
    Ptr<T> out = J.qr + c.k * ny;
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      out[y] = qk[y] * scale[y];
      ck[y] += out[y];
    }
  }
  for (int i = 0; i < n2 * ny; ++i) cols[i] = where(cols[i] > J.p2[i], J.p2[i] / cols[i], T(1));
  // Deficits P1 − Σ_x2 Q, P2 − Σ_x1 Q of the scaled Q.
  Ptr<T> deficit1 = J.rhs1;  // free until the Newton step
  Ptr<T> deficit2 = J.rhs2;
  for (int i = 0; i < n1 * ny; ++i) deficit1[i] = T(0);
  for (int i = 0; i < n2 * ny; ++i) deficit2[i] = T(0);
  for (int v = 0; v < pairs; ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> scale = cols + c.k % n2 * ny;
    Ptr<T> a = deficit1 + c.k / n2 * ny;
    Ptr<T> b = deficit2 + c.k % n2 * ny;
    Ptr<T> out = J.qr + c.k * ny;
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      out[y] *= scale[y];
      a[y] += out[y];
      b[y] += out[y];
    }
  }
  // Non-negative in exact arithmetic; clamp the rounding error (NaN stays NaN).
  for (int i = 0; i < n1 * ny; ++i) {
    const T d = J.p1[i] - deficit1[i];
    deficit1[i] = where(d < T(0), T(0), d);
  }
  for (int i = 0; i < n2 * ny; ++i) {
    const T d = J.p2[i] - deficit2[i];
    deficit2[i] = where(d < T(0), T(0), d);
  }
  // Q += deficit1 deficit2 / total(y), as (deficit1 / total) deficit2; off the
  // cells Q and one of the deficits vanish, so they stay 0.
  Ptr<T> total = J.u;
  for (int y = 0; y < ny; ++y) {
    T sum = T(0);
    for (int x1 = 0; x1 < n1; ++x1) sum += deficit1[x1 * ny + y];
    total[y] = where(sum > T(0), sum, T(1));
  }
  for (int x1 = 0; x1 < n1; ++x1)
    for (int y = 0; y < ny; ++y) deficit1[x1 * ny + y] /= total[y];
  if (!Dense)
    for (int k = 0; k < J.np; ++k) J.pair_sum[k] = T(0);  // pairs without cells
  for (int v = 0; v < pairs; ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> a = deficit1 + c.k / n2 * ny;
    ConstPtr<T> b = deficit2 + c.k % n2 * ny;
    Ptr<T> out = J.qr + c.k * ny;
    Ptr<T> listed = J.z + c.start;  // Q on the listed cells, for Σ Q log Q (dense: unused)
    T mass = T(0);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      const T q = out[y] + a[y] * b[y];
      out[y] = q;
      if (!Dense) listed[i] = q;
      mass += q;
    }
    J.pair_sum[c.k] = mass;
  }
  const T value = (Dense ? sum_xlogx(J.qr, J.np * ny) : sum_xlogx(J.z, J.n_cells)) - sum_xlogx(J.pair_sum, J.np);
  // Dual objective at λ made feasible: λ1(x1, ·) − max(0, max_x2 g).
  T dual = T(0);
  for (int x1 = 0; x1 < n1; ++x1) {
    T m = T(0);
    for (int x2 = 0; x2 < n2; ++x2) {
      const T gk = J.g[x1 * n2 + x2];
      m = where(((gk > m) | (gk != gk)) & (m == m), gk, m);
    }
    for (int y = 0; y < ny; ++y) dual += (J.lam1[x1 * ny + y] - m) * J.p1[x1 * ny + y];
  }
  for (int i = 0; i < n2 * ny; ++i) dual += J.lam2[i] * J.p2[i];
  *value_out = value;
  return value - dual;
}
// The same from w, g and s (primal_residuals first); in a team by one lane, as
// its sums run over pairs that other lanes' rows and columns share.
template <typename T>
FASTPID_HOST_DEVICE inline T certificate_gap(Joint<T>& J, T* value_out = nullptr) {
  primal_residuals(J);
  T value = T(0), gap = T(0);
  if (J.team.leader()) gap = J.dense ? certificate_gap_over<true>(J, &value) : certificate_gap_over<false>(J, &value);
  gap = J.team.share(gap);
  if (value_out != nullptr) *value_out = J.team.share(value);
  return gap;
}

// H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2) of the joint p in nats, into out[0..3]
// (information.conditional_entropies), from the marginals of set_up_support:
// H(Y|X) = Σ_x P(x) log P(x) − Σ_{x,y} P(x, y) log P(x, y).
template <typename T>
FASTPID_HOST_DEVICE inline void conditional_entropies(Joint<T>& J, const T* p, T* out) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, np = J.np;
  for (int k = 0; k < np; ++k) {  // P(x1, x2), P(x1), P(x2) into scratch
    T sum = T(0);
    for (int y = 0; y < ny; ++y) sum += p[k * ny + y];
    J.pair_sum[k] = sum;
  }
  for (int x1 = 0; x1 < n1; ++x1) {
    T sum = T(0);
    for (int y = 0; y < ny; ++y) sum += J.p1[x1 * ny + y];
    J.t1[x1] = sum;
  }
  for (int x2 = 0; x2 < n2; ++x2) {
    T sum = T(0);
    for (int y = 0; y < ny; ++y) sum += J.p2[x2 * ny + y];
    J.t2[x2] = sum;
  }
  out[0] = -sum_xlogx(J.py, ny);
  out[1] = sum_xlogx(J.t1, n1) - sum_xlogx(J.p1, n1 * ny);
  out[2] = sum_xlogx(J.t2, n2) - sum_xlogx(J.p2, n2 * ny);
  out[3] = sum_xlogx(J.pair_sum, np) - sum_xlogx(p, np * ny);
}

// The certificate of a solution λ1 (n1 × ny), λ2 (n2 × ny), w (n1 × n2) of the
// joint p, as solver.certificate: Q rounded onto Δ_P in q_out (n1 × n2 × ny),
// f(Q) in *value_out; returns the gap f(Q) − dual(λ made feasible) (nats).
// With it, the entropies that turn f(Q) into the atoms (conditional_entropies)
// in entropies_out[0..3].  Takes workspace_bytes<T>(n1, n2, ny, Elimination::kNone) bytes,
// as solve_joint.
template <typename T>
FASTPID_HOST_DEVICE inline T certify_joint(const T* p, int n1, int n2, int ny, const T* lam1, const T* lam2, const T* w,
                                           void* workspace, int lane, T* q_out, T* value_out, T* entropies_out) {
  Joint<T> J;
  attach(J, workspace, lane, n1, n2, ny, Elimination::kNone);
  set_up_support(J, p);
  conditional_entropies(J, p, entropies_out);
  for (int i = 0; i < n1 * ny; ++i) J.lam1[i] = lam1[i];
  for (int i = 0; i < n2 * ny; ++i) J.lam2[i] = lam2[i];
  for (int k = 0; k < J.np; ++k) J.w[k] = w[k];
  pair_softmax(J);
  const T gap = certificate_gap(J, value_out);
  for (int i = 0; i < J.np * ny; ++i) q_out[i] = J.qr[i];
  return gap;
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
