"""Relational transfer (基于关系的迁移): adversarial adaptation (DANN, CDAN), domain similarity, relational structure maps."""
from .adversarial import CDAN, DANN, DomainDiscriminator, GradientReversal, dann_lambda, grad_reverse
from .similarity import domain_similarity, embedding_mmd, sentence_vectors, tokenize, train_word2vec
from .structure import ProcrustesMap, load_en_it_vectors, procrustes, translation_accuracy

__all__ = [
    "GradientReversal", "grad_reverse", "DomainDiscriminator", "DANN", "CDAN", "dann_lambda",
    "domain_similarity", "embedding_mmd", "sentence_vectors", "tokenize", "train_word2vec",
    "procrustes", "ProcrustesMap", "load_en_it_vectors", "translation_accuracy",
]
