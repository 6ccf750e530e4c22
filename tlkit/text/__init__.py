"""Pretrained text models, offline: MiniLM (a 6-layer BERT) for sentence embeddings and fine-tuning."""
from .minilm import EMBEDDING_DIM, cache_dir, encode, fine_tune, load_minilm, mean_pool, minilm_path

__all__ = ["load_minilm", "encode", "fine_tune", "mean_pool", "minilm_path", "cache_dir", "EMBEDDING_DIM"]
