"""tlkit.kernels against float64 brute-force formulas, on every backend that runs here."""
import math
import shutil

import numpy as np
import pytest
import torch

import tlkit as tl
from tlkit.kernels import _library
from tlkit.kernels.ops import kernel_matmul_multi_unchecked

CPP_AVAILABLE = _library.CPP.loaded
BACKENDS = ["torch"] + (["cpp"] if CPP_AVAILABLE else [])
SHAPES = [(37, 53, 1), (29, 18, 2), (40, 40, 3), (23, 31, 17), (19, 26, 64), (12, 9, 512)]


# ---------------------------------------------------------------- float64 brute force (the oracle)
def dense_kernel(a, b, sigmas, kernel):
    """mean_s k_s(a_i, b_j) in float64 from direct differences (cdist without its GEMM form; its gradient is 0 at
    r = 0, so duplicate points differentiate too)."""
    r = torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if kernel == "gaussian":
        ks = [torch.exp(-r.square() / (2 * s**2)) for s in sigmas]
    else:
        ks = [torch.exp(-r / s) for s in sigmas]
    return torch.stack(ks).mean(0)


def dense_mmd2(x, y, sigmas, kernel, estimator, wx=None, wy=None):
    kxx, kyy, kxy = (dense_kernel(a, b, sigmas, kernel) for a, b in ((x, x), (y, y), (x, y)))
    n, m = len(x), len(y)
    if estimator == "biased":
        a = torch.full((n,), 1 / n, dtype=torch.float64) if wx is None else wx.double() / wx.double().sum()
        b = torch.full((m,), 1 / m, dtype=torch.float64) if wy is None else wy.double() / wy.double().sum()
        return a @ kxx @ a + b @ kyy @ b - 2 * a @ kxy @ b
    if estimator == "unbiased":
        return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                - 2 * kxy.mean())
    p = min(n, m) // 2
    h = [dense_kernel(x[2 * t:2 * t + 1], x[2 * t + 1:2 * t + 2], sigmas, kernel)
         + dense_kernel(y[2 * t:2 * t + 1], y[2 * t + 1:2 * t + 2], sigmas, kernel)
         - dense_kernel(x[2 * t:2 * t + 1], y[2 * t + 1:2 * t + 2], sigmas, kernel)
         - dense_kernel(x[2 * t + 1:2 * t + 2], y[2 * t:2 * t + 1], sigmas, kernel) for t in range(p)]
    return torch.cat(h).mean()


def clouds(n, m, d, dtype=torch.float64, shift=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(m, d, generator=g, dtype=dtype) + shift


def bandwidth(d):
    return math.sqrt(2 * d)  # about the median distance of the clouds above


# ---------------------------------------------------------------- forward values
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m,d", SHAPES)
def test_nearest_matches_brute_force(backend, n, m, d):
    x, y = clouds(n, m, d)
    dist, index = tl.nearest(x, y, backend=backend)
    full = (x[:, None] - y[None]).norm(dim=-1)
    torch.testing.assert_close(dist, full.min(1).values, rtol=1e-10, atol=1e-12)
    assert torch.equal(index, full.argmin(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_ties_pick_smallest_index(backend):
    x = torch.zeros(3, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    assert tl.nearest(x, y, backend=backend)[1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("sigmas", [[1.3], [0.5, 2.0, 4.0]])
@pytest.mark.parametrize("n,m,d", SHAPES)
def test_kernel_matmul_matches_brute_force(backend, kernel, sigmas, n, m, d):
    x, y = clouds(n, m, d)
    v = torch.randn(m, 3, dtype=torch.float64)
    scaled = [s * bandwidth(d) for s in sigmas]
    expected = dense_kernel(x, y, scaled, kernel) @ v
    torch.testing.assert_close(tl.kernel_matmul(x, y, v, scaled, kernel, backend=backend), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_sum_is_weighted_row_sum(backend):
    x, y = clouds(31, 47, 4)
    w = torch.rand(47, dtype=torch.float64)
    k = dense_kernel(x, y, [2.0], "gaussian")
    torch.testing.assert_close(tl.kernel_sum(x, y, 2.0, weights=w, backend=backend), k @ w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tl.kernel_sum(x, y, 2.0, backend=backend), k.sum(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("n,m,d", [(40, 40, 2), (37, 53, 3), (25, 19, 64), (11, 14, 512)])
def test_mmd2_matches_brute_force(backend, estimator, kernel, n, m, d):
    x, y = clouds(n, m, d)
    sigmas = [bandwidth(d), 2 * bandwidth(d)]
    value = tl.mmd2(x, y, sigmas, kernel, estimator, backend=backend)
    assert value.shape == () and value.dtype == torch.float64
    torch.testing.assert_close(value, dense_mmd2(x, y, sigmas, kernel, estimator), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_mmd2_matches_brute_force(backend):
    x, y = clouds(30, 20, 3)
    wx, wy = torch.rand(30, dtype=torch.float64), torch.rand(20, dtype=torch.float64)
    value = tl.mmd2(x, y, 2.0, weights_x=wx, weights_y=wy, backend=backend)
    torch.testing.assert_close(value, dense_mmd2(x, y, [2.0], "gaussian", "biased", wx, wy), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m", [(30, 30), (17, 41)])
def test_unbiased_is_biased_without_the_diagonals(backend, n, m):
    """MMD²_u − MMD²_b = (S_xx − n)/(n(n−1)) − S_xx/n² + (S_yy − m)/(m(m−1)) − S_yy/m², with k(z, z) = 1."""
    x, y = clouds(n, m, 3)
    s_xx = tl.kernel_sum(x, x, 1.5, backend=backend).sum()
    s_yy = tl.kernel_sum(y, y, 1.5, backend=backend).sum()
    gap = (s_xx - n) / (n * (n - 1)) - s_xx / n**2 + (s_yy - m) / (m * (m - 1)) - s_yy / m**2
    biased = tl.mmd2(x, y, 1.5, backend=backend)
    unbiased = tl.mmd2(x, y, 1.5, estimator="unbiased", backend=backend)
    torch.testing.assert_close(unbiased - biased, gap, rtol=1e-12, atol=1e-14)


def test_unbiased_can_be_negative_and_biased_cannot():
    x, y = clouds(20, 20, 2, shift=0.0, seed=3)
    values = [tl.mmd2(*clouds(20, 20, 2, shift=0.0, seed=s), 1.0, estimator="unbiased") for s in range(20)]
    assert min(values) < 0
    assert all(tl.mmd2(*clouds(20, 20, 2, shift=0.0, seed=s), 1.0) >= 0 for s in range(20))


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_bandwidth_is_mean_of_single_kernels(backend):
    x, y = clouds(25, 30, 5)
    sigmas = [0.5, 1.0, 2.0, 4.0, 8.0]
    single = torch.stack([tl.mmd2(x, y, s, backend=backend) for s in sigmas]).mean()
    torch.testing.assert_close(tl.mmd2(x, y, sigmas, backend=backend), single, rtol=1e-12, atol=1e-14)


def test_median_bandwidth_is_median_pairwise_distance():
    x, y = clouds(20, 15, 3)
    z = torch.cat([x, y])
    d = torch.pdist(z)
    assert tl.median_bandwidth(x, y) == pytest.approx(float(d.median()), rel=1e-12)
    big = torch.randn(5000, 2, dtype=torch.float64)
    assert tl.median_bandwidth(big, max_points=500, seed=1) == tl.median_bandwidth(big, max_points=500, seed=1)
    assert tl.median_bandwidth(big, max_points=500) == pytest.approx(2 * math.sqrt(math.log(2)), rel=0.1)  # sqrt(2) x Rayleigh median
    assert tl.median_bandwidth(torch.ones(5, 2)) == 1.0


def test_sigma_none_uses_median_heuristic():
    x, y = clouds(30, 30, 3)
    torch.testing.assert_close(tl.mmd2(x, y), tl.mmd2(x, y, tl.median_bandwidth(x, y)))


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_kernel_matmul_gradcheck(backend, kernel):
    x, y = clouds(7, 6, 3)
    v = torch.randn(6, 2, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, y, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: tl.kernel_matmul(a, b, c, [1.0, 2.5], kernel, backend=backend), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_sum_gradcheck_with_weights(backend):
    x, y = clouds(6, 8, 2)
    w = torch.rand(8, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, y, w)]
    assert torch.autograd.gradcheck(lambda a, b, c: tl.kernel_sum(a, b, 1.3, weights=c, backend=backend), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_mmd2_gradcheck(backend, estimator, kernel):
    x, y = clouds(8, 6, 3)
    inputs = [t.clone().requires_grad_() for t in (x, y)]
    assert torch.autograd.gradcheck(lambda a, b: tl.mmd2(a, b, [1.0, 3.0], kernel, estimator, backend=backend), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_mmd2_gradcheck(backend):
    x, y = clouds(7, 5, 2)
    wx, wy = torch.rand(7, dtype=torch.float64) + 0.1, torch.rand(5, dtype=torch.float64) + 0.1
    inputs = [t.clone().requires_grad_() for t in (x, y, wx, wy)]
    assert torch.autograd.gradcheck(
        lambda a, b, c, e: tl.mmd2(a, b, 1.7, weights_x=c, weights_y=e, backend=backend), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd2_gradient_matches_dense_autograd(backend):
    x, y = clouds(40, 30, 16)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    tl.mmd2(xa, ya, [3.0, 6.0], backend=backend).backward()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    dense_mmd2(xb, yb, [3.0, 6.0], "gaussian", "biased").backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(ya.grad, yb.grad, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_no_nan_gradient_at_zero_distance(backend, estimator):
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    for kernel in ("gaussian", "laplacian"):
        tl.mmd2(x, y, 1.0, kernel, estimator, backend=backend).backward()
        tl.kernel_sum(x, y, 1.0, kernel, backend=backend).sum().backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


# ---------------------------------------------------------------- dtypes, determinism, agreement
@pytest.mark.parametrize("backend", BACKENDS)
def test_dtypes_and_layouts(backend):
    x, y = clouds(20, 25, 4, dtype=torch.float32)
    ref = tl.mmd2(x, y, 2.0, backend=backend)
    assert ref.dtype == torch.float32
    assert tl.mmd2(x.half(), y.half(), 2.0, backend=backend).dtype == torch.float16
    assert tl.mmd2(x.bfloat16(), y, 2.0, backend=backend).dtype == torch.float32
    torch.testing.assert_close(tl.mmd2(x.T.contiguous().T, y, 2.0, backend=backend), ref)  # non-contiguous
    assert tl.mmd2(x.numpy(), y.numpy(), 2.0, backend=backend).dtype == np.float32
    flipped = tl.mmd2(x.numpy()[::-1], y.numpy(), 2.0, backend=backend)  # negative strides
    np.testing.assert_allclose(flipped, ref.numpy(), rtol=1e-5)
    ints = tl.mmd2(torch.arange(12).reshape(6, 2), torch.arange(12).reshape(6, 2) + 1, 2.0, backend=backend)
    assert ints.dtype == torch.get_default_dtype() and ints > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_bitwise(backend):
    x, y = clouds(700, 600, 8, dtype=torch.float32)
    xa = x.clone().requires_grad_()
    first = tl.mmd2(xa, y, [1.0, 4.0], backend=backend)
    first.backward()
    for _ in range(2):
        xb = x.clone().requires_grad_()
        again = tl.mmd2(xb, y, [1.0, 4.0], backend=backend)
        again.backward()
        assert torch.equal(first, again) and torch.equal(xa.grad, xb.grad)
    assert torch.equal(tl.kernel_sum(x, y, 2.0, backend=backend), tl.kernel_sum(x, y, 2.0, backend=backend))


@pytest.mark.skipif(not CPP_AVAILABLE, reason="C++ extension unavailable")
@pytest.mark.parametrize("d", [2, 64])
def test_fp32_accuracy_at_20k_points(d):
    """fp32 inputs accumulate so that the relative error against float64 stays ≤ 1e-5 at n = m = 20,000."""
    x, y = clouds(20_000, 20_000, d, dtype=torch.float64, shift=0.5 / math.sqrt(d))
    sigma = tl.median_bandwidth(x, y)
    exact = tl.mmd2(x, y, sigma, backend="cpp")
    approx = tl.mmd2(x.float(), y.float(), sigma, backend="cpp")
    assert abs(approx.double() - exact) / exact <= 1e-5


# ---------------------------------------------------------------- bad input
def good():
    return torch.randn(5, 3), torch.randn(4, 3)


@pytest.mark.parametrize("call,error,match", [
    (lambda x, y: tl.mmd2(x, torch.randn(4, 2)), ValueError, "same number of features"),
    (lambda x, y: tl.mmd2(x[0], y), ValueError, "x must be 2-D"),
    (lambda x, y: tl.mmd2(x, y[:0]), ValueError, "y must hold at least one point"),
    (lambda x, y: tl.mmd2(x.index_fill(0, torch.tensor([1]), float("nan")), y), ValueError, "x contains NaN"),
    (lambda x, y: tl.mmd2(x, y.index_fill(0, torch.tensor([0]), float("inf"))), ValueError, "y contains NaN or infinite"),
    (lambda x, y: tl.mmd2(x, y, sigma=0.0), ValueError, "sigma must be positive"),
    (lambda x, y: tl.mmd2(x, y, sigma=-1.0), ValueError, "sigma must be positive"),
    (lambda x, y: tl.mmd2(x, y, sigma=[]), ValueError, "sigma must be a positive number or a non-empty"),
    (lambda x, y: tl.mmd2(x, y, sigma="wide"), TypeError, "sigma must be"),
    (lambda x, y: tl.mmd2(x, y, kernel="rbf"), ValueError, "kernel must be one of"),
    (lambda x, y: tl.mmd2(x, y, estimator="fast"), ValueError, "estimator must be one of"),
    (lambda x, y: tl.mmd2(x, y, weights_x=torch.ones(4)), ValueError, r"weights_x must have shape \(5,\)"),
    (lambda x, y: tl.mmd2(x, y, weights_y=-torch.ones(4)), ValueError, "weights_y must be non-negative"),
    (lambda x, y: tl.mmd2(x, y, weights_x=torch.zeros(5)), ValueError, "weights_x must have a positive sum"),
    (lambda x, y: tl.mmd2(x, y, estimator="unbiased", weights_x=torch.ones(5)), ValueError, "biased estimator only"),
    (lambda x, y: tl.mmd2(x[:1], y, estimator="unbiased"), ValueError, "at least 2 points"),
    (lambda x, y: tl.mmd2(x, y[:1], estimator="linear"), ValueError, "at least 2 points"),
    (lambda x, y: tl.mmd2(x, y, backend="gpu"), ValueError, "backend must be one of"),
    (lambda x, y: tl.mmd2(x, y, backend="cuda"), RuntimeError, "cannot run on cpu"),
    (lambda x, y: tl.mmd2([[1.0]], y), TypeError, "x must be a torch.Tensor"),
    (lambda x, y: tl.kernel_matmul(x, y, torch.ones(5, 2), 1.0), ValueError, r"v must have shape \(4, k\)"),
    (lambda x, y: tl.kernel_sum(x, y, 1.0, weights=torch.ones(3)), ValueError, r"weights must have shape \(4,\)"),
    (lambda x, y: tl.nearest(x, y.to("meta")), ValueError, "same device"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(*good())


def test_explicit_backend_reports_and_auto_explains():
    info = tl.kernels.backend_info("cpu")
    assert info["torch"]["available"]
    backend, reason = info["auto"]["cpu"]
    assert backend == ("cpp" if CPP_AVAILABLE else "torch") and reason


def test_cpp_backend_is_built_where_a_compiler_exists():
    """A working compiler must give the fused backend; a silent fallback would hide a broken build."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine")
    assert CPP_AVAILABLE, _library.CPP.reason


# ---------------------------------------------------------------- one input/output rule, one set of constants
def test_numpy_in_numpy_out_and_torch_in_torch_out():
    x, y = clouds(30, 20, 3)
    xn, yn = x.numpy(), y.numpy()
    dist, index = tl.nearest(xn, yn)
    assert isinstance(dist, np.ndarray) and index.dtype == np.int64
    np.testing.assert_array_equal(index, tl.nearest(x, y)[1].numpy())
    density = tl.kernel_sum(xn, yn, 1.0)
    assert isinstance(density, np.ndarray) and density.dtype == np.float64
    product = tl.kernel_matmul(xn, yn, np.ones((20, 2)), 1.0)
    assert isinstance(product, np.ndarray) and product.shape == (30, 2)
    value = tl.mmd2(xn, yn, 1.0)
    assert isinstance(value, np.float64)
    assert value == float(tl.mmd2(x, y, 1.0)) and isinstance(tl.mmd2(x, y, 1.0), torch.Tensor)
    assert isinstance(tl.mmd2(xn, y, 1.0), torch.Tensor)  # any torch input: torch out


def test_scalar_arguments_accept_any_numeric_type():
    x, y = clouds(30, 20, 3)
    expected = float(tl.mmd2(x, y, 2.0))
    for sigma in (np.float32(2.0), np.int64(2), torch.tensor(2.0), np.array([2.0])):
        assert float(tl.mmd2(x, y, sigma)) == pytest.approx(expected, rel=1e-6)
    assert tl.median_bandwidth(x, y, max_points=np.int64(40), seed=np.int32(1)) > 0
    with pytest.raises(TypeError, match="max_points must be an integer"):
        tl.median_bandwidth(x, y, max_points=40.5)


def test_bandwidth_limit_is_enforced_before_the_kernel():
    x, y = clouds(10, 10, 2)
    tl.mmd2(x, y, [1.0] * tl.kernels.ops.MAX_BANDWIDTHS)
    with pytest.raises(ValueError, match="sigma must hold at most 16 bandwidths, got 17"):
        tl.mmd2(x, y, [1.0] * 17)


def test_python_constants_match_the_shared_header():
    """csrc/kernel_spec.h is the one definition of the kernel kinds and the bandwidth limit (C++ and CUDA)."""
    import re

    from tlkit.kernels import _build, ops

    header = (_build.CSRC / "kernel_spec.h").read_text()
    kinds = dict(re.findall(r"k([A-Z][a-z]+) = (\d+)", re.search(r"enum KernelKind[^}]*}", header).group(0)))
    assert {name.lower(): int(value) for name, value in kinds.items()} == ops.KERNELS
    assert int(re.search(r"constexpr int kMaxBandwidths = (\d+);", header).group(1)) == ops.MAX_BANDWIDTHS
    assert "kMaxBandwidths = " not in (_build.CSRC / "pairwise.h").read_text()
    assert "kMaxBandwidths = " not in (_build.CSRC / "cuda" / "launchers.h").read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_entry_point_keeps_float64_and_matches_the_checked_op(backend):
    x, y = clouds(25, 30, 4)
    v = torch.randn(30, 3, dtype=torch.float64)
    out = tl.kernels.ops.kernel_matmul_unchecked(x, y, v, [1.0, 2.0], "laplacian", backend)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, tl.kernel_matmul(x, y, v, [1.0, 2.0], "laplacian", backend=backend))


def test_deep_losses_and_embedding_mmd_take_backend(monkeypatch):
    from tlkit.feature import MKMMDLoss, MMDLoss
    from tlkit.relational import embedding_mmd

    x, y = clouds(30, 20, 5)
    for backend in BACKENDS:
        assert MMDLoss(sigma=1.0, backend=backend)(x, y) == pytest.approx(float(tl.mmd2(x, y, 1.0)), rel=1e-9)
        assert MKMMDLoss(sigma=1.0, backend=backend)(x, y) == pytest.approx(
            float(MKMMDLoss(sigma=1.0, backend="torch")(x, y)), rel=1e-9)
    with pytest.raises(ValueError, match="backend must be one of"):
        MMDLoss(backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        MKMMDLoss(backend="gpu")
    assert MKMMDLoss(num_kernels=np.int64(3), multiplier=np.float32(2.0)).num_kernels == 3

    import tlkit.text

    monkeypatch.setattr(tlkit.text, "encode", lambda texts: x[: len(texts)] if texts[0] == "s" else y[: len(texts)])
    for backend in BACKENDS:
        value = embedding_mmd(["s"] * 10, ["t"] * 12, sigma=1.0, backend=backend)
        assert value == pytest.approx(float(tl.mmd2(x[:10], y[:12], 1.0, estimator="unbiased")), rel=1e-9)
    with pytest.raises(ValueError, match="backend must be one of"):
        embedding_mmd(["s"] * 10, ["t"] * 12, backend="gpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("d", [8, 40, 1024])
def test_gemm_form_keeps_accuracy_far_from_the_common_mean(backend, dtype, rtol, kernel, d):
    """Two tight clusters 2 apart (half of y duplicates x): common-mean centring leaves norms ~ d while near pairs
    are 1e-3 apart, so ||p||^2 + ||q||^2 - 2 p.q cancels; the GEMM form recomputes the pairs it cannot resolve.
    Before, kernel_matmul was 8e-11 off in float64 (7.1e-9 at narrower bandwidths) and the float32 gradient 0.1-2
    (C++); the torch backend's float32 kernel_matmul was up to 0.17 off. d = 8 takes direct distances, whose
    gradient sums were expanded too (float32: 7e-6 off at d = 2)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, d, generator=g, dtype=torch.float64) * 1e-3
    y = torch.randn(40, d, generator=g, dtype=torch.float64) * 1e-3 + 2.0
    y[:20] = x[:20]
    x, y = x.to(dtype), y.to(dtype)
    sigmas = [0.05e-3, 0.5e-3 * math.sqrt(d), 1e-3 * math.sqrt(d), 3e-3]
    v = torch.linspace(0.1, 1, 40, dtype=torch.float64)[:, None]
    xd, yd = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    expected = dense_kernel(xd, yd, sigmas, kernel) @ v
    mmd = (dense_kernel(xd, xd, sigmas, kernel).mean() + dense_kernel(yd, yd, sigmas, kernel).mean()
           - 2 * dense_kernel(xd, yd, sigmas, kernel).mean())
    mmd.backward()
    out = tl.kernel_matmul(x, y, v.to(dtype), sigmas, kernel, backend=backend).double()
    torch.testing.assert_close(out, expected.detach(), rtol=rtol, atol=0)
    each = kernel_matmul_multi_unchecked(x, y, v.to(dtype), sigmas, kernel, backend).double()
    underflow = torch.finfo(dtype).tiny * float(v.sum())  # single terms below the normal range: no relative accuracy
    for s, sigma in enumerate(sigmas):
        exact = (dense_kernel(xd, yd, [sigma], kernel) @ v).detach()
        torch.testing.assert_close(each[s], exact, rtol=rtol, atol=underflow)
    xc, yc = x.clone().requires_grad_(), y.clone().requires_grad_()
    value = tl.mmd2(xc, yc, sigmas, kernel, backend=backend)
    value.backward()
    torch.testing.assert_close(value.double(), mmd.detach(), rtol=rtol, atol=0)
    for grad, exact in [(xc.grad, xd.grad), (yc.grad, yd.grad)]:
        assert (grad.double() - exact).abs().max() <= rtol * exact.abs().max()
