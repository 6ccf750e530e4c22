"""tlkit.data: shapes, seeds, the shifts each dataset promises, and clear errors naming a missing package."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import tlkit.data as data
from tlkit.data._files import DATA_DIR
from tlkit.data.benchmarks import MANIFEST, QUANTA, _arrays
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


# --- vendored real benchmarks (tlkit/data/files/, regenerated by scripts/vendor_datasets.py) ---
RAW = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_raw = pytest.mark.skipif(not (RAW / "SHA256SUMS").is_file(), reason="../shared/datasets is not present")


def test_vendored_files_match_their_manifest():
    lines = (DATA_DIR / MANIFEST).read_text().split("\n")
    recorded = dict(reversed(line.split()) for line in lines if line)
    assert set(recorded) == {"jda_mnist_usps.npz", "usps_esl.npz", "coil20.npz", "amazon_400.npz", "amazon_5000.npz"}
    for name, digest in recorded.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name
    assert sum((DATA_DIR / name).stat().st_size for name in recorded) < 15e6


def test_benchmark_loaders_shapes_and_labels():
    mnist_usps = data.load_mnist_usps("mnist")
    assert mnist_usps.Xs.shape == (2000, 256) and mnist_usps.Xt.shape == (1800, 256)
    usps_mnist = data.load_mnist_usps("usps")
    np.testing.assert_array_equal(usps_mnist.Xs, mnist_usps.Xt)
    coil = data.load_coil20("COIL1")
    assert coil.Xs.shape == coil.Xt.shape == (720, 1024)
    np.testing.assert_array_equal(np.bincount(coil.ys), np.full(20, 36))
    usps = data.load_usps("all")
    assert usps.X.shape == (9298, 256) and usps.X.min() == -1.0 and usps.X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(data.load_usps("test").y),
                                  [359, 264, 198, 166, 200, 160, 170, 147, 166, 177])  # ESL's zip.info.txt
    small = data.load_usps("train", image_size=8)
    assert small.X.shape == (7291, 64) and 0.0 <= small.X.min() and small.X.max() <= 1.0
    np.testing.assert_allclose(small.X[0, 0], (data.load_usps("train").X[0, [0, 1, 16, 17]].mean() + 1) / 2, rtol=1e-6)
    for dataset in (mnist_usps, coil):
        assert all(a.dtype == np.float32 for a in (dataset.Xs, dataset.Xt))
        assert all(a.dtype == np.int64 and a.min() == 0 for a in (dataset.ys, dataset.yt))
    test_sizes = {"books": 4465, "dvd": 3586, "electronics": 5681, "kitchen": 5945}
    for domain in data.AMAZON_DOMAINS:
        train, test = (data.load_amazon_reviews(domain, 5000, split) for split in ("train", "test"))
        assert train.X.shape == (2000, 5000) and test.X.shape == (test_sizes[domain], 5000)
        assert train.X.dtype == np.float32 and set(np.unique(train.y)) == {0, 1}
        reviews = data.load_amazon_reviews(domain, 400, dense=True)
        assert reviews.X.shape[1] == 400 and 1900 < len(reviews.y) < 2100 and reviews.X.max() <= 1.0
    pair = data.amazon_pair("books", "kitchen", features=5000)
    assert pair.Xs.shape == (2000, 5000) and pair.Xt.shape == (5945, 5000)


def test_benchmark_loaders_reject_bad_arguments():
    with pytest.raises(ValueError, match="source"):
        data.load_mnist_usps("svhn")
    with pytest.raises(ValueError, match="split"):
        data.load_usps("validation")
    with pytest.raises(ValueError, match="image_size"):
        data.load_usps(image_size=28)
    with pytest.raises(ValueError, match="source"):
        data.load_coil20("COIL3")
    with pytest.raises(ValueError, match="domain"):
        data.load_amazon_reviews("music")
    with pytest.raises(ValueError, match="features"):
        data.load_amazon_reviews("books", features=300)
    with pytest.raises(ValueError, match="split"):
        data.load_amazon_reviews("books", features=400, split="train")
    with pytest.raises(ValueError, match="different"):
        data.amazon_pair("dvd", "dvd")
    with pytest.raises(ValueError, match=r"\(n, 256\)"):
        data.usps_as_digits(np.zeros((3, 64)))


def test_raw_pixels_and_1nn_give_the_published_baseline():
    # Long et al., ICCV 2013, Table 2, NN column: raw features scaled to unit L2 norm per sample, 1-NN on the target.
    from sklearn.neighbors import KNeighborsClassifier

    def nearest_neighbour(dataset):
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        return KNeighborsClassifier(1).fit(unit(dataset.Xs), dataset.ys).score(unit(dataset.Xt), dataset.yt)

    published = {("mnist", "usps"): 65.94, ("usps", "mnist"): 44.70, ("COIL1", "COIL2"): 83.61,
                 ("COIL2", "COIL1"): 82.78}
    for (source, _), accuracy in published.items():
        loader = data.load_coil20 if source.startswith("COIL") else data.load_mnist_usps
        assert round(100 * nearest_neighbour(loader(source)), 2) == accuracy


@needs_raw
def test_loaded_arrays_equal_the_original_files():
    import gzip

    import scipy.io
    from sklearn.datasets import load_svmlight_file

    for line in (RAW / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((RAW / name).read_bytes()).hexdigest() == digest, name

    def mat(path):
        contents = scipy.io.loadmat(RAW / path)
        return contents["fts"], contents["labels"].ravel().astype(np.int64) - 1

    def same(loaded, original):
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, np.asarray(original).astype(np.float32))

    for source, (path_s, path_t) in {"mnist": ("MNIST", "USPS"), "usps": ("USPS", "MNIST")}.items():
        dataset = data.load_mnist_usps(source)
        (xs, ys), (xt, yt) = mat(f"jda_digits/{path_s}.mat"), mat(f"jda_digits/{path_t}.mat")
        same(dataset.Xs, xs), same(dataset.Xt, xt)
        np.testing.assert_array_equal(dataset.ys, ys), np.testing.assert_array_equal(dataset.yt, yt)
    np.testing.assert_array_equal(_arrays("jda_mnist_usps.npz")["usps_values"], mat("jda_digits/USPS.mat")[0])
    for source, target in (("COIL1", "COIL2"), ("COIL2", "COIL1")):
        dataset = data.load_coil20(source)
        (xs, ys), (xt, yt) = mat(f"coil20/{source}.mat"), mat(f"coil20/{target}.mat")
        same(dataset.Xs, xs), same(dataset.Xt, xt)
        np.testing.assert_array_equal(dataset.ys, ys), np.testing.assert_array_equal(dataset.yt, yt)
        np.testing.assert_array_equal(_arrays("coil20.npz")[f"{source.lower()}_codes"] / QUANTA["coil20"], xs)
    for split in ("train", "test"):
        with gzip.open(RAW / "usps_esl" / f"zip.{split}.gz", "rt") as handle:
            table = np.loadtxt(handle)
        usps = data.load_usps(split)
        same(usps.X, table[:, 1:])
        np.testing.assert_array_equal(usps.y, table[:, 0].astype(np.int64))
        np.testing.assert_array_equal(_arrays("usps_esl.npz")[f"{split}_codes"] / QUANTA["usps_esl"], table[:, 1:])
    files_400 = {"books": "books", "dvd": "dvd", "electronics": "elec", "kitchen": "kitchen"}
    for domain in data.AMAZON_DOMAINS:
        x, y = mat(f"amazon_400/{files_400[domain]}_400.mat")
        reviews = data.load_amazon_reviews(domain, 400)
        same(reviews.X.toarray(), x)
        np.testing.assert_array_equal(reviews.y, y + 1)  # this file's labels are already 0/1
        np.testing.assert_array_equal(_sparse_float64(_arrays("amazon_400.npz"), domain), x)
        for split in ("train", "test"):
            x, y = load_svmlight_file(str(RAW / "amazon_dann_5000" / f"{domain}_{split}.svmlight"), n_features=5000)
            reviews = data.load_amazon_reviews(domain, 5000, split)
            assert (reviews.X != x.astype(np.float32)).nnz == 0
            np.testing.assert_array_equal(reviews.y, (y > 0).astype(np.int64))


def _sparse_float64(arrays, prefix):
    import scipy.sparse

    shape = tuple(arrays[f"{prefix}_shape"])
    return scipy.sparse.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
                                   shape=shape).toarray()
