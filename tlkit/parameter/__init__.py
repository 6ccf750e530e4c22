"""Parameter-based transfer (基于参数的迁移): freezing, discriminative learning rates, L2-SP and the training loop."""
from .freezing import freeze, param_groups, unfreeze
from .regularization import L2SP
from .training import History, evaluate, fit, make_loader

__all__ = ["freeze", "unfreeze", "param_groups", "L2SP", "fit", "evaluate", "make_loader", "History"]
