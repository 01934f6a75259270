// The Newton system solved by eliminating the per-target-value blocks onto the
// pairs' capacitance system (docs/pid-math.md, "Pair elimination"): the
// matrix is M = D + Σ_k c_k u_k u_kᵀ with D block-diagonal over y, one block
// D_y of n1 + n2 variables per target value, and one rank-one term per pair,
// u_k = E_kᵀ s_k.  With G = Uᵀ D⁻¹ U, ρ = |c|^(1/2) and σ = sign(c) (+1 at 0),
//
//     M⁻¹ r = D⁻¹ (r − U z),   z = ρ u,   (σ + ρ G ρ) u = ρ Uᵀ D⁻¹ r.
//
// The capacitance matrix σ + ρ G ρ has as many negative eigenvalues as there
// are pairs with c < 0 (M is positive definite), so with those pairs last it
// factorises as Uᵀ diag(1, −1) U: Cholesky on the leading (c ≥ 0) block, then
// on the negated Schur complement of the trailing one.  Scalar T only.
#pragma once

#include "joint.h"

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// D_y on the free variables of y (J.yvars), factorised (Jacobi-scaled Cholesky
// with `shift` plus kPairsBlockShift: the capacitance formula is that of
// D + δ diag(D) + Σ c u uᵀ, and iterative refinement with M itself recovers M's
// solution), and its inverse written to F_y, zero off the free variables.
template <typename T>
FASTPID_HOST_DEVICE inline bool invert_block(Joint<T>& J, int y, T shift) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn, m = J.ycount[y];
  const int* vars = J.yvars + size_t(y) * nn;
  T* F = J.F + size_t(y) * nn * nn;
  for (size_t i = 0; i < size_t(nn) * nn; ++i) F[i] = T(0);
  if (m == 0) return true;
  int* position = J.position;
  for (int v = 0; v < nn; ++v) position[v] = -1;
  for (int i = 0; i < m; ++i) position[vars[i]] = i;
  T* A = J.block;
  for (int i = 0; i < m * nn; ++i) A[i] = T(0);
  const int* on1 = J.yon1 + y * n1;
  const int* on2 = J.yon2 + y * n2;
  for (int a = 0; a < J.yn1[y]; ++a) {
    const int x1 = on1[a], i = position[x1];
    for (int b = 0; b < J.yn2[y]; ++b) {
      const int x2 = on2[b], j = position[n1 + x2];
      const T q = J.q[(size_t(x1) * n2 + x2) * ny + y];
      A[i * nn + i] += q;
      if (j < 0) continue;  // the pinned λ2
      A[j * nn + j] += q;
      A[j * nn + i] = q;  // lower triangle: λ2 after λ1 in the list
    }
  }
  if (!cholesky_jacobi(A, nn, m, J.blockD, J.blockI, shift + T(kPairsBlockShift))) return false;
  // F = D L⁻ᵀ L⁻¹ D from the columns L⁻¹ e_j.
  for (int j = 0; j < m; ++j) {  // L⁻¹ e_j vanishes above j: the substitution starts there
    T* x = J.columns + j * size_t(nn);
    for (int i = 0; i < m; ++i) x[i] = T(i == j);
    for (int i = j; i < m; ++i) x[i] = (x[i] - dot(A + i * nn + j, x + j, i - j)) * J.blockI[i];
  }
  for (int a = 0; a < m; ++a)
    for (int b = a; b < m; ++b) {
      const int from = b;  // L⁻¹ e_a vanishes above a, L⁻¹ e_b above b ≥ a
      const T value = dot(J.columns + a * size_t(nn) + from, J.columns + b * size_t(nn) + from, m - from) *
                      J.blockD[a] * J.blockD[b];
      F[size_t(vars[a]) * nn + vars[b]] = value;
      F[size_t(vars[b]) * nn + vars[a]] = value;
    }
  return true;
}

// G = Uᵀ D⁻¹ U over the pairs, in J.cross: target value by target value,
// G[k][l] += s_k(y) s_l(y) (R_k[x1(l)] + R_k[n1 + x2(l)]) with R_k the sum of
// F_y's rows x1(k) and n1 + x2(k), for the pairs with cells at y, and
// l in the blocks of x1(l) ≥ x1(k) (the others by symmetry at the end).
template <typename T>
FASTPID_HOST_DEVICE inline void add_cross_terms(Joint<T>& J, int y) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn;
  const size_t np = size_t(J.np);
  const int* on1 = J.yon1 + y * n1;
  const int* on2 = J.yon2 + y * n2;
  const int m1 = J.yn1[y], m2 = J.yn2[y];
  const T* F = J.F + size_t(y) * nn * nn;
  T* sy = J.sy;  // s_l(y) by pair, 0 off the cells
  for (int a = 0; a < m1; ++a)
    for (int b = 0; b < m2; ++b) {
      const size_t l = size_t(on1[a]) * n2 + on2[b];
      sy[l] = J.s[l * ny + y];
    }
  T* R = J.row;
  for (int a = 0; a < m1; ++a) {
    const int x1 = on1[a];
    for (int b = 0; b < m2; ++b) {
      const int x2 = on2[b];
      const size_t k = size_t(x1) * n2 + x2;
      const T sk = sy[k];
      const T* f1 = F + size_t(x1) * nn;
      const T* f2 = F + size_t(n1 + x2) * nn;
      for (int v = 0; v < nn; ++v) R[v] = f1[v] + f2[v];
      T* Gk = J.cross + k * np;
      T* R2 = R + n1;  // scaled by s_k(y) once per pair
      for (int x2l = 0; x2l < n2; ++x2l) R2[x2l] *= sk;
      for (int a2 = a; a2 < m1; ++a2) {
        const int x1l = on1[a2];
        const T r1 = sk * R[x1l];
        T* out = Gk + size_t(x1l) * n2;
        const T* sl = sy + size_t(x1l) * n2;
        for (int x2l = 0; x2l < n2; ++x2l) out[x2l] += sl[x2l] * (r1 + R2[x2l]);
      }
    }
  }
  for (int a = 0; a < m1; ++a)  // back to 0 for the next target value
    for (int b = 0; b < m2; ++b) sy[size_t(on1[a]) * n2 + on2[b]] = T(0);
}

// Factorises the Newton matrix at the current iterate (needs s, q = w s, c)
// by the pair elimination: every D_y (with `shift` on its Jacobi-scaled
// diagonal), G, and the capacitance matrix (`shift` on each definite block).
// False if a factorisation breaks down.
template <typename T>
FASTPID_HOST_DEVICE inline bool pairs_factor(Joint<T>& J, T shift) {
  const int ny = J.ny, ld = J.ldC;
  const size_t np = size_t(J.np);
  for (size_t i = 0; i < np * np; ++i) J.cross[i] = T(0);
  for (size_t l = 0; l < np; ++l) J.sy[l] = T(0);
  for (int y = 0; y < ny; ++y) {
    if (!invert_block(J, y, shift)) return false;
    add_cross_terms(J, y);
  }
  const int n2 = J.n2;
  for (size_t k = 0; k < np; ++k)  // the blocks x1(l) < x1(k) from their mirror
    for (size_t l = 0; l < k / n2 * n2; ++l) J.cross[k * np + l] = J.cross[l * np + k];
  // Capacitance order: the pairs with cells, c ≥ 0 first.
  int n = 0;
  for (int k = 0; k < J.np; ++k)
    if (J.pair[k] && !(J.c[k] < T(0))) J.order[n++] = k;
  J.n_positive = n;
  for (int k = 0; k < J.np; ++k)
    if (J.pair[k] && J.c[k] < T(0)) J.order[n++] = k;
  J.n_order = n;
  T* C = J.cap;
  for (size_t i = 0; i < size_t(ld) * ld; ++i) C[i] = T(0);
  for (int a = 0; a < n; ++a) J.root[a] = sqrt_(fabs_(J.c[J.order[a]]));
  for (int a = 0; a < n; ++a) {
    const T* Ga = J.cross + size_t(J.order[a]) * np;
    T* Ca = C + size_t(a) * ld;
    for (int b = a; b < n; ++b) Ca[b] = J.root[a] * Ga[J.order[b]] * J.root[b];
    J.vk[a] = T(1) + Ca[a];  // Jacobi scaling from |σ| + ρ G ρ, at least 1
    Ca[a] += a < J.n_positive ? T(1) : T(-1);
  }
  scale_upper(C, ld, n, J.vk, J.capD, T(0));
  const int p = J.n_positive;
  for (int a = 0; a < p; ++a) C[size_t(a) * ld + a] += shift;
  if (!factor_upper(C, ld, n, 0, p, J.capI)) return false;
  for (int a = p; a < n; ++a) {  // the trailing Schur complement is negative definite: negate it
    T* Ca = C + size_t(a) * ld;
    for (int b = a; b < n; ++b) Ca[b] = -Ca[b];
    Ca[a] += shift;
  }
  return factor_upper(C, ld, n, p, n, J.capI);
}

// t_y = F_y r_y for every y, into J.ty (ny × nn), from (r1, r2) (zero where
// not free): rows of F_y over all nn variables (zero off the free ones), so
// that the products are contiguous.
template <typename T>
FASTPID_HOST_DEVICE inline void apply_block_inverses(Joint<T>& J, const T* r1, const T* r2) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn;
  T* rv = J.row;
  for (int y = 0; y < ny; ++y) {
    const int m = J.ycount[y];
    const int* vars = J.yvars + size_t(y) * nn;
    const T* F = J.F + size_t(y) * nn * nn;
    T* t = J.ty + size_t(y) * nn;
    for (int x = 0; x < n1; ++x) rv[x] = r1[size_t(x) * ny + y];
    for (int x = 0; x < n2; ++x) rv[n1 + x] = r2[size_t(x) * ny + y];
    for (int v = 0; v < nn; ++v) t[v] = T(0);
    for (int i = 0; i < m; ++i) t[vars[i]] = dot(F + size_t(vars[i]) * nn, rv, nn);
  }
}

// (x1, x2) ← M⁻¹ (r1, r2) with the factors of pairs_factor; r vanishes at
// variables that are not free, and x vanishes there too.
template <typename T>
FASTPID_HOST_DEVICE inline void pairs_solve(Joint<T>& J, const T* r1, const T* r2, T* x1, T* x2) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn, n = J.n_order, p = J.n_positive;
  apply_block_inverses(J, r1, r2);
  // b = ρ Uᵀ D⁻¹ r, Jacobi-scaled; u from the signed factor; z = ρ u.
  T* b = J.vk;
  for (int a = 0; a < n; ++a) {
    const int k = J.order[a], k1 = k / n2, k2 = k % n2;
    const T* sk = J.s + size_t(k) * ny;
    T sum = T(0);
    for (int y = 0; y < ny; ++y) {
      const T* t = J.ty + size_t(y) * nn;
      sum += sk[y] * (t[k1] + t[n1 + k2]);
    }
    b[a] = sum * J.root[a] * J.capD[a];
  }
  forward_upper(J.cap, J.ldC, n, J.capI, b);
  for (int a = p; a < n; ++a) b[a] = -b[a];
  backward_upper(J.cap, J.ldC, n, J.capI, b);
  // r − U z into (x1, x2), then x = D⁻¹ (r − U z).
  for (size_t i = 0; i < size_t(n1) * ny; ++i) x1[i] = r1[i];
  for (size_t i = 0; i < size_t(n2) * ny; ++i) x2[i] = r2[i];
  for (int a = 0; a < n; ++a) {
    const int k = J.order[a], k1 = k / n2, k2 = k % n2;
    const T z = b[a] * J.capD[a] * J.root[a];
    const T* sk = J.s + size_t(k) * ny;
    T* o1 = x1 + size_t(k1) * ny;
    T* o2 = x2 + size_t(k2) * ny;
    for (int y = 0; y < ny; ++y) {
      o1[y] -= sk[y] * z;
      o2[y] -= sk[y] * z;
    }
  }
  for (size_t i = 0; i < size_t(n1) * ny; ++i) x1[i] = J.on1[i] ? x1[i] : T(0);
  for (size_t i = 0; i < size_t(n2) * ny; ++i) x2[i] = J.free2[i] ? x2[i] : T(0);
  apply_block_inverses(J, x1, x2);
  for (int y = 0; y < ny; ++y) {
    const T* t = J.ty + size_t(y) * nn;
    for (int x = 0; x < n1; ++x) x1[size_t(x) * ny + y] = t[x];
    for (int x = 0; x < n2; ++x) x2[size_t(x) * ny + y] = t[n1 + x];
  }
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
