// tlkit's fused pairwise kernels on CUDA: tiled like FlashAttention / KeOps, never an n x m buffer.
//
// One kernel template, `pair_pass_kernel`, does every op. A block owns kRows rows of the row set (one row per thread)
// and streams the columns through shared memory in tiles of kCols points; the feature dimension d is cut into
// chunks of kChunk, so any d works. Per tile each thread
//   1. accumulates the kCols squared distances ||a_i - b_j||^2 in registers from direct differences (exact for
//      points that coincide, no cancellation, no TF32),
//   2. turns them into the per-pair coefficient the op needs (kernel value, phi, weights, A_i . B_j),
//   3. adds the tile's contribution to its row results: scalars in fp64 registers, vector outputs (K v, gradients)
//      in an fp64 buffer it alone owns.
// Pair terms are computed in the input precision and summed over one tile (<= 32 terms) before the fp64 add.
// The column range is cut into `splits` contiguous tile ranges (gridDim.y) when there are too few row blocks to
// fill the GPU; each split writes its own partial results, and a second kernel adds them in split order. No
// atomics anywhere: results are bit-identical run to run. Column-side gradients (MMD's gy) are a second pass with
// the roles of x and y swapped.
#include "launchers.h"

#include <algorithm>
#include <cmath>

namespace tlkit_cuda {
namespace {

// Block shapes. kPad keeps each column-tile row a multiple of 16 bytes (vector loads) while spreading the banks.
template <typename T>
struct Config;
template <>
struct Config<float> {
  static constexpr int kRows = 128, kCols = 32, kChunk = 32, kPad = 4;
};
template <>
struct Config<double> {
  static constexpr int kRows = 64, kCols = 16, kChunk = 32, kPad = 2;
};

enum Mode : int { kNearestMode, kMatmulMode, kPairGradMode, kMMDMode };

constexpr double kLog2e = 1.4426950408889634;
constexpr std::size_t kAlign = 256;
constexpr std::size_t kMaxSplitBytes = std::size_t(256) << 20;  // per pass, for the partial results of all splits
constexpr int kReduceThreads = 256;

// k_s = exp2(arg * exp2_scale[s]) with arg = r^2 (gaussian) or r (laplacian); phi = (1/S) sum_s k_s phi_scale[s]
// (gaussian: 1/sigma^2; laplacian: 1/sigma, then divided by r).
template <typename T>
struct KernelCoeffs {
  int kind;
  int num_sigmas;
  T inv_count;
  T exp2_scale[kMaxBandwidths];
  T phi_scale[kMaxBandwidths];
};

template <typename T>
KernelCoeffs<T> make_coeffs(const KernelSpec& spec) {
  KernelCoeffs<T> c{};
  c.kind = spec.kind;
  c.num_sigmas = spec.num_sigmas;
  c.inv_count = T(1.0 / spec.num_sigmas);
  for (int s = 0; s < spec.num_sigmas; ++s) {
    const double sigma = spec.sigmas[s];
    const bool gaussian = spec.kind == kGaussian;
    c.exp2_scale[s] = T(-kLog2e / (gaussian ? 2.0 * sigma * sigma : sigma));
    c.phi_scale[s] = T(gaussian ? 1.0 / (sigma * sigma) : 1.0 / sigma);
  }
  return c;
}

__device__ __forceinline__ float exp2_of(float v) { return exp2f(v); }
__device__ __forceinline__ double exp2_of(double v) { return exp2(v); }
__device__ __forceinline__ float sqrt_of(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_of(double v) { return sqrt(v); }

// Kernel value k and gradient factor phi at squared distance d2 (one distance, all bandwidths).
template <typename T>
__device__ __forceinline__ void kernel_value(const KernelCoeffs<T>& c, T d2, T& k, T& phi) {
  const T r2 = d2 > T(0) ? d2 : T(0);
  const bool gaussian = c.kind == kGaussian;
  const T arg = gaussian ? r2 : sqrt_of(r2);
  T k_sum = 0, phi_sum = 0;
#pragma unroll
  for (int s = 0; s < kMaxBandwidths; ++s) {
    if (s < c.num_sigmas) {
      const T e = exp2_of(arg * c.exp2_scale[s]);
      k_sum += e;
      phi_sum += e * c.phi_scale[s];
    }
  }
  k = k_sum * c.inv_count;
  phi = gaussian ? phi_sum * c.inv_count : (arg > T(0) ? phi_sum * c.inv_count / arg : T(0));
}

// Reads kLanes consecutive shared-memory values with one vector load (the address is 16-byte aligned).
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  static constexpr int kCount = 4;
  __device__ static __forceinline__ void load(const float* p, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  }
};
template <>
struct Lanes<double> {
  static constexpr int kCount = 2;
  __device__ static __forceinline__ void load(const double* p, double* out) {
    const double2 v = *reinterpret_cast<const double2*>(p);
    out[0] = v.x, out[1] = v.y;
  }
};

// tile[kk][r] = src[(first + r) * width + k0 + kk] for r < kTileRows, kk < chunk (zero for r >= valid).
// Consecutive threads read consecutive addresses of the row-major source.
template <typename T, int kTileRows, int kStride>
__device__ __forceinline__ void load_transposed(T (*tile)[kStride], const T* __restrict__ src, int64_t first,
                                                int64_t valid, int64_t width, int64_t k0, int chunk) {
  for (int e = threadIdx.x; e < kTileRows * chunk; e += blockDim.x) {
    const int r = e / chunk;
    const int kk = e - r * chunk;
    tile[kk][r] = r < valid ? src[(first + r) * width + k0 + kk] : T(0);
  }
}

template <typename T>
struct PassArgs {
  const T* rows;  // (n, d)
  int64_t n, d;
  const T* cols[2];         // column sets, (m[s], d); tiles of set 0 come first
  const T* col_weights[2];  // MMD: (m[s],)
  int64_t m[2];
  T grad_scale[2];  // MMD: gradient coefficient of each column set
  int64_t tiles_first, tiles_total;
  const T* row_aux;  // pair_grad: A (n, aux_width)
  const T* col_aux;  // pair_grad: B (m, aux_width); matmul: v (m, out_width)
  int64_t aux_width;
  int64_t out_width;     // width of the vector output (0: none)
  double* vec_partial;   // [splits][out_width][n], zero-initialised, accumulated per tile
  double* sum_partial;   // MMD: [splits][2][n] sum_j w_j k(a_i, b_j) per column set
  T* best_d2;            // nearest: [splits][n]
  int64_t* best_index;   // nearest: [splits][n]
  KernelCoeffs<T> coeffs;
};

template <typename T, int kMode>
__global__ void __launch_bounds__(Config<T>::kRows) pair_pass_kernel(const PassArgs<T> p) {
  constexpr int kRows = Config<T>::kRows, kCols = Config<T>::kCols, kChunk = Config<T>::kChunk;
  constexpr int kColStride = kCols + Config<T>::kPad, kLanes = Lanes<T>::kCount;
  __shared__ __align__(16) T row_tile[kChunk][kRows + 1];
  __shared__ __align__(16) T col_tile[kChunk][kColStride];

  const int t = threadIdx.x;
  const int64_t row0 = int64_t(blockIdx.x) * kRows;
  const int64_t i = row0 + t;
  const bool row_ok = i < p.n;
  const int64_t rows_here = min(int64_t(kRows), p.n - row0);
  const int split = blockIdx.y;
  const int64_t tile_begin = p.tiles_total * split / gridDim.y;
  const int64_t tile_end = p.tiles_total * (split + 1) / gridDim.y;
  // With d <= kChunk the row chunk is loaded once; for MMD the column chunk then also serves the gradient sweep.
  const bool single_chunk = p.d <= kChunk;
  const bool rows_resident = kMode != kPairGradMode && single_chunk;
  const bool cols_reusable = kMode == kMMDMode && single_chunk;
  if (rows_resident) load_transposed<T, kRows, kRows + 1>(row_tile, p.rows, row0, rows_here, p.d, 0, int(p.d));

  double row_sum_first = 0.0, row_sum_second = 0.0;
  T best = T(INFINITY);
  int64_t best_index = 0;

  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int set = tile < p.tiles_first ? 0 : 1;
    const int64_t j0 = (tile - (set ? p.tiles_first : 0)) * kCols;
    const int64_t cols_here = min(int64_t(kCols), (set ? p.m[1] : p.m[0]) - j0);
    const T* cols = set ? p.cols[1] : p.cols[0];

    // 1. squared distances to the tile's columns, chunk by chunk over d
    T acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[j] = T(0);
    for (int64_t k0 = 0; k0 < p.d; k0 += kChunk) {
      const int chunk = int(min(int64_t(kChunk), p.d - k0));
      __syncthreads();
      if (!rows_resident) load_transposed<T, kRows, kRows + 1>(row_tile, p.rows, row0, rows_here, p.d, k0, chunk);
      load_transposed<T, kCols, kColStride>(col_tile, cols, j0, cols_here, p.d, k0, chunk);
      __syncthreads();
      for (int kk = 0; kk < chunk; ++kk) {
        const T xv = row_tile[kk][t];
#pragma unroll
        for (int q = 0; q < kCols; q += kLanes) {
          T c[kLanes];
          Lanes<T>::load(&col_tile[kk][q], c);
#pragma unroll
          for (int l = 0; l < kLanes; ++l) {
            const T diff = xv - c[l];
            acc[q + l] = fma(diff, diff, acc[q + l]);
          }
        }
      }
    }

    if constexpr (kMode == kNearestMode) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        if (j < cols_here && acc[j] < best) {  // strict: the smallest index wins ties
          best = acc[j];
          best_index = j0 + j;
        }
      }
      continue;
    }

    // 2. per-pair coefficients (zero for padding columns)
    T coeff[kCols];
    if constexpr (kMode == kMatmulMode) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        T k, phi;
        kernel_value(p.coeffs, acc[j], k, phi);
        coeff[j] = j < cols_here ? k : T(0);
      }
    } else if constexpr (kMode == kMMDMode) {
      const T* weights = set ? p.col_weights[1] : p.col_weights[0];
      const T scale = set ? p.grad_scale[1] : p.grad_scale[0];
      T tile_sum = 0;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        T k, phi;
        kernel_value(p.coeffs, acc[j], k, phi);
        const T w = j < cols_here ? weights[j0 + j] : T(0);
        tile_sum = fma(w, k, tile_sum);
        coeff[j] = scale * w * phi;
      }
      (set ? row_sum_second : row_sum_first) += double(tile_sum);
    } else {  // pair_grad: phi(a_i, b_j) (A_i . B_j)
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        T k, phi;
        kernel_value(p.coeffs, acc[j], k, phi);
        coeff[j] = j < cols_here ? phi : T(0);
        acc[j] = T(0);
      }
      for (int64_t k0 = 0; k0 < p.aux_width; k0 += kChunk) {
        const int chunk = int(min(int64_t(kChunk), p.aux_width - k0));
        __syncthreads();
        load_transposed<T, kRows, kRows + 1>(row_tile, p.row_aux, row0, rows_here, p.aux_width, k0, chunk);
        load_transposed<T, kCols, kColStride>(col_tile, p.col_aux, j0, cols_here, p.aux_width, k0, chunk);
        __syncthreads();
        for (int kk = 0; kk < chunk; ++kk) {
          const T xv = row_tile[kk][t];
#pragma unroll
          for (int q = 0; q < kCols; q += kLanes) {
            T c[kLanes];
            Lanes<T>::load(&col_tile[kk][q], c);
#pragma unroll
            for (int l = 0; l < kLanes; ++l) acc[q + l] = fma(xv, c[l], acc[q + l]);
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kCols; ++j) coeff[j] *= acc[j];
    }

    // 3. vector output: matmul sum_j coeff_j v_j; gradients sum_j coeff_j (a_i - b_j), chunk by chunk
    for (int64_t k0 = 0; k0 < p.out_width; k0 += kChunk) {
      const int chunk = int(min(int64_t(kChunk), p.out_width - k0));
      if (kMode == kMatmulMode || !cols_reusable) {
        __syncthreads();
        if constexpr (kMode == kMatmulMode) {
          load_transposed<T, kCols, kColStride>(col_tile, p.col_aux, j0, cols_here, p.out_width, k0, chunk);
        } else {
          if (!rows_resident) load_transposed<T, kRows, kRows + 1>(row_tile, p.rows, row0, rows_here, p.d, k0, chunk);
          load_transposed<T, kCols, kColStride>(col_tile, cols, j0, cols_here, p.d, k0, chunk);
        }
        __syncthreads();
      }
      for (int kk = 0; kk < chunk; ++kk) {
        const T xv = kMode == kMatmulMode ? T(0) : row_tile[kk][t];
        T s = 0;
#pragma unroll
        for (int q = 0; q < kCols; q += kLanes) {
          T c[kLanes];
          Lanes<T>::load(&col_tile[kk][q], c);
#pragma unroll
          for (int l = 0; l < kLanes; ++l) s = fma(coeff[q + l], kMode == kMatmulMode ? c[l] : xv - c[l], s);
        }
        if (row_ok) p.vec_partial[(int64_t(split) * p.out_width + k0 + kk) * p.n + i] += double(s);
      }
    }
  }

  if (!row_ok) return;
  if constexpr (kMode == kNearestMode) {
    p.best_d2[int64_t(split) * p.n + i] = best;
    p.best_index[int64_t(split) * p.n + i] = best_index;
  } else if constexpr (kMode == kMMDMode) {
    p.sum_partial[(int64_t(split) * 2 + 0) * p.n + i] = row_sum_first;
    p.sum_partial[(int64_t(split) * 2 + 1) * p.n + i] = row_sum_second;
  }
}

// out[i, o] = factor * (row_weights ? w_i : 1) * sum_s partial[s][o][i], the splits added in order.
template <typename T>
__global__ void reduce_vector_kernel(const double* __restrict__ partial, int splits, int64_t width, int64_t n,
                                     const T* __restrict__ row_weights, double factor, T* __restrict__ out) {
  const int64_t total = n * width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / width, o = e - i * width;
    double s = 0.0;
    for (int sp = 0; sp < splits; ++sp) s += partial[(int64_t(sp) * width + o) * n + i];
    out[e] = T(factor * (row_weights ? double(row_weights[i]) : 1.0) * s);
  }
}

template <typename T>
__global__ void reduce_nearest_kernel(const T* __restrict__ best_d2, const int64_t* __restrict__ best_index,
                                      int splits, int64_t n, T* __restrict__ dist, int64_t* __restrict__ index) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T best = best_d2[i];
    int64_t at = best_index[i];
    for (int sp = 1; sp < splits; ++sp) {  // splits cover increasing column ranges: strict < keeps the first j
      const T v = best_d2[int64_t(sp) * n + i];
      if (v < best) best = v, at = best_index[int64_t(sp) * n + i];
    }
    dist[i] = sqrt_of(best > T(0) ? best : T(0));
    index[i] = at;
  }
}

// Fixed-shape block reduction: the same tree every run.
__device__ double block_sum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();
  return total;
}

// One block: T0 = sum_i wx_i S_xx(i), T2 = sum_i wx_i S_xy(i), T1 = sum_j wy_j S_yy(j), the row sums taken from
// the per-split partials in split order.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    mmd_terms_kernel(const double* __restrict__ sums_x, int splits_x, const T* __restrict__ wx, int64_t n,
                     const double* __restrict__ sums_y, int splits_y, const T* __restrict__ wy, int64_t m,
                     double* __restrict__ terms) {
  __shared__ double scratch[kReduceThreads];
  double t0 = 0.0, t1 = 0.0, t2 = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) {
    double xx = 0.0, xy = 0.0;
    for (int sp = 0; sp < splits_x; ++sp) {
      xx += sums_x[(int64_t(sp) * 2 + 0) * n + i];
      xy += sums_x[(int64_t(sp) * 2 + 1) * n + i];
    }
    t0 += double(wx[i]) * xx;
    t2 += double(wx[i]) * xy;
  }
  for (int64_t j = threadIdx.x; j < m; j += kReduceThreads) {
    double yy = 0.0;
    for (int sp = 0; sp < splits_y; ++sp) yy += sums_y[(int64_t(sp) * 2 + 0) * m + j];
    t1 += double(wy[j]) * yy;
  }
  t0 = block_sum(t0, scratch);
  t1 = block_sum(t1, scratch);
  t2 = block_sum(t2, scratch);
  if (threadIdx.x == 0) terms[0] = t0, terms[1] = t1, terms[2] = t2;
}

// ------------------------------------------------------------------------------------------- planning
struct PassPlan {
  int64_t rows = 0, tiles_first = 0, tiles_total = 0;
  int splits = 1;
  std::size_t vec_offset = 0, sum_offset = 0, best_offset = 0, index_offset = 0;
};

struct OpPlan {
  PassPlan pass[2];
  std::size_t bytes = 0;
};

std::size_t align_up(std::size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough (row block x split) blocks to fill the GPU a few times over; each split gets at least one tile and the
// partial results stay under kMaxSplitBytes.
int choose_splits(int64_t rows, int64_t row_block, int64_t tiles, std::size_t bytes_per_split, int sm_count) {
  const int64_t row_blocks = std::max<int64_t>(1, ceil_div(rows, row_block));
  const int64_t target = 4 * int64_t(std::max(sm_count, 1));
  int64_t splits = std::min<int64_t>(ceil_div(target, row_blocks), tiles);
  if (bytes_per_split > 0) splits = std::min<int64_t>(splits, int64_t(kMaxSplitBytes / bytes_per_split));
  return int(std::clamp<int64_t>(splits, 1, 65535));
}

// Lays out one pass's buffers after `offset`; returns the new end.
std::size_t plan_pass(PassPlan& pass, int64_t rows, int64_t cols_first, int64_t cols_second, int64_t out_width,
                      bool row_sums, bool nearest, std::size_t elem_size, int sm_count, std::size_t offset) {
  const bool single = elem_size == sizeof(float);
  const int64_t row_block = single ? Config<float>::kRows : Config<double>::kRows;
  const int64_t col_block = single ? Config<float>::kCols : Config<double>::kCols;
  pass.rows = rows;
  pass.tiles_first = ceil_div(cols_first, col_block);
  pass.tiles_total = pass.tiles_first + ceil_div(cols_second, col_block);
  const std::size_t per_split = std::size_t(rows) * (8 * std::size_t(out_width) + (row_sums ? 16 : 0) +
                                                     (nearest ? elem_size + 8 : 0));
  pass.splits = choose_splits(rows, row_block, pass.tiles_total, per_split, sm_count);
  const std::size_t s = std::size_t(pass.splits) * std::size_t(rows);
  pass.vec_offset = offset;
  offset = align_up(offset + s * std::size_t(out_width) * sizeof(double));
  pass.sum_offset = offset;
  offset = align_up(offset + (row_sums ? s * 2 * sizeof(double) : 0));
  pass.best_offset = offset;
  offset = align_up(offset + (nearest ? s * elem_size : 0));
  pass.index_offset = offset;
  return align_up(offset + (nearest ? s * sizeof(int64_t) : 0));
}

OpPlan make_plan(Op op, int64_t n, int64_t m, int64_t d, int64_t width, bool compute_grad, std::size_t elem_size,
                 int sm_count) {
  OpPlan plan;
  switch (op) {
    case Op::kNearest:
      plan.bytes = plan_pass(plan.pass[0], n, m, 0, 0, false, true, elem_size, sm_count, 0);
      break;
    case Op::kKernelMatmul:
      plan.bytes = plan_pass(plan.pass[0], n, m, 0, width, false, false, elem_size, sm_count, 0);
      break;
    case Op::kKernelPairGrad:
      plan.bytes = plan_pass(plan.pass[0], n, m, 0, d, false, false, elem_size, sm_count, 0);
      break;
    case Op::kMMD2Terms: {
      const int64_t grad_width = compute_grad ? d : 0;
      const std::size_t end = plan_pass(plan.pass[0], n, n, m, grad_width, true, false, elem_size, sm_count, 0);
      plan.bytes = plan_pass(plan.pass[1], m, m, compute_grad ? n : 0, grad_width, true, false, elem_size, sm_count,
                             end);
      break;
    }
  }
  return plan;
}

template <typename T>
PassArgs<T> base_args(const T* rows, int64_t n, int64_t d, const T* cols, int64_t m, const PassPlan& pass,
                      void* workspace) {
  PassArgs<T> a{};
  a.rows = rows;
  a.n = n;
  a.d = d;
  a.cols[0] = a.cols[1] = cols;
  a.m[0] = m;
  a.tiles_first = pass.tiles_first;
  a.tiles_total = pass.tiles_total;
  char* base = static_cast<char*>(workspace);
  a.vec_partial = reinterpret_cast<double*>(base + pass.vec_offset);
  a.sum_partial = reinterpret_cast<double*>(base + pass.sum_offset);
  a.best_d2 = reinterpret_cast<T*>(base + pass.best_offset);
  a.best_index = reinterpret_cast<int64_t*>(base + pass.index_offset);
  return a;
}

template <typename T, int kMode>
void run_pass(const PassArgs<T>& args, const PassPlan& pass, cudaStream_t stream) {
  if (pass.rows == 0) return;
  const dim3 grid(unsigned(ceil_div(pass.rows, Config<T>::kRows)), unsigned(pass.splits));
  pair_pass_kernel<T, kMode><<<grid, Config<T>::kRows, 0, stream>>>(args);
}

unsigned reduce_blocks(int64_t count) {
  return unsigned(std::clamp<int64_t>(ceil_div(count, kReduceThreads), 1, 65535));
}

}  // namespace

std::size_t workspace_bytes(Op op, int64_t n, int64_t m, int64_t d, int64_t width, bool compute_grad,
                            std::size_t elem_size, int sm_count) {
  return make_plan(op, n, m, d, width, compute_grad, elem_size, sm_count).bytes;
}

template <typename T>
cudaError_t launch_nearest(const T* x, const T* y, int64_t n, int64_t m, int64_t d, T* dist, int64_t* index,
                           void* workspace, int sm_count, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const OpPlan plan = make_plan(Op::kNearest, n, m, d, 0, false, sizeof(T), sm_count);
  const PassArgs<T> args = base_args(x, n, d, y, m, plan.pass[0], workspace);
  run_pass<T, kNearestMode>(args, plan.pass[0], stream);
  reduce_nearest_kernel<T><<<reduce_blocks(n), kReduceThreads, 0, stream>>>(args.best_d2, args.best_index,
                                                                             plan.pass[0].splits, n, dist, index);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_kernel_matmul(const T* x, const T* y, const T* v, int64_t n, int64_t m, int64_t d, int64_t k,
                                 const KernelSpec& spec, T* out, void* workspace, int sm_count, cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  const OpPlan plan = make_plan(Op::kKernelMatmul, n, m, d, k, false, sizeof(T), sm_count);
  cudaError_t err = cudaMemsetAsync(workspace, 0, plan.bytes, stream);
  if (err != cudaSuccess) return err;
  PassArgs<T> args = base_args(x, n, d, y, m, plan.pass[0], workspace);
  args.col_aux = v;
  args.out_width = k;
  args.coeffs = make_coeffs<T>(spec);
  run_pass<T, kMatmulMode>(args, plan.pass[0], stream);
  reduce_vector_kernel<T><<<reduce_blocks(n * k), kReduceThreads, 0, stream>>>(
      args.vec_partial, plan.pass[0].splits, k, n, static_cast<const T*>(nullptr), 1.0, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_kernel_pair_grad(const T* a, const T* b, const T* A, const T* B, int64_t n, int64_t m, int64_t d,
                                    int64_t k, const KernelSpec& spec, T* out, void* workspace, int sm_count,
                                    cudaStream_t stream) {
  if (n == 0 || d == 0) return cudaSuccess;
  const OpPlan plan = make_plan(Op::kKernelPairGrad, n, m, d, k, false, sizeof(T), sm_count);
  cudaError_t err = cudaMemsetAsync(workspace, 0, plan.bytes, stream);
  if (err != cudaSuccess) return err;
  PassArgs<T> args = base_args(a, n, d, b, m, plan.pass[0], workspace);
  args.row_aux = A;
  args.col_aux = B;
  args.aux_width = k;
  args.out_width = d;
  args.coeffs = make_coeffs<T>(spec);
  run_pass<T, kPairGradMode>(args, plan.pass[0], stream);
  reduce_vector_kernel<T><<<reduce_blocks(n * d), kReduceThreads, 0, stream>>>(
      args.vec_partial, plan.pass[0].splits, d, n, static_cast<const T*>(nullptr), 1.0, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_mmd2_terms(const T* x, const T* y, const T* wx, const T* wy, int64_t n, int64_t m, int64_t d,
                              const double coef[3], const KernelSpec& spec, bool compute_grad, double* terms, T* gx,
                              T* gy, void* workspace, int sm_count, cudaStream_t stream) {
  const OpPlan plan = make_plan(Op::kMMD2Terms, n, m, d, 0, compute_grad, sizeof(T), sm_count);
  cudaError_t err = cudaMemsetAsync(workspace, 0, plan.bytes, stream);
  if (err != cudaSuccess) return err;
  const int64_t grad_width = compute_grad ? d : 0;
  const KernelCoeffs<T> coeffs = make_coeffs<T>(spec);

  // rows x against columns [x | y]: T0 and T2 row sums, gx
  PassArgs<T> on_x = base_args(x, n, d, x, n, plan.pass[0], workspace);
  on_x.cols[1] = y;
  on_x.m[1] = m;
  on_x.col_weights[0] = wx;
  on_x.col_weights[1] = wy;
  on_x.grad_scale[0] = T(2.0 * coef[0]);
  on_x.grad_scale[1] = T(coef[2]);
  on_x.out_width = grad_width;
  on_x.coeffs = coeffs;
  run_pass<T, kMMDMode>(on_x, plan.pass[0], stream);

  // rows y against columns [y | x] (x only for gy): T1 row sums, gy
  PassArgs<T> on_y = base_args(y, m, d, y, m, plan.pass[1], workspace);
  on_y.cols[1] = x;
  on_y.m[1] = n;
  on_y.col_weights[0] = wy;
  on_y.col_weights[1] = wx;
  on_y.grad_scale[0] = T(2.0 * coef[1]);
  on_y.grad_scale[1] = T(coef[2]);
  on_y.out_width = grad_width;
  on_y.coeffs = coeffs;
  run_pass<T, kMMDMode>(on_y, plan.pass[1], stream);

  mmd_terms_kernel<T><<<1, kReduceThreads, 0, stream>>>(on_x.sum_partial, plan.pass[0].splits, wx, n,
                                                        on_y.sum_partial, plan.pass[1].splits, wy, m, terms);
  if (compute_grad && d > 0) {
    if (n > 0)
      reduce_vector_kernel<T><<<reduce_blocks(n * d), kReduceThreads, 0, stream>>>(
          on_x.vec_partial, plan.pass[0].splits, d, n, wx, -1.0, gx);
    if (m > 0)
      reduce_vector_kernel<T><<<reduce_blocks(m * d), kReduceThreads, 0, stream>>>(
          on_y.vec_partial, plan.pass[1].splits, d, m, wy, -1.0, gy);
  }
  return cudaGetLastError();
}

#define TLKIT_INSTANTIATE(T)                                                                                        \
  template cudaError_t launch_nearest<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, int64_t*, void*, int,   \
                                         cudaStream_t);                                                             \
  template cudaError_t launch_kernel_matmul<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t,    \
                                               const KernelSpec&, T*, void*, int, cudaStream_t);                    \
  template cudaError_t launch_kernel_pair_grad<T>(const T*, const T*, const T*, const T*, int64_t, int64_t,         \
                                                  int64_t, int64_t, const KernelSpec&, T*, void*, int,              \
                                                  cudaStream_t);                                                    \
  template cudaError_t launch_mmd2_terms<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,      \
                                            const double[3], const KernelSpec&, bool, double*, T*, T*, void*, int,  \
                                            cudaStream_t);
TLKIT_INSTANTIATE(float)
TLKIT_INSTANTIATE(double)
#undef TLKIT_INSTANTIATE

}  // namespace tlkit_cuda
