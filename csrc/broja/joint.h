// One joint's problem data, its workspace layout (`Joint`, `layout`) and its
// set-up: marginals, masks, the gauge, the free variables of each side, the
// cells listed pair by pair, and the analytic start (docs/pid-math.md).
#pragma once

#include "common.h"

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// ---------------------------------------------------------------- elimination

// How the Newton system is solved (docs/pid-math.md, "Solving the Newton
// system"): by eliminating one side's ny×ny blocks onto the Schur complement
// of the other side (kSide), or the per-target-value blocks onto the
// capacitance system of the pairs' rank-one terms (kPairs).  kNone: no Newton
// system (certify_joint's workspace).
enum class Elimination : int { kSide = 0, kPairs = 1, kNone = 2 };

// Flops of one factorisation of each elimination for a dense n1 × n2 × ny
// joint (docs/pid-math.md, "Cost of each elimination"): kSide factorises
// max(n1, n2) blocks of ny² and the min(n1, n2) ny Schur complement formed by
// a rank update; kPairs factorises and inverts ny blocks of (n1 + n2)², forms
// the n1 n2 capacitance matrix pair against pair per target value, and
// factorises it.
FASTPID_HOST_DEVICE inline double side_flops(int n1, int n2, int ny) {
  const double e = double(n1 > n2 ? n1 : n2) * ny, k = double(n1 < n2 ? n1 : n2) * ny;
  return e * ny * ny / 3 + e * ny * k + e * k * k + k * k * k / 3;
}
FASTPID_HOST_DEVICE inline double pairs_flops(int n1, int n2, int ny) {
  const double nn = double(n1) + n2, np = double(n1) * n2;
  return ny * nn * nn * nn + 1.5 * ny * np * np + np * np * np / 3;
}
// kPairs where its flops are fewer by kPairsAdvantage: the side elimination's
// kernels run at a higher rate (measured: bench/results/eliminations-*.md).
constexpr double kPairsAdvantage = 2.95;
// The largest side-elimination workspace with which a joint that the pair
// elimination leaves unconverged is solved again (csrc/cpu/per_joint.h).
constexpr size_t kSideRescueBytes = size_t(256) << 20;
FASTPID_HOST_DEVICE inline Elimination choose_elimination(int n1, int n2, int ny) {
  return pairs_flops(n1, n2, ny) * kPairsAdvantage < side_flops(n1, n2, ny) ? Elimination::kPairs : Elimination::kSide;
}

// ---------------------------------------------------------------- workspace

// Free variables of one side (x1: λ1, x2: λ2), listed per symbol: symbol a has
// count[a] free target values ys[a * ny + i] (increasing), numbered offset[a] + i
// overall; pos[a * ny + y] is i, or −1 where (a, y) is not free.
struct Side {
  int n;
  ConstPtr<unsigned char> free;  // (n, ny)
  Ptr<int> ys;                   // (n, ny)
  Ptr<int> pos;                  // (n, ny)
  Ptr<int> count;                // (n)
  Ptr<int> offset;               // (n)
  int total;
};

template <typename T>
struct Joint {
  Team team;           // the lanes that solve this joint together (common.h)
  int n1, n2, ny, np;  // np = n1 n2 pairs, pair k = k1 n2 + k2 of symbols (k1, k2), cell k ny + y
  T total_weight;      // Σ_k weight_k (at least the smallest normal number)
  // Problem data and masks.
  Ptr<T> p1, p2, py;                   // (n1, ny), (n2, ny), (ny)
  Ptr<unsigned char> on1, on2, free2;  // P1 > 0, P2 > 0, P2 > 0 and not pinned
  Ptr<unsigned char> cell, pair;       // (np, ny), (np)
  // The cells by pair (compressed rows), for joints with cells off the domain
  // (dense = false): pair valid_pairs[v] has the cells cells[pair_start[v] ..
  // pair_start[v + 1]) (their y, increasing), v < n_valid pairs with cells.
  Ptr<int> valid_pairs, pair_start, cells;  // (np), (np + 1), (np ny)
  Ptr<int> pair_slot;                       // (np) v of pair k among the pairs with cells, or −1 (teams)
  int n_valid, n_cells;
  bool dense;  // every cell on the domain (P1 > 0 and P2 > 0 everywhere)
  Side side1, side2;
  // Elimination: E is eliminated, K kept: E = side1 and K = side2 where keep2, else
  // the other way round (eliminated(J), kept(J)); pair(e, b) = e stride_e + b stride_k.
  // A flag, not pointers to side1/side2: on the device a pointer into J keeps all of
  // J in local memory (bench/results/cuda-build-2026-12-07.md).
  bool keep2;
  int stride_e, stride_k;
  int ldK;  // leading dimension of G and S: padded(K.total) (the padding is zero)
  Elimination elimination;
  // Iterate and best iterate.
  Ptr<T> lam1, lam2, w, h;
  Ptr<T> weight;  // central-path weights Q0(x1, x2) (0 off the pairs)
  Ptr<T> best_lam1, best_lam2, best_w;
  // Per iteration.
  Ptr<T> g, s, q, c;          // (np), (np, ny), w s (np, ny), w / h − w (np)
  Ptr<T> z;                   // (np ny) scratch on the listed cells: pair_softmax's exponents, certificate_gap's Q
  Ptr<T> pair_terms;          // (2 np) scratch: per-pair factors of the products and right-hand sides
  Ptr<T> pair_sum;            // (np) scratch: Σ_y exp, Q(x1, x2), P(x1, x2) (pair_softmax, certificate_gap,
                              // conditional_entropies)
  Ptr<T> qr;                  // rounded Q (np, ny)
  Ptr<T> r1, r2;              // marginals(w s) − (P1, P2)
  Ptr<T> t1, t2;              // scratch (n1, ny), (n2, ny)
  Ptr<T> primal, comp, rc;    // (np)
  Ptr<T> dw_a, dh_a, dw, dh;  // (np)
  Ptr<T> d1, d2, rhs1, rhs2;  // (n1, ny), (n2, ny)
  Ptr<T> e1, e2, f1, f2;      // refinement: residual and correction, (n1, ny), (n2, ny)
  Ptr<T> lam1_0, lam2_0;      // λ before a step, for backtracking
  // Newton matrix factors (E.total ≤ Emax = max(n1, n2) ny, K.total ≤ Kmax = min(n1, n2) ny).
  Ptr<T> LE, DE, IE;  // per E block: Cholesky factor (ny × ny), Jacobi scales, 1 / pivots
  Ptr<T> G;           // L_e⁻¹ D_e C_e for all e, stacked (E.total × ldK)
  Ptr<T> S, DS, IS;   // Schur complement: upper factor (ldK², row-major), Jacobi scales, 1 / pivots
  Ptr<T> diagK;       // (Kmax) diagonal of A_K: the Jacobi scaling of S
  Ptr<T> sK, tE, xK;  // scratch (ny) per lane, (Emax), (Kmax)
  Ptr<T> u;           // scratch (ny) per lane
  // Pairs elimination: nn = n1 + n2 variables per target value y, variable v
  // being λ1(v, y) for v < n1 and λ2(v − n1, y) beyond.
  int nn, ldC;                    // ldC: leading dimension of the capacitance, padded(np) + kPadding
  Ptr<int> yvars, ycount;         // (ny, nn), (ny): the free variables of y
  Ptr<int> yon1, yon2, yn1, yn2;  // (ny, n1), (ny, n2), (ny), (ny): the x1 with P1 > 0, the x2 with P2 > 0 at y
  Ptr<T> F;                       // (ny, nn, nn) D_y⁻¹ on the free variables of y, zero elsewhere in the rows of
                                  // the symbols on at y (the only rows read: form_cross); other rows unset
  Ptr<T> Fc;                      // (ny, nn, nn) the same, compact: m × m over the free variables in yvars order
  int ldB;                        // padded(nn) + kPadding: rows of block and columns
  Ptr<T> block, blockD, blockI;   // (ldB, ldB), (nn), (nn) scratch: D_y's factor, then −F_y; Jacobi scales, 1 / pivots
  Ptr<T> columns;                 // (ldB, ldB) scratch: the inverse transpose of D_y's factor
  Ptr<int> position;              // (nn) scratch: where each variable of y sits among its free ones (−1: not free)
  Ptr<unsigned char> shifted;     // (ny) D_y has needed the shift δ at a step of this solve (it keeps it)
  Ptr<T> cross;                   // (np, np) Uᵀ D⁻¹ U, pairs in their natural order
  Ptr<T> cap, capD, capI;         // capacitance: upper factor (ldC²), Jacobi scales, 1 / pivots (np)
  Ptr<T> root;                    // (np) |c_k|^(1/2), capacitance order
  Ptr<int> order;                 // (np) the pairs with cells in capacitance order: c ≥ 0 first
  Ptr<int> order_cells;           // (np) their index among the pairs with cells (pair_cells)
  int n_order, n_positive;
  Ptr<T> sT, xrows, wy;  // scratch of form_cross: (n1, ny, w2), (n2, ny, w2), (ny, n2); w2 = cross_width(n2)
  Ptr<int> common;       // scratch (ny): the target values two x1 symbols share
  Ptr<int> span;         // scratch (2 n1): where each x1's free target values of a tile begin and end
  Ptr<T> vk, row;        // scratch (np), (nn)
  Ptr<T> ty;             // scratch (ny, nn): D⁻¹ r per target value
};

// Where layout carves the arrays: the workspace (null: only count its bytes)
// and the joint's lane among the kInterleave joints that share it.
struct Carving {
  char* base;
  int lane;
};
template <typename U>
FASTPID_HOST_DEVICE inline void carve(Ptr<U>& ptr, Carving b, size_t& offset, size_t count) {
  offset = (offset + 63) & ~size_t(63);
#if FASTPID_TEAM
  ptr = Ptr<U>::bytes(uint32_t(offset));  // a function of the sizes: base is team_workspace() (block::solve)
#else
  ptr = Ptr<U>(b.base ? reinterpret_cast<U*>(b.base + offset * kInterleave) + b.lane : nullptr);
#endif
  offset += count * sizeof(U);
}

FASTPID_HOST_DEVICE inline void carve_side(Side& side, Carving b, size_t& offset, size_t n, size_t ny) {
  carve(side.ys, b, offset, n * ny);
  carve(side.pos, b, offset, n * ny);
  carve(side.count, b, offset, n);
  carve(side.offset, b, offset, n);
}
// The eliminated and the kept side, as copies (a reference would point into J).
template <typename T>
FASTPID_HOST_DEVICE inline Side eliminated(const Joint<T>& J) {
  return J.keep2 ? J.side1 : J.side2;
}
template <typename T>
FASTPID_HOST_DEVICE inline Side kept(const Joint<T>& J) {
  return J.keep2 ? J.side2 : J.side1;
}

// Points the arrays of `J` into `base` (when not null), at `lane` among the
// kInterleave joints that share it, and returns the bytes an n1 × n2 × ny joint
// solved with `elimination` by a team of `lanes` needs (each lane has its own
// ny-entry scratch u, sK); call with base = nullptr to size the workspace.  Only
// the chosen elimination's arrays are laid out.
template <typename T>
FASTPID_HOST_DEVICE inline size_t layout(Joint<T>& J, void* base, int lane, int n1, int n2, int ny,
                                         Elimination elimination, int lanes = 1) {
  const Carving b{static_cast<char*>(base), lane};
  size_t o = 0;
  const size_t np = size_t(n1) * n2, c1 = size_t(n1) * ny, c2 = size_t(n2) * ny, nc = np * ny;
  const size_t e_max = (n1 > n2 ? n1 : n2) * size_t(ny);
  const size_t k_max = (n1 < n2 ? n1 : n2) * size_t(ny);
  const size_t k_pad = padded(int(k_max));
  J.n1 = n1;
  J.n2 = n2;
  J.ny = ny;
  J.np = int(np);
  J.nn = n1 + n2;
  J.elimination = elimination;
  carve(J.p1, b, o, c1);
  carve(J.p2, b, o, c2);
  carve(J.py, b, o, ny);
  carve(J.lam1, b, o, c1);
  carve(J.lam2, b, o, c2);
  carve(J.w, b, o, np);
  carve(J.h, b, o, np);
  carve(J.weight, b, o, np);
  carve(J.best_lam1, b, o, c1);
  carve(J.best_lam2, b, o, c2);
  carve(J.best_w, b, o, np);
  carve(J.g, b, o, np);
  carve(J.pair_sum, b, o, np);
  carve(J.pair_terms, b, o, 2 * np);
  carve(J.s, b, o, nc);
  carve(J.q, b, o, nc);
  carve(J.c, b, o, np);
  carve(J.qr, b, o, nc);
  carve(J.r1, b, o, c1);
  carve(J.r2, b, o, c2);
  carve(J.t1, b, o, c1);
  carve(J.t2, b, o, c2);
  carve(J.primal, b, o, np);
  carve(J.comp, b, o, np);
  carve(J.rc, b, o, np);
  carve(J.dw_a, b, o, np);
  carve(J.dh_a, b, o, np);
  carve(J.dw, b, o, np);
  carve(J.dh, b, o, np);
  carve(J.d1, b, o, c1);
  carve(J.d2, b, o, c2);
  carve(J.rhs1, b, o, c1);
  carve(J.rhs2, b, o, c2);
  carve(J.e1, b, o, c1);
  carve(J.e2, b, o, c2);
  carve(J.f1, b, o, c1);
  carve(J.f2, b, o, c2);
  carve(J.lam1_0, b, o, c1);
  carve(J.lam2_0, b, o, c2);
  if (elimination == Elimination::kSide) {
    carve(J.LE, b, o, e_max * ny);
    carve(J.DE, b, o, e_max);
    carve(J.IE, b, o, e_max);
    carve(J.G, b, o, e_max * k_pad);
    carve(J.S, b, o, k_pad * k_pad);
    carve(J.DS, b, o, k_max);
    carve(J.IS, b, o, k_max);
    carve(J.diagK, b, o, k_max);
    carve(J.sK, b, o, size_t(ny) * lanes);
    carve(J.tE, b, o, e_max);
    carve(J.xK, b, o, k_max);
  }
  if (elimination == Elimination::kPairs) {
    const size_t nn = size_t(n1) + n2, ld = size_t(padded(int(np))) + kPadding;
    J.ldC = int(ld);
    carve(J.yvars, b, o, ny * nn);
    carve(J.ycount, b, o, ny);
    carve(J.yon1, b, o, c1);
    carve(J.yon2, b, o, c2);
    carve(J.yn1, b, o, ny);
    carve(J.yn2, b, o, ny);
    carve(J.F, b, o, ny * nn * nn);
    carve(J.Fc, b, o, ny * nn * nn);
    const size_t ldB = size_t(padded(int(nn))) + kPadding;
    J.ldB = int(ldB);
    carve(J.block, b, o, ldB * ldB);
    carve(J.blockD, b, o, nn);
    carve(J.blockI, b, o, nn);
    carve(J.columns, b, o, ldB * ldB);
    carve(J.position, b, o, nn);
    carve(J.shifted, b, o, ny);
    carve(J.cross, b, o, np * np);
    carve(J.cap, b, o, ld * ld);
    carve(J.capD, b, o, np);
    carve(J.capI, b, o, np);
    carve(J.root, b, o, np);
    carve(J.order, b, o, np);
    carve(J.order_cells, b, o, np);
    const size_t w2 = (size_t(n2) + 7) / 8 * 8;  // cross_width(n2), pairs.h
    carve(J.sT, b, o, size_t(n1) * ny * w2);
    carve(J.xrows, b, o, size_t(n2) * ny * w2);
    carve(J.wy, b, o, size_t(ny) * n2);
    carve(J.common, b, o, ny);
    carve(J.span, b, o, 2 * size_t(n1));
    carve(J.vk, b, o, np);
    carve(J.row, b, o, nn);
    carve(J.ty, b, o, ny * nn);
  }
  carve(J.u, b, o, size_t(ny) * lanes);
  carve(J.on1, b, o, c1);
  carve(J.on2, b, o, c2);
  carve(J.free2, b, o, c2);
  carve(J.cell, b, o, nc);
  carve(J.pair, b, o, np);
  carve(J.valid_pairs, b, o, np);
  carve(J.pair_slot, b, o, np);
  carve(J.pair_start, b, o, np + 1);
  carve(J.cells, b, o, nc);
  carve(J.z, b, o, nc);
  carve_side(J.side1, b, o, n1, ny);
  carve_side(J.side2, b, o, n2, ny);
  return o + 64;  // room to align `base` itself
}

// Lays J's arrays out in `workspace` (workspace_bytes<T>(n1, n2, ny, elimination)
// bytes per joint that shares it) from its first 64-byte boundary on, at `lane`.
template <typename T>
FASTPID_HOST_DEVICE inline void attach(Joint<T>& J, void* workspace, int lane, int n1, int n2, int ny,
                                       Elimination elimination, const Team& team = Team()) {
  char* base = static_cast<char*>(workspace);
  base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  layout(J, base, lane, n1, n2, ny, elimination, team.size());
  J.team = team;
  J.u = J.u + team.rank() * ny;
  if (elimination == Elimination::kSide) J.sK = J.sK + team.rank() * ny;
}

// Bytes of workspace solve_joint (certify_joint: Elimination::kNone) needs for
// an n1 × n2 × ny joint solved by a team of `lanes`, with the 63 bytes it may
// skip to align its start to 64 bytes; kInterleave joints share kInterleave
// times as many.
template <typename T>
FASTPID_HOST_DEVICE inline size_t workspace_bytes(int n1, int n2, int ny, Elimination elimination, int lanes = 1) {
  Joint<T> J;
  return layout(J, nullptr, 0, n1, n2, ny, elimination, lanes) + 63;
}

// ---------------------------------------------------------------- set-up

FASTPID_HOST_DEVICE inline void list_free(Side& side, int n, int ny, ConstPtr<unsigned char> free) {
  int total = 0;
  for (int a = 0; a < n; ++a) {
    int m = 0;
    for (int y = 0; y < ny; ++y) {
      side.pos[a * ny + y] = free[a * ny + y] ? m : -1;
      if (free[a * ny + y]) side.ys[a * ny + m++] = y;
    }
    side.count[a] = m;
    side.offset[a] = total;
    total += m;
  }
  side.total = total;
}

// Sparse joints.  A plug-in joint of a few samples per cell has most cells
// off the domain (P1 = 0 or P2 = 0).  pair_softmax, the refinement's products
// and the certificate then run over the cells listed pair by pair
// (Joint::cells), not over every (pair, y); a dense joint runs the same loops
// over every cell, contiguously (the Dense instantiations).  Only summation
// orders over the cells differ between the two.
//
// The cells of the v-th pair with cells (v < pairs_with_cells): pair k, its
// cells at (k, y) for y = ys[i], i < count, and start, where they begin in the
// cell list.  Dense: every pair, every y (ys unused: y = i), start = k ny.
struct PairCells {
  int k, start, count;
  ConstPtr<int> ys;
};
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline int pairs_with_cells(const Joint<T>& J) {
  return Dense ? J.np : J.n_valid;
}
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline PairCells pair_cells(const Joint<T>& J, int v) {
  if (Dense) return {v, v * J.ny, J.ny, nullptr};
  const int start = J.pair_start[v];
  return {J.valid_pairs[v], start, J.pair_start[v + 1] - start, J.cells + start};
}

// Sums over the pairs of each row x1 and of each column x2: visit(c, i, y, a, b,
// to_row, to_column) for every cell i (target value y) of every pair c with
// cells, a = x1 ny and b = x2 ny the offsets of its row and column, adding the
// cell's term to its row and/or its column.  A team of one makes one pass over
// the pairs with cells, adding each term to both; a team adds by rows (each lane its own
// rows, over x2 in order), syncs, then by columns (over x1 in order).  Either
// way each row's and column's terms come in the order of the pairs.
template <bool Dense, typename T, typename Visit>
FASTPID_HOST_DEVICE inline void sum_by_rows_and_columns(const Joint<T>& J, Visit visit) {
  const int n2 = J.n2, ny = J.ny;
#if FASTPID_TEAM
  const int n1 = J.n1;
  const auto pair = [&](int k1, int k2, bool to_row, bool to_column) {
    const int k = k1 * n2 + k2;
    const int v = Dense ? k : J.pair_slot[k];
    if (v < 0) return;
    const PairCells c = pair_cells<Dense>(J, v);
    for (int i = 0; i < c.count; ++i) visit(c, i, Dense ? i : c.ys[i], k1 * ny, k2 * ny, to_row, to_column);
  };
  const Team team = J.team;
  for (int k1 = team.rank(); k1 < n1; k1 += team.size())
    for (int k2 = 0; k2 < n2; ++k2) pair(k1, k2, true, false);
  team.sync();
  for (int k2 = team.rank(); k2 < n2; k2 += team.size())
    for (int k1 = 0; k1 < n1; ++k1) pair(k1, k2, false, true);
  team.sync();
#else
  for (int v = 0; v < pairs_with_cells<Dense>(J); ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    for (int i = 0; i < c.count; ++i) visit(c, i, Dense ? i : c.ys[i], c.k / n2 * ny, c.k % n2 * ny, true, true);
  }
#endif
}

// g_k = log Σ_y exp(λ1 + λ2) and s_k = softmax_y over the pair's cells
// (solver.pair_softmax); pairs without cells get g = 0, s = 0.  The exponentials
// and the logarithms are one pass each (exp_all, log_all): over s itself for a
// dense joint, else over the listed cells only (J.z; s stays 0 off them), so that
// a sparse joint (a plug-in joint of a few samples per cell) pays for its cells.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void pair_softmax_over(Joint<T>& J) {
  const int n2 = J.n2, ny = J.ny, np = J.np, pairs = pairs_with_cells<Dense>(J);
  const Team team = J.team;  // pairs, cells and pairs again split among its lanes
  Ptr<T> z = Dense ? J.s : J.z;
  for (int v = team.rank(); v < pairs; v += team.size()) {  // z ← λ1 + λ2 − the max over the cells, g ← the max
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> l1 = J.lam1 + c.k / n2 * ny;
    ConstPtr<T> l2 = J.lam2 + c.k % n2 * ny;
    Ptr<T> zk = z + c.start;
    // The max over the cells, NaN if any is NaN; without branches on the values.
    T m = -Limits<T>::inf(), nan = T(0);
    Mask<T> any_nan = T(0) != T(0);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      const T zi = l1[y] + l2[y];
      any_nan = any_nan | (zi != zi);
      nan = where(zi != zi, zi, nan);
      m = where(zi > m, zi, m);
    }
    m = where(any_nan, nan, m);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      zk[i] = l1[y] + l2[y] - m;
    }
    J.g[c.k] = m;
  }
  team.sync();
  exp_all(team, z, Dense ? np * ny : J.n_cells);
  team.sync();
  for (int v = team.rank(); v < pairs; v += team.size()) {
    const PairCells c = pair_cells<Dense>(J, v);
    ConstPtr<T> zk = z + c.start;
    Ptr<T> sk = J.s + c.k * ny;
    T sum = T(0);
    for (int i = 0; i < c.count; ++i) sum += zk[i];
    const T inv = T(1) / sum;
    for (int i = 0; i < c.count; ++i) sk[Dense ? i : c.ys[i]] = zk[i] * inv;
    J.pair_sum[c.k] = sum;
  }
  if (!Dense)
    for (int k = team.rank(); k < np; k += team.size())
      if (!J.pair[k]) {
        J.g[k] = T(0);
        J.pair_sum[k] = T(1);
      }
  team.sync();
  log_all(team, J.pair_sum, np);
  for (int k = team.rank(); k < np; k += team.size()) J.g[k] += J.pair_sum[k];
  team.sync();
}
template <typename T>
FASTPID_HOST_DEVICE inline void pair_softmax(Joint<T>& J) {
  if (J.dense)
    pair_softmax_over<true>(J);
  else
    pair_softmax_over<false>(J);
}

// Marginals and masks (solver.Support.of), by one lane.
template <typename T>
FASTPID_HOST_DEVICE inline void set_up_support_alone(Joint<T>& J, const T* p) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  for (int i = 0; i < n1 * ny; ++i) J.p1[i] = T(0);
  for (int i = 0; i < n2 * ny; ++i) J.p2[i] = T(0);
  for (int x1 = 0; x1 < n1; ++x1)
    for (int x2 = 0; x2 < n2; ++x2) {
      const T* pk = p + (x1 * n2 + x2) * ny;
      for (int y = 0; y < ny; ++y) {
        J.p1[x1 * ny + y] += pk[y];
        J.p2[x2 * ny + y] += pk[y];
      }
    }
  for (int y = 0; y < ny; ++y) {
    T sum = T(0);
    for (int x1 = 0; x1 < n1; ++x1) sum += J.p1[x1 * ny + y];
    J.py[y] = sum;
  }
  for (int i = 0; i < n1 * ny; ++i) J.on1[i] = any_(J.p1[i] > T(0));  // the joints of a Lanes agree
  for (int i = 0; i < n2 * ny; ++i) J.on2[i] = any_(J.p2[i] > T(0));
  for (int k1 = 0, k = 0; k1 < n1; ++k1)
    for (int k2 = 0; k2 < n2; ++k2, ++k) {
      ConstPtr<unsigned char> o1 = J.on1 + k1 * ny;
      ConstPtr<unsigned char> o2 = J.on2 + k2 * ny;
      unsigned char any = 0;
      for (int y = 0; y < ny; ++y) {
        J.cell[k * ny + y] = o1[y] && o2[y];
        any |= J.cell[k * ny + y];
      }
      J.pair[k] = any;
    }
  J.n_valid = J.n_cells = 0;
  for (int k = 0; k < J.np; ++k) {
    J.pair_slot[k] = J.pair[k] ? J.n_valid : -1;
    if (!J.pair[k]) continue;
    J.valid_pairs[J.n_valid] = k;
    J.pair_start[J.n_valid++] = J.n_cells;
    for (int y = 0; y < ny; ++y)
      if (J.cell[k * ny + y]) J.cells[J.n_cells++] = y;
  }
  J.pair_start[J.n_valid] = J.n_cells;
  for (int i = 0; i < J.np * ny; ++i) J.s[i] = J.qr[i] = T(0);  // off the cells both stay 0
}

// Marginals and masks (solver.Support.of): all the certificate needs.
template <typename T>
FASTPID_HOST_DEVICE inline void set_up_support(Joint<T>& J, const T* p) {
  if (J.team.leader()) set_up_support_alone(J, p);  // once per solve: one lane
  J.n_valid = int(J.team.share(J.n_valid));
  J.n_cells = int(J.team.share(J.n_cells));
  J.dense = J.n_cells == J.np * J.ny;
}

// The pinned x2 of a target value y: the first of largest P2(x2, y) (p2 points
// at P2(0, y), rows `stride` apart; torch.argmax's rule, NaN counting as the largest).
template <typename T>
FASTPID_HOST_DEVICE inline int gauge_pin(ConstPtr<T> p2, ConstPtr<unsigned char>, int n2, int stride) {
  int pin = 0;
  T best = p2[0];
  for (int x2 = 1; x2 < n2; ++x2) {
    const T v = p2[x2 * stride];
    if (best == best && (v > best || v != v)) {
      best = v;
      pin = x2;
    }
  }
  return pin;
}

// The pairs elimination's view of the joint, per target value y: its free
// variables (λ1 of the x1 with P1 > 0, λ2 of the free x2) and the symbols on
// its cells (the x1 with P1 > 0 and the x2 with P2 > 0, pinned included).
template <typename T>
FASTPID_HOST_DEVICE inline void list_target_values(Joint<T>& J) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, nn = J.nn;
  for (int y = 0; y < ny; ++y) {
    Ptr<int> vars = J.yvars + size_t(y) * nn;
    int m = 0, a = 0, b = 0;
    for (int x1 = 0; x1 < n1; ++x1)
      if (J.on1[x1 * ny + y]) {
        vars[m++] = x1;
        J.yon1[y * n1 + a++] = x1;
      }
    for (int x2 = 0; x2 < n2; ++x2) {
      if (J.free2[x2 * ny + y]) vars[m++] = n1 + x2;
      if (J.on2[x2 * ny + y]) J.yon2[y * n2 + b++] = x2;
    }
    J.ycount[y] = m;
    J.shifted[y] = 0;
    J.yn1[y] = a;
    J.yn2[y] = b;
  }
}

// Marginals, masks, gauge, sides and the analytic start (solver.Support.of,
// solver.analytic_start).
template <typename T>
FASTPID_HOST_DEVICE inline void set_up(Joint<T>& J, const T* p) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  const Team team = J.team;
  set_up_support(J, p);
  // Gauge: pin λ2 at the first x2 of largest P2(x2, y) (torch.argmax's rule,
  // NaN counting as the largest); Lanes, whose joints share one structure, pin
  // at the first x2 with P2 > 0 (gauge_pin in csrc/cpu/lanes.h).  Listed by one lane.
  if (team.leader()) {
    for (int y = 0; y < ny; ++y) {
      const int pin = gauge_pin(J.p2 + y, J.on2 + y, n2, ny);
      for (int x2 = 0; x2 < n2; ++x2) J.free2[x2 * ny + y] = J.on2[x2 * ny + y] && x2 != pin;
    }
    list_free(J.side1, n1, ny, J.on1);
    list_free(J.side2, n2, ny, J.free2);
  }
  J.side1.n = n1;
  J.side1.free = J.on1;
  J.side2.n = n2;
  J.side2.free = J.free2;
  J.side1.total = int(team.share(J.side1.total));
  J.side2.total = int(team.share(J.side2.total));
  // Keep the side with fewer free variables (λ2 on ties): the Schur complement
  // is the only dense factorisation.
  J.keep2 = J.side2.total <= J.side1.total;
  J.stride_e = J.keep2 ? n2 : 1;
  J.stride_k = J.keep2 ? 1 : n2;
  J.ldK = padded(kept(J).total);
  if (J.elimination == Elimination::kPairs) list_target_values(J);
  // Start: λ1 = log P1 − log P(y) − 1, λ2 = log P2, w = Q0(x1, x2).
  for (int i = team.rank(); i < n1 * ny; i += team.size()) {
    const int y = i % ny;
    const T log_py = where(J.py[y] > T(0), log_(J.py[y]), T(0));
    J.lam1[i] = J.on1[i] ? log_(J.p1[i]) - log_py - T(1) : T(0);
  }
  for (int i = team.rank(); i < n2 * ny; i += team.size()) J.lam2[i] = J.on2[i] ? log_(J.p2[i]) : T(0);
  for (int k = team.rank(); k < J.np; k += team.size()) {
    ConstPtr<T> a = J.p1 + k / n2 * ny;
    ConstPtr<T> b = J.p2 + k % n2 * ny;
    T sum = T(0);
    for (int y = 0; y < ny; ++y)
      if (J.cell[k * ny + y]) sum += a[y] * b[y] / J.py[y];
    J.w[k] = sum;
  }
  team.sync();
  pair_softmax(J);
  // Weighted central path w_k h_k = μ Q0(x1, x2).
  T total = T(0);
  for (int k = team.rank(); k < J.np; k += team.size()) {
    J.h[k] = J.pair[k] ? -J.g[k] : T(1);
    J.weight[k] = J.pair[k] ? J.w[k] : T(0);
    total += J.weight[k];
  }
  total = team.sum(total);
  J.total_weight = where(total < Limits<T>::tiny(), Limits<T>::tiny(), total);
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
