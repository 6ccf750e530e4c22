"""Classic relational-knowledge transfer: carry the structure of one embedding space onto another.

Two embedding spaces trained separately share their *relations* (angles and distances between words) but not
their coordinates. An orthogonal map preserves every relation, so a handful of anchor pairs fixes it and it then
carries held-out words across (Mikolov et al. 2013; Xing et al. 2015; Smith et al. 2017).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._validation import check_2d, check_same_dim, check_same_length, to_tensor
from ..kernels import nearest


def procrustes(source, target) -> torch.Tensor:
    r"""Orthogonal Procrustes: the rotation that best maps ``source`` rows onto ``target`` rows.

    $$W^\star = \arg\min_{W^\top W = I}\|X W - Y\|_F = U V^\top, \qquad U \Sigma V^\top = \operatorname{svd}(X^\top Y)$$

    Shapes: ``source`` X (n, d), ``target`` Y (n, d), row i of X paired with row i of Y → W (d, d).
    Used in lesson 11.
    """
    x = check_2d(to_tensor(source, "source", dtype=torch.float64), "source")
    y = check_2d(to_tensor(target, "target", dtype=torch.float64), "target")
    check_same_dim(x, y, ("source", "target"))
    check_same_length(x, y, ("source", "target"))
    u, _, vh = torch.linalg.svd(x.T @ y)
    return u @ vh


def _normalise(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    centred = x - mean
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


class ProcrustesMap:
    r"""Map one embedding space onto another with an orthogonal $W$ learned from anchor pairs.

    Vectors are centred (each space by its own mean) and scaled to unit length, then $W$ = ``procrustes``
    of the anchors. ``transform(X)`` gives $\hat X W$; ``match(X, candidates)`` the index of each mapped row's
    nearest candidate (cosine). Used in lesson 11.
    """

    def fit(self, source_anchors, target_anchors, source_space=None, target_space=None) -> "ProcrustesMap":
        """Learn $W$ from paired rows ``source_anchors`` (n, d) / ``target_anchors`` (n, d).

        ``source_space`` / ``target_space`` (optional, (N, d)): all vectors of each space, used for centring.
        """
        source_anchors = check_2d(to_tensor(source_anchors, "source_anchors", dtype=torch.float64), "source_anchors")
        target_anchors = check_2d(to_tensor(target_anchors, "target_anchors", dtype=torch.float64), "target_anchors")
        source_space = source_anchors if source_space is None else to_tensor(source_space, "source_space",
                                                                             dtype=torch.float64)
        target_space = target_anchors if target_space is None else to_tensor(target_space, "target_space",
                                                                             dtype=torch.float64)
        self.source_mean_ = source_space.mean(dim=0)
        self.target_mean_ = target_space.mean(dim=0)
        self.weight_ = procrustes(_normalise(source_anchors, self.source_mean_),
                                  _normalise(target_anchors, self.target_mean_))
        return self

    def _check_fitted(self):
        if not hasattr(self, "weight_"):
            raise RuntimeError("ProcrustesMap is not fitted: call fit(source_anchors, target_anchors) first")

    def transform(self, source) -> torch.Tensor:
        """Normalised source vectors (n, d) carried into the target space, (n, d)."""
        self._check_fitted()
        x = check_2d(to_tensor(source, "source", dtype=torch.float64), "source")
        return _normalise(x, self.source_mean_) @ self.weight_

    def match(self, source, candidates) -> torch.Tensor:
        """Index (n,) of the nearest ``candidates`` row (m, d) to each mapped ``source`` row, by cosine."""
        self._check_fitted()
        mapped = self.transform(source)
        targets = _normalise(check_2d(to_tensor(candidates, "candidates", dtype=torch.float64), "candidates"),
                             self.target_mean_)
        return nearest(mapped, targets)[1]


def load_en_it_vectors():
    """gensim's bundled English and Italian word vectors (20 words each, 300-d) and their 20 translation pairs.

    Returns ``(english, italian, pairs)``: two ``KeyedVectors`` and a list of ``(english_word, italian_word)``.
    Offline (files from ``gensim.test.utils.datapath``). Used in lesson 11.
    """
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    english = KeyedVectors.load_word2vec_format(datapath("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"))
    italian = KeyedVectors.load_word2vec_format(datapath("IT.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"))
    with open(datapath("OPUS_en_it_europarl_train_one2ten.txt"), encoding="utf8") as handle:
        pairs = [tuple(line.split()) for line in handle if line.strip()]
    return english, italian, pairs


def translation_accuracy(mapping: ProcrustesMap, source_vectors, target_vectors,
                         pairs: Sequence[tuple[str, str]]) -> float:
    """Share of ``pairs`` whose source word maps nearest (cosine, over the whole target vocabulary) to its pair.

    ``source_vectors`` / ``target_vectors``: gensim ``KeyedVectors``. Used in lesson 11.
    """
    if len(pairs) == 0:
        raise ValueError("pairs is empty")
    candidates = target_vectors.vectors
    found = mapping.match(np.stack([source_vectors[s] for s, _ in pairs]), candidates)
    expected = torch.tensor([target_vectors.key_to_index[t] for _, t in pairs])
    return float((found == expected).double().mean())
