"""Optimal-transport domain adaptation (Courty, Flamary, Tuia & Rakotomamonjy 2017) on the POT library.

:class:`OTMapping` is a thin wrapper on ``ot.da`` (``EMDTransport``, ``SinkhornTransport``,
``SinkhornLpl1Transport``) with the interface of tlkit's other aligners (:mod:`tlkit.feature.shallow`):
``fit(Xs, Xt)`` returns self, ``transform(X, domain)`` maps rows of one domain, ``fit_align(Xs, Xt)`` returns the
aligned pair. The solvers are POT's; tlkit adds the input checks, numpy / torch round trip and one
``ConvergenceWarning`` when a solver stops at its iteration limit.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._validation import check_1d, check_choice, check_in_range, check_positive, like_input, to_numpy
from .shallow import _Aligner

__all__ = ["OTMapping"]

METRICS = ("sqeuclidean", "euclidean", "cityblock", "cosine")
SINKHORN_METHODS = ("sinkhorn_log", "sinkhorn", "sinkhorn_stabilized")
NORMS = (None, "median", "max", "log", "loglog")
# POT's messages when a solver stops at its iteration limit (ot.lp.emd, ot.bregman.sinkhorn*).
_LIMIT_MESSAGES = ("numItermax reached", "did not converge")


def _pot():
    """The POT package (the optional extra 'ot': tl.feature imports without it)."""
    try:
        import ot.da
    except ImportError as error:
        raise ImportError("OTMapping needs POT: pip install 'tlkit[ot]' (or pip install pot)") from error
    return ot


class OTMapping(_Aligner):
    r"""Optimal-transport mapping of the source onto the target (Courty et al. 2017), solved by POT.

    With uniform weights $a = \mathbf 1_{n_s}/n_s$, $b = \mathbf 1_{n_t}/n_t$ and the cost
    $C_{ij} = c(x^s_i, x^t_j)$ (``metric``, default $\lVert x^s_i - x^t_j\rVert^2$, optionally
    rescaled by ``norm``), the transport plan (coupling) is

    $$\gamma^{*} = \arg\min_{\gamma \in \mathbb{R}_+^{n_s \times n_t}}\ \langle \gamma, C \rangle_F
      - \varepsilon H(\gamma) \quad \text{s.t.} \quad \gamma \mathbf 1 = a,\ \ \gamma^\top \mathbf 1 = b,
      \qquad H(\gamma) = -\sum_{ij} \gamma_{ij} \log \gamma_{ij},$$

    $\varepsilon$ = ``reg_e``: Sinkhorn's algorithm (Cuturi 2013, ``ot.sinkhorn``; ``method`` as POT's:
    ``"sinkhorn_log"``, the log domain, stable for small $\varepsilon$; ``"sinkhorn"``, faster) for
    $\varepsilon > 0$, the exact linear program (earth mover's distance, ``ot.emd``) for ``reg_e=None`` or 0.
    With source labels ``ys`` and ``reg_cl`` $= \eta > 0$ the class-regularised plan adds the group-lasso
    term $\eta \sum_j \sum_c \lVert \gamma_{\mathcal I_c, j} \rVert_1^{1/2}$ ($\mathcal I_c$ the source
    rows of class $c$), so each target point receives mass from one class (``ot.da.SinkhornLpl1Transport``,
    majorisation-minimisation with ``max_outer_iter`` Sinkhorn solves). Each source point is then moved to the
    barycentre of its targets,

    $$\hat x^s_i = \frac{\sum_j \gamma^{*}_{ij}\, x^t_j}{\sum_j \gamma^{*}_{ij}} = n_s \sum_j \gamma^{*}_{ij}\,
      x^t_j ,$$

    and a classifier trained on $(\hat X_s, y_s)$ is applied to the target as it is. New source rows (not the
    fitted ``Xs``) are mapped as POT does (Ferradans et al. 2014): $\hat x = x - x^s_k + \hat x^s_k$ with
    $x^s_k$ the nearest fitted source point.

    ``max_iter``: the solver's iteration limit, by default POT's (EMD 100000 simplex iterations, Sinkhorn 1000
    iterations) and 1000 per inner Sinkhorn solve of the class-regularised plan (POT's 200 stop short for small
    $\varepsilon$); ``tol`` Sinkhorn's stopping threshold. A solver that stops at its limit raises one ``ConvergenceWarning``.

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d), ``ys`` (n_s,) → ``coupling_`` (n_s, n_t), ``cost_``
    (n_s, n_t); ``transform(X, "source")`` (m, d) → (m, d). Memory and time grow with $n_s n_t$. The POT
    estimator is kept as ``transport_``. Used in lesson 15.
    """

    def __init__(self, reg_e: float | None = 1.0, reg_cl: float | None = None, metric: str = "sqeuclidean",
                 norm: str | None = None, max_iter: int | None = None, tol: float = 1e-8, max_outer_iter: int = 10,
                 method: str = "sinkhorn_log"):
        self.reg_e = reg_e
        self.reg_cl = reg_cl
        self.metric = metric
        self.norm = norm
        self.max_iter = max_iter
        self.tol = tol
        self.max_outer_iter = max_outer_iter
        self.method = method

    def _make_transport(self, has_labels: bool):
        ot = _pot()
        reg_e = None if self.reg_e is None else check_positive(self.reg_e, "reg_e", allow_zero=True)
        reg_cl = None if self.reg_cl is None else check_positive(self.reg_cl, "reg_cl")
        metric = check_choice(self.metric, "metric", METRICS)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        tol = check_positive(self.tol, "tol")
        max_iter = None if self.max_iter is None else check_in_range(self.max_iter, "max_iter", 1, integer=True)
        common = {"metric": metric, "norm": self.norm}
        if reg_cl is not None:
            if not reg_e:
                raise ValueError(f"reg_cl={reg_cl} needs an entropic plan: reg_e must be > 0, got {self.reg_e}")
            if not has_labels:
                raise ValueError("reg_cl is set, so fit needs the source labels: fit(Xs, Xt, ys)")
            outer = check_in_range(self.max_outer_iter, "max_outer_iter", 1, integer=True)
            return ot.da.SinkhornLpl1Transport(reg_e=reg_e, reg_cl=reg_cl, max_iter=outer,
                                               max_inner_iter=max_iter or 1000, tol=tol, **common)
        if has_labels:
            raise ValueError("ys is used only by the class-regularised plan: set reg_cl > 0 or call fit(Xs, Xt)")
        if not reg_e:
            return ot.da.EMDTransport(max_iter=max_iter or 100000, **common)
        method = check_choice(self.method, "method", SINKHORN_METHODS)
        return ot.da.SinkhornTransport(reg_e=reg_e, method=method, max_iter=max_iter or 1000, tol=tol,
                                       out_of_sample_map="ferradans", **common)

    def fit(self, Xs, Xt, ys=None):
        """Solve for the plan between ``Xs`` (n_s, d) and ``Xt`` (n_t, d); ``ys`` (n_s,) only with ``reg_cl``."""
        xs, xt = self._check_fit_input(Xs, Xt, min_samples=1)
        labels = None
        if ys is not None:
            labels = to_numpy(ys, "ys", dtype=None)
            check_1d(labels, "ys", length=len(xs), finite=labels.dtype.kind == "f")
            labels = np.unique(labels, return_inverse=True)[1].astype(np.float64)  # POT wants numeric labels
        transport = self._make_transport(labels is not None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transport.fit(Xs=xs, ys=labels, Xt=xt)
        limit_hit = False
        for warning in caught:
            if any(text in str(warning.message) for text in _LIMIT_MESSAGES):
                limit_hit = True
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if limit_hit:
            warnings.warn(f"{type(transport).__name__} stopped at its iteration limit (max_iter={self.max_iter}, "
                          "None = POT's default): raise max_iter, or reg_e for Sinkhorn", ConvergenceWarning,
                          stacklevel=2)
        plan = np.asarray(transport.coupling_)
        entropic = not isinstance(transport, _pot().da.EMDTransport)   # EMD stopped early is partial: warned above
        if entropic and not (np.all(np.isfinite(plan)) and abs(plan.sum() - 1.0) < 1e-3):  # POT: NaN or zeros
            raise ValueError(f"the plan does not carry the unit mass (total {plan.sum():.3g}): Sinkhorn under- or "
                             f"overflowed at reg_e={self.reg_e}; raise reg_e, scale the cost (norm='max') or use "
                             "method='sinkhorn_log'")
        self.transport_ = transport
        self.coupling_ = plan
        self.cost_ = np.asarray(transport.cost_)
        self.n_features_in_ = xs.shape[1]
        return self

    def transform(self, X, domain: str = "source"):
        """Source rows (m, d) → their barycentric images $\\hat x^s$ (nearest-neighbour shift for new rows); target
        rows keep their values. A float64 array, or a tensor like ``X``."""
        x = self._check_transform_input(X, domain)
        if domain == "target":
            return like_input(torch.from_numpy(x.copy()), X)
        return like_input(torch.from_numpy(np.asarray(self.transport_.transform(Xs=x), dtype=np.float64)), X)

    def fit_align(self, Xs, Xt, ys=None):
        """Fit on ``Xs`` (n_s, d), ``Xt`` (n_t, d) (and ``ys`` with ``reg_cl``), return the aligned ``(Zs, Zt)``."""
        return self.fit(Xs, Xt, ys).transform(Xs, "source"), self.transform(Xt, "target")
