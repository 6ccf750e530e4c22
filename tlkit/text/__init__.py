"""Pretrained text models, offline: MiniLM (a 6-layer BERT) for sentence embeddings and fine-tuning.

Importing this module sets ``HF_HUB_OFFLINE=1`` unless it is already set: every model here loads from an
installed package, and a hub lookup would otherwise hang for about a minute before failing.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .minilm import (  # noqa: E402
    EMBEDDING_DIM, LengthGroupedSampler, MeanPoolingClassifier, cache_dir, encode, fine_tune, load_minilm, mean_pool,
    minilm_path,
)
from .zero_shot import ZeroShotClassifier  # noqa: E402

__all__ = [
    "load_minilm", "encode", "fine_tune", "mean_pool", "MeanPoolingClassifier", "LengthGroupedSampler", "minilm_path",
    "cache_dir", "EMBEDDING_DIM", "ZeroShotClassifier",
]
