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

// D_y's m × m system on the free variables of y (J.position: each one's index
// among them) into J.block: the upper triangle, rows J.ldB apart, zero up to
// padded(m) rows and columns (the padding the tiled kernels touch).
template <typename T>
FASTPID_HOST_DEVICE inline void load_block(Joint<T>& J, int y, int m) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, ld = J.ldB, mp = padded(m);
  Ptr<T> A = J.block;
  zero(A, size_t(mp) * ld);
  ConstPtr<int> on1 = J.yon1 + y * n1;
  ConstPtr<int> on2 = J.yon2 + y * n2;
  for (int a = 0; a < J.yn1[y]; ++a) {
    const int x1 = on1[a], i = J.position[x1];
    for (int b = 0; b < J.yn2[y]; ++b) {
      const int x2 = on2[b], j = J.position[n1 + x2];
      const T q = J.q[(size_t(x1) * n2 + x2) * ny + y];
      A[i * ld + i] += q;
      if (j < 0) continue;  // the pinned λ2
      A[j * ld + j] += q;
      A[i * ld + j] = q;  // upper triangle: λ2 after λ1 in the list
    }
  }
}

// The block loaded in J.block factorised, D_s A D_s + shift I = Uᵀ U
// (cholesky_upper), and V = U⁻ᵀ (lower) into J.columns: row i = (e_i − Σ_{k<i}
// U[k][i] V[k]) / U[i][i], zero beyond column i.  False if the factorisation fails.
template <typename T>
FASTPID_HOST_DEVICE inline bool factor_block(Joint<T>& J, int m, T shift) {
  const int ld = J.ldB;
  Ptr<T> A = J.block;
  Ptr<T> diag = J.row;
  for (int i = 0; i < m; ++i) diag[i] = A[i * ld + i];
  if (!cholesky_upper(Team(), A, ld, m, diag, J.blockD, J.blockI, shift)) return false;
  Ptr<T> V = J.columns;
  zero(V, size_t(m) * ld);
  for (int i = 0; i < m; ++i) {
    Ptr<T> Vi = V + size_t(i) * ld;
    // Rows of V are zero beyond their diagonal: whole vectors, no remainder loop.
    for (int k = 0; k < i; ++k) subtract_scaled(Vi, V + size_t(k) * ld, A[k * ld + i], padded(k + 1));
    Vi[i] += T(1);
    for (int l = 0; l <= i; ++l) Vi[l] *= J.blockI[i];
  }
  return true;
}

// F_y = D_s Vᵀ V D_s from factor_block's V, written to J.F (the rows of the
// variables of y) and J.Fc (compact); returns ‖Vᵀ V‖_F, the Frobenius norm of
// the scaled inverse (at least its 2-norm, 1 / λ_min).
template <typename T>
FASTPID_HOST_DEVICE inline T write_inverse(Joint<T>& J, int y, int m) {
  const int nn = J.nn, ld = J.ldB, mp = padded(m);
  ConstPtr<int> vars = J.yvars + size_t(y) * nn;
  Ptr<T> A = J.block;
  zero(A, size_t(mp) * ld);  // U is spent: A ← −Vᵀ V
  rank_update(A, ld, J.columns, ld, m, m);
  Ptr<T> F = J.F + size_t(y) * nn * nn;
  Ptr<T> Fc = J.Fc + size_t(y) * nn * nn;
  T norm = T(0);
  for (int a = 0; a < m; ++a)
    for (int b = a; b < m; ++b) {
      norm += (a == b ? T(1) : T(2)) * A[a * ld + b] * A[a * ld + b];
      const T value = -A[a * ld + b] * J.blockD[a] * J.blockD[b];
      F[size_t(vars[a]) * nn + vars[b]] = value;
      F[size_t(vars[b]) * nn + vars[a]] = value;
      Fc[a * nn + b] = value;
      Fc[b * nn + a] = value;
    }
  return sqrt_(norm);
}

// D_y on the free variables of y (J.yvars) factorised and its inverse written
// to F_y, zero off the free variables.  The capacitance formula cancels where
// D_y is near-singular, so such a block is factorised as D_y + δ diag(D_y)
// (δ = kPairsBlockShift, plus `shift`; iterative refinement with M itself
// recovers M's solution): a block whose unshifted scaled inverse has a
// Frobenius norm above kPairsShiftFreeNorm, or whose unshifted factorisation
// fails.  A block that needed δ keeps it for the rest of the solve (its masses
// only fall further), so that it is factorised twice at most once.
// With D_s D_y D_s + (shift [+ δ]) I = Uᵀ U and V = U⁻ᵀ, F_y = D_s Vᵀ V D_s: Vᵀ V
// by the tiled rank_update, vectorised along the rows (J.ldB pads them).
template <typename T>
FASTPID_HOST_DEVICE inline bool invert_block(Joint<T>& J, int y, T shift) {
  const int n1 = J.n1, n2 = J.n2, nn = J.nn, m = J.ycount[y];
  ConstPtr<int> vars = J.yvars + size_t(y) * nn;
  // Only the rows of the symbols on at y are ever read (form_cross).
  Ptr<T> F = J.F + size_t(y) * nn * nn;
  for (int a = 0; a < J.yn1[y]; ++a) zero(F + size_t(J.yon1[y * n1 + a]) * nn, nn);
  for (int b = 0; b < J.yn2[y]; ++b) zero(F + size_t(n1 + J.yon2[y * n2 + b]) * nn, nn);
  if (m == 0) return true;
  for (int v = 0; v < nn; ++v) J.position[v] = -1;
  for (int i = 0; i < m; ++i) J.position[vars[i]] = i;
  if (!J.shifted[y]) {
    load_block(J, y, m);
    J.shifted[y] = !(factor_block(J, m, shift) && write_inverse(J, y, m) <= T(kPairsShiftFreeNorm));
  }
  if (J.shifted[y]) {
    load_block(J, y, m);
    if (!factor_block(J, m, shift + T(kPairsBlockShift))) return false;
    write_inverse(J, y, m);
  }
  return true;
}

// G = Uᵀ D⁻¹ U over the pairs, in J.cross, block by block of x1 symbols: for
// pairs k = (i, j) and l = (i', j'), with F = F_y and the target values y at
// which both i and i' are free (only there s_k(y) s_l(y) can be nonzero),
//
//   G[k][l] = Σ_y s_k(y) s_l(y) (F[i][i'] + F[n1+j][i'] + F[i][n1+j'] + F[n1+j][n1+j'])
//           = Σ_y (X_i[j][y][j'] + W[y][j]) s_l(y),
//   X_i[j][y][j'] = s_k(y) (F[n1+j][n1+j'] + F[i][n1+j']),   W[y][j] = s_k(y) (F[i][i'] + F[n1+j][i']),
//
// (X_i[j][y] = 0 where x2 = j is off at y: F_y's rows are written only for the symbols on at y).
//
// Tile by tile of target values, X_i is formed for each i and each n2 × n2
// block (i, i ≤ i') adds its sum over the tile's y, kCrossRows rows j by
// kCrossChunk columns j' at a time in registers; the blocks are mirrored to
// (i', i) at the end.  The same flops as a pass per target value over all of
// G, without streaming the np² matrix through the cache ny times.
constexpr int kCrossChunk = 8;
FASTPID_HOST_DEVICE inline int cross_width(int n2) { return (n2 + kCrossChunk - 1) / kCrossChunk * kCrossChunk; }

constexpr int kCrossRows = 4;
constexpr size_t kCrossTileBytes = size_t(192) << 10;  // X_i of a tile of target values: within L2

// out[r][l] += Σ_t (x[r][ys[t]][l] + w[t n2 + r]) s[ys[t]][l] for `Rows` rows r (x's
// `stride` apart, out's `np`) and the kCrossChunk columns l (rows of x and s `ld`
// apart, padded with zeros: every chunk is full), the first `width` written.
// The Rows × kCrossChunk sums are independent chains: the loop over t is not
// bound by the latency of one accumulator, and each s is loaded once for all rows.
template <int Rows, typename T>
FASTPID_HOST_DEVICE inline void cross_chunk(Ptr<T> out, size_t np, ConstPtr<T> x, size_t stride, ConstPtr<T> w,
                                            ConstPtr<T> s, ConstPtr<int> ys, int count, int ld, int n2, int width) {
  T acc[Rows][kCrossChunk] = {};
  for (int t = 0; t < count; ++t) {
    const size_t row = size_t(ys[t]) * ld;
    for (int r = 0; r < Rows; ++r) {
      const T wt = w[size_t(t) * n2 + r];
      for (int l = 0; l < kCrossChunk; ++l) acc[r][l] += (x[r * stride + row + l] + wt) * s[row + l];
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int l = 0; l < width; ++l) out[r * np + l] += acc[r][l];
}
#if FASTPID_HOST_VECTORS
// The same with the accumulators in vectors of FASTPID_VECTOR_BYTES (left to
// itself the compiler vectorises across the rows instead).
template <int Rows>
FASTPID_HOST_DEVICE inline void cross_chunk(double* out, size_t np, const double* x, size_t stride, const double* w,
                                            const double* s, const int* ys, int count, int ld, int n2, int width) {
  constexpr int V = kCrossChunk / kVectorDoubles;
  vector_double acc[Rows][V] = {};
  for (int t = 0; t < count; ++t) {
    const size_t row = size_t(ys[t]) * ld;
    vector_double sv[V];
    for (int v = 0; v < V; ++v) sv[v] = load(s + row + v * kVectorDoubles);
    for (int r = 0; r < Rows; ++r) {
      const vector_double wt = w[size_t(t) * n2 + r] - vector_double{};  // a broadcast
      for (int v = 0; v < V; ++v) acc[r][v] += (load(x + r * stride + row + v * kVectorDoubles) + wt) * sv[v];
    }
  }
  for (int r = 0; r < Rows; ++r) {
    double sum[kCrossChunk];
    for (int v = 0; v < V; ++v) store(sum + v * kVectorDoubles, acc[r][v]);
    for (int l = 0; l < width; ++l) out[r * np + l] += sum[l];
  }
}
#endif

template <typename T>
FASTPID_HOST_DEVICE inline void form_cross(Joint<T>& J) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn, ld = cross_width(n2);
  const size_t np = size_t(J.np);
  // Target values a tile at a time (the outer loop), so that the tile's rows of
  // F_y and X_i stay in the cache while every block sums over them.
  const int tile = int(kCrossTileBytes / (size_t(n2) * ld * sizeof(T))) + 1;
  const Side& side = J.side1;  // the target values at which each x1 is free, increasing
  Ptr<int> begin = J.span;     // per x1 symbol: its free target values of the tile, begin[i] ≤ t < end[i]
  Ptr<int> end = J.span + n1;
  Ptr<T> sT = J.sT;  // s(i, j, y) as (n1, ny, ld), read only where i is free at y
  for (int i = 0; i < n1; ++i) {
    end[i] = 0;
    for (int t = 0; t < side.count[i]; ++t) {
      const int y = side.ys[i * ny + t];
      Ptr<T> row = sT + (size_t(i) * ny + y) * ld;
      for (int j = 0; j < n2; ++j) row[j] = J.s[(size_t(i) * n2 + j) * ny + y];
      for (int j = n2; j < ld; ++j) row[j] = T(0);
    }
  }
  for (size_t k = 0; k < np * np; ++k) J.cross[k] = T(0);
  Ptr<T> X = J.xrows;                     // (n2, ny, ld)
  const size_t stride = size_t(ny) * ld;  // between the rows j of X
  for (int y0 = 0; y0 < ny; y0 += tile) {
    const int y1 = ny - y0 < tile ? ny : y0 + tile;
    for (int i = 0; i < n1; ++i) {
      begin[i] = end[i];
      while (end[i] < side.count[i] && side.ys[i * ny + end[i]] < y1) ++end[i];
    }
    for (int i = 0; i < n1; ++i) {
      ConstPtr<int> yi = side.ys + i * ny;
      ConstPtr<T> si = sT + size_t(i) * ny * ld;
      for (int a = begin[i]; a < end[i]; ++a) {
        const int y = yi[a];
        ConstPtr<T> F = J.F + size_t(y) * nn * nn;
        ConstPtr<T> f12 = F + size_t(i) * nn + n1;
        for (int j = 0; j < n2; ++j) {
          Ptr<T> x = X + j * stride + size_t(y) * ld;
          if (!J.on2[size_t(j) * ny + y]) {  // no cell (i, j, y), and F's row n1 + j is not written at y
            for (int l = 0; l < ld; ++l) x[l] = T(0);
            continue;
          }
          const T sk = si[size_t(y) * ld + j];
          ConstPtr<T> f22 = F + size_t(n1 + j) * nn + n1;
          for (int l = 0; l < n2; ++l) x[l] = sk * (f22[l] + f12[l]);
          for (int l = n2; l < ld; ++l) x[l] = T(0);
        }
      }
      for (int i2 = i; i2 < n1; ++i2) {
        // The target values of the tile free for both i and i2 (merge of two increasing lists).
        ConstPtr<int> y2 = side.ys + i2 * ny;
        int count = 0;
        for (int a = begin[i], b = begin[i2]; a < end[i] && b < end[i2];) {
          if (yi[a] < y2[b])
            ++a;
          else if (y2[b] < yi[a])
            ++b;
          else {
            J.common[count++] = yi[a];
            ++a;
            ++b;
          }
        }
        if (count == 0) continue;  // no target value in common (most blocks of sparse joints)
        Ptr<T> W = J.wy;
        for (int t = 0; t < count; ++t) {
          const int y = J.common[t];
          ConstPtr<T> F = J.F + size_t(y) * nn * nn;
          const T a = F[size_t(i) * nn + i2];
          ConstPtr<T> f21 = F + size_t(i2) * nn + n1;  // F[n1 + j][i2] = F[i2][n1 + j]: F_y is symmetric
          for (int j = 0; j < n2; ++j) W[size_t(t) * n2 + j] = si[size_t(y) * ld + j] * (a + f21[j]);
        }
        ConstPtr<T> s2 = sT + size_t(i2) * ny * ld;
        Ptr<T> block = J.cross + size_t(i) * n2 * np + size_t(i2) * n2;  // rows (i, j), columns (i2, ·)
        for (int c = 0; c < n2; c += kCrossChunk) {
          const int width = n2 - c < kCrossChunk ? n2 - c : kCrossChunk;
          int j = 0;
          for (; j + kCrossRows <= n2; j += kCrossRows)
            cross_chunk<kCrossRows>(block + j * np + c, np, X + j * stride + c, stride, W + j, s2 + c, J.common, count,
                                    ld, n2, width);
          for (; j < n2; ++j)
            cross_chunk<1>(block + j * np + c, np, X + j * stride + c, stride, W + j, s2 + c, J.common, count, ld, n2,
                           width);
        }
      }
    }
  }
  for (int i = 0; i < n1; ++i)
    for (int i2 = i + 1; i2 < n1; ++i2) {  // the mirror blocks (i2, i), row by row: contiguous stores
      ConstPtr<T> block = J.cross + size_t(i) * n2 * np + size_t(i2) * n2;
      Ptr<T> mirror = J.cross + size_t(i2) * n2 * np + size_t(i) * n2;
      for (int l = 0; l < n2; ++l)
        for (int j = 0; j < n2; ++j) mirror[l * np + j] = block[j * np + l];
    }
}

// Factorises the Newton matrix at the current iterate (needs s, q = w s, c)
// by the pair elimination: every D_y (with `shift` on its Jacobi-scaled
// diagonal), G, and the capacitance matrix (`shift` on each definite block).
// False if a factorisation breaks down.
template <typename T>
FASTPID_HOST_DEVICE inline bool pairs_factor(Joint<T>& J, T shift) {
  const int ny = J.ny, ld = J.ldC;
  const size_t np = size_t(J.np);
  for (int y = 0; y < ny; ++y)
    if (!invert_block(J, y, shift)) return false;
  form_cross(J);
  // Capacitance order: the pairs with cells, c ≥ 0 first.
  int n = 0;
  for (int v = 0; v < J.n_valid; ++v)
    if (!(J.c[J.valid_pairs[v]] < T(0))) J.order_cells[n++] = v;
  J.n_positive = n;
  for (int v = 0; v < J.n_valid; ++v)
    if (J.c[J.valid_pairs[v]] < T(0)) J.order_cells[n++] = v;
  J.n_order = n;
  for (int a = 0; a < n; ++a) J.order[a] = J.valid_pairs[J.order_cells[a]];
  Ptr<T> C = J.cap;  // n × n with the padding factor_upper's tiles touch
  zero(C, size_t(padded(n)) * ld);
  for (int a = 0; a < n; ++a) J.root[a] = sqrt_(fabs_(J.c[J.order[a]]));
  for (int a = 0; a < n; ++a) {
    ConstPtr<T> Ga = J.cross + size_t(J.order[a]) * np;
    Ptr<T> Ca = C + size_t(a) * ld;
    for (int b = a; b < n; ++b) Ca[b] = J.root[a] * Ga[J.order[b]] * J.root[b];
    J.vk[a] = T(1) + Ca[a];  // Jacobi scaling from |σ| + ρ G ρ, at least 1
    Ca[a] += a < J.n_positive ? T(1) : T(-1);
  }
  scale_upper(Team(), C, ld, n, J.vk, J.capD, T(0));
  const int p = J.n_positive;
  for (int a = 0; a < p; ++a) C[size_t(a) * ld + a] += shift;
  if (!factor_upper(Team(), C, ld, n, 0, p, J.capI)) return false;
  for (int a = p; a < n; ++a) {  // the trailing Schur complement is negative definite: negate it
    Ptr<T> Ca = C + size_t(a) * ld;
    for (int b = a; b < n; ++b) Ca[b] = -Ca[b];
    Ca[a] += shift;
  }
  return factor_upper(Team(), C, ld, n, p, n, J.capI);
}

// t_y = F_y r_y for every y, into J.ty (ny × nn, zero off the free variables),
// from (r1, r2): the free variables' entries gathered, then products with
// the compact m × m inverse (J.Fc), so that a sparse joint's target values
// cost m², not m nn.
template <typename T>
FASTPID_HOST_DEVICE inline void apply_block_inverses(Joint<T>& J, ConstPtr<T> r1, ConstPtr<T> r2) {
  const int n1 = J.n1, ny = J.ny, nn = J.nn;
  Ptr<T> rv = J.row;
  for (int y = 0; y < ny; ++y) {
    const int m = J.ycount[y];
    ConstPtr<int> vars = J.yvars + size_t(y) * nn;
    ConstPtr<T> Fc = J.Fc + size_t(y) * nn * nn;
    Ptr<T> t = J.ty + size_t(y) * nn;
    for (int i = 0; i < m; ++i) rv[i] = vars[i] < n1 ? r1[size_t(vars[i]) * ny + y] : r2[size_t(vars[i] - n1) * ny + y];
    for (int v = 0; v < nn; ++v) t[v] = T(0);
    for (int i = 0; i < m; ++i) t[vars[i]] = dot(Fc + size_t(i) * nn, rv, m);
  }
}

// (x1, x2) ← M⁻¹ (r1, r2) with the factors of pairs_factor; r vanishes at
// variables that are not free, and x vanishes there too.
template <typename T>
FASTPID_HOST_DEVICE inline void pairs_solve(Joint<T>& J, ConstPtr<T> r1, ConstPtr<T> r2, Ptr<T> x1, Ptr<T> x2) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn, n = J.n_order, p = J.n_positive;
  apply_block_inverses(J, r1, r2);
  // b = ρ Uᵀ D⁻¹ r, Jacobi-scaled; u from the signed factor; z = ρ u.
  // Over each pair's cells only (s vanishes off them; a dense joint lists every y).
  Ptr<T> b = J.vk;
  for (int a = 0; a < n; ++a) {
    const PairCells c = pair_cells<false>(J, J.order_cells[a]);
    const int k1 = c.k / n2, k2 = c.k % n2;
    ConstPtr<T> sk = J.s + size_t(c.k) * ny;
    T sum = T(0);
    for (int i = 0; i < c.count; ++i) {
      ConstPtr<T> t = J.ty + size_t(c.ys[i]) * nn;
      sum += sk[c.ys[i]] * (t[k1] + t[n1 + k2]);
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
    const PairCells c = pair_cells<false>(J, J.order_cells[a]);
    const int k1 = c.k / n2, k2 = c.k % n2;
    const T z = b[a] * J.capD[a] * J.root[a];
    ConstPtr<T> sk = J.s + size_t(c.k) * ny;
    Ptr<T> o1 = x1 + size_t(k1) * ny;
    Ptr<T> o2 = x2 + size_t(k2) * ny;
    for (int i = 0; i < c.count; ++i) {
      const int y = c.ys[i];
      o1[y] -= sk[y] * z;
      o2[y] -= sk[y] * z;
    }
  }
  for (size_t i = 0; i < size_t(n1) * ny; ++i) x1[i] = J.on1[i] ? x1[i] : T(0);
  for (size_t i = 0; i < size_t(n2) * ny; ++i) x2[i] = J.free2[i] ? x2[i] : T(0);
  apply_block_inverses(J, x1, x2);
  for (int y = 0; y < ny; ++y) {
    ConstPtr<T> t = J.ty + size_t(y) * nn;
    for (int x = 0; x < n1; ++x) x1[size_t(x) * ny + y] = t[x];
    for (int x = 0; x < n2; ++x) x2[size_t(x) * ny + y] = t[n1 + x];
  }
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
