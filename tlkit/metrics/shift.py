"""Domain-shift metrics: the MMD permutation test, the proxy A-distance and the CORAL distance."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._validation import (check_bandwidths, check_choice, check_in_range, check_pair, check_positive_int,
                           check_random_state, like_input, to_numpy)
from ..kernels import median_bandwidth
from ..kernels.ops import COMPUTE_DTYPES, KERNELS, MAX_BANDWIDTHS, kernel_matmul_unchecked

__all__ = ["mmd_test", "proxy_a_distance", "coral_distance"]


def _unbiased_statistics(kz: torch.Tensor, assignments: torch.Tensor, row_sums: torch.Tensor, total: float,
                         n: int, m: int, diagonal: float) -> torch.Tensor:
    r"""Unbiased MMD² for each split given by a column of ``assignments`` (1 = first sample), from $K a$.

    With $a$ the indicator of the first sample, $b = 1 - a$, $r = K\mathbf 1$ and
    $T = \mathbf 1^\top K \mathbf 1$: $a^\top K b = a^\top r - a^\top K a$ and
    $b^\top K b = T - 2 a^\top r + a^\top K a$; the diagonals $k(z, z)$ are removed analytically.
    """
    a = assignments.to(torch.float64)
    within_first = (a * kz).sum(dim=0)  # a^T K a
    first_rows = a.T @ row_sums  # a^T r
    cross = first_rows - within_first
    within_second = total - 2.0 * first_rows + within_first
    return ((within_first - n * diagonal) / (n * (n - 1)) + (within_second - m * diagonal) / (m * (m - 1))
            - 2.0 * cross / (n * m))


def mmd_test(Xs, Xt, n_permutations: int = 1000, sigma=None, kernel: str = "gaussian", random_state=None,
             batch_size: int = 256, return_null: bool = False, backend: str = "auto"):
    r"""Permutation two-sample test of $H_0: P = Q$ on the unbiased MMD² (Gretton et al., 2012).

    $$T = \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne i'} k(x_i, x_{i'})
      + \frac{1}{m(m-1)} \sum_{j \ne j'} k(y_j, y_{j'}) - \frac{2}{nm} \sum_{i,j} k(x_i, y_j),
      \qquad p = \frac{1 + \#\{b : T_b \ge T\}}{1 + B}$$

    where $T_b$ is the statistic after randomly re-splitting the pooled sample $z = x \cup y$ into
    groups of sizes $n$ and $m$. Counting the observed split among the $B + 1$ makes the test
    exact at any $B$ and the p-value never 0 (its smallest value is $1/(1+B)$).

    No kernel is recomputed per permutation and no $N \times N$ matrix is formed ($N = n + m$):
    each split's indicator $a \in \{0,1\}^N$ is a column of $V$, the fused
    :func:`tlkit.kernel_matmul` returns $K V$ for ``batch_size`` permutations at once, and every
    $T_b$ is a quadratic form in $a$ (see :func:`_unbiased_statistics`). The inputs are validated once and
    every batch calls the kernel below the validation (``kernel_matmul_unchecked``); the split indicators are built
    directly in the kernel's dtype (0 and 1 are exact in float32 too) and the quadratic forms accumulate in float64.

    ``sigma=None`` uses :func:`tlkit.median_bandwidth` on the pooled sample (label-free, so the test stays exact);
    a sequence of bandwidths averages the kernels.

    Shapes: ``Xs`` (n, d), ``Xt`` (m, d), n, m ≥ 2 → ``(statistic, p_value)`` as floats, plus the null
    statistics (B,) when ``return_null=True`` (numpy for numpy input, torch on the input's device for torch).
    Used in lesson 04.
    """
    xs, xt = check_pair(Xs, Xt, min_samples=2)
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    batch_size = check_positive_int(batch_size, "batch_size")
    rng = check_random_state(random_state)
    n, m = xs.shape[0], xt.shape[0]
    pooled = torch.cat([xs, xt])
    if pooled.dtype not in COMPUTE_DTYPES:  # half precision computes in float32, as the public ops do
        pooled = pooled.float()
    sigmas = check_bandwidths(median_bandwidth(xs, xt) if sigma is None else sigma, max_count=MAX_BANDWIDTHS)
    kernel = check_choice(kernel, "kernel", KERNELS)
    device, dtype = pooled.device, pooled.dtype

    def kernel_product(v: torch.Tensor, points: torch.Tensor = pooled) -> torch.Tensor:  # K(points, points) v
        return kernel_matmul_unchecked(points, points, v, sigmas, kernel, backend).to(torch.float64)

    one = torch.ones(1, 1, dtype=dtype, device=device)
    diagonal = float(kernel_product(one, pooled[:1])[0, 0])  # k(z, z), 1 for the Gaussian and Laplacian
    observed = torch.zeros(n + m, 1, dtype=dtype, device=device)
    observed[:n] = 1.0
    first_pass = kernel_product(torch.cat([torch.ones_like(observed), observed], dim=1))
    row_sums = first_pass[:, 0]
    total = float(row_sums.sum())
    statistic = float(_unbiased_statistics(first_pass[:, 1:], observed, row_sums, total, n, m, diagonal)[0])

    template = np.zeros(n + m, dtype=bool)
    template[:n] = True
    null = []
    for start in range(0, n_permutations, batch_size):
        count = min(batch_size, n_permutations - start)
        splits = rng.permuted(np.tile(template, (count, 1)), axis=1).T  # (N, count), one split per column
        assignments = torch.from_numpy(splits).to(device=device, dtype=dtype)
        null.append(_unbiased_statistics(kernel_product(assignments), assignments, row_sums, total, n, m, diagonal))
    null = torch.cat(null)
    p_value = (1.0 + float((null >= statistic).sum())) / (1.0 + n_permutations)
    return (statistic, p_value, like_input(null, Xs)) if return_null else (statistic, p_value)


def proxy_a_distance(Xs, Xt, classifier=None, cv: int = 5, random_state=None) -> float:
    r"""Proxy A-distance (Ben-David, Blitzer, Crammer & Pereira, 2007) from a cross-validated domain classifier.

    $$\hat d_{\mathcal A} = 2\,(1 - 2\,\mathrm{err}), \qquad
      \mathrm{err} \leftarrow \min(\mathrm{err},\, 1 - \mathrm{err})$$

    where err is the held-out error of a classifier telling source (label 0) from target (label 1) samples,
    measured by ``cv``-fold stratified cross-validation. It is the balanced error (the mean of the two
    per-domain error rates), so unequal sample sizes do not fake a distance. An error above 1/2 means the
    classifier is anti-correlated with the domain — as informative as the flipped classifier — so it is
    folded back, and $\hat d_{\mathcal A} \in [0, 2]$: 0 for indistinguishable domains, 2 for separable
    ones. The default classifier is linear (standardised features, logistic regression), as in the paper.

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d), at least ``cv`` samples each → float. Used in lessons 02 and 04.
    """
    check_pair(Xs, Xt, min_samples=2)
    xs, xt = to_numpy(Xs, "Xs"), to_numpy(Xt, "Xt")
    cv = check_in_range(cv, "cv", 2, min(len(xs), len(xt)), integer=True)
    model = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)) if classifier is None
             else clone(classifier))
    features = np.vstack([xs, xt])
    domains = np.r_[np.zeros(len(xs), dtype=int), np.ones(len(xt), dtype=int)]
    seed = int(check_random_state(random_state).integers(2**31 - 1))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, features, domains, cv=folds)
    error = 0.5 * (np.mean(predicted[domains == 0] != 0) + np.mean(predicted[domains == 1] != 1))
    error = min(error, 1.0 - error)
    return float(2.0 * (1.0 - 2.0 * error))


def coral_distance(Xs, Xt) -> float:
    r"""CORAL distance between the feature covariances of two samples (Sun & Saenko, 2016).

    $$d_{\mathrm{CORAL}} = \frac{1}{4 d^2} \lVert C_s - C_t \rVert_F^2, \qquad
      C = \frac{1}{n-1} (X - \bar X)^\top (X - \bar X)$$

    the loss Deep CORAL minimises. Second-order only: two samples with equal covariances and different means
    are at distance 0. Computed in float64.

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d), at least 2 samples each → float. Used in lessons 04 and 09.
    """
    xs, xt = check_pair(Xs, Xt, min_samples=2, dtype=torch.float64)
    d = xs.shape[1]
    difference = torch.cov(xs.T).reshape(d, d) - torch.cov(xt.T).reshape(d, d)
    return float(difference.square().sum() / (4.0 * d * d))
