// The one registration point of the fastpid operators.
//
//   fastpid::broja_solve(Tensor p, float tol, int max_iter, int patience)
//       -> (Tensor lam1, Tensor lam2, Tensor w, Tensor iterations, Tensor converged)
//
// solves a batch p (B, n1, n2, ny) of float64 joints as fastpid.solver.solve
// does and returns the fields of fastpid.solver.Solution;
//
//   fastpid::broja_backward(Tensor p, Tensor lam1, Tensor lam2, Tensor grad_atoms) -> Tensor
//
// is the envelope gradient of the atoms with respect to p (csrc/broja_backward.h,
// fastpid.pid's backward);
//
//   fastpid::broja_certificate(Tensor p, Tensor lam1, Tensor lam2, Tensor w)
//       -> (Tensor q, Tensor value, Tensor gap, Tensor entropies)
//
// is the certificate of a solution, as fastpid.solver.certificate, with the
// entropies H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2) of p;
//
//   fastpid::broja_forward(Tensor p, bool normalize, float sum_tolerance, float tol, int max_iter, int patience)
//       -> (Tensor measures, Tensor gap, Tensor q, Tensor lam1, Tensor lam2, Tensor iterations,
//           Tensor converged, Tensor fine)
//
// is fastpid.pid's forward for the compiled backends: the checks and rescaling
// of fastpid._checks.check_joint, broja_solve and broja_certificate in one call
// (csrc/broja_forward.cpp, one implementation for every device).  Implementations:
//   CPU   csrc/cpu/broja_cpu.cpp (+ broja_cpu_avx2.cpp, the AVX2 copy), csrc/cpu/broja_backward_cpu.cpp,
//         csrc/cpu/broja_certificate_cpu.cpp
//   CUDA  csrc/cuda/broja_cuda.cu (solve, certificate), csrc/cuda/broja_backward_cuda.cu (built with
//         FASTPID_CUDA, which defines WITH_CUDA)
//
//   fastpid::broja_solve_interleaved(Tensor p, float tol, int max_iter, int patience) -> (as broja_solve)
//   fastpid::broja_certificate_interleaved(Tensor p, Tensor lam1, Tensor lam2, Tensor w) -> (as broja_certificate)
//
// are the CUDA implementations' code and workspace layout run on the CPU
// (csrc/broja_interleaved.h, csrc/cpu/broja_interleaved_cpu.cpp), for the tests;
//
//   fastpid::broja_solve_block(Tensor p, float tol, int max_iter, int patience, int lanes) -> (as broja_solve)
//
// solves each joint by a team of `lanes` threads: a thread block per joint on CUDA
// (csrc/cuda/broja_block_cuda.cu), the same code by emulated teams on the CPU
// (csrc/broja_block.h, csrc/cpu/broja_block_cpu.cpp);
//
//   fastpid::broja_workspace(int n1, int n2, int ny) -> (int bytes, int elimination)
//
// is the workspace the CPU op takes for one n1 × n2 × ny joint and the
// broja::Elimination it solves it with; ValueError where the joint is past
// the solver's index range or the memory budget (csrc/broja_checks.h);
//
//   fastpid::broja_constants() -> float[]
//
// are the compiled solver's constants, for the test that keeps them equal to fastpid/solver.py's;
//
//   fastpid::kmeans_seed(Tensor points, Tensor uniforms) -> Tensor
//   fastpid::kmeans_lloyd(Tensor points, Tensor centroids, float tolerance, int max_iter) -> (Tensor, Tensor, Tensor)
//
// are fastpid.Discretizer's k-means++ seeding and Lloyd iterations on CPU tensors (csrc/cpu/kmeans_cpu.cpp;
// other devices run fastpid/discretize.py's torch reference).
//   Meta  below (shapes only, for torch.compile / FakeTensor tracing)
#include <torch/extension.h>

#include "broja_checks.h"
#include "broja_forward.h"
#include "cpu/broja_backward_cpu.h"
#include "cpu/broja_block_cpu.h"
#include "cpu/broja_certificate_cpu.h"
#include "cpu/broja_cpu.h"
#include "cpu/broja_interleaved_cpu.h"
#include "cpu/kmeans_cpu.h"
#ifdef WITH_CUDA
#include "cuda/broja_backward_cuda.h"
#include "cuda/broja_block_cuda.h"
#include "cuda/broja_cuda.h"
#endif

namespace fastpid {
namespace {

// The solver's constants (csrc/broja/common.h, joint.h; csrc/cpu/per_joint.h; csrc/broja_checks.h), in the
// order of fastpid.solver.COMPILED_CONSTANTS, which tests/test_cpu_backend.py checks them against.
std::vector<double> broja_constants() {
  namespace b = broja;
  return {b::kFractionToBoundary,
          b::kMaxFractionToBoundary,
          b::kRegularization,
          double(b::kMaxShiftRaises),
          double(b::kRefinementSteps),
          b::kMaxViolation,
          double(b::kMaxBacktracks),
          b::kStallGap,
          b::kInfeasibilityCentring,
          b::kCertifyAbove,
          double(b::kPairsRefinementSteps),
          b::kPairsBlockShift,
          b::kPairsShiftFreeNorm,
          b::kPairsAdvantage,
          kDefaultMemoryGiB,
          double(b::kSideRescueBytes)};
}

std::tuple<int64_t, int64_t> broja_workspace(int64_t n1, int64_t n2, int64_t ny) {
  constexpr const char* op = "fastpid::broja_workspace";
  const int64_t largest = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(n1 > 0 && n2 > 0 && ny > 0, op, ": alphabet sizes must be positive, got ", n1, "×", n2, "×", ny);
  TORCH_CHECK_VALUE(n1 <= largest && n2 <= largest && ny <= largest, op, ": a ", n1, "×", n2, "×", ny,
                    " joint is beyond the solver's index range (alphabets of at most 2^31 − 1 symbols)");
  const int elimination = cpu::elimination(int(n1), int(n2), int(ny));
  return {check_workspace(op, n1, n2, ny, broja::Elimination(elimination)), elimination};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_meta(const at::Tensor& p,
                                                                                        double /*tol*/,
                                                                                        int64_t /*max_iter*/,
                                                                                        int64_t /*patience*/) {
  TORCH_CHECK(p.scalar_type() == at::kDouble, "fastpid::broja_solve: expected p of dtype float64, got ",
              p.scalar_type());
  TORCH_CHECK(p.dim() == 4, "fastpid::broja_solve: expected p of shape (B, n1, n2, ny), got ", p.dim(), " dimensions");
  const auto size = p.sym_sizes();
  const auto& batch = size[0];
  const auto& n1 = size[1];
  const auto& n2 = size[2];
  const auto& ny = size[3];
  return {at::empty_symint({batch, n1, ny}, p.options()), at::empty_symint({batch, n2, ny}, p.options()),
          at::empty_symint({batch, n1, n2}, p.options()), at::empty_symint({batch}, p.options().dtype(at::kLong)),
          at::empty_symint({batch}, p.options().dtype(at::kBool))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_certificate_meta(const at::Tensor& p,
                                                                                  const at::Tensor& /*lam1*/,
                                                                                  const at::Tensor& /*lam2*/,
                                                                                  const at::Tensor& /*w*/) {
  const auto& batch = p.sym_sizes()[0];
  return {at::empty_like(p), at::empty_symint({batch}, p.options()), at::empty_symint({batch}, p.options()),
          at::empty_symint({batch, 4}, p.options())};
}

at::Tensor broja_backward_meta(const at::Tensor& p, const at::Tensor& /*lam1*/, const at::Tensor& /*lam2*/,
                               const at::Tensor& /*grad_atoms*/) {
  return at::empty_like(p);
}

BrojaForward broja_forward_meta(const at::Tensor& p, bool /*normalize*/, double /*sum_tolerance*/, double /*tol*/,
                                int64_t /*max_iter*/, int64_t /*patience*/) {
  TORCH_CHECK(p.dim() >= 3, "fastpid::broja_forward: expected p of shape (..., n1, n2, ny), got ", p.dim(),
              " dimensions");
  const auto size = p.sym_sizes();
  const c10::SymIntArrayRef batch = size.slice(0, p.dim() - 3);
  const auto with = [&](std::initializer_list<c10::SymInt> more) {
    std::vector<c10::SymInt> out(batch.begin(), batch.end());
    out.insert(out.end(), more);
    return out;
  };
  const auto real = p.options().dtype(at::kDouble);
  const auto& n1 = size[p.dim() - 3];
  const auto& n2 = size[p.dim() - 2];
  const auto& ny = size[p.dim() - 1];
  return {at::empty_symint(with({5}), real),
          at::empty_symint(batch, real),
          at::empty_symint(size, real),
          at::empty_symint(with({n1, ny}), real),
          at::empty_symint(with({n2, ny}), real),
          at::empty_symint(batch, p.options().dtype(at::kLong)),
          at::empty_symint(batch, p.options().dtype(at::kBool)),
          at::empty_symint(batch, p.options().dtype(at::kBool))};
}

}  // namespace

TORCH_LIBRARY(fastpid, m) {
  m.def("broja_solve(Tensor p, float tol, int max_iter, int patience) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "broja_solve_interleaved(Tensor p, float tol, int max_iter, int patience) -> (Tensor, Tensor, Tensor, Tensor, "
      "Tensor)");
  m.def(
      "broja_certificate_interleaved(Tensor p, Tensor lam1, Tensor lam2, Tensor w) -> (Tensor, Tensor, Tensor, "
      "Tensor)");
  m.def(
      "broja_solve_block(Tensor p, float tol, int max_iter, int patience, int lanes) -> (Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def("broja_workspace(int n1, int n2, int ny) -> (int, int)", &broja_workspace);
  m.def("broja_constants() -> float[]", &broja_constants);
  m.def("broja_backward(Tensor p, Tensor lam1, Tensor lam2, Tensor grad_atoms) -> Tensor");
  m.def("broja_certificate(Tensor p, Tensor lam1, Tensor lam2, Tensor w) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "broja_forward(Tensor p, bool normalize, float sum_tolerance, float tol, int max_iter, int patience) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("kmeans_seed(Tensor points, Tensor uniforms) -> Tensor");
  m.def("kmeans_lloyd(Tensor points, Tensor centroids, float tolerance, int max_iter) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastpid, CPU, m) {
  m.impl("broja_solve", &broja_solve_cpu);
  m.impl("broja_backward", &broja_backward_cpu);
  m.impl("broja_certificate", &broja_certificate_cpu);
  m.impl("broja_solve_interleaved", &broja_solve_interleaved_cpu);
  m.impl("broja_certificate_interleaved", &broja_certificate_interleaved_cpu);
  m.impl("broja_solve_block", &broja_solve_block_cpu);
  m.impl("broja_forward", &broja_forward);
  m.impl("kmeans_seed", &kmeans_seed_cpu);
  m.impl("kmeans_lloyd", &kmeans_lloyd_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fastpid, CUDA, m) {
  m.impl("broja_solve", &broja_solve_cuda);
  m.impl("broja_solve_block", &broja_solve_block_cuda);
  m.impl("broja_backward", &broja_backward_cuda);
  m.impl("broja_certificate", &broja_certificate_cuda);
  m.impl("broja_forward", &broja_forward);
}
#endif

TORCH_LIBRARY_IMPL(fastpid, Meta, m) {
  m.impl("broja_solve", &broja_solve_meta);
  m.impl("broja_backward", &broja_backward_meta);
  m.impl("broja_certificate", &broja_certificate_meta);
  m.impl("broja_forward", &broja_forward_meta);
}

}  // namespace fastpid

// `import fastpid._C` loads this library, which registers the operators above
// under torch.ops.fastpid; the Python module only says which CPU copy runs, and
// with which exp and log.
PYBIND11_MODULE(_C, m) {
  m.doc() = "FastPID's compiled operators (torch.ops.fastpid).";
  m.def("cpu_instruction_set", &fastpid::cpu::instruction_set,
        "The copy of the CPU solver fastpid::broja_solve runs: 'avx2' (AVX2 + FMA) or 'baseline' "
        "(FASTPID_CPU_ISA=baseline forces it).");
  // The exp and log of the AVX2 copy's long passes: SLEEF's vector functions
  // from libtorch_cpu where setup.py found them, else the C library's.
#ifdef FASTPID_SLEEF
  m.attr("cpu_vector_math") = "sleef";
#else
  m.attr("cpu_vector_math") = "libm";
#endif
}
