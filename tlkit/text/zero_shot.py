"""Zero-shot and few-shot classification with a sentence encoder: cosine similarity to label prototypes."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .._validation import check_in_range, check_positive, like_input


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding has length zero: its cosine similarity is undefined")
    return matrix / norms


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    r"""Classify sentences by cosine similarity to label prototypes, with no training (zero-shot) or a few labels.

    Zero-shot (the rule behind CLIP's, Radford et al. 2021, with a sentence encoder, Reimers & Gurevych 2019):
    each label $k$ has descriptions (prompts) $d_{k,1}, \dots, d_{k,P_k}$, and with $u(v) = v / \lVert v\rVert$
    $$t_k = u\Big(\frac{1}{P_k}\sum_{p=1}^{P_k} u\big(e(d_{k,p})\big)\Big), \qquad
    \hat y(s) = \arg\max_k\ \cos\big(e(s), c_k\big), \quad c_k = t_k .$$
    Few-shot (``fit``): the prototype of class $k$ is the mean of its $n_k$ labelled unit embeddings, optionally
    mixed with the description embedding by $\lambda$ = ``description_weight``:
    $$\mu_k = u\Big(\frac{1}{n_k}\sum_{i:\,y_i = k} u\big(e(s_i)\big)\Big), \qquad
    c_k = u\big((1 - \lambda)\,\mu_k + \lambda\, t_k\big)$$
    ($\lambda = 0$: pure prototypes, the nearest-centroid rule of prototypical networks; $\lambda = 1$: zero-shot).
    ``predict_proba`` is $\operatorname{softmax}_k\big(\cos(e(s), c_k) / \tau\big)$.

    Parameters
    ----------
    label_descriptions : mapping label -> str or list of str, optional
        The prompts of each label, e.g. ``{0: ["a negative review"], 1: ["a positive review"]}``. Needed for
        zero-shot prediction and for ``description_weight > 0``.
    description_weight : float
        $\lambda \in [0, 1]$, used by ``fit``.
    temperature : float
        $\tau > 0$ of ``predict_proba``.
    encoder : callable, optional
        ``encoder(list of n str) -> (n, d)`` array or tensor; default ``tlkit.text.encode`` (MiniLM,
        ``max_length``), cached on disk.
    max_length : int
        Token limit of the default encoder.

    ``X`` everywhere is a list of n sentences or their embeddings ``(n, d)`` (e.g. cached ones).
    Fitted attributes: ``classes_``, ``prototypes_`` ``(C, d)`` unit rows; ``description_embeddings_``
    ``(C, d)`` once descriptions were encoded. ``decision_function``: ``(n, C)`` cosines (torch in → torch out),
    ``predict``: ``(n,)`` labels. Used in lesson 16.
    """

    def __init__(self, label_descriptions: Mapping | None = None, description_weight: float = 0.0,
                 temperature: float = 0.05, encoder: Callable | None = None, max_length: int = 48):
        self.label_descriptions = label_descriptions
        self.description_weight = description_weight
        self.temperature = temperature
        self.encoder = encoder
        self.max_length = max_length

    # ------------------------------------------------------------------ helpers
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.encoder is None:
            from .minilm import encode

            embeddings = encode(texts, max_length=self.max_length)
        else:
            if not callable(self.encoder):
                raise TypeError(f"encoder must be callable (list of str -> (n, d)), got {type(self.encoder).__name__}")
            embeddings = self.encoder(texts)
        embeddings = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else embeddings
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or len(embeddings) != len(texts):
            raise ValueError(f"encoder must return (n, d) = ({len(texts)}, d), got shape {embeddings.shape}")
        return embeddings

    def _embed(self, X, name: str = "X") -> np.ndarray:
        """Unit embeddings (n, d) of a list of sentences or of given embeddings."""
        if isinstance(X, str):
            raise TypeError(f"{name} must be a list of sentences or an (n, d) array of embeddings, got a str")
        if isinstance(X, Sequence) and len(X) > 0 and all(isinstance(x, str) for x in X):
            embeddings = self._encode_texts(list(X))
        else:
            if isinstance(X, Sequence) and any(isinstance(x, str) for x in X):
                raise TypeError(f"{name} mixes strings and other values")
            embeddings = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
            if embeddings.dtype.kind not in "biuf" or embeddings.ndim != 2:
                raise ValueError(f"{name} must be a non-empty list of sentences or an (n, d) array of embeddings, "
                                 f"got shape {embeddings.shape} and dtype {embeddings.dtype}")
            embeddings = embeddings.astype(np.float64)
        if len(embeddings) == 0:
            raise ValueError(f"{name} is empty")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return _unit(embeddings)

    def _descriptions(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and description embeddings t_k (C, d), encoded once."""
        cached = getattr(self, "_description_cache", None)
        if cached is not None and cached[0] is self.label_descriptions:
            return cached[1], cached[2]
        if not isinstance(self.label_descriptions, Mapping) or len(self.label_descriptions) < 2:
            raise ValueError("label_descriptions must map at least two labels to a description or a list of them, "
                             f"got {self.label_descriptions!r}")
        labels, rows = [], []
        for label, prompts in self.label_descriptions.items():
            prompts = [prompts] if isinstance(prompts, str) else prompts
            if (not isinstance(prompts, Sequence) or not prompts
                    or not all(isinstance(p, str) and p.strip() for p in prompts)):
                raise ValueError(f"label_descriptions[{label!r}] must be a non-empty string or list of them, "
                                 f"got {prompts!r}")
            labels.append(label)
            rows.append(self._embed(list(prompts), "label_descriptions").mean(axis=0))
        labels, t = np.asarray(labels), _unit(np.stack(rows))
        self._description_cache = (self.label_descriptions, labels, t)
        return labels, t

    def _prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(self, "prototypes_"):
            return self.classes_, self.prototypes_
        if self.label_descriptions is None:
            raise NotFittedError("ZeroShotClassifier has no label_descriptions and is not fitted: give "
                                 "label_descriptions for zero-shot prediction, or call fit(X, y)")
        classes, t = self._descriptions()
        self.classes_, self.description_embeddings_ = classes, t
        return classes, t

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X, y):
        """Class prototypes $c_k$ from labelled sentences (or embeddings) ``X`` and labels ``y`` ``(n,)``."""
        weight = check_in_range(self.description_weight, "description_weight", 0, 1)
        check_positive(self.temperature, "temperature")
        embeddings = self._embed(X)
        y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
        if y.ndim != 1 or len(y) != len(embeddings):
            raise ValueError(f"y must be 1-D with one label per row of X ({len(embeddings)}), got shape {y.shape}")
        if weight > 0 or self.label_descriptions is not None:
            classes, t = self._descriptions()
            missing = sorted(set(classes.tolist()) - set(y.tolist()), key=str)
            extra = sorted(set(y.tolist()) - set(classes.tolist()), key=str)
            if extra or (missing and weight < 1):
                raise ValueError(f"y and label_descriptions must have the same labels: y lacks {missing}, "
                                 f"label_descriptions lacks {extra}")
            self.description_embeddings_ = t
        else:
            classes, t = np.unique(y), None
            if len(classes) < 2:
                raise ValueError(f"y must hold at least two classes, got {classes.tolist()}")
        means = np.stack([embeddings[y == k].mean(axis=0) if np.any(y == k) else np.zeros(embeddings.shape[1])
                          for k in classes])
        mixed = (1 - weight) * _unit(means) if weight < 1 else 0.0
        if t is not None:
            if t.shape[1] != embeddings.shape[1]:
                raise ValueError(f"X has {embeddings.shape[1]} features, the description embeddings "
                                 f"{t.shape[1]}")
            mixed = mixed + weight * t
        self.classes_, self.prototypes_ = classes, _unit(np.asarray(mixed))
        return self

    def _scores(self, X) -> np.ndarray:
        _, prototypes = self._prototypes()
        embeddings = self._embed(X)
        if embeddings.shape[1] != prototypes.shape[1]:
            raise ValueError(f"X has {embeddings.shape[1]} features, the prototypes {prototypes.shape[1]}")
        return embeddings @ prototypes.T

    def decision_function(self, X):
        r"""Cosine similarities $\cos(e(s_i), c_k)$, ``(n, C)``."""
        scores = self._scores(X)
        return like_input(scores.astype(np.float32), X) if isinstance(X, torch.Tensor) else scores

    def predict_proba(self, X):
        r"""$\operatorname{softmax}_k(\cos(e(s_i), c_k) / \tau)$, ``(n, C)``, columns in ``classes_`` order."""
        temperature = check_positive(self.temperature, "temperature")
        scores = self._scores(X) / temperature
        probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return like_input(probabilities.astype(np.float32), X) if isinstance(X, torch.Tensor) else probabilities

    def predict(self, X):
        r"""$\hat y_i = \arg\max_k \cos(e(s_i), c_k)$, ``(n,)`` labels from ``classes_``."""
        scores = self._scores(X)
        return self.classes_[scores.argmax(axis=1)]
