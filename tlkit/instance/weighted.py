"""Formula 4.1 — the importance-weighted loss — for scikit-learn estimators and for torch models."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

from .._validation import check_1d, check_2d, check_same_dim, check_same_length, to_numpy

__all__ = ["WeightedEstimator", "weighted_loss"]

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
REDUCTIONS = ("mean", "sum")


class WeightedEstimator(BaseEstimator):
    r"""Fit any scikit-learn estimator on importance-weighted source data (plus optional labelled target data).

    Article formula 4.1:

    .. math:: \min_{f_t} \sum_{i=1}^{n_s} w(x_i^s)\, \ell\big(f_t(x_i^s), y_i^s\big)
              + \sum_{j=1}^{n_t} \ell\big(f_t(x_j^t), y_j^t\big)

    ``fit(Xs, ys, Xt, yt=None)`` estimates :math:`w` from ``Xs`` and ``Xt`` with ``weighting`` — an estimator
    with ``fit(Xs, Xt)`` and ``weights_`` (:class:`KMM`, :class:`KLIEP`, :class:`ClassifierDensityRatio`), a
    function ``(Xs, Xt) -> weights`` such as :func:`distance_weights`, or ``None`` for :math:`w \equiv 1` (the
    unweighted baseline) — and passes it as ``sample_weight`` to a clone of ``estimator``. With ``yt`` the target
    samples join the training set with weight 1 (the second sum); without it only the first sum is minimised.
    A :class:`~sklearn.pipeline.Pipeline` gets the weights as ``<last step>__sample_weight``.

    Shapes: ``Xs`` (n_s, d), ``ys`` (n_s,), ``Xt`` (n_t, d), ``yt`` (n_t,) or None. Fitted attributes:
    ``estimator_``, ``weights_`` (n_s,), ``weighting_`` (the fitted weighting estimator, if one was given).
    Used in lesson 05.
    """

    def __init__(self, estimator, weighting=None):
        self.estimator = estimator
        self.weighting = weighting

    def fit(self, Xs, ys, Xt, yt=None):
        xs, xt = check_2d(to_numpy(Xs, "Xs"), "Xs"), check_2d(to_numpy(Xt, "Xt"), "Xt")
        check_same_dim(xs, xt, ("Xs", "Xt"))
        ys = to_numpy(ys, "ys", dtype=None)
        check_1d(ys, "ys", length=len(xs), finite=False)
        if yt is not None:
            yt = to_numpy(yt, "yt", dtype=None)
            check_1d(yt, "yt", length=len(xt), finite=False)
        if not hasattr(self.estimator, "fit"):
            raise TypeError(f"estimator must be a scikit-learn estimator, got {type(self.estimator).__name__}")
        if self.weighting is None:
            weights = np.ones(len(Xs))
        elif hasattr(self.weighting, "fit"):
            self.weighting_ = clone(self.weighting).fit(Xs, Xt)
            weights = self.weighting_.weights_
        elif callable(self.weighting):
            weights = self.weighting(Xs, Xt)
        else:
            raise TypeError("weighting must be None, an estimator with fit(Xs, Xt) and weights_, or a function "
                            f"(Xs, Xt) -> weights; got {type(self.weighting).__name__}")
        weights = to_numpy(weights, "weights")
        check_1d(weights, "weights", length=len(Xs))
        if (weights < 0).any():
            raise ValueError("weights must be non-negative")

        features, targets, sample_weight = xs, ys, weights
        if yt is not None:
            features = np.vstack([xs, xt])
            targets = np.concatenate([ys, yt])
            sample_weight = np.concatenate([weights, np.ones(len(Xt))])
        self.estimator_ = clone(self.estimator)
        if isinstance(self.estimator_, Pipeline):
            self.estimator_.fit(features, targets, **{f"{self.estimator_.steps[-1][0]}__sample_weight": sample_weight})
        else:
            self.estimator_.fit(features, targets, sample_weight=sample_weight)
        self.weights_ = weights
        return self

    def _fitted(self):
        if not hasattr(self, "estimator_"):
            raise RuntimeError("WeightedEstimator is not fitted yet; call fit(Xs, ys, Xt) first")
        return self.estimator_

    def predict(self, X):
        """The fitted estimator's ``predict`` on ``X`` (n, d)."""
        return self._fitted().predict(to_numpy(X, "X"))

    def predict_proba(self, X):
        """The fitted estimator's ``predict_proba`` on ``X`` (n, d)."""
        return self._fitted().predict_proba(to_numpy(X, "X"))

    def score(self, X, y):
        """The fitted estimator's ``score`` (accuracy for a classifier, R² for a regressor)."""
        return self._fitted().score(to_numpy(X, "X"), to_numpy(y, "y", dtype=None))


def _per_sample(loss, output: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if callable(loss):
        values = loss(output, target)
    elif loss == "cross_entropy":
        values = F.cross_entropy(output, target.long(), reduction="none")
    elif loss == "binary_cross_entropy":
        values = F.binary_cross_entropy_with_logits(output, target.to(output.dtype), reduction="none")
    elif loss == "mse":
        values = F.mse_loss(output, target.to(output.dtype), reduction="none")
    else:
        raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
    if values.dim() > 1:  # mse on (n, k) outputs: one loss per sample
        values = values.reshape(values.shape[0], -1).sum(dim=1)
    if values.shape != (output.shape[0],):
        raise ValueError(f"the loss must give one value per sample for {name}, got shape {tuple(values.shape)}")
    return values


def weighted_loss(source_output, source_target, source_weights, target_output=None, target_target=None,
                  loss="cross_entropy", reduction: str = "mean") -> torch.Tensor:
    r"""Article formula 4.1 as a differentiable torch loss.

    .. math:: L = \sum_{i=1}^{n_s} w(x_i^s)\, \ell\big(f_t(x_i^s), y_i^s\big)
              + \sum_{j=1}^{n_t} \ell\big(f_t(x_j^t), y_j^t\big)

    ``reduction="sum"`` returns :math:`L`; ``"mean"`` returns :math:`L / (n_s + n_t)` (same minimiser; with
    weights of mean 1 it equals the usual mean loss when :math:`w \equiv 1`). ``loss`` is ``"cross_entropy"``
    (logits (n, C), integer labels (n,)), ``"binary_cross_entropy"`` (logits (n,), labels (n,) in {0, 1}),
    ``"mse"`` (outputs (n,) or (n, k)), or a callable ``(output, target) -> (n,)`` per-sample losses.
    The target term is optional (pass both ``target_output`` and ``target_target``, or neither).
    Weights are treated as constants (they come from a density-ratio estimate); gradients flow to the outputs.

    Shapes: ``source_output`` (n_s, ...), ``source_target`` (n_s, ...), ``source_weights`` (n_s,) → 0-dim tensor.
    Used in lesson 05.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    for value, name in ((source_output, "source_output"), (source_target, "source_target")):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__}")
    if (target_output is None) != (target_target is None):
        raise ValueError("pass both target_output and target_target, or neither")
    n_s = source_output.shape[0] if source_output.dim() else 0
    if n_s == 0:
        raise ValueError("source_output must hold at least one sample")
    check_same_length(source_output, source_target, ("source_output", "source_target"))
    weights = torch.as_tensor(source_weights, dtype=source_output.dtype, device=source_output.device).detach()
    check_1d(weights, "source_weights", length=n_s)
    if bool((weights < 0).any()):
        raise ValueError("source_weights must be non-negative")
    total = (weights * _per_sample(loss, source_output, source_target, "the source")).sum()
    count = n_s
    if target_output is not None:
        if not isinstance(target_output, torch.Tensor) or not isinstance(target_target, torch.Tensor):
            raise TypeError("target_output and target_target must be torch tensors")
        check_same_length(target_output, target_target, ("target_output", "target_target"))
        total = total + _per_sample(loss, target_output, target_target, "the target").sum()
        count += target_output.shape[0]
    return total if reduction == "sum" else total / count
