// CUDA implementations of the tlkit ops (declared in ../ops.cpp): input checks, allocation, device guard and
// stream, then the plain launchers of pairwise_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "launchers.h"

namespace {

using tlkit_cuda::KernelSpec;
using tlkit_cuda::Op;

void check_matrix(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), "tlkit cuda: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == like.device(), "tlkit cuda: ", name, " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "tlkit cuda: ", name, " must have dtype ", like.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "tlkit cuda: ", name, " must be contiguous");
}

void check_points(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), "tlkit cuda: ", name, " must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 2, "tlkit cuda: ", name, " must be 2-D (points, features), got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "tlkit cuda: ", name,
              " must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "tlkit cuda: ", name, " must be contiguous");
}

KernelSpec make_spec(at::ArrayRef<double> sigmas, int64_t kernel) {
  TORCH_CHECK(kernel == tlkit::kGaussian || kernel == tlkit::kLaplacian,
              "tlkit cuda: kernel must be 0 (gaussian) or 1 (laplacian), got ", kernel);
  TORCH_CHECK(!sigmas.empty() && sigmas.size() <= size_t(tlkit::kMaxBandwidths), "tlkit cuda: between 1 and ",
              tlkit::kMaxBandwidths, " bandwidths are supported, got ", sigmas.size());
  KernelSpec spec;
  spec.kind = int(kernel);
  spec.num_sigmas = int(sigmas.size());
  for (size_t s = 0; s < sigmas.size(); ++s) {
    TORCH_CHECK(std::isfinite(sigmas[s]) && sigmas[s] > 0, "tlkit cuda: bandwidths must be positive, got ",
                sigmas[s]);
    spec.sigmas[s] = sigmas[s];
  }
  return spec;
}

// Only c10 CUDA headers are used (ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers).
int sm_count() {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return count;
}

at::Tensor workspace(const at::Tensor& like, std::size_t bytes) {
  return at::empty({int64_t(bytes)}, like.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor> nearest_cuda(const at::Tensor& x, const at::Tensor& y) {
  check_points(x, "x");
  check_points(y, "y");
  check_matrix(y, "y", x);
  TORCH_CHECK(x.size(1) == y.size(1), "tlkit cuda: x and y must have the same number of features");
  TORCH_CHECK(y.size(0) > 0 || x.size(0) == 0, "tlkit cuda: nearest needs at least one point in y");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  auto dist = at::empty({n}, x.options());
  auto index = at::empty({n}, x.options().dtype(at::kLong));
  const int sms = sm_count();
  auto ws = workspace(x, tlkit_cuda::workspace_bytes(Op::kNearest, n, m, d, 0, false, x.element_size(), sms));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (x.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(tlkit_cuda::launch_nearest<float>(x.data_ptr<float>(), y.data_ptr<float>(), n, m, d,
                                                     dist.data_ptr<float>(), index.data_ptr<int64_t>(),
                                                     ws.data_ptr(), sms, stream));
  } else {
    C10_CUDA_CHECK(tlkit_cuda::launch_nearest<double>(x.data_ptr<double>(), y.data_ptr<double>(), n, m, d,
                                                      dist.data_ptr<double>(), index.data_ptr<int64_t>(),
                                                      ws.data_ptr(), sms, stream));
  }
  return {dist, index};
}

// x (n, d), y (m, d), v (m, k): contiguous CUDA tensors of one dtype on one device.
void check_matmul_operands(const at::Tensor& x, const at::Tensor& y, const at::Tensor& v) {
  check_points(x, "x");
  check_matrix(y, "y", x);
  check_matrix(v, "v", x);
  TORCH_CHECK(y.dim() == 2 && y.size(1) == x.size(1), "tlkit cuda: y must be (m, d) with the d of x");
  TORCH_CHECK(v.dim() == 2 && v.size(0) == y.size(0), "tlkit cuda: v must be (m, k) with the m of y");
}

at::Tensor kernel_matmul_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& v,
                              at::ArrayRef<double> sigmas, int64_t kernel) {
  check_matmul_operands(x, y, v);
  const KernelSpec spec = make_spec(sigmas, kernel);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1), k = v.size(1);
  auto out = at::empty({n, k}, x.options());
  const int sms = sm_count();
  auto ws = workspace(x, tlkit_cuda::workspace_bytes(Op::kKernelMatmul, n, m, d, k, false, x.element_size(), sms));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (x.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(tlkit_cuda::launch_kernel_matmul<float>(x.data_ptr<float>(), y.data_ptr<float>(),
                                                           v.data_ptr<float>(), n, m, d, k, spec,
                                                           out.data_ptr<float>(), ws.data_ptr(), sms, stream));
  } else {
    C10_CUDA_CHECK(tlkit_cuda::launch_kernel_matmul<double>(x.data_ptr<double>(), y.data_ptr<double>(),
                                                            v.data_ptr<double>(), n, m, d, k, spec,
                                                            out.data_ptr<double>(), ws.data_ptr(), sms, stream));
  }
  return out;
}

// out[s] = K_s(x, y) v per bandwidth: one kernel_matmul launch per bandwidth into its slice of the output (the
// distance is recomputed per bandwidth on the GPU; the CPU kernel shares it and squares along ladders).
at::Tensor kernel_matmul_multi_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& v,
                                    at::ArrayRef<double> sigmas, int64_t kernel) {
  check_matmul_operands(x, y, v);
  make_spec(sigmas, kernel);  // validates every bandwidth
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t S = static_cast<int64_t>(sigmas.size()), n = x.size(0), m = y.size(0), d = x.size(1), k = v.size(1);
  auto out = at::empty({S, n, k}, x.options());
  const int sms = sm_count();
  auto ws = workspace(x, tlkit_cuda::workspace_bytes(Op::kKernelMatmul, n, m, d, k, false, x.element_size(), sms));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t s = 0; s < S; ++s) {
    const KernelSpec spec = make_spec(sigmas.slice(s, 1), kernel);
    if (x.scalar_type() == at::kFloat) {
      C10_CUDA_CHECK(tlkit_cuda::launch_kernel_matmul<float>(x.data_ptr<float>(), y.data_ptr<float>(),
                                                             v.data_ptr<float>(), n, m, d, k, spec,
                                                             out.data_ptr<float>() + s * n * k, ws.data_ptr(), sms,
                                                             stream));
    } else {
      C10_CUDA_CHECK(tlkit_cuda::launch_kernel_matmul<double>(x.data_ptr<double>(), y.data_ptr<double>(),
                                                              v.data_ptr<double>(), n, m, d, k, spec,
                                                              out.data_ptr<double>() + s * n * k, ws.data_ptr(), sms,
                                                              stream));
    }
  }
  return out;
}

at::Tensor kernel_pair_grad_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& A, const at::Tensor& B,
                                 at::ArrayRef<double> sigmas, int64_t kernel) {
  check_points(a, "a");
  check_matrix(b, "b", a);
  check_matrix(A, "A", a);
  check_matrix(B, "B", a);
  TORCH_CHECK(b.dim() == 2 && b.size(1) == a.size(1), "tlkit cuda: b must be (m, d) with the d of a");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == a.size(0), "tlkit cuda: A must be (n, k) with the n of a");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == b.size(0) && B.size(1) == A.size(1),
              "tlkit cuda: B must be (m, k) with the m of b and the k of A");
  const KernelSpec spec = make_spec(sigmas, kernel);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t n = a.size(0), m = b.size(0), d = a.size(1), k = A.size(1);
  auto out = at::empty({n, d}, a.options());
  const int sms = sm_count();
  auto ws = workspace(a, tlkit_cuda::workspace_bytes(Op::kKernelPairGrad, n, m, d, k, false, a.element_size(), sms));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (a.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(tlkit_cuda::launch_kernel_pair_grad<float>(
        a.data_ptr<float>(), b.data_ptr<float>(), A.data_ptr<float>(), B.data_ptr<float>(), n, m, d, k, spec,
        out.data_ptr<float>(), ws.data_ptr(), sms, stream));
  } else {
    C10_CUDA_CHECK(tlkit_cuda::launch_kernel_pair_grad<double>(
        a.data_ptr<double>(), b.data_ptr<double>(), A.data_ptr<double>(), B.data_ptr<double>(), n, m, d, k, spec,
        out.data_ptr<double>(), ws.data_ptr(), sms, stream));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mmd2_terms_cuda(const at::Tensor& x, const at::Tensor& y,
                                                               const at::Tensor& wx, const at::Tensor& wy,
                                                               at::ArrayRef<double> coef, at::ArrayRef<double> sigmas,
                                                               int64_t kernel, bool compute_grad) {
  check_points(x, "x");
  check_matrix(y, "y", x);
  check_matrix(wx, "wx", x);
  check_matrix(wy, "wy", x);
  TORCH_CHECK(y.dim() == 2 && y.size(1) == x.size(1), "tlkit cuda: y must be (m, d) with the d of x");
  TORCH_CHECK(wx.dim() == 1 && wx.size(0) == x.size(0), "tlkit cuda: wx must be (n,)");
  TORCH_CHECK(wy.dim() == 1 && wy.size(0) == y.size(0), "tlkit cuda: wy must be (m,)");
  TORCH_CHECK(coef.size() == 3, "tlkit cuda: coef must hold 3 numbers, got ", coef.size());
  const KernelSpec spec = make_spec(sigmas, kernel);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  auto terms = at::empty({3}, x.options().dtype(at::kDouble));
  auto gx = compute_grad ? at::empty_like(x) : at::empty({0}, x.options());
  auto gy = compute_grad ? at::empty_like(y) : at::empty({0}, x.options());
  const int sms = sm_count();
  auto ws = workspace(x, tlkit_cuda::workspace_bytes(Op::kMMD2Terms, n, m, d, 0, compute_grad, x.element_size(), sms));
  const double c[3] = {coef[0], coef[1], coef[2]};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (x.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(tlkit_cuda::launch_mmd2_terms<float>(
        x.data_ptr<float>(), y.data_ptr<float>(), wx.data_ptr<float>(), wy.data_ptr<float>(), n, m, d, c, spec,
        compute_grad, terms.data_ptr<double>(), compute_grad ? gx.data_ptr<float>() : nullptr,
        compute_grad ? gy.data_ptr<float>() : nullptr, ws.data_ptr(), sms, stream));
  } else {
    C10_CUDA_CHECK(tlkit_cuda::launch_mmd2_terms<double>(
        x.data_ptr<double>(), y.data_ptr<double>(), wx.data_ptr<double>(), wy.data_ptr<double>(), n, m, d, c, spec,
        compute_grad, terms.data_ptr<double>(), compute_grad ? gx.data_ptr<double>() : nullptr,
        compute_grad ? gy.data_ptr<double>() : nullptr, ws.data_ptr(), sms, stream));
  }
  return {terms, gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkit, CUDA, m) {
  m.impl("nearest", &nearest_cuda);
  m.impl("kernel_matmul", &kernel_matmul_cuda);
  m.impl("kernel_matmul_multi", &kernel_matmul_multi_cuda);
  m.impl("kernel_pair_grad", &kernel_pair_grad_cuda);
  m.impl("mmd2_terms", &mmd2_terms_cuda);
}
