"""Small offline text corpora shipped in gensim's test data: movie-review polarity and the Lee news corpus."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["pang_lee_polarity", "lee_corpus"]

LEE_FILES = {"background": "lee_background.cor", "test": "lee.cor"}


def _gensim_test_file(name: str) -> str:
    try:
        from gensim.test.utils import datapath
    except ImportError as error:
        raise ImportError(f"{name} ships with the 'gensim' package, which is not installed: "
                          "pip install gensim") from error
    path = datapath(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} is missing from gensim's test data ({path}): reinstall the 'gensim' package")
    return path


def _read_lines(name: str) -> list[str]:
    """The file's lines; gensim's copies mix UTF-8 and Windows-1252 (e.g. a 0x97 em dash), so fall back to cp1252."""
    with open(_gensim_test_file(name), "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return text.splitlines()


def pang_lee_polarity() -> tuple[list[str], np.ndarray]:
    r"""Movie-review sentences with their sentiment (Pang & Lee, 2005), from gensim's ``pang_lee_polarity.cor``.

    Each line of the file is ``__label__neg <sentence>`` or ``__label__pos <sentence>``.
    Returns ``(sentences, labels)``: 200 lower-cased, tokenised sentences (list of str) and int64 labels (200,)
    with 0 = negative, 1 = positive (100 each). Used in lessons 08 and 11.
    """
    sentences, labels = [], []
    for number, line in enumerate(_read_lines("pang_lee_polarity.cor"), start=1):
        if not line.strip():
            continue
        tag, _, sentence = line.strip().partition(" ")
        if tag not in ("__label__neg", "__label__pos"):
            raise ValueError(f"pang_lee_polarity.cor line {number}: unexpected label {tag!r}")
        sentences.append(sentence)
        labels.append(int(tag == "__label__pos"))
    return sentences, np.array(labels, dtype=np.int64)


def lee_corpus(part: str = "background") -> list[str]:
    r"""The Lee corpus of Australian news articles (Lee, Pincombe & Welsh, 2005), from gensim's test data.

    ``part="background"``: the 300 documents of ``lee_background.cor`` (the usual word2vec / doc2vec training
    corpus); ``part="test"``: the 50 documents of ``lee.cor`` (the human-rated similarity set).
    Returns a list of str, one document each. A news domain beside the movie-review domain of
    :func:`pang_lee_polarity`. Used in lesson 11.
    """
    if part not in LEE_FILES:
        raise ValueError(f"part must be one of {tuple(LEE_FILES)}, got {part!r}")
    return [line.strip() for line in _read_lines(LEE_FILES[part]) if line.strip()]
