"""The fused CUDA kernels (backend="cuda") against float64 brute-force formulas and the CPU backends.

Skipped without a CUDA device. Sizes are chosen to cross the kernels' internal boundaries: several row blocks
and column tiles with partial last ones, several column splits (small n) and a single split (n > 4 x SMs x 128),
and feature dimensions over one chunk of 32 (d = 64, 300).
"""
import math

import pytest
import torch

import tlkit as tl
from tlkit.kernels import _library
from tlkit.kernels.ops import KERNELS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CPU_BACKEND = "cpp" if _library.CPP.loaded else "torch"
DTYPES = [torch.float32, torch.float64]
DIMS = [1, 3, 64, 300]
SIGMA_SETS = [[1.0], [0.5, 1.0, 2.0]]


def rtol(dtype, d):
    """Relative to the sum of absolute terms: d squared differences summed per distance, an exp whose argument
    is O(1) here (so its error is about the distance's), then a two-level sum; a generous constant on top."""
    return 16 * (d + 16) * torch.finfo(dtype).eps


def clouds(n, m, d, dtype, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 0.3
    return x.to(device, dtype), y.to(device, dtype)


def sigmas_for(d, scale):
    return [s * math.sqrt(2 * d) for s in scale]  # around the median distance of the clouds above


# ---------------------------------------------------------------- float64 dense oracle (on the CPU)
def dense_k_phi(a, b, sigmas, kernel):
    diff = a.double().cpu()[:, None, :] - b.double().cpu()[None, :, :]
    r2 = (diff**2).sum(-1)
    r = r2.sqrt()
    if kernel == "gaussian":
        ks = torch.stack([torch.exp(-r2 / (2 * s**2)) for s in sigmas])
        phi = torch.stack([k / s**2 for k, s in zip(ks, sigmas)]).mean(0)
    else:
        ks = torch.stack([torch.exp(-r / s) for s in sigmas])
        phi = torch.stack([k / s for k, s in zip(ks, sigmas)]).mean(0)
        phi = torch.where(r > 0, phi / r.clamp_min(1e-300), torch.zeros_like(phi))
    return ks.mean(0), phi, diff


def assert_close_scaled(got, want, scale, tol, what):
    err = (got.double().cpu() - want).abs()
    bound = tol * scale + 1e-300
    worst = (err / bound).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"{what}: error {err.max().item():.3e} exceeds {tol:.1e} x scale (ratio {worst:.2f})"


# ---------------------------------------------------------------- nearest
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
def test_nearest_matches_brute_force(dtype, d):
    x, y = clouds(301, 517, d, dtype)
    dist, index = tl.nearest(x, y, backend="cuda")
    full = ((x.double().cpu()[:, None, :] - y.double().cpu()[None, :, :]) ** 2).sum(-1).sqrt()  # no GEMM form
    best = full.min(1).values
    assert index.dtype == torch.int64 and dist.dtype == dtype
    tol = rtol(dtype, d) * (best + 1)
    assert ((dist.double().cpu() - best).abs() <= tol).all()
    # the returned index attains the minimum (up to rounding; exact ties are tested below)
    assert ((full.gather(1, index.cpu()[:, None])[:, 0] - best).abs() <= tol).all()
    if dtype == torch.float64:
        assert torch.equal(index.cpu(), full.argmin(1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_ties_pick_smallest_index_across_tiles(dtype):
    x, y = clouds(50, 700, 5, dtype)
    y[650] = x[3]  # same point in two far-apart column tiles (and splits): the smaller index must win
    y[20] = x[3]
    y[400] = x[7]
    _, index = tl.nearest(x, y, backend="cuda")
    assert index[3].item() == 20 and index[7].item() == 400


def test_nearest_matches_cpu_backend():
    x, y = clouds(1000, 777, 3, torch.float64)
    dist, index = tl.nearest(x, y, backend="cuda")
    dist_cpu, index_cpu = tl.nearest(x.cpu(), y.cpu(), backend=CPU_BACKEND)
    assert torch.equal(index.cpu(), index_cpu)
    torch.testing.assert_close(dist.cpu(), dist_cpu, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- kernel_matmul / kernel_sum
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("scale", SIGMA_SETS)
def test_kernel_matmul_matches_brute_force(dtype, d, kernel, scale):
    x, y = clouds(203, 131, d, dtype)
    v = torch.randn(131, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to("cuda", dtype)
    sigmas = sigmas_for(d, scale)
    got = tl.kernel_matmul(x, y, v, sigmas, kernel, backend="cuda")
    k, _, _ = dense_k_phi(x, y, sigmas, kernel)
    vd = v.double().cpu()
    assert got.shape == (203, 5) and got.dtype == dtype
    assert_close_scaled(got, k @ vd, k @ vd.abs(), rtol(dtype, d), "K v")


def test_kernel_sum_single_split_path_matches_cpu_backend():
    # more than 4 x 132 x 128 rows: one column split per row block even on the largest GPUs
    x, y = clouds(70_000, 45, 2, torch.float64)
    w = torch.rand(45, dtype=torch.float64, device="cuda")
    got = tl.kernel_sum(x, y, 0.7, "laplacian", weights=w, backend="cuda")
    want = tl.kernel_sum(x.cpu(), y.cpu(), 0.7, "laplacian", weights=w.cpu(), backend=CPU_BACKEND)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- kernel_pair_grad (the backward primitive)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("scale", SIGMA_SETS)
def test_kernel_pair_grad_matches_formula(dtype, d, kernel, scale):
    a, b = clouds(97, 150, d, dtype)
    g = torch.Generator().manual_seed(2)
    A = torch.randn(97, 40, generator=g, dtype=torch.float64).to("cuda", dtype)  # k = 40: two chunks
    B = torch.randn(150, 40, generator=g, dtype=torch.float64).to("cuda", dtype)
    b[0] = a[0]  # a zero distance (phi = 0 there for the Laplacian)
    sigmas = sigmas_for(d, scale)
    tl.kernel_sum(a[:1], b[:1], sigmas, backend="cuda")  # loads the library
    got = torch.ops.tlkit.kernel_pair_grad(a, b, A, B, sigmas, KERNELS[kernel])
    _, phi, diff = dense_k_phi(a, b, sigmas, kernel)
    c = (A.double().cpu() @ B.double().cpu().T) * phi
    want = (c[:, :, None] * diff).sum(1)
    scale_ = (c.abs()[:, :, None] * diff.abs()).sum(1)
    assert torch.isfinite(got).all()
    assert_close_scaled(got, want, scale_, rtol(dtype, d), "pair_grad")


# ---------------------------------------------------------------- mmd2_terms and tl.mmd2
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("scale", SIGMA_SETS)
def test_mmd2_terms_and_gradients_match_formula(dtype, d, kernel, scale):
    n, m = 180, 230
    x, y = clouds(n, m, d, dtype)
    g = torch.Generator().manual_seed(3)
    wx = torch.rand(n, generator=g, dtype=torch.float64).to("cuda", dtype)
    wy = torch.rand(m, generator=g, dtype=torch.float64).to("cuda", dtype)
    coef = [0.7, -0.4, 1.9]
    sigmas = sigmas_for(d, scale)
    tl.kernel_sum(x[:1], y[:1], sigmas, backend="cuda")  # loads the library
    terms, gx, gy = torch.ops.tlkit.mmd2_terms(x, y, wx, wy, coef, sigmas, KERNELS[kernel], True)
    _, gx0, gy0 = torch.ops.tlkit.mmd2_terms(x, y, wx, wy, coef, sigmas, KERNELS[kernel], False)
    assert terms.dtype == torch.float64 and gx.dtype == dtype and gx0.numel() == 0 and gy0.numel() == 0
    a, b = wx.double().cpu(), wy.double().cpu()
    kxx, pxx, dxx = dense_k_phi(x, x, sigmas, kernel)
    kyy, pyy, dyy = dense_k_phi(y, y, sigmas, kernel)
    kxy, pxy, dxy = dense_k_phi(x, y, sigmas, kernel)
    want = torch.stack([a @ kxx @ a, b @ kyy @ b, a @ kxy @ b])
    scale_t = torch.stack([a @ kxx @ a, b @ kyy @ b, a @ kxy @ b])  # all terms are non-negative here
    assert_close_scaled(terms, want, scale_t, rtol(dtype, d), "terms")
    cxx = 2 * coef[0] * a[None, :] * pxx
    cxy = coef[2] * b[None, :] * pxy
    gx_want = -a[:, None] * ((cxx[:, :, None] * dxx).sum(1) + (cxy[:, :, None] * dxy).sum(1))
    gx_scale = a[:, None] * ((cxx.abs()[:, :, None] * dxx.abs()).sum(1) + (cxy.abs()[:, :, None] * dxy.abs()).sum(1))
    cyy = 2 * coef[1] * b[None, :] * pyy
    cyx = coef[2] * a[:, None] * pxy  # (n, m): weight of x_i in gy_j
    gy_want = -b[:, None] * ((cyy[:, :, None] * dyy).sum(1) + (cyx[:, :, None] * -dxy).sum(0))
    gy_scale = b[:, None] * ((cyy.abs()[:, :, None] * dyy.abs()).sum(1) + (cyx.abs()[:, :, None] * dxy.abs()).sum(0))
    assert_close_scaled(gx, gx_want, gx_scale, rtol(dtype, d), "gx")
    assert_close_scaled(gy, gy_want, gy_scale, rtol(dtype, d), "gy")


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_mmd2_and_its_gradient_match_cpu_backend(estimator, kernel):
    x, y = clouds(150, 97, 7, torch.float64)
    x.requires_grad_(True)
    y.requires_grad_(True)
    value = tl.mmd2(x, y, [1.0, 3.0], kernel, estimator, backend="cuda")
    gx, gy = torch.autograd.grad(value, (x, y))
    xc, yc = x.detach().cpu().requires_grad_(True), y.detach().cpu().requires_grad_(True)
    value_cpu = tl.mmd2(xc, yc, [1.0, 3.0], kernel, estimator, backend=CPU_BACKEND)
    gxc, gyc = torch.autograd.grad(value_cpu, (xc, yc))
    torch.testing.assert_close(value.cpu(), value_cpu, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(gx.cpu(), gxc, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(gy.cpu(), gyc, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- autograd through the public API
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_mmd2_gradcheck(kernel):
    x, y = clouds(9, 7, 3, torch.float64)
    wx = torch.rand(9, dtype=torch.float64, device="cuda") + 0.5
    wy = torch.rand(7, dtype=torch.float64, device="cuda") + 0.5
    inputs = tuple(t.requires_grad_(True) for t in (x, y, wx, wy))
    assert torch.autograd.gradcheck(
        lambda a, b, p, q: tl.mmd2(a, b, [0.8, 2.0], kernel, weights_x=p, weights_y=q, backend="cuda"), inputs)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_sum_and_matmul_gradcheck(kernel):
    x, y = clouds(8, 6, 3, torch.float64)
    w = torch.rand(6, dtype=torch.float64, device="cuda")
    v = torch.randn(6, 2, dtype=torch.float64, device="cuda")
    for t in (x, y, w, v):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: tl.kernel_sum(a, b, [0.7, 1.5], kernel, c, backend="cuda"),
                                    (x, y, w))
    assert torch.autograd.gradcheck(lambda a, b, c: tl.kernel_matmul(a, b, c, 1.1, kernel, backend="cuda"), (x, y, v))


# ---------------------------------------------------------------- determinism and edge cases
def test_results_are_bit_identical_run_to_run():
    x, y = clouds(3000, 2500, 64, torch.float32)
    v = torch.randn(2500, 3, device="cuda")

    def run():
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        value = tl.mmd2(xg, yg, [1.0, 8.0], "gaussian", backend="cuda")
        gx, gy = torch.autograd.grad(value, (xg, yg))
        return value, gx, gy, tl.kernel_matmul(x, y, v, 4.0, "laplacian", backend="cuda"), *tl.nearest(x, y, "cuda")

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("dtype", DTYPES)
def test_laplacian_at_zero_distance_has_finite_gradient(dtype):
    x, _ = clouds(40, 1, 4, dtype)
    x = torch.cat([x, x[:5]])  # duplicated rows inside x, and y shares rows with x
    y = torch.cat([x[10:20], x[:3]]).clone()
    xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    value = tl.mmd2(xg, yg, [0.5, 2.0], "laplacian", backend="cuda")
    gx, gy = torch.autograd.grad(value, (xg, yg))
    assert torch.isfinite(value) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    xc, yc = x.double().cpu().requires_grad_(True), y.double().cpu().requires_grad_(True)
    value_cpu = tl.mmd2(xc, yc, [0.5, 2.0], "laplacian", backend=CPU_BACKEND)
    gxc, gyc = torch.autograd.grad(value_cpu, (xc, yc))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gx.double().cpu(), gxc, rtol=tol, atol=tol * gxc.abs().max().item())
    torch.testing.assert_close(gy.double().cpu(), gyc, rtol=tol, atol=tol * gyc.abs().max().item())
