"""tl.feature.OTMapping: POT's own plans and mappings, marginals, EMD's permutation, OT vs CORAL, bad input."""
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.neighbors import KNeighborsClassifier

from tlkit.feature import CORAL, OTMapping


@pytest.fixture
def small(rng):
    xs = rng.normal(size=(20, 3))
    xt = rng.normal(size=(25, 3)) @ np.diag([2.0, 1.0, 0.5]) + 1.0
    ys = rng.integers(0, 3, size=20)
    return xs, xt, ys


def uniform(n):
    return np.full(n, 1.0 / n)


@pytest.mark.parametrize("reg_e", [None, 0.0, 0.5, 2.0])
def test_plan_and_mapping_equal_pot(small, reg_e):
    xs, xt, _ = small
    mapping = OTMapping(reg_e=reg_e).fit(xs, xt)
    cost = ot.dist(xs, xt)
    if reg_e:
        expected = ot.sinkhorn(uniform(20), uniform(25), cost, reg_e, method="sinkhorn_log", numItermax=1000,
                               stopThr=1e-8)
    else:
        expected = ot.emd(uniform(20), uniform(25), cost)
    np.testing.assert_allclose(mapping.coupling_, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mapping.cost_, cost, rtol=0, atol=1e-10)
    barycentres = expected @ xt / expected.sum(axis=1, keepdims=True)        # n_s * gamma @ Xt, uniform a
    np.testing.assert_allclose(mapping.transform(xs), barycentres, rtol=0, atol=1e-10)
    np.testing.assert_allclose(barycentres, 20 * expected @ xt, rtol=0, atol=1e-8)


def test_class_regularised_plan_equals_pot(small):
    xs, xt, ys = small
    mapping = OTMapping(reg_e=0.5, reg_cl=0.3, norm="max").fit(xs, xt, ys)
    pot = ot.da.SinkhornLpl1Transport(reg_e=0.5, reg_cl=0.3, norm="max", max_inner_iter=1000, tol=1e-8)
    pot.fit(Xs=xs, ys=ys.astype(float), Xt=xt)
    np.testing.assert_allclose(mapping.coupling_, pot.coupling_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mapping.transform(xs), pot.transform(Xs=xs), rtol=0, atol=1e-10)
    # the class term pushes each target column towards one source class: less class mixing than without it
    plain = OTMapping(reg_e=0.5, norm="max").fit(xs, xt).coupling_

    def mixing(plan):
        per_class = np.stack([plan[ys == c].sum(axis=0) for c in range(3)])   # (classes, n_t)
        return np.mean(1 - per_class.max(axis=0) / per_class.sum(axis=0))

    assert mixing(mapping.coupling_) < mixing(plain) - 0.05


def test_out_of_sample_rows_follow_pot_nearest_neighbour_rule(small, rng):
    xs, xt, _ = small
    mapping = OTMapping(reg_e=1.0).fit(xs, xt)
    new = xs[:5] + rng.normal(scale=0.01, size=(5, 3))
    nearest = ot.dist(new, xs).argmin(axis=1)
    expected = mapping.transform(xs)[nearest] + new - xs[nearest]
    np.testing.assert_allclose(mapping.transform(new), expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mapping.transform(xt, "target"), xt)


@pytest.mark.parametrize("reg_e", [None, 0.1, 1.0])
def test_coupling_has_the_prescribed_marginals(small, reg_e):
    xs, xt, _ = small
    plan = OTMapping(reg_e=reg_e, norm="max").fit(xs, xt).coupling_
    assert plan.shape == (20, 25) and plan.min() >= 0
    np.testing.assert_allclose(plan.sum(axis=1), uniform(20), atol=1e-9)
    np.testing.assert_allclose(plan.sum(axis=0), uniform(25), atol=1e-9)


def test_exact_plan_for_equal_uniform_samples_is_the_optimal_permutation(rng):
    xs, xt = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 2.0
    plan = OTMapping(reg_e=None).fit(xs, xt).coupling_ * 30
    np.testing.assert_allclose(np.sort(plan, axis=1)[:, -1], 1.0, atol=1e-12)   # one 1 per row ...
    np.testing.assert_allclose(plan.sum(axis=0), 1.0, atol=1e-12)              # ... and per column
    assert np.count_nonzero(plan > 1e-12) == 30
    cost = ot.dist(xs, xt)
    rows, cols = linear_sum_assignment(cost)
    assert np.sum(plan * cost) == pytest.approx(cost[rows, cols].sum(), abs=1e-10)
    # the entropic plan spreads the same mass: it is no permutation
    assert np.count_nonzero(OTMapping(reg_e=1.0).fit(xs, xt).coupling_ * 30 > 1e-3) > 60


def rotate(points, degrees):
    theta = np.deg2rad(degrees)
    return points @ np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]).T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ot_beats_coral_on_rotated_moons(seed):
    """Two moons, target rotated by 50 degrees (unlabelled): a 1-NN classifier on the OT-mapped source beats one
    on the CORAL-aligned source by > 15 points (deterministic; observed 0.99-1.00 vs 0.72-0.77 for seeds 0-2)."""
    xs, ys = make_moons(150, noise=0.1, random_state=seed)
    xt, yt = make_moons(150, noise=0.1, random_state=seed + 100)
    xt = rotate(xt, 50)

    def target_accuracy(aligner):
        zs, zt = aligner.fit_align(xs, xt)
        return KNeighborsClassifier(1).fit(zs, ys).score(zt, yt)

    ot_accuracy, coral_accuracy = target_accuracy(OTMapping(reg_e=1.0)), target_accuracy(CORAL(center=True))
    source_only = KNeighborsClassifier(1).fit(xs, ys).score(xt, yt)
    assert ot_accuracy > 0.95 and ot_accuracy > coral_accuracy + 0.15 and coral_accuracy > source_only


def test_numpy_and_torch_round_trip(small):
    xs, xt, _ = small
    mapping = OTMapping(reg_e=1.0).fit(torch.from_numpy(xs), torch.from_numpy(xt))
    mapped = mapping.transform(torch.from_numpy(xs))
    assert isinstance(mapped, torch.Tensor) and mapped.dtype == torch.float64
    assert isinstance(mapping.coupling_, np.ndarray)
    zs, zt = OTMapping(reg_e=1.0).fit_align(xs, xt)
    assert isinstance(zs, np.ndarray) and isinstance(zt, np.ndarray)
    np.testing.assert_allclose(zs, mapped.numpy(), atol=1e-12)
    assert clone(OTMapping(reg_e=0.2, reg_cl=1.0)).get_params()["reg_cl"] == 1.0


def test_iteration_limit_raises_one_convergence_warning(small):
    xs, xt, ys = small
    for mapping, labels in ((OTMapping(reg_e=0.001, max_iter=3), None), (OTMapping(reg_e=None, max_iter=2), None),
                            (OTMapping(reg_e=0.01, reg_cl=1.0, norm="max", max_iter=2), ys)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mapping.fit(xs, xt, labels)
        assert [w.category for w in caught] == [ConvergenceWarning], [str(w.message) for w in caught]
        assert "max_iter" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OTMapping(reg_e=1.0).fit(xs, xt)
    with pytest.raises(ValueError, match="reg_e"), warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # POT's own RuntimeWarnings on the way
        OTMapping(reg_e=0.001, reg_cl=1.0).fit(xs, xt, ys)  # plain Sinkhorn underflows on the raw cost


def test_bad_input_names_the_argument(small):
    xs, xt, ys = small
    with pytest.raises(NotFittedError):
        OTMapping().transform(xs)
    cases = [
        (OTMapping(reg_e=-1.0), (xs, xt), ValueError, "reg_e"),
        (OTMapping(reg_e="big"), (xs, xt), TypeError, "reg_e"),
        (OTMapping(reg_cl=0.0), (xs, xt, ys), ValueError, "reg_cl"),
        (OTMapping(reg_e=None, reg_cl=1.0), (xs, xt, ys), ValueError, "reg_e"),
        (OTMapping(reg_cl=1.0), (xs, xt), ValueError, "ys"),
        (OTMapping(), (xs, xt, ys), ValueError, "reg_cl"),
        (OTMapping(), (xs, xt, ys[:5]), ValueError, "ys"),
        (OTMapping(metric="manhattan"), (xs, xt), ValueError, "metric"),
        (OTMapping(norm="mean"), (xs, xt), ValueError, "norm"),
        (OTMapping(method="greenkhorn"), (xs, xt), ValueError, "method"),
        (OTMapping(max_iter=0), (xs, xt), ValueError, "max_iter"),
        (OTMapping(tol=0.0), (xs, xt), ValueError, "tol"),
        (OTMapping(reg_cl=1.0, max_outer_iter=0), (xs, xt, ys), ValueError, "max_outer_iter"),
        (OTMapping(), (xs, xt[:, :2]), ValueError, "Xs and Xt"),
        (OTMapping(), (xs[:, 0], xt), ValueError, "Xs"),
        (OTMapping(), (xs, ys), ValueError, "Xt"),
        (OTMapping(), (np.where(xs > 1, np.nan, xs), xt), ValueError, "Xs"),
    ]
    for mapping, arguments, error, name in cases:
        with pytest.raises(error, match=name):
            mapping.fit(*arguments)
    fitted = OTMapping().fit(xs, xt)
    with pytest.raises(ValueError, match="X must have 3 features"):
        fitted.transform(xs[:, :2])
    with pytest.raises(ValueError, match="domain"):
        fitted.transform(xs, "test")
