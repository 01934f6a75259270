// The Newton system solved by eliminating one side (docs/pid-math.md, "Side
// elimination"): the ny×ny blocks of the larger side by Cholesky, the Schur
// complement on the other side's free variables by the blocked Cholesky.
#pragma once

#include "joint.h"

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// Factorises the Newton matrix M at the current iterate (needs s, q = w s and
// c) with the diagonal shift σ of solver._cholesky_with_shift: D M D + σ I with
// D = diag(M)^(-1/2), by eliminating the E side.  False (per joint) if a
// factorisation breaks down.
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> side_factor(Joint<T>& J, T shift) {
  const int ny = J.ny;
  const Team team = J.team;  // K blocks, then E blocks, split among its lanes
  const Side E = eliminated(J);
  const Side K = kept(J);
  const int nE = E.total, nK = K.total, ldK = J.ldK;
  Ptr<T> S = J.S;
  for (int i = team.rank(); i < ldK * ldK; i += team.size()) S[i] = T(0);
  team.sync();
  // The diagonal blocks of A_K: block b sums q_k[z] e_z + c_k s_k[z] s_k over the pairs of b.
  for (int b = team.rank(); b < K.n; b += team.size()) {
    const int mb = K.count[b], ob = K.offset[b];
    ConstPtr<int> zs = K.ys + b * ny;
    Ptr<T> sKb = J.sK;
    for (int e = 0; e < E.n; ++e) {
      const int k = e * J.stride_e + b * J.stride_k;
      if (!J.pair[k]) continue;
      ConstPtr<T> sk = J.s + k * ny;
      ConstPtr<T> qk = J.q + k * ny;
      const T ck = J.c[k];
      for (int j = 0; j < mb; ++j) sKb[j] = sk[zs[j]];
      for (int i = 0; i < mb; ++i) {
        Ptr<T> Si = S + (ob + i) * ldK + ob;
        const T t = ck * sKb[i];
        for (int j = 0; j < mb; ++j) Si[j] += t * sKb[j];
        Si[i] += qk[zs[i]];
      }
    }
  }
  Mask<T> ok = T(0) == T(0);
  for (int e = team.rank(); e < E.n; e += team.size()) {
    const int m = E.count[e], o = E.offset[e];
    ConstPtr<int> ys = E.ys + e * ny;
    Ptr<T> A = J.LE + o * ny;  // rows o..o+m of an (E.total × ny) array
    Ptr<T> D = J.DE + o;
    Ptr<T> Ge = J.G + o * ldK;  // rows o..o+m of G: first C_e, then L⁻¹ D C_e
    for (int i = 0; i < m * ny; ++i) A[i] = T(0);
    // One pass over the pairs of e: its block A_e and the cross block C_e,
    // whose column (b, z) is q_k[z] e_z + c_k s_k[z] s_k.
    for (int b = 0; b < K.n; ++b) {
      const int k = e * J.stride_e + b * J.stride_k;
      const int mb = K.count[b], ob = K.offset[b];
      ConstPtr<int> zs = K.ys + b * ny;
      if (!J.pair[k]) {
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < mb; ++j) Ge[i * ldK + ob + j] = T(0);
        continue;
      }
      ConstPtr<T> sk = J.s + k * ny;
      ConstPtr<T> qk = J.q + k * ny;
      const T ck = J.c[k];
      Ptr<T> u = J.u;
      Ptr<T> sKb = J.sK;
      for (int i = 0; i < m; ++i) u[i] = sk[ys[i]];
      for (int j = 0; j < mb; ++j) sKb[j] = sk[zs[j]];
      for (int i = 0; i < m; ++i) {  // full rows: rectangular loops run faster than triangles here
        Ptr<T> Ai = A + i * ny;
        Ptr<T> Ci = Ge + i * ldK + ob;
        const T t = ck * u[i];
        for (int j = 0; j < m; ++j) Ai[j] += t * u[j];
        Ai[i] += qk[ys[i]];
        for (int j = 0; j < mb; ++j) Ci[j] = t * sKb[j];
        const int pz = K.pos[b * ny + ys[i]];
        if (pz >= 0) Ci[pz] += qk[ys[i]];
      }
    }
    if (m == 0) continue;
    ok = ok & cholesky_jacobi(A, ny, m, D, J.IE + o, shift);
    if (!any_(ok)) break;
    // G_e = L⁻¹ D C_e row by row (forward substitution), in place.
    ConstPtr<T> inv = J.IE + o;
    for (int i = 0; i < m; ++i) {
      Ptr<T> Gi = Ge + i * ldK;
      ConstPtr<T> Li = A + i * ny;
      for (int j = 0; j < nK; ++j) Gi[j] *= D[i];
      for (int l = 0; l < i; ++l) {
        const T f = Li[l];
        ConstPtr<T> Gl = Ge + l * ldK;
        for (int j = 0; j < nK; ++j) Gi[j] -= f * Gl[j];
      }
      for (int j = 0; j < nK; ++j) Gi[j] *= inv[i];
      for (int j = nK; j < ldK; ++j) Gi[j] = T(0);
    }
  }
  ok = team.all(ok);
  if (!any_(ok)) return ok;
  for (int i = team.rank(); i < nK; i += team.size()) J.diagK[i] = S[i * ldK + i];  // diagonal of A_K
  team.sync();
  // S −= G_Eᵀ G_E, all e at once.
  rank_update(team, S, ldK, J.G, ldK, nE, nK);
  team.sync();
  // Scaled by the diagonal of M (A_K's), as the reference scales the whole
  // matrix: S's pivots are then those of the reference's Cholesky, which fail
  // where S has lost its definiteness to cancellation.
  return ok & cholesky_upper(team, S, ldK, nK, J.diagK, J.DS, J.IS, shift);
}

// (x1, x2) ← the factorised (shifted) matrix's inverse applied to (r1, r2), which
// vanish at variables that are not free; x vanishes there too.
//   t = L⁻¹ D r_E,  S x_K = r_K − Gᵀ t,  x_E = D L⁻ᵀ (t − G x_K).
template <typename T>
FASTPID_HOST_DEVICE inline void side_solve(Joint<T>& J, ConstPtr<T> r1, ConstPtr<T> r2, Ptr<T> x1, Ptr<T> x2) {
  const int ny = J.ny;
  const Team team = J.team;  // E blocks, K blocks and rows of G split among its lanes
  const Side E = eliminated(J);
  const Side K = kept(J);
  const int nE = E.total, nK = K.total, ldK = J.ldK;
  const bool keep2 = J.keep2;
  ConstPtr<T> rE = keep2 ? r1 : r2;
  ConstPtr<T> rK = keep2 ? r2 : r1;
  Ptr<T> dE = keep2 ? x1 : x2;
  Ptr<T> dK = keep2 ? x2 : x1;
  Ptr<T> t = J.tE;
  Ptr<T> x = J.xK;
  for (int e = team.rank(); e < E.n; e += team.size()) {
    const int m = E.count[e], o = E.offset[e];
    ConstPtr<int> ys = E.ys + e * ny;
    for (int i = 0; i < m; ++i) t[o + i] = rE[e * ny + ys[i]] * J.DE[o + i];
    forward(J.LE + o * ny, ny, m, J.IE + o, t + o);
  }
  for (int b = team.rank(); b < K.n; b += team.size())
    for (int j = 0; j < K.count[b]; ++j) x[K.offset[b] + j] = rK[b * ny + K.ys[b * ny + j]];
  team.sync();
  // x −= Gᵀ t, each lane its own entries of x.
  for (int i = 0; i < nE; ++i) {
    const T f = t[i];
    ConstPtr<T> Gi = J.G + i * ldK;
    for (int r = team.rank(); r < nK; r += team.size()) x[r] -= f * Gi[r];
  }
  for (int r = team.rank(); r < nK; r += team.size()) x[r] *= J.DS[r];
  forward_upper(team, J.S, ldK, nK, J.IS, x);
  backward_upper(team, J.S, ldK, nK, J.IS, x);
  for (int r = team.rank(); r < nK; r += team.size()) x[r] *= J.DS[r];
  team.sync();
  for (int i = team.rank(); i < nE; i += team.size()) t[i] -= dot(J.G + i * ldK, x, nK);
  for (int b = team.rank(); b < K.n; b += team.size()) {
    Ptr<T> row = dK + b * ny;
    for (int y = 0; y < ny; ++y) row[y] = T(0);
    for (int j = 0; j < K.count[b]; ++j) row[K.ys[b * ny + j]] = x[K.offset[b] + j];
  }
  team.sync();
  for (int e = team.rank(); e < E.n; e += team.size()) {
    const int m = E.count[e], o = E.offset[e];
    ConstPtr<int> ys = E.ys + e * ny;
    Ptr<T> row = dE + e * ny;
    for (int y = 0; y < ny; ++y) row[y] = T(0);
    backward(J.LE + o * ny, ny, m, J.IE + o, t + o);
    for (int i = 0; i < m; ++i) row[ys[i]] = t[o + i] * J.DE[o + i];
  }
  team.sync();
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
