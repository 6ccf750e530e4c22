r"""Exact domain-discrepancy losses across ``torch.distributed`` ranks (跨进程的精确损失), used in lesson 17.

Each rank holds its local rows of the source ``x`` (n_r, d) and target ``y`` (m_r, d); every function returns the
loss of the **global** samples (all ranks' rows concatenated in rank order), the same value on every rank.
MMD-type losses all-gather the features (no rank holds more than (n + m)·d of them) and compute only their own row
block of the kernel sums with the fused kernel (``tl.kernels``: never a kernel matrix); the partial sums are
all-reduced. CORAL all-reduces $\sum x$ and $\sum x^\top x$. With no initialised process group (or
``group`` of one rank) each function is the single-process op.

Gradients. ``backward`` gives each rank the gradient of the global loss with respect to its own rows: the
all-gather's backward all-reduces (sums) the gradient of the gathered features before taking this rank's slice,
and the all-reduce of the partial sums has the identity backward (every rank computes the same loss from the
sums). So the sum over ranks of the row-gradients equals the single-process gradient.

The DDP contract. DDP *averages* parameter gradients over the W ranks. The true gradient of a global loss is the
*sum* of the ranks' contributions, so the functions here take ``ddp_scale=True`` (the default of the ``distributed``
losses of ``tl.feature``) to multiply the backward by W (the value is unchanged): after DDP's averaging the
parameter gradients equal the single-process gradient of the global-batch loss. A per-rank mean loss such as the
cross-entropy needs no factor (DDP's mean of equal-sized local means is the global mean).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from . import _validation as check
from .kernels import median_bandwidth
from .kernels.ops import KERNELS, MAX_BANDWIDTHS, kernel_matmul_unchecked

__all__ = ["world", "gather_rows", "all_sum", "mmd2", "mk_mmd2", "joint_mmd2", "coral_loss", "mmd_test"]

ESTIMATORS = ("biased", "unbiased")
_DEVICE_CODES = {"cpu": 0, "cuda": 1}


def world(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` of ``group``; ``(0, 1)`` when no process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _collective_device(group, like: torch.device) -> torch.device:
    if world(group)[1] == 1:
        return torch.device("cpu")
    return like if dist.get_backend(group) == "nccl" else torch.device("cpu")


class _GatherRows(torch.autograd.Function):
    """All-gather of row blocks of unequal length; backward sums the gathered gradient over ranks (not
    ``grads[rank]``), then returns this rank's slice."""

    @staticmethod
    def forward(ctx, local, counts, group):
        rank, size = world(group)
        longest = max(counts)
        padded = local.new_zeros((longest,) + tuple(local.shape[1:]))
        padded[:local.shape[0]] = local
        blocks = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(blocks, padded.contiguous(), group=group)
        ctx.counts, ctx.rank, ctx.group = counts, rank, group
        return torch.cat([block[:count] for block, count in zip(blocks, counts)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = sum(ctx.counts[:ctx.rank])
        return grad[start:start + ctx.counts[ctx.rank]], None, None


class _AllSum(torch.autograd.Function):
    """Sum over ranks; identity backward (valid because every rank computes the same loss from the sum)."""

    @staticmethod
    def forward(ctx, local, group):
        total = local.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplied by ``factor`` (the world size, undone by DDP's mean)."""

    @staticmethod
    def forward(ctx, value, factor):
        ctx.factor = factor
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def gather_rows(local: torch.Tensor, group=None, counts: Sequence[int] | None = None) -> torch.Tensor:
    r"""Differentiable all-gather of row blocks: $X = [X_0; X_1; \dots; X_{W-1}]$ on every rank.

    Shapes: ``local`` (n_r, ...) → (Σ_r n_r, ...); unequal n_r allowed (``counts``, if known, saves one collective).
    Backward: $\partial L / \partial X_r = \sum_{r'} \big(\partial L_{r'} / \partial X\big)_{\text{rows of } r}$
    — the gathered gradient is all-reduced, then sliced. Used in lesson 17.
    """
    rank, size = world(group)
    if size == 1:
        return local
    if counts is None:
        counts = _gather_ints([local.shape[0]], group, local.device)[:, 0].tolist()
    return _GatherRows.apply(local, list(counts), group)


def all_sum(local: torch.Tensor, group=None) -> torch.Tensor:
    r"""Differentiable all-reduce (sum) $S = \sum_r s_r$ with the identity backward
    ($\partial L / \partial s_r = \partial L / \partial S$ when every rank computes the same $L(S)$).
    Any shape → the same shape. Used in lesson 17."""
    return local if world(group)[1] == 1 else _AllSum.apply(local, group)


def _gather_ints(values: Sequence[int], group, device: torch.device) -> torch.Tensor:
    """One small all-gather of a few integers per rank → (W, len(values)) int64 on the CPU."""
    _, size = world(group)
    local = torch.tensor(list(values), dtype=torch.int64, device=_collective_device(group, device))
    if size == 1:
        return local[None].cpu()
    blocks = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(blocks, local, group=group)
    return torch.stack(blocks).cpu()


def _check_shards(x, y, group, names=("x", "y"), min_rows: int = 1):
    """Validate local shards and agree on the global shapes with one small collective, so that a problem on one
    rank raises the same ``ValueError`` on every rank instead of a hang. Returns the per-rank row counts."""
    x = check.to_tensor(x, names[0])
    y = check.to_tensor(y, names[1])
    same_device = x.device == y.device and x.device.type in _DEVICE_CODES
    local = [x.shape[0] if x.dim() == 2 else -1, y.shape[0] if y.dim() == 2 else -1,
             x.shape[1] if x.dim() == 2 else -1, y.shape[1] if y.dim() == 2 else -1,
             _DEVICE_CODES.get(x.device.type, -1) if same_device else -1]
    table = _gather_ints(local, group, x.device)
    rank, size = world(group)
    where = lambda rows: ", ".join(str(int(r)) for r in rows)  # noqa: E731
    bad_dims = (table[:, 0] < 0) | (table[:, 1] < 0)
    if bool(bad_dims.any()):
        raise ValueError(f"{names[0]} and {names[1]} must be 2-D (rows, features) on every rank; "
                         f"not on rank(s) {where(torch.nonzero(bad_dims)[:, 0])}")
    if bool((table[:, 4] < 0).any()):
        raise ValueError(f"{names[0]} and {names[1]} must be on one CPU or CUDA device on each rank; mixed on "
                         f"rank(s) {where(torch.nonzero(table[:, 4] < 0)[:, 0])}")
    if len(set(table[:, 4].tolist())) > 1:
        raise ValueError(f"all ranks must hold {names[0]}/{names[1]} on the same device type, got "
                         f"{[('cpu', 'cuda')[c] for c in table[:, 4].tolist()]} by rank")
    dims = set(table[:, 2].tolist()) | set(table[:, 3].tolist())
    if len(dims) > 1:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of features on every rank, got "
                         f"{names[0]} {table[:, 2].tolist()} and {names[1]} {table[:, 3].tolist()} by rank")
    empty = (table[:, 0] < 1) | (table[:, 1] < 1)
    if bool(empty.any()):
        raise ValueError(f"every rank needs at least one row of {names[0]} and of {names[1]}; rank(s) "
                         f"{where(torch.nonzero(empty)[:, 0])} have rows {names[0]} {table[:, 0].tolist()}, "
                         f"{names[1]} {table[:, 1].tolist()}")
    n, m = int(table[:, 0].sum()), int(table[:, 1].sum())
    if n < min_rows or m < min_rows:
        raise ValueError(f"this estimator needs at least {min_rows} rows of {names[0]} and of {names[1]} in total "
                         f"over the ranks, got {n} and {m}")
    check.check_finite(x, names[0])
    check.check_finite(y, names[1])
    return x, y, table[:, 0].tolist(), table[:, 1].tolist()


def _compute_dtype(x, y):
    dtype = torch.promote_types(x.dtype, y.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _finish(loss, group, ddp_scale):
    size = world(group)[1]
    return _ScaleGradient.apply(loss, float(size)) if ddp_scale and size > 1 else loss


def _mmd2_sharded(x, y, counts_x, counts_y, sigmas, kernel, estimator, group, backend, gathered=None):
    r"""The three kernel sums of this rank's row block, all-reduced, combined into MMD²."""
    dtype = _compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    n, m = sum(counts_x), sum(counts_y)
    x_all, y_all = gathered if gathered is not None else (gather_rows(x, group, counts_x),
                                                          gather_rows(y, group, counts_y))
    pooled = torch.cat([x_all, y_all])
    columns = torch.zeros(n + m, 2, dtype=dtype, device=x.device)  # [1 on x's rows | 1 on y's rows]
    columns[:n, 0] = 1.0
    columns[n:, 1] = 1.0
    x_rows = kernel_matmul_unchecked(x, pooled, columns, sigmas, kernel, backend).to(torch.float64)
    y_rows = kernel_matmul_unchecked(y, y_all, columns[n:, 1:], sigmas, kernel, backend).to(torch.float64)
    sums = all_sum(torch.stack([x_rows[:, 0].sum(), y_rows[:, 0].sum(), x_rows[:, 1].sum()]), group)
    if estimator == "biased":
        coef, const = (1.0 / n ** 2, 1.0 / m ** 2, -2.0 / (n * m)), 0.0
    else:  # k(z, z) = 1 for both kernels: the diagonals are removed analytically
        coef = (1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m))
        const = -(n * coef[0] + m * coef[1])
    return sums @ torch.tensor(coef, dtype=torch.float64, device=sums.device) + const


def mmd2(x, y, sigma=None, kernel: str = "gaussian", estimator: str = "biased", group=None,
         ddp_scale: bool = False, backend: str = "auto") -> torch.Tensor:
    r"""MMD² of the global samples $X = [X_0; \dots; X_{W-1}]$, $Y = [Y_0; \dots; Y_{W-1}]$.

    $$\mathrm{MMD}^2 = c_{xx} \sum_r \mathbf 1^\top K(X_r, X)\mathbf 1 + c_{yy} \sum_r \mathbf 1^\top
      K(Y_r, Y)\mathbf 1 + c_{xy} \sum_r \mathbf 1^\top K(X_r, Y)\mathbf 1 + c_0$$

    biased: $c_{xx} = 1/n^2, c_{yy} = 1/m^2, c_{xy} = -2/(nm), c_0 = 0$; unbiased:
    $c_{xx} = 1/(n(n-1)), c_{yy} = 1/(m(m-1)), c_{xy} = -2/(nm), c_0 = -(n c_{xx} + m c_{yy})$
    ($k(z, z) = 1$ removed), with $n = \sum_r n_r$, $m = \sum_r m_r$. Rank r computes the
    sums over its own rows with the fused ``kernel_matmul`` and the sums are all-reduced.
    ``sigma=None``: :func:`tlkit.median_bandwidth` of the gathered global samples (the same on every rank and
    as in the single-process op); a sequence averages the kernels.

    Shapes: ``x`` (n_r, d), ``y`` (m_r, d) per rank, ≥ 1 row each → a 0-dim float64 tensor, equal on every rank.
    ``ddp_scale=True`` multiplies the gradient by W for DDP (module docstring). Used in lesson 17.
    """
    estimator = check.check_choice(estimator, "estimator", ESTIMATORS)
    kernel = check.check_choice(kernel, "kernel", KERNELS)
    x, y, counts_x, counts_y = _check_shards(x, y, group, min_rows=2 if estimator == "unbiased" else 1)
    x_all, y_all = gather_rows(x, group, counts_x), gather_rows(y, group, counts_y)
    if sigma is None:
        sigma = median_bandwidth(x_all, y_all)
    sigmas = check.check_bandwidths(sigma, max_count=MAX_BANDWIDTHS)
    dtype = _compute_dtype(x, y)
    loss = _mmd2_sharded(x.to(dtype), y.to(dtype), counts_x, counts_y, sigmas, kernel, estimator, group,
                         backend, gathered=(x_all.to(dtype), y_all.to(dtype)))
    return _finish(loss, group, ddp_scale)


def mk_mmd2(x, y, num_kernels: int = 5, multiplier: float = 2.0, sigma: float | None = None,
            estimator: str = "biased", group=None, ddp_scale: bool = False, backend: str = "auto") -> torch.Tensor:
    r"""Multi-kernel MMD² of DAN on the global samples: :func:`mmd2` with the mean of Gaussian kernels at

    $$\sigma_u = \sigma_0\,\gamma^{\,u - \lceil K/2 \rceil}, \quad u = 1, \dots, K$$

    ($\sigma_0$ = ``sigma`` or the global median heuristic, $\gamma$ = ``multiplier``, K =
    ``num_kernels``), as ``tl.feature.MKMMDLoss``. Shapes as :func:`mmd2`. Used in lesson 17.
    """
    num_kernels = check.check_in_range(num_kernels, "num_kernels", low=1, high=MAX_BANDWIDTHS, integer=True)
    multiplier = check.check_in_range(multiplier, "multiplier", low=1, low_inclusive=False)
    if sigma is None:
        x, y, counts_x, counts_y = _check_shards(x, y, group)
        base = median_bandwidth(gather_rows(x.detach(), group, counts_x), gather_rows(y.detach(), group, counts_y))
    else:
        base = check.check_positive(sigma, "sigma")
    centre = (num_kernels + 1) // 2
    sigmas = [base * multiplier ** (u - centre) for u in range(1, num_kernels + 1)]
    return mmd2(x, y, sigma=sigmas, estimator=estimator, group=group, ddp_scale=ddp_scale, backend=backend)


def joint_mmd2(xs: Sequence, ys: Sequence, sigmas: Sequence[float] | None = None, estimator: str = "biased",
               group=None, ddp_scale: bool = False, backend: str = "auto") -> torch.Tensor:
    r"""Joint MMD² of JAN (Long et al. 2017) over L layers on the global samples, with the product kernel

    $$k(a, b) = \prod_{l=1}^{L} \exp\!\Big(-\frac{\lVert a^l - b^l\rVert^2}{2\sigma_l^2}\Big)
      = \exp\!\Big(-\tfrac12 \big\lVert [a^l/\sigma_l]_l - [b^l/\sigma_l]_l \big\rVert^2\Big)$$

    so it is :func:`mmd2` with σ = 1 on the concatenation of the layers scaled by $1/\sigma_l$.
    One Gaussian per layer (JAN's multi-kernel sum per layer does not factor this way — not covered).
    ``sigmas=None``: each layer's global median heuristic.
    Shapes: ``xs`` / ``ys`` lists of L tensors (n_r, d_l) / (m_r, d_l) → 0-dim float64. Used in lesson 17.
    """
    if not isinstance(xs, (list, tuple)) or not isinstance(ys, (list, tuple)) or len(xs) != len(ys) or not xs:
        raise ValueError("xs and ys must be non-empty lists of per-layer tensors of equal length, got "
                         f"{type(xs).__name__} and {type(ys).__name__}")
    if sigmas is not None and len(sigmas) != len(xs):
        raise ValueError(f"sigmas must have one bandwidth per layer ({len(xs)}), got {len(sigmas)}")
    scaled_x, scaled_y = [], []
    for layer, (x, y) in enumerate(zip(xs, ys)):
        x, y, counts_x, counts_y = _check_shards(x, y, group, names=(f"xs[{layer}]", f"ys[{layer}]"))
        if sigmas is None:
            sigma = median_bandwidth(gather_rows(x.detach(), group, counts_x),
                                     gather_rows(y.detach(), group, counts_y))
        else:
            sigma = check.check_positive(sigmas[layer], f"sigmas[{layer}]")
        dtype = _compute_dtype(x, y)
        scaled_x.append(x.to(dtype) / sigma)
        scaled_y.append(y.to(dtype) / sigma)
    return mmd2(torch.cat(scaled_x, dim=1), torch.cat(scaled_y, dim=1), sigma=1.0, estimator=estimator,
                group=group, ddp_scale=ddp_scale, backend=backend)


def coral_loss(x, y, group=None, ddp_scale: bool = False) -> torch.Tensor:
    r"""Deep CORAL loss of the global samples from all-reduced moments (no features are gathered):

    $$\ell = \frac{1}{4d^2}\lVert C_x - C_y\rVert_F^2, \qquad
      C = \frac{1}{n-1}\Big(\sum_r X_r^\top X_r - \frac{1}{n} s s^\top\Big), \quad s = \sum_r X_r^\top \mathbf 1$$

    Shapes: ``x`` (n_r, d), ``y`` (m_r, d) per rank, ≥ 1 row each and ≥ 2 in total → 0-dim tensor of the
    input dtype (float32 or float64), as ``tl.feature.CORALLoss``. Used in lesson 17.
    """
    x, y, counts_x, counts_y = _check_shards(x, y, group, min_rows=2)
    dtype = _compute_dtype(x, y)

    def global_covariance(z, total):
        z = z.to(dtype)
        first, second = all_sum(z.sum(0), group), all_sum(z.T @ z, group)
        return (second - torch.outer(first, first) / total) / (total - 1)

    d = x.shape[1]
    loss = (global_covariance(x, sum(counts_x)) - global_covariance(y, sum(counts_y))).pow(2).sum() / (4 * d * d)
    return _finish(loss, group, ddp_scale)


def mmd_test(Xs, Xt, n_permutations: int = 1000, sigma=None, kernel: str = "gaussian", random_state=None,
             batch_size: int = 256, group=None, backend: str = "auto") -> tuple[float, float]:
    r"""``tl.metrics.mmd_test`` on sharded samples: the same unbiased statistic and permutation p-value

    $$p = \frac{1 + \#\{b : T_b \ge T\}}{1 + B}$$

    as the single-process test on the concatenated data with the same ``random_state``. Every rank draws the same
    splits of the pooled global sample $z = [X; Y]$, computes $K(z_r, z)\,V$ for its own rows
    $z_r$ only, and the quadratic forms of each batch are all-reduced (2·``batch_size`` numbers).
    Shapes: ``Xs`` (n_r, d), ``Xt`` (m_r, d) per rank, ≥ 1 row each, ≥ 2 in total → ``(statistic, p_value)``
    floats, equal on every rank. Used in lesson 17.
    """
    xs, xt, counts_x, counts_y = _check_shards(Xs, Xt, group, names=("Xs", "Xt"), min_rows=2)
    n_permutations = check.check_positive_int(n_permutations, "n_permutations")
    batch_size = check.check_positive_int(batch_size, "batch_size")
    kernel = check.check_choice(kernel, "kernel", KERNELS)
    rng = check.check_random_state(random_state)
    rank, _ = world(group)
    dtype = _compute_dtype(xs, xt)
    xs, xt = xs.detach().to(dtype), xt.detach().to(dtype)
    x_all, y_all = gather_rows(xs, group, counts_x), gather_rows(xt, group, counts_y)
    n, m = x_all.shape[0], y_all.shape[0]
    sigmas = check.check_bandwidths(median_bandwidth(x_all, y_all) if sigma is None else sigma,
                                    max_count=MAX_BANDWIDTHS)
    pooled, local = torch.cat([x_all, y_all]), torch.cat([xs, xt])
    start_x, start_y = sum(counts_x[:rank]), n + sum(counts_y[:rank])
    own = torch.cat([torch.arange(start_x, start_x + xs.shape[0]), torch.arange(start_y, start_y + xt.shape[0])])
    own = own.to(pooled.device)

    def own_quadratic_forms(v):  # this rank's terms of a^T K a and a^T K 1 for each column a of v
        kv = kernel_matmul_unchecked(local, pooled, v, sigmas, kernel, backend).to(torch.float64)
        return kv, v[own].to(torch.float64)

    observed = torch.zeros(n + m, 1, dtype=dtype, device=pooled.device)
    observed[:n] = 1.0
    kv, _ = own_quadratic_forms(torch.ones_like(observed))
    row_sums_local = kv[:, 0]  # this rank's rows of K 1
    total = float(all_sum(row_sums_local.sum(), group))

    def statistics(assignments):
        kv, a = own_quadratic_forms(assignments)
        within_first, first_rows = all_sum(torch.stack([(a * kv).sum(0), a.T @ row_sums_local]), group)
        cross = first_rows - within_first
        within_second = total - 2.0 * first_rows + within_first
        return ((within_first - n) / (n * (n - 1)) + (within_second - m) / (m * (m - 1)) - 2.0 * cross / (n * m))

    statistic = float(statistics(observed)[0])
    template = np.zeros(n + m, dtype=bool)
    template[:n] = True
    null = []
    for start in range(0, n_permutations, batch_size):
        count = min(batch_size, n_permutations - start)
        splits = rng.permuted(np.tile(template, (count, 1)), axis=1).T
        null.append(statistics(torch.from_numpy(splits).to(device=pooled.device, dtype=dtype)))
    null = torch.cat(null)
    p_value = (1.0 + float((null >= statistic).sum())) / (1.0 + n_permutations)
    return statistic, p_value
