"""Property-based tests (hypothesis): each backend matches a float64 brute force on random inputs; bad inputs
always raise a named error; the compiled ops pass torch.library's opcheck; the public ops and deep losses compile
with fullgraph=True."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlkit as tl
from tlkit.kernels import _library
from test_kernels import dense_kernel  # the float64 oracle (tests/ is on sys.path under pytest)

CPP = _library.CPP.loaded
needs_cpp = pytest.mark.skipif(not CPP, reason="C++ extension unavailable")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def point_clouds(draw):
    n, m, d = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * scale + draw(st.floats(-2, 2))
    if draw(st.booleans()):  # duplicated points: zero distances
        y[: min(n, m) // 2] = x[: min(n, m) // 2]
    sigmas = draw(st.lists(st.floats(0.05, 50.0), min_size=1, max_size=4))
    kernel = draw(st.sampled_from(["gaussian", "laplacian"]))
    return x, y, [s * scale for s in sigmas], kernel


@SETTINGS
@given(point_clouds())
def test_backends_match_float64_brute_force(data):
    """Each backend against the dense float64 formula. Every kernel value keeps ~1e-13 relative accuracy, so
    K v is bounded by 1e-12 (|K| |v|) elementwise (v has both signs: the sum itself may cancel); the gradient
    by 1e-9 of its largest entry."""
    x, y, sigmas, kernel = data
    v = torch.linspace(-1, 1, y.shape[0], dtype=torch.float64)[:, None]
    xd, yd = x.clone().requires_grad_(), y.clone().requires_grad_()
    k_xy = dense_kernel(xd, yd, sigmas, kernel)
    mmd = dense_kernel(xd, xd, sigmas, kernel).mean() + dense_kernel(yd, yd, sigmas, kernel).mean() - 2 * k_xy.mean()
    mmd.backward()
    k_xy = k_xy.detach()
    scale = k_xy.abs() @ v.abs()
    exact_dist = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    for backend in ["torch"] + (["cpp"] if CPP else []):
        out = tl.kernel_matmul(x, y, v, sigmas, kernel, backend=backend)
        assert ((out - k_xy @ v).abs() <= 1e-12 * scale + 1e-300).all(), backend
        value = tl.mmd2(x, y, sigmas, kernel, backend=backend)
        assert abs(float(value) - float(mmd.detach())) <= 4e-12, backend  # three means of values in [0, 1]
        dist, _ = tl.nearest(x, y, backend=backend)
        torch.testing.assert_close(dist, exact_dist, rtol=1e-12, atol=1e-300)
        xc, yc = x.clone().requires_grad_(), y.clone().requires_grad_()
        tl.mmd2(xc, yc, sigmas, kernel, backend=backend).backward()
        for grad, exact in [(xc.grad, xd.grad), (yc.grad, yd.grad)]:
            assert (grad - exact).abs().max() <= 1e-9 * exact.abs().max() + 1e-300, backend


BAD = st.sampled_from(["dim", "rank", "empty", "nan", "inf", "sigma0", "sigma_neg", "sigma_empty", "weights_len",
                       "weights_neg"])


@SETTINGS
@given(kind=BAD, n=st.integers(2, 10), m=st.integers(2, 10), d=st.integers(1, 5))
def test_bad_input_always_raises_a_named_error(kind, n, m, d):
    x, y, kwargs = torch.randn(n, d), torch.randn(m, d), {"sigma": 1.0}
    expected = {"dim": "features", "rank": "2-D", "empty": "at least one point", "nan": "NaN", "inf": "infinite",
                "sigma0": "sigma", "sigma_neg": "sigma", "sigma_empty": "sigma", "weights_len": "weights_x",
                "weights_neg": "weights_y"}[kind]
    if kind == "dim":
        y = torch.randn(m, d + 1)
    elif kind == "rank":
        x = x[None]
    elif kind == "empty":
        y = y[:0]
    elif kind == "nan":
        x[n // 2, 0] = float("nan")
    elif kind == "inf":
        y[m // 2, -1] = float("inf")
    elif kind == "sigma0":
        kwargs["sigma"] = 0.0
    elif kind == "sigma_neg":
        kwargs["sigma"] = [1.0, -0.5]
    elif kind == "sigma_empty":
        kwargs["sigma"] = ()
    elif kind == "weights_len":
        kwargs["weights_x"] = torch.ones(n + 1)
    elif kind == "weights_neg":
        kwargs["weights_y"] = torch.full((m,), -1.0)
    with pytest.raises((ValueError, TypeError), match=expected):
        tl.mmd2(x, y, **kwargs)


@needs_cpp
def test_compiled_ops_pass_opcheck():
    """torch.library.opcheck: schema, fake (meta) impls and autograd registration are consistent."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    v, wx, wy = torch.randn(7, 2, dtype=torch.float64), torch.rand(9, dtype=torch.float64), torch.rand(7, dtype=torch.float64)
    ops = torch.ops.tlkit
    torch.library.opcheck(ops.nearest.default, (x, y))
    torch.library.opcheck(ops.kernel_matmul.default, (x.requires_grad_(), y, v.requires_grad_(), [1.0, 2.0], 0))
    torch.library.opcheck(ops.kernel_pair_grad.default, (x.detach(), y, torch.randn(9, 2, dtype=torch.float64), v.detach(), [1.0], 1))
    torch.library.opcheck(ops.mmd2_terms.default, (x.detach(), y, wx, wy, [1.0, 1.0, -2.0], [1.5], 0, False))
    # The raw op's backward reads the incoming gradient as numbers (eager only), so no AOT-dispatch check for it.
    torch.library.opcheck(ops.mmd2_terms.default, (x.detach().requires_grad_(), y, wx, wy, [1.0, 1.0, -2.0], [1.5, 3.0],
                                                   1, True),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(ops.mmd2_value.default, (x.detach().requires_grad_(), y.requires_grad_(), wx, wy,
                                                   [1.0, 1.0, -2.0], 0.0, [1.5], 0, True))


@needs_cpp
def test_public_ops_and_deep_losses_compile_fullgraph_with_inductor():
    """torch.compile(fullgraph=True), default (inductor) backend: no graph break in any public kernel op or deep
    loss (data-dependent checks are skipped while tracing); values and gradients match eager."""
    from tlkit.feature import CORALLoss, MKMMDLoss, MMDLoss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, requires_grad=True)
    y, v = torch.randn(50, 4, generator=g) + 0.3, torch.randn(50, 2, generator=g)
    mmd_loss, mk_mmd_loss, coral_loss = MMDLoss(sigma=1.0), MKMMDLoss(sigma=1.0), CORALLoss()

    def every_op(a, b):
        return torch.stack([
            tl.mmd2(a, b, [1.0, 2.0]),
            tl.mmd2(a, b, 1.5, estimator="unbiased", kernel="laplacian"),
            tl.mmd2(a, b, 1.5, weights_x=torch.ones(60)),
            tl.mmd2(a, b, 1.5, estimator="linear"),
            tl.kernel_sum(a, b, 1.0).sum(),
            tl.kernel_matmul(a, b, v, [1.0, 3.0]).sum(),
            tl.nearest(a, b)[0].sum(),
            mmd_loss(a, b),
            mk_mmd_loss(a, b),
            coral_loss(a, b),
        ])

    compiled = torch.compile(every_op, fullgraph=True)(x, y)
    eager = every_op(x, y)
    torch.testing.assert_close(compiled, eager)
    (grad,) = torch.autograd.grad(compiled.sum(), x)
    (expected,) = torch.autograd.grad(eager.sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
