"""Real domain-adaptation benchmarks vendored in ``tlkit/data/files/`` (published copies, checksummed, offline).

- :func:`load_mnist_usps` — MNIST (2000) ↔ USPS (1800) at 16×16, the release of Long et al., ICCV 2013 (JDA);
- :func:`load_usps` — the full USPS set (7291 train + 2007 test) distributed with *The Elements of Statistical
  Learning*, at 16×16 or pooled to scikit-learn's 8×8 digit format;
- :func:`load_coil20` — COIL-20 in the two pose subsets COIL1 / COIL2 of the same JDA protocol;
- :func:`load_amazon_reviews` / :func:`amazon_pair` — Amazon multi-domain sentiment (Blitzer et al., 2007) as
  400-d mSDA-preprocessed features or as the 5000-d unigram+bigram counts of DANN (Ganin et al., 2016);
- :func:`load_mnist_usps_features` — cached EfficientNet-Lite0 features of the JDA MNIST and USPS digits.

Each file stores the original values exactly (integer codes or sparse counts, see ``files/README.md``); loaders
return float32 features and int64 labels 0..K-1. Used in lessons 09, 10, 11 and 13 and in benchmarks/reproduce.py.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import scipy.sparse

from ._files import data_path
from .domains import DomainShift

__all__ = ["LabelledSet", "load_mnist_usps", "load_usps", "load_coil20", "load_amazon_reviews", "amazon_pair",
           "usps_as_digits", "load_mnist_usps_features", "AMAZON_DOMAINS"]

AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")
MANIFEST = "MANIFEST.sha256"
# These datasets' values are exact multiples of 1 / QUANTA[name] (checked when vendoring).
QUANTA = {"jda_mnist": 256, "usps_esl": 1000, "coil20": 4080}


class LabelledSet(NamedTuple):
    """Features ``X`` (n, d), a float32 ndarray or (sparse text) a float32 CSR matrix, and int64 labels ``y`` (n,)."""

    X: np.ndarray | scipy.sparse.csr_matrix
    y: np.ndarray


def _choice(value, name: str, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value


@lru_cache(maxsize=None)
def _arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(data_path(name)) as archive:
        return {key: archive[key] for key in archive.files}


def _decode(codes: np.ndarray, quantum: int) -> np.ndarray:
    return (codes / quantum).astype(np.float32)


def _sparse(arrays: dict[str, np.ndarray], prefix: str) -> scipy.sparse.csr_matrix:
    shape = tuple(int(s) for s in arrays[f"{prefix}_shape"])
    return scipy.sparse.csr_matrix((arrays[f"{prefix}_data"].astype(np.float32), arrays[f"{prefix}_indices"],
                                    arrays[f"{prefix}_indptr"]), shape=shape)


def load_mnist_usps(source: str = "mnist") -> DomainShift:
    r"""MNIST → USPS (``source="mnist"``) or USPS → MNIST: the JDA benchmark's two digit domains at 16×16.

    ``Xs``/``Xt`` are the flattened images, ``(2000, 256)`` for MNIST and ``(1800, 256)`` for USPS, float32 in
    [0, 1] (MNIST's published values are steps of 1/256; USPS's are float64, rounded to float32 here);
    ``ys``/``yt`` (int64) are the digits 0..9 (the release's labels 1..10 minus one). Both domains are fully
    labelled; the protocol of Long et al. uses the source labels only and classifies the whole target with 1-NN,
    where raw pixels (each image scaled to unit L2 norm) give $65.94\,\%$ (MNIST→USPS) and $44.70\,\%$
    (USPS→MNIST).

    Source: the data of Long, Wang, Ding, Sun & Yu, "Transfer Feature Learning with Joint Distribution
    Adaptation", ICCV 2013, copied from quanxl97/MDTL@a69cd4b (data/MNIST_USPS). Terms: MNIST by LeCun, Cortes &
    Burges (commonly cited under CC BY-SA 3.0); USPS by the AT&T neural-network group (Hull, TPAMI 1994).
    Used in lessons 09 and 10 and in benchmarks/reproduce.py.
    """
    _choice(source, "source", ("mnist", "usps"))
    arrays = _arrays("jda_mnist_usps.npz")
    target = "usps" if source == "mnist" else "mnist"
    images = {"mnist": _decode(arrays["mnist_codes"], QUANTA["jda_mnist"]),
              "usps": arrays["usps_values"].astype(np.float32)}
    Xs, Xt = images[source], images[target]
    ys, yt = (arrays[f"{d}_labels"].astype(np.int64) for d in (source, target))
    return DomainShift(Xs, ys, Xt, yt)


def usps_as_digits(images: np.ndarray) -> np.ndarray:
    r"""USPS's 16×16 images in [−1, 1] as scikit-learn-style 8×8 digits in [0, 1]: ``(n, 256) -> (n, 64)``.

    $x' = \tfrac{1}{2}(x + 1)$ (background −1 → 0, ink 1 → 1), then the mean of each 2×2 block — the same
    reduction as scikit-learn's digits, whose 8×8 pixels count ink in 4×4 blocks of a 32×32 bitmap. Used by
    :func:`load_usps` and scripts/make_source_checkpoint.py.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 2 or images.shape[1] != 256:
        raise ValueError(f"images must be (n, 256) flattened 16x16 USPS images, got shape {images.shape}")
    scaled = (images + 1.0) / 2.0
    return scaled.reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(-1, 64).astype(np.float32)


def load_usps(split: str = "train", image_size: int = 16) -> LabelledSet:
    r"""The full USPS handwritten-digit set: 7291 training and 2007 test images, labels 0..9.

    ``image_size=16``: ``X`` is ``(n, 256)`` float32 with the published values in [−1, 1] (background −1, steps
    of 0.001). ``image_size=8``: ``(n, 64)`` in [0, 1], pooled by :func:`usps_as_digits` to scikit-learn's digit
    format, so it pairs with :func:`tlkit.data.digits_shift`'s images (a real cross-dataset shift). ``split``:
    ``"train"``, ``"test"`` or ``"all"`` (train then test). The test split is "notoriously difficult" (ESL).

    Source: the zip.train / zip.test files distributed with Hastie, Tibshirani & Friedman, *The Elements of
    Statistical Learning* (copied from dgkim5360/the-elements-of-statistical-learning-notebooks@2c13a48); made
    available by the AT&T neural-network research group; cite Hull, "A database for handwritten text recognition
    research", TPAMI 1994, and Le Cun et al., 1990. Used in lessons 07 and 09 and by the source CNN's script.
    """
    _choice(split, "split", ("train", "test", "all"))
    if image_size not in (8, 16):
        raise ValueError(f"image_size must be 8 or 16, got {image_size!r}")
    arrays = _arrays("usps_esl.npz")
    splits = ("train", "test") if split == "all" else (split,)
    X = np.concatenate([_decode(arrays[f"{s}_codes"], QUANTA["usps_esl"]) for s in splits])
    y = np.concatenate([arrays[f"{s}_labels"].astype(np.int64) for s in splits])
    return LabelledSet(usps_as_digits(X) if image_size == 8 else X, y)


def load_coil20(source: str = "COIL1") -> DomainShift:
    r"""COIL1 → COIL2 (``source="COIL1"``) or COIL2 → COIL1: 20 objects, 36 poses each per subset.

    COIL-20 photographs each object every 5° of a turntable; COIL1 holds poses [0°, 85°] ∪ [180°, 265°] and COIL2
    the rest, so the two subsets differ in viewpoint. ``Xs``/``Xt``: ``(720, 1024)`` float32, 32×32 grey images in
    [0, 1] (steps of 1/4080); labels 0..19. Raw pixels (unit L2 norm per image) and 1-NN give
    $83.61\,\%$ / $82.78\,\%$ (Long et al.).

    Source: Nene, Nayar & Murase, "Columbia Object Image Library (COIL-20)", Columbia University, 1996 (research
    use), in the subsets of Long et al., ICCV 2013, copied from quanxl97/MDTL@a69cd4b (data/COIL20).
    Used in benchmarks/reproduce.py.
    """
    _choice(source, "source", ("COIL1", "COIL2"))
    arrays = _arrays("coil20.npz")
    target = "COIL2" if source == "COIL1" else "COIL1"
    Xs, Xt = (_decode(arrays[f"{d.lower()}_codes"], QUANTA["coil20"]) for d in (source, target))
    ys, yt = (arrays[f"{d.lower()}_labels"].astype(np.int64) for d in (source, target))
    return DomainShift(Xs, ys, Xt, yt)


def load_amazon_reviews(domain: str, features: int = 400, split: str = "all", dense: bool = False) -> LabelledSet:
    r"""Amazon product reviews of one domain (books, dvd, electronics, kitchen), labels 0 = negative, 1 = positive.

    ``features=400``: the mSDA-preprocessed 400-d features (Chen et al., ICML 2012) in [0, 1], about 2000 reviews
    per domain (only ``split="all"``), copied from scikit-adaptation/skada-bench@e04399f (data/amazon_review).
    ``features=5000``: the unigram+bigram counts of the DANN experiments (Ganin et al., JMLR 2016), 2000 training
    reviews per domain and test sets of 4465 / 3586 / 5681 / 5945 (books / dvd / electronics / kitchen),
    ``split="train"``, ``"test"`` or ``"all"``, copied from GRAAL-Research/domain_adversarial_neural_network@74eec5e.
    ``X`` is a float32 CSR matrix ``(n, features)`` (mostly zeros), or a dense ndarray if ``dense=True``.

    Original data: Blitzer, Dredze & Pereira, "Biographies, Bollywood, Boom-boxes and Blenders: Domain Adaptation
    for Sentiment Classification", ACL 2007 (research use). Used in lessons 11 and 13 and benchmarks/reproduce.py.
    """
    _choice(domain, "domain", AMAZON_DOMAINS)
    if features not in (400, 5000):
        raise ValueError(f"features must be 400 or 5000, got {features!r}")
    if features == 400:
        if split != "all":
            raise ValueError(f"the 400-d Amazon features have no train/test split: split must be 'all', got {split!r}")
        arrays = _arrays("amazon_400.npz")
        X, y = _sparse(arrays, domain), arrays[f"{domain}_labels"].astype(np.int64)
    else:
        _choice(split, "split", ("train", "test", "all"))
        arrays = _arrays("amazon_5000.npz")
        splits = ("train", "test") if split == "all" else (split,)
        X = scipy.sparse.vstack([_sparse(arrays, f"{domain}_{s}") for s in splits], format="csr")
        y = np.concatenate([arrays[f"{domain}_{s}_labels"].astype(np.int64) for s in splits])
    return LabelledSet(X.toarray() if dense else X, y)


def amazon_pair(source: str, target: str, features: int = 400, dense: bool = False) -> DomainShift:
    r"""A source → target pair of Amazon review domains under its usual protocol, as a :class:`DomainShift`.

    ``features=5000`` follows DANN (Ganin et al., JMLR 2016): the source's training split (2000 labelled reviews)
    and the target's test split (its labels are for evaluation only; DANN's unlabelled target sample is the
    target's training split, ``load_amazon_reviews(target, 5000, "train")``). ``features=400``: every review of
    both domains (≈2000 each). Used in lessons 11 and 13 and benchmarks/reproduce.py.
    """
    _choice(source, "source", AMAZON_DOMAINS)
    _choice(target, "target", AMAZON_DOMAINS)
    if source == target:
        raise ValueError(f"source and target must be different domains, got {source!r} twice")
    source_split, target_split = ("train", "test") if features == 5000 else ("all", "all")
    Xs, ys = load_amazon_reviews(source, features, source_split, dense)
    Xt, yt = load_amazon_reviews(target, features, target_split, dense)
    return DomainShift(Xs, ys, Xt, yt)



def load_mnist_usps_features(source: str = "mnist") -> tuple[DomainShift, dict]:
    r""":func:`load_mnist_usps` as cached EfficientNet-Lite0 (ImageNet) features $\phi(x)$: ``(n, 1280)`` per domain.

    Row $i$ of ``Xs`` is ``FeatureExtractor("efficientnet_lite0", layer="avgpool")`` applied to
    ``load_mnist_usps(source).Xs[i]`` after ``prepare(..., size=S)`` (grey 16×16 repeated to 3 channels, resized to
    S×S, scaled as $(255x - 127)/128$); the same for ``Xt``; labels are the digits 0..9. Stored as float16,
    returned as float32. The second value records ``layer``, ``size`` (S) and the package versions. Computing
    them takes minutes on two CPU cores; ``scripts/make_efficientnet_features.py`` regenerates the file.
    Used in lessons 09 and 10.
    """
    _choice(source, "source", ("mnist", "usps"))
    arrays = _arrays("mnist_usps_efficientnet_lite0.npz")
    labels = _arrays("jda_mnist_usps.npz")
    target = "usps" if source == "mnist" else "mnist"
    Xs, Xt = (arrays[f"{d}_features"].astype(np.float32) for d in (source, target))
    ys, yt = (labels[f"{d}_labels"].astype(np.int64) for d in (source, target))
    info = {"layer": str(arrays["layer"]), "size": int(arrays["size"]), "versions": str(arrays["versions"])}
    return DomainShift(Xs, ys, Xt, yt), info
