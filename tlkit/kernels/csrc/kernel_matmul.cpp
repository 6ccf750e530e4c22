// CPU kernels of tlkit::kernel_matmul and its backward tlkit::kernel_pair_grad (schemas in ops.cpp).
#include <torch/library.h>

#include "pairwise.h"

namespace tlkit::cpu {
namespace {

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
    if (GEMM) dt.guard = make_refine_guard(kp, KIND, false, false, d);
    T* kvals = scratch<T>(keep, (blas_contract ? row_block : 1) * tile);
    T* tbuf = scratch<T>(keep, tile);
    T* cbuf = scratch<T>(keep, tile);  // the ladder's last term
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
          const auto r2_at = [&](int64_t j) { return DistanceTile<T, GEMM>::r2_at(r, j); };
          if (k == 1) {  // a kernel sum: the weighted sum in the kernel's loop
            acc[ii] += eval_row<T, KIND, false, true>(kp, nj, r2_at, tbuf, kr, nullptr, cbuf, v_cols + j0);
            continue;
          }
          eval_row<T, KIND, false>(kp, nj, r2_at, tbuf, kr, nullptr, cbuf);
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
// kernel_matmul_multi: out[s]_i = sum_j k_s(x_i, y_j) v_j for every bandwidth s separately (no averaging), from one
// distance per pair and the ladder's squarings (pairwise.h).  out (S, n, k).
template <typename T, int KIND, bool GEMM>
Tensor kernel_matmul_multi_impl(const Tensor& x, const Tensor& y, const Tensor& v, const KernelParams<T>& kp) {
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1), k = v.size(1), S = kp.count;
  const std::vector<double> centre = GEMM ? common_mean(x, y) : std::vector<double>(d, 0.0);
  const int threads = threads_for(n * m * (d + S * k));
  const Cloud<T> X = make_cloud<T>(x, GEMM, centre, threads), Y = make_cloud<T>(y, GEMM, centre, threads);
  const bool blas_contract = k > kGemmMinColumns;
  const T* vs = v.data_ptr<T>();
  Tensor v_cols_t;
  const T* v_cols = blas_contract ? nullptr : transposed<T>(v, v_cols_t);  // (k, m)
  Tensor out = at::empty({S, n, k}, x.options());
  T* out_data = out.data_ptr<T>();
  const RowBlocks rb = row_blocks<GEMM>(n, threads);
  const int64_t tile = rb.tile, row_block = rb.size;
  const int64_t plane = (blas_contract ? row_block : 1) * tile;  // one bandwidth's kernel values

#pragma omp parallel num_threads(threads)
  {
    std::vector<Tensor> keep;
    DistanceTile<T, GEMM> dt(X, Y, row_block, tile, keep);
    if (GEMM) dt.guard = make_refine_guard(kp, KIND, false, true, d);
    T* kvals = scratch<T>(keep, S * plane);
    T* tbuf = scratch<T>(keep, tile);
    T* contracted = blas_contract ? scratch<T>(keep, row_block * k) : nullptr;
    std::vector<double> acc(S * row_block * k);
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
          eval_terms<T, KIND>(kp, nj, [&](int64_t j) { return DistanceTile<T, GEMM>::r2_at(r, j); }, tbuf, kr,
                              plane);
          if (!blas_contract) {
            for (int64_t sg = 0; sg < S; ++sg) {
              const T* ks = kr + sg * plane;
              for (int64_t c = 0; c < k; ++c) {
                const T* vj = v_cols + c * m + j0;
                T sum = 0;
#pragma omp simd reduction(+ : sum)
                for (int64_t j = 0; j < nj; ++j) sum += ks[j] * vj[j];
                acc[(sg * row_block + ii) * k + c] += sum;
              }
            }
          }
        }
        if (blas_contract) {
          for (int64_t sg = 0; sg < S; ++sg) {
            matmul_into(contracted, matrix_view(kvals + sg * plane, ni, nj), matrix_view(vs + j0 * k, nj, k));
            double* a = acc.data() + sg * row_block * k;
            for (int64_t e = 0; e < ni * k; ++e) a[e] += contracted[e];
          }
        }
      }
      for (int64_t sg = 0; sg < S; ++sg)
        for (int64_t e = 0; e < ni * k; ++e)
          out_data[(sg * n + i0) * k + e] = static_cast<T>(acc[sg * row_block * k + e]);
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
    if (GEMM) dt.guard = make_refine_guard(kp, KIND, true, false, d);
    dt.record_refined = GEMM;
    std::vector<DirectTerm<T>> direct;  // GEMM form: this tile's recomputed pairs
    T* coef = scratch<T>(keep, (blas_coef ? row_block : 1) * tile);   // A_i . B_j
    T* weights = scratch<T>(keep, (GEMM ? row_block : 1) * tile);     // (A_i . B_j) phi_ij
    T* moment = GEMM ? scratch<T>(keep, row_block * d) : nullptr;      // weights @ Q_J
    T* tbuf = scratch<T>(keep, tile);
    T* cbuf = scratch<T>(keep, tile);  // the ladder's last term
    T* kbuf = scratch<T>(keep, tile);
    std::vector<double> acc(row_block * d), row_weight(row_block);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < rb.count; ++blk) {
      const int64_t i0 = blk * row_block, ni = std::min(row_block, n - i0);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j0 = 0; j0 < m; j0 += tile) {
        const int64_t nj = std::min(tile, m - j0);
        dt.begin(i0, ni, j0, nj, false);
        direct.clear();
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
                                  wr, cbuf);
          if (GEMM) {
            for (const int32_t j : dt.refined) {
              direct.push_back({static_cast<int32_t>(ii), j, wr[j] * cr[j]});
              wr[j] = T(0);  // its term is added from direct differences below
            }
          }
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
          for (const DirectTerm<T>& e : direct)
            add_difference(acc.data() + e.row * d, e.phi, P.input + (i0 + e.row) * d, Q.input + (j0 + e.col) * d, d);
        }
      }
      for (int64_t e = 0; e < ni * d; ++e) out_data[i0 * d + e] = static_cast<T>(acc[e]);
    }
  }
  return out;
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

Tensor kernel_matmul_multi(const Tensor& x, const Tensor& y, const Tensor& v, at::ArrayRef<double> sigmas,
                           int64_t kernel) {
  check_pair(x, y);
  check_cloud(v, "v", -1, x.scalar_type());
  TORCH_CHECK(v.size(0) == y.size(0) && v.size(1) >= 1, "tlkit: v has shape ", v.sizes(), ", expected (",
              y.size(0), ", >=1)");
  const bool gemm = use_gemm_form(x.size(1));
  return TLKIT_DISPATCH(x.scalar_type(), kernel, gemm, [&] {
    return kernel_matmul_multi_impl<T, KIND, GEMM>(x, y, v, make_kernel_params<T>(sigmas, kernel));
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

}  // namespace
}  // namespace tlkit::cpu

TORCH_LIBRARY_IMPL(tlkit, CPU, m) {
  m.impl("kernel_matmul", &tlkit::cpu::kernel_matmul);
  m.impl("kernel_matmul_multi", &tlkit::cpu::kernel_matmul_multi);
  m.impl("kernel_pair_grad", &tlkit::cpu::kernel_pair_grad);
}
