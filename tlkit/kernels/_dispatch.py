"""One dispatch point: picks the CUDA, C++ or torch backend for a device and can say which and why; ``build`` makes
the compiled backends ready ahead of time."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from . import _build

BACKENDS = ("auto", "cuda", "cpp", "torch")
DESCRIPTIONS = {
    "cuda": "fused CUDA kernels (tiled, deterministic)",
    "cpp": "fused C++/OpenMP kernels (tiled, vectorised)",
    "torch": "pure-PyTorch reference (row chunks)",
}
# Frames in these folders are tlkit's or torch's own; a warning points past them at the user's call.
_INTERNAL_DIRS = (str(Path(__file__).resolve().parents[1]), str(Path(torch.__file__).resolve().parent))
_warned: set[str] = set()


def _state(kind: str):
    """Load (building on first use) the ``kind`` library; importing ``_library`` loads the C++ one."""
    from . import _library

    return _library.CPP if kind == "cpp" else _library.load(kind)


def _loaded(kind: str) -> bool:
    """Whether the ``kind`` library is loaded — a constant for ``torch.compile`` (evaluated once while tracing)."""
    return _state(kind).loaded


# What ``torch.compiler.assume_constant_result`` sets, without importing torch._dynamo (1.8 s) with tlkit.
_loaded._dynamo_marked_constant = True


def _user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside tlkit and torch, counted from the caller of this function."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def _compiled_kind(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpp"


def choose(backend: str, device: torch.device) -> tuple[str, str]:
    """(backend name, reason) for inputs on ``device``. Explicit unavailable choices raise RuntimeError.

    Under ``torch.compile`` the choice is a trace-time constant (no build, no warning inside the graph).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch", "requested"
    if device.type not in ("cpu", "cuda"):
        if backend != "auto":
            raise RuntimeError(f"backend={backend!r} does not run on device {device}; use backend='torch'")
        return "torch", f"no fused kernel for device type {device.type!r}"
    kind = _compiled_kind(device)
    if backend != "auto" and backend != kind:
        raise RuntimeError(f"backend={backend!r} cannot run on {device.type} tensors (use {kind!r}, 'torch' or 'auto')")
    if torch.compiler.is_compiling():
        if _loaded(kind):
            return kind, "requested" if backend == kind else f"auto: {DESCRIPTIONS[kind]} loaded"
        if backend == kind:
            raise RuntimeError(f"backend={kind!r} is unavailable; see tl.kernels.backend_info()")
        return "torch", f"auto: {kind} unavailable"
    st = _state(kind)
    if st.loaded:
        return kind, "requested" if backend == kind else f"auto: {DESCRIPTIONS[kind]} loaded"
    if backend == kind:
        raise RuntimeError(f"backend={kind!r} is unavailable: {st.reason}")
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"tlkit: fused {kind} kernels unavailable ({st.reason}); using the slower torch backend.",
                      RuntimeWarning, stacklevel=_user_stacklevel())
    return "torch", f"auto: {kind} unavailable ({st.reason})"


# Low-dimensional nearest neighbours on the CPU: scikit-learn's KD-tree instead of the fused brute force when
# backend="auto" and (d <= 3 and n*m >= 2^22) or (d <= 5 and n*m >= 2^28).  Measured here (2 loaded cores, fp32,
# KD-tree query with k = 2 for the tie check, single-threaded): d = 2 won 1.9-4.7x from n = m = 2,000 on,
# d = 4 lost at 8,000 (0.86x) and won at 32,000 (2.2x), d = 8 lost at every size (0.39-0.68x from 2,000).
KDTREE_RULES = ((3, 1 << 22), (5, 1 << 28))


def nearest_method(n: int, m: int, d: int, device: torch.device, backend: str) -> str:
    """``"kdtree"`` (scikit-learn, exact, ties to the smallest index) or ``"fused"`` for ``tl.nearest``."""
    if backend != "auto" or torch.device(device).type != "cpu":
        return "fused"
    return "kdtree" if any(d <= dim and n * m >= pairs for dim, pairs in KDTREE_RULES) else "fused"


def backend_info(device: str | torch.device | None = None) -> dict:
    """Which backends work here, which one ``backend="auto"`` picks for each device, and why.

    Example: ``tl.kernels.backend_info()`` →
    ``{'torch': {'available': True, ...}, 'cpp': {...}, 'cuda': {...}, 'auto': {'cpu': ('cpp', '...')}}``.
    Calling it loads (and if needed builds) the libraries, as the first kernel call would. Library paths are
    shown relative to the checkout or ``~``.
    """
    info = {"torch": {"available": True, "reason": DESCRIPTIONS["torch"]}}
    for kind in ("cpp", "cuda"):
        st = _state(kind)
        info[kind] = {"available": st.loaded, "reason": DESCRIPTIONS[kind] if st.loaded else st.reason,
                      "library": _build.display_path(st.path) if st.path else None,
                      "built_in_this_process_s": st.build_seconds}
    devices = [torch.device(device)] if device is not None else [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    info["auto"] = {str(d): choose("auto", d) for d in devices}
    info["nearest"] = {"kdtree": "scikit-learn KDTree on the CPU with backend='auto' when "
                                 + " or ".join(f"d <= {dim} and n*m >= 2^{pairs.bit_length() - 1}"
                                               for dim, pairs in KDTREE_RULES),
                       "otherwise": "the fused brute force of the chosen backend"}
    return info


def build(cuda: str = "auto", verbose: bool = False) -> dict[str, str]:
    """Build the fused kernels ahead of time and load them into this process (``python -m tlkit build``).

    Compiles what is not built yet into the build cache (``$TLKIT_BUILD_DIR``, else ``~/.cache/tlkit``): the C++
    library always, the CUDA one when ``cuda="yes"``, or ``"auto"`` and a GPU is visible. Returns
    ``{"cpp": "<library, relative to ~ or the checkout>", ...}``; raises ``RuntimeError`` with the reason when a
    library cannot be built or loaded.
    """
    if cuda not in ("auto", "yes", "no"):
        raise ValueError(f"cuda must be one of ('auto', 'yes', 'no'), got {cuda!r}")
    wanted = ["cpp"] + (["cuda"] if cuda == "yes" or (cuda == "auto" and torch.cuda.is_available()) else [])
    built = {}
    for kind in wanted:
        path = _build.library_path(kind)
        if not path.is_file():
            path, _ = _build.compile_library(kind, verbose=verbose)
        if kind == "cpp" or torch.cuda.is_available():
            st = _state(kind)
            if not st.loaded:
                raise RuntimeError(f"the {_build.LABELS[kind]} kernels are unavailable: {st.reason}")
        built[kind] = _build.display_path(path)
    return built
