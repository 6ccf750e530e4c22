"""The pure-PyTorch backend: the same four primitives as the C++/CUDA ops, in row chunks.

This is both the fallback when no extension is available and the readable statement of what the fused
kernels compute. Each function holds at most one ``rows × m`` tile of pairwise values at a time, so it too
never materialises the full n×m matrix. Kernel ids: 0 = gaussian, 1 = laplacian.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

# Largest tile of pairwise values held at once (elements); 4M floats = 16 MB in fp32.
TILE_ELEMENTS = 1 << 22


def row_chunks(n: int, m: int):
    """Slices of rows whose tile against m columns fits in TILE_ELEMENTS."""
    rows = max(1, TILE_ELEMENTS // max(m, 1))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


# From this many features on, the gaussian kernel's distances take the GEMM form ‖p‖² + ‖q‖² − 2 p·q (as the C++
# ops do); below, and always for the laplacian (whose sqrt amplifies the form's absolute error near r = 0), they
# are direct differences.
GEMM_MIN_DIM = 24
# Near pairs, r² below this many ulps of ‖p‖² + ‖q‖², are always recomputed: BLAS rounding dominates them.
REFINE_RATIO = 4096
# Relative accuracy each kernel value (and φ) keeps; GEMM-form pairs that could miss it are recomputed.
GUARD_TOLERANCE = {torch.float32: 4e-6, torch.float64: 1e-13}
# torch.exp(−t) is exactly 0 from t = 150 ln 2 (float32) / 1075 ln 2 (float64) on, subnormals included.
EXP_CUTOFF = {torch.float32: 150 * math.log(2), torch.float64: 1075 * math.log(2)}


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² from direct differences: exact zeros for duplicate rows, no cancellation."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()


class Guard(NamedTuple):
    """Which GEMM-form pairs are recomputed from the caller's rows (the C++ ops' ``RefineGuard``, pairwise.h).

    The form's error grows with the centred norms, not with r²: |r²_gemm − r²| ≲ err = u (2√d |p·q| + 2(‖p‖² +
    ‖q‖²)), u the unit roundoff. A term exp(−rate_s r²) turns it into a relative error rate_s · err; a pair is
    recomputed when ``rate`` · err > ``tol`` and the widest term (the smallest rate) is not 0 either way."""
    rate: float         # the mean rate (kernel), Σ rate² / Σ rate (φ), or the largest (separate terms)
    widest: float       # the smallest rate
    near: float         # r² < near (‖p‖² + ‖q‖²) is recomputed in any case
    dot_weight: float   # err = dot_weight |p·q| + norm_weight (‖p‖² + ‖q‖²)
    norm_weight: float
    tol: float
    cutoff: float


def kernel_guard(sigmas, dtype: torch.dtype, d: int, need_phi: bool = False, per_term: bool = False) -> Guard:
    """The guard of a gaussian kernel op. ``need_phi``: the op sums φ (p − q) in the expanded form p Σφ − Σφ q,
    whose error in one pair's term is about u √(2(‖p‖² + ‖q‖²) / r²) relative, so pairs with r² < 2u²/tol²
    (‖p‖² + ‖q‖²) are recomputed and their gradient terms taken from direct differences."""
    u, tol = torch.finfo(dtype).eps / 2, GUARD_TOLERANCE[dtype]
    rates = [0.5 / s**2 for s in sigmas]
    rate = max(rates) if per_term else sum(r * r for r in rates) / sum(rates) if need_phi else sum(rates) / len(rates)
    near = REFINE_RATIO * 2 * u
    if need_phi:
        near = max(near, 2 * u * u / tol**2)
    return Guard(rate, min(rates), near, 2 * math.sqrt(d) * u, 2 * u, tol, EXP_CUTOFF[dtype])


def refine_mask(r2: torch.Tensor, norms: torch.Tensor, guard: Guard) -> torch.Tensor:
    """Pairs of a GEMM-form tile (r², ‖p‖² + ‖q‖²) that ``guard`` selects for recomputation."""
    err = guard.dot_weight * (0.5 * (norms - r2)).abs_() + guard.norm_weight * norms  # |p·q| = |norms − r²| / 2
    loose = (guard.rate * err > guard.tol) & (guard.widest * (r2 - err) < guard.cutoff)
    return loose | (r2 < guard.near * norms)


def pair_chunks(count: int, d: int):
    """Slices of a list of index pairs whose d-dimensional differences fit in TILE_ELEMENTS values."""
    step = max(1, TILE_ELEMENTS // d)
    for start in range(0, count, step):
        yield slice(start, min(count, start + step))


def direct_sq_distances(a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for index pairs (i, j), in float64."""
    out = torch.empty(len(i), dtype=torch.float64, device=a.device)
    for c in pair_chunks(len(i), a.shape[1]):
        out[c] = (a[i[c]].double() - b[j[c]].double()).square_().sum(1)
    return out


class PairTiles:
    """Row tiles of the squared distances between a and b, as the kernel ops read them.

    ``guard`` given (gaussian, d ≥ GEMM_MIN_DIM): the GEMM form on the clouds centred on their common mean, with
    the pairs ``refine_mask`` selects recomputed directly in float64 from the caller's rows; ``tile`` returns them
    as (i, j) too. Otherwise direct differences. A symmetric problem (a is b) gets exact zeros on its diagonal."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, guard: Guard | None):
        self.a, self.b, self.guard, self.symmetric = a, b, guard, a is b
        self.gemm = guard is not None
        centre = torch.cat([a, b]).mean(0)
        self.ac, self.bc = a - centre, b - centre  # centred rows: the expanded forms lose less to cancellation
        self.an, self.bn = (self.ac * self.ac).sum(1), (self.bc * self.bc).sum(1)

    def tile(self, rows: slice):
        """(r², (i, j)): the tile's squared distances and its recomputed pairs (local row, column)."""
        none = torch.empty(0, dtype=torch.long, device=self.a.device)
        if not self.gemm:
            return squared_distances(self.a[rows], self.b), (none, none)
        norms = self.an[rows, None] + self.bn
        r2 = (norms - 2.0 * (self.ac[rows] @ self.bc.T)).clamp_min_(0.0)
        mask = refine_mask(r2, norms, self.guard)
        if self.symmetric:
            local = torch.arange(r2.shape[0], device=r2.device)
            r2[local, local + rows.start] = 0.0
            mask[local, local + rows.start] = False
        i, j = mask.nonzero(as_tuple=True)
        r2[i, j] = direct_sq_distances(self.a, self.b, i + rows.start, j).to(r2.dtype)
        return r2, (i, j)


def _gemm_guard(x, kernel: int, sigmas, need_phi: bool = False, per_term: bool = False):
    if kernel != 0 or x.shape[1] < GEMM_MIN_DIM:
        return None
    return kernel_guard(sigmas, x.dtype, x.shape[1], need_phi, per_term)


def kernel_and_phi(r2: torch.Tensor, sigmas, kernel: int, need_phi: bool):
    """k = mean_s k_s(r) and φ with ∂k(a, b)/∂a = −φ·(a − b); φ = 0 where r = 0 for the laplacian."""
    k = torch.zeros_like(r2)
    phi = torch.zeros_like(r2) if need_phi else None
    r = r2.sqrt() if kernel == 1 else None
    for sigma in sigmas:
        ks = torch.exp(r2 * (-0.5 / sigma**2)) if kernel == 0 else torch.exp(r * (-1.0 / sigma))
        k += ks
        if need_phi:
            phi += ks / sigma**2 if kernel == 0 else torch.where(r > 0, ks / (sigma * r), torch.zeros_like(r))
    scale = 1.0 / len(sigmas)
    return k * scale, (phi * scale if need_phi else None)


def nearest(x: torch.Tensor, y: torch.Tensor):
    """(dist, index): Euclidean distance from each x_i to its nearest y_j, and j (ties → smallest j)."""
    index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        index[rows] = squared_distances(x[rows], y).argmin(1)
    dist = (x - y[index]).norm(dim=1)  # exact distance of the winner
    return dist, index


def kernel_matmul(x, y, v, sigmas, kernel: int):
    """out_i = Σ_j k(x_i, y_j) v_j, shape (n, k)."""
    tiles = PairTiles(x, y, _gemm_guard(x, kernel, sigmas))
    out = torch.empty(x.shape[0], v.shape[1], dtype=x.dtype, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        r2, _ = tiles.tile(rows)
        out[rows] = kernel_and_phi(r2, sigmas, kernel, need_phi=False)[0] @ v
    return out


def kernel_matmul_multi(x, y, v, sigmas, kernel: int):
    """out[s] = K_s(x, y) v for every bandwidth s separately (no mean), shape (S, n, k)."""
    tiles = PairTiles(x, y, _gemm_guard(x, kernel, sigmas, per_term=True))
    out = torch.empty(len(sigmas), x.shape[0], v.shape[1], dtype=x.dtype, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        r2, _ = tiles.tile(rows)
        for s, sigma in enumerate(sigmas):
            out[s, rows] = kernel_and_phi(r2, [sigma], kernel, need_phi=False)[0] @ v
    return out


def kernel_pair_grad(a, b, A, B, sigmas, kernel: int):
    """out_i = Σ_j (A_i · B_j) φ(a_i, b_j) (a_i − b_j), shape (n, d).

    Below GEMM_MIN_DIM features: the sum of direct differences, d values per pair (in sub-tiles). From it on: the
    expanded sum (Σ_j w_ij) p_i − Σ_j w_ij q_j on the centred rows p, q, except for the pairs whose terms it would
    lose to cancellation (``kernel_guard``'s φ rule): those are added in float64 from direct differences of the
    caller's rows."""
    expanded = a.shape[1] >= GEMM_MIN_DIM
    tiles = PairTiles(a, b, _gemm_guard(a, kernel, sigmas, need_phi=True))
    near = kernel_guard(sigmas, a.dtype, a.shape[1], need_phi=True).near
    out = torch.empty_like(a)
    for rows in row_chunks(a.shape[0], b.shape[0]):
        r2, (i, j) = tiles.tile(rows)
        weight = (A[rows] @ B.T) * kernel_and_phi(r2, sigmas, kernel, need_phi=True)[1]
        if tiles.symmetric:  # a_i − a_i = 0 exactly: keep the diagonal out of the expanded sum
            local = torch.arange(weight.shape[0], device=a.device)
            weight[local, local + rows.start] = 0.0
        if not expanded:
            for sub in row_chunks(weight.shape[0], b.shape[0] * a.shape[1]):
                diff = a[rows][sub, None, :] - b[None]
                out[rows][sub] = (weight[sub, :, None] * diff).sum(1)
            continue
        if not tiles.gemm:  # direct distances (the laplacian): the expanded sum's near pairs
            i, j = (r2 < near * (tiles.an[rows, None] + tiles.bn)).nonzero(as_tuple=True)
        direct = weight[i, j].double()
        weight[i, j] = 0.0
        acc = (weight.sum(1, keepdim=True) * tiles.ac[rows] - weight @ tiles.bc).double()
        for c in pair_chunks(len(i), a.shape[1]):
            acc.index_add_(0, i[c], direct[c, None] * (a[i[c] + rows.start].double() - b[j[c]].double()))
        out[rows] = acc.to(a.dtype)
    return out


def mmd2_terms(x, y, wx, wy, coef, sigmas, kernel: int, compute_grad: bool):
    """[Σ wx wx k(x,x), Σ wy wy k(y,y), Σ wx wy k(x,y)] in float64, and the gradients of coef · terms."""
    wxc, wyc = wx[:, None], wy[:, None]
    terms = torch.stack([
        (wx.double() * kernel_matmul(x, x, wxc, sigmas, kernel)[:, 0].double()).sum(),
        (wy.double() * kernel_matmul(y, y, wyc, sigmas, kernel)[:, 0].double()).sum(),
        (wx.double() * kernel_matmul(x, y, wyc, sigmas, kernel)[:, 0].double()).sum(),
    ])
    if not compute_grad:
        empty = x.new_empty(0)
        return terms, empty, empty
    c_xx, c_yy, c_xy = coef
    gx = -(2 * c_xx * kernel_pair_grad(x, x, wxc, wxc, sigmas, kernel) + c_xy * kernel_pair_grad(x, y, wxc, wyc, sigmas, kernel))
    gy = -(2 * c_yy * kernel_pair_grad(y, y, wyc, wyc, sigmas, kernel) + c_xy * kernel_pair_grad(y, x, wyc, wxc, sigmas, kernel))
    return terms, gx, gy
