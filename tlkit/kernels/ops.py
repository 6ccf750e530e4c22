"""Public pairwise-kernel functions: nearest neighbours, kernel sums, kernel-matrix products and MMD.

Each validates its inputs (a ``ValueError``/``TypeError`` names the argument), then runs on the backend the
dispatch point picks (``backend="auto" | "cuda" | "cpp" | "torch"``). None of them forms the n×m matrix.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from . import _dispatch

KERNELS = {"gaussian": 0, "laplacian": 1}
ESTIMATORS = ("biased", "unbiased", "linear")
COMPUTE_DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------- validation
def _as_points(value, name: str, check_finite: bool = True) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))  # views with negative strides (np.flip) too
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, d), got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(value.shape)}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point of at least one feature, got shape {tuple(value.shape)}")
    if value.is_complex():
        raise TypeError(f"{name} must be real, got {value.dtype}")
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if check_finite:
        _check_finite(value, name)
    return value


def _check_finite(value: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _pair(x, y, names=("x", "y")):
    x, y = _as_points(x, names[0], check_finite=False), _as_points(y, names[1], check_finite=False)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of features, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {x.device} and {y.device}")
    _check_finite(x, names[0])
    _check_finite(y, names[1])
    return x, y


def _compute_dtype(*tensors) -> tuple[torch.dtype, torch.dtype]:
    """(dtype to compute in, dtype to return): fp16/bf16 compute in fp32, fp64 stays fp64."""
    result = tensors[0].dtype
    for t in tensors[1:]:
        result = torch.promote_types(result, t.dtype)
    return (result if result in COMPUTE_DTYPES else torch.float32), result


MAX_BANDWIDTHS = 16  # what the fused kernels hold in registers


def _sigmas(sigma, name="sigma") -> list[float]:
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.detach().cpu().reshape(-1).tolist() if sigma.dim() else float(sigma)
    if isinstance(sigma, np.ndarray):
        sigma = sigma.reshape(-1).tolist()
    values = list(sigma) if isinstance(sigma, Sequence) and not isinstance(sigma, str) else [sigma]
    if not values:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, got an empty sequence")
    try:
        values = [float(s) for s in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number or a sequence of them, got {sigma!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{name} must be positive and finite, got {values}")
    if len(values) > MAX_BANDWIDTHS:
        raise ValueError(f"{name} may hold at most {MAX_BANDWIDTHS} bandwidths, got {len(values)}")
    return values


def _kernel_id(kernel: str) -> int:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {tuple(KERNELS)}, got {kernel!r}")
    return KERNELS[kernel]


def _vector(value, length: int, name: str, device, dtype) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array of shape ({length},), got {type(value).__name__}")
    if value.dim() != 1 or value.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} must be on {device}, got {value.device}")
    _check_finite(value, name)
    if bool((value < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    return value.to(dtype)


def _prepare(*tensors, dtype):
    return [t.to(dtype).contiguous() for t in tensors]


# ---------------------------------------------------------------- public ops
def nearest(x, y, backend: str = "auto"):
    r"""Distance from each row of ``x`` to its nearest row of ``y``, and that row's index.

    .. math:: \mathrm{dist}_i = \min_j \lVert x_i - y_j \rVert_2, \qquad \mathrm{index}_i = \arg\min_j \lVert x_i - y_j \rVert_2

    Shapes: ``x`` (n, d), ``y`` (m, d) → ``dist`` (n,), ``index`` (n,) int64 (ties: the smallest j).
    The fused kernels stream ``y`` in tiles; the n×m distance matrix is never formed. Not differentiable
    (the index is discrete; recompute ``(x - y[index]).norm(dim=1)`` for a gradient).
    Used in lesson 05 (distance-based instance weights) and lesson 04.
    """
    x, y = _pair(x, y)
    compute, out = _compute_dtype(x, y)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys = _prepare(x.detach(), y.detach(), dtype=compute)
    dist, index = _dispatch.nearest(xs, ys, name)
    return dist.to(out), index


def kernel_matmul(x, y, v, sigma, kernel: str = "gaussian", backend: str = "auto"):
    r"""Kernel-matrix product :math:`K(x, y)\,v` without forming :math:`K`.

    .. math:: \mathrm{out}_{i\cdot} = \sum_{j=1}^{m} k(x_i, y_j)\, v_{j\cdot}, \qquad
              k(x, y) = \frac{1}{S}\sum_{s=1}^{S} k_{\sigma_s}(x, y)

    with the Gaussian :math:`k_\sigma(x, y) = \exp(-\lVert x-y\rVert^2 / 2\sigma^2)` or the Laplacian
    :math:`k_\sigma(x, y) = \exp(-\lVert x-y\rVert / \sigma)`; a sequence of bandwidths gives their mean
    (multi-kernel), from one distance per pair.

    Shapes: ``x`` (n, d), ``y`` (m, d), ``v`` (m, k) or (m,) → (n, k) or (n,).
    Differentiable in ``x``, ``y`` and ``v`` through fused backward kernels.
    The primitive behind matrix-free KMM and batched permutation tests (lessons 04, 05).
    """
    x, y = _pair(x, y)
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a tensor of shape (m, k) or (m,), got {type(v).__name__}")
    squeeze = v.dim() == 1
    v2 = v[:, None] if squeeze else v
    if v2.dim() != 2 or v2.shape[0] != y.shape[0] or v2.shape[1] == 0:
        raise ValueError(f"v must have shape ({y.shape[0]}, k) or ({y.shape[0]},) to match y, got {tuple(v.shape)}")
    if v2.device != x.device:
        raise ValueError(f"v must be on {x.device}, got {v2.device}")
    if not v2.is_floating_point():
        v2 = v2.to(torch.get_default_dtype())
    _check_finite(v2, "v")
    sigmas, kid = _sigmas(sigma), _kernel_id(kernel)
    compute, out = _compute_dtype(x, y, v2)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys, vs = _prepare(x, y, v2, dtype=compute)
    result = _dispatch.kernel_matmul(xs, ys, vs, sigmas, kid, name).to(out)
    return result[:, 0] if squeeze else result


def kernel_sum(x, y, sigma, kernel: str = "gaussian", weights=None, backend: str = "auto"):
    r"""Kernel sum of ``y`` at the points ``x`` — an unnormalised kernel density estimate.

    .. math:: s_i = \sum_{j=1}^{m} w_j\, k(x_i, y_j)

    (:math:`w_j = 1` by default; divide by :math:`m` for a density up to the kernel's normaliser.)
    Kernels and multi-bandwidth ``sigma`` as in :func:`kernel_matmul`.

    Shapes: ``x`` (n, d), ``y`` (m, d), ``weights`` (m,) → (n,). Differentiable in ``x``, ``y``, ``weights``.
    Used in lesson 05 (kernel-density instance weights).
    """
    x, y = _pair(x, y)
    if weights is None:
        weights = torch.ones(y.shape[0], dtype=y.dtype, device=y.device)
    else:
        weights = _vector(weights, y.shape[0], "weights", y.device, y.dtype)
    return kernel_matmul(x, y, weights, sigma, kernel, backend)


def median_bandwidth(x, y=None, max_points: int = 2000, seed: int = 0) -> float:
    r"""The median heuristic: the median pairwise distance of the pooled sample, self-pairs excluded.

    .. math:: \sigma = \operatorname{median}\{\lVert z_i - z_j\rVert : i < j\}, \qquad z = x \cup y

    On more than ``max_points`` points it uses a random subsample of that size drawn with ``seed``
    (deterministic). Returns a Python float; if every pair coincides it returns 1.0.
    Shapes: ``x`` (n, d), ``y`` (m, d) or None. Used in lessons 04 and 10.
    """
    z = _as_points(x, "x") if y is None else torch.cat(_pair(x, y))
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if z.shape[0] < 2:
        raise ValueError("median_bandwidth needs at least 2 points in total")
    z = z.detach()
    if z.shape[0] > max_points:
        generator = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=generator)[:max_points].to(z.device)]
    z = z.to(torch.float64)
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    dist = torch.cdist(z, z)[i, j]
    median = float(dist.median())
    if median > 0:
        return median
    positive = dist[dist > 0]
    return float(positive.median()) if positive.numel() else 1.0


def mmd2(x, y, sigma=None, kernel: str = "gaussian", estimator: str = "biased",
         weights_x=None, weights_y=None, backend: str = "auto"):
    r"""Squared maximum mean discrepancy between the samples ``x`` ~ P and ``y`` ~ Q (Gretton et al., 2012).

    .. math::
        \mathrm{MMD}^2_b &= \sum_{i,i'} a_i a_{i'} k(x_i, x_{i'}) + \sum_{j,j'} b_j b_{j'} k(y_j, y_{j'})
                           - 2 \sum_{i,j} a_i b_j k(x_i, y_j) \\
        \mathrm{MMD}^2_u &= \frac{1}{n(n-1)} \sum_{i \ne i'} k(x_i, x_{i'}) + \frac{1}{m(m-1)} \sum_{j \ne j'} k(y_j, y_{j'})
                           - \frac{2}{nm} \sum_{i,j} k(x_i, y_j) \\
        \mathrm{MMD}^2_l &= \frac{1}{p} \sum_{t=1}^{p} \big[k(x_{2t-1}, x_{2t}) + k(y_{2t-1}, y_{2t})
                           - k(x_{2t-1}, y_{2t}) - k(x_{2t}, y_{2t-1})\big], \quad p = \lfloor \min(n, m)/2 \rfloor

    with :math:`a_i = 1/n`, :math:`b_j = 1/m` (or ``weights_x`` / ``weights_y`` normalised to sum 1, biased
    estimator only). The biased estimator is ≥ 0; the unbiased one drops the diagonal and can be negative
    when P = Q; the linear one costs O(n) and has higher variance. ``sigma=None`` uses
    :func:`median_bandwidth`; a sequence of bandwidths averages the kernels (multi-kernel MMD, as in DAN).

    Shapes: ``x`` (n, d), ``y`` (m, d), n ≠ m allowed → a 0-dim tensor. Differentiable in ``x``, ``y`` and the
    weights, with the backward computed inside the fused forward pass (no n×m temporaries).
    Used in lessons 04 (measuring shift) and 10 (DAN).
    """
    x, y = _pair(x, y)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    kid = _kernel_id(kernel)
    n, m = x.shape[0], y.shape[0]
    if estimator != "biased":
        if weights_x is not None or weights_y is not None:
            raise ValueError(f"weights_x / weights_y are supported by the biased estimator only, not {estimator!r}")
        if n < 2 or m < 2:
            raise ValueError(f"the {estimator} estimator needs at least 2 points per sample, got n={n}, m={m}")
    sigmas = _sigmas(median_bandwidth(x, y) if sigma is None else sigma)
    compute, out = _compute_dtype(x, y)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys = _prepare(x, y, dtype=compute)
    if estimator == "linear":  # O(n) pairs: plain torch on any backend
        return _mmd2_linear(xs, ys, sigmas, kid).to(out)
    if estimator == "biased":
        wx = _normalised(weights_x, n, "weights_x", x.device, compute)
        wy = _normalised(weights_y, m, "weights_y", x.device, compute)
        coef, const = (1.0, 1.0, -2.0), 0.0
    else:
        wx, wy = torch.ones(n, dtype=compute, device=x.device), torch.ones(m, dtype=compute, device=x.device)
        coef = (1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m))
        const = -(n * coef[0] + m * coef[1])  # k(z, z) = 1 on the diagonals, removed analytically
    return _dispatch.mmd2_value(xs, ys, wx, wy, list(coef), const, sigmas, kid, name).to(out)


def _normalised(weights, length, name, device, dtype):
    if weights is None:
        return torch.full((length,), 1.0 / length, dtype=dtype, device=device)
    w = _vector(weights, length, name, device, dtype)
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"{name} must have a positive sum")
    return (w / total).contiguous()


def _mmd2_linear(x, y, sigmas, kid):
    """O(n) linear-time estimator on disjoint pairs; differentiable through plain autograd."""
    p = min(x.shape[0], y.shape[0]) // 2
    x1, x2, y1, y2 = x[0:2 * p:2], x[1:2 * p:2], y[0:2 * p:2], y[1:2 * p:2]

    def k(a, b):
        r2 = ((a - b) ** 2).sum(1)
        if kid == 0:
            return torch.stack([torch.exp(-r2 / (2 * s * s)) for s in sigmas]).mean(0)
        r = torch.sqrt(r2.clamp_min(torch.finfo(r2.dtype).tiny))  # finite gradient at r = 0
        return torch.stack([torch.exp(-r / s) for s in sigmas]).mean(0)

    h = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)
    return h.double().mean()
