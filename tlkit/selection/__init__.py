"""Model selection without target labels (无目标标签的模型选择): choose a hyper-parameter or a checkpoint from the
labelled source and the unlabelled target only.

- :func:`iwcv_score`, :func:`importance_weighted_scorer` — importance-weighted cross-validation (Sugiyama et al.
  2007), as a function and as a scikit-learn scorer for ``GridSearchCV`` / ``cross_val_score``.
- :func:`dev_risk`, :func:`deep_embedded_validation` — deep embedded validation (You et al. 2019): the
  importance-weighted risk with a control variate, weights from a domain classifier on the features.
- :func:`snd_score` — soft neighbourhood density of the target predictions (Saito et al. 2021).
- :func:`prediction_entropy`, :func:`information_maximization` — confidence (and diversity) of the target
  predictions.

Risks (IWCV, DEV, entropy): lower is better; scores (scorers, SND, information maximisation): higher is better.
Used in lessons 10 and 13.
"""
from .importance import dev_risk, deep_embedded_validation, importance_weighted_scorer, iwcv_score
from .prediction import information_maximization, prediction_entropy, snd_score

__all__ = [
    "iwcv_score", "importance_weighted_scorer", "dev_risk", "deep_embedded_validation",
    "prediction_entropy", "information_maximization", "snd_score",
]
