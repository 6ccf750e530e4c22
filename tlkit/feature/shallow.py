"""Shallow feature alignment: CORAL, TCA and subspace alignment, and the pipeline that trains on aligned features.

All three aligners follow one interface: ``fit(Xs, Xt)`` returns self, ``transform(X, domain="source" |
"target")`` maps new samples of that domain, ``fit_align(Xs, Xt)`` returns the aligned pair ``(Zs, Zt)``. They
have no ``fit_transform``: fitting needs both domains, so scikit-learn's ``fit_transform(X, y)`` has no meaning
here. :func:`make_da_pipeline` / :class:`DAPipeline` chain an aligner and a scikit-learn estimator:
``fit(Xs, ys, Xt)`` then ``predict`` / ``score`` on target rows. Inputs are numpy arrays or torch tensors (any
device); the small dense linear algebra runs in float64 and results come back in the input's type.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import Tags, TransformerTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._validation import check_1d, check_2d, check_in_range, check_pair, check_positive, like_input, to_numpy
from ..kernels import median_bandwidth

__all__ = ["CORAL", "TCA", "SubspaceAlignment", "DAPipeline", "make_da_pipeline"]

DOMAINS = ("source", "target")


def _matrix_power(symmetric: np.ndarray, power: float) -> np.ndarray:
    """$C^p = V \\operatorname{diag}(\\lambda^p) V^\\top$ for a symmetric positive definite C."""
    values, vectors = np.linalg.eigh(symmetric)
    return (vectors * values**power) @ vectors.T


def _covariance(x: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(x, rowvar=False))


def _top_eigenvectors(symmetric: np.ndarray, k: int) -> np.ndarray:
    """The k leading eigenvectors (columns, descending eigenvalue), each signed so its largest entry is positive."""
    values, vectors = np.linalg.eigh(symmetric)
    top = vectors[:, ::-1][:, :k]
    signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
    return top * np.where(signs == 0, 1.0, signs)


class _Aligner(BaseEstimator):
    """Shared plumbing: input checks, the domain argument, the input-type round trip."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=[])  # results are float64 (or torch like X)
        return tags

    def _check_fit_input(self, Xs, Xt, min_samples=2):
        check_2d(Xs, "Xs", min_samples=min_samples)
        if isinstance(Xt, (np.ndarray, torch.Tensor)) and Xt.ndim == 1:
            raise ValueError(f"Xt must be 2-D (n_samples, n_features), got shape {tuple(Xt.shape)}: "
                             f"{type(self).__name__}.fit takes the two domains (Xs, Xt), not (X, y); to train a "
                             "classifier on aligned features use tlkit.feature.make_da_pipeline")
        check_pair(Xs, Xt, min_samples=min_samples)
        return to_numpy(Xs, "Xs"), to_numpy(Xt, "Xt")

    def _check_transform_input(self, X, domain):
        check_is_fitted(self)
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        x = check_2d(to_numpy(X, "X"), "X")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {x.shape[1]}")
        return x

    def fit_align(self, Xs, Xt):
        """Fit on ``Xs`` (n_s, d) and ``Xt`` (n_t, d), return the aligned ``(Zs, Zt)``."""
        return self.fit(Xs, Xt).transform(Xs, "source"), self.transform(Xt, "target")


class CORAL(_Aligner):
    r"""CORrelation ALignment (Sun, Feng & Saenko, 2016): recolour the source with the target covariance.

    $$C_s = \operatorname{cov}(X_s) + \lambda I, \quad C_t = \operatorname{cov}(X_t) + \lambda I, \qquad
      X_s^{*} = X_s\, C_s^{-1/2}\, C_t^{1/2}$$

    $C_s^{-1/2}$ whitens the source, $C_t^{1/2}$ re-colours it, so $\operatorname{cov}(X_s^*)
    = C_t^{1/2} C_s^{-1/2} \operatorname{cov}(X_s) C_s^{-1/2} C_t^{1/2}$ equals $C_t$ up to the
    regulariser. $\lambda$ = ``reg`` (the paper uses 1 on standardised features) keeps $C_s$
    invertible. The target is left as it is; a classifier trained on $X_s^*$ is applied to $X_t$.
    The paper transforms the raw features; ``center=True`` also moves the source mean onto the target mean,
    $X_s^* = (X_s - \bar x_s) C_s^{-1/2} C_t^{1/2} + \bar x_t$.

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d) → ``transform_matrix_`` (d, d). Used in lesson 09.
    """

    def __init__(self, reg: float = 1.0, center: bool = False):
        self.reg = reg
        self.center = center

    def fit(self, Xs, Xt):
        xs, xt = self._check_fit_input(Xs, Xt)
        reg = check_positive(self.reg, "reg")
        identity = np.eye(xs.shape[1])
        self.source_cov_ = _covariance(xs) + reg * identity
        self.target_cov_ = _covariance(xt) + reg * identity
        self.transform_matrix_ = _matrix_power(self.source_cov_, -0.5) @ _matrix_power(self.target_cov_, 0.5)
        self.source_mean_, self.target_mean_ = xs.mean(axis=0), xt.mean(axis=0)
        self.n_features_in_ = xs.shape[1]
        return self

    def transform(self, X, domain: str = "source"):
        """Source rows (n, d) → $X C_s^{-1/2} C_t^{1/2}$; target rows keep their values (a new float64 array,
        or tensor like ``X``, as for the source)."""
        x = self._check_transform_input(X, domain)
        if domain == "target":
            return like_input(torch.from_numpy(x.copy()), X)
        if self.center:
            aligned = (x - self.source_mean_) @ self.transform_matrix_ + self.target_mean_
        else:
            aligned = x @ self.transform_matrix_
        return like_input(torch.from_numpy(aligned), X)


class TCA(_Aligner):
    r"""Transfer component analysis (Pan, Tsang, Kwok & Yang, 2011): a kernel embedding with small MMD.

    On the pooled sample $X = [X_s; X_t]$ ($n = n_s + n_t$) with kernel matrix $K$,
    $L = e e^\top$ where $e_i = 1/n_s$ on source rows and $-1/n_t$ on target rows (so
    $\operatorname{tr}(W^\top K L K W)$ is the squared MMD of the embedding $Z = K W$), and the
    centring matrix $H = I - \frac1n \mathbf 1 \mathbf 1^\top$, TCA solves

    $$\min_W\ \operatorname{tr}(W^\top K L K W) + \mu \operatorname{tr}(W^\top W)
      \quad \text{s.t.} \quad W^\top K H K W = I,$$

    whose solution is the $k$ leading eigenvectors of the symmetric generalised eigenproblem

    $$K H K\, w = \lambda\, (K L K + \mu I)\, w,$$

    solved with ``scipy.linalg.eigh`` (both sides symmetric, the right one positive definite): the eigenvalues
    are real, never complex as with ``eig`` on $(KLK + \mu I)^{-1} KHK$. The eigenvectors come
    normalised as ``eigh`` returns them, $W^\top (KLK + \mu I) W = I$ (a per-component rescaling of the
    paper's constraint, same directions). New samples embed as
    $z = W^\top k(X, x)$, from either domain. ``kernel`` is ``"linear"``, ``"gaussian"`` or
    ``"laplacian"`` (bandwidth ``sigma``, default the median heuristic).

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d) → ``components_`` W (n, k), ``eigenvalues_`` (k,) descending;
    ``transform(X)`` (m, d) → (m, k). O(n³) time and O(n²) memory: for a few thousand samples. Used in lesson 09.
    """

    def __init__(self, n_components: int = 10, kernel: str = "linear", sigma: float | None = None, mu: float = 1.0):
        self.n_components = n_components
        self.kernel = kernel
        self.sigma = sigma
        self.mu = mu

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.kernel == "linear":
            return a @ b.T
        if self.kernel == "gaussian":
            return np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * self.sigma_**2))
        return np.exp(-cdist(a, b) / self.sigma_)

    def fit(self, Xs, Xt):
        xs, xt = self._check_fit_input(Xs, Xt, min_samples=1)
        if self.kernel not in ("linear", "gaussian", "laplacian"):
            raise ValueError(f"kernel must be 'linear', 'gaussian' or 'laplacian', got {self.kernel!r}")
        mu = check_positive(self.mu, "mu")
        n_s, n_t = len(xs), len(xt)
        n = n_s + n_t
        n_components = check_in_range(self.n_components, "n_components", 1, n, integer=True)
        pooled = np.vstack([xs, xt])
        self.sigma_ = None
        if self.kernel != "linear":
            self.sigma_ = median_bandwidth(pooled) if self.sigma is None else check_positive(self.sigma, "sigma")
        kernel = self._kernel(pooled, pooled)
        e = np.r_[np.full(n_s, 1.0 / n_s), np.full(n_t, -1.0 / n_t)]
        k_e = kernel @ e
        centred = kernel - kernel.mean(axis=0, keepdims=True)  # H K
        numerator = kernel @ centred  # K H K
        denominator = np.outer(k_e, k_e) + mu * np.eye(n)  # K L K + mu I
        numerator, denominator = (numerator + numerator.T) / 2, (denominator + denominator.T) / 2
        values, vectors = scipy.linalg.eigh(numerator, denominator,
                                            subset_by_index=[n - n_components, n - 1])
        self.eigenvalues_ = values[::-1].copy()
        self.components_ = vectors[:, ::-1].copy()
        self.fit_data_ = pooled
        self.n_features_in_ = xs.shape[1]
        return self

    def transform(self, X, domain: str = "source"):
        """Embed rows of either domain: $Z = k(X, X_{\\mathrm{fit}})\\, W$, (m, d) → (m, k)."""
        x = self._check_transform_input(X, domain)
        return like_input(torch.from_numpy(self._kernel(x, self.fit_data_) @ self.components_), X)


class SubspaceAlignment(_Aligner):
    r"""Subspace alignment (Fernando, Habrard, Sebban & Tuytelaars, 2013).

    With $P_s, P_t \in \mathbb{R}^{d \times k}$ the top-$k$ PCA bases of each (centred) domain,
    the alignment matrix is the closed-form minimiser

    $$M^{*} = \arg\min_M \lVert P_s M - P_t \rVert_F^2 = P_s^\top P_t,$$

    and the domains are compared in the aligned coordinates

    $$Z_s = (X_s - \bar x_s)\, P_s M^{*}, \qquad Z_t = (X_t - \bar x_t)\, P_t .$$

    $P_s M^{*} = P_s P_s^\top P_t$ is the target basis projected into the source subspace; when the two
    subspaces coincide it is $P_t$ itself. Eigenvector signs are fixed (largest entry positive).

    Shapes: ``Xs`` (n_s, d), ``Xt`` (n_t, d) → ``source_components_``, ``target_components_`` (d, k),
    ``alignment_matrix_`` (k, k); ``transform`` (m, d) → (m, k). Used in lesson 09.
    """

    def __init__(self, n_components: int = 10):
        self.n_components = n_components

    def fit(self, Xs, Xt):
        xs, xt = self._check_fit_input(Xs, Xt)
        d = xs.shape[1]
        n_components = check_in_range(self.n_components, "n_components", 1, d, integer=True)
        self.source_mean_, self.target_mean_ = xs.mean(axis=0), xt.mean(axis=0)
        self.source_components_ = _top_eigenvectors(_covariance(xs), n_components)
        self.target_components_ = _top_eigenvectors(_covariance(xt), n_components)
        self.alignment_matrix_ = self.source_components_.T @ self.target_components_
        self.n_features_in_ = d
        return self

    def transform(self, X, domain: str = "source"):
        """Source rows → $(X - \\bar x_s) P_s M^*$; target rows → $(X - \\bar x_t) P_t$; (m, d) → (m, k)."""
        x = self._check_transform_input(X, domain)
        if domain == "source":
            z = (x - self.source_mean_) @ self.source_components_ @ self.alignment_matrix_
        else:
            z = (x - self.target_mean_) @ self.target_components_
        return like_input(torch.from_numpy(z), X)


def _estimator_has(method: str):
    return lambda pipeline: hasattr(pipeline.estimator, method)


class DAPipeline(MetaEstimatorMixin, BaseEstimator):
    r"""Unsupervised domain adaptation as one estimator: align the two domains, train on the aligned source.

    With $T_s, T_t$ the aligner's source and target maps, fitted on $X_s$ and the unlabelled
    $X_t$,

    $$\hat f = \arg\min_f \sum_{i=1}^{n_s} \ell\big(f(T_s(x_i^s)), y_i^s\big), \qquad
      \hat y(x) = \hat f\big(T_t(x)\big) \ \text{for target rows } x.$$

    ``aligner`` is :class:`CORAL`, :class:`TCA`, :class:`SubspaceAlignment` or any object with ``fit(Xs, Xt)``
    and ``transform(X, domain)``; ``estimator`` any scikit-learn estimator, a :class:`~sklearn.pipeline.Pipeline`
    included (e.g. ``make_pipeline(StandardScaler(), LogisticRegression())``: its steps see aligned source
    rows). Both are cloned in ``fit``, so ``clone``, ``get_params`` / ``set_params`` (``aligner__reg``,
    ``estimator__C``) and grid search over them work — but choosing them by target accuracy uses target labels;
    lesson 13 shows importance-weighted validation on the source instead.

    Shapes: ``fit(Xs (n_s, d), ys (n_s,), Xt (n_t, d))``; ``predict``, ``predict_proba``, ``decision_function``
    and ``score(X, y)`` take target rows ``X`` (k, d) and answer in ``X``'s type. Fitted attributes:
    ``aligner_``, ``estimator_``, ``n_features_in_``. It chains the aligners of lesson 09.
    """

    def __init__(self, aligner, estimator):
        self.aligner = aligner
        self.estimator = estimator

    def fit(self, Xs, ys, Xt):
        for name, value, methods in (("aligner", self.aligner, ("fit", "transform")),
                                     ("estimator", self.estimator, ("fit", "predict"))):
            if not all(hasattr(value, method) for method in methods):
                raise TypeError(f"{name} must have {' and '.join(methods)}, got {type(value).__name__}")
        Xs = check_2d(Xs, "Xs")
        labels = to_numpy(ys, "ys", dtype=None)
        check_1d(labels, "ys", length=Xs.shape[0], finite=labels.dtype.kind == "f")
        aligner = clone(self.aligner).fit(Xs, Xt)
        source_features = to_numpy(aligner.transform(Xs, "source"), "the aligned source")
        self.estimator_ = clone(self.estimator).fit(source_features, labels)
        self.aligner_ = aligner
        self.n_features_in_ = Xs.shape[1]
        return self

    def _target_features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return to_numpy(self.aligner_.transform(X, "target"), "the aligned target")

    def predict(self, X):
        """Labels (k,) of target rows ``X`` (k, d): $\\hat f(T_t(x))$."""
        features = self._target_features(X)
        return like_input(self.estimator_.predict(features), X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities (k, C) of target rows ``X`` (k, d)."""
        features = self._target_features(X)
        return like_input(self.estimator_.predict_proba(features), X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """The estimator's decision function on target rows ``X`` (k, d)."""
        features = self._target_features(X)
        return like_input(self.estimator_.decision_function(features), X)

    def score(self, X, y) -> float:
        """The estimator's ``score`` on target rows (accuracy for a classifier, R² for a regressor)."""
        features = self._target_features(X)
        return float(self.estimator_.score(features, to_numpy(y, "y", dtype=None)))


def make_da_pipeline(aligner, estimator) -> DAPipeline:
    """``DAPipeline(aligner, estimator)``: ``fit(Xs, ys, Xt)``, then ``predict`` / ``score`` on target rows.

    E.g. ``make_da_pipeline(CORAL(), make_pipeline(StandardScaler(), LogisticRegression()))``; see
    :class:`DAPipeline` for the formula. It chains the aligners of lesson 09.
    """
    return DAPipeline(aligner, estimator)
