"""Freezing layers and discriminative learning rates for fine-tuning (微调)."""
from __future__ import annotations

import numbers
from collections.abc import Sequence

from torch import nn

from .._validation import check_in_range, check_positive


def _check_module(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _block_names(model: nn.Module) -> list[str]:
    """Names of the top-level children that own parameters, in forward order."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def _resolve_block(model: nn.Module, block, argument: str) -> int:
    """Index in ``_block_names(model)`` of ``block`` (a child name or a count of blocks)."""
    names = _block_names(model)
    if isinstance(block, bool) or not isinstance(block, (str, numbers.Integral)):
        raise TypeError(f"{argument} must be a child-module name or an int, got {type(block).__name__}")
    if not isinstance(block, str):  # a count of blocks: 0 .. the number of blocks with parameters
        return check_in_range(block, argument, 0, len(names), integer=True)
    if block not in names:
        raise ValueError(f"{argument}={block!r} is not a child module with parameters; choose from {names}")
    return names.index(block) + 1


def _set_trainable(model: nn.Module, names: Sequence[str], trainable: bool) -> list[str]:
    touched = []
    for block in names:
        for param_name, param in getattr(model, block).named_parameters():
            param.requires_grad_(trainable)
            touched.append(f"{block}.{param_name}")
    return touched


def freeze(model: nn.Module, up_to: str | int | None = None) -> list[str]:
    r"""Freeze the first blocks of ``model`` (``requires_grad = False``) so fine-tuning leaves them at $\theta_s$.

    Blocks are the top-level children that own parameters, in definition order (for a torchvision ResNet:
    ``conv1, bn1, layer1, ..., layer4, fc``). A frozen parameter keeps its source value,
    $\theta_j = \theta_{s,j}$, while the rest minimise $\sum_j \ell(f_\theta(x^t_j), y^t_j)$.

    Parameters
    ----------
    model : nn.Module
    up_to : str, int or None
        Freeze every block up to and including the child named ``up_to``; an int freezes that many blocks;
        ``None`` freezes the whole model.

    Returns the names of the parameters frozen. BatchNorm running statistics still update in ``train()`` mode;
    call ``.eval()`` on frozen blocks to keep them too. Used in lessons 07 and 09.
    """
    model = _check_module(model)
    names = _block_names(model)
    stop = len(names) if up_to is None else _resolve_block(model, up_to, "up_to")
    return _set_trainable(model, names[:stop], False)


def unfreeze(model: nn.Module, start_at: str | int | None = None) -> list[str]:
    r"""Make blocks of ``model`` trainable again, from the child named ``start_at`` to the end.

    ``start_at=None`` unfreezes everything; an int ``k`` unfreezes all blocks but the first ``k``. Calling it with
    ``"layer4"``, then ``"layer3"``, ... is gradual unfreezing (Howard & Ruder 2018). Returns the names of the
    parameters unfrozen. Used in lesson 07.
    """
    model = _check_module(model)
    names = _block_names(model)
    if start_at is None:
        start = 0
    elif isinstance(start_at, str):
        start = _resolve_block(model, start_at, "start_at") - 1
    else:
        start = _resolve_block(model, start_at, "start_at")
    return _set_trainable(model, names[start:], True)


def param_groups(
    model: nn.Module,
    lr: float,
    backbone_lr_mult: float = 0.1,
    head: str | Sequence[str] | None = None,
) -> list[dict]:
    r"""Parameter groups with discriminative learning rates: $\eta_{\text{head}} = \eta$, $\eta_{\text{backbone}} = m\,\eta$.

    The pretrained backbone moves slowly (its features are already good), the new head learns at full speed.
    Only parameters with ``requires_grad`` are included. Pass the result to any optimiser,
    e.g. ``torch.optim.Adam(param_groups(model, 1e-3))``.

    Parameters
    ----------
    model : nn.Module
    lr : float
        Learning rate $\eta$ of the head.
    backbone_lr_mult : float
        Multiplier $m \ge 0$ for every other parameter (0 freezes them in effect).
    head : str or sequence of str, optional
        Names of the top-level children forming the head; default: the last child that owns parameters.

    Used in lesson 07.
    """
    model = _check_module(model)
    lr = check_positive(lr, "lr")
    backbone_lr_mult = check_positive(backbone_lr_mult, "backbone_lr_mult", allow_zero=True)
    names = _block_names(model)
    if not names:
        raise ValueError("model has no child modules with parameters")
    head_names = [names[-1]] if head is None else [head] if isinstance(head, str) else list(head)
    for name in head_names:
        if name not in names:
            raise ValueError(f"head={name!r} is not a child module with parameters; choose from {names}")
    head_params, backbone_params = [], []
    for name in names:
        target = head_params if name in head_names else backbone_params
        target.extend(p for p in getattr(model, name).parameters() if p.requires_grad)
    groups = [{"params": backbone_params, "lr": lr * backbone_lr_mult, "name": "backbone"},
              {"params": head_params, "lr": lr, "name": "head"}]
    return [group for group in groups if group["params"]]
