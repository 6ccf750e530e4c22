"""KLIEP: the Kullback-Leibler importance estimation procedure (Sugiyama et al., 2008)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._validation import (check_2d, check_in_range, check_pair, check_positive, check_positive_int,
                           check_random_state, like_input, to_tensor)
from ..kernels import kernel_matmul, kernel_sum, median_bandwidth

__all__ = ["KLIEP"]

DEFAULT_SIGMA_FACTORS = (0.25, 0.5, 1.0, 2.0)


def kliep_alpha(design: torch.Tensor, source_means: torch.Tensor, max_iter: int, tol: float):
    r"""Maximise $\sum_j \log (A\alpha)_j$ s.t. $b^\top\alpha = 1$, $\alpha \ge 0$.

    With $\gamma_l = b_l \alpha_l$ the feasible set is the probability simplex and the problem is a
    mixture-weight likelihood with components $A_{jl}/b_l$, so the EM fixed point

    $$\gamma_l \leftarrow \gamma_l\, \frac{1}{n} \sum_{j=1}^{n}
      \frac{A_{jl}/b_l}{\sum_{l'} \gamma_{l'} A_{jl'}/b_{l'}}$$

    increases the objective monotonically to the global optimum of this concave problem (no step size, unlike
    the paper's projected gradient ascent). It stops when ten iterations raise the mean log-likelihood
    $\frac1n \sum_j \log (A\alpha)_j$ by less than ``tol``. Returns (alpha, number of iterations).
    """
    a = design.detach().cpu().numpy().astype(np.float64)
    b = source_means.detach().cpu().numpy().astype(np.float64)
    components = a / b  # A_jl / b_l
    gamma = np.full(b.shape, 1.0 / len(b))
    iteration, previous = 0, -np.inf
    for iteration in range(1, max_iter + 1):
        mixture = np.maximum(components @ gamma, 1e-300)
        if iteration % 10 == 1:
            log_likelihood = np.log(mixture).mean()
            if log_likelihood - previous <= tol:
                break
            previous = log_likelihood
        gamma = gamma * (components.T @ (1.0 / mixture)) / len(a)
        gamma /= gamma.sum()
    return torch.from_numpy(gamma / b).to(design.device), iteration


class KLIEP(BaseEstimator):
    r"""Importance weights $w(x) = p_t(x)/p_s(x)$ as a kernel model fitted by maximum likelihood.

    Sugiyama, Nakajima, Kashima, von Bünau & Kawanabe (2008). The model is
    $\hat w(x) = \sum_{l=1}^{b} \alpha_l\, k_\sigma(x, c_l)$ with centres $c_l$ drawn from the target
    sample, and $\alpha$ solves

    $$\max_{\alpha \ge 0}\ \sum_{j=1}^{n_t} \log \hat w(x_j^t)
      \quad \text{s.t.} \quad \frac{1}{n_s}\sum_{i=1}^{n_s} \hat w(x_i^s) = 1,$$

    i.e. it minimises $\mathrm{KL}(p_t \,\|\, \hat w\, p_s)$. The bandwidth is chosen by likelihood
    cross-validation: for each candidate $\sigma$, fit on $K-1$ folds of the target sample and score
    $J = \frac{1}{|\mathcal{X}_r|}\sum_{x \in \mathcal{X}_r} \log \hat w_r(x)$ on the held-out fold.
    The concave problem is solved by an EM fixed point (see :func:`kliep_alpha`), which reaches the optimum of
    the paper's projected gradient ascent without a step size to tune.

    ``sigma`` fixes the bandwidth (no CV); otherwise the candidates are ``sigma_grid`` or the median heuristic
    times (1/4, 1/2, 1, 2).

    Shapes: ``fit(Xs (n_s, d), Xt (n_t, d))``; ``weights_`` (n_s,); ``predict_weights(X (n, d))`` → (n,).
    Fitted attributes: ``weights_``, ``sigma_``, ``centers_`` (b, d), ``alpha_`` (b,), ``cv_scores_``
    (one mean held-out log-likelihood per candidate, or None without CV). Used in lesson 05.
    """

    def __init__(self, sigma: float | None = None, sigma_grid=None, n_centers: int = 100, cv: int = 5,
                 kernel: str = "gaussian", max_iter: int = 5000, tol: float = 1e-7, random_state=None,
                 backend: str = "auto"):
        self.sigma = sigma
        self.sigma_grid = sigma_grid
        self.n_centers = n_centers
        self.cv = cv
        self.kernel = kernel
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.backend = backend

    def _fit_alpha(self, xs, xt, centers, sigma, max_iter, tol):
        design = kernel_matmul(xt, centers, torch.eye(centers.shape[0], dtype=xt.dtype, device=xt.device),
                               sigma, self.kernel, self.backend)
        source_means = kernel_sum(centers, xs, sigma, self.kernel, backend=self.backend) / xs.shape[0]
        floor = 1e-12 * float(source_means.max()) if float(source_means.max()) > 0 else 1e-300
        return kliep_alpha(design, source_means.clamp_min(floor), max_iter, tol)

    def _ratio(self, x, centers, alpha, sigma):
        return kernel_matmul(x, centers, alpha, sigma, self.kernel, self.backend)

    def fit(self, Xs, Xt):
        xs, xt = check_pair(Xs, Xt, dtype=torch.float64)
        n_centers = check_positive_int(self.n_centers, "n_centers")
        max_iter = check_positive_int(self.max_iter, "max_iter")
        tol = check_positive(self.tol, "tol")
        rng = check_random_state(self.random_state)
        n_t = xt.shape[0]
        if self.sigma is not None:
            candidates, scores = [check_positive(self.sigma, "sigma")], None
        else:
            if self.sigma_grid is None:
                median = median_bandwidth(xs, xt)
                candidates = [median * f for f in DEFAULT_SIGMA_FACTORS]
            else:
                candidates = [check_positive(s, "sigma_grid") for s in np.atleast_1d(self.sigma_grid).tolist()]
            cv = check_in_range(self.cv, "cv", 2, n_t, integer=True)
            folds = np.array_split(rng.permutation(n_t), cv)
            scores = []
            for sigma in candidates:
                fold_scores = []
                for held_out in folds:
                    train = torch.from_numpy(np.setdiff1d(np.arange(n_t), held_out)).to(xt.device)
                    xt_train = xt[train]
                    centers = xt_train[self._center_indices(xt_train.shape[0], n_centers, rng)]
                    alpha, _ = self._fit_alpha(xs, xt_train, centers, sigma, max_iter, tol)
                    ratio = self._ratio(xt[torch.from_numpy(held_out).to(xt.device)], centers, alpha, sigma)
                    fold_scores.append(float(ratio.clamp_min(1e-300).log().mean()))
                scores.append(float(np.mean(fold_scores)))
        best_sigma = candidates[int(np.argmax(scores))] if scores is not None else candidates[0]
        centers = xt[self._center_indices(n_t, n_centers, rng)]
        alpha, n_iter = self._fit_alpha(xs, xt, centers, best_sigma, max_iter, tol)

        self.sigma_ = best_sigma
        self.sigma_candidates_ = candidates
        self.cv_scores_ = scores
        self.centers_ = centers
        self.alpha_ = alpha
        self.n_iter_ = n_iter
        self.n_features_in_ = xs.shape[1]
        self.weights_ = like_input(self._ratio(xs, centers, alpha, best_sigma), Xs)
        return self

    @staticmethod
    def _center_indices(n: int, n_centers: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(np.sort(rng.choice(n, size=min(n_centers, n), replace=False)))

    def predict_weights(self, X):
        r"""The fitted ratio $\hat w(x) = \sum_l \alpha_l k_\sigma(x, c_l)$ at the rows of ``X`` (n, d) → (n,)."""
        check_is_fitted(self)
        check_2d(X, "X")
        x = to_tensor(X, "X", dtype=torch.float64).to(self.centers_.device)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {x.shape[1]}")
        return like_input(self._ratio(x, self.centers_, self.alpha_, self.sigma_), X)
