// CPU kernel of tlkit::mmd2_terms (schema in ops.cpp).
#include <torch/library.h>

#include "pairwise.h"

namespace tlkit::cpu {
namespace {

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
    if (GEMM) dt.guard = make_refine_guard(kp, KIND, GRAD, false, d);
    dt.record_refined = GEMM && GRAD;
    std::vector<DirectTerm<T>> direct;  // GEMM form: this tile's recomputed pairs
    double* acc = GRAD ? acc_all + static_cast<int64_t>(omp_get_thread_num()) * N * d : nullptr;
    // direct form: per-tile column accumulators (d, tile); GEMM form: phi tile in dt.dots, moments (tile, d)
    T* col_acc = GRAD && !GEMM ? scratch<T>(keep, d * tile) : nullptr;
    T* tbuf = scratch<T>(keep, tile);
    T* kbuf = scratch<T>(keep, tile);
    T* cbuf = scratch<T>(keep, tile);  // the ladder's last term
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
      direct.clear();
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
        if (!GRAD) {
          tile_sum += static_cast<double>(wi) * eval_row<T, KIND, false, true>(kp, nj, r2_at, tbuf, kbuf, nullptr,
                                                                               cbuf, wq);
          continue;
        }
        T* phi_row = GEMM ? dt.dots + ii * nj : phi_buf;  // GEMM: phi overwrites the consumed r^2 row
        const T s = eval_row<T, KIND, true, true>(kp, nj, r2_at, tbuf, kbuf, phi_row, cbuf, wq);
        if (diagonal) phi_row[ii] = T(0);  // a_i - a_i = 0 exactly; the expanded GEMM form would leave rounding
        if (GEMM) {
          for (const int32_t j : dt.refined) {
            direct.push_back({static_cast<int32_t>(ii), j, phi_row[j]});
            phi_row[j] = T(0);  // its kernel value stays in kbuf; its gradient term is added directly below
          }
        }
        T wsum = 0;
#pragma omp simd reduction(+ : wsum)
        for (int64_t j = 0; j < nj; ++j) {
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
        for (const DirectTerm<T>& e : direct) {
          const T* p = P.input + (i0 + e.row) * d;
          const T* q = Q.input + (j0 + e.col) * d;
          add_difference(acc + (p_offset + i0 + e.row) * d, scale * wQ[j0 + e.col] * e.phi, p, q, d);
          if (column_side) add_difference(acc + (q_offset + j0 + e.col) * d, scale * wP[i0 + e.row] * e.phi, q, p, d);
        }
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
}  // namespace tlkit::cpu

TORCH_LIBRARY_IMPL(tlkit, CPU, m) {
  m.impl("mmd2_terms", &tlkit::cpu::mmd2_terms);
}
