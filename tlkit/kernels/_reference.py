"""The pure-PyTorch backend: the same four primitives as the C++/CUDA ops, in row chunks.

This is both the fallback when no extension is available and the readable statement of what the fused
kernels compute. Each function holds at most one ``rows × m`` tile of pairwise values at a time, so it too
never materialises the full n×m matrix. Kernel ids: 0 = gaussian, 1 = laplacian.
"""
from __future__ import annotations

import torch

# Largest tile of pairwise values held at once (elements); 4M floats = 16 MB in fp32.
TILE_ELEMENTS = 1 << 22


def row_chunks(n: int, m: int):
    rows = max(1, TILE_ELEMENTS // max(m, 1))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


# Up to this many features, distances are direct differences (exact zeros); above, the GEMM form.
DIRECT_MAX_DIM = 32


def squared_distances(a: torch.Tensor, b: torch.Tensor, diagonal_at: int | None = None,
                      exact: bool = False) -> torch.Tensor:
    """‖a_i − b_j‖² for a tile. Callers centre the data first; ``diagonal_at`` = row offset of a tile of a
    symmetric problem (a is a row block of b), whose diagonal is then exactly 0. ``exact`` forces direct
    differences: the laplacian needs r = sqrt(r²), which turns the GEMM form's tiny absolute errors near
    r = 0 into large ones."""
    if exact or a.shape[1] <= DIRECT_MAX_DIM:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()
    r2 = ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)).clamp_min_(0.0)
    if diagonal_at is not None:
        rows = torch.arange(a.shape[0], device=a.device)
        r2[rows, rows + diagonal_at] = 0.0
    return r2


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


def _centred(*tensors):
    centre = torch.cat([t for t in tensors]).mean(0)
    return [t - centre for t in tensors]


def nearest(x: torch.Tensor, y: torch.Tensor):
    """(dist, index): Euclidean distance from each x_i to its nearest y_j, and j (ties → smallest j)."""
    xc, yc = _centred(x, y)
    index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        index[rows] = squared_distances(xc[rows], yc, exact=True).argmin(1)
    dist = (x - y[index]).norm(dim=1)  # exact distance of the winner
    return dist, index


def kernel_matmul(x, y, v, sigmas, kernel: int):
    """out_i = Σ_j k(x_i, y_j) v_j, shape (n, k)."""
    xc, yc = _centred(x, y)
    out = torch.empty(x.shape[0], v.shape[1], dtype=x.dtype, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        r2 = squared_distances(xc[rows], yc, rows.start if x is y else None, exact=kernel == 1)
        k, _ = kernel_and_phi(r2, sigmas, kernel, need_phi=False)
        out[rows] = k @ v
    return out


def kernel_matmul_multi(x, y, v, sigmas, kernel: int):
    """out[s] = K_s(x, y) v for every bandwidth s separately (no mean), shape (S, n, k)."""
    xc, yc = _centred(x, y)
    out = torch.empty(len(sigmas), x.shape[0], v.shape[1], dtype=x.dtype, device=x.device)
    for rows in row_chunks(x.shape[0], y.shape[0]):
        r2 = squared_distances(xc[rows], yc, rows.start if x is y else None, exact=kernel == 1)
        for s, sigma in enumerate(sigmas):
            k, _ = kernel_and_phi(r2, [sigma], kernel, need_phi=False)
            out[s, rows] = k @ v
    return out


def kernel_pair_grad(a, b, A, B, sigmas, kernel: int):
    """out_i = Σ_j (A_i · B_j) φ(a_i, b_j) (a_i − b_j), shape (n, d)."""
    ac, bc = _centred(a, b)
    out = torch.empty_like(a)
    for rows in row_chunks(a.shape[0], b.shape[0]):
        r2 = squared_distances(ac[rows], bc, rows.start if a is b else None, exact=kernel == 1)
        _, phi = kernel_and_phi(r2, sigmas, kernel, need_phi=True)
        coeff = (A[rows] @ B.T) * phi
        if a is b:  # a_i − a_i = 0 exactly; dropping it avoids cancellation in the expanded form below
            local = torch.arange(coeff.shape[0], device=a.device)
            coeff[local, local + rows.start] = 0.0
        out[rows] = coeff.sum(1, keepdim=True) * ac[rows] - coeff @ bc
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
