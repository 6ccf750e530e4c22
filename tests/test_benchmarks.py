"""The benchmark's baselines compute what tlkit computes: chunked torch against the naive formula, in float64."""
import ctypes
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "bench_kernels.py")
bench_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_kernels)


@pytest.mark.parametrize("d", [2, 64])  # cdist form below d = 25, norm expansion above
def test_chunked_baselines_match_the_naive_formula(d, monkeypatch):
    monkeypatch.setattr(bench_kernels, "CHUNK_ELEMENTS", 5000)  # several row blocks per term
    generator = torch.Generator().manual_seed(d)
    x = torch.randn(70, d, dtype=torch.float64, generator=generator)
    y = torch.randn(50, d, dtype=torch.float64, generator=generator) + 0.3
    sigma = (2 * d) ** 0.5
    value, grad_x, grad_y = bench_kernels.chunked_mmd2(x, y, sigma, with_grad=True)
    x_ref, y_ref = x.clone().requires_grad_(), y.clone().requires_grad_()
    reference = bench_kernels.naive_mmd2(x_ref, y_ref, sigma)
    reference.backward()
    torch.testing.assert_close(value, reference.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_x, x_ref.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad_y, y_ref.grad, rtol=1e-10, atol=1e-14)
    distance, index = bench_kernels.chunked_nearest(x, y)
    expected = torch.cdist(x, y).min(dim=1)
    torch.testing.assert_close(distance, expected.values, rtol=1e-10, atol=1e-12)
    assert torch.equal(index, expected.indices)


def test_exp_floor_probe_sums_tlkit_exp():
    """The exp floor times tlkit's own exp2: the probe's sums match exp in float64 to the kernels' fp32 contract."""
    t = -np.random.default_rng(0).random(4096, dtype=np.float32)
    rate = 20 / np.log(2)
    sums = bench_kernels.tlkit_exp_sums()
    pointer = t.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    total = sums(pointer, t.size, ctypes.c_float(rate), 3)
    expected = 3 * np.exp2(np.float32(rate) * t.astype(np.float64)).sum()
    assert abs(total - expected) <= 1e-5 * expected
