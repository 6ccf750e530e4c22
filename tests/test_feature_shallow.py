"""tlkit.feature shallow alignment against the papers.

CORAL (Sun et al. 2016), TCA (Pan et al. 2011), subspace alignment (Fernando et al. 2013).
"""
import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from tlkit.feature import CORAL, TCA, SubspaceAlignment


def test_coral_is_whitening_then_recolouring(rng):
    xs = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3))
    xt = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 3)) + 2.0
    coral = CORAL(reg=1.0).fit(xs, xt)
    cs, ct = np.cov(xs, rowvar=False) + np.eye(3), np.cov(xt, rowvar=False) + np.eye(3)
    expected = np.linalg.inv(sqrtm(cs)).real @ sqrtm(ct).real
    np.testing.assert_allclose(coral.transform_matrix_, expected, atol=1e-10)
    aligned, target = coral.fit_align(xs, xt)
    np.testing.assert_allclose(aligned, xs @ expected, atol=1e-10)
    assert target is not xt and target.dtype == aligned.dtype and np.array_equal(target, xt)
    nearly_unregularised = CORAL(reg=1e-9, center=True).fit(xs, xt)
    recoloured = nearly_unregularised.transform(xs)
    np.testing.assert_allclose(np.cov(recoloured, rowvar=False), np.cov(xt, rowvar=False), atol=1e-6)
    np.testing.assert_allclose(recoloured.mean(axis=0), xt.mean(axis=0), atol=1e-9)


def test_coral_accepts_torch(rng):
    xs, xt = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) * 3
    out = CORAL().fit(torch.from_numpy(xs), torch.from_numpy(xt)).transform(torch.from_numpy(xs))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), CORAL().fit(xs, xt).transform(xs))


def shifted_domains(rng):
    """Domains share a high-variance direction (feature 0) and differ along a low-variance one (feature 1)."""
    xs = np.c_[rng.normal(0, 3.0, 80), rng.normal(0.0, 0.3, 80)]
    xt = np.c_[rng.normal(0, 3.0, 70), rng.normal(2.0, 0.3, 70)]
    return xs, xt


def test_tca_solves_the_generalised_eigenproblem(rng):
    xs, xt = rng.normal(size=(20, 3)), rng.normal(1.0, 1.0, size=(15, 3))
    tca = TCA(n_components=4, kernel="gaussian", mu=0.5).fit(xs, xt)
    z = np.vstack([xs, xt])
    k = np.exp(-cdist(z, z, "sqeuclidean") / (2 * tca.sigma_**2))
    e = np.r_[np.full(20, 1 / 20), np.full(15, -1 / 15)]
    h = np.eye(35) - np.ones((35, 35)) / 35
    a, b = k @ h @ k, k @ np.outer(e, e) @ k + 0.5 * np.eye(35)
    w, values = tca.components_, tca.eigenvalues_
    assert np.isrealobj(values) and np.all(np.diff(values) <= 0) and values.min() >= -1e-9
    np.testing.assert_allclose(a @ w, b @ w * values, atol=1e-8)
    np.testing.assert_allclose(values, scipy.linalg.eigh(a, b, eigvals_only=True)[::-1][:4], rtol=1e-7)
    zs, zt = tca.fit_align(xs, xt)
    np.testing.assert_allclose(np.vstack([zs, zt]), k @ w, atol=1e-10)


def test_tca_keeps_the_shared_direction_and_drops_the_shift(rng):
    xs, xt = shifted_domains(rng)
    tca = TCA(n_components=1, kernel="linear", mu=1.0).fit(xs, xt)
    zs, zt = tca.transform(xs), tca.transform(torch.from_numpy(xt), domain="target").numpy()

    def standardised_gap(a, b):
        return abs(a.mean() - b.mean()) / np.std(np.r_[a.ravel(), b.ravel()])

    pca = PCA(1).fit(np.vstack([xs, xt]))  # maximum variance, blind to the domains
    assert standardised_gap(zs, zt) < 0.5 * standardised_gap(pca.transform(xs), pca.transform(xt))
    assert standardised_gap(zs, zt) < 0.1 * standardised_gap(xs[:, 1], xt[:, 1])


def test_subspace_alignment_closed_form(rng):
    xs = rng.normal(size=(100, 5)) @ rng.normal(size=(5, 5))
    xt = rng.normal(size=(90, 5)) @ rng.normal(size=(5, 5))
    sa = SubspaceAlignment(n_components=2).fit(xs, xt)
    ps, pt = sa.source_components_, sa.target_components_
    np.testing.assert_allclose(ps.T @ ps, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(np.abs(ps.T), np.abs(PCA(2).fit(xs).components_), atol=1e-8)
    least_squares = np.linalg.lstsq(ps, pt, rcond=None)[0]  # argmin_M ||Ps M - Pt||_F
    np.testing.assert_allclose(sa.alignment_matrix_, least_squares, atol=1e-10)
    np.testing.assert_allclose(sa.transform(xs), (xs - xs.mean(0)) @ ps @ ps.T @ pt, atol=1e-10)
    np.testing.assert_allclose(sa.transform(xt, domain="target"), (xt - xt.mean(0)) @ pt, atol=1e-10)


def test_subspace_alignment_on_a_shared_subspace(rng):
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0]  # both domains live in span(basis)
    xs = rng.normal(size=(60, 2)) * [3.0, 1.0] @ basis.T
    xt = rng.normal(size=(50, 2)) * [1.0, 2.5] @ basis.T + 1.0
    sa = SubspaceAlignment(n_components=2).fit(xs, xt)
    # Same span: P_s M = P_t, so aligned source coordinates are the source projected on the target basis.
    np.testing.assert_allclose(sa.transform(xs), (xs - xs.mean(0)) @ sa.target_components_, atol=1e-9)


def test_shallow_alignment_rejects_bad_input(rng):
    xs, xt = rng.normal(size=(10, 3)), rng.normal(size=(8, 3))
    with pytest.raises(ValueError, match="same number of features"):
        CORAL().fit(xs, xt[:, :2])
    with pytest.raises(ValueError, match="n_components"):
        SubspaceAlignment(n_components=4).fit(xs, xt)
    with pytest.raises(ValueError, match="n_components"):
        TCA(n_components=19).fit(xs, xt)
    with pytest.raises(NotFittedError, match="not fitted"):
        TCA().transform(xs)
    with pytest.raises(ValueError, match="domain"):
        CORAL().fit(xs, xt).transform(xs, domain="both")
    with pytest.raises(ValueError, match="X must have 3 features"):
        SubspaceAlignment(2).fit(xs, xt).transform(xs[:, :2])
    with pytest.raises(ValueError, match="reg"):
        CORAL(reg=-1.0).fit(xs, xt)
    with pytest.raises(ValueError, match="Xt contains NaN"):
        TCA(2).fit(xs, np.full((3, 3), np.nan))
