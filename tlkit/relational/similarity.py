"""Domain similarity between two text collections: the article's §5.4 measure done right, and MMD on embeddings."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..kernels import mmd2


def _check_texts(texts, name: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{position}] must be a string, got {type(text).__name__}")
    return list(texts)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without punctuation (gensim's ``simple_preprocess``, one-letter words kept)."""
    from gensim.utils import simple_preprocess

    return simple_preprocess(text, min_len=1, max_len=30)


def train_word2vec(texts: Sequence[str], vector_size: int = 50, window: int = 5, min_count: int = 1,
                   epochs: int = 30, seed: int = 0):
    """A Word2Vec (skip-gram) trained locally by gensim on ``texts``; returns its ``KeyedVectors``.

    One worker thread, so the same ``seed`` gives the same vectors. Replaces the article's
    ``Word2Vec.load('word2vec.model')``, a file that does not exist. Used in lesson 11.
    """
    from gensim.models import Word2Vec

    sentences = [tokenize(text) for text in _check_texts(texts, "texts")]
    model = Word2Vec(sentences, vector_size=vector_size, window=window, min_count=min_count, sg=1,
                     workers=1, seed=seed, epochs=epochs)
    return model.wv


def _keyed_vectors(vectors):
    from gensim.models import KeyedVectors, Word2Vec

    if isinstance(vectors, Word2Vec):
        return vectors.wv
    if not isinstance(vectors, KeyedVectors):
        raise TypeError(f"vectors must be gensim KeyedVectors or a Word2Vec model, got {type(vectors).__name__}")
    return vectors


def sentence_vectors(texts: Sequence[str], vectors, reduction: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    r"""Each sentence as the sum or mean of its words' unit vectors, $u_s = \sum_{w \in s} w/\|w\|$ (or $/|s|$).

    Out-of-vocabulary words are skipped (the article raises ``KeyError``). Returns ``(U, counts)``:
    ``U`` (n, d) float64 and the number of in-vocabulary words per sentence (n,). Used in lesson 11.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    texts = _check_texts(texts, "texts")
    keyed = _keyed_vectors(vectors)
    unit = keyed.get_normed_vectors().astype(np.float64)
    rows, columns = [], []
    for row, text in enumerate(texts):
        for word in tokenize(text):
            index = keyed.key_to_index.get(word)
            if index is not None:
                rows.append(row)
                columns.append(index)
    counts = np.bincount(np.asarray(rows, dtype=np.int64), minlength=len(texts))
    sums = np.zeros((len(texts), unit.shape[1]))
    np.add.at(sums, np.asarray(rows, dtype=np.int64), unit[np.asarray(columns, dtype=np.int64)])
    if reduction == "mean":
        sums = sums / np.maximum(counts, 1)[:, None]
    return sums, counts


def domain_similarity(texts_source: Sequence[str], texts_target: Sequence[str], vectors=None,
                      reduction: str = "mean", seed: int = 0) -> float:
    r"""Average word-vector cosine similarity between two text domains, vectorised and OOV-safe.

    The article's §5.4 measure is
    $$\mathrm{sim}(X_s, X_t) = \frac{1}{|X_s|\,|X_t|}\sum_{s \in X_s}\sum_{t \in X_t}\sum_{w \in s}\sum_{v \in t}\cos(w, v).$$
    Since $\cos(w, v) = \hat w \cdot \hat v$ with $\hat w = w/\|w\|$, the four sums factorise:
    $$\mathrm{sim} = \bar u_s \cdot \bar u_t, \qquad u_s = \sum_{w \in s}\hat w, \quad
      \bar u_s = \frac{1}{|X_s|}\sum_{s \in X_s} u_s,$$
    one pass over the words instead of $O(|X_s|\,|X_t|\,\text{words}^2)$ similarity calls.
    ``reduction="sum"`` is exactly the article's quantity (it grows with sentence length);
    ``reduction="mean"`` divides each $u_s$ by its number of words, giving the mean word-pair cosine,
    comparable across corpora; sentences with no known word are then left out of the average.

    Parameters
    ----------
    texts_source, texts_target : list of str
    vectors : gensim KeyedVectors or Word2Vec, optional
        Word vectors; default: a Word2Vec trained on both collections with ``seed``.
    reduction : {"mean", "sum"}

    Out-of-vocabulary words are skipped. Returns a float. Used in lesson 11.
    """
    texts_source = _check_texts(texts_source, "texts_source")
    texts_target = _check_texts(texts_target, "texts_target")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if vectors is None:
        vectors = train_word2vec(texts_source + texts_target, seed=seed)
    source, source_counts = sentence_vectors(texts_source, vectors, reduction)
    target, target_counts = sentence_vectors(texts_target, vectors, reduction)
    if reduction == "mean":
        source, target = source[source_counts > 0], target[target_counts > 0]
        if len(source) == 0 or len(target) == 0:
            raise ValueError("no word of texts_source or texts_target is in the vocabulary of vectors")
    return float(source.mean(axis=0) @ target.mean(axis=0))


def embedding_mmd(texts_source: Sequence[str], texts_target: Sequence[str], sigma: float | None = None,
                  estimator: str = "unbiased", backend: str = "auto") -> float:
    r"""MMD² between the sentence embeddings of two text domains: a distance between distributions.

    $$\mathrm{MMD}^2_u = \frac{1}{n(n-1)}\sum_{i\ne i'} k(e_i, e_{i'}) + \frac{1}{m(m-1)}\sum_{j \ne j'} k(e'_j, e'_{j'})
      - \frac{2}{nm}\sum_{i,j} k(e_i, e'_j)$$

    with $e = $ ``tl.text.encode(text)`` (MiniLM, 384-d, mean-pooled) and a Gaussian kernel (median-heuristic
    bandwidth by default). Unlike the average similarity it is zero exactly when the two embedding
    distributions coincide (characteristic kernel), and it has a permutation test. ``backend`` as in ``tl.mmd2``.
    Shapes: two lists of n and m strings → a float. Used in lesson 11.
    """
    from ..text import encode

    texts_source = _check_texts(texts_source, "texts_source")
    texts_target = _check_texts(texts_target, "texts_target")
    source, target = encode(texts_source), encode(texts_target)
    return float(mmd2(source.to(torch.float64), target.to(torch.float64), sigma=sigma, estimator=estimator,
                      backend=backend))
