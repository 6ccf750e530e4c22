"""Kernel mean matching (Huang et al., 2007), solved matrix-free on the fused kernel-matrix product."""
from __future__ import annotations

import math

import torch
from sklearn.base import BaseEstimator

from .._validation import check_bandwidths, check_choice, check_pair, check_positive, check_positive_int, like_input
from ..kernels import kernel_sum, median_bandwidth
from ..kernels.ops import KERNELS, MAX_BANDWIDTHS, kernel_matmul_unchecked

__all__ = ["KMM"]


def _clipped_sums(v: torch.Tensor, upper_bound: float, shifts: torch.Tensor) -> torch.Tensor:
    r"""$f(\lambda) = \sum_i \operatorname{clip}(v_i - \lambda, 0, B)$ at every ``shifts`` entry, vectorised:
    $f(\lambda) = \sum_{v_i > \lambda} (v_i - \lambda) - \sum_{v_i - B > \lambda} (v_i - B - \lambda)$."""
    def excess(points: torch.Tensor) -> torch.Tensor:  # sum_i max(points_i - lambda, 0)
        ordered = points.sort().values
        prefix = torch.cat([ordered.new_zeros(1), ordered.cumsum(0)])
        index = torch.searchsorted(ordered, shifts, right=True)
        return (prefix[-1] - prefix[index]) - shifts * (points.numel() - index)
    return excess(v) - excess(v - upper_bound)


def project_box_slab(v: torch.Tensor, upper_bound: float, sum_low: float, sum_high: float) -> torch.Tensor:
    r"""Euclidean projection onto $\{\beta : 0 \le \beta_i \le B,\ s_- \le \sum_i \beta_i \le s_+\}$.

    The projection is $\beta_i = \operatorname{clip}(v_i - \lambda, 0, B)$ with $\lambda = 0$ when the
    clipped vector already satisfies the sum constraint; otherwise $f(\lambda) = \sum_i
    \operatorname{clip}(v_i - \lambda, 0, B)$ is piecewise linear and non-increasing with breakpoints
    $v_i$ and $v_i - B$, so the $\lambda$ with $f(\lambda)$ on the violated bound is found
    exactly by evaluating $f$ at the sorted breakpoints and interpolating. O(n log n), no Python loop.
    """
    clipped = v.clamp(0.0, upper_bound)
    total = float(clipped.sum())
    if sum_low <= total <= sum_high:
        return clipped
    target = sum_high if total > sum_high else sum_low
    breakpoints = torch.cat([v - upper_bound, v]).sort().values
    values = _clipped_sums(v, upper_bound, breakpoints)  # non-increasing, from n B down to 0
    k = int(torch.searchsorted(-values, torch.tensor([-target], dtype=values.dtype, device=values.device)))
    if k == 0:
        shift = float(breakpoints[0])
    else:
        left, right = float(breakpoints[k - 1]), float(breakpoints[min(k, len(breakpoints) - 1)])
        f_left, f_right = float(values[k - 1]), float(values[min(k, len(values) - 1)])
        shift = left if f_left == f_right else left + (f_left - target) * (right - left) / (f_left - f_right)
    return (v - shift).clamp(0.0, upper_bound)


class KMM(BaseEstimator):
    r"""Kernel mean matching: source weights that make the weighted source mean embedding match the target's.

    Huang, Smola, Gretton, Borgwardt & Schölkopf (2007), "Correcting sample selection bias by unlabeled data":

    $$\min_{\beta}\ \tfrac12 \beta^\top K \beta - \kappa^\top \beta
      \quad \text{s.t.} \quad 0 \le \beta_i \le B, \quad \Big|\sum_{i=1}^{n_s} \beta_i - n_s\Big| \le n_s \epsilon,$$

    with $K_{ii'} = k(x_i^s, x_{i'}^s)$ and $\kappa_i = \frac{n_s}{n_t} \sum_{j=1}^{n_t} k(x_i^s, x_j^t)$.
    It is the squared RKHS distance $\lVert \frac{1}{n_s}\sum_i \beta_i \phi(x_i^s) - \frac{1}{n_t}\sum_j
    \phi(x_j^t)\rVert^2$ times $n_s^2/2$, up to a constant. Defaults follow the paper: $B = 1000$,
    $\epsilon = (\sqrt{n_s} - 1)/\sqrt{n_s}$, Gaussian kernel (bandwidth: median heuristic).

    Solver: accelerated projected gradient (FISTA with adaptive restart). Each iteration needs one product
    $K\beta$ from the fused :func:`tlkit.kernel_matmul` kernel, so $K$ is never formed — memory is O(n_s) and it runs at
    n_s = 100,000; $K$ is symmetric non-negative, so its largest row sum bounds $\lambda_{\max}(K)$ and
    gives the step $1/L$. Stops when the gradient-mapping norm falls below ``tol`` times
    $\lVert\kappa\rVert$, or after ``max_iter`` iterations (``converged_`` says which). Inputs and
    parameters are validated once and the points converted to float64 once; the iterations call the kernel below
    the validation (``kernel_matmul_unchecked``), in the solver's precision, with no conversion per iteration.

    Shapes: ``fit(Xs (n_s, d), Xt (n_t, d))``; ``weights_`` (n_s,) as numpy for numpy input, torch for torch.
    Fitted attributes: ``weights_``, ``sigma_``, ``eps_``, ``objective_``, ``n_iter_``, ``converged_``.
    Used in lesson 05.
    """

    def __init__(self, sigma=None, kernel: str = "gaussian", B: float = 1000.0, eps: float | None = None,
                 max_iter: int = 1000, tol: float = 1e-5, backend: str = "auto"):
        self.sigma = sigma
        self.kernel = kernel
        self.B = B
        self.eps = eps
        self.max_iter = max_iter
        self.tol = tol
        self.backend = backend

    def fit(self, Xs, Xt):
        xs, xt = check_pair(Xs, Xt, dtype=torch.float64)
        n_s, n_t = xs.shape[0], xt.shape[0]
        upper_bound = check_positive(self.B, "B")
        eps = (math.sqrt(n_s) - 1.0) / math.sqrt(n_s) if self.eps is None else check_positive(self.eps, "eps", True)
        if n_s * upper_bound < n_s * (1.0 - eps):
            raise ValueError(f"B={upper_bound} is too small: need B >= 1 - eps = {1.0 - eps} for a feasible problem")
        max_iter = check_positive_int(self.max_iter, "max_iter")
        tol = check_positive(self.tol, "tol")
        sigma = median_bandwidth(xs, xt) if self.sigma is None else self.sigma
        sigmas = check_bandwidths(sigma, max_count=MAX_BANDWIDTHS)
        kernel = check_choice(self.kernel, "kernel", KERNELS)

        def kernel_product(v: torch.Tensor) -> torch.Tensor:  # K v for v (n_s,), float64 in and out
            return kernel_matmul_unchecked(xs, xs, v[:, None], sigmas, kernel, self.backend)[:, 0]

        kappa = kernel_sum(xs, xt, sigmas, kernel, backend=self.backend) * (n_s / n_t)
        ones = torch.ones(n_s, dtype=torch.float64, device=xs.device)
        row_sums = kernel_product(ones)
        lipschitz = float(row_sums.max())  # >= lambda_max(K) for a non-negative symmetric matrix
        sum_low, sum_high = n_s * (1.0 - eps), n_s * (1.0 + eps)

        beta = project_box_slab(ones, upper_bound, sum_low, sum_high)
        k_beta = row_sums if torch.equal(beta, ones) else kernel_product(beta)
        y, k_y, momentum_t = beta, k_beta, 1.0
        threshold = tol * float(kappa.norm())
        converged, iteration = False, 0
        for iteration in range(1, max_iter + 1):
            gradient = k_y - kappa
            beta_next = project_box_slab(y - gradient / lipschitz, upper_bound, sum_low, sum_high)
            k_beta_next = kernel_product(beta_next)
            step = beta_next - y
            if lipschitz * float(step.norm()) <= threshold:
                beta, k_beta, converged = beta_next, k_beta_next, True
                break
            if float(torch.dot(-step, beta_next - beta)) > 0:  # O'Donoghue-Candes restart: momentum points uphill
                momentum_t = 1.0
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum_t**2))
            mix = (momentum_t - 1.0) / t_next
            y = beta_next + mix * (beta_next - beta)
            k_y = k_beta_next + mix * (k_beta_next - k_beta)
            beta, k_beta, momentum_t = beta_next, k_beta_next, t_next

        self.sigma_ = sigma
        self.eps_ = eps
        self.objective_ = float(0.5 * torch.dot(beta, k_beta) - torch.dot(kappa, beta))
        self.n_iter_ = iteration
        self.converged_ = converged
        self.n_features_in_ = xs.shape[1]
        self.weights_ = like_input(beta, Xs)
        return self
