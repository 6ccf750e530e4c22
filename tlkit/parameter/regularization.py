"""L2-SP: keep fine-tuned parameters close to their pretrained starting point (Li, Grandvalet & Davoine 2018)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .._validation import check_positive


class L2SP:
    r"""The L2-SP penalty, the correct form of the article's $\lambda\|f_t - f_s\|^2$ (§4.2).

    $$\Omega(w) = \frac{\alpha}{2}\,\|w_S - w_S^0\|_2^2 + \frac{\beta}{2}\,\|w_{\bar S}\|_2^2$$

    $w_S$ are the parameters shared with the source model (same name and shape in ``source_state``), $w_S^0$
    their pretrained values, and $w_{\bar S}$ the new ones (e.g. a fresh classification head), which get plain
    weight decay. Its gradient is $\alpha\,(w_S - w_S^0)$ on shared and $\beta\,w_{\bar S}$ on new parameters.
    The article puts the norm on functions; what is regularised is the parameters.

    Parameters
    ----------
    source_state : Mapping[str, Tensor] or nn.Module
        The pretrained parameters $w_S^0$ (a ``state_dict`` or the source model itself); copied and detached.
    alpha, beta : float
        Strengths $\alpha, \beta \ge 0$.

    Call ``penalty = l2sp(model)`` and add it to the loss; returns a 0-dim tensor. Only trainable parameters
    (``requires_grad``) are penalised. Used in lesson 07.
    """

    def __init__(self, source_state: Mapping[str, torch.Tensor] | nn.Module, alpha: float = 0.01, beta: float = 0.01):
        if isinstance(source_state, nn.Module):
            source_state = dict(source_state.named_parameters())
        if not isinstance(source_state, Mapping):
            raise TypeError(f"source_state must be a state_dict (mapping) or an nn.Module, got {type(source_state).__name__}")
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.source = {name: tensor.detach().clone() for name, tensor in source_state.items()
                       if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()}

    def split(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """Names of the trainable parameters of ``model`` that are shared with the source, and of the new ones."""
        shared, new = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                reference = self.source.get(name)
                (shared if reference is not None and reference.shape == param.shape else new).append(name)
        return shared, new

    def __call__(self, model: nn.Module) -> torch.Tensor:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        params = dict(model.named_parameters())
        shared, new = self.split(model)
        if not params:
            raise ValueError("model has no parameters")
        device = next(iter(params.values())).device
        penalty = torch.zeros((), device=device)
        for name in shared:
            reference = self.source[name].to(device=params[name].device, dtype=params[name].dtype)
            penalty = penalty + 0.5 * self.alpha * (params[name] - reference).pow(2).sum()
        for name in new:
            penalty = penalty + 0.5 * self.beta * params[name].pow(2).sum()
        return penalty

    def __repr__(self) -> str:
        return f"L2SP(alpha={self.alpha}, beta={self.beta}, source_tensors={len(self.source)})"
