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
from ..kernels.ops import (COMPUTE_DTYPES, KERNELS, MAX_BANDWIDTHS, kernel_matmul_multi_unchecked,
                           kernel_matmul_unchecked)

__all__ = ["mmd_test", "mmd_agg_test", "proxy_a_distance", "coral_distance"]


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


def _split_indicators(rng: np.random.Generator, n: int, m: int, count: int) -> np.ndarray:
    """(n + m, count) boolean: column b marks the first sample of a uniformly random split (True = first)."""
    template = np.zeros(n + m, dtype=bool)
    template[:n] = True
    return rng.permuted(np.tile(template, (count, 1)), axis=1).T


def _agg_statistics(pooled: torch.Tensor, n: int, m: int, splits: torch.Tensor, sigmas: list[float], kernel: str,
                    backend: str, batch_size: int) -> torch.Tensor:
    r"""Unbiased MMD² for every bandwidth (rows) and split (columns of ``splits``, (N, B) 0/1), float64 (S, B).

    One fused multi-bandwidth pass per batch of splits: $K_s [\mathbf 1, a_1, \dots, a_b]$ for all $s$ at once
    (:func:`tlkit.kernels.kernel_matmul_multi`); the $S \cdot B$ statistics are quadratic forms in the split
    indicators (:func:`_unbiased_statistics`). No $N \times N$ matrix is formed.
    """
    N = n + m
    ones = torch.ones(N, 1, dtype=pooled.dtype, device=pooled.device)
    row_sums = kernel_matmul_multi_unchecked(pooled, pooled, ones, sigmas, kernel, backend)[:, :, 0].double()
    totals = row_sums.sum(dim=1)
    diagonal = 1.0  # k(z, z) for the gaussian and laplacian kernels
    out = []
    for start in range(0, splits.shape[1], batch_size):
        a = splits[:, start:start + batch_size].to(pooled.dtype)
        ka = kernel_matmul_multi_unchecked(pooled, pooled, a, sigmas, kernel, backend).double()  # (S, N, b)
        out.append(torch.stack([_unbiased_statistics(ka[s], a, row_sums[s], float(totals[s]), n, m, diagonal)
                                for s in range(len(sigmas))]))
    return torch.cat(out, dim=1)


def _agg_decision(observed: np.ndarray, null_quantile: np.ndarray, null_level: np.ndarray, alpha: float,
                  weights: np.ndarray, steps: int):
    r"""MMDAgg's level correction (Schrab et al., 2023, Algorithm 1, steps 3–4).

    ``observed`` (S,), ``null_quantile`` (S, B1) and ``null_level`` (S, B2): statistics of the observed split and
    of two independent sets of random splits. With $M^{(1)}_s$ the B1 + 1 values (observed included) sorted,
    $q_s(u) = M^{(1)}_{s,(\lceil (B_1+1)(1 - u w_s) \rceil)}$, and $u_\alpha$ the largest $u$ (bisection, ``steps``
    halvings of $[0, \min_s 1/w_s]$) with $\frac{1}{B_2}\#\{b : \max_s (M^{(2)}_{s,b} - q_s(u)) > 0\} \le \alpha$.
    Returns (reject, thresholds $q_s(u_\alpha)$, $u_\alpha$).
    """
    first = np.sort(np.concatenate([null_quantile, observed[:, None]], axis=1), axis=1)  # (S, B1 + 1)
    count = first.shape[1]

    def thresholds(u):
        index = np.clip(np.ceil(count * (1.0 - u * weights)).astype(np.int64) - 1, 0, count - 1)
        return first[np.arange(len(weights)), index]

    low, high = 0.0, float(np.min(1.0 / weights))
    for _ in range(steps):
        u = 0.5 * (low + high)
        exceed = np.mean(np.max(null_level - thresholds(u)[:, None], axis=0) > 0)
        if exceed <= alpha:
            low = u
        else:
            high = u
    final = thresholds(low)
    return bool(np.any(observed > final)), final, low


def mmd_agg_test(Xs, Xt, alpha: float = 0.05, sigma=None, levels=(-4, 2), kernel: str = "gaussian",
                 n_permutations: int = 500, n_level_permutations: int = 500, bisection_steps: int = 50,
                 random_state=None, batch_size: int = 256, return_details: bool = False, backend: str = "auto"):
    r"""MMDAgg: the aggregated MMD two-sample test over a collection of bandwidths (Schrab, Kim, Albert, Laurent,
    Guedj & Gretton, JMLR 2023), level $\alpha$ by permutations, without choosing a bandwidth or splitting the data.

    For each bandwidth $\lambda \in \Lambda$ the statistic is the unbiased $\widehat{\mathrm{MMD}}^2_{u,\lambda}$ of
    :func:`mmd_test`. With uniform weights $w_\lambda = 1/|\Lambda|$, the test rejects $H_0: P = Q$ when
    $$\exists \lambda \in \Lambda:\quad \widehat{\mathrm{MMD}}^2_{u,\lambda} > \hat q_{\lambda,\,1 - u_\alpha w_\lambda},
      \qquad u_\alpha = \sup\Big\{u : \hat P_{B_2}\Big(\max_\lambda \big(\widehat{\mathrm{MMD}}^{2,(b)}_{u,\lambda}
      - \hat q_{\lambda, 1 - u w_\lambda}\big) > 0\Big) \le \alpha\Big\}$$
    where $\hat q_{\lambda, 1-a}$ is the $\lceil (B_1 + 1)(1 - a) \rceil$-th smallest of the statistic over
    ``n_permutations`` $= B_1$ random splits and the observed one, and $\hat P_{B_2}$ counts over
    ``n_level_permutations`` $= B_2$ further splits; $u_\alpha$ by ``bisection_steps`` bisections. Bonferroni
    would be $u = \alpha$ (each bandwidth at level $\alpha w_\lambda$); $u_\alpha$ is estimated instead, larger when
    the statistics of neighbouring bandwidths are correlated, which is where the aggregated test gains power.

    Bandwidths: ``sigma`` (a sequence) or, by default, $\Lambda = \{2^\ell \lambda_{\mathrm{med}} : \ell =
    \ell_-, \dots, \ell_+\}$ with ``levels`` $= (\ell_-, \ell_+)$ and $\lambda_{\mathrm{med}}$ the median
    heuristic of the pooled sample (label-free, so the level is kept), the paper's $\Lambda(\ell_-, \ell_+)$.
    Every statistic, $|\Lambda| \cdot (1 + B_1 + B_2)$ of them, comes from the fused multi-bandwidth kernel
    (:func:`tlkit.kernels.kernel_matmul_multi`, one distance per pair for all bandwidths, the doubling ladder by
    squarings): each split is a column of indicators and no kernel matrix is formed.

    Shapes: ``Xs`` (n, d), ``Xt`` (m, d), n, m ≥ 2 → ``reject`` (bool), or with ``return_details=True``
    ``(reject, details)``, a dict with ``bandwidths`` (S,), ``statistics`` (S,), ``thresholds`` (S,), ``u_alpha``,
    ``null_quantile`` (S, B1) and ``null_level`` (S, B2) as numpy arrays. Extends lesson 04's permutation test
    (no lesson runs it yet).
    """
    xs, xt = check_pair(Xs, Xt, min_samples=2)
    alpha = check_in_range(alpha, "alpha", 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    n_level_permutations = check_positive_int(n_level_permutations, "n_level_permutations")
    bisection_steps = check_positive_int(bisection_steps, "bisection_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    kernel = check_choice(kernel, "kernel", KERNELS)
    rng = check_random_state(random_state)
    n, m = xs.shape[0], xt.shape[0]
    pooled = torch.cat([xs, xt])
    if pooled.dtype not in COMPUTE_DTYPES:
        pooled = pooled.float()
    pooled = pooled.contiguous()
    if sigma is None:
        if (not isinstance(levels, (tuple, list)) or len(levels) != 2
                or not all(isinstance(v, (int, np.integer)) for v in levels) or levels[0] > levels[1]):
            raise ValueError(f"levels must be two integers (low, high) with low <= high, got {levels!r}")
        if levels[1] - levels[0] + 1 > MAX_BANDWIDTHS:
            raise ValueError(f"levels must span at most {MAX_BANDWIDTHS} bandwidths, got {levels!r}")
        base = median_bandwidth(xs, xt)
        sigma = [base * 2.0 ** level for level in range(int(levels[0]), int(levels[1]) + 1)]
    sigmas = check_bandwidths(sigma, max_count=MAX_BANDWIDTHS)
    observed = torch.zeros(n + m, 1, dtype=pooled.dtype, device=pooled.device)
    observed[:n] = 1.0
    splits = torch.from_numpy(_split_indicators(rng, n, m, n_permutations + n_level_permutations))
    splits = torch.cat([observed.cpu().bool(), splits], dim=1).to(pooled.device)
    stats = _agg_statistics(pooled, n, m, splits, sigmas, kernel, backend, batch_size).cpu().numpy()
    weights = np.full(len(sigmas), 1.0 / len(sigmas))
    reject, thresholds, u_alpha = _agg_decision(stats[:, 0], stats[:, 1:1 + n_permutations],
                                                stats[:, 1 + n_permutations:], alpha, weights, bisection_steps)
    if not return_details:
        return reject
    return reject, {"bandwidths": np.asarray(sigmas), "statistics": stats[:, 0], "thresholds": thresholds,
                    "u_alpha": u_alpha, "null_quantile": stats[:, 1:1 + n_permutations],
                    "null_level": stats[:, 1 + n_permutations:]}


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
