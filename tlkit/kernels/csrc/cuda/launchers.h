// Launchers of tlkit's fused CUDA pairwise kernels: plain C++ taking raw device pointers, sizes and a stream.
// Shared by the torch glue (ops_cuda.cpp) and the kernels (pairwise_kernels.cu, which includes no torch header).
//
// Every launcher needs a caller-allocated device workspace of `workspace_bytes(...)` bytes (aligned to 256 bytes,
// as the torch caching allocator returns it) for the per-split partial results, which are reduced in a fixed
// order by a second kernel: results are bit-identical run to run on the same GPU model.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../kernel_spec.h"

namespace tlkit_cuda {

using ::tlkit::kGaussian;
using ::tlkit::kLaplacian;
using ::tlkit::kMaxBandwidths;

// A mean of S kernels sharing one distance: gaussian exp(-r^2 / (2 sigma_s^2)), laplacian exp(-r / sigma_s).
struct KernelSpec {
  int kind = kGaussian;
  int num_sigmas = 0;
  double sigmas[kMaxBandwidths] = {};
};

enum class Op : int { kNearest, kKernelMatmul, kKernelPairGrad, kMMD2Terms };

// Bytes of workspace the launcher of `op` needs; `width` is k (matmul/pair_grad), ignored otherwise;
// `elem_size` is sizeof(float) or sizeof(double); `sm_count` the device's multiprocessor count.
std::size_t workspace_bytes(Op op, int64_t n, int64_t m, int64_t d, int64_t width, bool compute_grad,
                            std::size_t elem_size, int sm_count);

// dist[i] = min_j ||x_i - y_j||, index[i] = the smallest such j.  x (n, d), y (m, d), m >= 1.
template <typename T>
cudaError_t launch_nearest(const T* x, const T* y, int64_t n, int64_t m, int64_t d, T* dist, int64_t* index,
                           void* workspace, int sm_count, cudaStream_t stream);

// out (n, k) = K(x, y) v with v (m, k).
template <typename T>
cudaError_t launch_kernel_matmul(const T* x, const T* y, const T* v, int64_t n, int64_t m, int64_t d, int64_t k,
                                 const KernelSpec& spec, T* out, void* workspace, int sm_count, cudaStream_t stream);

// out_i = sum_j (A_i . B_j) phi(a_i, b_j) (a_i - b_j).  a (n, d), b (m, d), A (n, k), B (m, k), out (n, d).
template <typename T>
cudaError_t launch_kernel_pair_grad(const T* a, const T* b, const T* A, const T* B, int64_t n, int64_t m, int64_t d,
                                    int64_t k, const KernelSpec& spec, T* out, void* workspace, int sm_count,
                                    cudaStream_t stream);

// terms[0..3) (float64) = [wx' K(x,x) wx, wy' K(y,y) wy, wx' K(x,y) wy]; with compute_grad, gx (n, d) and
// gy (m, d) = the gradients of coef[0] T0 + coef[1] T1 + coef[2] T2 (else they may be null).
template <typename T>
cudaError_t launch_mmd2_terms(const T* x, const T* y, const T* wx, const T* wy, int64_t n, int64_t m, int64_t d,
                              const double coef[3], const KernelSpec& spec, bool compute_grad, double* terms, T* gx,
                              T* gy, void* workspace, int sm_count, cudaStream_t stream);

}  // namespace tlkit_cuda
