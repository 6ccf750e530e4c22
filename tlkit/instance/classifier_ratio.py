"""Density ratio from a probabilistic domain classifier (source vs target)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from .._validation import (check_2d, check_in_range, check_pair, check_positive, check_positive_int,
                           check_random_state, like_input, to_numpy)

__all__ = ["ClassifierDensityRatio"]

CALIBRATIONS = ("sigmoid", "isotonic", None)


class ClassifierDensityRatio(BaseEstimator):
    r"""Importance weights from a classifier that tells target samples (d = 1) from source samples (d = 0).

    By Bayes' rule with class priors $n_t/(n_s+n_t)$ and $n_s/(n_s+n_t)$,

    $$w(x) = \frac{p_t(x)}{p_s(x)} = \frac{p(d{=}1 \mid x)}{p(d{=}0 \mid x)} \cdot \frac{n_s}{n_t}.$$

    The ratio is only as good as the probabilities, so the classifier is calibrated (``calibration="sigmoid"``
    — Platt — or ``"isotonic"``, by ``CalibratedClassifierCV`` with ``cv`` stratified folds; ``None`` trusts the
    classifier's own ``predict_proba``). Probabilities are clipped to $[c, 1-c]$
    (``clip_probability``) so no weight is 0 or infinite, and weights above ``max_weight`` are clipped.
    The default classifier is logistic regression, whose log-odds are linear: exact for two Gaussians with a
    shared covariance.

    Shapes: ``fit(Xs (n_s, d), Xt (n_t, d))``; ``weights_`` (n_s,); ``predict_weights(X (n, d))`` → (n,).
    Fitted attributes: ``classifier_``, ``weights_``, ``prior_ratio_`` ($n_s/n_t$). Used in lesson 05.
    """

    def __init__(self, classifier=None, calibration: str | None = "sigmoid", cv: int = 5,
                 clip_probability: float = 0.01, max_weight: float | None = None, random_state=None):
        self.classifier = classifier
        self.calibration = calibration
        self.cv = cv
        self.clip_probability = clip_probability
        self.max_weight = max_weight
        self.random_state = random_state

    def fit(self, Xs, Xt):
        check_pair(Xs, Xt, min_samples=2)
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        check_in_range(self.clip_probability, "clip_probability", 0.0, 0.5, high_inclusive=False)
        if self.max_weight is not None:
            check_positive(self.max_weight, "max_weight")
        xs, xt = to_numpy(Xs, "Xs"), to_numpy(Xt, "Xt")
        features = np.vstack([xs, xt])
        domains = np.r_[np.zeros(len(xs), dtype=int), np.ones(len(xt), dtype=int)]
        base = LogisticRegression(max_iter=1000) if self.classifier is None else clone(self.classifier)
        if not hasattr(base, "fit"):
            raise TypeError(f"classifier must be a scikit-learn classifier, got {type(self.classifier).__name__}")
        if self.calibration is None:
            model = base
        else:
            cv = check_positive_int(self.cv, "cv", minimum=2)
            seed = int(check_random_state(self.random_state).integers(2**31 - 1))
            folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
            model = CalibratedClassifierCV(base, method=self.calibration, cv=folds)
        self.classifier_ = model.fit(features, domains)
        self.prior_ratio_ = len(xs) / len(xt)
        self.n_features_in_ = xs.shape[1]
        self.weights_ = self.predict_weights(Xs)
        return self

    def predict_weights(self, X):
        r"""The ratio $w(x) = \frac{p(d=1\mid x)}{p(d=0\mid x)} \frac{n_s}{n_t}$ at the rows of ``X``.

        Shapes: ``X`` (n, d) → (n,)."""
        check_is_fitted(self)
        check_2d(X, "X")
        x = to_numpy(X, "X")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {x.shape[1]}")
        clip = self.clip_probability
        p_target = np.clip(self.classifier_.predict_proba(x)[:, 1], clip, 1.0 - clip)
        weights = p_target / (1.0 - p_target) * self.prior_ratio_
        if self.max_weight is not None:
            weights = np.minimum(weights, self.max_weight)
        return like_input(torch.from_numpy(weights), X)
