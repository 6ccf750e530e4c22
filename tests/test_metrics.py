"""tlkit.metrics: the MMD permutation test (level, power, exact statistics), proxy A-distance, CORAL distance."""
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.linear_model import LogisticRegression

import tlkit as tl
from tlkit.metrics import coral_distance, mmd_test, proxy_a_distance


def unbiased_mmd2(x, y, sigma):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(x, y).mean())


def test_statistic_is_the_unbiased_mmd(rng):
    x, y = rng.normal(size=(30, 3)), rng.normal(0.3, 1.0, size=(25, 3))
    statistic, p_value = mmd_test(x, y, n_permutations=50, sigma=1.3, random_state=0)
    assert statistic == pytest.approx(unbiased_mmd2(x, y, 1.3), rel=1e-6)
    assert statistic == pytest.approx(float(tl.mmd2(x, y, sigma=1.3, estimator="unbiased")), rel=1e-6)
    assert 1 / 51 <= p_value <= 1


def test_permutation_batches_run_below_the_validation_in_the_input_dtype(rng, monkeypatch):
    import tlkit.metrics.shift as shift_module

    calls = []

    def recording(x, y, v, sigmas, kernel, backend):
        calls.append((x.dtype, v.dtype, tuple(sigmas)))
        return unchecked(x, y, v, sigmas, kernel, backend)

    unchecked = shift_module.kernel_matmul_unchecked
    monkeypatch.setattr(shift_module, "kernel_matmul_unchecked", recording)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.3, 1.0, size=(25, 3))
    as_float32 = mmd_test(torch.from_numpy(x).float(), torch.from_numpy(y).float(), n_permutations=50, sigma=1.3,
                          batch_size=16, random_state=0)
    assert len(calls) == 2 + 4  # k(z, z), the observed split with the row sums, ceil(50 / 16) batches
    assert set(calls) == {(torch.float32, torch.float32, (1.3,))}
    as_float64 = mmd_test(x, y, n_permutations=50, sigma=1.3, batch_size=16, random_state=0)
    assert as_float32[1] == as_float64[1] and as_float32[0] == pytest.approx(as_float64[0], rel=1e-4)


def test_null_statistics_are_statistics_of_real_splits(rng):
    x, y = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    z = np.vstack([x, y])
    every_split = [unbiased_mmd2(z[list(first)], z[[i for i in range(8) if i not in first]], 0.9)
                   for first in combinations(range(8), 4)]
    _, _, null = mmd_test(x, y, n_permutations=40, sigma=0.9, random_state=1, return_null=True, batch_size=7)
    assert null.shape == (40,)
    assert all(np.min(np.abs(np.array(every_split) - t)) < 1e-9 for t in null)


def test_p_value_is_never_zero_and_reproducible(rng):
    x, y = rng.normal(size=(30, 2)), rng.normal(8.0, 1.0, size=(30, 2))
    assert mmd_test(x, y, n_permutations=99, random_state=0)[1] == pytest.approx(1 / 100)
    assert mmd_test(x, y, n_permutations=20, random_state=3) == mmd_test(x, y, n_permutations=20, random_state=3)
    torch_result = mmd_test(torch.from_numpy(x), torch.from_numpy(y), n_permutations=20, random_state=3)
    assert torch_result == pytest.approx(mmd_test(x, y, n_permutations=20, random_state=3))


def test_level_holds_under_the_null():
    rng = np.random.default_rng(2024)
    draws, alpha = 300, 0.05
    rejections = sum(mmd_test(rng.normal(size=(12, 2)), rng.normal(size=(10, 2)), n_permutations=99,
                              random_state=rng)[1] <= alpha for _ in range(draws))
    noise = 3 * np.sqrt(alpha * (1 - alpha) / draws)  # three binomial standard deviations
    assert abs(rejections / draws - alpha) <= noise


def test_power_under_a_shift():
    rng = np.random.default_rng(7)
    rejections = sum(mmd_test(rng.normal(size=(40, 2)), rng.normal([0.8, 0.0], 1.0, size=(40, 2)),
                              n_permutations=199, random_state=rng)[1] <= 0.05 for _ in range(10))
    assert rejections >= 9


class FlippedLogisticRegression(LogisticRegression):
    """A domain classifier that always predicts the wrong domain: error > 1/2."""

    def predict(self, X):
        return 1 - super().predict(X)


def test_proxy_a_distance_range_and_folding(rng):
    same = proxy_a_distance(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), random_state=0)
    apart = proxy_a_distance(rng.normal(size=(100, 2)), rng.normal(6.0, 1.0, size=(100, 2)), random_state=0)
    assert 0 <= same < 0.4 and apart == pytest.approx(2.0)
    xs, xt = rng.normal(size=(150, 2)), rng.normal(0.8, 1.0, size=(150, 2))
    honest = proxy_a_distance(xs, xt, classifier=LogisticRegression(), random_state=0)
    flipped = proxy_a_distance(xs, xt, classifier=FlippedLogisticRegression(), random_state=0)
    assert flipped == pytest.approx(honest) and 0.2 < honest < 2.0


def test_coral_distance_formula(rng):
    xs, xt = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) * [1.0, 2.0, 0.5]
    expected = np.sum((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2) / (4 * 9)
    assert coral_distance(xs, xt) == pytest.approx(expected)
    assert coral_distance(xs, xs + 5.0) == pytest.approx(0.0, abs=1e-12), "CORAL ignores the means"


@pytest.mark.parametrize("metric", [
    lambda xs, xt: mmd_test(xs, xt, n_permutations=5),
    lambda xs, xt: proxy_a_distance(xs, xt, cv=2),
    coral_distance,
])
def test_metrics_reject_bad_input(metric, rng):
    good = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="same number of features"):
        metric(good, rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="Xs must have at least 2"):
        metric(good[:1], good)
    bad = good.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="Xt contains NaN or infinite"):
        metric(good, bad)


def test_mmd_test_parameter_errors(rng):
    x = rng.normal(size=(5, 2))
    with pytest.raises(ValueError, match="n_permutations"):
        mmd_test(x, x, n_permutations=0)
    with pytest.raises(TypeError, match="random_state"):
        mmd_test(x, x, random_state="seed")
