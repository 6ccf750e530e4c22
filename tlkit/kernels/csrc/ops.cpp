// The tlkit op library: every schema, declared once, plus mmd2_value, the device-independent op that tl.mmd2 calls.
//
// CPU kernels: nearest.cpp, kernel_matmul.cpp, mmd2.cpp; CUDA kernels: cuda/ops_cuda.cpp (a separate library that
// only adds CUDA implementations).  Python (tlkit/kernels/_library.py) adds the fake (shape) functions and autograd.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

namespace tlkit {
namespace {

using at::Tensor;

// value = coef . [T_xx, T_yy, T_xy] + offset in float64, with the gradients of coef . terms (when compute_grad)
// from mmd2_terms's fused pass.  Composite: it runs on whichever device implements mmd2_terms.
std::tuple<Tensor, Tensor, Tensor> mmd2_value(const Tensor& x, const Tensor& y, const Tensor& wx, const Tensor& wy,
                                              at::ArrayRef<double> coef, double offset,
                                              at::ArrayRef<double> sigmas, int64_t kernel, bool compute_grad) {
  static const auto terms_op = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow("tlkit::mmd2_terms", "")
                                   .typed<std::tuple<Tensor, Tensor, Tensor>(
                                       const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       at::ArrayRef<double>, at::ArrayRef<double>, int64_t, bool)>();
  auto [terms, gx, gy] = terms_op.call(x, y, wx, wy, coef, sigmas, kernel, compute_grad);
  const Tensor weights = at::tensor(std::vector<double>(coef.begin(), coef.end()), terms.options());
  return {at::dot(terms, weights) + offset, gx, gy};
}

}  // namespace
}  // namespace tlkit

TORCH_LIBRARY(tlkit, m) {
  m.def("nearest(Tensor x, Tensor y) -> (Tensor, Tensor)");
  m.def("kernel_matmul(Tensor x, Tensor y, Tensor v, float[] sigmas, int kernel) -> Tensor");
  // out[s] = K_s(x, y) v for each bandwidth s separately: (S, n, k); the aggregated MMD test's permutations
  m.def("kernel_matmul_multi(Tensor x, Tensor y, Tensor v, float[] sigmas, int kernel) -> Tensor");
  m.def("kernel_pair_grad(Tensor a, Tensor b, Tensor A, Tensor B, float[] sigmas, int kernel) -> Tensor");
  m.def(
      "mmd2_terms(Tensor x, Tensor y, Tensor wx, Tensor wy, float[] coef, float[] sigmas, int kernel, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "mmd2_value(Tensor x, Tensor y, Tensor wx, Tensor wy, float[] coef, float offset, float[] sigmas, int kernel, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tlkit, CompositeExplicitAutograd, m) { m.impl("mmd2_value", &tlkit::mmd2_value); }
