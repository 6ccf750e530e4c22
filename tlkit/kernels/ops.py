"""Public pairwise-kernel functions: nearest neighbours, kernel sums, kernel-matrix products and MMD.

Each validates its inputs with ``tlkit._validation`` (a ``ValueError``/``TypeError`` names the argument), then runs
on the backend the dispatch point picks (``backend="auto" | "cuda" | "cpp" | "torch"``). None of them forms the n×m
matrix. They answer in the type they were given: numpy in → numpy out, torch in → torch out (on the same device).
Under ``torch.compile`` the data-dependent checks (finiteness, signs) are skipped, so they trace without graph breaks.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _validation as check
from . import _dispatch, _reference
from ._reference_autograd import TorchKernelMatmul, TorchKernelMatmulMulti, TorchMMD2Value

# The C++/CUDA kernels' kernel ids and bandwidth limit (csrc/kernel_spec.h; a test compares them).
KERNELS = {"gaussian": 0, "laplacian": 1}
MAX_BANDWIDTHS = 16
ESTIMATORS = ("biased", "unbiased", "linear")
COMPUTE_DTYPES = (torch.float32, torch.float64)


def _compute_dtype(*tensors) -> tuple[torch.dtype, torch.dtype]:
    """(dtype to compute in, dtype to return): fp16/bf16 compute in fp32, fp64 stays fp64."""
    result = tensors[0].dtype
    for t in tensors[1:]:
        result = torch.promote_types(result, t.dtype)
    return (result if result in COMPUTE_DTYPES else torch.float32), result


def _prepare(*tensors, dtype):
    return [t.to(dtype).contiguous() for t in tensors]


def _answer(result, *inputs):
    """numpy in → numpy out: ``result`` as numpy unless one of ``inputs`` was a torch tensor."""
    if any(isinstance(value, torch.Tensor) for value in inputs):
        return result
    if isinstance(result, tuple):
        return tuple(r.detach().cpu().numpy() for r in result)
    return result.detach().cpu().numpy()[()]  # a 0-dim result becomes a numpy scalar (np.float64)


# ---------------------------------------------------------------- the primitives on the chosen backend
# Each takes validated, contiguous tensors of one compute dtype; ``backend`` is what _dispatch.choose returned.
def _nearest(x, y, backend):
    return torch.ops.tlkit.nearest(x, y) if backend != "torch" else _reference.nearest(x, y)


def _nearest_kdtree(x: torch.Tensor, y: torch.Tensor):
    """(dist, index) from scikit-learn's KD-tree, exact in float64, ties to the smallest index as the fused ops.

    The tree is queried for 2 neighbours; where the second is as close as the first (to 1e-12 relative), every
    point within that radius is fetched and the smallest index among the closest, by float64 distances computed
    here, wins."""
    from sklearn.neighbors import KDTree

    xs, ys = x.detach().double().numpy(), y.detach().double().numpy()
    tree = KDTree(ys)
    k = min(2, ys.shape[0])
    dist, index = tree.query(xs, k=k)
    best = index[:, 0].copy()
    if k == 2:
        tied = np.flatnonzero(dist[:, 1] <= dist[:, 0] * (1 + 1e-12))
        if tied.size:
            candidates = tree.query_radius(xs[tied], r=dist[tied, 0] * (1 + 1e-12) + 1e-300)
            for row, cand in zip(tied, candidates):
                cand = np.sort(cand)
                r2 = ((ys[cand] - xs[row]) ** 2).sum(1)
                best[row] = cand[np.argmin(r2)]  # argmin: first of the equal minima = smallest index
    exact = np.sqrt(((xs - ys[best]) ** 2).sum(1))
    return torch.from_numpy(exact).to(x.dtype), torch.from_numpy(best.astype(np.int64))


def _kernel_matmul(x, y, v, sigmas, kernel, backend):
    if backend == "torch":
        return TorchKernelMatmul.apply(x, y, v, sigmas, kernel)
    return torch.ops.tlkit.kernel_matmul(x, y, v, sigmas, kernel)


def _kernel_matmul_multi(x, y, v, sigmas, kernel, backend):
    if backend == "torch":
        return TorchKernelMatmulMulti.apply(x, y, v, sigmas, kernel)
    return torch.ops.tlkit.kernel_matmul_multi(x, y, v, sigmas, kernel)


def _mmd2_value(x, y, wx, wy, coef, const, sigmas, kernel, backend):
    """coef · [T_xx, T_yy, T_xy] + const as a float64 scalar, differentiable in x, y, wx, wy."""
    if backend == "torch":
        return TorchMMD2Value.apply(x, y, wx, wy, coef, const, sigmas, kernel)
    compute_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    return torch.ops.tlkit.mmd2_value(x, y, wx, wy, coef, const, sigmas, kernel, compute_grad)[0]


def kernel_matmul_unchecked(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, sigmas: list[float],
                            kernel: str = "gaussian", backend: str = "auto") -> torch.Tensor:
    r"""$K(x, y)\,v$ below the validation, for solvers that validated their inputs once (KMM's iterations,
    ``mmd_test``'s permutation batches): no conversion, no copy of float64 input, no finiteness check.

    ``x`` (n, d), ``y`` (m, d), ``v`` (m, k): torch tensors of one dtype (float32 or float64) on one device;
    ``sigmas`` a list of at most ``MAX_BANDWIDTHS`` positive floats; ``kernel`` a name of ``KERNELS``.
    Returns (n, k) in the input dtype. Differentiable like :func:`kernel_matmul`.
    """
    name, _ = _dispatch.choose(backend, x.device)
    return _kernel_matmul(x.contiguous(), y.contiguous(), v.contiguous(), sigmas, KERNELS[kernel], name)


def kernel_matmul_multi_unchecked(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, sigmas: list[float],
                                  kernel: str = "gaussian", backend: str = "auto") -> torch.Tensor:
    r"""$K_s(x, y)\,v$ for every bandwidth $s$, below the validation (as :func:`kernel_matmul_unchecked`);
    returns (S, n, k). Used by :func:`tlkit.metrics.mmd_agg_test`'s permutations."""
    name, _ = _dispatch.choose(backend, x.device)
    return _kernel_matmul_multi(x.contiguous(), y.contiguous(), v.contiguous(), sigmas, KERNELS[kernel], name)


# ---------------------------------------------------------------- public ops
def nearest(x, y, backend: str = "auto"):
    r"""Distance from each row of ``x`` to its nearest row of ``y``, and that row's index.

    $$\mathrm{dist}_i = \min_j \lVert x_i - y_j \rVert_2, \qquad \mathrm{index}_i = \arg\min_j \lVert x_i - y_j \rVert_2$$

    Shapes: ``x`` (n, d), ``y`` (m, d) → ``dist`` (n,), ``index`` (n,) int64 (ties: the smallest j).
    The fused kernels stream ``y`` in tiles; the n×m distance matrix is never formed. On the CPU with
    ``backend="auto"`` and low dimension (d ≤ 3 with n·m ≥ 2²², or d ≤ 5 with n·m ≥ 2²⁸, where it was measured
    faster) scikit-learn's KD-tree answers instead, exactly in float64 with the same tie rule;
    ``tl.kernels.backend_info()["nearest"]`` states the rule. Not differentiable
    (the index is discrete; recompute ``(x - y[index]).norm(dim=1)`` for a gradient).
    Used in lesson 05 (distance-based instance weights) and lesson 04.
    """
    inputs = (x, y)
    x, y = check.check_point_pair(x, y)
    compute, out = _compute_dtype(x, y)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys = _prepare(x.detach(), y.detach(), dtype=compute)
    if _dispatch.nearest_method(xs.shape[0], ys.shape[0], xs.shape[1], xs.device, backend) == "kdtree":
        dist, index = _nearest_kdtree(xs, ys)
    else:
        dist, index = _nearest(xs, ys, name)
    return _answer((dist.to(out), index), *inputs)


def kernel_matmul(x, y, v, sigma, kernel: str = "gaussian", backend: str = "auto"):
    r"""Kernel-matrix product $K(x, y)\,v$ without forming $K$.

    $$\mathrm{out}_{i\cdot} = \sum_{j=1}^{m} k(x_i, y_j)\, v_{j\cdot}, \qquad
      k(x, y) = \frac{1}{S}\sum_{s=1}^{S} k_{\sigma_s}(x, y)$$

    with the Gaussian $k_\sigma(x, y) = \exp(-\lVert x-y\rVert^2 / 2\sigma^2)$ or the Laplacian
    $k_\sigma(x, y) = \exp(-\lVert x-y\rVert / \sigma)$; a sequence of bandwidths gives their mean
    (multi-kernel), from one distance per pair.

    Shapes: ``x`` (n, d), ``y`` (m, d), ``v`` (m, k) or (m,) → (n, k) or (n,).
    Differentiable in ``x``, ``y`` and ``v`` through fused backward kernels.
    The primitive behind matrix-free KMM and batched permutation tests (lessons 04, 05).
    """
    xs, ys, vs, sigmas, kid, name, out, squeeze = _matmul_arguments(x, y, v, sigma, kernel, backend)
    result = _kernel_matmul(xs, ys, vs, sigmas, kid, name).to(out)
    return _answer(result[:, 0] if squeeze else result, x, y, v)


def _matmul_arguments(x, y, v, sigma, kernel, backend):
    """Checks and prepares the arguments of :func:`kernel_matmul` and :func:`kernel_matmul_multi`:
    returns ``(xs, ys, vs, sigmas, kernel_id, backend_name, out_dtype, squeeze)``, ``vs`` always (m, k)."""
    x, y = check.check_point_pair(x, y)
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
    check.check_finite(v2, "v")
    sigmas = check.check_bandwidths(sigma, max_count=MAX_BANDWIDTHS)
    kid = KERNELS[check.check_choice(kernel, "kernel", KERNELS)]
    compute, out = _compute_dtype(x, y, v2)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys, vs = _prepare(x, y, v2, dtype=compute)
    return xs, ys, vs, sigmas, kid, name, out, squeeze


def kernel_matmul_multi(x, y, v, sigma, kernel: str = "gaussian", backend: str = "auto"):
    r"""Kernel-matrix products for several bandwidths at once, one per bandwidth (no averaging):

    $$\mathrm{out}_{s,i\cdot} = \sum_{j=1}^{m} k_{\sigma_s}(x_i, y_j)\, v_{j\cdot}, \qquad s = 1, \dots, S$$

    with the Gaussian or Laplacian $k_\sigma$ of :func:`kernel_matmul`. Every pair's distance is computed once
    for all $S$ bandwidths; on the C++ backend, bandwidths on a power-of-two ladder
    ($\sigma_{s}^2 / \sigma_{s+1}^2 = 2^p$, $p \le 3$, e.g. $\sigma_0 2^{\ell}$) are derived from the previous one by
    $p$ squarings, $k_{s+1} = k_s^{2^p}$, instead of an exp. The chain restarts with a fresh exp before it would pass
    6 squarings in float32 (16 in float64), which bounds every kernel value's relative error by
    $2.6 \cdot 2^{6} u \approx 9.9 \times 10^{-6}$ ($u = 2^{-24}$): the float32 contract of $10^{-5}$ holds for the
    narrowest term too.

    Shapes: ``x`` (n, d), ``y`` (m, d), ``v`` (m, k) or (m,) → (S, n, k) or (S, n). Differentiable in ``x``, ``y``
    and ``v``. The primitive of the aggregated MMD test (:func:`tlkit.metrics.mmd_agg_test`, which extends
    lesson 04's permutation test; no lesson calls this op directly).
    """
    xs, ys, vs, sigmas, kid, name, out, squeeze = _matmul_arguments(x, y, v, sigma, kernel, backend)
    result = _kernel_matmul_multi(xs, ys, vs, sigmas, kid, name).to(out)
    return _answer(result[..., 0] if squeeze else result, x, y, v)


def kernel_sum(x, y, sigma, kernel: str = "gaussian", weights=None, backend: str = "auto"):
    r"""Kernel sum of ``y`` at the points ``x`` — an unnormalised kernel density estimate.

    $$s_i = \sum_{j=1}^{m} w_j\, k(x_i, y_j)$$

    ($w_j = 1$ by default; divide by $m$ for a density up to the kernel's normaliser.)
    Kernels and multi-bandwidth ``sigma`` as in :func:`kernel_matmul`.

    Shapes: ``x`` (n, d), ``y`` (m, d), ``weights`` (m,) → (n,). Differentiable in ``x``, ``y``, ``weights``.
    Used in lesson 05 (kernel-density instance weights).
    """
    inputs = (x, y, weights)
    x, y = check.check_point_pair(x, y)
    if weights is None:
        weights = torch.ones(y.shape[0], dtype=y.dtype, device=y.device)
    else:
        weights = check.check_point_weights(weights, y.shape[0], "weights", y.device, y.dtype)
    return _answer(kernel_matmul(x, y, weights, sigma, kernel, backend), *inputs)


def median_bandwidth(x, y=None, max_points: int = 2000, seed: int = 0) -> float:
    r"""The median heuristic: the median pairwise distance of the pooled sample, self-pairs excluded.

    $$\sigma = \operatorname{median}\{\lVert z_i - z_j\rVert : i < j\}, \qquad z = x \cup y$$

    On more than ``max_points`` points it uses a random subsample of that size drawn with ``seed``
    (deterministic). Returns a Python float; if every pair coincides it returns 1.0.
    Shapes: ``x`` (n, d), ``y`` (m, d) or None. Used in lessons 04 and 10.
    """
    z = check.check_points(x, "x") if y is None else torch.cat(check.check_point_pair(x, y))
    max_points = check.check_positive_int(max_points, "max_points", minimum=2)
    seed = check.check_positive_int(seed, "seed", minimum=0)
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

    $$\mathrm{MMD}^2_b &= \sum_{i,i'} a_i a_{i'} k(x_i, x_{i'}) + \sum_{j,j'} b_j b_{j'} k(y_j, y_{j'})
      - 2 \sum_{i,j} a_i b_j k(x_i, y_j) \\
      \mathrm{MMD}^2_u &= \frac{1}{n(n-1)} \sum_{i \ne i'} k(x_i, x_{i'}) + \frac{1}{m(m-1)} \sum_{j \ne j'} k(y_j, y_{j'})
      - \frac{2}{nm} \sum_{i,j} k(x_i, y_j) \\
      \mathrm{MMD}^2_l &= \frac{1}{p} \sum_{t=1}^{p} \big[k(x_{2t-1}, x_{2t}) + k(y_{2t-1}, y_{2t})
      - k(x_{2t-1}, y_{2t}) - k(x_{2t}, y_{2t-1})\big], \quad p = \lfloor \min(n, m)/2 \rfloor$$

    with $a_i = 1/n$, $b_j = 1/m$ (or ``weights_x`` / ``weights_y`` normalised to sum 1, biased
    estimator only). The biased estimator is ≥ 0; the unbiased one drops the diagonal and can be negative
    when P = Q; the linear one costs O(n) and has higher variance. ``sigma=None`` uses
    :func:`median_bandwidth`; a sequence of bandwidths averages the kernels (multi-kernel MMD, as in DAN).

    Shapes: ``x`` (n, d), ``y`` (m, d), n ≠ m allowed → a 0-dim tensor (``np.float64`` for numpy input). Differentiable in ``x``, ``y`` and the
    weights, with the backward computed inside the fused forward pass (no n×m temporaries).
    Used in lessons 04 (measuring shift) and 10 (DAN).
    """
    inputs = (x, y, weights_x, weights_y)
    x, y = check.check_point_pair(x, y)
    check.check_choice(estimator, "estimator", ESTIMATORS)
    kid = KERNELS[check.check_choice(kernel, "kernel", KERNELS)]
    n, m = x.shape[0], y.shape[0]
    if estimator != "biased":
        if weights_x is not None or weights_y is not None:
            raise ValueError(f"weights_x / weights_y are supported by the biased estimator only, not {estimator!r}")
        if n < 2 or m < 2:
            raise ValueError(f"the {estimator} estimator needs at least 2 points per sample, got n={n}, m={m}")
    sigmas = check.check_bandwidths(median_bandwidth(x, y) if sigma is None else sigma, max_count=MAX_BANDWIDTHS)
    compute, out = _compute_dtype(x, y)
    name, _ = _dispatch.choose(backend, x.device)
    xs, ys = _prepare(x, y, dtype=compute)
    if estimator == "linear":  # O(n) pairs: plain torch on any backend
        return _answer(_mmd2_linear(xs, ys, sigmas, kid).to(out), *inputs)
    if estimator == "biased":
        wx = _normalised(weights_x, n, "weights_x", x.device, compute)
        wy = _normalised(weights_y, m, "weights_y", x.device, compute)
        coef, const = (1.0, 1.0, -2.0), 0.0
    else:
        wx, wy = torch.ones(n, dtype=compute, device=x.device), torch.ones(m, dtype=compute, device=x.device)
        coef = (1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m))
        const = -(n * coef[0] + m * coef[1])  # k(z, z) = 1 on the diagonals, removed analytically
    return _answer(_mmd2_value(xs, ys, wx, wy, list(coef), const, sigmas, kid, name).to(out), *inputs)


def _normalised(weights, length, name, device, dtype):
    if weights is None:
        return torch.full((length,), 1.0 / length, dtype=dtype, device=device)
    w = check.check_point_weights(weights, length, name, device, dtype)
    total = w.sum()
    if not torch.compiler.is_compiling() and not bool(total > 0):
        raise ValueError(f"{name} must have a positive sum, got {float(total)}")
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
