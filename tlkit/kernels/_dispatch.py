"""One dispatch point: picks the CUDA, C++ or torch backend for a device and can say which and why."""
from __future__ import annotations

import warnings

import torch

from . import _build, _reference
from ._registration import TorchKernelMatmul, TorchMMD2Value

BACKENDS = ("auto", "cuda", "cpp", "torch")
DESCRIPTIONS = {
    "cuda": "fused CUDA kernels (tiled, deterministic)",
    "cpp": "fused C++/OpenMP kernels (tiled, vectorised)",
    "torch": "pure-PyTorch reference (row chunks)",
}
_warned: set[str] = set()


def _compiled_kind(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpp"


def choose(backend: str, device: torch.device) -> tuple[str, str]:
    """(backend name, reason) for inputs on ``device``. Explicit unavailable choices raise RuntimeError."""
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
    st = _build.load(kind)
    if st.loaded:
        return kind, "requested" if backend == kind else f"auto: {DESCRIPTIONS[kind]} loaded"
    if backend == kind:
        raise RuntimeError(f"backend={kind!r} is unavailable: {st.reason}")
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"tlkit: fused {kind} kernels unavailable ({st.reason}); using the slower torch backend.",
                      RuntimeWarning, stacklevel=4)
    return "torch", f"auto: {kind} unavailable ({st.reason})"


def backend_info(device: str | torch.device | None = None) -> dict:
    """Which backends work here, which one ``backend="auto"`` picks for each device, and why.

    Example: ``tl.kernels.backend_info()`` →
    ``{'torch': {'available': True, ...}, 'cpp': {...}, 'cuda': {...}, 'auto': {'cpu': ('cpp', '...')}}``.
    Calling it loads (and if needed builds) the extensions, as the first kernel call would.
    """
    info = {"torch": {"available": True, "reason": DESCRIPTIONS["torch"]}}
    for kind in ("cpp", "cuda"):
        st = _build.load(kind)
        info[kind] = {"available": st.loaded, "reason": DESCRIPTIONS[kind] if st.loaded else st.reason,
                      "library": st.path}
    devices = [torch.device(device)] if device is not None else [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    info["auto"] = {str(d): choose("auto", d) for d in devices}
    return info


# Primitive entry points used by the public functions; each takes already-validated tensors.
def nearest(x, y, backend):
    return torch.ops.tlkit.nearest(x, y) if backend != "torch" else _reference.nearest(x, y)


def kernel_matmul(x, y, v, sigmas, kernel, backend):
    if backend == "torch":
        return TorchKernelMatmul.apply(x, y, v, sigmas, kernel)
    return torch.ops.tlkit.kernel_matmul(x, y, v, sigmas, kernel)


def mmd2_value(x, y, wx, wy, coef, const, sigmas, kernel, backend):
    """coef · [T_xx, T_yy, T_xy] + const as a float64 scalar, differentiable in x, y, wx, wy."""
    if backend == "torch":
        return TorchMMD2Value.apply(x, y, wx, wy, coef, const, sigmas, kernel)
    compute_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    return torch.ops.tlkit.mmd2_value(x, y, wx, wy, coef, const, sigmas, kernel, compute_grad)[0]
