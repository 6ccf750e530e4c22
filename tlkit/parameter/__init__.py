"""Parameter-based transfer (基于参数的迁移): freezing, discriminative learning rates, L2-SP, LP-FT, LoRA.

The training loop (``fit``, ``evaluate``, ``make_loader``, ``History``) lives in :mod:`tlkit.training`, shared by
every deep subpackage; it is re-exported here, where the lessons meet it.
"""
from ..training import History, evaluate, fit, make_loader
from .efficient import count_parameters, head_inputs, layerwise_lr_groups, lora, lp_ft, set_head_from_probe
from .freezing import freeze, param_groups, unfreeze
from .regularization import L2SP

__all__ = [
    "freeze", "unfreeze", "param_groups", "L2SP", "fit", "evaluate", "make_loader", "History", "layerwise_lr_groups",
    "lp_ft", "set_head_from_probe", "head_inputs", "lora", "count_parameters",
]
