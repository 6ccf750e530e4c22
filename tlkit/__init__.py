"""tlkit — a transfer-learning course kit and library.

The math is plain tensor functions (``tl.mmd2``, ``tl.kernel_sum``, ...), classical methods are small
scikit-learn-style classes, deep losses are ``nn.Module``s. Subpackages mirror the paradigms of the course:

- ``tl.instance``   instance-based transfer (lessons 05–06)
- ``tl.parameter``  parameter-based transfer (lessons 07–08)
- ``tl.feature``    feature-based transfer (lessons 09–10)
- ``tl.relational`` relational transfer, adversarial training (lesson 11)
- ``tl.meta``       meta-learning (lesson 12)
- ``tl.selection``  model selection without target labels: IWCV, DEV, SND, entropy (lessons 10, 13)
- ``tl.metrics``, ``tl.data``, ``tl.text``, ``tl.kernels``

Importing tlkit never compiles anything: the fused C++/CUDA kernels are built or loaded on first use.
"""
import importlib

from ._env import doctor, get_device, setup, show_source
from ._version import __version__
from .kernels import kernel_matmul, kernel_sum, median_bandwidth, mmd2, nearest

_SUBPACKAGES = ("kernels", "instance", "metrics", "feature", "data", "parameter", "relational", "meta", "selection",
                "text", "training")

__all__ = [
    "__version__", "setup", "get_device", "doctor", "show_source",
    "nearest", "kernel_sum", "kernel_matmul", "mmd2", "median_bandwidth",
    *_SUBPACKAGES,
]


def __getattr__(name):
    # Subpackages load on first access so that ``import tlkit`` stays fast.
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))
