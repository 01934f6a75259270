// Joints side by side in vector lanes: `Lanes` is a scalar type for
// csrc/broja.h's solver that holds one value of each of kLanes joints, so that
// solve_joint<Lanes> solves kLanes joints with the instruction count of one.
// Small joints (loops of a few cells) leave most of a vector unused when solved
// one by one; in lanes every operation is a full vector operation.
//
// What the lanes share, and what they do not.  Every decision on a value is a
// per-lane Mask with `where` (broja.h never branches on a value); loops whose
// trip count depends on values (shift raises, refinement steps, backtracks,
// iterations) run until every lane is done, and a lane that is done is not
// changed by the extra passes.  So a joint's result does not depend on the
// joints beside it.  The structure (cells, pairs, free variables) is shared:
// the CPU op puts only joints whose marginals P1, P2 have no zero in lanes, and
// the gauge pins λ2 at the first x2 rather than the heaviest (gauge_pin below);
// the pin leaves λ1 + λ2, Q and the gap unchanged, and the op moves λ to the
// reference's gauge afterwards (to_heaviest_gauge in csrc/cpu/per_joint.h).
//
// Only the AVX2 copy of the solver (csrc/cpu/broja_cpu_avx2.cpp) has lanes
// (FASTPID_LANES): in the x86-64 baseline a Lanes would be two SSE2 vectors
// and exp/log scalar calls, slower than one joint at a time.
#pragma once

#include "../broja.h"

namespace fastpid {
namespace cpu {
constexpr int kLanes = 4;  // joints per Lanes: one AVX2 vector of doubles
}  // namespace cpu
}  // namespace fastpid

#if FASTPID_VECTOR_BYTES == 32 && defined(__x86_64__) && defined(__GNUC__)
#define FASTPID_LANES 1

namespace fastpid {
namespace broja {
inline namespace FASTPID_ISA {

using cpu::kLanes;
typedef double lane_doubles __attribute__((vector_size(kLanes * sizeof(double))));
typedef decltype(lane_doubles{} < lane_doubles{}) lane_flags;  // all bits set where true

struct LaneMask {
  lane_flags v;
};
inline LaneMask operator&(LaneMask a, LaneMask b) { return {a.v & b.v}; }
inline LaneMask operator|(LaneMask a, LaneMask b) { return {a.v | b.v}; }
inline LaneMask operator!(LaneMask a) { return {~a.v}; }
inline bool any_(LaneMask m) {
  lane_flags folded = m.v;
  for (int l = 1; l < kLanes; ++l) folded[0] |= m.v[l];
  return folded[0] != 0;
}
inline bool all_(LaneMask m) { return !any_(!m); }

struct Lanes {
  lane_doubles v;
  Lanes() = default;
  Lanes(double x) : v(x - lane_doubles{}) {}  // every lane x (x − (+0) = x, also for −0)
  explicit Lanes(lane_doubles x) : v(x) {}
  Lanes& operator+=(Lanes o) {
    v += o.v;
    return *this;
  }
  Lanes& operator-=(Lanes o) {
    v -= o.v;
    return *this;
  }
  Lanes& operator*=(Lanes o) {
    v *= o.v;
    return *this;
  }
  Lanes& operator/=(Lanes o) {
    v /= o.v;
    return *this;
  }
};
inline Lanes operator+(Lanes a, Lanes b) { return Lanes(a.v + b.v); }
inline Lanes operator-(Lanes a, Lanes b) { return Lanes(a.v - b.v); }
inline Lanes operator*(Lanes a, Lanes b) { return Lanes(a.v * b.v); }
inline Lanes operator/(Lanes a, Lanes b) { return Lanes(a.v / b.v); }
inline Lanes operator-(Lanes a) { return Lanes(-a.v); }
inline LaneMask operator<(Lanes a, Lanes b) { return {a.v < b.v}; }
inline LaneMask operator>(Lanes a, Lanes b) { return {a.v > b.v}; }
inline LaneMask operator<=(Lanes a, Lanes b) { return {a.v <= b.v}; }
inline LaneMask operator>=(Lanes a, Lanes b) { return {a.v >= b.v}; }
inline LaneMask operator==(Lanes a, Lanes b) { return {a.v == b.v}; }
inline LaneMask operator!=(Lanes a, Lanes b) { return {a.v != b.v}; }
inline Lanes where(LaneMask c, Lanes a, Lanes b) { return Lanes(c.v ? a.v : b.v); }

// SLEEF's vector exp and log where libtorch_cpu exports them (FASTPID_SLEEF:
// broja_cpu_avx2.cpp defines both macros or neither), else libm lane by lane.
#ifdef FASTPID_VECTOR_EXP
inline Lanes exp_(Lanes x) { return Lanes(FASTPID_VECTOR_EXP(x.v)); }
inline Lanes log_(Lanes x) { return Lanes(FASTPID_VECTOR_LOG(x.v)); }
#else
template <double (*f)(double)>
inline Lanes each_lane(Lanes x) {
  for (int l = 0; l < kLanes; ++l) x.v[l] = f(x.v[l]);
  return x;
}
inline Lanes exp_(Lanes x) { return each_lane< ::exp>(x); }
inline Lanes log_(Lanes x) { return each_lane< ::log>(x); }
#endif
inline Lanes sqrt_(Lanes x) { return Lanes(lane_doubles(_mm256_sqrt_pd(__m256d(x.v)))); }
inline Lanes fabs_(Lanes x) {  // the sign bits cleared
  return Lanes(lane_doubles(lane_flags(x.v) & ~lane_flags(Lanes(-0.0).v)));
}

template <>
struct Limits<Lanes> {
  static Lanes tiny() { return Lanes(DBL_MIN); }
  static Lanes epsilon() { return Lanes(DBL_EPSILON); }
  static Lanes inf() { return Lanes(HUGE_VAL); }
};

// The gauge of joints in lanes: the first x2 with P2(x2, y) > 0, the same for
// every lane (broja.h's scalar rule, the heaviest x2, differs from joint to joint).
inline int gauge_pin(const Lanes*, const unsigned char* on2, int n2, int stride) {
  for (int x2 = 0; x2 < n2; ++x2)
    if (on2[x2 * stride]) return x2;
  return 0;
}

// broja.h's rank_update in register tiles of two rows by four columns (the
// generic one has a single chain of dependent additions); like the double
// version, it may update entries below the diagonal, which no caller reads.
inline void rank_update(Lanes* S, int ldS, const Lanes* G, int ldG, int rows, int n) {
  int r = 0;
  for (; r + 2 <= n; r += 2) {
    int j = r;
    for (; j + 4 <= n; j += 4) {
      lane_doubles a[2][4] = {};
      for (int i = 0; i < rows; ++i) {
        const Lanes* Gi = G + i * ldG;
        for (int t = 0; t < 2; ++t)
          for (int u = 0; u < 4; ++u) a[t][u] += Gi[r + t].v * Gi[j + u].v;
      }
      for (int t = 0; t < 2; ++t)
        for (int u = 0; u < 4; ++u) S[(r + t) * ldS + j + u].v -= a[t][u];
    }
    for (; j < n; ++j) {
      lane_doubles a[2] = {};
      for (int i = 0; i < rows; ++i)
        for (int t = 0; t < 2; ++t) a[t] += G[i * ldG + r + t].v * G[i * ldG + j].v;
      for (int t = 0; t < 2; ++t) S[(r + t) * ldS + j].v -= a[t];
    }
  }
  for (; r < n; ++r)
    for (int j = r; j < n; ++j) {
      lane_doubles a = {};
      for (int i = 0; i < rows; ++i) a += G[i * ldG + r].v * G[i * ldG + j].v;
      S[r * ldS + j].v -= a;
    }
}

}  // namespace FASTPID_ISA
}  // namespace broja
}  // namespace fastpid

#endif  // FASTPID_LANES
