"""Autograd of the primitives: the backward formulas, written once against a *primitives* namespace, and the
torch backend's ``autograd.Function`` wrappers around ``_reference``.

``_library`` registers the same formulas on the compiled ops (``torch.ops.tlkit``), so both backends share them.
Every backward is itself a fused reduction — no n×m temporary:
  ∂/∂x of Σ_i g_i · (K v)_i   = −pair_grad(x, y, g, v)
  ∂/∂y                        = −pair_grad(y, x, v, g)
  ∂/∂v                        = K(y, x) g
"""
from __future__ import annotations

import torch

from . import _reference


def kernel_matmul_backward(prims, grad, x, y, v, sigmas, kernel, needs):
    gx = -prims.kernel_pair_grad(x, y, grad, v, sigmas, kernel) if needs[0] else None
    gy = -prims.kernel_pair_grad(y, x, v, grad, sigmas, kernel) if needs[1] else None
    gv = prims.kernel_matmul(y, x, grad, sigmas, kernel) if needs[2] else None
    return gx, gy, gv


def kernel_matmul_multi_backward(prims, grad, x, y, v, sigmas, kernel, needs):
    """out[s] = K_s v: the sum over s of kernel_matmul's backward with the single bandwidth sigma_s."""
    gx = gy = gv = None
    for s, sigma in enumerate(sigmas):
        g = grad[s].contiguous()
        if needs[0]:
            term = prims.kernel_pair_grad(x, y, g, v, [sigma], kernel)
            gx = -term if gx is None else gx - term
        if needs[1]:
            term = prims.kernel_pair_grad(y, x, v, g, [sigma], kernel)
            gy = -term if gy is None else gy - term
        if needs[2]:
            term = prims.kernel_matmul(y, x, g, [sigma], kernel)
            gv = term if gv is None else gv + term
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


class TorchKernelMatmulMulti(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, v, sigmas, kernel):
        ctx.save_for_backward(x, y, v)
        ctx.sigmas, ctx.kernel = sigmas, kernel
        return _reference.kernel_matmul_multi(x, y, v, sigmas, kernel)

    @staticmethod
    def backward(ctx, grad):
        x, y, v = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        return (*kernel_matmul_multi_backward(_reference, grad, x, y, v, ctx.sigmas, ctx.kernel, needs), None, None)


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
