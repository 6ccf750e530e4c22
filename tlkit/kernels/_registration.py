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


def mmd2_value_backward(prims, grad_value, x, y, wx, wy, coef, sigmas, kernel, gx, gy, needs):
    """Backward of value = coef · terms + const. ∂/∂x, ∂/∂y were computed inside the forward pass (gx, gy);
    the weights' gradients are fused kernel-matrix products: ∂/∂wx = 2 c_0 K(x,x) wx + c_2 K(x,y) wy."""
    c_xx, c_yy, c_xy = coef
    grad_x = (grad_value * gx).to(x.dtype) if needs[0] else None
    grad_y = (grad_value * gy).to(y.dtype) if needs[1] else None
    grad_wx = grad_wy = None
    if needs[2]:
        grad_wx = grad_value * (2 * c_xx * prims.kernel_matmul(x, x, wx[:, None], sigmas, kernel)
                                + c_xy * prims.kernel_matmul(x, y, wy[:, None], sigmas, kernel))[:, 0]
    if needs[3]:
        grad_wy = grad_value * (2 * c_yy * prims.kernel_matmul(y, y, wy[:, None], sigmas, kernel)
                                + c_xy * prims.kernel_matmul(y, x, wx[:, None], sigmas, kernel))[:, 0]
    return grad_x, grad_y, grad_wx, grad_wy


def combine_terms(terms, coef, const):
    return terms @ torch.tensor(coef, dtype=torch.float64, device=terms.device) + const


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


class TorchMMD2Value(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, wx, wy, coef, const, sigmas, kernel):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        terms, gx, gy = _reference.mmd2_terms(x, y, wx, wy, coef, sigmas, kernel, need_grad)
        ctx.save_for_backward(x, y, wx, wy, gx, gy)
        ctx.coef, ctx.sigmas, ctx.kernel = coef, sigmas, kernel
        return combine_terms(terms, coef, const)

    @staticmethod
    def backward(ctx, grad_value):
        x, y, wx, wy, gx, gy = ctx.saved_tensors
        grads = mmd2_value_backward(_reference, grad_value, x, y, wx, wy, ctx.coef, ctx.sigmas, ctx.kernel, gx, gy,
                                    ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None)


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

    def terms_setup(ctx, inputs, output):
        x, y, wx, wy, coef, sigmas, kernel, compute_grad = inputs
        ctx.save_for_backward(x, y, wx, wy)
        ctx.sigmas, ctx.kernel = sigmas, kernel

    def terms_backward(ctx, grad_terms, _grad_gx, _grad_gy):
        # For direct users of the raw op: the gradients of Σ_t g_t T_t, recomputed with coef = g (eager only).
        x, y, wx, wy = ctx.saved_tensors
        g = grad_terms.detach().double().cpu().tolist()
        _, gx, gy = ops.mmd2_terms(x, y, wx, wy, g, ctx.sigmas, ctx.kernel, True)
        grads = mmd2_value_backward(ops, torch.ones((), dtype=x.dtype, device=x.device), x, y, wx, wy, g,
                                    ctx.sigmas, ctx.kernel, gx, gy, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None)

    torch.library.register_autograd("tlkit::mmd2_terms", terms_backward, setup_context=terms_setup)

    # What tl.mmd2 calls: value = coef · terms + const, with ∂/∂x, ∂/∂y from the forward pass. Its backward
    # is data-independent, so it traces under torch.compile.
    @torch.library.custom_op("tlkit::mmd2_value", mutates_args=())
    def mmd2_value(x: torch.Tensor, y: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor, coef: list[float],
                   const: float, sigmas: list[float], kernel: int, compute_grad: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        terms, gx, gy = ops.mmd2_terms(x, y, wx, wy, coef, sigmas, kernel, compute_grad)
        return combine_terms(terms, coef, const), gx, gy

    @mmd2_value.register_fake
    def _(x, y, wx, wy, coef, const, sigmas, kernel, compute_grad):
        value = x.new_empty((), dtype=torch.float64)
        if compute_grad:
            return value, torch.empty_like(x), torch.empty_like(y)
        return value, x.new_empty(0), x.new_empty(0)

    def value_setup(ctx, inputs, output):
        x, y, wx, wy, coef, const, sigmas, kernel, compute_grad = inputs
        _, gx, gy = output
        ctx.save_for_backward(x, y, wx, wy, gx, gy)
        ctx.coef, ctx.sigmas, ctx.kernel = coef, sigmas, kernel

    def value_backward(ctx, grad_value, _grad_gx, _grad_gy):
        x, y, wx, wy, gx, gy = ctx.saved_tensors
        grads = mmd2_value_backward(ops, grad_value, x, y, wx, wy, ctx.coef, ctx.sigmas, ctx.kernel, gx, gy,
                                    ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None, None)

    mmd2_value.register_autograd(value_backward, setup_context=value_setup)
    _registered = True
