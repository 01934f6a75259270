// The backward of the BROJA PID for one joint: the per-joint form of
// fastpid/decomposition.py's `envelope_gradient` (the reference), fused into three passes.
//
// For a joint P (any positive scale T = Σ P, p = P / T) with dual solution
// λ1(x1, y), λ2(x2, y) and upstream gradients g = (g_R, g_U1, g_U2, g_S, g_MI)
// of the atoms (bits), the envelope theorem gives, on the cells with p > 0,
//
//     G = [a_y (−log p(y) − 1) + a_1 log p(y|x1) + a_2 log p(y|x2)
//          + a_12 log p(y|x1,x2) + a_v (λ1 + λ2)] / ln 2,
//     a_y = g_R + g_MI,  a_1 = g_R − g_U2,  a_2 = g_R − g_U1,
//     a_12 = g_S + g_MI,  a_v = g_U1 + g_U2 − g_R − g_S,
//
// G = 0 on the cells with p = 0 (the face-of-simplex convention of decomposition.py), and
// through the rescaling p = P / T:  ∂/∂P = (G − Σ_cells G p) / T.
//
// Pass 1 sums the marginals P(x1, y), P(x2, y), P(y); pass 2 writes G pair by
// pair (P(x1, x2) summed on the fly) and accumulates Σ G p; pass 3 applies the
// projection.  Plain C++ over raw pointers and a caller-provided scratch of
// `envelope_scratch_size(n1, n2, ny)` values, compiled for the host and, in
// CUDA builds, the device (as csrc/broja.h).
#pragma once

#include "broja.h"

namespace fastpid {
namespace broja {

// Values of scratch per joint: log p(y|x1) (n1 ny), log p(y|x2) (n2 ny), log p(y) (ny).
FASTPID_HOST_DEVICE inline size_t envelope_scratch_size(int n1, int n2, int ny) {
  return size_t(n1 + n2 + 1) * size_t(ny);
}

// rows (count × ny, holding the marginal P(x, y)) ← log P(x, y) − log Σ_y P(x, y),
// where P(x, y) > 0; other entries are never read.
template <typename T>
FASTPID_HOST_DEVICE inline void log_conditional_rows(T* rows, int count, int ny) {
  for (int a = 0; a < count; ++a) {
    T* row = rows + size_t(a) * ny;
    T total = T(0);
    for (int y = 0; y < ny; ++y) total += row[y];
    const T log_total = total > T(0) ? log_(total) : T(0);
    for (int y = 0; y < ny; ++y) row[y] = row[y] > T(0) ? log_(row[y]) - log_total : T(0);
  }
}

// out (n1 × n2 × ny) ← ∂(Σ_a g_a atom_a)/∂P for the joint P, as in the header.
template <typename T>
FASTPID_HOST_DEVICE inline void envelope_gradient(const T* P, int n1, int n2, int ny, const T* lam1, const T* lam2,
                                                  const T* g, T* scratch, T* out) {
  const T kLn2 = T(0.693147180559945309417232121458176568);
  T* log1 = scratch;                 // log p(y|x1)
  T* log2 = log1 + size_t(n1) * ny;  // log p(y|x2)
  T* logy = log2 + size_t(n2) * ny;  // log p(y)
  for (size_t k = 0; k < envelope_scratch_size(n1, n2, ny); ++k) scratch[k] = T(0);
  for (int i = 0; i < n1; ++i)
    for (int j = 0; j < n2; ++j) {
      const T* cell = P + (size_t(i) * n2 + j) * ny;
      for (int y = 0; y < ny; ++y) {
        log1[size_t(i) * ny + y] += cell[y];
        log2[size_t(j) * ny + y] += cell[y];
      }
    }
  T total = T(0);
  for (int i = 0; i < n1; ++i)
    for (int y = 0; y < ny; ++y) logy[y] += log1[size_t(i) * ny + y];
  for (int y = 0; y < ny; ++y) total += logy[y];
  const T log_total = log_(total);
  for (int y = 0; y < ny; ++y) logy[y] = logy[y] > T(0) ? log_(logy[y]) - log_total : T(0);
  log_conditional_rows(log1, n1, ny);
  log_conditional_rows(log2, n2, ny);

  const T a_y = g[0] + g[4], a_1 = g[0] - g[2], a_2 = g[0] - g[1], a_12 = g[3] + g[4];
  const T a_v = g[1] + g[2] - g[0] - g[3];
  T projection = T(0);  // Σ G P (divided by T below)
  for (int i = 0; i < n1; ++i)
    for (int j = 0; j < n2; ++j) {
      const size_t at = (size_t(i) * n2 + j) * ny;
      T pair = T(0);
      for (int y = 0; y < ny; ++y) pair += P[at + y];
      const T log_pair = pair > T(0) ? log_(pair) : T(0);
      for (int y = 0; y < ny; ++y) {
        const T p = P[at + y];
        if (p > T(0)) {
          const T G = (a_y * (-logy[y] - T(1)) + a_1 * log1[size_t(i) * ny + y] + a_2 * log2[size_t(j) * ny + y] +
                       a_12 * (log_(p) - log_pair) + a_v * (lam1[size_t(i) * ny + y] + lam2[size_t(j) * ny + y])) /
                      kLn2;
          out[at + y] = G;
          projection += G * p;
        } else {
          out[at + y] = T(0);
        }
      }
    }
  projection /= total;
  const size_t cells = size_t(n1) * n2 * ny;
  for (size_t k = 0; k < cells; ++k) out[k] = (out[k] - projection) / total;
}

}  // namespace broja
}  // namespace fastpid
