"""Classic relational-knowledge transfer: carry the structure of one embedding space onto another.

Two embedding spaces trained separately share their *relations* (angles and distances between words) but not
their coordinates. An orthogonal map preserves every relation, so a handful of anchor pairs fixes it and it then
carries held-out words across (Mikolov et al. 2013; Xing et al. 2015; Smith et al. 2017).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sklearn.exceptions import NotFittedError

from .._validation import check_2d, check_same_dim, check_same_length, like_input, to_tensor
from ..kernels import nearest


def procrustes(source, target):
    r"""Orthogonal Procrustes: the rotation that best maps ``source`` rows onto ``target`` rows.

    $$W^\star = \arg\min_{W^\top W = I}\|X W - Y\|_F = U V^\top, \qquad U \Sigma V^\top = \operatorname{svd}(X^\top Y)$$

    Shapes: ``source`` X (n, d), ``target`` Y (n, d), row i of X paired with row i of Y → W (d, d), float64,
    numpy for numpy input and torch for torch input. Used in lessons 03 and 11.
    """
    x = check_2d(to_tensor(source, "source", dtype=torch.float64), "source")
    y = check_2d(to_tensor(target, "target", dtype=torch.float64), "target")
    check_same_dim(x, y, ("source", "target"))
    check_same_length(x, y, ("source", "target"))
    u, _, vh = torch.linalg.svd(x.T @ y)
    return like_input(u @ vh, source)


def _normalise(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    centred = x - mean
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


class ProcrustesMap:
    r"""Map one embedding space onto another with an orthogonal $W$ learned from anchor pairs.

    Vectors are centred (each space by its own mean) and scaled to unit length, then $W$ = ``procrustes``
    of the anchors. ``transform(X)`` gives $\hat X W$; ``match(X, candidates)`` the index of each mapped row's
    nearest candidate (cosine); both answer in the input's type (numpy in, numpy out). Used in lesson 11.
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
                                  _normalise(target_anchors, self.target_mean_))  # torch: the inputs are tensors
        return self

    def _check_fitted(self):
        if not hasattr(self, "weight_"):
            raise NotFittedError("ProcrustesMap is not fitted: call fit(source_anchors, target_anchors) first")

    def _mapped(self, source) -> torch.Tensor:
        self._check_fitted()
        x = check_2d(to_tensor(source, "source", dtype=torch.float64), "source")
        return _normalise(x, self.source_mean_) @ self.weight_

    def transform(self, source):
        """Normalised source vectors (n, d) carried into the target space, (n, d)."""
        return like_input(self._mapped(source), source)

    def match(self, source, candidates):
        """Index (n,) of the nearest ``candidates`` row (m, d) to each mapped ``source`` row, by cosine."""
        targets = _normalise(check_2d(to_tensor(candidates, "candidates", dtype=torch.float64), "candidates"),
                             self.target_mean_)
        return like_input(nearest(self._mapped(source), targets)[1], source)


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
    expected = np.array([target_vectors.key_to_index[t] for _, t in pairs])
    return float(np.mean(found == expected))
