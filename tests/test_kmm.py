"""KMM against an exact dense QP solver (cvxopt's interior point, run to 1e-11), its stopping rule and warnings.

The targets of issue 16: with the defaults, the objective within 1e-6 relative of the exact optimum up to
n_s = 2,000; a ConvergenceWarning whenever the iteration limit, not the stopping rule, stops the solver."""
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.exceptions import ConvergenceWarning

from tlkit.instance import KMM

cvxopt = pytest.importorskip("cvxopt")  # a test-only dependency (requirements/lock.txt, the dev extra)


def exact_kmm(xs, xt, sigma, upper_bound, eps):
    """The KMM QP solved densely: min 1/2 b'Kb - kappa'b s.t. 0 <= b <= B, |sum b - n| <= n eps (or = n at eps 0)."""
    n_s, n_t = len(xs), len(xt)
    k = np.exp(-cdist(xs, xs, "sqeuclidean") / (2 * sigma**2))
    kappa = n_s / n_t * np.exp(-cdist(xs, xt, "sqeuclidean") / (2 * sigma**2)).sum(axis=1)
    eye = cvxopt.spmatrix(1.0, range(n_s), range(n_s))
    rows = [-eye, eye]
    bounds = [np.zeros(n_s), np.full(n_s, upper_bound)]
    equality = {}
    if eps > 0:
        ones = cvxopt.matrix(1.0, (1, n_s))
        rows += [cvxopt.sparse(ones), cvxopt.sparse(-ones)]
        bounds += [[n_s * (1 + eps)], [-n_s * (1 - eps)]]
    else:
        equality = {"A": cvxopt.matrix(1.0, (1, n_s)), "b": cvxopt.matrix(float(n_s))}
    options = {"show_progress": False, "abstol": 1e-11, "reltol": 1e-11, "feastol": 1e-11, "maxiters": 200}
    solution = cvxopt.solvers.qp(cvxopt.matrix(k), cvxopt.matrix(-kappa), cvxopt.sparse(rows),
                                 cvxopt.matrix(np.concatenate(bounds)), options=options, **equality)
    assert solution["status"] == "optimal"
    beta = np.array(solution["x"]).ravel()
    return beta, 0.5 * beta @ k @ beta - kappa @ beta


def shifted(n, d, seed, source_scale=0.5, target_scale=0.3, shift=0.5):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, source_scale, size=(n, d)), rng.normal(0.0, target_scale, size=(n, d))


def fit_without_warnings(model, xs, xt):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return model.fit(xs, xt)


@pytest.mark.parametrize("n, d, seed", [(1000, 5, 0), (1000, 2, 1),
                                        pytest.param(2000, 5, 3, marks=pytest.mark.slow)])
def test_default_kmm_reaches_the_exact_optimum(n, d, seed):
    xs, xt = shifted(n, d, seed)
    kmm = fit_without_warnings(KMM(), xs, xt)
    beta, optimum = exact_kmm(xs, xt, kmm.sigma_, kmm.B, kmm.eps_)
    assert kmm.converged_ and kmm.n_iter_ < kmm.max_iter
    assert (kmm.objective_ - optimum) / abs(optimum) <= 1e-6, (kmm.objective_, optimum)
    w = kmm.weights_
    assert w.min() >= 0 and w.max() <= kmm.B
    assert abs(w.sum() - n) <= n * kmm.eps_ * (1 + 1e-12)
    k_w = np.exp(-cdist(xs, xs, "sqeuclidean") / (2 * kmm.sigma_**2)) @ w  # objective_ is the QP's objective at w
    kappa = n / len(xt) * np.exp(-cdist(xs, xt, "sqeuclidean") / (2 * kmm.sigma_**2)).sum(axis=1)
    assert kmm.objective_ == pytest.approx(0.5 * w @ k_w - kappa @ w, rel=1e-10)


@pytest.mark.parametrize("eps, upper_bound", [(0.0, 1000.0), (0.01, 3.0), (0.2, 2.0)])
def test_active_sum_and_weight_cap_reach_the_exact_optimum(eps, upper_bound):
    xs, xt = shifted(300, 3, seed=4)
    kmm = fit_without_warnings(KMM(eps=eps, B=upper_bound), xs, xt)
    beta, optimum = exact_kmm(xs, xt, kmm.sigma_, upper_bound, eps)
    assert kmm.converged_
    assert (kmm.objective_ - optimum) / abs(optimum) <= 1e-6, (kmm.objective_, optimum)
    w = kmm.weights_
    assert w.min() >= 0 and w.max() <= upper_bound
    assert abs(w.sum() - 300) <= 300 * eps + 1e-9 * 300


def test_iteration_limit_warns_and_reports_it():
    xs, xt = shifted(200, 3, seed=5)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        kmm = KMM(max_iter=2).fit(xs, xt)
    assert not kmm.converged_ and kmm.n_iter_ == 2
    converged = fit_without_warnings(KMM(), xs, xt)  # the defaults converge here: no warning
    assert converged.converged_ and converged.objective_ < kmm.objective_


def test_warm_start_resumes_from_the_fitted_weights():
    xs, xt = shifted(400, 3, seed=6)
    cold = fit_without_warnings(KMM(), xs, xt)
    with pytest.warns(ConvergenceWarning):
        warm = KMM(max_iter=2, warm_start=True).fit(xs, xt)
    warm.set_params(max_iter=1000)
    fit_without_warnings(warm, xs, xt)  # continues from the 2-round weights
    assert warm.converged_
    assert warm.objective_ == pytest.approx(cold.objective_, rel=2e-6)  # both within 1e-6 of the optimum
    again = fit_without_warnings(warm, xs, xt)  # from the optimum: one round confirms it
    assert again.n_iter_ == 1 and again.objective_ == pytest.approx(cold.objective_, rel=1e-12)
    with pytest.raises(ValueError, match="warm_start"):
        KMM(warm_start="yes").fit(xs, xt)


def test_kkt_conditions_hold_on_every_point_at_20000():
    """At n_s = n_t = 20,000 (d = 5) the fitted weights satisfy the optimality conditions the docstring states,
    checked here with a dense product over the support: g_i >= -tau at zero weights, |g_i| <= tau in between."""
    xs, xt = shifted(20_000, 5, seed=0)
    kmm = fit_without_warnings(KMM(), xs, xt)
    w = kmm.weights_
    support = np.flatnonzero(w)
    assert kmm.converged_ and 20 < support.size < 2000
    assert abs(w.sum() - 20_000) <= 20_000 * kmm.eps_
    gamma = 1 / (2 * kmm.sigma_**2)
    kappa = np.concatenate([np.exp(-gamma * cdist(chunk, xt, "sqeuclidean")).sum(axis=1)
                            for chunk in np.array_split(xs, 20)])  # n_s / n_t = 1
    gradient = np.exp(-gamma * cdist(xs, xs[support], "sqeuclidean")) @ w[support] - kappa
    tau = kmm.tol * kappa.max()
    assert gradient[w == 0].min() >= -tau * (1 + 1e-6)
    inside = (w > 0) & (w < kmm.B)
    assert np.abs(gradient[inside]).max() <= tau


def test_torch_input_gives_torch_weights_and_the_same_solution():
    xs, xt = shifted(300, 2, seed=7)
    reference = fit_without_warnings(KMM(), xs, xt)
    model = fit_without_warnings(KMM(), torch.from_numpy(xs), torch.from_numpy(xt))
    assert isinstance(model.weights_, torch.Tensor) and model.weights_.dtype == torch.float64
    assert model.objective_ == pytest.approx(reference.objective_, rel=1e-12)


def test_no_weights_for_new_points():
    """KMM's weights are QP variables at the training source points: no function of x to evaluate elsewhere."""
    assert not hasattr(KMM(), "predict_weights")
    assert "predict_weights" in KMM.__doc__
