"""Instance-based transfer (基于样本的迁移): re-weight or select source samples so they look like the target.

- :func:`distance_weights` — the article's §5.1 idea the right way round (closer to the target ⇒ more weight);
  :func:`article_distance_weights` keeps the article's inverted version as a counterexample.
- :class:`KMM`, :class:`KLIEP`, :class:`ClassifierDensityRatio` — density-ratio (importance) weights.
- :class:`TrAdaBoost` — boosting that down-weights misleading source instances.
- :func:`effective_sample_size`, :class:`WeightedEstimator` (weights → any scikit-learn ``sample_weight``) and
  :func:`weighted_loss` (article formula 4.1 for torch models).
- Label shift: :func:`bbse`, :func:`rlls`, :func:`em_priors` (target class priors) and :class:`LabelShiftAdapter`
  (a prior-corrected classifier), used in lesson 14.

Used in lessons 05, 06 and 14.
"""
from .classifier_ratio import ClassifierDensityRatio
from .kliep import KLIEP
from .kmm import KMM
from .label_shift import (LabelShiftAdapter, LabelShiftEstimate, bbse, confusion_matrix, em_priors, rlls,
                          rlls_regularization)
from .tradaboost import TrAdaBoost
from .weighted import WeightedEstimator, weighted_loss
from .weights import article_distance_weights, distance_weights, effective_sample_size

__all__ = [
    "distance_weights", "article_distance_weights", "effective_sample_size",
    "KMM", "KLIEP", "ClassifierDensityRatio", "TrAdaBoost",
    "WeightedEstimator", "weighted_loss",
    "bbse", "rlls", "rlls_regularization", "em_priors", "confusion_matrix", "LabelShiftEstimate", "LabelShiftAdapter",
]
