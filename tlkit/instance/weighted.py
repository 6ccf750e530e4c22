"""Formula 4.1 — the importance-weighted loss — for scikit-learn estimators and for torch models."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import get_config
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.validation import check_is_fitted

from .._validation import check_1d, check_2d, check_same_dim, check_same_length, like_input, to_numpy

__all__ = ["WeightedEstimator", "weighted_loss"]

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
REDUCTIONS = ("mean", "sum")


class WeightedEstimator(MetaEstimatorMixin, BaseEstimator):
    r"""Fit any scikit-learn estimator on importance-weighted source data (plus optional labelled target data).

    Article formula 4.1:

    $$\min_{f_t} \sum_{i=1}^{n_s} w(x_i^s)\, \ell\big(f_t(x_i^s), y_i^s\big)
      + \sum_{j=1}^{n_t} \ell\big(f_t(x_j^t), y_j^t\big)$$

    ``fit(Xs, ys, Xt, yt=None)`` estimates $w$ from ``Xs`` and ``Xt`` with ``weighting`` — an estimator
    with ``fit(Xs, Xt)`` and ``weights_`` (:class:`KMM`, :class:`KLIEP`, :class:`ClassifierDensityRatio`), a
    function ``(Xs, Xt) -> weights`` such as :func:`distance_weights`, or ``None`` for $w \equiv 1$ (the
    unweighted baseline) — and passes it as ``sample_weight`` to a clone of ``estimator``. With ``yt`` the target
    samples join the training set with weight 1 (the second sum); without it only the first sum is minimised.

    The weights reach ``estimator`` as ``sample_weight``. With scikit-learn's metadata routing on
    (``sklearn.set_config(enable_metadata_routing=True)``) they are routed like any metadata: the consumer asks for
    them with ``set_fit_request(sample_weight=True)`` — any step of a :class:`~sklearn.pipeline.Pipeline`, e.g. a
    ``StandardScaler`` too — and ``fit`` raises if no step does. Without routing, ``estimator.fit`` gets
    ``sample_weight=`` and a ``Pipeline`` gets it as ``<last step>__sample_weight``.

    Shapes: ``Xs`` (n_s, d), ``ys`` (n_s,), ``Xt`` (n_t, d), ``yt`` (n_t,) or None. Fitted attributes:
    ``estimator_``, ``weights_`` (n_s,; numpy or torch like ``Xs``), ``weighting_`` (the fitted weighting
    estimator, if one was given). ``predict`` / ``predict_proba`` answer in the input's type. Used in lesson 05.
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
        estimator = clone(self.estimator)
        if get_config()["enable_metadata_routing"]:
            if not self.get_metadata_routing().consumes("fit", ["sample_weight"]):
                raise ValueError(f"estimator ({type(estimator).__name__}) must request the weights: call "
                                 "set_fit_request(sample_weight=True) on it or on a step of its pipeline")
            routed = process_routing(self, "fit", sample_weight=sample_weight).estimator.fit
            estimator.fit(features, targets, **routed)
        elif isinstance(estimator, Pipeline):
            estimator.fit(features, targets, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})
        else:
            estimator.fit(features, targets, sample_weight=sample_weight)
        self.estimator_ = estimator
        self.n_features_in_ = xs.shape[1]
        self.weights_ = like_input(weights, Xs)
        return self

    def get_metadata_routing(self) -> MetadataRouter:
        """Routing of ``fit``'s ``sample_weight`` (the importance weights) to ``estimator.fit``."""
        return MetadataRouter(owner=self).add(estimator=self.estimator,
                                              method_mapping=MethodMapping().add(caller="fit", callee="fit"))

    def predict(self, X):
        """The fitted estimator's ``predict`` on ``X`` (n, d)."""
        check_is_fitted(self)
        return like_input(self.estimator_.predict(to_numpy(X, "X")), X)

    def predict_proba(self, X):
        """The fitted estimator's ``predict_proba`` on ``X`` (n, d)."""
        check_is_fitted(self)
        return like_input(self.estimator_.predict_proba(to_numpy(X, "X")), X)

    def score(self, X, y):
        """The fitted estimator's ``score`` (accuracy for a classifier, R² for a regressor)."""
        check_is_fitted(self)
        return self.estimator_.score(to_numpy(X, "X"), to_numpy(y, "y", dtype=None))


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

    $$L = \sum_{i=1}^{n_s} w(x_i^s)\, \ell\big(f_t(x_i^s), y_i^s\big)
      + \sum_{j=1}^{n_t} \ell\big(f_t(x_j^t), y_j^t\big)$$

    ``reduction="sum"`` returns $L$; ``"mean"`` returns $L / (n_s + n_t)$ (same minimiser; with
    weights of mean 1 it equals the usual mean loss when $w \equiv 1$). ``loss`` is ``"cross_entropy"``
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
