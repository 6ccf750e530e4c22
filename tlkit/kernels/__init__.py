"""Fused pairwise kernels (融合成对核): nearest neighbours, kernel sums, kernel-matrix products and MMD.

Three backends compute the same reductions: ``"cuda"`` and ``"cpp"`` (fused libraries compiled from ``csrc/`` on
first use, or ahead of time with :func:`build`) and ``"torch"`` (the pure-PyTorch reference and fallback).
``backend_info()`` says which work here and which ``"auto"`` picks, and why; ``toolchain()`` what a build would use.
Adding an op: see ``tlkit/kernels/README.md``. Lesson 04 explains how the fused kernels avoid the n×m matrix.
"""
from ._build import toolchain
from ._dispatch import backend_info, build, choose as choose_backend
from .ops import kernel_matmul, kernel_matmul_multi, kernel_sum, median_bandwidth, mmd2, nearest

__all__ = ["nearest", "kernel_sum", "kernel_matmul", "kernel_matmul_multi", "mmd2", "median_bandwidth", "backend_info", "choose_backend",
           "build", "toolchain"]
