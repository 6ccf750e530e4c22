// Fused pairwise-kernel reductions on the CPU (OpenMP threads + SIMD loops).
//
// Every op streams the pairs (x_i, y_j) in tiles and reduces them on the fly: the n x m kernel matrix is never
// stored, forward or backward.  Two ways to get squared distances r^2 = ||a - b||^2 for a tile:
//   * direct form (small d): r^2 = sum_c (a_c - b_c)^2, vectorised over j with the b cloud stored transposed,
//     fused with the exp and the reduction in one SIMD loop (r^2 never leaves a register);
//   * GEMM form (large d): r^2 = ||a||^2 + ||b||^2 - 2 a.b with the a.b tile from BLAS (at::mm) on clouds
//     centred on their common mean, clamped at 0, exactly 0 on the diagonal of symmetric tiles.
// Kernels (id 0 gaussian, 1 laplacian) average S bandwidths from one distance:
//   k(r) = (1/S) sum_s exp(-r^2 / (2 sigma_s^2))   or   (1/S) sum_s exp(-r / sigma_s),
// and phi = -(1/r) dk/dr, so that dk(a, b)/da = -phi (a - b):
//   gaussian phi = (1/S) sum_s k_s / sigma_s^2,   laplacian phi = (1/S) sum_s k_s / (sigma_s r)  (0 at r = 0).
// Precision: fp64 inputs compute in fp64; fp32 inputs evaluate pairs in fp32, sum runs of at most one tile
// (<= 512 terms) in fp32 and combine the runs in fp64.  Work is split by static OpenMP schedules and per-thread
// buffers are reduced in thread order, so outputs are bit-identical run to run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

#define TLKIT_INLINE inline __attribute__((always_inline))

// Tile edge (points) for the direct and the GEMM distance forms.
constexpr int64_t kTileDirect = 512;
constexpr int64_t kTileGemm = 512;
// Use the GEMM distance form from this dimension on (measured crossover on AVX-512, 2 threads).
constexpr int64_t kGemmMinDim = 24;
// Above this many columns of v (kernel_matmul) or of A, B (kernel_pair_grad), contract the tile with BLAS.
constexpr int64_t kGemmMinColumns = 8;
constexpr int kMaxBandwidths = 64;
// GEMM-form distances below this many ulps of ||a||^2 + ||b||^2 are recomputed directly.
constexpr int kRefineRatio = 4096;
// Problems below this many pair-dimension operations run on one thread: waking a team costs more than it saves,
// and far more when the cores are shared (a class on one server, a DataLoader's workers).
constexpr int64_t kSerialWork = int64_t(1) << 19;

int threads_for(int64_t work) { return work < kSerialWork ? 1 : at::get_num_threads(); }

// ---------------------------------------------------------------------------------------------------------------
// 2^x for x <= 0, vectorisable (GCC turns it into SIMD code inside `omp simd` loops).  x = n + f with n the nearest
// integer, found by the 1.5 * 2^(mantissa bits) shift (exact without -ffast-math), and |f| <= 1/2; 2^f by its Taylor
// polynomial (truncation < 5.2e-9 in fp32, < 4.2e-18 in fp64); 2^n built in the exponent bits.  Arguments at or
// below the smallest normal exponent give exactly 0.
TLKIT_INLINE float exp2_nonpositive(float x) {
  constexpr float shift = 12582912.0f;  // 1.5 * 2^23
  x = x > -127.0f ? x : -127.0f;
  const float shifted = x + shift;
  const float f = x - (shifted - shift);
  float p = 1.525273380405984028e-5f;
  p = p * f + 1.5403530393381609954e-4f;
  p = p * f + 1.3333558146428443423e-3f;
  p = p * f + 9.618129107628477162e-3f;
  p = p * f + 5.5504108664821579953e-2f;
  p = p * f + 2.4022650695910071233e-1f;
  p = p * f + 6.9314718055994530942e-1f;
  p = p * f + 1.0f;
  const int32_t n = std::bit_cast<int32_t>(shifted) - 0x4B400000;
  return p * std::bit_cast<float>((n + 127) << 23);  // n = -127 gives +0.0
}

TLKIT_INLINE double exp2_nonpositive(double x) {
  constexpr double shift = 6755399441055744.0;  // 1.5 * 2^52
  x = x > -1023.0 ? x : -1023.0;
  const double shifted = x + shift;
  const double f = x - (shifted - shift);
  double p = 1.3691488853904128881e-12;
  p = p * f + 2.5678435993488205142e-11;
  p = p * f + 4.4455382718708114976e-10;
  p = p * f + 7.0549116208011233299e-9;
  p = p * f + 1.0178086009239699727e-7;
  p = p * f + 1.3215486790144309488e-6;
  p = p * f + 1.525273380405984028e-5;
  p = p * f + 1.5403530393381609954e-4;
  p = p * f + 1.3333558146428443423e-3;
  p = p * f + 9.618129107628477162e-3;
  p = p * f + 5.5504108664821579953e-2;
  p = p * f + 2.4022650695910071233e-1;
  p = p * f + 6.9314718055994530942e-1;
  p = p * f + 1.0;
  const int64_t n = std::bit_cast<int64_t>(shifted) - 0x4338000000000000LL;
  return p * std::bit_cast<double>((n + 1023) << 52);  // n = -1023 gives +0.0
}

// ---------------------------------------------------------------------------------------------------------------
// Kernel constants: k_s = 2^(rate_s * t) with t = r^2 (gaussian) or r (laplacian).
template <typename T>
struct KernelParams {
  int count = 0;
  T rate[kMaxBandwidths];         // -log2(e) / (2 sigma^2)  or  -log2(e) / sigma
  T phi_weight[kMaxBandwidths];   // 1 / sigma^2             or  1 / sigma
  T inv_count = 1;
};

template <typename T>
KernelParams<T> make_kernel_params(at::ArrayRef<double> sigmas, int64_t kernel) {
  TORCH_CHECK(kernel == 0 || kernel == 1, "tlkit: kernel must be 0 (gaussian) or 1 (laplacian), got ", kernel);
  TORCH_CHECK(!sigmas.empty() && sigmas.size() <= static_cast<size_t>(kMaxBandwidths),
              "tlkit: expected 1 to ", kMaxBandwidths, " bandwidths, got ", sigmas.size());
  KernelParams<T> kp;
  kp.count = static_cast<int>(sigmas.size());
  kp.inv_count = static_cast<T>(1.0 / static_cast<double>(sigmas.size()));
  const double log2e = 1.4426950408889634074;
  for (int s = 0; s < kp.count; ++s) {
    const double sigma = sigmas[s];
    TORCH_CHECK(std::isfinite(sigma) && sigma > 0, "tlkit: bandwidths must be positive and finite, got ", sigma);
    kp.rate[s] = static_cast<T>(kernel == 0 ? -log2e / (2.0 * sigma * sigma) : -log2e / sigma);
    kp.phi_weight[s] = static_cast<T>(kernel == 0 ? 1.0 / (sigma * sigma) : 1.0 / sigma);
  }
  return kp;
}

// One tile row: kv[j] = k(r_j) and, if PHI, ph[j] = phi(r_j), from r2_at(j) = r_j^2.  Each bandwidth is one simple
// SIMD loop over j (GCC does not vectorise a j loop that holds a runtime-length bandwidth loop); t holds r^2 or r.
template <typename T, int KIND, bool PHI, typename R2>
TLKIT_INLINE void eval_row(const KernelParams<T>& kp, int64_t nj, R2 r2_at, T* t, T* kv,
                           T* ph) {
  const T rate0 = kp.rate[0], weight0 = kp.phi_weight[0];
#pragma omp simd
  for (int64_t j = 0; j < nj; ++j) {
    const T r2 = r2_at(j);
    const T tj = KIND == 0 ? r2 : std::sqrt(r2);
    const T e = exp2_nonpositive(rate0 * tj);
    t[j] = tj;
    kv[j] = e;
    if (PHI) ph[j] = weight0 * e;
  }
  for (int s = 1; s < kp.count; ++s) {
    const T rate = kp.rate[s], weight = kp.phi_weight[s];
#pragma omp simd
    for (int64_t j = 0; j < nj; ++j) {
      const T e = exp2_nonpositive(rate * t[j]);
      kv[j] += e;
      if (PHI) ph[j] += weight * e;
    }
  }
  const T inv_count = kp.inv_count;
  if (kp.count > 1) {
#pragma omp simd
    for (int64_t j = 0; j < nj; ++j) kv[j] *= inv_count;
  }
  if (PHI && (kp.count > 1 || KIND == 1)) {
#pragma omp simd
    for (int64_t j = 0; j < nj; ++j) {
      const T scale = KIND == 0 ? inv_count : (t[j] > T(0) ? inv_count / t[j] : T(0));
      ph[j] *= scale;
    }
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

std::vector<double> common_mean(const Tensor& a, const Tensor& b) {
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
  const T* rows = nullptr;    // (n, d) original rows (direct form) or centred rows (GEMM form)
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

// Squared distances of one tile: rows [i0, i0 + ni) of P against columns [j0, j0 + nj) of Q.
template <typename T, bool GEMM>
struct DistanceTile {
  const Cloud<T>* P = nullptr;
  const Cloud<T>* Q = nullptr;
  T* dots = nullptr;   // (ni, nj) P_I Q_J^T, GEMM form; row() turns rows into squared distances
  T* r2row = nullptr;  // (nj,) squared distances of the current row, direct form
  int64_t i0 = 0, ni = 0, j0 = 0, nj = 0;
  bool diagonal = false;  // P == Q and I == J: r^2 is exactly 0 for j == i

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
  // coordinate loop).  GEMM form: turns dot row ii into squared distances in place; pairs closer than the form can
  // resolve (r^2 < kRefineRatio eps (||p||^2 + ||q||^2), where BLAS rounding would dominate) are recomputed directly,
  // so duplicate points get exactly 0 and the laplacian's sqrt never amplifies cancellation noise.
  TLKIT_INLINE Row row(int64_t ii) {
    Row r{};
    if (GEMM) {
      T* g = dots + ii * nj;
      const T pn = P->sqnorm[i0 + ii];
      const T* qn = Q->sqnorm + j0;
      const T tau = kRefineRatio * std::numeric_limits<T>::epsilon();
      T margin = std::numeric_limits<T>::infinity();
#pragma omp simd reduction(min : margin)
      for (int64_t j = 0; j < nj; ++j) {
        const T raw = pn + qn[j] - T(2) * g[j];
        const T v = raw > T(0) ? raw : T(0);
        g[j] = v;
        const T gap = v - tau * (pn + qn[j]);
        margin = gap < margin ? gap : margin;
      }
      if (diagonal) g[ii] = 0;
      if (margin < 0) {
        const int64_t d = P->d;
        const T* p = P->rows + (i0 + ii) * d;
        for (int64_t j = 0; j < nj; ++j) {
          if (g[j] >= tau * (pn + qn[j])) continue;
          const T* q = Q->rows + (j0 + j) * d;
          double exact = 0;
          for (int64_t c = 0; c < d; ++c) {
            const double diff = static_cast<double>(p[c]) - static_cast<double>(q[c]);
            exact += diff * diff;
          }
          g[j] = static_cast<T>(exact);
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
// nearest: dist_i = min_j ||x_i - y_j||, index_i = first argmin.
template <typename T, bool GEMM>
std::tuple<Tensor, Tensor> nearest_impl(const Tensor& x, const Tensor& y) {
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  const std::vector<double> centre = GEMM ? common_mean(x, y) : std::vector<double>(d, 0.0);
  const int threads = threads_for(n * m * d);
  const Cloud<T> X = make_cloud<T>(x, GEMM, centre, threads), Y = make_cloud<T>(y, GEMM, centre, threads);
  Tensor dist = at::empty({n}, x.options());
  Tensor index = at::empty({n}, x.options().dtype(at::kLong));
  T* dist_out = dist.data_ptr<T>();
  int64_t* index_out = index.data_ptr<int64_t>();
  const T* xs = x.data_ptr<T>();
  const T* ys = y.data_ptr<T>();
  const RowBlocks rb = row_blocks<GEMM>(n, threads);
  const int64_t tile = rb.tile, row_block = rb.size;

#pragma omp parallel num_threads(threads)
  {
    std::vector<Tensor> keep;
    DistanceTile<T, GEMM> dt(X, Y, row_block, tile, keep);
    T* vals = scratch<T>(keep, tile);
    std::vector<T> best(row_block);
    std::vector<int64_t> best_j(row_block);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < rb.count; ++b) {
      const int64_t i0 = b * row_block, ni = std::min(row_block, n - i0);
      std::fill(best.begin(), best.end(), std::numeric_limits<T>::infinity());
      std::fill(best_j.begin(), best_j.end(), int64_t(0));
      for (int64_t j0 = 0; j0 < m; j0 += tile) {
        const int64_t nj = std::min(tile, m - j0);
        dt.begin(i0, ni, j0, nj, false);
        for (int64_t ii = 0; ii < ni; ++ii) {
          const auto r = dt.row(ii);
          T low = std::numeric_limits<T>::infinity();
#pragma omp simd reduction(min : low)
          for (int64_t j = 0; j < nj; ++j) {
            const T v = DistanceTile<T, GEMM>::r2_at(r, j);
            vals[j] = v;
            low = v < low ? v : low;
          }
          if (low < best[ii]) {
            int64_t j = 0;
            while (vals[j] != low) ++j;
            best[ii] = low;
            best_j[ii] = j0 + j;
          }
        }
      }
      for (int64_t ii = 0; ii < ni; ++ii) {
        const int64_t i = i0 + ii, j = best_j[ii];
        double r2 = 0;  // recomputed directly: exact whichever form selected the winner
        for (int64_t c = 0; c < d; ++c) {
          const double diff = static_cast<double>(xs[i * d + c]) - static_cast<double>(ys[j * d + c]);
          r2 += diff * diff;
        }
        dist_out[i] = static_cast<T>(std::sqrt(r2));
        index_out[i] = j;
      }
    }
  }
  return {dist, index};
}

// ---------------------------------------------------------------------------------------------------------------
// kernel_matmul: out_i = sum_j k(x_i, y_j) v_j.
template <typename T, int KIND, bool GEMM>
Tensor kernel_matmul_impl(const Tensor& x, const Tensor& y, const Tensor& v, const KernelParams<T>& kp) {
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1), k = v.size(1);
  const std::vector<double> centre = GEMM ? common_mean(x, y) : std::vector<double>(d, 0.0);
  const int threads = threads_for(n * m * (d + k));
  const Cloud<T> X = make_cloud<T>(x, GEMM, centre, threads), Y = make_cloud<T>(y, GEMM, centre, threads);
  const bool blas_contract = k > kGemmMinColumns;
  const T* vs = v.data_ptr<T>();
  Tensor v_cols_t;
  const T* v_cols = blas_contract ? nullptr : transposed<T>(v, v_cols_t);  // (k, m)
  Tensor out = at::empty({n, k}, x.options());
  T* out_data = out.data_ptr<T>();
  const RowBlocks rb = row_blocks<GEMM>(n, threads);
  const int64_t tile = rb.tile, row_block = rb.size;

#pragma omp parallel num_threads(threads)
  {
    std::vector<Tensor> keep;
    DistanceTile<T, GEMM> dt(X, Y, row_block, tile, keep);
    T* kvals = scratch<T>(keep, (blas_contract ? row_block : 1) * tile);
    T* tbuf = scratch<T>(keep, tile);
    T* contracted = blas_contract ? scratch<T>(keep, row_block * k) : nullptr;
    std::vector<double> acc(row_block * k);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < rb.count; ++b) {
      const int64_t i0 = b * row_block, ni = std::min(row_block, n - i0);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j0 = 0; j0 < m; j0 += tile) {
        const int64_t nj = std::min(tile, m - j0);
        dt.begin(i0, ni, j0, nj, false);
        for (int64_t ii = 0; ii < ni; ++ii) {
          const auto r = dt.row(ii);
          T* kr = kvals + (blas_contract ? ii * nj : 0);
          eval_row<T, KIND, false>(kp, nj, [&](int64_t j) { return DistanceTile<T, GEMM>::r2_at(r, j); }, tbuf, kr,
                                   nullptr);
          if (!blas_contract) {
            for (int64_t c = 0; c < k; ++c) {
              const T* vj = v_cols + c * m + j0;
              T s = 0;
#pragma omp simd reduction(+ : s)
              for (int64_t j = 0; j < nj; ++j) s += kr[j] * vj[j];
              acc[ii * k + c] += s;
            }
          }
        }
        if (blas_contract) {
          matmul_into(contracted, matrix_view(kvals, ni, nj), matrix_view(vs + j0 * k, nj, k));
          for (int64_t e = 0; e < ni * k; ++e) acc[e] += contracted[e];
        }
      }
      for (int64_t e = 0; e < ni * k; ++e) out_data[i0 * k + e] = static_cast<T>(acc[e]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// kernel_pair_grad: out_i = sum_j (A_i . B_j) phi(a_i, b_j) (a_i - b_j).
template <typename T, int KIND, bool GEMM>
Tensor kernel_pair_grad_impl(const Tensor& a, const Tensor& b, const Tensor& A, const Tensor& B,
                             const KernelParams<T>& kp) {
  const int64_t n = a.size(0), m = b.size(0), d = a.size(1), k = A.size(1);
  const std::vector<double> centre = GEMM ? common_mean(a, b) : std::vector<double>(d, 0.0);
  const int threads = threads_for(n * m * (d + k));
  const Cloud<T> P = make_cloud<T>(a, GEMM, centre, threads), Q = make_cloud<T>(b, GEMM, centre, threads);
  const bool blas_coef = k > kGemmMinColumns;
  const T* As = A.data_ptr<T>();
  const T* Bs = B.data_ptr<T>();
  Tensor B_cols_t;
  const T* B_cols = blas_coef ? nullptr : transposed<T>(B, B_cols_t);  // (k, m)
  Tensor out = at::empty({n, d}, a.options());
  T* out_data = out.data_ptr<T>();
  const RowBlocks rb = row_blocks<GEMM>(n, threads);
  const int64_t tile = rb.tile, row_block = rb.size;

#pragma omp parallel num_threads(threads)
  {
    std::vector<Tensor> keep;
    DistanceTile<T, GEMM> dt(P, Q, row_block, tile, keep);
    T* coef = scratch<T>(keep, (blas_coef ? row_block : 1) * tile);   // A_i . B_j
    T* weights = scratch<T>(keep, (GEMM ? row_block : 1) * tile);     // (A_i . B_j) phi_ij
    T* moment = GEMM ? scratch<T>(keep, row_block * d) : nullptr;      // weights @ Q_J
    T* tbuf = scratch<T>(keep, tile);
    T* kbuf = scratch<T>(keep, tile);
    std::vector<double> acc(row_block * d), row_weight(row_block);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < rb.count; ++blk) {
      const int64_t i0 = blk * row_block, ni = std::min(row_block, n - i0);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j0 = 0; j0 < m; j0 += tile) {
        const int64_t nj = std::min(tile, m - j0);
        dt.begin(i0, ni, j0, nj, false);
        if (blas_coef) matmul_into(coef, matrix_view(As + i0 * k, ni, k), matrix_view(Bs + j0 * k, nj, k).t());
        for (int64_t ii = 0; ii < ni; ++ii) {
          const auto r = dt.row(ii);
          T* cr = blas_coef ? coef + ii * nj : coef;
          if (!blas_coef) {
            const T* Ai = As + (i0 + ii) * k;
#pragma omp simd
            for (int64_t j = 0; j < nj; ++j) {
              T c = 0;
              for (int64_t t = 0; t < k; ++t) c += Ai[t] * B_cols[t * m + j0 + j];
              cr[j] = c;
            }
          }
          T* wr = weights + (GEMM ? ii * nj : 0);
          eval_row<T, KIND, true>(kp, nj, [&](int64_t j) { return DistanceTile<T, GEMM>::r2_at(r, j); }, tbuf, kbuf,
                                  wr);
          T wsum = 0;
#pragma omp simd reduction(+ : wsum)
          for (int64_t j = 0; j < nj; ++j) {
            wr[j] *= cr[j];
            wsum += wr[j];
          }
          if (GEMM) {
            row_weight[ii] = wsum;
          } else {
            const T* pi = r.p;
            for (int64_t c = 0; c < d; ++c) {
              const T pc = pi[c];
              const T* qc = r.qcols + c * r.ldq;
              T s = 0;
#pragma omp simd reduction(+ : s)
              for (int64_t j = 0; j < nj; ++j) s += wr[j] * (pc - qc[j]);
              acc[ii * d + c] += s;
            }
          }
        }
        if (GEMM) {
          // sum_j w_ij (p_i - q_j) = p_i sum_j w_ij - (W Q_J)_i, combined in fp64.
          matmul_into(moment, matrix_view(weights, ni, nj), matrix_view(Q.rows + j0 * d, nj, d));
          for (int64_t ii = 0; ii < ni; ++ii)
            for (int64_t c = 0; c < d; ++c)
              acc[ii * d + c] += static_cast<double>(P.rows[(i0 + ii) * d + c]) * row_weight[ii] -
                                 static_cast<double>(moment[ii * d + c]);
        }
      }
      for (int64_t e = 0; e < ni * d; ++e) out_data[i0 * d + e] = static_cast<T>(acc[e]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// mmd2_terms: T0 = sum wx wx k(x, x), T1 = sum wy wy k(y, y), T2 = sum wx wy k(x, y) over upper-triangular tiles of
// the symmetric terms, and optionally the gradients of coef0 T0 + coef1 T1 + coef2 T2 from the same tiles.
// Gradient bookkeeping: point p accumulates acc_p = sum over its partners q of cf * w_q phi_pq (p - q) and the
// gradient is -w_p acc_p, where cf = 2 coef0, 2 coef1 or coef2 by term.  Off-diagonal tiles of a symmetric term
// feed both their rows and their columns; diagonal tiles are evaluated in full and feed their rows only.
struct TileJob {
  int32_t term;  // 0 xx, 1 yy, 2 xy
  int32_t row_block, col_block;
};

template <typename T, int KIND, bool GEMM, bool GRAD>
std::tuple<Tensor, Tensor, Tensor> mmd2_terms_impl(const Tensor& x, const Tensor& y, const Tensor& wx,
                                                   const Tensor& wy, at::ArrayRef<double> coef,
                                                   const KernelParams<T>& kp) {
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1), N = n + m;
  const std::vector<double> centre = GEMM ? common_mean(x, y) : std::vector<double>(d, 0.0);
  const int threads = threads_for(N * N / 2 * d);
  const Cloud<T> X = make_cloud<T>(x, GEMM, centre, threads), Y = make_cloud<T>(y, GEMM, centre, threads);
  const T* wxs = wx.data_ptr<T>();
  const T* wys = wy.data_ptr<T>();
  const int64_t tile = GEMM ? kTileGemm : kTileDirect;
  const int64_t bx = (n + tile - 1) / tile, by = (m + tile - 1) / tile;

  std::vector<TileJob> jobs;
  for (int32_t I = 0; I < bx; ++I)
    for (int32_t J = I; J < bx; ++J) jobs.push_back({0, I, J});
  for (int32_t I = 0; I < bx; ++I)
    for (int32_t J = 0; J < by; ++J) jobs.push_back({2, I, J});
  for (int32_t I = 0; I < by; ++I)
    for (int32_t J = I; J < by; ++J) jobs.push_back({1, I, J});
  const int64_t job_count = static_cast<int64_t>(jobs.size());
  std::vector<double> job_sum(job_count, 0.0);

  Tensor acc_t;  // (threads, N, d) per-thread gradient accumulators, fp64
  double* acc_all = nullptr;
  Tensor weighted_t;  // GEMM form: centred rows scaled by their weights, x then y
  const T* weighted = nullptr;
  const double cf[3] = {2.0 * coef[0], 2.0 * coef[1], coef[2]};
  if (GRAD) {
    acc_t = at::zeros({threads, N, d}, x.options().dtype(at::kDouble));
    acc_all = acc_t.data_ptr<double>();
    if (GEMM) {
      weighted_t = at::empty({N, d}, x.options());
      T* w = weighted_t.data_ptr<T>();
      for (int64_t i = 0; i < N; ++i) {
        const T wi = i < n ? wxs[i] : wys[i - n];
        const T* src = i < n ? X.rows + i * d : Y.rows + (i - n) * d;
        for (int64_t c = 0; c < d; ++c) w[i * d + c] = wi * src[c];
      }
      weighted = w;
    }
  }

#pragma omp parallel num_threads(threads)
  {
    std::vector<Tensor> keep;
    DistanceTile<T, GEMM> dt(X, Y, tile, tile, keep);  // its clouds are set per job
    double* acc = GRAD ? acc_all + static_cast<int64_t>(omp_get_thread_num()) * N * d : nullptr;
    // direct form: per-tile column accumulators (d, tile); GEMM form: phi tile in dt.dots, moments (tile, d)
    T* col_acc = GRAD && !GEMM ? scratch<T>(keep, d * tile) : nullptr;
    T* tbuf = scratch<T>(keep, tile);
    T* kbuf = scratch<T>(keep, tile);
    T* phi_buf = GRAD && !GEMM ? scratch<T>(keep, tile) : nullptr;
    T* phi_w_row = GRAD ? scratch<T>(keep, tile) : nullptr;   // w_q phi, row side
    T* phi_w_col = GRAD ? scratch<T>(keep, tile) : nullptr;   // w_p phi, column side
    T* row_moment = GRAD && GEMM ? scratch<T>(keep, tile * d) : nullptr;
    T* col_moment = GRAD && GEMM ? scratch<T>(keep, tile * d) : nullptr;
    std::vector<double> row_weight(tile), col_weight(tile);
    std::vector<T> col_weight_tile(tile);

#pragma omp for schedule(static)
    for (int64_t job = 0; job < job_count; ++job) {
      const TileJob tj = jobs[job];
      const bool row_is_y = tj.term == 1, col_is_y = tj.term != 0;
      const Cloud<T>& P = row_is_y ? Y : X;
      const Cloud<T>& Q = col_is_y ? Y : X;
      const T* wP = row_is_y ? wys : wxs;
      const T* wQ = col_is_y ? wys : wxs;
      const int64_t p_offset = row_is_y ? n : 0, q_offset = col_is_y ? n : 0;
      const int64_t i0 = tj.row_block * tile, ni = std::min(tile, P.n - i0);
      const int64_t j0 = tj.col_block * tile, nj = std::min(tile, Q.n - j0);
      const bool diagonal = tj.term != 2 && tj.row_block == tj.col_block;
      const bool column_side = GRAD && !diagonal;
      dt.P = &P, dt.Q = &Q;
      dt.begin(i0, ni, j0, nj, diagonal);
      const T* wq = wQ + j0;
      double tile_sum = 0;
      if (column_side) {
        if (GEMM)
          std::fill(col_weight_tile.begin(), col_weight_tile.begin() + nj, T(0));
        else
          std::fill(col_acc, col_acc + d * nj, T(0));
      }
      for (int64_t ii = 0; ii < ni; ++ii) {
        const auto r = dt.row(ii);
        const T wi = wP[i0 + ii];
        const auto r2_at = [&](int64_t j) { return DistanceTile<T, GEMM>::r2_at(r, j); };
        T s = 0;
        if (!GRAD) {
          eval_row<T, KIND, false>(kp, nj, r2_at, tbuf, kbuf, nullptr);
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < nj; ++j) s += wq[j] * kbuf[j];
          tile_sum += static_cast<double>(wi) * s;
          continue;
        }
        T* phi_row = GEMM ? dt.dots + ii * nj : phi_buf;  // GEMM: phi overwrites the consumed r^2 row
        eval_row<T, KIND, true>(kp, nj, r2_at, tbuf, kbuf, phi_row);
        if (diagonal) phi_row[ii] = T(0);  // a_i - a_i = 0 exactly; the expanded GEMM form would leave rounding
        T wsum = 0;
#pragma omp simd reduction(+ : s, wsum)
        for (int64_t j = 0; j < nj; ++j) {
          s += wq[j] * kbuf[j];
          if (GEMM) {
            wsum += wq[j] * phi_row[j];
          } else {
            phi_w_row[j] = wq[j] * phi_row[j];
            phi_w_col[j] = wi * phi_row[j];
          }
        }
        tile_sum += static_cast<double>(wi) * s;
        if (GEMM) {
          row_weight[ii] = wsum;
          if (column_side) {
#pragma omp simd
            for (int64_t j = 0; j < nj; ++j) col_weight_tile[j] += wi * phi_row[j];
          }
          continue;
        }
        double* acc_row = acc + (p_offset + i0 + ii) * d;
        for (int64_t c = 0; c < d; ++c) {
          const T pc = r.p[c];
          const T* qc = r.qcols + c * r.ldq;
          T* colc = col_acc + c * nj;
          T rs = 0;
          if (column_side) {
#pragma omp simd reduction(+ : rs)
            for (int64_t j = 0; j < nj; ++j) {
              const T diff = pc - qc[j];
              rs += phi_w_row[j] * diff;
              colc[j] -= phi_w_col[j] * diff;
            }
          } else {
#pragma omp simd reduction(+ : rs)
            for (int64_t j = 0; j < nj; ++j) rs += phi_w_row[j] * (pc - qc[j]);
          }
          acc_row[c] += cf[tj.term] * static_cast<double>(rs);
        }
      }
      job_sum[job] = (diagonal || tj.term == 2) ? tile_sum : 2.0 * tile_sum;
      if (!GRAD) continue;
      const double scale = cf[tj.term];
      if (GEMM) {
        // rows: sum_j w_j phi_ij (p_i - q_j) = p_i (Phi w_J)_i - (Phi (w_J * Q_J))_i
        const T* Pw = weighted + (p_offset + i0) * d;
        const T* Qw = weighted + (q_offset + j0) * d;
        const Tensor phi_view = matrix_view<T>(dt.dots, ni, nj);
        matmul_into(row_moment, phi_view, matrix_view(Qw, nj, d));
        for (int64_t ii = 0; ii < ni; ++ii) {
          double* acc_row = acc + (p_offset + i0 + ii) * d;
          const T* p = P.rows + (i0 + ii) * d;
          for (int64_t c = 0; c < d; ++c)
            acc_row[c] += scale * (static_cast<double>(p[c]) * row_weight[ii] - row_moment[ii * d + c]);
        }
        if (column_side) {
          matmul_into(col_moment, phi_view.t(), matrix_view(Pw, ni, d));
          for (int64_t j = 0; j < nj; ++j) {
            double* acc_row = acc + (q_offset + j0 + j) * d;
            const T* q = Q.rows + (j0 + j) * d;
            for (int64_t c = 0; c < d; ++c)
              acc_row[c] +=
                  scale * (static_cast<double>(q[c]) * col_weight_tile[j] - col_moment[j * d + c]);
          }
        }
      } else if (column_side) {
        for (int64_t j = 0; j < nj; ++j) {
          double* acc_row = acc + (q_offset + j0 + j) * d;
          for (int64_t c = 0; c < d; ++c) acc_row[c] += scale * static_cast<double>(col_acc[c * nj + j]);
        }
      }
    }
  }

  Tensor terms = at::zeros({3}, x.options().dtype(at::kDouble));
  double* t = terms.data_ptr<double>();
  for (int64_t job = 0; job < job_count; ++job) t[jobs[job].term] += job_sum[job];

  if (!GRAD) return {terms, at::empty({0}, x.options()), at::empty({0}, x.options())};
  Tensor gx = at::empty({n, d}, x.options()), gy = at::empty({m, d}, x.options());
  T* gxs = gx.data_ptr<T>();
  T* gys = gy.data_ptr<T>();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < N; ++p) {
    const double w = p < n ? wxs[p] : wys[p - n];
    T* g = p < n ? gxs + p * d : gys + (p - n) * d;
    for (int64_t c = 0; c < d; ++c) {
      double total = 0;
      for (int th = 0; th < threads; ++th) total += acc_all[(static_cast<int64_t>(th) * N + p) * d + c];
      g[c] = static_cast<T>(-w * total);
    }
  }
  return {terms, gx, gy};
}

// ---------------------------------------------------------------------------------------------------------------
void check_cloud(const Tensor& t, const char* name, int64_t d, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 2, "tlkit: ", name, " must be 2-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.device().is_cpu(), "tlkit: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == dtype, "tlkit: ", name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.size(0) >= 1 && (d < 0 || t.size(1) == d), "tlkit: ", name, " has shape ", t.sizes(),
              ", expected (>=1, ", d, ")");
  TORCH_CHECK(t.is_contiguous(), "tlkit: ", name, " must be contiguous");
}

void check_pair(const Tensor& x, const Tensor& y) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "tlkit: expected float32 or float64 points, got ", x.scalar_type());
  check_cloud(x, "x", -1, x.scalar_type());
  TORCH_CHECK(x.size(1) >= 1, "tlkit: points need at least one coordinate");
  check_cloud(y, "y", x.size(1), x.scalar_type());
}

bool use_gemm_form(int64_t d) { return d >= kGemmMinDim; }

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

std::tuple<Tensor, Tensor> nearest(const Tensor& x, const Tensor& y) {
  check_pair(x, y);
  const bool gemm = use_gemm_form(x.size(1));
  return TLKIT_DISPATCH(x.scalar_type(), 0, gemm, [&] { return nearest_impl<T, GEMM>(x, y); });
}

Tensor kernel_matmul(const Tensor& x, const Tensor& y, const Tensor& v, at::ArrayRef<double> sigmas,
                     int64_t kernel) {
  check_pair(x, y);
  check_cloud(v, "v", -1, x.scalar_type());
  TORCH_CHECK(v.size(0) == y.size(0) && v.size(1) >= 1, "tlkit: v has shape ", v.sizes(), ", expected (",
              y.size(0), ", >=1)");
  const bool gemm = use_gemm_form(x.size(1));
  return TLKIT_DISPATCH(x.scalar_type(), kernel, gemm, [&] {
    return kernel_matmul_impl<T, KIND, GEMM>(x, y, v, make_kernel_params<T>(sigmas, kernel));
  });
}

Tensor kernel_pair_grad(const Tensor& a, const Tensor& b, const Tensor& A, const Tensor& B,
                        at::ArrayRef<double> sigmas, int64_t kernel) {
  check_pair(a, b);
  check_cloud(A, "A", -1, a.scalar_type());
  check_cloud(B, "B", A.size(1), a.scalar_type());
  TORCH_CHECK(A.size(0) == a.size(0) && B.size(0) == b.size(0), "tlkit: A, B have shapes ", A.sizes(), ", ",
              B.sizes(), ", expected (", a.size(0), ", k), (", b.size(0), ", k)");
  const bool gemm = use_gemm_form(a.size(1));
  return TLKIT_DISPATCH(a.scalar_type(), kernel, gemm, [&] {
    return kernel_pair_grad_impl<T, KIND, GEMM>(a, b, A, B, make_kernel_params<T>(sigmas, kernel));
  });
}

std::tuple<Tensor, Tensor, Tensor> mmd2_terms(const Tensor& x, const Tensor& y, const Tensor& wx, const Tensor& wy,
                                              at::ArrayRef<double> coef, at::ArrayRef<double> sigmas,
                                              int64_t kernel, bool compute_grad) {
  check_pair(x, y);
  TORCH_CHECK(wx.dim() == 1 && wx.size(0) == x.size(0) && wx.scalar_type() == x.scalar_type() && wx.is_contiguous(),
              "tlkit: wx must be a contiguous (", x.size(0), ",) tensor of dtype ", x.scalar_type());
  TORCH_CHECK(wy.dim() == 1 && wy.size(0) == y.size(0) && wy.scalar_type() == x.scalar_type() && wy.is_contiguous(),
              "tlkit: wy must be a contiguous (", y.size(0), ",) tensor of dtype ", x.scalar_type());
  TORCH_CHECK(coef.size() == 3, "tlkit: coef must hold 3 numbers, got ", coef.size());
  const bool gemm = use_gemm_form(x.size(1));
  return TLKIT_DISPATCH(x.scalar_type(), kernel, gemm, [&] {
    const KernelParams<T> kp = make_kernel_params<T>(sigmas, kernel);
    return compute_grad ? mmd2_terms_impl<T, KIND, GEMM, true>(x, y, wx, wy, coef, kp)
                        : mmd2_terms_impl<T, KIND, GEMM, false>(x, y, wx, wy, coef, kp);
  });
}

}  // namespace

TORCH_LIBRARY(tlkit, m) {
  m.def("nearest(Tensor x, Tensor y) -> (Tensor, Tensor)");
  m.def("kernel_matmul(Tensor x, Tensor y, Tensor v, float[] sigmas, int kernel) -> Tensor");
  m.def("kernel_pair_grad(Tensor a, Tensor b, Tensor A, Tensor B, float[] sigmas, int kernel) -> Tensor");
  m.def(
      "mmd2_terms(Tensor x, Tensor y, Tensor wx, Tensor wy, float[] coef, float[] sigmas, int kernel, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tlkit, CPU, m) {
  m.impl("nearest", &nearest);
  m.impl("kernel_matmul", &kernel_matmul);
  m.impl("kernel_pair_grad", &kernel_pair_grad);
  m.impl("mmd2_terms", &mmd2_terms);
}
