// Building blocks of the fused pairwise-kernel reductions on the CPU (OpenMP threads + SIMD loops), shared by
// nearest.cpp, kernel_matmul.cpp and mmd2.cpp; ops.cpp declares the op schemas.
//
// Every op streams the pairs (x_i, y_j) in tiles and reduces them on the fly: the n x m kernel matrix is never
// stored, forward or backward.  Two ways to get squared distances r^2 = ||a - b||^2 for a tile:
//   * direct form (small d): r^2 = sum_c (a_c - b_c)^2, vectorised over j with the b cloud stored transposed,
//     fused with the exp and the reduction in one SIMD loop (r^2 never leaves a register);
//   * GEMM form (large d): r^2 = ||a||^2 + ||b||^2 - 2 a.b with the a.b tile from BLAS (at::mm) on clouds
//     centred on their common mean, clamped at 0, exactly 0 on the diagonal of symmetric tiles; the pairs whose
//     kernel value this form cannot resolve (near pairs, points far from the common mean) are recomputed directly
//     from the caller's rows (RefineGuard).
// Kernels (id 0 gaussian, 1 laplacian) average S bandwidths from one distance:
//   k(r) = (1/S) sum_s exp(-r^2 / (2 sigma_s^2))   or   (1/S) sum_s exp(-r / sigma_s),
// and phi = -(1/r) dk/dr, so that dk(a, b)/da = -phi (a - b):
//   gaussian phi = (1/S) sum_s k_s / sigma_s^2,   laplacian phi = (1/S) sum_s k_s / (sigma_s r)  (0 at r = 0).
// Precision: fp64 inputs compute in fp64; fp32 inputs evaluate pairs in fp32, sum runs of at most one tile
// (<= 512 terms) in fp32 and combine the runs in fp64.  Work is split by static OpenMP schedules and per-thread
// buffers are reduced in thread order, so outputs are bit-identical run to run.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "exp2.h"
#include "kernel_spec.h"

namespace tlkit::cpu {

using at::Tensor;

// Tile edge (points) for the direct and the GEMM distance forms.
constexpr int64_t kTileDirect = 512;
constexpr int64_t kTileGemm = 512;
// Use the GEMM distance form from this dimension on (measured crossover on AVX-512, 2 threads).
constexpr int64_t kGemmMinDim = 24;
// Above this many columns of v (kernel_matmul) or of A, B (kernel_pair_grad), contract the tile with BLAS.
constexpr int64_t kGemmMinColumns = 8;
// GEMM-form distances below this many ulps of ||a||^2 + ||b||^2 are recomputed directly.
constexpr int kRefineRatio = 4096;
// Problems below this many pair-dimension operations run on one thread: waking a team costs more than it saves,
// and far more when the cores are shared (a class on one server, a DataLoader's workers).
constexpr int64_t kSerialWork = int64_t(1) << 19;

inline int threads_for(int64_t work) { return work < kSerialWork ? 1 : at::get_num_threads(); }

// ---------------------------------------------------------------------------------------------------------------
// Kernel constants: k_s = 2^(rate_s * t) with t = r^2 (gaussian) or r (laplacian).
//
// Bandwidth ladders.  The terms are evaluated widest first.  When a term's rate is an exact power-of-two multiple
// rate_s = 2^p rate_prev of the term evaluated just before it (sigma_prev^2 / sigma_s^2 = 2^p for the gaussian,
// sigma_prev / sigma_s = 2^p for the laplacian), k_s = k_prev^(2^p) is p squarings instead of an exp.  Error: with
// e_0 the relative error of the chain's exp (measured <= 1.6 u for exp2_nonpositive, u = 2^-24 in fp32) and u per
// rounded squaring, J squarings along a chain give |e_J| <= 2^J e_0 + (2^J - 1) u <= 2.6 * 2^J u.  A chain is cut
// (a fresh exp) before it passes kMaxSquarings<T>: 6 in fp32 (bound 2.6 * 64 u = 9.9e-6, within the 1e-5 relative
// contract for every single kernel value, the narrowest term included; the widest term is the exp itself, <= 1.6 u)
// and 16 in fp64 (2.6 * 65536 * 2^-53 = 1.9e-11).  Bandwidths that are no power-of-two ladder cost one vectorised
// exp each per pair, all sharing one distance.  DAN's ladder sigma_0 * 2^k (rate ratio 4, p = 2) thus takes 2 exps
// for 5 bandwidths in fp32 and 1 in fp64; a sqrt(2) ladder (p = 1) takes 1 exp per 7 bandwidths in fp32.
template <typename T>
constexpr int kMaxSquarings = sizeof(T) == 4 ? 6 : 16;
// Longest run of squarings one term may take from the previous term (a run of p > 3 is rarely worth its code).
constexpr int kMaxStepSquarings = 3;

template <typename T>
struct KernelParams {
  int count = 0;
  T rate[kMaxBandwidths];         // -log2(e) / (2 sigma^2)  or  -log2(e) / sigma, widest first
  T phi_weight[kMaxBandwidths];   // 1 / sigma^2             or  1 / sigma
  int squarings[kMaxBandwidths];  // 0: exp of rate * t;  p > 0: k_s = k_{s-1}^(2^p)
  int slot[kMaxBandwidths];       // position of this (sorted) term among the caller's sigmas
  int exps = 0;                   // how many exps a pair costs
  int fused = 0;                  // > 0: a pattern eval_row evaluates in one SIMD loop over j (see fused_pattern)
  T inv_count = 1;
};

// Patterns whose terms are all computed in one pass over a tile row, each pair's terms in registers (no per-term
// load/store of the row's sums): one bandwidth, 2..8 bandwidths that all take an exp, and DAN's ladder
// sigma_0 2^k, k = -2..2 (rate ratio 4: squarings {0,2,2,2,0} in fp32, where a chain stops at 6 squarings;
// {0,2,2,2,2} in fp64).
constexpr int kFusedLadder32 = 9;
constexpr int kFusedLadder64 = 10;

template <typename T>
int fused_pattern(const KernelParams<T>& kp) {
  if (kp.exps == kp.count && kp.count <= 8) return kp.count;
  if (kp.count != 5) return 0;
  const bool tail_exp = kp.squarings[4] == 0;
  for (int s = 1; s < 4; ++s)
    if (kp.squarings[s] != 2) return 0;
  if (tail_exp && sizeof(T) == 4) return kFusedLadder32;
  if (!tail_exp && kp.squarings[4] == 2 && sizeof(T) == 8) return kFusedLadder64;
  return 0;
}

template <typename T>
KernelParams<T> make_kernel_params(at::ArrayRef<double> sigmas, int64_t kernel) {
  TORCH_CHECK(kernel == kGaussian || kernel == kLaplacian, "tlkit: kernel must be 0 (gaussian) or 1 (laplacian), got ", kernel);
  TORCH_CHECK(!sigmas.empty() && sigmas.size() <= static_cast<size_t>(kMaxBandwidths),
              "tlkit: expected 1 to ", kMaxBandwidths, " bandwidths, got ", sigmas.size());
  KernelParams<T> kp;
  kp.count = static_cast<int>(sigmas.size());
  kp.inv_count = static_cast<T>(1.0 / static_cast<double>(sigmas.size()));
  for (int s = 0; s < kp.count; ++s) {
    TORCH_CHECK(std::isfinite(sigmas[s]) && sigmas[s] > 0, "tlkit: bandwidths must be positive and finite, got ",
                sigmas[s]);
    kp.slot[s] = s;
  }
  // widest first; ties keep the caller's order (deterministic)
  std::stable_sort(kp.slot, kp.slot + kp.count, [&](int a, int b) { return sigmas[a] > sigmas[b]; });
  const double log2e = 1.4426950408889634074;
  int chain = 0;  // squarings since the chain's exp
  for (int s = 0; s < kp.count; ++s) {
    const double sigma = sigmas[kp.slot[s]];
    kp.rate[s] = static_cast<T>(kernel == 0 ? -log2e / (2.0 * sigma * sigma) : -log2e / sigma);
    kp.phi_weight[s] = static_cast<T>(kernel == 0 ? 1.0 / (sigma * sigma) : 1.0 / sigma);
    kp.squarings[s] = 0;
    if (s > 0) {
      const double prev = sigmas[kp.slot[s - 1]];
      const double ratio = kernel == 0 ? (prev * prev) / (sigma * sigma) : prev / sigma;
      const int p = static_cast<int>(std::lround(std::log2(ratio)));
      if (p >= 1 && p <= kMaxStepSquarings && std::abs(ratio / std::ldexp(1.0, p) - 1.0) <= 1e-12 &&
          chain + p <= kMaxSquarings<T>) {
        kp.squarings[s] = p;
        kp.rate[s] = static_cast<T>(std::ldexp(static_cast<double>(kp.rate[s - 1]), p));  // exactly 2^p rate_prev
        chain += p;
      }
    }
    if (kp.squarings[s] == 0) {
      chain = 0;
      ++kp.exps;
    }
  }
  kp.fused = fused_pattern(kp);
  return kp;
}

// One bandwidth step of a tile row: e = k_s (an exp of rate * t, or p squarings of the previous term's cur[j]),
// then cur = e and the caller's accumulations.  P is the compile-time squaring count (0 = exp).
template <typename T, int P, typename Body>
TLKIT_INLINE void ladder_step(T rate, int64_t nj, const T* t, T* cur, Body body) {
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    T e;
    if constexpr (P == 0) {
      e = exp2_nonpositive(rate * t[j]);
    } else {
      e = cur[j];
      for (int q = 0; q < P; ++q) e *= e;
    }
    cur[j] = e;
    body(j, e);
  }
}

template <typename T, typename Body>
TLKIT_INLINE void ladder_dispatch(int p, T rate, int64_t nj, const T* t, T* cur, Body body) {
  switch (p) {
    case 0: ladder_step<T, 0>(rate, nj, t, cur, body); break;
    case 1: ladder_step<T, 1>(rate, nj, t, cur, body); break;
    case 2: ladder_step<T, 2>(rate, nj, t, cur, body); break;
    default: ladder_step<T, 3>(rate, nj, t, cur, body); break;
  }
}

// eval_row for a fused pattern: N terms, term s an exp when bit s of EXPS is set, else the previous term squared
// twice (DAN's rate ratio 4).  With N and EXPS known at compile time the term loop unrolls and the j loop is one
// SIMD loop, every term in registers.  SUM: returns sum_j w_j k(r_j) instead of storing kv (the weighted sum in the
// same loop, no pass over a stored row).
template <typename T, int KIND, bool PHI, bool SUM, int N, unsigned EXPS, typename R2>
TLKIT_INLINE T eval_row_fused(const KernelParams<T>& kp, int64_t nj, R2 r2_at, T* kv, T* ph, const T* w) {
  T rate[N], weight[N];
  for (int s = 0; s < N; ++s) {
    rate[s] = kp.rate[s];
    weight[s] = kp.phi_weight[s];
  }
  const T inv_count = kp.inv_count;
  T total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < nj; ++j) {
    const T r2 = r2_at(j);
    const T tj = KIND == 0 ? r2 : std::sqrt(r2);
    T e = T(0), sum = T(0), phi = T(0);
#pragma GCC unroll 8
    for (int s = 0; s < N; ++s) {
      if ((EXPS >> s) & 1u) {
        e = exp2_nonpositive(rate[s] * tj);
      } else {
        e *= e;
        e *= e;
      }
      sum += e;
      if (PHI) phi += weight[s] * e;
    }
    if (SUM) {
      total += w[j] * sum;
    } else {
      kv[j] = sum * inv_count;
    }
    if (PHI) ph[j] = phi * (KIND == 0 ? inv_count : (tj > T(0) ? inv_count / tj : T(0)));  // as eval_row rounds
  }
  return total * inv_count;
}

template <typename T, int KIND, bool PHI, bool SUM, typename R2>
TLKIT_INLINE bool eval_row_fused_dispatch(const KernelParams<T>& kp, int64_t nj, R2 r2_at, T* kv, T* ph,
                                          const T* w, T& total) {
  switch (kp.fused) {
#define TLKIT_FUSED_CASE(pattern, N, EXPS) \
  case pattern: total = eval_row_fused<T, KIND, PHI, SUM, N, EXPS>(kp, nj, r2_at, kv, ph, w); return true;
    TLKIT_FUSED_CASE(1, 1, 0b1u)
    TLKIT_FUSED_CASE(2, 2, 0b11u)
    TLKIT_FUSED_CASE(3, 3, 0b111u)
    TLKIT_FUSED_CASE(4, 4, 0b1111u)
    TLKIT_FUSED_CASE(5, 5, 0b11111u)
    TLKIT_FUSED_CASE(6, 6, 0b111111u)
    TLKIT_FUSED_CASE(7, 7, 0b1111111u)
    TLKIT_FUSED_CASE(8, 8, 0b11111111u)
    TLKIT_FUSED_CASE(kFusedLadder32, 5, 0b01001u)
    TLKIT_FUSED_CASE(kFusedLadder64, 5, 0b00001u)
#undef TLKIT_FUSED_CASE
    default: return false;
  }
}

// One tile row: kv[j] = k(r_j) and, if PHI, ph[j] = phi(r_j), from r2_at(j) = r_j^2; SUM: returns sum_j w_j k(r_j)
// (kv then is scratch).  A pattern outside fused_pattern takes one simple SIMD loop per bandwidth over j (GCC does
// not vectorise a j loop that holds a runtime-length bandwidth loop); t holds r^2 or r, `cur` (nj) the last term
// for the ladder's squarings; neither may alias anything else.
template <typename T, int KIND, bool PHI, bool SUM = false, typename R2>
TLKIT_INLINE T eval_row(const KernelParams<T>& kp, int64_t nj, R2 r2_at, T* t, T* kv, T* ph, T* cur,
                        const T* w = nullptr) {
  T total = 0;
  if (eval_row_fused_dispatch<T, KIND, PHI, SUM>(kp, nj, r2_at, kv, ph, w, total)) return total;
  const T rate0 = kp.rate[0], weight0 = kp.phi_weight[0];
  const bool chained = kp.squarings[1] > 0;  // unfused patterns have >= 2 terms
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    const T r2 = r2_at(j);
    const T tj = KIND == 0 ? r2 : std::sqrt(r2);
    const T e = exp2_nonpositive(rate0 * tj);
    t[j] = tj;
    kv[j] = e;
    if (chained) cur[j] = e;
    if (PHI) ph[j] = weight0 * e;
  }
  for (int s = 1; s < kp.count; ++s) {
    const T rate = kp.rate[s], weight = kp.phi_weight[s];
    const int p = kp.squarings[s];
    const bool keep = s + 1 < kp.count && kp.squarings[s + 1] > 0;  // the next term squares this one
    if (p == 0 && !keep) {
#pragma omp simd
      for (int64_t j = 0; j < nj; ++j) {
        const T e = exp2_nonpositive(rate * t[j]);
        kv[j] += e;
        if (PHI) ph[j] += weight * e;
      }
      continue;
    }
    ladder_dispatch(p, rate, nj, t, cur, [&](int64_t j, T e) {
      kv[j] += e;
      if (PHI) ph[j] += weight * e;
    });
  }
  const T inv_count = kp.inv_count;
  if (SUM) {
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < nj; ++j) total += w[j] * kv[j];
    total *= inv_count;
  } else {
#pragma omp simd
    for (int64_t j = 0; j < nj; ++j) kv[j] *= inv_count;
  }
  if (PHI) {
#pragma omp simd
    for (int64_t j = 0; j < nj; ++j) {
      const T scale = KIND == 0 ? inv_count : (t[j] > T(0) ? inv_count / t[j] : T(0));
      ph[j] *= scale;
    }
  }
  return total;
}

// Every term of a tile row separately: kv[s * ldk + j] = k_s(r_j) for the caller's sigma s (kp.slot), no averaging.
template <typename T, int KIND, typename R2>
TLKIT_INLINE void eval_terms(const KernelParams<T>& kp, int64_t nj, R2 r2_at, T* t, T* kv, int64_t ldk) {
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    const T r2 = r2_at(j);
    t[j] = KIND == 0 ? r2 : std::sqrt(r2);
  }
  const T* prev = nullptr;
  for (int s = 0; s < kp.count; ++s) {
    T* out = kv + kp.slot[s] * ldk;
    const T rate = kp.rate[s];
    const int p = kp.squarings[s];
    if (p == 0) {
#pragma omp simd
      for (int64_t j = 0; j < nj; ++j) out[j] = exp2_nonpositive(rate * t[j]);
    } else {
      std::copy(prev, prev + nj, out);
      ladder_dispatch(p, rate, nj, t, out, [](int64_t, T) {});
    }
    prev = out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
template <typename T>
T* scratch(std::vector<Tensor>& keep, int64_t count) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  keep.push_back(at::empty({std::max<int64_t>(count, 1)}, options));
  return keep.back().data_ptr<T>();
}

template <typename T>
Tensor matrix_view(const T* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<T*>(data), {rows, cols},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// out (rows x cols, contiguous) = a @ b, single-threaded BLAS when called inside a parallel region.
template <typename T>
void matmul_into(T* out, const Tensor& a, const Tensor& b) {
  Tensor out_view = matrix_view(out, a.size(0), b.size(1));
  at::mm_out(out_view, a, b);
}

inline std::vector<double> common_mean(const Tensor& a, const Tensor& b) {
  const int64_t d = a.size(1);
  std::vector<double> mean(d, 0.0);
  for (const Tensor* cloud : {&a, &b}) {
    AT_DISPATCH_FLOATING_TYPES(cloud->scalar_type(), "tlkit_mean", [&] {
      const scalar_t* p = cloud->data_ptr<scalar_t>();
      for (int64_t i = 0; i < cloud->size(0); ++i)
        for (int64_t c = 0; c < d; ++c) mean[c] += static_cast<double>(p[i * d + c]);
    });
  }
  for (double& v : mean) v /= static_cast<double>(a.size(0) + b.size(0));
  return mean;
}

// A point cloud laid out for one distance form.
template <typename T>
struct Cloud {
  std::vector<Tensor> storage;
  const T* input = nullptr;   // (n, d) the caller's rows
  const T* rows = nullptr;    // (n, d) the caller's rows (direct form) or centred rows (GEMM form)
  const T* cols = nullptr;    // (d, n) transposed rows, direct form
  const T* sqnorm = nullptr;  // (n,) squared norms of the centred rows, GEMM form
  int64_t n = 0, d = 0;
};

template <typename T>
Cloud<T> make_cloud(const Tensor& x, bool gemm_form, const std::vector<double>& centre, int threads) {
  Cloud<T> cloud;
  cloud.n = x.size(0);
  cloud.d = x.size(1);
  const int64_t n = cloud.n, d = cloud.d;
  const T* src = x.data_ptr<T>();
  cloud.input = src;
  if (gemm_form) {
    T* rows = scratch<T>(cloud.storage, n * d);
    T* sqnorm = scratch<T>(cloud.storage, n);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
      double norm = 0;
      for (int64_t c = 0; c < d; ++c) {
        const T centred = static_cast<T>(static_cast<double>(src[i * d + c]) - centre[c]);
        rows[i * d + c] = centred;
        norm += static_cast<double>(centred) * centred;
      }
      sqnorm[i] = static_cast<T>(norm);
    }
    cloud.rows = rows;
    cloud.sqnorm = sqnorm;
  } else {
    T* cols = scratch<T>(cloud.storage, n * d);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < d; ++c)
      for (int64_t i = 0; i < n; ++i) cols[c * n + i] = src[i * d + c];
    cloud.rows = src;
    cloud.cols = cols;
  }
  return cloud;
}

// When a kernel op reads GEMM-form distances, which pairs must be recomputed directly so that the kernel value
// (and phi) keep their relative accuracy.  The GEMM form's error grows with the centred norms, not with r^2:
// |r^2_gemm - r^2| <~ err = u (2 sqrt(d) |p.q| + 2 (||p||^2 + ||q||^2))  (u the unit roundoff: 2 sqrt(d) |p.q| the
// BLAS dot of nearly parallel rows, the second term the rounded norms and a general dot), and a term
// 2^(rate_s t) turns an error dt in t into a relative error ln2 |rate_s| dt.  Averaged over the bandwidths, the
// kernel's relative error is at most ln2 R dt with R the mean |rate_s| (Chebyshev's sum inequality: |rate_s| rises
// as k_s falls); phi weighs term s by |rate_s| k_s, so R = sum rate_s^2 / sum |rate_s| bounds it; separate terms
// (kernel_matmul_multi) take the narrowest term's |rate|.  A pair is
// recomputed when this bound passes kGuardTolerance<T> and its widest term does not underflow to exactly 0 either
// way (|rate_0| (t - dt) >= the exp's cutoff: then both values are 0):
//   gaussian  (t = r^2):      ln2 R err > tol                         and  |rate_0| (r^2 - err) < cutoff;
//   laplacian (t = r):        ln2 R err / (2 r) > tol, or for phi's 1/r
//                             err / (2 r^2) > tol                      and  rate_0^2 (r^2 - err) < cutoff^2.
// Gradient ops also sum phi (p - q) in the expanded form p sum phi - sum phi q, whose error in one pair's term is
// about u sqrt(2 (||p||^2 + ||q||^2) / r^2) relative: pairs with r^2 < 2 u^2 / tol^2 (||p||^2 + ||q||^2) are
// recomputed, and the ops take these pairs' gradient terms from direct differences too (DistanceTile::refined).
// Standardised data (near pairs rare, p.q ~ sqrt(d)) stay far below the tolerance; clouds whose points sit far from
// the common mean (two separated clusters, a large offset) are recomputed pair by pair where they matter.
template <typename T>
constexpr double kGuardTolerance = sizeof(T) == 4 ? 4e-6 : 1e-13;

template <typename T>
struct RefineGuard {  // the defaults select only the near pairs (nearest)
  T ratio = kRefineRatio * std::numeric_limits<T>::epsilon();  // near pairs: r^2 < ratio (||p||^2 + ||q||^2)
  T dot_weight = 0, norm_weight = 0;  // err = dot_weight |p.q| + norm_weight (||p||^2 + ||q||^2)
  T slope2 = 0, c0 = 1, c1 = 0;       // kernel bound: slope2 err^2 > c0 + c1 r^2
  T phi_coef = 0;                     // laplacian phi's 1/r: phi_coef err > r^2
  T live_w = 0, live_f = 0;           // the widest term is non-zero: live_w (r^2 - err) < live_f

  // Whether the kernel bound can select a pair with |p.q| <= dot, ||p||^2 + ||q||^2 <= norms and r^2 >= r2 (the
  // bound rises with err and falls with r^2): one test per tile row keeps the SIMD loop as cheap as the near rule.
  TLKIT_INLINE bool may_select(T dot, T norms, T r2) const {
    const T err = dot_weight * dot + norm_weight * norms;
    return slope2 * err * err > c0 + c1 * r2 || phi_coef * err > r2;
  }

  TLKIT_INLINE bool selects(T r2, T norms) const {
    if (r2 < ratio * norms) return true;
    const T err = dot_weight * std::abs((norms - r2) * T(0.5)) + norm_weight * norms;
    return (slope2 * err * err > c0 + c1 * r2 || phi_coef * err > r2) && live_w * (r2 - err) < live_f;
  }
};

template <typename T>
RefineGuard<T> make_refine_guard(const KernelParams<T>& kp, int kind, bool phi, bool per_term, int64_t d) {
  RefineGuard<T> g;
  const double u = std::numeric_limits<T>::epsilon() / 2, tol = kGuardTolerance<T>;
  double sum = 0, sum_sq = 0, narrowest = 0;
  for (int s = 0; s < kp.count; ++s) {
    const double r = std::abs(static_cast<double>(kp.rate[s]));
    sum += r;
    sum_sq += r * r;
    narrowest = std::max(narrowest, r);
  }
  const double rate = per_term ? narrowest : phi ? sum_sq / sum : sum / kp.count;
  const double slope = std::log(2.0) * rate / tol;
  const double widest = std::abs(static_cast<double>(kp.rate[0]));
  const double cutoff = sizeof(T) == 4 ? 127.0 : 1023.0;  // exp2_nonpositive gives exactly 0 at or below -cutoff
  g.dot_weight = static_cast<T>(2 * std::sqrt(static_cast<double>(d)) * u);
  g.norm_weight = static_cast<T>(2 * u);
  g.slope2 = static_cast<T>(slope * slope);  // +inf when huge: every live pair is recomputed
  g.c0 = kind == kGaussian ? T(1) : T(0);
  g.c1 = kind == kGaussian ? T(0) : T(4);
  g.phi_coef = kind == kLaplacian && phi ? static_cast<T>(1 / (2 * tol)) : T(0);
  g.live_w = static_cast<T>(kind == kGaussian ? widest : widest * widest);
  g.live_f = static_cast<T>(kind == kGaussian ? cutoff : cutoff * cutoff);
  if (phi) g.ratio = std::max(g.ratio, static_cast<T>(2 * u * u / (tol * tol)));
  return g;
}

// Squared distances of one tile: rows [i0, i0 + ni) of P against columns [j0, j0 + nj) of Q.
template <typename T, bool GEMM>
struct DistanceTile {
  const Cloud<T>* P = nullptr;
  const Cloud<T>* Q = nullptr;
  T* dots = nullptr;   // (ni, nj) P_I Q_J^T, GEMM form; row() turns rows into squared distances
  T* r2row = nullptr;  // (nj,) squared distances of the current row, direct form
  int64_t i0 = 0, ni = 0, j0 = 0, nj = 0;
  bool diagonal = false;  // P == Q and I == J: r^2 is exactly 0 for j == i
  RefineGuard<T> guard;   // GEMM form: the pairs recomputed directly (kernel ops: make_refine_guard)
  T qn_max = 0;           // GEMM form: the tile's largest ||q||^2
  bool record_refined = false;   // GEMM form: keep the current row's recomputed columns in `refined`
  std::vector<int32_t> refined;

  // Tiles of up to rows x cols pairs of p and q; the scratch is owned by `keep` (one per thread).
  DistanceTile(const Cloud<T>& p, const Cloud<T>& q, int64_t rows, int64_t cols, std::vector<Tensor>& keep)
      : P(&p), Q(&q) {
    if (GEMM) dots = scratch<T>(keep, rows * cols);
    if (!GEMM) r2row = scratch<T>(keep, cols);
  }

  void begin(int64_t row0, int64_t rows, int64_t col0, int64_t cols, bool diag) {
    i0 = row0, ni = rows, j0 = col0, nj = cols, diagonal = diag;
    if (GEMM) {
      const int64_t d = P->d;
      matmul_into(dots, matrix_view(P->rows + i0 * d, ni, d), matrix_view(Q->rows + j0 * d, nj, d).t());
      qn_max = *std::max_element(Q->sqnorm + j0, Q->sqnorm + j0 + nj);
    }
  }

  // Row ii of the tile: its squared distances and, for the direct form, the coordinates behind them.
  struct Row {
    const T* p;       // direct: point's coordinates
    const T* qcols;   // direct: Q's transposed coordinates, offset to j0
    int64_t ldq;
    const T* r2;      // the row's squared distances
  };

  // Direct form: r^2 accumulated one coordinate per SIMD pass over j (GCC does not vectorise a j loop holding the
  // coordinate loop).  GEMM form: turns dot row ii into squared distances in place.  Pairs the form cannot resolve
  // are recomputed directly in fp64 from the caller's (uncentred) rows: those with r^2 < kRefineRatio eps
  // (||p||^2 + ||q||^2), where BLAS rounding would dominate (duplicate points get exactly 0 and the laplacian's sqrt
  // never amplifies cancellation noise), and, for the kernel ops, those `guard` selects.
  TLKIT_INLINE Row row(int64_t ii) {
    Row r{};
    if (GEMM) {
      T* g = dots + ii * nj;
      const T pn = P->sqnorm[i0 + ii];
      const T* qn = Q->sqnorm + j0;
      const RefineGuard<T>& rg = guard;
      const T ratio = rg.ratio;
      const int64_t self = diagonal ? ii : -1;  // the diagonal pair is exactly 0, never recomputed
      T margin = std::numeric_limits<T>::infinity(), closest = margin, dot_max = 0;
#pragma omp simd reduction(min : margin, closest) reduction(max : dot_max)
      for (int64_t j = 0; j < nj; ++j) {
        const T norms = pn + qn[j];
        const T dot = g[j];
        const T raw = norms - T(2) * dot;
        const T v = raw > T(0) ? raw : T(0);
        g[j] = v;
        const bool other = j != self;
        const T gap = other ? v - ratio * norms : std::numeric_limits<T>::infinity();
        const T seen = other ? v : std::numeric_limits<T>::infinity();
        margin = gap < margin ? gap : margin;
        closest = seen < closest ? seen : closest;
        const T size = std::abs(dot);
        dot_max = size > dot_max ? size : dot_max;
      }
      if (diagonal) g[ii] = 0;
      if (record_refined) refined.clear();
      if (margin < 0 || rg.may_select(dot_max, pn + qn_max, closest)) {
        const int64_t d = P->d;
        const T* p = P->input + (i0 + ii) * d;
        for (int64_t j = 0; j < nj; ++j) {
          if (j == self || !rg.selects(g[j], pn + qn[j])) continue;
          const T* q = Q->input + (j0 + j) * d;
          double exact = 0;
#pragma omp simd reduction(+ : exact)
          for (int64_t c = 0; c < d; ++c) {
            const double diff = static_cast<double>(p[c]) - static_cast<double>(q[c]);
            exact += diff * diff;
          }
          g[j] = static_cast<T>(exact);
          if (record_refined) refined.push_back(static_cast<int32_t>(j));
        }
      }
      r.r2 = g;
    } else {
      const int64_t d = P->d, ldq = Q->n;
      r.p = P->rows + (i0 + ii) * d;
      r.qcols = Q->cols + j0;
      r.ldq = ldq;
      const T p0 = r.p[0];
      const T* q0 = r.qcols;
#pragma omp simd
      for (int64_t j = 0; j < nj; ++j) {
        const T diff = p0 - q0[j];
        r2row[j] = diff * diff;
      }
      for (int64_t c = 1; c < d; ++c) {
        const T pc = r.p[c];
        const T* qc = r.qcols + c * ldq;
#pragma omp simd
        for (int64_t j = 0; j < nj; ++j) {
          const T diff = pc - qc[j];
          r2row[j] += diff * diff;
        }
      }
      r.r2 = r2row;
    }
    return r;
  }

  static TLKIT_INLINE T r2_at(const Row& r, int64_t j) { return r.r2[j]; }
};

// A recomputed pair's phi (or weight), whose gradient term is added from direct differences.
template <typename T>
struct DirectTerm {
  int32_t row, col;  // within the tile
  T phi;
};

// acc[c] += w (p_c - q_c), the differences in fp64: a gradient term the expanded GEMM form would lose to rounding.
template <typename T>
TLKIT_INLINE void add_difference(double* acc, double w, const T* p, const T* q, int64_t d) {
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) acc[c] += w * (static_cast<double>(p[c]) - static_cast<double>(q[c]));
}

// ---------------------------------------------------------------------------------------------------------------
// The row-wise ops (nearest, kernel_matmul, kernel_pair_grad) hand the rows of x to the threads in blocks of
// `size` rows (about four blocks a thread, 16 to one tile of rows) and stream y past each block in tiles.
struct RowBlocks {
  int64_t tile, size, count;
};

template <bool GEMM>
RowBlocks row_blocks(int64_t n, int threads) {
  const int64_t tile = GEMM ? kTileGemm : kTileDirect;
  const int64_t size = std::max<int64_t>(16, std::min<int64_t>(tile, (n + 4 * threads - 1) / (4 * threads)));
  return {tile, size, (n + size - 1) / size};
}

// The (k, m) transpose of an (m, k) matrix, for contractions vectorised over m; `keep` owns the copy.
template <typename T>
const T* transposed(const Tensor& matrix, Tensor& keep) {
  keep = matrix.t().contiguous();
  return keep.data_ptr<T>();
}

// ---------------------------------------------------------------------------------------------------------------
inline void check_cloud(const Tensor& t, const char* name, int64_t d, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 2, "tlkit: ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.device().is_cpu(), "tlkit: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == dtype, "tlkit: ", name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.size(0) >= 1 && (d < 0 || t.size(1) == d), "tlkit: ", name, " has shape ", t.sizes(),
              ", expected (>=1, ", d, ")");
  TORCH_CHECK(t.is_contiguous(), "tlkit: ", name, " must be contiguous");
}

inline void check_pair(const Tensor& x, const Tensor& y) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "tlkit: expected float32 or float64 points, got ", x.scalar_type());
  check_cloud(x, "x", -1, x.scalar_type());
  TORCH_CHECK(x.size(1) >= 1, "tlkit: points need at least one coordinate");
  check_cloud(y, "y", x.size(1), x.scalar_type());
}

inline bool use_gemm_form(int64_t d) { return d >= kGemmMinDim; }

// Instantiates body<T, KIND, GEMM> for the input's dtype, the kernel id and the distance form.
#define TLKIT_DISPATCH(dtype, kernel, gemm, ...)                                                   \
  [&] {                                                                                            \
    if ((dtype) == at::kFloat) {                                                                   \
      using T = float;                                                                             \
      TLKIT_DISPATCH_KERNEL(kernel, gemm, __VA_ARGS__)                                             \
    } else {                                                                                       \
      using T = double;                                                                            \
      TLKIT_DISPATCH_KERNEL(kernel, gemm, __VA_ARGS__)                                             \
    }                                                                                              \
  }()
#define TLKIT_DISPATCH_KERNEL(kernel, gemm, ...)                                                   \
  if ((kernel) == 0) {                                                                             \
    constexpr int KIND = 0;                                                                        \
    TLKIT_DISPATCH_FORM(gemm, __VA_ARGS__)                                                         \
  } else {                                                                                         \
    constexpr int KIND = 1;                                                                        \
    TLKIT_DISPATCH_FORM(gemm, __VA_ARGS__)                                                         \
  }
#define TLKIT_DISPATCH_FORM(gemm, ...)                                                             \
  if (gemm) {                                                                                      \
    constexpr bool GEMM = true;                                                                    \
    return __VA_ARGS__();                                                                          \
  } else {                                                                                         \
    constexpr bool GEMM = false;                                                                   \
    return __VA_ARGS__();                                                                          \
  }

}  // namespace tlkit::cpu
