// CPU kernel of tlkit::nearest (schema in ops.cpp).
#include <torch/library.h>

#include "pairwise.h"

namespace tlkit::cpu {
namespace {

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


std::tuple<Tensor, Tensor> nearest(const Tensor& x, const Tensor& y) {
  check_pair(x, y);
  const bool gemm = use_gemm_form(x.size(1));
  return TLKIT_DISPATCH(x.scalar_type(), 0, gemm, [&] { return nearest_impl<T, GEMM>(x, y); });
}

}  // namespace
}  // namespace tlkit::cpu

TORCH_LIBRARY_IMPL(tlkit, CPU, m) {
  m.impl("nearest", &tlkit::cpu::nearest);
}
