"""Offline domain-shift datasets built from data shipped with scikit-learn: digits, two moons, regression.

Every function returns a :class:`DomainShift` ``(Xs, ys, Xt, yt)`` — a named tuple, so
``Xs, ys, Xt, yt = tl.data.moons_shift("covariate")`` works — and is deterministic given ``random_state``.
Nothing is downloaded.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.stats import norm
from sklearn.datasets import load_diabetes, load_digits

from .._validation import check_positive, check_random_state

__all__ = ["DomainShift", "digits_shift", "moons_shift", "shimodaira_toy", "shimodaira_importance",
           "biased_diabetes"]

DIGIT_SHIFTS = ("rotation", "noise", "inversion", "mnistm")
MOON_SHIFTS = ("covariate", "label", "conditional", "rotation")


class DomainShift(NamedTuple):
    """A labelled source sample and a labelled target sample: ``Xs`` (n_s, ...), ``ys`` (n_s,), ``Xt``, ``yt``."""

    Xs: np.ndarray
    ys: np.ndarray
    Xt: np.ndarray
    yt: np.ndarray


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _sample_images() -> list[np.ndarray]:
    try:
        from sklearn.datasets import load_sample_images

        return [np.asarray(image, dtype=np.float32) / 255.0 for image in load_sample_images().images]
    except ImportError as error:
        raise ImportError("the MNIST-M-style blend needs scikit-learn's sample images, which need the 'pillow' "
                          "package: pip install pillow") from error
    except (FileNotFoundError, OSError) as error:
        raise FileNotFoundError("scikit-learn's sample images (china.jpg, flower.jpg) are missing: reinstall the "
                                "'scikit-learn' package") from error


def _colour_blend(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST-M (Ganin & Lempitsky, 2015): |photo patch - digit| per channel; digits (n, s, s) → (n, 3, s, s)."""
    photos = _sample_images()
    size = digits.shape[-1]
    crop = 4 * size  # a larger crop, shrunk to the digit's size, keeps some texture at 8x8
    blended = np.empty((len(digits), 3, size, size), dtype=np.float32)
    for i, digit in enumerate(digits):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(photo.shape[0] - crop), rng.integers(photo.shape[1] - crop)
        patch = photo[top:top + crop, left:left + crop].reshape(size, 4, size, 4, 3).mean(axis=(1, 3))
        blended[i] = np.abs(patch.transpose(2, 0, 1) - digit[None])
    return blended


def digits_shift(shift: str = "rotation", angle: float = 30.0, noise_std: float = 0.3, image_size: int = 8,
                 flatten: bool = True, random_state=0) -> DomainShift:
    r"""scikit-learn's 8×8 digits as the source, a transformed disjoint half of them as the target.

    The 1797 images (pixels scaled to [0, 1]) are split at random into two halves; the second half becomes the
    target after one ``shift``:

    - ``"rotation"``: rotated by ``angle`` degrees (bilinear; the canvas outside the image counts as
      ink-free, ``mode="grid-constant"``, so a tiny angle keeps every pixel — the default ``"constant"`` mode
      erases border pixels at any angle);
    - ``"noise"``: $x + \varepsilon$, $\varepsilon \sim \mathcal N(0, \texttt{noise\_std}^2)$, clipped
      to [0, 1];
    - ``"inversion"``: $1 - x$;
    - ``"mnistm"``: an MNIST-M-style colour blend (Ganin & Lempitsky 2015), $|p - x|$ per RGB channel with
      $p$ a random patch of scikit-learn's sample photos; the source digits are then grey RGB (the digit
      in all three channels) so both domains have 3 channels.

    ``image_size`` resizes the images (bilinear) before the shift. All are covariate shifts of the images
    with the labels unchanged.

    Returns :class:`DomainShift`: float32 images, ``(n, c·s·s)`` if ``flatten`` else ``(n, c, s, s)``
    ($s$ = ``image_size``, $c$ = 3 for ``"mnistm"`` else 1); int64 labels 0–9; n_s = 899, n_t = 898.
    Used in lessons 09 and 10.
    """
    if shift not in DIGIT_SHIFTS:
        raise ValueError(f"shift must be one of {DIGIT_SHIFTS}, got {shift!r}")
    image_size = _check_count(image_size, "image_size", minimum=4)
    rng = check_random_state(random_state)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    if image_size != 8:
        images = np.clip(ndimage.zoom(images, (1, image_size / 8, image_size / 8), order=1), 0.0, 1.0)
    labels = digits.target.astype(np.int64)
    order = rng.permutation(len(images))
    source, target = order[: (len(order) + 1) // 2], order[(len(order) + 1) // 2:]
    xs, xt = images[source], images[target]
    if shift == "rotation":
        xt = np.clip(ndimage.rotate(xt, float(angle), axes=(1, 2), reshape=False, order=1,
                                           mode="grid-constant"), 0.0, 1.0)
    elif shift == "noise":
        xt = np.clip(xt + rng.normal(0.0, check_positive(noise_std, "noise_std"), xt.shape), 0.0, 1.0)
    elif shift == "inversion":
        xt = 1.0 - xt
    xs, xt = xs[:, None], xt[:, None]
    if shift == "mnistm":
        xs, xt = np.repeat(xs, 3, axis=1), _colour_blend(xt[:, 0], rng)
    xs, xt = xs.astype(np.float32), xt.astype(np.float32)
    if flatten:
        xs, xt = xs.reshape(len(xs), -1), xt.reshape(len(xt), -1)
    return DomainShift(xs, labels[source], xt, labels[target])


def _rotate(points: np.ndarray, degrees: float, center: np.ndarray) -> np.ndarray:
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return (points - center) @ rotation.T + center


def _random_moons(count: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two moons with arc positions drawn uniformly at random.

    scikit-learn's ``make_moons`` places the points on an even grid of the arc, so two samples of one size share
    their positions up to noise — near-paired domains that no real shift produces.
    """
    labels = rng.permutation(np.arange(count) % 2)
    angle = rng.uniform(0.0, np.pi, count)
    upper = np.column_stack([np.cos(angle), np.sin(angle)])
    lower = np.column_stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)])
    points = np.where(labels[:, None] == 0, upper, lower) + rng.normal(0.0, noise, (count, 2))
    return points, labels


def moons_shift(shift: str = "covariate", n_source: int = 500, n_target: int = 500, noise: float = 0.1,
                angle: float = 30.0, random_state=0) -> DomainShift:
    r"""Two moons (labels 0 = upper, 1 = lower moon) with one kind of dataset shift.

    Points lie at arc positions drawn uniformly at random (so two domains never share positions), plus
    Gaussian noise of standard deviation ``noise``; the classes are balanced before any shift.

    - ``"covariate"``: $p(y \mid x)$ fixed, $p(x)$ moves — both domains are drawn from one large
      moons pool with selection probabilities $\propto \operatorname{sigmoid}(\mp 2.5\,(x_1 - 0.5))$, the
      source favouring the left, the target the right;
    - ``"label"``: $p(x \mid y)$ fixed, $p(y)$ moves — balanced source, target with 80 % class 0;
    - ``"conditional"``: $p(y)$ fixed, $p(x \mid y)$ moves — the target's class-1 moon is shifted by
      (0, +0.5), towards class 0;
    - ``"rotation"``: the target is rotated by ``angle`` degrees about the centre (0.5, 0.25) — the classic
      DANN toy.

    Returns :class:`DomainShift`: float64 ``Xs`` (n_source, 2), ``Xt`` (n_target, 2), int64 labels.
    Used in lessons 06 and 11.
    """
    if shift not in MOON_SHIFTS:
        raise ValueError(f"shift must be one of {MOON_SHIFTS}, got {shift!r}")
    n_source, n_target = _check_count(n_source, "n_source", 2), _check_count(n_target, "n_target", 2)
    noise = check_positive(noise, "noise", allow_zero=True)
    rng = check_random_state(random_state)

    def moons(count: int):
        return _random_moons(count, noise, rng)

    if shift == "covariate":
        pool_x, pool_y = moons(8 * (n_source + n_target))
        left = 1.0 / (1.0 + np.exp(2.5 * (pool_x[:, 0] - 0.5)))
        source = rng.choice(len(pool_x), n_source, replace=False, p=left / left.sum())
        rest = np.setdiff1d(np.arange(len(pool_x)), source)
        right = 1.0 - left[rest]
        target = rest[rng.choice(len(rest), n_target, replace=False, p=right / right.sum())]
        return DomainShift(pool_x[source], pool_y[source].astype(np.int64),
                           pool_x[target], pool_y[target].astype(np.int64))
    if shift == "label":
        pool_x, pool_y = moons(4 * (n_source + n_target))
        by_class = [rng.permutation(np.flatnonzero(pool_y == c)) for c in (0, 1)]
        source_counts = (n_source // 2, n_source - n_source // 2)
        target_counts = (int(round(0.8 * n_target)), n_target - int(round(0.8 * n_target)))
        source = np.concatenate([by_class[c][: source_counts[c]] for c in (0, 1)])
        target = np.concatenate([by_class[c][source_counts[c]: source_counts[c] + target_counts[c]] for c in (0, 1)])
        source, target = rng.permutation(source), rng.permutation(target)
        return DomainShift(pool_x[source], pool_y[source].astype(np.int64),
                           pool_x[target], pool_y[target].astype(np.int64))
    xs, ys = moons(n_source)
    xt, yt = moons(n_target)
    if shift == "conditional":
        xt = xt + np.where(yt[:, None] == 1, np.array([0.0, 0.5]), 0.0)
    else:
        xt = _rotate(xt, float(angle), np.array([0.5, 0.25]))
    return DomainShift(xs, ys.astype(np.int64), xt, yt.astype(np.int64))


SHIMODAIRA_SOURCE = (0.5, 0.5)  # mean, standard deviation
SHIMODAIRA_TARGET = (0.0, 0.3)


def shimodaira_toy(n_source: int = 100, n_target: int = 100, noise: float = 0.3, random_state=0) -> DomainShift:
    r"""The sample-selection-bias regression toy of Shimodaira (2000), also used by Huang et al. (2007) for KMM.

    $$y = -x + x^3 + \varepsilon, \quad \varepsilon \sim \mathcal N(0, 0.3^2), \qquad
      x^s \sim \mathcal N(0.5, 0.5^2), \quad x^t \sim \mathcal N(0, 0.3^2)$$

    A linear model fitted on the source fits the cubic where the source is dense; weighting by the true
    importance $w(x) = p_t(x)/p_s(x)$ (:func:`shimodaira_importance`) recovers the fit the target needs.

    Returns :class:`DomainShift`: float64 ``Xs`` (n_source, 1), ``ys`` (n_source,), ``Xt`` (n_target, 1), ``yt``.
    Used in lesson 05.
    """
    n_source, n_target = _check_count(n_source, "n_source"), _check_count(n_target, "n_target")
    noise = check_positive(noise, "noise", allow_zero=True)
    rng = check_random_state(random_state)
    xs = rng.normal(*SHIMODAIRA_SOURCE, size=(n_source, 1))
    xt = rng.normal(*SHIMODAIRA_TARGET, size=(n_target, 1))

    def response(x):
        return -x[:, 0] + x[:, 0] ** 3 + rng.normal(0.0, noise, len(x)) if noise > 0 else -x[:, 0] + x[:, 0] ** 3

    return DomainShift(xs, response(xs), xt, response(xt))


def shimodaira_importance(X) -> np.ndarray:
    r"""True importance weight of :func:`shimodaira_toy`:
    $w(x) = \mathcal N(x; 0, 0.3^2) \,/\, \mathcal N(x; 0.5, 0.5^2)$. ``X`` (n, 1) or (n,) → (n,)."""
    x = np.asarray(X, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"X must have shape (n, 1) or (n,), got {x.shape}")
    return norm.pdf(x, *SHIMODAIRA_TARGET) / norm.pdf(x, *SHIMODAIRA_SOURCE)


def biased_diabetes(strength: float = 1.5, random_state=0) -> DomainShift:
    r"""scikit-learn's diabetes regression (442 patients, 10 standardised features) with a biased source sample.

    Each patient enters the source with probability
    $\pi(x) = \operatorname{sigmoid}(-\texttt{strength}\cdot z_{\mathrm{bmi}}(x))$ ($z_{\mathrm{bmi}}$
    the z-scored body-mass index), the others form the target: the source over-represents low BMI — sample
    selection bias as in Huang et al. (2007). $p(y \mid x)$ is the same in both; the true importance is
    $w(x) \propto (1 - \pi(x))/\pi(x)$.

    Returns :class:`DomainShift`: float64 ``Xs`` (n_s, 10), ``ys`` (n_s,), ``Xt`` (n_t, 10), ``yt``;
    n_s + n_t = 442, about half each. Used in lesson 05.
    """
    strength = check_positive(strength, "strength", allow_zero=True)
    rng = check_random_state(random_state)
    data = load_diabetes()
    bmi = data.data[:, 2]
    selection = 1.0 / (1.0 + np.exp(strength * (bmi - bmi.mean()) / bmi.std()))
    in_source = rng.random(len(bmi)) < selection
    return DomainShift(data.data[in_source], data.target[in_source], data.data[~in_source], data.target[~in_source])
