"""Autograd for the four primitives, shared by every backend, and torch.library registration of the compiled ops.

The ops are declared once in C++ (``TORCH_LIBRARY(tlkit, m)`` in ``csrc/tlkit_cpu.cpp``) with CPU and CUDA
kernels registered per dispatch key. Here Python adds what ``torch.compile`` and autograd need:
``torch.library.register_fake`` (output shapes) and ``torch.library.register_autograd`` (backward), as in
pytorch/extension-cpp. The backward formulas are written once against a *primitives* namespace, so the
torch backend (``_reference``) and the compiled ops (``torch.ops.tlkit``) share them.

Every backward is itself a fused reduction — no n×m temporary:
  ∂/∂x of Σ_i g_i · (K v)_i   = −pair_grad(x, y, g, v)
  ∂/∂y                        = −pair_grad(y, x, v, g)
  ∂/∂v                        = K(y, x) g
"""
from __future__ import annotations

import torch

from . import _reference

_registered = False


def kernel_matmul_backward(prims, grad, x, y, v, sigmas, kernel, needs):
    gx = -prims.kernel_pair_grad(x, y, grad, v, sigmas, kernel) if needs[0] else None
    gy = -prims.kernel_pair_grad(y, x, v, grad, sigmas, kernel) if needs[1] else None
    gv = prims.kernel_matmul(y, x, grad, sigmas, kernel) if needs[2] else None
    return gx, gy, gv


def mmd2_terms_backward(prims, grad_terms, x, y, wx, wy, coef, sigmas, kernel, forward_grads, needs):
    """Gradients of Σ_t g_t T_t. The forward pass already computed them for g ∝ coef (how mmd2 uses it)."""
    g = grad_terms.detach().double().cpu()
    c = torch.tensor(coef, dtype=torch.float64)
    scale = float(g @ c / (c @ c)) if float(c @ c) > 0 else 0.0
    gx = gy = None
    if needs[0] or needs[1]:
        if forward_grads is not None and torch.allclose(g, scale * c, rtol=1e-12, atol=0.0):
            gx, gy = forward_grads[0] * scale, forward_grads[1] * scale
        else:
            _, gx, gy = prims.mmd2_terms(x, y, wx, wy, g.tolist(), sigmas, kernel, True)
    gwx = gwy = None
    if needs[2]:  # ∂/∂wx = 2 g0 K(x,x) wx + g2 K(x,y) wy
        gwx = (2 * g[0].item() * prims.kernel_matmul(x, x, wx[:, None], sigmas, kernel)
               + g[2].item() * prims.kernel_matmul(x, y, wy[:, None], sigmas, kernel))[:, 0]
    if needs[3]:  # ∂/∂wy = 2 g1 K(y,y) wy + g2 K(y,x) wx
        gwy = (2 * g[1].item() * prims.kernel_matmul(y, y, wy[:, None], sigmas, kernel)
               + g[2].item() * prims.kernel_matmul(y, x, wx[:, None], sigmas, kernel))[:, 0]
    return (gx if needs[0] else None), (gy if needs[1] else None), gwx, gwy


# ---------------------------------------------------------------- torch backend: autograd.Function wrappers
class TorchKernelMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, v, sigmas, kernel):
        ctx.save_for_backward(x, y, v)
        ctx.sigmas, ctx.kernel = sigmas, kernel
        return _reference.kernel_matmul(x, y, v, sigmas, kernel)

    @staticmethod
    def backward(ctx, grad):
        x, y, v = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        return (*kernel_matmul_backward(_reference, grad.contiguous(), x, y, v, ctx.sigmas, ctx.kernel, needs), None, None)


class TorchMMD2Terms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, wx, wy, coef, sigmas, kernel):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        terms, gx, gy = _reference.mmd2_terms(x, y, wx, wy, coef, sigmas, kernel, need_grad)
        ctx.save_for_backward(x, y, wx, wy, gx, gy)
        ctx.coef, ctx.sigmas, ctx.kernel, ctx.need_grad = coef, sigmas, kernel, need_grad
        return terms

    @staticmethod
    def backward(ctx, grad_terms):
        x, y, wx, wy, gx, gy = ctx.saved_tensors
        grads = mmd2_terms_backward(_reference, grad_terms, x, y, wx, wy, ctx.coef, ctx.sigmas, ctx.kernel,
                                    (gx, gy) if ctx.need_grad else None, ctx.needs_input_grad[:4])
        return (*grads, None, None, None)


# ---------------------------------------------------------------- compiled ops: fake impls + autograd
def register_python_parts() -> None:
    """Called once after the C++ library is loaded (idempotent)."""
    global _registered
    if _registered:
        return
    ops = torch.ops.tlkit

    @torch.library.register_fake("tlkit::nearest")
    def _(x, y):
        return x.new_empty(x.shape[0]), x.new_empty(x.shape[0], dtype=torch.long)

    @torch.library.register_fake("tlkit::kernel_matmul")
    def _(x, y, v, sigmas, kernel):
        return x.new_empty(x.shape[0], v.shape[1])

    @torch.library.register_fake("tlkit::kernel_pair_grad")
    def _(a, b, A, B, sigmas, kernel):
        return torch.empty_like(a)

    @torch.library.register_fake("tlkit::mmd2_terms")
    def _(x, y, wx, wy, coef, sigmas, kernel, compute_grad):
        terms = x.new_empty(3, dtype=torch.float64)
        if compute_grad:
            return terms, torch.empty_like(x), torch.empty_like(y)
        return terms, x.new_empty(0), x.new_empty(0)

    def km_setup(ctx, inputs, output):
        x, y, v, sigmas, kernel = inputs
        ctx.save_for_backward(x, y, v)
        ctx.sigmas, ctx.kernel = sigmas, kernel

    def km_backward(ctx, grad):
        x, y, v = ctx.saved_tensors
        grads = kernel_matmul_backward(ops, grad.contiguous(), x, y, v, ctx.sigmas, ctx.kernel, ctx.needs_input_grad[:3])
        return (*grads, None, None)

    torch.library.register_autograd("tlkit::kernel_matmul", km_backward, setup_context=km_setup)

    def mmd_setup(ctx, inputs, output):
        x, y, wx, wy, coef, sigmas, kernel, compute_grad = inputs
        _, gx, gy = output
        ctx.save_for_backward(x, y, wx, wy, gx, gy)
        ctx.coef, ctx.sigmas, ctx.kernel, ctx.had_grad = coef, sigmas, kernel, compute_grad

    def mmd_backward(ctx, grad_terms, _grad_gx, _grad_gy):
        x, y, wx, wy, gx, gy = ctx.saved_tensors
        grads = mmd2_terms_backward(ops, grad_terms, x, y, wx, wy, ctx.coef, ctx.sigmas, ctx.kernel,
                                    (gx, gy) if ctx.had_grad else None, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None)

    torch.library.register_autograd("tlkit::mmd2_terms", mmd_backward, setup_context=mmd_setup)
    _registered = True
