// The CPU solver compiled a second time, for AVX2 + FMA (x86-64-v3): 4-wide
// vectors in the Schur complement's register tiles (FASTPID_VECTOR_BYTES) and
// fused multiply-adds everywhere.  csrc/cpu/broja_cpu.cpp calls it where the
// processor has both.
#if defined(__x86_64__) && defined(__GNUC__)
// System headers first, compiled for the baseline.
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define FASTPID_ISA avx2
#define FASTPID_VECTOR_BYTES 32
#pragma GCC target("avx2,fma")
#ifdef FASTPID_SLEEF
// SLEEF's vector exp and log (1 ulp), which ATen's Vectorized<double> calls too;
// libtorch_cpu, which every torch extension links, exports them (setup.py
// defines FASTPID_SLEEF where it does).  torch's sleef.h declares them only
// where __AVX__ is predefined, which the pragma above does not do.
extern "C" __m256d Sleef_expd4_u10(__m256d);
extern "C" __m256d Sleef_logd4_u10(__m256d);
#define FASTPID_VECTOR_EXP Sleef_expd4_u10
#define FASTPID_VECTOR_LOG Sleef_logd4_u10
#endif
#include "per_joint.h"

namespace fastpid {
namespace cpu {

void solve_joints_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::avx2::solve_joints(args, index, begin, end);
}

void solve_lanes_avx2(const SolveArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::avx2::solve_lanes(args, index, begin, end);
}

void certify_joints_avx2(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::avx2::certify_joints(args, index, begin, end);
}

void certify_lanes_avx2(const CertifyArgs& args, const int64_t* index, int64_t begin, int64_t end) {
  broja::avx2::certify_lanes(args, index, begin, end);
}

}  // namespace cpu
}  // namespace fastpid
#endif
