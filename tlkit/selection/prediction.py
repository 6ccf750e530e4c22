"""Scores of a model's predictions on the unlabelled target: entropy, information maximisation, SND."""
from __future__ import annotations

import torch

from .._validation import check_2d, check_positive, to_tensor

__all__ = ["prediction_entropy", "information_maximization", "snd_score"]


def _probabilities(probabilities, min_samples: int = 1) -> torch.Tensor:
    """Rows of class probabilities (n, C), C ≥ 2, as float64: non-negative and summing to 1 (within 1e-4)."""
    p = to_tensor(check_2d(probabilities, "probabilities", min_samples=min_samples), "probabilities",
                  dtype=torch.float64)
    if p.shape[1] < 2:
        raise ValueError(f"probabilities must have at least 2 classes (columns), got shape {tuple(p.shape)}")
    if bool((p < 0).any()):
        raise ValueError(f"probabilities must be non-negative, got a minimum of {float(p.min())}")
    sums = p.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4, rtol=0):
        worst = int((sums - 1).abs().argmax())
        raise ValueError(f"probabilities must sum to 1 in every row (pass softmax outputs, not logits), "
                         f"row {worst} sums to {float(sums[worst])}")
    return p


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)  # 0 log 0 = 0


def prediction_entropy(probabilities) -> float:
    r"""Mean entropy of the predicted class distributions on the target (lower = more confident).

    $$\bar H = -\frac{1}{n} \sum_{i=1}^{n} \sum_{c=1}^{C} p_{ic} \log p_{ic}, \qquad 0 \le \bar H \le \log C,$$

    0 for one-hot predictions, $\log C$ for uniform ones. As a selection rule (lower is better) it rewards
    confidence, also confidently wrong or collapsed predictions; :func:`information_maximization` adds the
    diversity term that penalises collapse. Shapes: ``probabilities`` (n, C), numpy or torch; ``ValueError`` unless
    the rows are probabilities. Used in lesson 10.
    """
    return float(_entropy(_probabilities(probabilities)).mean())


def information_maximization(probabilities) -> float:
    r"""Mutual information between input and predicted class on the target (higher is better).

    $$I = H(\bar p) - \frac{1}{n} \sum_{i=1}^{n} H(p_i), \qquad \bar p = \frac{1}{n} \sum_i p_i,
      \quad H(p) = -\sum_c p_c \log p_c,$$

    the information-maximisation objective of Shi & Sha (2012), used by SHOT (Liang et al. 2020): confident
    predictions (small $H(p_i)$) that use all classes (large $H(\bar p)$); $0 \le I \le \log C$. A collapsed
    model that predicts one class everywhere scores 0. Shapes: ``probabilities`` (n, C), numpy or torch.
    Used in lesson 10.
    """
    p = _probabilities(probabilities)
    return float(_entropy(p.mean(dim=0)) - _entropy(p).mean())


def snd_score(probabilities, temperature: float = 0.05) -> float:
    r"""Soft neighbourhood density (SND; Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, ICCV 2021).

    The paper's three steps on the $n$ target predictions $p_i$ (the softmax outputs): cosine similarities of the
    L2-normalised vectors, a softmax over each row's neighbours with temperature $\tau$, and the mean entropy:

    $$M_{ij} = \frac{p_i^\top p_j}{\lVert p_i\rVert\,\lVert p_j\rVert}, \qquad
      P_{ij} = \frac{\exp(M_{ij}/\tau)}{\sum_{k \ne i} \exp(M_{ik}/\tau)} \ (j \ne i), \qquad
      \mathrm{SND} = -\frac{1}{n} \sum_{i=1}^{n} \sum_{j \ne i} P_{ij} \log P_{ij} .$$

    The diagonal $j = i$ is excluded, as in the paper (the authors' code instead sets $M_{ii} = -1$, which
    gives it a weight of about $e^{-2/\tau} \approx 4 \cdot 10^{-18}$ at $\tau = 0.05$). Higher is better: a model
    whose target predictions form dense soft neighbourhoods (many similar neighbours) is preferred. $\tau = 0.05$
    is the paper's. It builds the $n \times n$ matrix: $O(n^2)$ memory. Shapes: ``probabilities`` (n, C),
    $n \ge 2$, numpy or torch; ``ValueError`` unless the rows are probabilities or if ``temperature`` is not
    positive. Used in lesson 10.
    """
    tau = check_positive(temperature, "temperature")
    p = _probabilities(probabilities, min_samples=2)
    unit = torch.nn.functional.normalize(p, dim=1)
    similarity = unit @ unit.T / tau
    similarity.fill_diagonal_(float("-inf"))
    neighbours = torch.softmax(similarity, dim=1)
    return float(_entropy(neighbours).mean())
