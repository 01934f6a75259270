// fastpid::kmeans_seed and fastpid::kmeans_lloyd on the CPU (csrc/cpu/kmeans_cpu.h):
// restarts in parallel, each restart's loops over points and centroids in plain C++.
#include "kmeans_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fastpid {
namespace {

double squared_distance(const double* x, const double* c, int64_t dim) {
  double sum = 0.0;
  for (int64_t k = 0; k < dim; ++k) {
    const double difference = x[k] - c[k];
    sum += difference * difference;
  }
  return sum;
}

// The nearest centroid of every point (first on ties) and the squared distances to
// it and to the second nearest, from the points stored by coordinate (columns
// (d, N)): the loop over points is innermost and branch-free, so it runs in
// vector lanes.
void assign(const double* columns, int64_t n, int64_t dim, const double* centroids, int64_t clusters, int64_t* labels,
            double* nearest, double* second, double* scratch) {
  std::fill_n(nearest, n, std::numeric_limits<double>::infinity());
  std::fill_n(second, n, std::numeric_limits<double>::infinity());
  for (int64_t k = 0; k < clusters; ++k) {
    std::fill_n(scratch, n, 0.0);
    for (int64_t d = 0; d < dim; ++d) {
      const double* column = columns + d * n;
      const double c = centroids[k * dim + d];
      for (int64_t i = 0; i < n; ++i) scratch[i] += (column[i] - c) * (column[i] - c);
    }
    for (int64_t i = 0; i < n; ++i) {
      const bool closer = scratch[i] < nearest[i];
      second[i] = std::min(second[i], std::max(nearest[i], scratch[i]));
      labels[i] = closer ? k : labels[i];
      nearest[i] = std::min(nearest[i], scratch[i]);
    }
  }
}

void check_points(const char* op, const at::Tensor& points) {
  TORCH_CHECK(points.device().is_cpu() && points.scalar_type() == at::kDouble && points.dim() == 2 &&
                  points.is_contiguous() && points.size(0) > 0 && points.size(1) > 0,
              op, ": expected points as a contiguous float64 CPU tensor (N, d) with N, d >= 1, got ",
              points.scalar_type(), " ", points.sizes());
}

// One restart's seeds: see kmeans_seed_cpu.
void seed_restart(const double* points, int64_t n, int64_t dim, const double* uniforms, int64_t clusters,
                  int64_t trials, double* seeds) {
  std::vector<double> nearest(n), candidate(n), best_distances(n), cumulative(n);
  auto choose = [&](int64_t j, int64_t index) { std::copy_n(points + index * dim, dim, seeds + j * dim); };
  choose(0, std::min<int64_t>(int64_t(uniforms[0] * double(n)), n - 1));
  for (int64_t i = 0; i < n; ++i) nearest[i] = squared_distance(points + i * dim, seeds, dim);
  for (int64_t j = 1; j < clusters; ++j) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) cumulative[i] = total += nearest[i];
    const bool uniform = !(total > 0.0);  // every point on a seed: draw uniformly
    if (uniform) {
      for (int64_t i = 0; i < n; ++i) cumulative[i] = double(i + 1);
      total = double(n);
    }
    double best_potential = std::numeric_limits<double>::infinity();
    int64_t best_index = 0;
    for (int64_t t = 0; t < trials; ++t) {
      const double target = uniforms[j * trials + t] * total;
      const int64_t index =
          std::min<int64_t>(std::upper_bound(cumulative.begin(), cumulative.end(), target) - cumulative.begin(), n - 1);
      double potential = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        candidate[i] = std::min(nearest[i], squared_distance(points + i * dim, points + index * dim, dim));
        potential += candidate[i];
      }
      if (potential < best_potential) {
        best_potential = potential, best_index = index;
        best_distances.swap(candidate);
      }
    }
    choose(j, best_index);
    nearest.swap(best_distances);
  }
}

// The nearest centroid of point x (first on ties) and the distances (not squared)
// to it and to the second nearest (infinity for a single centroid).
void nearest_two(const double* x, int64_t dim, const double* centroids, int64_t clusters, int64_t& label,
                 double& nearest, double& second) {
  double best = std::numeric_limits<double>::infinity(), next = best;
  for (int64_t k = 0; k < clusters; ++k) {
    const double distance = squared_distance(x, centroids + k * dim, dim);
    if (distance < best) {
      next = best, best = distance, label = k;
    } else if (distance < next) {
      next = distance;
    }
  }
  nearest = std::sqrt(best), second = std::sqrt(next);
}

// One restart's Lloyd iterations (see kmeans_lloyd_cpu) with Hamerly's bounds
// (docs/controller.md): upper[i] ≥ point i's distance to its centroid, lower[i] ≤
// its distance to every other one.  After the centroids move, a point whose
// upper bound is at most max(lower[i], half the distance from its centroid to
// the nearest other) keeps its label without a distance computed, so the labels
// are Lloyd's and most points of a nearly converged fit cost a comparison.
double lloyd_restart(const double* points, int64_t n, int64_t dim, int64_t clusters, double tolerance, int64_t max_iter,
                     double* centroids, int64_t* labels) {
  std::vector<double> columns(n * dim), sums(clusters * dim), scratch(n);
  std::vector<double> upper(n), lower(n), moved(clusters), half_gap(clusters);
  std::vector<int64_t> counts(clusters);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) columns[d * n + i] = points[i * dim + d];
  assign(columns.data(), n, dim, centroids, clusters, labels, upper.data(), lower.data(), scratch.data());
  for (int64_t i = 0; i < n; ++i) upper[i] = std::sqrt(upper[i]), lower[i] = std::sqrt(lower[i]);
  for (int64_t iteration = 0; iteration < max_iter; ++iteration) {
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      ++counts[labels[i]];
      for (int64_t k = 0; k < dim; ++k) sums[labels[i] * dim + k] += points[i * dim + k];
    }
    double shift = 0.0;
    for (int64_t c = 0; c < clusters; ++c) {
      double squared = 0.0;
      for (int64_t k = 0; k < dim && counts[c] > 0; ++k) {  // an empty cluster keeps its centroid
        const double mean = sums[c * dim + k] / double(counts[c]);
        squared += (mean - centroids[c * dim + k]) * (mean - centroids[c * dim + k]);
        centroids[c * dim + k] = mean;
      }
      shift += squared;
      moved[c] = std::sqrt(squared);
    }
    if (shift <= tolerance) break;
    const int64_t farthest = std::max_element(moved.begin(), moved.end()) - moved.begin();
    double second_farthest = 0.0;
    for (int64_t c = 0; c < clusters; ++c)
      if (c != farthest) second_farthest = std::max(second_farthest, moved[c]);
    for (int64_t c = 0; c < clusters; ++c) {
      double gap = std::numeric_limits<double>::infinity();
      for (int64_t other = 0; other < clusters; ++other)
        if (other != c) gap = std::min(gap, squared_distance(centroids + c * dim, centroids + other * dim, dim));
      half_gap[c] = 0.5 * std::sqrt(gap);
    }
    int64_t changed = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = labels[i];
      upper[i] += moved[label];
      lower[i] -= label == farthest ? second_farthest : moved[farthest];
      const double bound = std::max(half_gap[label], lower[i]);
      if (upper[i] <= bound) continue;
      upper[i] = std::sqrt(squared_distance(points + i * dim, centroids + label * dim, dim));
      if (upper[i] <= bound) continue;
      nearest_two(points + i * dim, dim, centroids, clusters, labels[i], upper[i], lower[i]);
      changed += labels[i] != label;
    }
    if (changed == 0) break;  // the labels repeat: the centroids are their means
  }
  assign(columns.data(), n, dim, centroids, clusters, labels, upper.data(), lower.data(), scratch.data());
  double inertia = 0.0;
  for (double distance : upper) inertia += distance;
  return inertia;
}

}  // namespace

at::Tensor kmeans_seed_cpu(const at::Tensor& points, const at::Tensor& uniforms) {
  check_points("fastpid::kmeans_seed", points);
  TORCH_CHECK(uniforms.device().is_cpu() && uniforms.scalar_type() == at::kDouble && uniforms.dim() == 3 &&
                  uniforms.is_contiguous() && uniforms.size(1) >= 1 && uniforms.size(2) >= 1,
              "fastpid::kmeans_seed: expected uniforms as a contiguous float64 CPU tensor (R, K, T), got ",
              uniforms.scalar_type(), " ", uniforms.sizes());
  const int64_t n = points.size(0), dim = points.size(1);
  const int64_t restarts = uniforms.size(0), clusters = uniforms.size(1), trials = uniforms.size(2);
  auto seeds = at::empty({restarts, clusters, dim}, points.options());
  const double* x = points.const_data_ptr<double>();
  const double* u = uniforms.const_data_ptr<double>();
  double* out = seeds.mutable_data_ptr<double>();
  at::parallel_for(0, restarts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      seed_restart(x, n, dim, u + r * clusters * trials, clusters, trials, out + r * clusters * dim);
  });
  return seeds;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kmeans_lloyd_cpu(const at::Tensor& points, const at::Tensor& centroids,
                                                                double tolerance, int64_t max_iter) {
  check_points("fastpid::kmeans_lloyd", points);
  TORCH_CHECK(centroids.device().is_cpu() && centroids.scalar_type() == at::kDouble && centroids.dim() == 3 &&
                  centroids.size(1) >= 1 && centroids.size(2) == points.size(1),
              "fastpid::kmeans_lloyd: expected centroids as a float64 CPU tensor (R, K, ", points.size(1), "), got ",
              centroids.scalar_type(), " ", centroids.sizes());
  const int64_t n = points.size(0), dim = points.size(1);
  const int64_t restarts = centroids.size(0), clusters = centroids.size(1);
  auto final_centroids = centroids.contiguous().clone();
  auto labels = at::empty({restarts, n}, points.options().dtype(at::kLong));
  auto inertia = at::empty({restarts}, points.options());
  const double* x = points.const_data_ptr<double>();
  double* c = final_centroids.mutable_data_ptr<double>();
  int64_t* l = labels.mutable_data_ptr<int64_t>();
  double* e = inertia.mutable_data_ptr<double>();
  at::parallel_for(0, restarts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      e[r] = lloyd_restart(x, n, dim, clusters, tolerance, max_iter, c + r * clusters * dim, l + r * n);
  });
  return {final_centroids, labels, inertia};
}

}  // namespace fastpid
