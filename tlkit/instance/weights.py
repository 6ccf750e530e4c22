"""Distance-based source weights (article §5.1, corrected) and the effective sample size of a weighting."""
from __future__ import annotations

import torch

from .._validation import check_1d, check_pair, check_positive, like_input, to_tensor
from ..kernels import kernel_sum, median_bandwidth, nearest

__all__ = ["distance_weights", "article_distance_weights", "effective_sample_size"]

METHODS = ("nearest", "kernel")


def distance_weights(Xs, Xt, method: str = "nearest", sigma: float | None = None, backend: str = "auto"):
    r"""Source-sample weights that grow the CLOSER a source point lies to the target sample.

    ``method="nearest"`` — a Gaussian of the distance to the nearest target point:

    $$d_i = \min_j \lVert x_i^s - x_j^t \rVert, \qquad
      \tilde w_i = \exp\!\Big(-\frac{d_i^2}{2\sigma^2}\Big), \quad \sigma = \operatorname{median}_i d_i$$

    ``method="kernel"`` — the kernel density of the target sample at the source point:

    $$\tilde w_i = \frac{1}{n_t} \sum_{j=1}^{n_t} k_\sigma(x_i^s, x_j^t), \qquad
      k_\sigma(x, y) = \exp\!\Big(-\frac{\lVert x - y\rVert^2}{2\sigma^2}\Big), \quad
      \sigma = \text{median heuristic}$$

    Both are normalised to mean one, $w_i = n_s \tilde w_i / \sum_k \tilde w_k$, so that
    $\sum_i w_i = n_s$ and an unweighted fit is the special case $w \equiv 1$. They run on the fused
    :func:`tlkit.nearest` / :func:`tlkit.kernel_sum`: the $n_s \times n_t$ distance matrix is never formed.

    This is the article's §5.1 heuristic the right way round: the article gives a source sample MORE weight the
    FARTHER it is from the target (see :func:`article_distance_weights`).

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d) → (n_s,), numpy for numpy input, torch (same device) for torch input.
    Used in lesson 05.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    xs, xt = check_pair(Xs, Xt)
    if sigma is not None:
        sigma = check_positive(sigma, "sigma")
    if method == "nearest":
        dist = nearest(xs, xt, backend=backend)[0].to(torch.float64)
        if sigma is None:
            positive = dist[dist > 0]
            sigma = float(torch.quantile(positive, 0.5)) if positive.numel() else 1.0
        log_weights = -dist.square() / (2.0 * sigma**2)
        weights = torch.softmax(log_weights, dim=0) * xs.shape[0]  # exp(.)/sum, computed without underflow
    else:
        sigma = median_bandwidth(xs, xt) if sigma is None else sigma
        density = kernel_sum(xs, xt, sigma, backend=backend).to(torch.float64) / xt.shape[0]
        total = density.sum()
        if not total > 0:
            raise ValueError(f"every target kernel density underflowed to 0 at sigma={sigma}; increase sigma")
        weights = density * (xs.shape[0] / total)
    return like_input(weights, Xs)


def article_distance_weights(Xs, Xt, backend: str = "auto"):
    r"""COUNTEREXAMPLE — the article's §5.1 weights, kept only to show why they are wrong.

    $$w_i = \frac{d_i}{\sum_k d_k}, \qquad d_i = \min_j \lVert x_i^s - x_j^t \rVert$$

    exactly as ``compute_sample_weights`` in the article (``pairwise_distances`` then ``np.min(axis=1)``, then
    divided by the sum). A source sample gets MORE weight the FARTHER it lies from the target — the opposite of
    importance weighting, which up-weights source samples that look like target samples. Lesson 05 runs it beside
    :func:`distance_weights` and shows it raises the target error. Do not use it for transfer.

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d) → (n_s,) summing to 1. Used in lesson 05.
    """
    xs, xt = check_pair(Xs, Xt)
    dist = nearest(xs, xt, backend=backend)[0].to(torch.float64)
    total = dist.sum()
    weights = dist / total if total > 0 else torch.full_like(dist, 1.0 / dist.numel())
    return like_input(weights, Xs)


def effective_sample_size(weights) -> float:
    r"""Kish's effective sample size of a weighted sample.

    $$n_{\mathrm{eff}} = \frac{\big(\sum_i w_i\big)^2}{\sum_i w_i^2}$$

    Equal weights give $n_{\mathrm{eff}} = n$; one dominant weight gives about 1. Importance weights with a
    small $n_{\mathrm{eff}}$ make a weighted fit high-variance. Scale-invariant in $w$.
    Shape: ``weights`` (n,), non-negative, not all zero → float. Used in lesson 05.
    """
    w = to_tensor(weights, "weights", dtype=torch.float64)
    check_1d(w, "weights")
    if w.numel() == 0:
        raise ValueError("weights must not be empty")
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    squares = w.square().sum()
    if squares == 0:
        raise ValueError("weights must not all be zero")
    return float(w.sum() ** 2 / squares)
