"""Importance-weighted validation: IWCV (Sugiyama et al. 2007) and deep embedded validation (You et al. 2019)."""
from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._validation import check_1d, check_2d, check_same_length, to_numpy

__all__ = ["iwcv_score", "importance_weighted_scorer", "dev_risk", "deep_embedded_validation"]

LOSSES = ("zero_one", "squared_error", "log_loss")
# scorer name: (loss, response method, sign): the scorer returns sign * weighted loss (+ 1 for accuracy).
SCORINGS = {"accuracy": ("zero_one", "predict"), "neg_mean_squared_error": ("squared_error", "predict"),
            "neg_log_loss": ("log_loss", "predict_proba")}


def _check_weights(weights, length: int, name: str = "weights") -> np.ndarray:
    weights = to_numpy(check_1d(weights, name, length=length), name)
    if np.any(weights < 0):
        raise ValueError(f"{name} must be non-negative, got a minimum of {weights.min()}")
    return weights


def _per_sample_losses(y_true, y_pred, loss, labels=None) -> np.ndarray:
    """ℓ_i for each sample: 0–1 error, squared error, the log loss of predicted probabilities, or a callable's."""
    y_true = to_numpy(check_1d(y_true, "y_true", finite=False), "y_true", dtype=None)
    if callable(loss):
        losses = to_numpy(loss(y_true, y_pred), "loss(y_true, y_pred)")
        if losses.shape != (len(y_true),):
            raise ValueError(f"loss(y_true, y_pred) must return one loss per sample, shape ({len(y_true)},), "
                             f"got {losses.shape}")
        return losses
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} or a callable (y_true, y_pred) -> (n,), got {loss!r}")
    if loss == "log_loss":
        proba = to_numpy(check_2d(y_pred, "y_pred"), "y_pred")
        check_same_length(y_true, proba, ("y_true", "y_pred"))
        if np.any(proba < 0) or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError("y_pred must hold probabilities for log_loss: non-negative rows that sum to 1")
        labels = np.arange(proba.shape[1]) if labels is None else np.asarray(labels)
        if len(labels) != proba.shape[1]:
            raise ValueError(f"labels must name the {proba.shape[1]} columns of y_pred, got {len(labels)} labels")
        column = np.searchsorted(labels, y_true)
        if np.any(column >= len(labels)) or np.any(labels[np.minimum(column, len(labels) - 1)] != y_true):
            raise ValueError(f"y_true holds a label that is not among labels {labels.tolist()}")
        eps = np.finfo(np.float64).eps
        return -np.log(np.clip(proba[np.arange(len(y_true)), column], eps, 1.0))
    y_pred = to_numpy(check_1d(y_pred, "y_pred", finite=False), "y_pred", dtype=None)
    check_same_length(y_true, y_pred, ("y_true", "y_pred"))
    if loss == "zero_one":
        return (y_pred != y_true).astype(np.float64)
    return (y_pred.astype(np.float64) - y_true.astype(np.float64)) ** 2


def iwcv_score(y_true, y_pred, weights, loss="zero_one", folds=None, labels=None) -> float:
    r"""Importance-weighted validation risk, self-normalised in each fold (Sugiyama, Krauledat & Müller 2007).

    With validation folds $V_1, \dots, V_K$ (``folds``; one fold of all samples if ``None``), the out-of-fold
    predictions $f^{(-k)}(x_i)$ in ``y_pred`` and importance weights $w_i \approx p_t(x_i)/p_s(x_i)$,

    $$\widehat{R}_T^{\,\mathrm{IW}} = \frac{1}{K} \sum_{k=1}^{K}
      \frac{\sum_{i \in V_k} w_i\, \ell\big(f^{(-k)}(x_i^s), y_i^s\big)}{\sum_{i \in V_k} w_i} .$$

    $w \equiv 1$ is ordinary cross-validation. ``loss``: ``"zero_one"`` ($\ell = [\hat y \ne y]$, ``y_pred``
    labels), ``"squared_error"`` ($(\hat y - y)^2$), ``"log_loss"`` ($-\log \hat p_{y}$, ``y_pred`` the
    probabilities (n, C) whose columns are ``labels``, default $0, \dots, C-1$) or a callable
    ``loss(y_true, y_pred) -> (n,)``. Lower is better.

    Shapes: ``y_true`` (n,), ``y_pred`` (n,) or (n, C), ``weights`` (n,), ``folds`` a sequence of index arrays.
    Raises ``ValueError`` for mismatched lengths, negative weights, a fold whose weights sum to 0 or indices out of
    range, probabilities that are negative or do not sum to 1. Used in lesson 13.
    """
    losses = _per_sample_losses(y_true, y_pred, loss, labels)
    weights = _check_weights(weights, len(losses))
    folds = [np.arange(len(losses))] if folds is None else [np.asarray(fold) for fold in folds]
    if not folds:
        raise ValueError("folds must hold at least one fold of indices, got an empty sequence")
    fold_risks = []
    for k, fold in enumerate(folds):
        if fold.ndim != 1 or fold.size == 0 or fold.dtype.kind not in "iu" or fold.min() < 0 or fold.max() >= len(losses):
            raise ValueError(f"folds[{k}] must be a non-empty 1-D array of indices in [0, {len(losses)}), got {fold!r}")
        total = np.sum(weights[fold])
        if not total > 0:
            raise ValueError(f"the weights of folds[{k}] sum to 0: the weighted validation risk is undefined")
        fold_risks.append(np.sum(weights[fold] * losses[fold]) / total)
    return float(np.mean(fold_risks))


class _ImportanceWeightedScorer:
    """``scorer(estimator, X, y)``: the IWCV score of one validation fold, weights looked up by the fold's rows."""

    def __init__(self, scoring, X, weights):
        if callable(scoring):
            self.loss, self.response = scoring, "predict"
        elif scoring in SCORINGS:
            self.loss, self.response = SCORINGS[scoring]
        else:
            raise ValueError(f"scoring must be one of {tuple(SCORINGS)} or a callable (y_true, y_pred) -> (n,) "
                             f"per-sample losses, got {scoring!r}")
        self.scoring = scoring
        X = np.ascontiguousarray(to_numpy(check_2d(X, "X"), "X"))
        self.weights = _check_weights(weights, len(X))
        self.n_features = X.shape[1]
        self.index = {}
        for i, row in enumerate(X):
            j = self.index.setdefault(row.tobytes(), i)
            if self.weights[j] != self.weights[i]:
                raise ValueError(f"rows {j} and {i} of X are identical but have different weights "
                                 f"({self.weights[j]} and {self.weights[i]}): a fold's weights would be ambiguous")

    def fold_weights(self, X):
        """The weights of the rows of ``X`` (a subset of the rows given to the scorer), in order."""
        X = np.ascontiguousarray(to_numpy(check_2d(X, "X"), "X"))
        if X.shape[1] != self.n_features:
            raise ValueError(f"X must have {self.n_features} features, as the X given to the scorer, got {X.shape[1]}")
        rows = [self.index.get(row.tobytes()) for row in X]
        if None in rows:
            raise ValueError(f"row {rows.index(None)} of the validation fold is not a row of the X given to "
                             "importance_weighted_scorer: pass the same X to the scorer and to the search")
        return self.weights[rows]

    def __call__(self, estimator, X, y):
        check_is_fitted(estimator)
        weights = self.fold_weights(X)
        response = getattr(estimator, self.response)(X)
        labels = getattr(estimator, "classes_", None) if self.loss == "log_loss" else None
        risk = iwcv_score(y, response, weights, loss=self.loss, labels=labels)
        return 1.0 - risk if self.scoring == "accuracy" else -risk

    def __repr__(self):
        return f"importance_weighted_scorer({self.scoring!r}, X={len(self.weights)} rows)"


def importance_weighted_scorer(scoring, X, weights):
    r"""A scikit-learn scorer for IWCV: each validation fold's score is weighted by the importance weights.

    Pass it as ``scoring=`` to ``GridSearchCV``, ``cross_val_score``, ``cross_validate`` or ``validation_curve``.
    On fold $V_k$ it returns $\sum_{i \in V_k} w_i\, s_i / \sum_{i \in V_k} w_i$ — the per-fold term of
    :func:`iwcv_score`, with $s_i = 1 - [\hat y_i \ne y_i]$ for ``"accuracy"``, $-(\hat y_i - y_i)^2$ for
    ``"neg_mean_squared_error"``, $\log \hat p_{y_i}$ for ``"neg_log_loss"``, and $-\ell_i$ for a callable
    ``loss(y_true, y_pred) -> (n,)`` of per-sample losses on ``predict``'s output. Greater is better, as for every
    scikit-learn scorer; the search's mean over folds is then $-\widehat{R}_T^{\,\mathrm{IW}}$ (or $1 - $ it).

    **How a fold finds its weights.** A scorer is called as ``scorer(estimator, X_fold, y_fold)`` and never sees
    the fold's indices. The scorer is given the whole source training set ``X`` (n, d) and its ``weights`` (n,)
    and looks each validation row up in ``X`` (by its exact bytes: scikit-learn's splitters copy rows unchanged).
    This needs no global configuration and leaves ``fit`` alone, so the estimator can be trained with other
    weights (``params={"sample_weight": ...}``). scikit-learn 1.9's metadata routing could carry the weights
    instead, but only with ``enable_metadata_routing=True`` set globally and ``set_fit_request`` on every
    estimator, or the importance weights would also reach ``fit``. Pass the search the same ``X`` (dense; a
    pandas frame works). Identical rows must have identical weights (``ValueError`` otherwise, and for a fold row
    not in ``X``, negative weights, a fold whose weights sum to 0). Used in lesson 13.
    """
    return _ImportanceWeightedScorer(scoring, X, weights)


def dev_risk(losses, weights) -> float:
    r"""Deep embedded validation risk (You, Wang, Long & Jordan 2019): the IW risk with a control variate.

    For validation losses $\ell_i$ and importance weights $w_i$ with $\mathbb E_s[w] = 1$,

    $$\widehat R_{\mathrm{DEV}} = \overline{w\ell} + \eta\,\big(\overline{w} - 1\big), \qquad
      \eta = -\frac{\widehat{\mathrm{Cov}}(w\ell,\, w)}{\widehat{\mathrm{Var}}(w)},$$

    bars the means over the $n$ samples, covariance and variance with $n - 1$. The term $\overline w - 1$ has
    mean zero, so it changes no expectation; with the optimal $\eta$ it removes the part of the variance of
    $\overline{w\ell}$ that the weights explain. Lower is better. Shapes: ``losses`` (n,), ``weights`` (n,),
    $n \ge 2$, numpy or torch. ``ValueError`` for mismatched lengths, negative or constant weights.
    Used in lessons 10 and 13.
    """
    losses = to_numpy(check_1d(losses, "losses"), "losses")
    if len(losses) < 2:
        raise ValueError(f"losses must hold at least 2 samples (a covariance is estimated), got {len(losses)}")
    weights = _check_weights(weights, len(losses))
    weighted = weights * losses
    variance = np.var(weights, ddof=1)
    if not variance > 0:
        raise ValueError("weights are constant: the control variate is undefined (use the plain mean of losses)")
    eta = -np.cov(weighted, weights, ddof=1)[0, 1] / variance
    return float(weighted.mean() + eta * (weights.mean() - 1.0))


def deep_embedded_validation(source_features, source_losses, target_features, density_ratio=None) -> float:
    r"""DEV: :func:`dev_risk` with weights from a domain classifier on the features (You et al. 2019).

    A probabilistic classifier is fitted to tell the target features from the source-validation features, and
    $w(z) = \frac{p(d = t \mid z)}{p(d = s \mid z)} \cdot \frac{n_s}{n_t}$ at each source-validation feature
    $z_i$; then $\widehat R_{\mathrm{DEV}}$ of ``source_losses`` with these weights. ``density_ratio`` is any
    estimator with ``fit(Xs, Xt)`` and ``weights_`` (default ``tl.instance.ClassifierDensityRatio(random_state=0)``,
    calibrated logistic regression). Simplified against the paper: the classifier is fitted on the validation
    features themselves, where You et al. fit it on the training features and apply it to the validation ones.

    Shapes: ``source_features`` (n_s, d), ``source_losses`` (n_s,), ``target_features`` (n_t, d), numpy or torch
    (e.g. a network's penultimate layer on held-out source and on target inputs). Lower is better.
    Used in lesson 10.
    """
    from ..instance import ClassifierDensityRatio

    source_features, target_features = check_2d(source_features, "source_features"), check_2d(
        target_features, "target_features")
    check_same_length(source_features, source_losses, ("source_features", "source_losses"))
    estimator = ClassifierDensityRatio(random_state=0) if density_ratio is None else density_ratio
    weights = estimator.fit(source_features, target_features).weights_
    return dev_risk(source_losses, to_numpy(weights, "weights"))
