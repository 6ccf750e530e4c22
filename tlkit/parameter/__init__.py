"""Parameter-based transfer (基于参数的迁移): freezing, discriminative learning rates, L2-SP.

The training loop (``fit``, ``evaluate``, ``make_loader``, ``History``) lives in :mod:`tlkit.training`, shared by
every deep subpackage; it is re-exported here, where the lessons meet it.
"""
from ..training import History, evaluate, fit, make_loader
from .freezing import freeze, param_groups, unfreeze
from .regularization import L2SP

__all__ = ["freeze", "unfreeze", "param_groups", "L2SP", "fit", "evaluate", "make_loader", "History"]
