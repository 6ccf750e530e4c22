"""Measuring domain shift (度量领域差异): the MMD permutation test, the proxy A-distance, the CORAL distance.

The MMD estimators themselves are :func:`tlkit.mmd2` (fused kernels). Used in lessons 02, 04 and 09.
"""
from .shift import coral_distance, mmd_agg_test, mmd_test, proxy_a_distance

__all__ = ["mmd_test", "mmd_agg_test", "proxy_a_distance", "coral_distance"]
