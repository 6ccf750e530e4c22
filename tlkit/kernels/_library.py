"""The one module that loads tlkit's compiled op library — building it on first use — and registers, at module
level, what torch needs beside the C++ schemas (``csrc/ops.cpp``): fake (shape) functions for ``torch.compile`` and
the autograd formulas of ``_reference_autograd``, as in pytorch/extension-cpp.

``import tlkit`` never imports it; the dispatch point does on the first kernel call. If the C++ library cannot be
built or loaded, nothing is registered and the torch backend runs (``state("cpp").reason`` says why).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from . import _build
from ._reference_autograd import kernel_matmul_backward, kernel_matmul_multi_backward, mmd2_value_backward


@dataclass
class ExtensionState:
    """What happened when tlkit tried to make one library (``"cpp"`` or ``"cuda"``) available."""

    kind: str
    loaded: bool = False
    path: str | None = None
    reason: str = "not tried yet"
    build_seconds: float | None = None


_states: dict[str, ExtensionState] = {}


def state(kind: str) -> ExtensionState:
    return _states.setdefault(kind, ExtensionState(kind))


def load(kind: str, allow_build: bool | None = None, verbose: bool = False) -> ExtensionState:
    """Make the ``kind`` library's kernels available in ``torch.ops.tlkit``, compiling it first if it is not built
    and building is allowed (``TLKIT_NO_BUILD`` unset). Tried once per process; the result is sticky."""
    st = state(kind)
    if st.loaded or st.reason != "not tried yet":
        return st
    if kind == "cuda":
        if not torch.cuda.is_available():
            st.reason = "no CUDA device is visible to torch"
            return st
        if not CPP.loaded:
            st.reason = f"needs the C++ library first, which is unavailable: {CPP.reason}"
            return st
    if allow_build is None:
        allow_build = os.environ.get("TLKIT_NO_BUILD", "0") in ("", "0")
    path = _build.library_path(kind)
    try:
        if not path.is_file():
            if not allow_build:
                st.reason = "not built and TLKIT_NO_BUILD is set; run `python -m tlkit build`"
                return st
            path, st.build_seconds = _build.compile_library(kind, verbose=verbose)
        torch.ops.load_library(str(path))
    except _build.BuildError as exc:
        st.reason = str(exc)
        return st
    except Exception as exc:  # a failed build must never break tlkit: the torch backend takes over
        st.reason = (f"build or load failed: {_build.summarise(exc)}. "
                     "Run `python -m tlkit build --verbose` for the log")
        return st
    st.loaded, st.path, st.reason = True, str(path), "loaded"
    return st


CPP = load("cpp")

if CPP.loaded:
    @torch.library.register_fake("tlkit::nearest")
    def _nearest_fake(x, y):
        return x.new_empty(x.shape[0]), x.new_empty(x.shape[0], dtype=torch.long)

    @torch.library.register_fake("tlkit::kernel_matmul")
    def _kernel_matmul_fake(x, y, v, sigmas, kernel):
        return x.new_empty(x.shape[0], v.shape[1])

    @torch.library.register_fake("tlkit::kernel_matmul_multi")
    def _kernel_matmul_multi_fake(x, y, v, sigmas, kernel):
        return x.new_empty(len(sigmas), x.shape[0], v.shape[1])

    @torch.library.register_fake("tlkit::kernel_pair_grad")
    def _kernel_pair_grad_fake(a, b, A, B, sigmas, kernel):
        return torch.empty_like(a)

    @torch.library.register_fake("tlkit::mmd2_terms")
    def _mmd2_terms_fake(x, y, wx, wy, coef, sigmas, kernel, compute_grad):
        terms = x.new_empty(3, dtype=torch.float64)
        if compute_grad:
            return terms, torch.empty_like(x), torch.empty_like(y)
        return terms, x.new_empty(0), x.new_empty(0)

    @torch.library.register_fake("tlkit::mmd2_value")
    def _mmd2_value_fake(x, y, wx, wy, coef, offset, sigmas, kernel, compute_grad):
        value = x.new_empty((), dtype=torch.float64)
        if compute_grad:
            return value, torch.empty_like(x), torch.empty_like(y)
        return value, x.new_empty(0), x.new_empty(0)

    def _kernel_matmul_setup(ctx, inputs, output):
        x, y, v, sigmas, kernel = inputs
        ctx.save_for_backward(x, y, v)
        ctx.sigmas, ctx.kernel = sigmas, kernel

    def _kernel_matmul_backward(ctx, grad):
        x, y, v = ctx.saved_tensors
        grads = kernel_matmul_backward(torch.ops.tlkit, grad.contiguous(), x, y, v, ctx.sigmas, ctx.kernel,
                                       ctx.needs_input_grad[:3])
        return (*grads, None, None)

    torch.library.register_autograd("tlkit::kernel_matmul", _kernel_matmul_backward,
                                    setup_context=_kernel_matmul_setup)

    def _kernel_matmul_multi_backward(ctx, grad):
        x, y, v = ctx.saved_tensors
        grads = kernel_matmul_multi_backward(torch.ops.tlkit, grad, x, y, v, ctx.sigmas, ctx.kernel,
                                             ctx.needs_input_grad[:3])
        return (*grads, None, None)

    torch.library.register_autograd("tlkit::kernel_matmul_multi", _kernel_matmul_multi_backward,
                                    setup_context=_kernel_matmul_setup)

    def _mmd2_terms_setup(ctx, inputs, output):
        x, y, wx, wy, coef, sigmas, kernel, compute_grad = inputs
        ctx.save_for_backward(x, y, wx, wy)
        ctx.sigmas, ctx.kernel = sigmas, kernel

    def _mmd2_terms_backward(ctx, grad_terms, _grad_gx, _grad_gy):
        # For direct users of the raw op: the gradients of Σ_t g_t T_t, recomputed with coef = g (eager only).
        x, y, wx, wy = ctx.saved_tensors
        g = grad_terms.detach().double().cpu().tolist()
        _, gx, gy = torch.ops.tlkit.mmd2_terms(x, y, wx, wy, g, ctx.sigmas, ctx.kernel, True)
        grads = mmd2_value_backward(torch.ops.tlkit, torch.ones((), dtype=x.dtype, device=x.device), x, y, wx, wy, g,
                                    ctx.sigmas, ctx.kernel, gx, gy, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None)

    torch.library.register_autograd("tlkit::mmd2_terms", _mmd2_terms_backward, setup_context=_mmd2_terms_setup)

    # What tl.mmd2 calls: ∂/∂x, ∂/∂y come from the forward pass, so its backward is data-independent and traces
    # under torch.compile.
    def _mmd2_value_setup(ctx, inputs, output):
        x, y, wx, wy, coef, offset, sigmas, kernel, compute_grad = inputs
        _, gx, gy = output
        ctx.save_for_backward(x, y, wx, wy, gx, gy)
        ctx.coef, ctx.sigmas, ctx.kernel = coef, sigmas, kernel

    def _mmd2_value_backward(ctx, grad_value, _grad_gx, _grad_gy):
        x, y, wx, wy, gx, gy = ctx.saved_tensors
        grads = mmd2_value_backward(torch.ops.tlkit, grad_value, x, y, wx, wy, ctx.coef, ctx.sigmas, ctx.kernel,
                                    gx, gy, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None, None)

    torch.library.register_autograd("tlkit::mmd2_value", _mmd2_value_backward, setup_context=_mmd2_value_setup)
