// The BROJA solver for one joint: the per-joint form of fastpid/solver.py.
//
// fastpid/solver.py is the readable (batched torch) version and the reference;
// this header runs the same iteration on one joint at a time, for the compiled
// backends, with T = double, or on four joints side by side in vector lanes
// with T = Lanes (csrc/cpu/lanes.h; the CPU op's path for small joints).  It
// is plain C++ over raw pointers and a caller-provided workspace (no
// allocation, no STL, no exceptions, no torch types), so that a CUDA kernel
// can compile the same code: every function is FASTPID_HOST_DEVICE.
//
// Problem.  For a joint P(x1, x2, y) with marginals P1(x1, y), P2(x2, y),
//
//     V(P) = max_λ <λ1, P1> + <λ2, P2>
//            s.t.  g_k(λ) = log Σ_y exp(λ1(x1, y) + λ2(x2, y)) ≤ 0   for each pair k = (x1, x2),
//
// the sums running over the cells with P1 > 0 and P2 > 0.  A primal-dual
// interior-point method with pair multipliers w_k (= Q(x1, x2)) and slacks
// h_k = -g_k takes Mehrotra predictor-corrector steps on
//
//     Σ_k w_k ∇g_k(λ) = (P1, P2),    g + h = 0,    w_k h_k = μ ω_k,
//
// with weights ω_k = Q0(x1, x2), the pair masses at the start (a weighted
// central path), eliminating Δw, Δh; the Newton matrix on (λ1, λ2) is
//
//     Σ_k E_kᵀ [diag(q_k) + c_k s_k s_kᵀ] E_k,   s_k = softmax_y(λ1 + λ2),
//     q_k = w_k s_k,  c_k = w_k / h_k − w_k,  E_k: λ ↦ λ1(x1, ·) + λ2(x2, ·),
//
// with one λ2 per target value pinned (the gauge; at the heaviest x2, first
// index on ties like torch.argmax) and masked variables removed.  As in
// solver.solve_spd, the matrix is Jacobi-scaled and factorised by Cholesky,
// with a diagonal shift (1e-14, raised ×100) only where that breaks down, and
// each solve gets up to two steps of iterative refinement (the reference always
// takes both; here a step is taken only while the componentwise backward error
// exceeds 4 ulps, which skips 85-95 % of them and changes no iteration count).
// Mehrotra's σ = (μ_aff / μ)³ is raised to at least 0.01 max |r_d| / μ (at most
// 1), so that μ falls no faster than the marginal residual (solver.py's
// docstring: "Infeasibility and centring").
// Steps stop a fraction clamp(1 − μ, 0.99, 1 − 1e-6) short of the boundary of
// w ≥ 0, h ≥ 0 and are halved while λ would violate a constraint by more than
// max(0.1, max_k g_k).
// The gap of the certificate (Q = w·s rounded onto Δ_P by Altschuler-Weed-
// Rigollet, λ made feasible by shifting λ1) decides convergence (gap ≤ tol),
// stalls (below a gap of 1e-6, `patience` iterations without halving the best
// gap) and the iterate returned (the one with the smallest gap).  It is taken
// only where it can decide one of them: at iterates whose complementarity
// Σ_k w_k h_k (about the gap: f(w s) − dual(λ) = Σ_k w_k h_k at a feasible
// iterate) is at most kCertifyAbove × max(tol, 1e-6), at the last iteration
// allowed, and where a step fails; on 20×20×6 joints that skips 7 of 12.
//
// Linear algebra.  The matrix is [[A_E, C], [Cᵀ, A_K]] with A_E, A_K block
// diagonal (ny×ny blocks, one per symbol).  The side with more free variables is
// eliminated (E) block by block, each block by a Jacobi-scaled Cholesky
// factorisation, and the Schur complement S = A_K − Cᵀ A_E⁻¹ C on the other
// side's free variables (K) is factorised the same way, scaled by the diagonal
// of A_K: its pivots are then those of the reference's Cholesky of the whole
// Jacobi-scaled matrix (which eliminates λ1 first, as here when E is the λ1
// side), so both detect a loss of definiteness alike.  Each cross block
// C_k = diag(q_k) + c_k s_k s_kᵀ is diagonal plus rank one, so products with C
// (and with the whole matrix, for the refinement) cost O(ny) per pair.  The
// Schur complement and the blocked Cholesky share one register-tiled kernel.
//
// Sparse joints.  A plug-in joint of a few samples per cell has most cells off
// the domain (P1 = 0 or P2 = 0): 180 of 4,000 on bench case 4's 20×20×10
// joint of 1,280 samples.  pair_softmax, the refinement's products and the
// certificate then run over the cells listed pair by pair (Joint::cells), not
// over every (pair, y): 650 → 366 µs for that joint's solve; a dense joint runs
// the same loops over every cell, as contiguous as before (the Dense
// instantiations, bit for bit the former code).  Only summation orders over the
// cells change (Σ Q log Q, the refinement's FMAs): iterates move by rounding
// (1e-12 relative on the demo's UCI probe joints), iteration counts do not.
//
// Where the reference can make no further progress (a factorisation that fails
// even with the largest shift, a non-finite step, no acceptable step length) the
// joint stops with its best iterate, which is what the reference returns too;
// NaN never reaches the returned values.
#pragma once

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FASTPID_HOST_DEVICE __host__ __device__
#else
#define FASTPID_HOST_DEVICE
#endif

// The solver is compiled once per instruction set it runs on: FASTPID_ISA
// names the copy (an inline namespace, so that copies built with different
// flags never merge at link time; csrc/cpu/broja_cpu_avx2.cpp builds the
// second CPU copy).
#ifndef FASTPID_ISA
#define FASTPID_ISA baseline
#endif

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

// The constants of fastpid/solver.py (same names, upper case there).
constexpr double kFractionToBoundary = 0.99;  // at least; then 1 − μ, up to the next bound
constexpr double kMaxFractionToBoundary = 1 - 1e-6;
constexpr double kRegularization = 1e-14;  // first diagonal shift of a matrix that is not numerically SPD
constexpr int kMaxShiftRaises = 8;
constexpr int kRefinementSteps = 2;
constexpr double kMaxViolation = 0.1;  // nats: how far a step may take λ out of the feasible set
constexpr int kMaxBacktracks = 30;
constexpr double kInfeasibilityCentring = 1e-2;  // σμ ≥ this × max |r_d|: μ falls no faster than r_d
constexpr double kStallGap = 1e-6;  // nats: stalls count only below this gap
// Certificates are taken only at iterates whose complementarity Σ_k w_k h_k is
// at most this many times max(tol, kStallGap) (see solve_joint).
constexpr double kCertifyAbove = 100;
// Not in the reference, which always refines: a refinement step is taken only
// while the componentwise backward error exceeds this many ulps.
constexpr double kRefinementBerr = 4;

// ---------------------------------------------------------------- scalar helpers

FASTPID_HOST_DEVICE inline double exp_(double x) { return ::exp(x); }
FASTPID_HOST_DEVICE inline float exp_(float x) { return ::expf(x); }
FASTPID_HOST_DEVICE inline double log_(double x) { return ::log(x); }
FASTPID_HOST_DEVICE inline float log_(float x) { return ::logf(x); }
FASTPID_HOST_DEVICE inline double sqrt_(double x) { return ::sqrt(x); }
FASTPID_HOST_DEVICE inline float sqrt_(float x) { return ::sqrtf(x); }
FASTPID_HOST_DEVICE inline double fabs_(double x) { return ::fabs(x); }
FASTPID_HOST_DEVICE inline float fabs_(float x) { return ::fabsf(x); }

template <typename T> struct Limits;
template <> struct Limits<double> {
  FASTPID_HOST_DEVICE static double tiny() { return DBL_MIN; }
  FASTPID_HOST_DEVICE static double epsilon() { return DBL_EPSILON; }
  FASTPID_HOST_DEVICE static double inf() { return HUGE_VAL; }
};
template <> struct Limits<float> {
  FASTPID_HOST_DEVICE static float tiny() { return FLT_MIN; }
  FASTPID_HOST_DEVICE static float epsilon() { return FLT_EPSILON; }
  FASTPID_HOST_DEVICE static float inf() { return HUGE_VALF; }
};

// Decisions on values.  T is a scalar (one joint) or csrc/cpu/lanes.h's Lanes
// (one joint per vector lane), so the code below never branches on a value:
// a comparison gives a Mask (bool, or one flag per lane), `where` selects lane
// by lane, and loops that run until every joint is done test all_ / any_.
// Branches on the structure (cells, pairs, free variables) stay branches: the
// joints of one Lanes share it.
template <typename T> using Mask = decltype(T(0) < T(0));
FASTPID_HOST_DEVICE inline double where(bool c, double a, double b) { return c ? a : b; }
FASTPID_HOST_DEVICE inline float where(bool c, float a, float b) { return c ? a : b; }
FASTPID_HOST_DEVICE inline bool all_(bool c) { return c; }
FASTPID_HOST_DEVICE inline bool any_(bool c) { return c; }

// False for ±inf and NaN (x − x is NaN there); no <cmath> needed on the device.
template <typename T> FASTPID_HOST_DEVICE inline Mask<T> finite(T x) { return x - x == T(0); }

// min and max that propagate NaN (like torch.minimum / torch.maximum).
template <typename T> FASTPID_HOST_DEVICE inline T min_(T a, T b) { return where((a != a) | (a < b), a, b); }
template <typename T> FASTPID_HOST_DEVICE inline T max_(T a, T b) { return where((a != a) | (a > b), a, b); }

// x log x with 0 log 0 = 0 (torch.xlogy(x, x)); NaN for x < 0 or NaN.
template <typename T> FASTPID_HOST_DEVICE inline T xlogx(T x) { return where(x == T(0), T(0), x * log_(x)); }

// The register tiles of rank_update: kTileRows rows of S by two vectors of
// FASTPID_VECTOR_BYTES bytes (a translation unit may define it before including
// this header, as csrc/cpu/broja_cpu_avx2.cpp does).  The Schur complement and
// its stacked factors have rows padded to a multiple of kPadding, two vectors
// of the widest build.
#ifndef FASTPID_VECTOR_BYTES
#define FASTPID_VECTOR_BYTES 16
#endif
constexpr int kTileRows = 4;
constexpr int kPadding = 8;
static_assert(2 * FASTPID_VECTOR_BYTES / 8 <= kPadding && kPadding % kTileRows == 0, "tiles must fit the padding");

// n rounded up to a multiple of kPadding.
FASTPID_HOST_DEVICE inline int padded(int n) { return (n + kPadding - 1) / kPadding * kPadding; }

#if defined(__GNUC__) && !defined(__CUDACC__)
// Vectors of FASTPID_VECTOR_BYTES (GCC/Clang vector extensions) for the CPU
// kernels below, with unaligned loads and stores.
typedef double vector_double __attribute__((vector_size(FASTPID_VECTOR_BYTES)));
constexpr int kVectorDoubles = FASTPID_VECTOR_BYTES / sizeof(double);
inline vector_double load(const double* x) {
  vector_double v;
  __builtin_memcpy(&v, x, sizeof v);
  return v;
}
inline void store(double* x, vector_double v) { __builtin_memcpy(x, &v, sizeof v); }
#endif

// The long passes of pair_softmax and certificate_gap: x ← exp(x), x ← log(x)
// and Σ x log x (0 log 0 = 0) over n values.  A translation unit may define
// FASTPID_VECTOR_EXP and FASTPID_VECTOR_LOG (functions of one vector_double)
// before including this header, as csrc/cpu/broja_cpu_avx2.cpp does with
// SLEEF's, for the double versions below.
template <typename T> FASTPID_HOST_DEVICE inline void exp_all(T* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = exp_(x[i]);
}
template <typename T> FASTPID_HOST_DEVICE inline void log_all(T* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = log_(x[i]);
}
template <typename T> FASTPID_HOST_DEVICE inline T sum_xlogx(const T* x, int n) {
  T sum = T(0);
  for (int i = 0; i < n; ++i) sum += xlogx(x[i]);
  return sum;
}
#if defined(FASTPID_VECTOR_EXP) && defined(FASTPID_VECTOR_LOG)
inline void exp_all(double* x, int n) {
  int i = 0;
  for (; i + kVectorDoubles <= n; i += kVectorDoubles) store(x + i, FASTPID_VECTOR_EXP(load(x + i)));
  for (; i < n; ++i) x[i] = exp_(x[i]);
}
inline void log_all(double* x, int n) {
  int i = 0;
  for (; i + kVectorDoubles <= n; i += kVectorDoubles) store(x + i, FASTPID_VECTOR_LOG(load(x + i)));
  for (; i < n; ++i) x[i] = log_(x[i]);
}
inline double sum_xlogx(const double* x, int n) {
  vector_double acc = {};
  int i = 0;
  for (; i + kVectorDoubles <= n; i += kVectorDoubles) {
    const vector_double v = load(x + i);
    const vector_double t = v * FASTPID_VECTOR_LOG(v);
    acc += v == 0.0 ? vector_double{} : t;  // 0 log 0 = 0; NaN for x < 0 or NaN, as xlogx
  }
  double sum = 0.0;
  for (; i < n; ++i) sum += xlogx(x[i]);
  for (int l = 0; l < kVectorDoubles; ++l) sum += acc[l];
  return sum;
}
#endif

// ---------------------------------------------------------------- workspace

// Free variables of one side (x1: λ1, x2: λ2), listed per symbol: symbol a has
// count[a] free target values ys[a * ny + i] (increasing), numbered offset[a] + i
// overall; pos[a * ny + y] is i, or −1 where (a, y) is not free.
struct Side {
  int n;
  const unsigned char* free;  // (n, ny)
  int* ys;                    // (n, ny)
  int* pos;                   // (n, ny)
  int* count;                 // (n)
  int* offset;                // (n)
  int total;
};

template <typename T> struct Joint {
  int n1, n2, ny, np;  // np = n1 n2 pairs, pair k = k1 n2 + k2 of symbols (k1, k2), cell k ny + y
  T total_weight;      // Σ_k weight_k (at least the smallest normal number)
  // Problem data and masks.
  T *p1, *p2, *py;                      // (n1, ny), (n2, ny), (ny)
  unsigned char *on1, *on2, *free2;     // P1 > 0, P2 > 0, P2 > 0 and not pinned
  unsigned char *cell, *pair;           // (np, ny), (np)
  // The cells by pair (compressed rows), for joints with cells off the domain
  // (dense = false): pair valid_pairs[v] has the cells cells[pair_start[v] ..
  // pair_start[v + 1]) (their y, increasing), v < n_valid pairs with cells.
  int *valid_pairs, *pair_start, *cells;  // (np), (np + 1), (np ny)
  int n_valid, n_cells;
  bool dense;                           // every cell on the domain (P1 > 0 and P2 > 0 everywhere)
  Side side1, side2;
  // Elimination: E is eliminated, K kept; pair(e, b) = e stride_e + b stride_k.
  const Side* E;
  const Side* K;
  int stride_e, stride_k;
  int ldK;  // leading dimension of G and S: padded(K.total) (the padding is zero)
  // Iterate and best iterate.
  T *lam1, *lam2, *w, *h;
  T *weight;  // central-path weights Q0(x1, x2) (0 off the pairs)
  T *best_lam1, *best_lam2, *best_w;
  // Per iteration.
  T *g, *s, *q, *c;          // (np), (np, ny), w s (np, ny), w / h − w (np)
  T *z;                      // (np ny) scratch on the listed cells: pair_softmax's exponents, certificate_gap's Q
  T *pair_sum;               // (np) scratch: Σ_y exp, Q(x1, x2), P(x1, x2) (pair_softmax, certificate_gap,
                             // conditional_entropies)
  T *qr;                     // rounded Q (np, ny)
  T *r1, *r2;                // marginals(w s) − (P1, P2)
  T *t1, *t2;                // scratch (n1, ny), (n2, ny)
  T *primal, *comp, *rc;     // (np)
  T *dw_a, *dh_a, *dw, *dh;  // (np)
  T *d1, *d2, *rhs1, *rhs2;  // (n1, ny), (n2, ny)
  T *e1, *e2, *f1, *f2;      // refinement: residual and correction, (n1, ny), (n2, ny)
  T *lam1_0, *lam2_0;        // λ before a step, for backtracking
  // Newton matrix factors (E.total ≤ Emax = max(n1, n2) ny, K.total ≤ Kmax = min(n1, n2) ny).
  T *LE, *DE, *IE;  // per E block: Cholesky factor (ny × ny), Jacobi scales, 1 / pivots
  T *G;             // L_e⁻¹ D_e C_e for all e, stacked (E.total × ldK)
  T *S, *DS, *IS;   // Schur complement: upper factor (ldK², row-major), Jacobi scales, 1 / pivots
  T *diagK;         // (Kmax) diagonal of A_K: the Jacobi scaling of S
  T *sK, *tE, *xK;  // scratch (ny), (Emax), (Kmax)
  T *u;             // scratch (ny)
};

template <typename U>
FASTPID_HOST_DEVICE inline void carve(U*& ptr, char* base, size_t& offset, size_t count) {
  offset = (offset + 63) & ~size_t(63);
  ptr = base ? reinterpret_cast<U*>(base + offset) : nullptr;
  offset += count * sizeof(U);
}

// Points the arrays of `J` into `base` (when not null) and returns the bytes
// needed for an n1 × n2 × ny joint; call with base = nullptr to size the workspace.
template <typename T>
FASTPID_HOST_DEVICE inline size_t layout(Joint<T>& J, void* base, int n1, int n2, int ny) {
  char* b = static_cast<char*>(base);
  size_t o = 0;
  const size_t np = size_t(n1) * n2, c1 = size_t(n1) * ny, c2 = size_t(n2) * ny, nc = np * ny;
  const size_t e_max = (n1 > n2 ? n1 : n2) * size_t(ny);
  const size_t k_max = (n1 < n2 ? n1 : n2) * size_t(ny);
  const size_t k_pad = padded(int(k_max));
  J.n1 = n1; J.n2 = n2; J.ny = ny; J.np = int(np);
  carve(J.p1, b, o, c1); carve(J.p2, b, o, c2); carve(J.py, b, o, ny);
  carve(J.lam1, b, o, c1); carve(J.lam2, b, o, c2);
  carve(J.w, b, o, np); carve(J.h, b, o, np); carve(J.weight, b, o, np);
  carve(J.best_lam1, b, o, c1); carve(J.best_lam2, b, o, c2); carve(J.best_w, b, o, np);
  carve(J.g, b, o, np); carve(J.pair_sum, b, o, np); carve(J.s, b, o, nc); carve(J.q, b, o, nc); carve(J.c, b, o, np);
  carve(J.qr, b, o, nc); carve(J.r1, b, o, c1); carve(J.r2, b, o, c2);
  carve(J.t1, b, o, c1); carve(J.t2, b, o, c2);
  carve(J.primal, b, o, np); carve(J.comp, b, o, np); carve(J.rc, b, o, np);
  carve(J.dw_a, b, o, np); carve(J.dh_a, b, o, np); carve(J.dw, b, o, np); carve(J.dh, b, o, np);
  carve(J.d1, b, o, c1); carve(J.d2, b, o, c2); carve(J.rhs1, b, o, c1); carve(J.rhs2, b, o, c2);
  carve(J.e1, b, o, c1); carve(J.e2, b, o, c2); carve(J.f1, b, o, c1); carve(J.f2, b, o, c2);
  carve(J.lam1_0, b, o, c1); carve(J.lam2_0, b, o, c2);
  carve(J.LE, b, o, e_max * ny); carve(J.DE, b, o, e_max); carve(J.IE, b, o, e_max);
  carve(J.G, b, o, e_max * k_pad);
  carve(J.S, b, o, k_pad * k_pad); carve(J.DS, b, o, k_max); carve(J.IS, b, o, k_max);
  carve(J.diagK, b, o, k_max); carve(J.sK, b, o, ny);
  carve(J.tE, b, o, e_max); carve(J.xK, b, o, k_max);
  carve(J.u, b, o, ny);
  carve(J.on1, b, o, c1); carve(J.on2, b, o, c2); carve(J.free2, b, o, c2);
  carve(J.cell, b, o, nc); carve(J.pair, b, o, np);
  carve(J.valid_pairs, b, o, np); carve(J.pair_start, b, o, np + 1); carve(J.cells, b, o, nc); carve(J.z, b, o, nc);
  Side* sides[2] = {&J.side1, &J.side2};
  for (int t = 0; t < 2; ++t) {
    const size_t n = t == 0 ? n1 : n2;
    carve(sides[t]->ys, b, o, n * ny); carve(sides[t]->pos, b, o, n * ny);
    carve(sides[t]->count, b, o, n); carve(sides[t]->offset, b, o, n);
  }
  return o + 64;  // room to align `base` itself
}

// Lays J's arrays out in `workspace` (workspace_bytes<T>(n1, n2, ny) bytes)
// from its first 64-byte boundary on.
template <typename T>
FASTPID_HOST_DEVICE inline void attach(Joint<T>& J, void* workspace, int n1, int n2, int ny) {
  char* base = static_cast<char*>(workspace);
  base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  layout(J, base, n1, n2, ny);
}

// ---------------------------------------------------------------- dense kernels

// Σ a_i b_i with four partial sums (independent chains, so it pipelines).
template <typename T>
FASTPID_HOST_DEVICE inline T dot(const T* a, const T* b, int n) {
  T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}
#if defined(__GNUC__) && !defined(__CUDACC__)
// The same with two vector accumulators (4 or 8 partial sums).
FASTPID_HOST_DEVICE inline double dot(const double* a, const double* b, int n) {
  vector_double s0 = {}, s1 = {};
  int i = 0;
  for (; i + 2 * kVectorDoubles <= n; i += 2 * kVectorDoubles) {
    s0 += load(a + i) * load(b + i);
    s1 += load(a + i + kVectorDoubles) * load(b + i + kVectorDoubles);
  }
  s0 += s1;
  double sum = 0.0;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int l = 0; l < kVectorDoubles; ++l) sum += s0[l];
  return sum;
}
#endif

// In-place Jacobi-scaled Cholesky of the m × m lower triangle of A (leading
// dimension ld): D = diag(A)^(-1/2) (diagonal clamped at the smallest normal
// number, as solver.solve_spd), then D A D + shift I = L Lᵀ with L in A and
// its reciprocal pivots in inv.  False if a pivot is not positive (or NaN).
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> cholesky_jacobi(T* A, int ld, int m, T* D, T* inv, T shift) {
  for (int i = 0; i < m; ++i) {
    const T d = A[i * ld + i];
    D[i] = T(1) / sqrt_(where(d < Limits<T>::tiny(), Limits<T>::tiny(), d));  // NaN stays NaN
  }
  for (int i = 0; i < m; ++i) {
    T* Ai = A + i * ld;
    const T di = D[i];
    for (int j = 0; j <= i; ++j) Ai[j] = Ai[j] * di * D[j];
    Ai[i] += shift;
  }
  Mask<T> ok = T(0) == T(0);
  for (int i = 0; i < m; ++i) {
    T* Ai = A + i * ld;
    for (int j = 0; j < i; ++j) Ai[j] = (Ai[j] - dot(Ai, A + j * ld, j)) * inv[j];
    const T pivot = Ai[i] - dot(Ai, Ai, i);
    ok = ok & (pivot > T(0));
    if (!any_(ok)) return ok;
    Ai[i] = sqrt_(pivot);
    inv[i] = T(1) / Ai[i];
  }
  return ok;
}

// x ← L⁻¹ x and x ← L⁻ᵀ x for a factor of cholesky_jacobi.
template <typename T>
FASTPID_HOST_DEVICE inline void forward(const T* L, int ld, int m, const T* inv, T* x) {
  for (int i = 0; i < m; ++i) x[i] = (x[i] - dot(L + i * ld, x, i)) * inv[i];
}
template <typename T>
FASTPID_HOST_DEVICE inline void backward(const T* L, int ld, int m, const T* inv, T* x) {
  for (int i = m - 1; i >= 0; --i) {
    const T xi = x[i] * inv[i];
    x[i] = xi;
    const T* Li = L + i * ld;
    for (int l = 0; l < i; ++l) x[l] -= Li[l] * xi;
  }
}

// S[r][j] −= Σ_i G[i][r] G[i][j] for 0 ≤ r ≤ j < n (upper triangle, row-major,
// leading dimensions ldS, ldG): the rank-`rows` update of the Schur complement
// and of the blocked Cholesky below.  The arrays are padded (`padded`): G has
// readable columns up to padded(n), zero beyond n, and S writable rows and
// columns up to padded(n), so that every register tile is a full one.  Entries
// below the diagonal may be updated too: no caller reads S's lower triangle.
template <typename T>
FASTPID_HOST_DEVICE inline void rank_update(T* S, int ldS, const T* G, int ldG, int rows, int n) {
  for (int r = 0; r < n; ++r)
    for (int j = r; j < n; ++j) {
      T sum = T(0);
      for (int i = 0; i < rows; ++i) sum += G[i * ldG + r] * G[i * ldG + j];
      S[r * ldS + j] -= sum;
    }
}
#if defined(__GNUC__) && !defined(__CUDACC__)
// The same in tiles of kTileRows × 2 vectors of FASTPID_VECTOR_BYTES (GCC/Clang
// vector extensions): 4 × 4 with SSE2, the x86-64 baseline, 4 × 8 where
// csrc/cpu/broja_cpu_avx2.cpp builds the solver for AVX2 and FMA.  Tiles that
// cross the diagonal are written whole (their lower part is never read).
FASTPID_HOST_DEVICE inline void rank_update(double* S, int ldS, const double* G, int ldG, int rows, int n) {
  constexpr int W = kVectorDoubles, C = 2 * W;
  for (int r0 = 0; r0 < n; r0 += kTileRows) {
    for (int j0 = r0 / C * C; j0 < n; j0 += C) {
      vector_double acc[kTileRows][2] = {};
      for (int i = 0; i < rows; ++i) {
        const double* Gi = G + i * ldG;
        const vector_double b0 = load(Gi + j0), b1 = load(Gi + j0 + W);
        for (int a = 0; a < kTileRows; ++a) {
          const vector_double g = Gi[r0 + a] - vector_double{};  // a broadcast: x − (+0) = x, no addition
          acc[a][0] += g * b0;
          acc[a][1] += g * b1;
        }
      }
      for (int a = 0; a < kTileRows; ++a) {
        double* Sr = S + (r0 + a) * ldS + j0;
        store(Sr, load(Sr) - acc[a][0]);
        store(Sr + W, load(Sr + W) - acc[a][1]);
      }
    }
  }
}
#endif

// Scaled Cholesky D S D + shift I = Uᵀ U of the upper triangle of S (row-major,
// n × n, leading dimension ld), in place, blocked right-looking, with
// D = diag^(-1/2) (clamped at the smallest normal number) from the given
// diagonal; reciprocal pivots in inv.  False if a pivot is not positive (or NaN).
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> cholesky_upper(T* S, int ld, int n, const T* diag, T* D, T* inv, T shift) {
  constexpr int kPanel = 16;
  for (int i = 0; i < n; ++i)
    D[i] = T(1) / sqrt_(where(diag[i] < Limits<T>::tiny(), Limits<T>::tiny(), diag[i]));  // NaN stays NaN
  for (int i = 0; i < n; ++i) {
    T* Si = S + i * ld;
    const T di = D[i];
    for (int j = i; j < n; ++j) Si[j] = Si[j] * di * D[j];
    Si[i] += shift;
  }
  Mask<T> ok = T(0) == T(0);
  for (int p0 = 0; p0 < n; p0 += kPanel) {
    const int p1 = n < p0 + kPanel ? n : p0 + kPanel;
    for (int p = p0; p < p1; ++p) {
      T* Up = S + p * ld;
      const T pivot = Up[p];
      ok = ok & (pivot > T(0));
      if (!any_(ok)) return ok;
      Up[p] = sqrt_(pivot);
      const T r = T(1) / Up[p];
      inv[p] = r;
      for (int j = p + 1; j < n; ++j) Up[j] *= r;
      for (int i = p + 1; i < p1; ++i) {
        const T f = Up[i];
        T* Si = S + i * ld;
        for (int j = i; j < n; ++j) Si[j] -= f * Up[j];
      }
    }
    if (p1 < n) rank_update(S + p1 * ld + p1, ld, S + p0 * ld + p1, ld, p1 - p0, n - p1);
  }
  return ok;
}

// x ← U⁻ᵀ x and x ← U⁻¹ x for a factor of cholesky_upper.
template <typename T>
FASTPID_HOST_DEVICE inline void forward_upper(const T* U, int ld, int n, const T* inv, T* x) {
  for (int p = 0; p < n; ++p) {
    const T xp = x[p] * inv[p];
    x[p] = xp;
    const T* Up = U + p * ld;
    for (int j = p + 1; j < n; ++j) x[j] -= Up[j] * xp;
  }
}
template <typename T>
FASTPID_HOST_DEVICE inline void backward_upper(const T* U, int ld, int n, const T* inv, T* x) {
  for (int i = n - 1; i >= 0; --i) x[i] = (x[i] - dot(U + i * ld + i + 1, x + i + 1, n - i - 1)) * inv[i];
}

// ---------------------------------------------------------------- set-up

FASTPID_HOST_DEVICE inline void list_free(Side& side, int n, int ny, const unsigned char* free) {
  side.n = n;
  side.free = free;
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

// The cells of the v-th pair with cells (v < pairs_with_cells): pair k, its
// cells at (k, y) for y = ys[i], i < count, and start, where they begin in the
// cell list.  Dense: every pair, every y (ys unused: y = i), start = k ny.
struct PairCells {
  int k, start, count;
  const int* ys;
};
template <bool Dense, typename T> FASTPID_HOST_DEVICE inline int pairs_with_cells(const Joint<T>& J) {
  return Dense ? J.np : J.n_valid;
}
template <bool Dense, typename T> FASTPID_HOST_DEVICE inline PairCells pair_cells(const Joint<T>& J, int v) {
  if (Dense) return {v, v * J.ny, J.ny, nullptr};
  const int start = J.pair_start[v];
  return {J.valid_pairs[v], start, J.pair_start[v + 1] - start, J.cells + start};
}

// g_k = log Σ_y exp(λ1 + λ2) and s_k = softmax_y over the pair's cells
// (solver.pair_softmax); pairs without cells get g = 0, s = 0.  The exponentials
// and the logarithms are one pass each (exp_all, log_all): over s itself for a
// dense joint, else over the listed cells only (J.z; s stays 0 off them), so that
// a sparse joint (a plug-in joint of a few samples per cell) pays for its cells.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void pair_softmax_over(Joint<T>& J) {
  const int n2 = J.n2, ny = J.ny, np = J.np, pairs = pairs_with_cells<Dense>(J);
  T* z = Dense ? J.s : J.z;
  for (int v = 0; v < pairs; ++v) {  // z ← λ1 + λ2 − the max over the cells, g ← the max
    const PairCells c = pair_cells<Dense>(J, v);
    const T* l1 = J.lam1 + c.k / n2 * ny;
    const T* l2 = J.lam2 + c.k % n2 * ny;
    T* zk = z + c.start;
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
  exp_all(z, Dense ? np * ny : J.n_cells);
  for (int v = 0; v < pairs; ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    const T* zk = z + c.start;
    T* sk = J.s + c.k * ny;
    T sum = T(0);
    for (int i = 0; i < c.count; ++i) sum += zk[i];
    const T inv = T(1) / sum;
    for (int i = 0; i < c.count; ++i) sk[Dense ? i : c.ys[i]] = zk[i] * inv;
    J.pair_sum[c.k] = sum;
  }
  if (!Dense)
    for (int k = 0; k < np; ++k)
      if (!J.pair[k]) {
        J.g[k] = T(0);
        J.pair_sum[k] = T(1);
      }
  log_all(J.pair_sum, np);
  for (int k = 0; k < np; ++k) J.g[k] += J.pair_sum[k];
}
template <typename T>
FASTPID_HOST_DEVICE inline void pair_softmax(Joint<T>& J) {
  if (J.dense)
    pair_softmax_over<true>(J);
  else
    pair_softmax_over<false>(J);
}

// Marginals and masks (solver.Support.of): all the certificate needs.
template <typename T>
FASTPID_HOST_DEVICE inline void set_up_support(Joint<T>& J, const T* p) {
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
      const unsigned char* o1 = J.on1 + k1 * ny;
      const unsigned char* o2 = J.on2 + k2 * ny;
      unsigned char any = 0;
      for (int y = 0; y < ny; ++y) {
        J.cell[k * ny + y] = o1[y] && o2[y];
        any |= J.cell[k * ny + y];
      }
      J.pair[k] = any;
    }
  J.n_valid = J.n_cells = 0;
  for (int k = 0; k < J.np; ++k) {
    if (!J.pair[k]) continue;
    J.valid_pairs[J.n_valid] = k;
    J.pair_start[J.n_valid++] = J.n_cells;
    for (int y = 0; y < ny; ++y)
      if (J.cell[k * ny + y]) J.cells[J.n_cells++] = y;
  }
  J.pair_start[J.n_valid] = J.n_cells;
  J.dense = J.n_cells == J.np * ny;
  for (int i = 0; i < J.np * ny; ++i) J.s[i] = J.qr[i] = T(0);  // off the cells both stay 0
}

// The pinned x2 of a target value y: the first of largest P2(x2, y) (p2 points
// at P2(0, y), rows `stride` apart; torch.argmax's rule, NaN counting as the largest).
template <typename T>
FASTPID_HOST_DEVICE inline int gauge_pin(const T* p2, const unsigned char*, int n2, int stride) {
  int pin = 0;
  T best = p2[0];
  for (int x2 = 1; x2 < n2; ++x2) {
    const T v = p2[x2 * stride];
    if (best == best && (v > best || v != v)) { best = v; pin = x2; }
  }
  return pin;
}

// Marginals, masks, gauge, sides and the analytic start (solver.Support.of,
// solver.analytic_start).
template <typename T>
FASTPID_HOST_DEVICE inline void set_up(Joint<T>& J, const T* p) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  set_up_support(J, p);
  // Gauge: pin λ2 at the first x2 of largest P2(x2, y) (torch.argmax's rule,
  // NaN counting as the largest); Lanes, whose joints share one structure, pin
  // at the first x2 with P2 > 0 (gauge_pin in csrc/cpu/lanes.h).
  for (int y = 0; y < ny; ++y) {
    const int pin = gauge_pin(J.p2 + y, J.on2 + y, n2, ny);
    for (int x2 = 0; x2 < n2; ++x2) J.free2[x2 * ny + y] = J.on2[x2 * ny + y] && x2 != pin;
  }
  list_free(J.side1, n1, ny, J.on1);
  list_free(J.side2, n2, ny, J.free2);
  // Keep the side with fewer free variables (λ2 on ties): the Schur complement
  // is the only dense factorisation.
  if (J.side2.total <= J.side1.total) {
    J.E = &J.side1; J.K = &J.side2; J.stride_e = n2; J.stride_k = 1;
  } else {
    J.E = &J.side2; J.K = &J.side1; J.stride_e = 1; J.stride_k = n2;
  }
  J.ldK = padded(J.K->total);
  // Start: λ1 = log P1 − log P(y) − 1, λ2 = log P2, w = Q0(x1, x2).
  for (int x1 = 0; x1 < n1; ++x1)
    for (int y = 0; y < ny; ++y) {
      const int i = x1 * ny + y;
      const T log_py = where(J.py[y] > T(0), log_(J.py[y]), T(0));
      J.lam1[i] = J.on1[i] ? log_(J.p1[i]) - log_py - T(1) : T(0);
    }
  for (int i = 0; i < n2 * ny; ++i) J.lam2[i] = J.on2[i] ? log_(J.p2[i]) : T(0);
  for (int k1 = 0, k = 0; k1 < n1; ++k1)
    for (int k2 = 0; k2 < n2; ++k2, ++k) {
      const T* a = J.p1 + k1 * ny;
      const T* b = J.p2 + k2 * ny;
      T sum = T(0);
      for (int y = 0; y < ny; ++y)
        if (J.cell[k * ny + y]) sum += a[y] * b[y] / J.py[y];
      J.w[k] = sum;
    }
  pair_softmax(J);
  for (int k = 0; k < J.np; ++k) J.h[k] = J.pair[k] ? -J.g[k] : T(1);
  // Weighted central path w_k h_k = μ Q0(x1, x2).
  T total = T(0);
  for (int k = 0; k < J.np; ++k) {
    J.weight[k] = J.pair[k] ? J.w[k] : T(0);
    total += J.weight[k];
  }
  J.total_weight = where(total < Limits<T>::tiny(), Limits<T>::tiny(), total);
}

// ---------------------------------------------------------------- certificate

// q = w s and the residuals r = marginals(q) − (P1, P2) of the current
// iterate, given s of pair_softmax (the Newton step needs them); leaves the
// marginals of q in t1, t2.
template <typename T>
FASTPID_HOST_DEVICE inline void primal_residuals(Joint<T>& J) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  T* rows = J.t1;
  T* cols = J.t2;
  for (int i = 0; i < n1 * ny; ++i) rows[i] = T(0);
  for (int i = 0; i < n2 * ny; ++i) cols[i] = T(0);
  for (int k1 = 0, k = 0; k1 < n1; ++k1)
    for (int k2 = 0; k2 < n2; ++k2, ++k) {
      const T wk = J.w[k];
      T* qk = J.q + k * ny;
      const T* sk = J.s + k * ny;
      T* rk = rows + k1 * ny;
      T* ck = cols + k2 * ny;
      for (int y = 0; y < ny; ++y) {
        const T v = wk * sk[y];
        qk[y] = v;
        rk[y] += v;
        ck[y] += v;
      }
    }
  for (int i = 0; i < n1 * ny; ++i) J.r1[i] = rows[i] - J.p1[i];
  for (int i = 0; i < n2 * ny; ++i) J.r2[i] = cols[i] - J.p2[i];
}

// The duality gap of the current iterate (solver.certificate), given g, s of
// pair_softmax.  Also leaves what primal_residuals does, the rounded Q in qr
// and f(Q) in *value (when not null).
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline T certificate_gap_over(Joint<T>& J, T* value_out) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny, pairs = pairs_with_cells<Dense>(J);
  primal_residuals(J);
  T* rows = J.t1;
  T* cols = J.t2;
  // Rounding: rows scaled down to P1, then columns to P2, then the rank-one deficit.
  for (int i = 0; i < n1 * ny; ++i) rows[i] = where(rows[i] > J.p1[i], J.p1[i] / rows[i], T(1));
  for (int i = 0; i < n2 * ny; ++i) cols[i] = T(0);
  for (int v = 0; v < pairs; ++v) {  // off the cells Q stays 0 (set_up_support)
    const PairCells c = pair_cells<Dense>(J, v);
    const T* scale = rows + c.k / n2 * ny;
    T* ck = cols + c.k % n2 * ny;
    const T* qk = J.q + c.k * ny;
    T* out = J.qr + c.k * ny;
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      out[y] = qk[y] * scale[y];
      ck[y] += out[y];
    }
  }
  for (int i = 0; i < n2 * ny; ++i) cols[i] = where(cols[i] > J.p2[i], J.p2[i] / cols[i], T(1));
  // Deficits P1 − Σ_x2 Q, P2 − Σ_x1 Q of the scaled Q.
  T* deficit1 = J.rhs1;  // free until the Newton step
  T* deficit2 = J.rhs2;
  for (int i = 0; i < n1 * ny; ++i) deficit1[i] = T(0);
  for (int i = 0; i < n2 * ny; ++i) deficit2[i] = T(0);
  for (int v = 0; v < pairs; ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    const T* scale = cols + c.k % n2 * ny;
    T* a = deficit1 + c.k / n2 * ny;
    T* b = deficit2 + c.k % n2 * ny;
    T* out = J.qr + c.k * ny;
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
  T* total = J.u;
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
    const T* a = deficit1 + c.k / n2 * ny;
    const T* b = deficit2 + c.k % n2 * ny;
    T* out = J.qr + c.k * ny;
    T* listed = J.z + c.start;  // Q on the listed cells, for Σ Q log Q (dense: unused)
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
  if (value_out != nullptr) *value_out = value;
  return value - dual;
}
template <typename T>
FASTPID_HOST_DEVICE inline T certificate_gap(Joint<T>& J, T* value_out = nullptr) {
  return J.dense ? certificate_gap_over<true>(J, value_out) : certificate_gap_over<false>(J, value_out);
}

// ---------------------------------------------------------------- Newton system

// Factorises the Newton matrix M at the current iterate (needs s, q = w s and
// c) with the diagonal shift σ of solver.solve_spd: D M D + σ I with
// D = diag(M)^(-1/2).  False (per joint) if a factorisation breaks down.
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> factor(Joint<T>& J, T shift) {
  const int ny = J.ny;
  const Side& E = *J.E;
  const Side& K = *J.K;
  const int nE = E.total, nK = K.total, ldK = J.ldK;
  T* S = J.S;
  for (int i = 0; i < ldK * ldK; ++i) S[i] = T(0);
  Mask<T> ok = T(0) == T(0);
  for (int e = 0; e < E.n; ++e) {
    const int m = E.count[e], o = E.offset[e];
    const int* ys = E.ys + e * ny;
    T* A = J.LE + o * ny;  // rows o..o+m of an (E.total × ny) array
    T* D = J.DE + o;
    T* Ge = J.G + o * ldK;  // rows o..o+m of G: first C_e, then L⁻¹ D C_e
    for (int i = 0; i < m * ny; ++i) A[i] = T(0);
    // One pass over the pairs of e: its block A_e, the blocks of A_K and the
    // cross block C_e, whose column (b, z) is q_k[z] e_z + c_k s_k[z] s_k.
    for (int b = 0; b < K.n; ++b) {
      const int k = e * J.stride_e + b * J.stride_k;
      const int mb = K.count[b], ob = K.offset[b];
      const int* zs = K.ys + b * ny;
      if (!J.pair[k]) {
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < mb; ++j) Ge[i * ldK + ob + j] = T(0);
        continue;
      }
      const T* sk = J.s + k * ny;
      const T* qk = J.q + k * ny;
      const T ck = J.c[k];
      T* u = J.u;
      T* sKb = J.sK;
      for (int i = 0; i < m; ++i) u[i] = sk[ys[i]];
      for (int j = 0; j < mb; ++j) sKb[j] = sk[zs[j]];
      for (int i = 0; i < m; ++i) {  // full rows: rectangular loops run faster than triangles here
        T* Ai = A + i * ny;
        T* Ci = Ge + i * ldK + ob;
        const T t = ck * u[i];
        for (int j = 0; j < m; ++j) Ai[j] += t * u[j];
        Ai[i] += qk[ys[i]];
        for (int j = 0; j < mb; ++j) Ci[j] = t * sKb[j];
        const int pz = K.pos[b * ny + ys[i]];
        if (pz >= 0) Ci[pz] += qk[ys[i]];
      }
      for (int i = 0; i < mb; ++i) {
        T* Si = S + (ob + i) * ldK + ob;
        const T t = ck * sKb[i];
        for (int j = 0; j < mb; ++j) Si[j] += t * sKb[j];
        Si[i] += qk[zs[i]];
      }
    }
    if (m == 0) continue;
    ok = ok & cholesky_jacobi(A, ny, m, D, J.IE + o, shift);
    if (!any_(ok)) return ok;
    // G_e = L⁻¹ D C_e row by row (forward substitution), in place.
    const T* inv = J.IE + o;
    for (int i = 0; i < m; ++i) {
      T* Gi = Ge + i * ldK;
      const T* Li = A + i * ny;
      for (int j = 0; j < nK; ++j) Gi[j] *= D[i];
      for (int l = 0; l < i; ++l) {
        const T f = Li[l];
        const T* Gl = Ge + l * ldK;
        for (int j = 0; j < nK; ++j) Gi[j] -= f * Gl[j];
      }
      for (int j = 0; j < nK; ++j) Gi[j] *= inv[i];
      for (int j = nK; j < ldK; ++j) Gi[j] = T(0);
    }
  }
  for (int i = 0; i < nK; ++i) J.diagK[i] = S[i * ldK + i];  // diagonal of A_K
  // S −= G_Eᵀ G_E, all e at once.
  rank_update(S, ldK, J.G, ldK, nE, nK);
  // Scaled by the diagonal of M (A_K's), as the reference scales the whole
  // matrix: S's pivots are then those of the reference's Cholesky, which fail
  // where S has lost its definiteness to cancellation.
  return ok & cholesky_upper(S, ldK, nK, J.diagK, J.DS, J.IS, shift);
}

// solver.solve_spd's factorisation: no shift, then 1e-14, raised ×100 while
// the factorisation fails, at most kMaxShiftRaises attempts in all.  (Lanes:
// each joint keeps the shift that worked for it; a factorisation repeated with
// the same shift gives the same factor.)
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> factor_with_shift(Joint<T>& J) {
  for (int k = 0; k < J.np; ++k) J.c[k] = J.pair[k] ? J.w[k] / J.h[k] - J.w[k] : T(0);
  T shift = T(0);
  Mask<T> ok = factor(J, shift);
  for (int attempt = 1; attempt < kMaxShiftRaises && !all_(ok); ++attempt) {
    shift = where(ok, shift, where(shift > T(0), shift * T(100), T(kRegularization)));
    ok = factor(J, shift);
  }
  return ok;
}

// (x1, x2) ← the factorised (shifted) matrix's inverse applied to (r1, r2), which
// vanish at variables that are not free; x vanishes there too.
//   t = L⁻¹ D r_E,  S x_K = r_K − Gᵀ t,  x_E = D L⁻ᵀ (t − G x_K).
template <typename T>
FASTPID_HOST_DEVICE inline void solve_factored(Joint<T>& J, const T* r1, const T* r2, T* x1, T* x2) {
  const int ny = J.ny;
  const Side& E = *J.E;
  const Side& K = *J.K;
  const int nE = E.total, nK = K.total, ldK = J.ldK;
  const bool keep2 = J.E == &J.side1;
  const T* rE = keep2 ? r1 : r2;
  const T* rK = keep2 ? r2 : r1;
  T* dE = keep2 ? x1 : x2;
  T* dK = keep2 ? x2 : x1;
  T* t = J.tE;
  T* x = J.xK;
  for (int e = 0; e < E.n; ++e) {
    const int m = E.count[e], o = E.offset[e];
    const int* ys = E.ys + e * ny;
    for (int i = 0; i < m; ++i) t[o + i] = rE[e * ny + ys[i]] * J.DE[o + i];
    forward(J.LE + o * ny, ny, m, J.IE + o, t + o);
  }
  for (int b = 0; b < K.n; ++b)
    for (int j = 0; j < K.count[b]; ++j) x[K.offset[b] + j] = rK[b * ny + K.ys[b * ny + j]];
  for (int i = 0; i < nE; ++i) {
    const T f = t[i];
    const T* Gi = J.G + i * ldK;
    for (int r = 0; r < nK; ++r) x[r] -= f * Gi[r];
  }
  for (int r = 0; r < nK; ++r) x[r] *= J.DS[r];
  forward_upper(J.S, ldK, nK, J.IS, x);
  backward_upper(J.S, ldK, nK, J.IS, x);
  for (int r = 0; r < nK; ++r) x[r] *= J.DS[r];
  for (int i = 0; i < nE; ++i) t[i] -= dot(J.G + i * ldK, x, nK);
  for (int i = 0; i < K.n * ny; ++i) dK[i] = T(0);
  for (int b = 0; b < K.n; ++b)
    for (int j = 0; j < K.count[b]; ++j) dK[b * ny + K.ys[b * ny + j]] = x[K.offset[b] + j];
  for (int i = 0; i < E.n * ny; ++i) dE[i] = T(0);
  for (int e = 0; e < E.n; ++e) {
    const int m = E.count[e], o = E.offset[e];
    const int* ys = E.ys + e * ny;
    backward(J.LE + o * ny, ny, m, J.IE + o, t + o);
    for (int i = 0; i < m; ++i) dE[e * ny + ys[i]] = t[o + i] * J.DE[o + i];
  }
}

// (e1, e2) += M (x1, x2) and (m1, m2) += |M| |x| (the bound below), pair by
// pair, over the cells only (s and q vanish off them); Dense as in pair_softmax.
template <bool Dense, typename T>
FASTPID_HOST_DEVICE inline void add_products(Joint<T>& J, const T* x1, const T* x2, T* e1, T* e2, T* m1, T* m2) {
  const int n2 = J.n2, ny = J.ny, pairs = pairs_with_cells<Dense>(J);
  for (int v = 0; v < pairs; ++v) {
    const PairCells c = pair_cells<Dense>(J, v);
    const int k1 = c.k / n2, k2 = c.k % n2;
    const T* sk = J.s + c.k * ny;
    const T* qk = J.q + c.k * ny;
    const T* a = x1 + k1 * ny;
    const T* b = x2 + k2 * ny;
    T dot = T(0), dot_abs = T(0);
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      dot += sk[y] * (a[y] + b[y]);
      dot_abs += sk[y] * (fabs_(a[y]) + fabs_(b[y]));
    }
    const T ck = J.c[c.k];
    dot *= ck;
    dot_abs *= fabs_(ck);
    T* o1 = e1 + k1 * ny;
    T* o2 = e2 + k2 * ny;
    T* p1 = m1 + k1 * ny;
    T* p2 = m2 + k2 * ny;
    for (int i = 0; i < c.count; ++i) {
      const int y = Dense ? i : c.ys[i];
      const T value = qk[y] * (a[y] + b[y]) + sk[y] * dot;
      const T bound = qk[y] * (fabs_(a[y]) + fabs_(b[y])) + sk[y] * dot_abs;
      o1[y] += value;
      o2[y] += value;
      p1[y] += bound;
      p2[y] += bound;
    }
  }
}

// (e1, e2) ← (r1, r2) − M (x1, x2) on the free variables (0 elsewhere), with the
// unshifted matrix M = Σ_k E_kᵀ [diag(q_k) + c_k s_k s_kᵀ] E_k, and returns the
// componentwise backward error max_i |e_i| / (|M| |x| + |r|)_i (LAPACK's berr, with
// |M| bounded by Σ_k E_kᵀ |diag(q_k) + c_k s_k s_kᵀ| E_k).
template <typename T>
FASTPID_HOST_DEVICE inline T residual(Joint<T>& J, const T* r1, const T* r2, const T* x1, const T* x2, T* e1,
                                      T* e2) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  T* m1 = J.t1;  // |M| |x|
  T* m2 = J.t2;
  for (int i = 0; i < n1 * ny; ++i) e1[i] = m1[i] = T(0);
  for (int i = 0; i < n2 * ny; ++i) e2[i] = m2[i] = T(0);
  if (J.dense)
    add_products<true>(J, x1, x2, e1, e2, m1, m2);
  else
    add_products<false>(J, x1, x2, e1, e2, m1, m2);
  T berr = T(0);
  for (int i = 0; i < n1 * ny; ++i) {
    e1[i] = J.on1[i] ? r1[i] - e1[i] : T(0);
    const T scale = m1[i] + fabs_(r1[i]);
    if (J.on1[i]) berr = where(scale > T(0), max_(berr, fabs_(e1[i]) / scale), berr);
  }
  for (int i = 0; i < n2 * ny; ++i) {
    e2[i] = J.free2[i] ? r2[i] - e2[i] : T(0);
    const T scale = m2[i] + fabs_(r2[i]);
    if (J.free2[i]) berr = where(scale > T(0), max_(berr, fabs_(e2[i]) / scale), berr);
  }
  return berr;
}

// Δλ, Δw, Δh for the complementarity target rc (solver.newton_direction);
// rc is overwritten by rc + w (g + h).
template <typename T>
FASTPID_HOST_DEVICE inline void newton_direction(Joint<T>& J, T* rc, T* dw, T* dh) {
  const int n1 = J.n1, n2 = J.n2, ny = J.ny;
  for (int i = 0; i < n1 * ny; ++i) J.rhs1[i] = J.r1[i];
  for (int i = 0; i < n2 * ny; ++i) J.rhs2[i] = J.r2[i];
  for (int k1 = 0, k = 0; k1 < n1; ++k1)
    for (int k2 = 0; k2 < n2; ++k2, ++k) {
      if (!J.pair[k]) continue;
      rc[k] += J.w[k] * J.primal[k];
      const T f = rc[k] / J.h[k];
      const T* sk = J.s + k * ny;
      T* a = J.rhs1 + k1 * ny;
      T* b = J.rhs2 + k2 * ny;
      for (int y = 0; y < ny; ++y) {
        const T v = sk[y] * f;
        a[y] += v;
        b[y] += v;
      }
    }
  for (int i = 0; i < n1 * ny; ++i) J.rhs1[i] = J.on1[i] ? -J.rhs1[i] : T(0);
  for (int i = 0; i < n2 * ny; ++i) J.rhs2[i] = J.free2[i] ? -J.rhs2[i] : T(0);
  solve_factored(J, J.rhs1, J.rhs2, J.d1, J.d2);
  // Iterative refinement with the unshifted matrix, at most kRefinementSteps
  // steps as in the reference, while the backward error exceeds a few ulps.
  for (int t = 0; t < kRefinementSteps; ++t) {
    const T berr = residual(J, J.rhs1, J.rhs2, J.d1, J.d2, J.e1, J.e2);
    const Mask<T> refine = !(berr <= T(kRefinementBerr) * Limits<T>::epsilon());
    if (!any_(refine)) break;
    solve_factored(J, J.e1, J.e2, J.f1, J.f2);
    for (int i = 0; i < n1 * ny; ++i) J.d1[i] = where(refine, J.d1[i] + J.f1[i], J.d1[i]);
    for (int i = 0; i < n2 * ny; ++i) J.d2[i] = where(refine, J.d2[i] + J.f2[i], J.d2[i]);
  }
  for (int k1 = 0, k = 0; k1 < n1; ++k1)
    for (int k2 = 0; k2 < n2; ++k2, ++k) {
      if (!J.pair[k]) {
        dw[k] = T(0);
        dh[k] = T(0);
        continue;
      }
      const T* sk = J.s + k * ny;
      const T* a = J.d1 + k1 * ny;
      const T* b = J.d2 + k2 * ny;
      T slope = T(0);
      for (int y = 0; y < ny; ++y) slope += sk[y] * (a[y] + b[y]);
      dh[k] = -J.primal[k] - slope;
      dw[k] = (rc[k] + J.w[k] * slope) / J.h[k];
    }
}

// Largest α ≤ 1 with value + α delta ≥ 0 (solver.max_step).
template <typename T>
FASTPID_HOST_DEVICE inline T max_step(const T* value, const T* delta, int n) {
  // The min over the decreasing entries, NaN if any ratio is NaN; without branches on the values.
  T alpha = T(1), nan = T(0);
  Mask<T> any_nan = T(0) != T(0);
  for (int k = 0; k < n; ++k) {
    const T r = where(delta[k] < T(0), -value[k] / delta[k], T(1));
    any_nan = any_nan | (r != r);
    nan = where(r != r, r, nan);
    alpha = where(r < alpha, r, alpha);
  }
  return where(any_nan, nan, alpha);
}


// One predictor-corrector step, for the joints in `active`, from the current
// iterate (g, s, q and r of primal_residuals); g and s are then those of the
// new iterate.  False (per joint), with the iterate untouched, for joints not
// active and where the reference could make no more progress: the
// factorisation fails, the step is not finite, or every backtrack violates the
// constraints by more than allowed (the reference then takes α = 0, or steps
// into NaN, from where its best iterate can no longer change).
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> step(Joint<T>& J, Mask<T> active) {
  const int np = J.np, n1 = J.n1, n2 = J.n2, ny = J.ny;
  T mu = T(0);
  for (int k = 0; k < np; ++k) {
    J.primal[k] = J.pair[k] ? J.g[k] + J.h[k] : T(0);
    J.comp[k] = J.pair[k] ? J.w[k] * J.h[k] : T(0);
    mu += J.comp[k];
  }
  mu /= J.total_weight;
  Mask<T> ok = active & factor_with_shift(J);
  if (!any_(ok)) return ok;
  // Predictor: the affine-scaling direction.
  for (int k = 0; k < np; ++k) J.rc[k] = -J.comp[k];
  newton_direction(J, J.rc, J.dw_a, J.dh_a);
  const T alpha_a = min_(max_step(J.w, J.dw_a, np), max_step(J.h, J.dh_a, np));
  T mu_a = T(0);
  for (int k = 0; k < np; ++k)
    if (J.pair[k]) mu_a += (J.w[k] + alpha_a * J.dw_a[k]) * (J.h[k] + alpha_a * J.dh_a[k]);
  mu_a /= J.total_weight;
  const T mu_floor = where(mu < Limits<T>::tiny(), Limits<T>::tiny(), mu);
  T ratio = mu_a / mu_floor;
  ratio = where(ratio < T(0), T(0), where(ratio > T(1), T(1), ratio));
  // σ ≥ kInfeasibilityCentring max |r_d| / μ (solver.py: μ falls no faster than
  // the marginal residual), at most 1.
  T infeasibility = T(0);
  for (int i = 0; i < n1 * ny; ++i) infeasibility = max_(infeasibility, fabs_(J.r1[i]));
  for (int i = 0; i < n2 * ny; ++i) infeasibility = max_(infeasibility, fabs_(J.r2[i]));
  T sigma_floor = T(kInfeasibilityCentring) * infeasibility / mu_floor;
  sigma_floor = where(sigma_floor > T(1), T(1), sigma_floor);  // NaN stays NaN
  const T sigma_mu = max_(ratio * ratio * ratio, sigma_floor) * mu;
  // Corrector: centring plus the second-order term.
  for (int k = 0; k < np; ++k)
    J.rc[k] = J.pair[k] ? sigma_mu * J.weight[k] - J.comp[k] - J.dw_a[k] * J.dh_a[k] : T(0);
  newton_direction(J, J.rc, J.dw, J.dh);
  T fraction = T(1) - mu;
  fraction = where(fraction < T(kFractionToBoundary), T(kFractionToBoundary),
                   where(fraction > T(kMaxFractionToBoundary), T(kMaxFractionToBoundary), fraction));
  T alpha = fraction * min_(max_step(J.w, J.dw, np), max_step(J.h, J.dh, np));
  ok = ok & finite(alpha) & (alpha > T(0));
  for (int k = 0; k < np; ++k) ok = ok & finite(J.dw[k]) & finite(J.dh[k]);
  for (int i = 0; i < n1 * ny; ++i) ok = ok & finite(J.d1[i]);
  for (int i = 0; i < n2 * ny; ++i) ok = ok & finite(J.d2[i]);
  if (!any_(ok)) return ok;
  // Safeguard: λ may leave the feasible set by no more than it already has or
  // kMaxViolation; halve the step until it does not.
  T allowed = T(kMaxViolation);
  for (int k = 0; k < np; ++k) allowed = max_(allowed, J.g[k]);
  for (int i = 0; i < n1 * ny; ++i) J.lam1_0[i] = J.lam1[i];
  for (int i = 0; i < n2 * ny; ++i) J.lam2_0[i] = J.lam2[i];
  Mask<T> pending = ok;  // joints still looking for a step length
  for (int t = 0; t < kMaxBacktracks && any_(pending); ++t) {
    if (t > 0) alpha = where(pending, alpha / T(2), alpha);
    for (int i = 0; i < n1 * ny; ++i) J.lam1[i] = where(ok, J.lam1_0[i] + alpha * J.d1[i], J.lam1_0[i]);
    for (int i = 0; i < n2 * ny; ++i) J.lam2[i] = where(ok, J.lam2_0[i] + alpha * J.d2[i], J.lam2_0[i]);
    pair_softmax(J);
    Mask<T> within = T(0) == T(0);
    for (int k = 0; k < np; ++k) within = within & (J.g[k] <= allowed);
    pending = pending & !within;
  }
  const Mask<T> stepped = ok & !pending;
  if (any_(pending)) {
    for (int i = 0; i < n1 * ny; ++i) J.lam1[i] = where(stepped, J.lam1[i], J.lam1_0[i]);
    for (int i = 0; i < n2 * ny; ++i) J.lam2[i] = where(stepped, J.lam2[i], J.lam2_0[i]);
    pair_softmax(J);
  }
  for (int k = 0; k < np; ++k) {
    J.w[k] = where(stepped, J.w[k] + alpha * J.dw[k], J.w[k]);
    J.h[k] = where(stepped, J.h[k] + alpha * J.dh[k], J.h[k]);
  }
  return stepped;
}

// ---------------------------------------------------------------- the solve

template <typename T> struct Result {
  T iterations;        // index of the returned (best) iterate
  Mask<T> converged;   // its gap ≤ tol
};

// Solves one joint p (n1 × n2 × ny, contiguous) as solver.solve does and writes
// the best iterate's λ1 (n1 × ny), λ2 (n2 × ny) and w (n1 × n2).  `workspace`
// holds workspace_bytes<T>(n1, n2, ny) bytes; it needs no initialisation.
template <typename T>
FASTPID_HOST_DEVICE inline Result<T> solve_joint(const T* p, int n1, int n2, int ny, T tol, int max_iter,
                                                 int patience, void* workspace, T* lam1_out, T* lam2_out, T* w_out) {
  Joint<T> J;
  attach(J, workspace, n1, n2, ny);
  set_up(J, p);
  const int c1 = n1 * ny, c2 = n2 * ny, np = J.np;
  for (int i = 0; i < c1; ++i) J.best_lam1[i] = J.lam1[i];
  for (int i = 0; i < c2; ++i) J.best_lam2[i] = J.lam2[i];
  for (int k = 0; k < np; ++k) J.best_w[k] = J.w[k];
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
      for (int i = 0; i < c1; ++i) J.best_lam1[i] = where(better, J.lam1[i], J.best_lam1[i]);
      for (int i = 0; i < c2; ++i) J.best_lam2[i] = where(better, J.lam2[i], J.best_lam2[i]);
      for (int k = 0; k < np; ++k) J.best_w[k] = where(better, J.w[k], J.best_w[k]);
      result.iterations = where(better, T(iteration), result.iterations);
    }
    stalled = where(take, where(gap != gap, T(patience), where(improved, T(0), stalled + T(1))), stalled);
    stopped = stopped | (take & ((best_gap <= tol) | ((stalled >= T(patience)) & (best_gap <= T(kStallGap)))));
  };
  const T far = T(kCertifyAbove) * max_(tol, T(kStallGap));
  for (int iteration = 0; iteration <= max_iter; ++iteration) {
    T complementarity = T(0);
    for (int k = 0; k < np; ++k)
      if (J.pair[k]) complementarity += J.w[k] * J.h[k];
    const Mask<T> near = iteration == max_iter ? T(0) == T(0) : !(complementarity > far);  // NaN: near
    const Mask<T> take = (!stopped) & near;
    if (any_(take))
      take_certificate(take, iteration);
    else
      primal_residuals(J);
    if (all_(stopped) || iteration == max_iter) break;
    const Mask<T> failed = (!stopped) & !step(J, !stopped);  // iterate (and g, s) untouched
    if (any_(failed & !take)) take_certificate(failed & !take, iteration);  // it stops with its best iterate
    stopped = stopped | failed;
    if (all_(stopped)) break;
  }
  result.converged = best_gap <= tol;
  for (int i = 0; i < c1; ++i) lam1_out[i] = J.best_lam1[i];
  for (int i = 0; i < c2; ++i) lam2_out[i] = J.best_lam2[i];
  for (int k = 0; k < np; ++k) w_out[k] = J.best_w[k];
  return result;
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
// in entropies_out[0..3].  Takes the workspace of solve_joint.
template <typename T>
FASTPID_HOST_DEVICE inline T certify_joint(const T* p, int n1, int n2, int ny, const T* lam1, const T* lam2,
                                           const T* w, void* workspace, T* q_out, T* value_out, T* entropies_out) {
  Joint<T> J;
  attach(J, workspace, n1, n2, ny);
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

// Bytes of workspace solve_joint needs for an n1 × n2 × ny joint, with the 63
// bytes it may skip to align its start to 64 bytes.
template <typename T>
FASTPID_HOST_DEVICE inline size_t workspace_bytes(int n1, int n2, int ny) {
  Joint<T> J;
  return layout(J, nullptr, n1, n2, ny) + 63;
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
