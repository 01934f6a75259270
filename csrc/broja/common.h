// Scalar helpers, decisions on values (Mask, where), the solver's constants and
// the dense kernels (dot, Jacobi-scaled Cholesky factorisations, the
// register-tiled rank update) that both eliminations use.
#pragma once

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FASTPID_HOST_DEVICE __host__ __device__
#define FASTPID_FORCE_INLINE __forceinline__
#else
#define FASTPID_HOST_DEVICE
#define FASTPID_FORCE_INLINE inline
#endif
// A device function that takes the Joint by reference and is called, not
// inlined, receives J's address, which keeps all of J in local memory
// (bench/results/cuda-build-2026-12-07.md).  nvcc inlines the others by
// itself; those it would not are FASTPID_FORCE_INLINE.

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

// Where a joint's arrays lie in its workspace.  Each joint its own contiguous
// arrays (FASTPID_INTERLEAVE 1, the CPU copies: Ptr<T> is T*), or the
// workspaces of kInterleave joints interleaved element by element, element i
// of joint `lane` at i kInterleave + lane (csrc/broja_interleaved.h: a GPU
// warp's 32 threads then load one element of their 32 joints from 256
// contiguous bytes).  The solver reads and writes its workspace only through
// Ptr and ConstPtr; the joint p and the outputs are contiguous T* as given.
#ifndef FASTPID_INTERLEAVE
#define FASTPID_INTERLEAVE 1
#endif
constexpr int kInterleave = FASTPID_INTERLEAVE;

// A pointer to one joint's array among kInterleave interleaved ones.
template <typename U>
struct Strided {
  U* at;  // the joint's element 0
  Strided() = default;
  FASTPID_HOST_DEVICE Strided(decltype(nullptr)) : at(nullptr) {}
  FASTPID_HOST_DEVICE explicit Strided(U* at) : at(at) {}
  FASTPID_HOST_DEVICE U& operator[](ptrdiff_t i) const { return at[i * kInterleave]; }
  FASTPID_HOST_DEVICE Strided operator+(ptrdiff_t i) const { return Strided(at + i * kInterleave); }
};
// A team's copy (FASTPID_TEAM 1, csrc/broja_block.h): every lane holds all of
// a joint's array pointers, so they are 32-bit byte offsets from the team's
// workspace, team_workspace() (a block's shared variable on the device, the
// emulating thread's on the host), at half the registers of pointers.
#ifndef FASTPID_TEAM
#define FASTPID_TEAM 0
#endif
#if FASTPID_TEAM
FASTPID_HOST_DEVICE inline char*& team_workspace() {
#ifdef __CUDA_ARCH__
  __shared__ char* workspace;
#else
  static thread_local char* workspace = nullptr;
#endif
  return workspace;
}
template <typename U>
struct Offset {
  uint32_t at;  // bytes from team_workspace()
  Offset() = default;
  FASTPID_HOST_DEVICE Offset(decltype(nullptr)) : at(0) {}
  FASTPID_HOST_DEVICE static Offset bytes(uint32_t at) {
    Offset offset;
    offset.at = at;
    return offset;
  }
  FASTPID_HOST_DEVICE U& operator[](ptrdiff_t i) const { return reinterpret_cast<U*>(team_workspace() + at)[i]; }
  FASTPID_HOST_DEVICE Offset operator+(ptrdiff_t i) const { return bytes(at + uint32_t(i * ptrdiff_t(sizeof(U)))); }
};
#endif
#if FASTPID_INTERLEAVE > 1
// Without const (Strided<const U> would not deduce T from a Strided<T>): the
// contiguous copies, where ConstPtr is const T*, check what is read only.
template <typename U>
using Ptr = Strided<U>;
template <typename U>
using ConstPtr = Strided<U>;
#elif FASTPID_TEAM
template <typename U>
using Ptr = Offset<U>;
template <typename U>
using ConstPtr = Offset<U>;
#else
template <typename U>
using Ptr = U*;
template <typename U>
using ConstPtr = const U*;
#endif

// The constants of fastpid/solver.py (same names, upper case there).
constexpr double kFractionToBoundary = 0.99;  // at least; then 1 − μ, up to the next bound
constexpr double kMaxFractionToBoundary = 1 - 1e-6;
constexpr double kRegularization = 1e-14;  // first diagonal shift of a matrix that is not numerically SPD
constexpr int kMaxShiftRaises = 8;
constexpr int kRefinementSteps = 2;
constexpr int kPairsRefinementSteps = 6;  // the pair elimination's solves lose more to rounding
// δ: the pair elimination factorises D + δ diag(D) where D is near-singular: on
// blocks D_y whose Jacobi-scaled inverse has a Frobenius norm (a bound on
// 1 / λ_min) above kPairsShiftFreeNorm (docs/pid-math.md, "Pair elimination").
constexpr double kPairsBlockShift = 1e-4;
constexpr double kPairsShiftFreeNorm = 100;
constexpr double kMaxViolation = 0.1;  // nats: how far a step may take λ out of the feasible set
constexpr int kMaxBacktracks = 30;
constexpr double kInfeasibilityCentring = 1e-2;  // σμ ≥ this × max |r_d|: μ falls no faster than r_d
constexpr double kStallGap = 1e-6;               // nats: stalls count only below this gap
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

template <typename T>
struct Limits;
template <>
struct Limits<double> {
  FASTPID_HOST_DEVICE static double tiny() { return DBL_MIN; }
  FASTPID_HOST_DEVICE static double epsilon() { return DBL_EPSILON; }
  FASTPID_HOST_DEVICE static double inf() { return HUGE_VAL; }
};
template <>
struct Limits<float> {
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
template <typename T>
using Mask = decltype(T(0) < T(0));
template <typename T>
constexpr bool kScalar = sizeof(Mask<T>) == sizeof(bool);  // one joint, not lanes
FASTPID_HOST_DEVICE inline double where(bool c, double a, double b) { return c ? a : b; }
FASTPID_HOST_DEVICE inline float where(bool c, float a, float b) { return c ? a : b; }
FASTPID_HOST_DEVICE inline bool all_(bool c) { return c; }
FASTPID_HOST_DEVICE inline bool any_(bool c) { return c; }

// False for ±inf and NaN (x − x is NaN there); no <cmath> needed on the device.
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> finite(T x) {
  return x - x == T(0);
}

// min and max that propagate NaN (like torch.minimum / torch.maximum).
template <typename T>
FASTPID_HOST_DEVICE inline T min_(T a, T b) {
  return where((a != a) | (a < b), a, b);
}
template <typename T>
FASTPID_HOST_DEVICE inline T max_(T a, T b) {
  return where((a != a) | (a > b), a, b);
}

// x log x with 0 log 0 = 0 (torch.xlogy(x, x)); NaN for x < 0 or NaN.
template <typename T>
FASTPID_HOST_DEVICE inline T xlogx(T x) {
  return where(x == T(0), T(0), x * log_(x));
}

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

// The threads that solve one joint together: a CUDA thread block per joint
// (csrc/broja_block.h compiles the solver with FASTPID_TEAM 1), or the host's
// emulation of one (csrc/cpu/broja_block_cpu.cpp).  Every lane runs the whole
// iteration with the same scalars (a reduction gives each lane the same sum);
// the loops over arrays are split among the lanes, lane rank() taking the
// indices rank(), rank() + size(), …, and a sync() separates a loop's writes from
// reads of other lanes' entries.  Every other copy has a team of one whose
// members are constants: its loops are plain serial loops.
#if FASTPID_TEAM
constexpr int kMaxTeamLanes = 256;  // the solver takes ~255 registers a thread: 65,536 / 256
struct Team {
#ifdef __CUDA_ARCH__
  // The thread block (its special registers: nothing for a lane to hold).
  __device__ int rank() const { return int(threadIdx.x); }
  __device__ int size() const { return int(blockDim.x); }
  // The values the team shares (max(size(), 2)): the block's shared memory.
  __device__ double* scratch() const {
    __shared__ double values[kMaxTeamLanes];
    return values;
  }
#else
  // The host emulation's lane, shared values and barrier (null: a team of one).
  int lane = 0, lanes = 1;
  double* values = nullptr;
  void (*wait)(void* emulation) = nullptr;
  void* emulation = nullptr;
  int rank() const { return lane; }
  int size() const { return lanes; }
  double* scratch() const { return values; }
#endif
  FASTPID_HOST_DEVICE bool leader() const { return rank() == 0; }
  FASTPID_HOST_DEVICE void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#else
    if (wait != nullptr) wait(emulation);
#endif
  }
  // Every lane's x combined in lane order (the same value on every lane, run after
  // run); sum, and max/min propagating NaN as max_/min_ below do.
  template <typename Combine>
  FASTPID_HOST_DEVICE double reduce(double x, Combine combine) const {
    if (size() == 1) return x;
    double* values = scratch();
    sync();  // the previous reduction's reads are done
    values[rank()] = x;
    sync();
    double result = values[0];
    for (int l = 1; l < size(); ++l) result = combine(result, values[l]);
    return result;
  }
  FASTPID_HOST_DEVICE double sum(double x) const {
    return reduce(x, [](double a, double b) { return a + b; });
  }
  FASTPID_HOST_DEVICE double max(double x) const {
    return reduce(x, [](double a, double b) { return (a != a) | (a > b) ? a : b; });
  }
  FASTPID_HOST_DEVICE double min(double x) const {
    return reduce(x, [](double a, double b) { return (a != a) | (a < b) ? a : b; });
  }
  FASTPID_HOST_DEVICE bool all(bool x) const { return min(x ? 1.0 : 0.0) > 0.0; }
  // The leader's x on every lane (values set by the leader alone).
  FASTPID_HOST_DEVICE double share(double x) const {
    if (size() == 1) return x;
    double* values = scratch();
    sync();
    if (leader()) values[0] = x;
    sync();
    return values[0];
  }
};
#else
struct Team {
  FASTPID_HOST_DEVICE static constexpr int rank() { return 0; }
  FASTPID_HOST_DEVICE static constexpr int size() { return 1; }
  FASTPID_HOST_DEVICE static constexpr bool leader() { return true; }
  FASTPID_HOST_DEVICE static void sync() {}
  template <typename U>
  FASTPID_HOST_DEVICE static U sum(U x) {
    return x;
  }
  template <typename U>
  FASTPID_HOST_DEVICE static U max(U x) {
    return x;
  }
  template <typename U>
  FASTPID_HOST_DEVICE static U min(U x) {
    return x;
  }
  template <typename U>
  FASTPID_HOST_DEVICE static U all(U x) {
    return x;
  }
  template <typename U>
  FASTPID_HOST_DEVICE static U share(U x) {
    return x;
  }
};
#endif

// The first index from `from` on that lane rank() takes (those ≡ rank() mod size()).
FASTPID_HOST_DEVICE inline int first_owned(const Team& team, int from) {
  return from + ((team.rank() - from % team.size()) + team.size()) % team.size();
}

// The CPU kernels below in GCC/Clang vectors: not in device code, and not in a
// team's copy, whose host emulation runs the device's loops.
#if defined(__GNUC__) && !defined(__CUDACC__) && !FASTPID_TEAM
#define FASTPID_HOST_VECTORS 1
#else
#define FASTPID_HOST_VECTORS 0
#endif

#if FASTPID_HOST_VECTORS
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
// exp_all and log_all split among the team's lanes.
template <typename T>
FASTPID_HOST_DEVICE inline void exp_all(const Team& team, Ptr<T> x, int n) {
  for (int i = team.rank(); i < n; i += team.size()) x[i] = exp_(x[i]);
}
template <typename T>
FASTPID_HOST_DEVICE inline void log_all(const Team& team, Ptr<T> x, int n) {
  for (int i = team.rank(); i < n; i += team.size()) x[i] = log_(x[i]);
}
template <typename T, typename Pointer>
FASTPID_HOST_DEVICE inline T sum_xlogx_over(Pointer x, int n) {
  T sum = T(0);
  for (int i = 0; i < n; ++i) sum += xlogx(x[i]);
  return sum;
}
template <typename T>
FASTPID_HOST_DEVICE inline T sum_xlogx(ConstPtr<T> x, int n) {
  return sum_xlogx_over<T>(x, n);
}
#if FASTPID_INTERLEAVE > 1
template <typename T>
FASTPID_HOST_DEVICE inline T sum_xlogx(const T* x, int n) {  // the joint p (conditional_entropies)
  return sum_xlogx_over<T>(x, n);
}
#endif
#if defined(FASTPID_VECTOR_EXP) && defined(FASTPID_VECTOR_LOG)
inline void exp_all(const Team&, double* x, int n) {
  int i = 0;
  for (; i + kVectorDoubles <= n; i += kVectorDoubles) store(x + i, FASTPID_VECTOR_EXP(load(x + i)));
  for (; i < n; ++i) x[i] = exp_(x[i]);
}
inline void log_all(const Team&, double* x, int n) {
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

// ---------------------------------------------------------------- dense kernels

// Σ a_i b_i with four partial sums (independent chains, so it pipelines).
template <typename T>
FASTPID_HOST_DEVICE inline T dot(ConstPtr<T> a, ConstPtr<T> b, int n) {
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
#if FASTPID_HOST_VECTORS
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
// number, as solver._jacobi), then D A D + shift I = L Lᵀ with L in A and
// its reciprocal pivots in inv.  False if a pivot is not positive (or NaN).
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> cholesky_jacobi(Ptr<T> A, int ld, int m, Ptr<T> D, Ptr<T> inv, T shift) {
  for (int i = 0; i < m; ++i) {
    const T d = A[i * ld + i];
    D[i] = T(1) / sqrt_(where(d < Limits<T>::tiny(), Limits<T>::tiny(), d));  // NaN stays NaN
  }
  for (int i = 0; i < m; ++i) {
    Ptr<T> Ai = A + i * ld;
    const T di = D[i];
    for (int j = 0; j <= i; ++j) Ai[j] = Ai[j] * di * D[j];
    Ai[i] += shift;
  }
  Mask<T> ok = T(0) == T(0);
  for (int i = 0; i < m; ++i) {
    Ptr<T> Ai = A + i * ld;
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
FASTPID_HOST_DEVICE inline void forward(ConstPtr<T> L, int ld, int m, ConstPtr<T> inv, Ptr<T> x) {
  for (int i = 0; i < m; ++i) x[i] = (x[i] - dot(L + i * ld, x, i)) * inv[i];
}
template <typename T>
FASTPID_HOST_DEVICE inline void backward(ConstPtr<T> L, int ld, int m, ConstPtr<T> inv, Ptr<T> x) {
  for (int i = m - 1; i >= 0; --i) {
    const T xi = x[i] * inv[i];
    x[i] = xi;
    ConstPtr<T> Li = L + i * ld;
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
FASTPID_HOST_DEVICE inline void rank_update(Ptr<T> S, int ldS, ConstPtr<T> G, int ldG, int rows, int n) {
  for (int r = 0; r < n; ++r)
    for (int j = r; j < n; ++j) {
      T sum = T(0);
      for (int i = 0; i < rows; ++i) sum += G[i * ldG + r] * G[i * ldG + j];
      S[r * ldS + j] -= sum;
    }
}
#if FASTPID_HOST_VECTORS
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

// rank_update split among a team's lanes (a team of one: the serial kernel
// above): the upper triangle in tiles of kTeamTileRows × kTeamTileColumns taken in
// turn, each in registers, so that a lane's loads of a row of G serve
// kTeamTileRows kTeamTileColumns multiply-adds (the padding makes every tile a
// full one, as for the serial tiles).  Wider tiles spill the device build.
constexpr int kTeamTileRows = 4, kTeamTileColumns = 2;
template <typename T>
FASTPID_HOST_DEVICE inline void rank_update(const Team& team, Ptr<T> S, int ldS, ConstPtr<T> G, int ldG, int rows,
                                            int n) {
#if FASTPID_TEAM
  constexpr int R = kTeamTileRows, C = kTeamTileColumns;
  int tile = 0;
  for (int r0 = 0; r0 < n; r0 += R)
    for (int j0 = r0; j0 < n; j0 += C, ++tile) {
      if (tile % team.size() != team.rank()) continue;
      T acc[R][C] = {};
      for (int i = 0; i < rows; ++i) {
        ConstPtr<T> Gi = G + i * ldG;
        T a[R], b[C];
        for (int x = 0; x < R; ++x) a[x] = Gi[r0 + x];
        for (int y = 0; y < C; ++y) b[y] = Gi[j0 + y];
        for (int x = 0; x < R; ++x)
          for (int y = 0; y < C; ++y) acc[x][y] += a[x] * b[y];
      }
      for (int x = 0; x < R; ++x)
        for (int y = 0; y < C; ++y) S[(r0 + x) * ldS + j0 + y] -= acc[x][y];
    }
#else
  rank_update(S, ldS, G, ldG, rows, n);
#endif
}

// S ← D S D + shift I on the upper triangle of S (row-major, n × n, leading
// dimension ld), with D = diag^(-1/2) (clamped at the smallest normal number)
// from the given diagonal: the Jacobi scaling of the factorisations below.
// Rows split among the team (a row reads all of D: a sync between).
template <typename T>
FASTPID_HOST_DEVICE inline void scale_upper(const Team& team, Ptr<T> S, int ld, int n, ConstPtr<T> diag, Ptr<T> D,
                                            T shift) {
  const auto scale = [&](int i) {
    return T(1) / sqrt_(where(diag[i] < Limits<T>::tiny(), Limits<T>::tiny(), diag[i]));  // NaN stays NaN
  };
  for (int i = team.rank(); i < n; i += team.size()) D[i] = scale(i);
  team.sync();
  for (int i = team.rank(); i < n; i += team.size()) {
    Ptr<T> Si = S + i * ld;
    const T di = D[i];
    for (int j = i; j < n; ++j) Si[j] = Si[j] * di * D[j];
    Si[i] += shift;
  }
}

// Pivots begin ≤ p < end of the Cholesky factorisation Uᵀ U of the upper
// triangle of S (row-major, n × n, leading dimension ld), in place, blocked
// right-looking: rows begin..end become rows of U and the trailing rows from
// end on hold the Schur complement of the leading ones.  Reciprocal pivots in
// inv.  False if a pivot is not positive (or NaN).  S is padded as rank_update
// needs, with kPadding more rows and columns where end is not a multiple of it.
// In a team, column j belongs to lane j mod size within a panel, and the
// trailing update's rows as rank_update splits them.  Every lane reads S as
// the team left it at its last sync.
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> factor_upper(const Team& team, Ptr<T> S, int ld, int n, int begin, int end,
                                                Ptr<T> inv) {
  constexpr int kPanel = 16;
  Mask<T> ok = T(0) == T(0);
  const int lanes = team.size();
  for (int p0 = begin; p0 < end; p0 += kPanel) {
    const int p1 = end < p0 + kPanel ? end : p0 + kPanel;
    for (int p = p0; p < p1; ++p) {
      team.sync();
      Ptr<T> Up = S + p * ld;
      const T pivot = Up[p];
      ok = ok & (pivot > T(0));
      if (!any_(ok)) {
        team.sync();  // every lane has read the pivot before the caller writes S again
        return ok;
      }
      const T root = sqrt_(pivot);
      const T r = T(1) / root;
      // Row p's columns after p (each lane its own: the updates below read only theirs).
      for (int j = first_owned(team, p + 1); j < n; j += lanes) Up[j] *= r;
      team.sync();  // every lane has read the pivot; row p is scaled
      if (team.leader()) {
        Up[p] = root;
        inv[p] = r;
      }
      for (int i = p + 1; i < p1; ++i) {
        const T f = Up[i];
        Ptr<T> Si = S + i * ld;
        for (int j = first_owned(team, i); j < n; j += lanes) Si[j] -= f * Up[j];
      }
    }
    if (p1 < n) {
      team.sync();
      rank_update(team, S + p1 * ld + p1, ld, S + p0 * ld + p1, ld, p1 - p0, n - p1);
    }
  }
  team.sync();
  return ok;
}

// Scaled Cholesky D S D + shift I = Uᵀ U of the upper triangle of S
// (scale_upper, then factor_upper over every pivot).
template <typename T>
FASTPID_HOST_DEVICE inline Mask<T> cholesky_upper(const Team& team, Ptr<T> S, int ld, int n, ConstPtr<T> diag, Ptr<T> D,
                                                  Ptr<T> inv, T shift) {
  scale_upper(team, S, ld, n, diag, D, shift);
  return factor_upper(team, S, ld, n, 0, n, inv);
}

// x[0 .. n) ← 0 (one contiguous fill: rows and their padding at once).
template <typename T>
FASTPID_HOST_DEVICE inline void zero(Ptr<T> x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = T(0);
}

// x ← x − f u over n entries.
template <typename T>
FASTPID_HOST_DEVICE inline void subtract_scaled(Ptr<T> x, ConstPtr<T> u, T f, int n) {
  for (int j = 0; j < n; ++j) x[j] -= u[j] * f;
}
#if FASTPID_HOST_VECTORS
// The same in vectors (x and u may alias as far as the compiler knows, which
// keeps it from vectorising the loop above).
FASTPID_HOST_DEVICE inline void subtract_scaled(double* x, const double* u, double f, int n) {
  const vector_double fv = f - vector_double{};  // a broadcast
  int j = 0;
  for (; j + kVectorDoubles <= n; j += kVectorDoubles) store(x + j, load(x + j) - load(u + j) * fv);
  for (; j < n; ++j) x[j] -= u[j] * f;
}
#endif

// x ← U⁻ᵀ x and x ← U⁻¹ x for a factor of cholesky_upper.
template <typename T>
FASTPID_HOST_DEVICE inline void forward_upper(ConstPtr<T> U, int ld, int n, ConstPtr<T> inv, Ptr<T> x) {
  for (int p = 0; p < n; ++p) {
    const T xp = x[p] * inv[p];
    x[p] = xp;
    subtract_scaled(x + p + 1, U + p * ld + p + 1, xp, n - p - 1);
  }
}
template <typename T>
FASTPID_HOST_DEVICE inline void backward_upper(ConstPtr<T> U, int ld, int n, ConstPtr<T> inv, Ptr<T> x) {
  for (int i = n - 1; i >= 0; --i) x[i] = (x[i] - dot(U + i * ld + i + 1, x + i + 1, n - i - 1)) * inv[i];
}

// The same by a team (a team of one: the serial ones above).  Lane l owns the
// entries j ≡ l (mod size): at each pivot its owner finishes that entry and
// publishes it in the team's shared values, two slots in turn (a lane still
// reading one slot has not passed the next pivot's sync), and every lane
// subtracts it from its own entries: one sync per pivot, not a chain on one lane.
// The backward solve goes by columns of U (x_j −= U_ji x_i for j < i), the same
// sums as the rows' dot products in another order.
template <typename T>
FASTPID_HOST_DEVICE inline void forward_upper(const Team& team, ConstPtr<T> U, int ld, int n, ConstPtr<T> inv,
                                              Ptr<T> x) {
#if FASTPID_TEAM
  const int lane = team.rank(), lanes = team.size();
  double* slot = team.scratch();
  team.sync();  // the team's shared values are free
  for (int p = 0; p < n; ++p) {
    if (p % lanes == lane) slot[p % 2] = x[p] = x[p] * inv[p];
    team.sync();
    const T xp = slot[p % 2];
    ConstPtr<T> Up = U + p * ld;
    for (int j = first_owned(team, p + 1); j < n; j += lanes) x[j] -= Up[j] * xp;
  }
  team.sync();
#else
  forward_upper(U, ld, n, inv, x);
#endif
}
template <typename T>
FASTPID_HOST_DEVICE inline void backward_upper(const Team& team, ConstPtr<T> U, int ld, int n, ConstPtr<T> inv,
                                               Ptr<T> x) {
#if FASTPID_TEAM
  const int lane = team.rank(), lanes = team.size();
  double* slot = team.scratch();
  team.sync();
  for (int i = n - 1; i >= 0; --i) {
    if (i % lanes == lane) slot[i % 2] = x[i] = x[i] * inv[i];
    team.sync();
    const T xi = slot[i % 2];
    for (int j = lane; j < i; j += lanes) x[j] -= U[j * ld + i] * xi;
  }
  team.sync();
#else
  backward_upper(U, ld, n, inv, x);
#endif
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid
