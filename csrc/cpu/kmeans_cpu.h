// The CPU ops behind fastpid.Discretizer's k-means (registered in csrc/fastpid.cpp):
// fastpid/discretize.py's torch reference (_kmeans_plus_plus, _lloyd), each fused
// into one call.  A probe-sized fit (1,280 points, 20 clusters in 5 dimensions)
// is a few hundred thousand flops per Lloyd iteration, which torch spends
// mostly in per-op overhead (docs/controller.md); here it is arithmetic.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastpid {

// Greedy k-means++ seeds (R, K, d) of points (N, d), float64, one set per restart
// r, drawn from uniforms (R, K, T) in [0, 1): seed 0 is point ⌊u[r,0,0]·N⌋; seed j
// is, of the T candidates drawn with probability ∝ the squared distance to the
// nearest seed so far (inverse CDF at u[r,j,t]·Σ), the one that leaves the
// smallest potential Σ_i min_j ‖x_i − c_j‖² (first on ties).
at::Tensor kmeans_seed_cpu(const at::Tensor& points, const at::Tensor& uniforms);

// Lloyd's iterations on points (N, d) from centroids (R, K, d), float64, each
// restart on its own: a restart stops when its labels repeat or its centroids
// move (Σ_k ‖Δc_k‖²) by at most `tolerance`, or after `max_iter` updates; an
// empty cluster keeps its centroid.  Returns the final centroids (R, K, d), the
// labels (R, N) of the nearest final centroid (first on ties) and the inertia (R,).
std::tuple<at::Tensor, at::Tensor, at::Tensor> kmeans_lloyd_cpu(const at::Tensor& points, const at::Tensor& centroids,
                                                                double tolerance, int64_t max_iter);

}  // namespace fastpid
