r"""Label shift (标签偏移): the class priors change, $q(y) \ne p(y)$, while $p(x \mid y) = q(x \mid y)$.

Under label shift the target posterior is the source posterior re-weighted by the prior ratio,
$q(y \mid x) \propto w_y\, p(y \mid x)$ with $w_y = q(y)/p(y)$, so correcting a classifier only needs the
target priors $q(y)$, estimated from unlabelled target data:

- :func:`bbse` — black-box shift estimation (Lipton, Wang & Smola 2018): invert the confusion matrix;
- :func:`rlls` — its regularised version for ill-conditioned confusion matrices (Azizzadenesheli et al. 2019);
- :func:`em_priors` — EM on the target posteriors (Saerens, Latinne & Decaestecker 2002);
- :class:`LabelShiftAdapter` — any scikit-learn classifier, prior-corrected on a target sample.

Used in lesson 14.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils.validation import check_is_fitted

from .._validation import check_1d, check_2d, check_choice, check_in_range, check_positive, check_positive_int, to_numpy

__all__ = ["LabelShiftEstimate", "confusion_matrix", "bbse", "rlls", "rlls_regularization", "em_priors", "LabelShiftAdapter"]

METHODS = ("bbse", "rlls", "em")
_SUM_TOLERANCE = 1e-6


class LabelShiftEstimate(NamedTuple):
    """Estimated target priors $\\hat q(y)$ (K,) and weights $\\hat w_y = \\hat q(y)/p(y)$ (K,); ``n_iter`` for EM."""

    target_priors: np.ndarray
    weights: np.ndarray
    n_iter: int = 0


def _check_distribution(values, name: str, length: int | None = None, positive: bool = False) -> np.ndarray:
    """A probability vector: 1-D, finite, non-negative (positive), summing to 1 within 1e-6."""
    array = to_numpy(check_1d(values, name, length=length), name)
    if array.size == 0:
        raise ValueError(f"{name} must hold at least one class, got an empty array")
    if (array <= 0).any() if positive else (array < 0).any():
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'} (probabilities), got a minimum "
                         f"of {array.min()}")
    if abs(array.sum() - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"{name} must sum to 1 (a probability distribution), got a sum of {array.sum()}")
    return array


def _check_confusion(confusion) -> np.ndarray:
    C = to_numpy(check_2d(confusion, "confusion"), "confusion")
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"confusion must be square (K, K), got shape {C.shape}")
    if (C < 0).any():
        raise ValueError(f"confusion must be non-negative (joint probabilities), got a minimum of {C.min()}")
    if abs(C.sum() - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"confusion must sum to 1 (the joint P(ŷ=i, y=j)), got a sum of {C.sum()}")
    if (C.sum(axis=0) <= 0).any():
        raise ValueError("confusion has an all-zero column: every class must occur in the source sample")
    return C


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    r"""The joint confusion matrix of BBSE, $\hat C_{ij} = \frac{1}{n}\sum_{l=1}^{n} [\hat y_l = i]\,[y_l = j]$.

    Rows are predictions, columns true classes (the transpose of ``sklearn.metrics.confusion_matrix``), normalised to
    sum to 1, so the column sums are the source priors $p(y = j)$. ``y_true``, ``y_pred`` (n,) integer labels in
    ``0..n_classes-1`` → (K, K). Used in lesson 14.
    """
    K = check_positive_int(n_classes, "n_classes")
    y_true = np.asarray(check_1d(y_true, "y_true"))
    y_pred = np.asarray(check_1d(y_pred, "y_pred", length=len(y_true)))
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if len(labels) == 0 or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= K:
            raise ValueError(f"{name} must hold integer labels in 0..{K - 1}, got {labels[:5]!r}...")
    C = np.zeros((K, K))
    np.add.at(C, (y_pred, y_true), 1.0)
    return C / len(y_true)


def _estimate(weights: np.ndarray, source_priors: np.ndarray, n_iter: int = 0) -> LabelShiftEstimate:
    """Clip negative weights to 0, normalise $q = w \\odot p$, and return the weights consistent with $q$."""
    weights = np.clip(weights, 0.0, None)
    mass = float(weights @ source_priors)
    if mass <= 0:
        raise ValueError("every estimated weight is zero or negative: the target predictions are inconsistent with "
                         "the confusion matrix (try rlls)")
    target_priors = weights * source_priors / mass
    return LabelShiftEstimate(target_priors, target_priors / source_priors, n_iter)


def bbse(confusion, target_prediction_mean) -> LabelShiftEstimate:
    r"""Black-box shift estimation (Lipton, Wang & Smola 2018): solve $\hat C\,w = \hat\mu$ for the prior ratio.

    Under label shift, $q(\hat y = i) = \sum_j p(\hat y = i, y = j)\, w_j$ for any fixed classifier, so

    $$\hat w = \hat C^{-1}\hat\mu, \qquad \hat C_{ij} = \hat p(\hat y = i, y = j), \qquad
      \hat\mu_i = \hat q(\hat y = i),$$

    with $\hat C$ from a held-out labelled source sample (:func:`confusion_matrix`) and $\hat\mu$ the fraction of
    target samples predicted as $i$. As in the paper, negative entries of $\hat w$ are clipped to 0; the target priors
    are $\hat q_j = \hat w_j\, p_j / \sum_l \hat w_l\, p_l$ with $p_j = \sum_i \hat C_{ij}$, and the returned weights
    are $\hat q_j / p_j$. A singular $\hat C$ is solved in the least-squares sense (minimum norm): use :func:`rlls`
    when it is ill-conditioned.

    ``confusion`` (K, K), summing to 1; ``target_prediction_mean`` (K,), summing to 1 → :class:`LabelShiftEstimate`
    with ``target_priors`` (K,) and ``weights`` (K,). Used in lesson 14.
    """
    C = _check_confusion(confusion)
    mu = _check_distribution(target_prediction_mean, "target_prediction_mean", length=len(C))
    weights = np.linalg.lstsq(C, mu, rcond=None)[0]
    return _estimate(weights, C.sum(axis=0))


def rlls_regularization(n_classes: int, n_source: int, delta: float = 0.05) -> float:
    r"""RLLS's concentration bound $\Delta_C(\delta) = \frac{2\log(2K/\delta)}{3n} + \sqrt{\frac{2\log(2K/\delta)}{n}}$
    on $\lVert \hat C - C \rVert_2$ with probability $1 - \delta$ (Azizzadenesheli et al. 2019). Used in lesson 14."""
    K = check_positive_int(n_classes, "n_classes")
    n = check_positive_int(n_source, "n_source")
    delta = check_in_range(delta, "delta", 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    log_term = math.log(2 * K / delta)
    return 2 * log_term / (3 * n) + math.sqrt(2 * log_term / n)


def rlls(confusion, target_prediction_mean, n_source: int, alpha: float = 0.01, delta: float = 0.05,
         regularization: float | None = None) -> LabelShiftEstimate:
    r"""Regularised learning under label shift (RLLS, Azizzadenesheli, Liu, Yang & Anandkumar 2019).

    Writes $w = \mathbf 1 + \theta$ and shrinks $\theta$ towards 0 (no shift) when $\hat C$ is too noisy to invert:

    $$\hat\theta = \arg\min_{\theta \ge -1}\ \lVert \hat C\theta - \hat b\rVert_2 + \rho\,\lVert\theta\rVert_2,
      \qquad \hat b = \hat\mu - \hat C\mathbf 1, \qquad \hat w = \mathbf 1 + \hat\theta,$$

    with $\hat b_i = \hat q(\hat y = i) - \hat p(\hat y = i)$ and $\rho = 3\alpha\,\Delta_C(\delta)$, $\Delta_C$ the
    concentration bound of :func:`rlls_regularization` for ``n_source`` held-out source samples; ``alpha`` = 0.01 and
    $\delta = 0.05$ are the authors' code's defaults. ``regularization`` sets $\rho$ directly instead. The norms are
    not squared (the paper's objective): $\hat\theta = 0$ exactly once $\rho \ge \lVert \hat C^\top \hat b\rVert /
    \lVert \hat b\rVert$. Solved by L-BFGS-B (scipy) on the norms smoothed by $\sqrt{\lVert r\rVert^2 + 10^{-20}}$,
    with the bound $\theta \ge -1$ (weights $\ge 0$). Priors and weights as in :func:`bbse`.

    ``confusion`` (K, K); ``target_prediction_mean`` (K,) → :class:`LabelShiftEstimate`. Used in lesson 14.
    """
    C = _check_confusion(confusion)
    mu = _check_distribution(target_prediction_mean, "target_prediction_mean", length=len(C))
    if regularization is None:
        rho = 3 * check_positive(alpha, "alpha", allow_zero=True) * rlls_regularization(len(C), n_source, delta)
    else:
        rho = check_positive(regularization, "regularization", allow_zero=True)
    b = mu - C.sum(axis=1)
    eps2 = 1e-20

    def objective(theta):
        residual = C @ theta - b
        r_norm, t_norm = math.sqrt(residual @ residual + eps2), math.sqrt(theta @ theta + eps2)
        return r_norm + rho * t_norm, C.T @ residual / r_norm + rho * theta / t_norm

    K = len(C)
    start = np.clip(np.linalg.lstsq(C, b, rcond=None)[0], -1.0, None) if rho == 0 else np.zeros(K)
    result = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                     bounds=scipy.optimize.Bounds(np.full(K, -1.0), np.full(K, np.inf)),
                                     options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12})
    if result.status == 1:
        warnings.warn(f"rlls: L-BFGS-B stopped at its iteration limit ({result.nit} iterations)", ConvergenceWarning,
                      stacklevel=2)
    return _estimate(1.0 + result.x, C.sum(axis=0))


def em_priors(posteriors, source_priors, tol: float = 1e-6, max_iter: int = 1000) -> LabelShiftEstimate:
    r"""Target priors by EM (Saerens, Latinne & Decaestecker 2002), from the source model's posteriors on the target.

    Starting from $\hat q^{(0)} = p$, alternate

    $$\hat q^{(s)}(y \mid x_k) = \frac{\frac{\hat q^{(s)}(y)}{p(y)}\, p(y \mid x_k)}
      {\sum_{y'} \frac{\hat q^{(s)}(y')}{p(y')}\, p(y' \mid x_k)}, \qquad
      \hat q^{(s+1)}(y) = \frac{1}{m}\sum_{k=1}^{m} \hat q^{(s)}(y \mid x_k),$$

    until $\max_y |\hat q^{(s+1)}(y) - \hat q^{(s)}(y)| \le$ ``tol``; a ``ConvergenceWarning`` if ``max_iter``
    iterations stop it first. Each step raises the target likelihood $\prod_k \sum_y \hat q(y)\,p(x_k \mid y)$; the
    posteriors must be calibrated for the source priors $p$ (the estimate inherits any miscalibration).

    ``posteriors`` (m, K): $p(y \mid x_k)$ of the m target samples, rows summing to 1; ``source_priors`` (K,) positive,
    summing to 1 → :class:`LabelShiftEstimate` (``n_iter``: iterations run). Used in lesson 14.
    """
    P = to_numpy(check_2d(posteriors, "posteriors"), "posteriors")
    p = _check_distribution(source_priors, "source_priors", positive=True)
    if P.shape[1] != len(p):
        raise ValueError(f"posteriors must have one column per class of source_priors ({len(p)}), got {P.shape[1]}")
    if (P < 0).any():
        raise ValueError(f"posteriors must be non-negative (probabilities), got a minimum of {P.min()}")
    if np.abs(P.sum(axis=1) - 1.0).max() > _SUM_TOLERANCE:
        raise ValueError("posteriors' rows must sum to 1 (probabilities), got row sums from "
                         f"{P.sum(axis=1).min()} to {P.sum(axis=1).max()}")
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    q = p.copy()
    for n_iter in range(1, max_iter + 1):
        adjusted = P * (q / p)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        q_new = adjusted.mean(axis=0)
        change, q = np.abs(q_new - q).max(), q_new
        if change <= tol:
            break
    else:
        warnings.warn(f"em_priors did not converge in max_iter={max_iter} iterations (last change {change:.2e} > "
                      f"tol={tol:g}); increase max_iter", ConvergenceWarning, stacklevel=2)
    return LabelShiftEstimate(q, q / p, n_iter)


class LabelShiftAdapter(ClassifierMixin, BaseEstimator):
    r"""A scikit-learn classifier corrected for a change of class priors: $\hat q(y \mid x) \propto \hat w_y\, p(y \mid x)$.

    ``fit(X, y)`` on the labelled source fits ``estimator`` (default: logistic regression) and records the source
    priors $p(y)$; ``adapt(X_target)`` estimates the target priors $\hat q(y)$ from unlabelled target inputs with
    ``method``:

    - ``"bbse"`` (:func:`bbse`) or ``"rlls"`` (:func:`rlls`): the confusion matrix $\hat C$ comes from
      **cross-fitted** predictions on the source (``cv`` stratified folds: each sample predicted by a model that did
      not see it), then the estimator is refitted on the whole source; $\hat\mu$ is the mean one-hot prediction on the
      target. (The paper holds out a split; cross-fitting uses every sample for both, and $\hat C$ describes models
      fitted on $(1 - 1/\text{cv})$ of the source.)
    - ``"em"`` (:func:`em_priors`): the estimator's posteriors on the target, which must be calibrated.

    Then ``predict_proba(X)`` (n, K) returns $\hat w_y\, p(y \mid x) / \sum_{y'} \hat w_{y'}\, p(y' \mid x)$ and
    ``predict(X)`` its arg-max. Before ``adapt`` the weights are 1 (the source classifier).

    Fitted attributes: ``estimator_``, ``classes_``, ``source_priors_`` (K,), ``confusion_`` (K, K; bbse/rlls),
    ``target_priors_`` (K,), ``weights_`` (K,), ``n_iter_`` (em). Used in lesson 14.
    """

    def __init__(self, estimator=None, method: str = "bbse", cv: int = 5, alpha: float = 0.01, delta: float = 0.05,
                 tol: float = 1e-6, max_iter: int = 1000, random_state=None):
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.alpha = alpha
        self.delta = delta
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y):
        check_choice(self.method, "method", METHODS)
        X = to_numpy(check_2d(X, "X", min_samples=2), "X")
        y = to_numpy(check_1d(y, "y", length=len(X), finite=False), "y", dtype=None)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y must hold at least 2 classes, got {len(self.classes_)}")
        base = LogisticRegression(max_iter=1000) if self.estimator is None else self.estimator
        if not hasattr(base, "predict_proba"):
            raise TypeError(f"estimator must be a scikit-learn classifier with predict_proba, got {type(base).__name__}")
        self.source_priors_ = np.bincount(codes, minlength=len(self.classes_)) / len(codes)
        if self.method in ("bbse", "rlls"):
            cv = check_positive_int(self.cv, "cv", minimum=2)
            folds = StratifiedKFold(cv, shuffle=True, random_state=self.random_state)
            predicted = cross_val_predict(clone(base), X, codes, cv=folds, method="predict")
            self.confusion_ = confusion_matrix(codes, predicted, len(self.classes_))
        self.estimator_ = clone(base).fit(X, codes)
        self.n_source_ = len(codes)
        self.target_priors_, self.weights_ = self.source_priors_.copy(), np.ones(len(self.classes_))
        return self

    def adapt(self, X_target):
        """Estimate the target priors and weights from unlabelled target inputs ``X_target`` (m, d); returns ``self``."""
        check_is_fitted(self, "estimator_")
        posteriors = self._source_proba(X_target, "X_target")
        if self.method == "em":
            estimate = em_priors(posteriors, self.source_priors_, tol=self.tol, max_iter=self.max_iter)
            self.n_iter_ = estimate.n_iter
        else:
            mu = np.bincount(posteriors.argmax(axis=1), minlength=len(self.classes_)) / len(posteriors)
            if self.method == "bbse":
                estimate = bbse(self.confusion_, mu)
            else:
                estimate = rlls(self.confusion_, mu, self.n_source_, alpha=self.alpha, delta=self.delta)
        self.target_priors_, self.weights_ = estimate.target_priors, estimate.weights
        return self

    def _source_proba(self, X, name: str) -> np.ndarray:
        X = to_numpy(check_2d(X, name), name)
        if X.shape[1] != self.estimator_.n_features_in_:
            raise ValueError(f"{name} must have {self.estimator_.n_features_in_} features (as in fit), got {X.shape[1]}")
        return self.estimator_.predict_proba(X)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        scaled = self._source_proba(X, "X") * self.weights_
        total = scaled.sum(axis=1, keepdims=True)
        return np.divide(scaled, total, out=np.full_like(scaled, 1.0 / scaled.shape[1]), where=total > 0)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
