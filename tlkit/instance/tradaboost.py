"""TrAdaBoost (Dai, Yang, Xue & Yu, 2007): boosting that learns which source instances still help."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._validation import (check_1d, check_2d, check_positive_int, check_random_state, check_same_dim, like_input,
                           to_numpy)

__all__ = ["TrAdaBoost"]

# beta_t = eps_t / (1 - eps_t) needs 0 < eps_t < 1/2: a perfect round would give beta_t = 0 (an infinite vote).
MIN_ERROR = 1e-10
MAX_ERROR = 0.5 - 1e-10


def _labels(y, name: str, n: int) -> np.ndarray:
    labels = to_numpy(y, name, dtype=None)
    return check_1d(labels, name, length=n, finite=labels.dtype.kind == "f")


class TrAdaBoost(ClassifierMixin, BaseEstimator):
    r"""Transfer AdaBoost for binary classification with many source and few labelled target instances.

    Dai et al. (2007), Algorithm 1. With $n$ source and $m$ target instances, weights
    $w^1 \equiv 1$, for $t = 1, \dots, N$:

    1. $p^t = w^t / \sum_i w_i^t$; train $h_t$ on source ∪ target with sample weights $p^t$;
    2. the error on the TARGET instances only:
       $\epsilon_t = \sum_{i=n+1}^{n+m} w_i^t\, |h_t(x_i) - c(x_i)| \,/\, \sum_{i=n+1}^{n+m} w_i^t$,
       kept inside $(0, \tfrac12)$ — a round with $\epsilon_t \ge \tfrac12$ is clipped to just below
       $\tfrac12$ (so $\beta_t \approx 1$: no vote, no reweighting) and ``fit`` warns how many were;
    3. $\beta_t = \epsilon_t / (1 - \epsilon_t)$ and $\beta = 1 / (1 + \sqrt{2 \ln n / N})$;
    4. source: $w_i^{t+1} = w_i^t\, \beta^{|h_t(x_i) - c(x_i)|}$ (a misclassified source instance loses
       weight); target: $w_i^{t+1} = w_i^t\, \beta_t^{-|h_t(x_i) - c(x_i)|}$ (AdaBoost: it gains weight).

    The output votes with the second half of the rounds only:

    $$h_f(x) = 1 \iff \prod_{t=\lceil N/2 \rceil}^{N} \beta_t^{-h_t(x)} \ge
      \prod_{t=\lceil N/2 \rceil}^{N} \beta_t^{-1/2}.$$

    ``estimator`` is any scikit-learn classifier whose ``fit`` takes ``sample_weight`` (default: a depth-3
    decision tree); weights are passed scaled to mean 1, which leaves $p^t$ unchanged.

    Shapes: ``fit(Xs (n, d), ys (n,), Xt (m, d), yt (m,))``, labels with exactly two classes;
    ``predict(X (k, d))`` → (k,). Fitted attributes: ``estimators_``, ``errors_`` ($\epsilon_t$),
    ``betas_`` ($\beta_t$), ``beta_source_`` ($\beta$), ``classes_``, ``source_weights_``,
    ``target_weights_`` (the final $w$, normalised to sum 1 together). ``predict`` and
    ``decision_function`` answer in the input's type (numpy, or torch on the input's device). Used in lesson 06.
    """

    def __init__(self, estimator=None, n_estimators: int = 20, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, Xs, ys, Xt, yt):
        xs, xt = check_2d(to_numpy(Xs, "Xs"), "Xs"), check_2d(to_numpy(Xt, "Xt"), "Xt")
        check_same_dim(xs, xt, ("Xs", "Xt"))
        ys, yt = _labels(ys, "ys", len(xs)), _labels(yt, "yt", len(xt))
        n_rounds = check_positive_int(self.n_estimators, "n_estimators")
        check_classification_targets(np.concatenate([ys, yt]))
        classes = np.unique(np.concatenate([ys, yt]))
        if len(classes) != 2:
            raise ValueError(f"TrAdaBoost is binary (Dai et al. 2007): ys and yt together must hold exactly 2 "
                             f"classes, got {len(classes)}: {classes.tolist()}")
        rng = check_random_state(self.random_state)
        base = DecisionTreeClassifier(max_depth=3) if self.estimator is None else self.estimator
        n, m = len(xs), len(xt)
        features = np.vstack([xs, xt])
        targets = np.concatenate([ys, yt])
        is_target = np.r_[np.zeros(n, dtype=bool), np.ones(m, dtype=bool)]
        beta_source = 1.0 / (1.0 + math.sqrt(2.0 * math.log(n) / n_rounds))
        weights = np.ones(n + m)
        estimators, errors, betas = [], [], []
        too_weak = 0
        for _ in range(n_rounds):
            p = weights / weights.sum()
            learner = clone(base)
            if "random_state" in learner.get_params():
                learner.set_params(random_state=int(rng.integers(2**31 - 1)))
            learner.fit(features, targets, sample_weight=p * (n + m))
            mistakes = (learner.predict(features) != targets).astype(float)
            error = float(np.sum(weights[is_target] * mistakes[is_target]) / np.sum(weights[is_target]))
            too_weak += error >= 0.5
            error = min(max(error, MIN_ERROR), MAX_ERROR)
            beta_t = error / (1.0 - error)
            weights = np.where(is_target, weights * beta_t ** -mistakes, weights * beta_source ** mistakes)
            weights = weights / weights.sum()  # a common scale changes neither p nor eps: this only avoids overflow
            estimators.append(learner)
            errors.append(error)
            betas.append(beta_t)
        if too_weak:
            warnings.warn(f"TrAdaBoost: in {too_weak} of {n_rounds} rounds the weighted target error was "
                          ">= 1/2; it was clipped to just below 1/2, so those rounds barely vote and leave the target "
                          "weights as they were. Use a stronger estimator or more labelled target data.",
                          UserWarning, stacklevel=2)

        self.classes_ = classes
        self.estimators_ = estimators
        self.errors_ = np.array(errors)
        self.betas_ = np.array(betas)
        self.beta_source_ = beta_source
        self.source_weights_ = weights[:n]
        self.target_weights_ = weights[n:]
        self.n_features_in_ = xs.shape[1]
        return self

    def decision_function(self, X):
        r"""Log of the vote ratio, $\sum_{t=\lceil N/2\rceil}^{N} \ln(1/\beta_t)\,(h_t(x) - \tfrac12)$;
        positive means ``classes_[1]``. ``X`` (k, d) → (k,)."""
        return like_input(self._vote(X), X)

    def _vote(self, X) -> np.ndarray:
        check_is_fitted(self)
        x = check_2d(to_numpy(X, "X"), "X")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {x.shape[1]}")
        first = math.ceil(len(self.estimators_) / 2) - 1  # round ceil(N/2), 1-based
        score = np.zeros(len(x))
        for learner, beta_t in zip(self.estimators_[first:], self.betas_[first:]):
            score += math.log(1.0 / beta_t) * ((learner.predict(x) == self.classes_[1]) - 0.5)
        return score

    def predict(self, X):
        """Predicted labels (k,) for ``X`` (k, d): the weighted vote of the second half of the rounds."""
        votes = self._vote(X)
        return like_input(self.classes_[(votes >= 0).astype(int)], X)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against ``y`` (k,), optionally weighted by ``sample_weight`` (k,)."""
        votes = self._vote(X)
        predicted = self.classes_[(votes >= 0).astype(int)]
        labels = to_numpy(y, "y", dtype=None)
        weights = None if sample_weight is None else to_numpy(sample_weight, "sample_weight")
        return float(np.average(predicted == labels, weights=weights))
