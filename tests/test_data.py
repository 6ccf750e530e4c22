"""tlkit.data: shapes, seeds, the shifts each dataset promises, and clear errors naming a missing package."""
import sys

import numpy as np
import pytest
from scipy.stats import norm

import tlkit.data as data
from tlkit.data.domains import _rotate


@pytest.mark.parametrize("shift", ["rotation", "noise", "inversion", "mnistm"])
def test_digits_shapes_and_seed(shift):
    first, again = data.digits_shift(shift, random_state=1), data.digits_shift(shift, random_state=1)
    channels = 3 if shift == "mnistm" else 1
    assert first.Xs.shape == (899, channels * 64) and first.Xt.shape == (898, channels * 64)
    assert first.Xs.dtype == np.float32 and first.ys.dtype == np.int64
    assert set(np.unique(first.ys)) == set(range(10))
    assert 0.0 <= first.Xt.min() and first.Xt.max() <= 1.0
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_digit_shifts_are_what_they_say():
    plain = data.digits_shift("rotation", angle=0.0, random_state=2)  # same split, no transform
    np.testing.assert_allclose(data.digits_shift("inversion", random_state=2).Xt, 1.0 - plain.Xt, atol=1e-6)
    noisy = data.digits_shift("noise", noise_std=0.2, random_state=2).Xt
    interior = (plain.Xt > 0.3) & (plain.Xt < 0.7)
    assert np.std((noisy - plain.Xt)[interior]) == pytest.approx(0.2, rel=0.1)
    rotated = data.digits_shift("rotation", angle=90.0, random_state=2, flatten=False).Xt[:, 0]
    expected = np.rot90(plain.Xt.reshape(-1, 8, 8), k=1, axes=(1, 2))
    np.testing.assert_allclose(rotated, expected, atol=1e-5)
    mnistm = data.digits_shift("mnistm", random_state=2, flatten=False, image_size=12)
    assert mnistm.Xs.shape[1:] == (3, 12, 12) and mnistm.Xt.shape[1:] == (3, 12, 12)
    np.testing.assert_array_equal(mnistm.Xs[:, 0], mnistm.Xs[:, 2])  # grey source
    assert np.abs(mnistm.Xt[:, 0] - mnistm.Xt[:, 2]).mean() > 0.01  # coloured target


def test_moons_shifts():
    covariate = data.moons_shift("covariate", random_state=0)
    assert covariate.Xs[:, 0].mean() < covariate.Xt[:, 0].mean() - 0.5
    label = data.moons_shift("label", n_source=200, n_target=100, random_state=0)
    assert label.ys.mean() == 0.5 and label.yt.mean() == pytest.approx(0.2)
    # class means from 10k points per class and domain: each coordinate's gap has sd <= 0.01, atol = 5 sd
    conditional = data.moons_shift("conditional", n_source=20_000, n_target=20_000, random_state=0)
    for c, offset in ((0, 0.0), (1, 0.5)):
        gap = conditional.Xt[conditional.yt == c].mean(0) - conditional.Xs[conditional.ys == c].mean(0)
        np.testing.assert_allclose(gap, [0.0, offset], atol=0.05)
    rotation = data.moons_shift("rotation", n_source=20_000, n_target=20_000, angle=40.0, random_state=0)
    for c in (0, 1):
        back = _rotate(rotation.Xt[rotation.yt == c], -40.0, np.array([0.5, 0.25])).mean(0)
        np.testing.assert_allclose(back, rotation.Xs[rotation.ys == c].mean(0), atol=0.05)
    assert [a.shape for a in data.moons_shift(n_source=30, n_target=20)] == [(30, 2), (30,), (20, 2), (20,)]


def test_moons_domains_do_not_share_arc_positions():
    """Without noise and rotation, source and target are two independent samples, not one grid twice."""
    same = data.moons_shift("rotation", n_source=300, n_target=300, angle=0.0, noise=0.0, random_state=0)
    gaps = np.linalg.norm(same.Xt[:, None, :] - same.Xs[None, :, :], axis=2).min(1)
    assert np.median(gaps) > 1e-3
    assert sorted(np.bincount(same.ys)) == [150, 150]


def test_shimodaira_toy_matches_its_definition():
    shift = data.shimodaira_toy(4000, 4000, random_state=0)
    assert shift.Xs.mean() == pytest.approx(0.5, abs=0.03) and shift.Xs.std() == pytest.approx(0.5, abs=0.03)
    assert shift.Xt.mean() == pytest.approx(0.0, abs=0.03) and shift.Xt.std() == pytest.approx(0.3, abs=0.03)
    residual = shift.ys - (-shift.Xs[:, 0] + shift.Xs[:, 0] ** 3)
    assert residual.std() == pytest.approx(0.3, abs=0.02)
    x = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(data.shimodaira_importance(x[:, None]), norm.pdf(x, 0, 0.3) / norm.pdf(x, 0.5, 0.5))
    assert data.shimodaira_importance(shift.Xs).mean() == pytest.approx(1.0, abs=0.1)  # E_s[w] = 1


def test_biased_diabetes():
    shift = data.biased_diabetes(random_state=0)
    assert len(shift.Xs) + len(shift.Xt) == 442 and shift.Xs.shape[1] == 10
    assert shift.Xs[:, 2].mean() < shift.Xt[:, 2].mean()  # the source over-represents low BMI
    unbiased = data.biased_diabetes(strength=0.0, random_state=0)
    assert abs(unbiased.Xs[:, 2].mean() - unbiased.Xt[:, 2].mean()) < abs(shift.Xs[:, 2].mean() - shift.Xt[:, 2].mean())


def test_text_corpora():
    sentences, labels = data.pang_lee_polarity()
    assert len(sentences) == 200 and labels.tolist().count(1) == 100
    assert not any(s.startswith("__label__") for s in sentences)
    assert len(data.lee_corpus()) == 300 and len(data.lee_corpus("test")) == 50


def test_missing_files_name_the_package(monkeypatch):
    import gensim.test.utils

    monkeypatch.setattr(gensim.test.utils, "datapath", lambda name: "/nonexistent/" + name)
    with pytest.raises(FileNotFoundError, match="gensim"):
        data.pang_lee_polarity()
    monkeypatch.setitem(sys.modules, "gensim.test.utils", None)
    with pytest.raises(ImportError, match="pip install gensim"):
        data.lee_corpus()
    import sklearn.datasets

    def no_pillow():
        raise ImportError("no PIL")

    monkeypatch.setattr(sklearn.datasets, "load_sample_images", no_pillow)
    with pytest.raises(ImportError, match="pillow"):
        data.digits_shift("mnistm")


def test_bad_arguments():
    with pytest.raises(ValueError, match="shift"):
        data.digits_shift("blur")
    with pytest.raises(ValueError, match="shift"):
        data.moons_shift("prior")
    with pytest.raises(ValueError, match="n_source"):
        data.moons_shift(n_source=0)
    with pytest.raises(ValueError, match="part"):
        data.lee_corpus("train")


def test_rotation_keeps_the_ink_at_a_tiny_angle():
    # scipy's default mode="constant" erases border pixels at any angle (12.4 % of the ink at 0.001°)
    shift = data.digits_shift("rotation", angle=0.001, random_state=0)
    plain = data.digits_shift("noise", noise_std=1e-12, random_state=0)  # same split, target ≈ untouched
    assert abs(shift.Xt.sum() / plain.Xt.sum() - 1.0) < 0.01
