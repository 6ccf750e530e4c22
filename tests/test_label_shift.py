"""Label shift: BBSE, RLLS and EM recover known target priors within their sampling error; the corrected classifier
beats the uncorrected one on the shifted target; RLLS against an exact SOCP solve (cvxopt); the bad-input contract."""
import warnings

import numpy as np
import pytest
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import log_loss

from tlkit.instance import LabelShiftAdapter, bbse, confusion_matrix, em_priors, rlls, rlls_regularization

MEANS = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 2.5]])
SOURCE_PRIORS = np.full(3, 1 / 3)
TARGET_PRIORS = np.array([0.6, 0.3, 0.1])


def gaussian_classes(n, priors, rng):
    """Three unit-variance Gaussian classes in 2-D: p(x | y) fixed, so any change of priors is a pure label shift."""
    y = rng.choice(3, size=n, p=priors)
    return MEANS[y] + rng.normal(size=(n, 2)), y


@pytest.fixture(scope="module")
def shift():
    rng = np.random.default_rng(0)
    Xs, ys = gaussian_classes(2000, SOURCE_PRIORS, rng)
    Xt, yt = gaussian_classes(2000, TARGET_PRIORS, rng)
    return Xs, ys, Xt, yt


@pytest.fixture(scope="module")
def adapters(shift):
    Xs, ys, Xt, _ = shift
    return {method: LabelShiftAdapter(method=method, random_state=0).fit(Xs, ys).adapt(Xt)
            for method in ("bbse", "rlls", "em")}


def bbse_standard_error(confusion, mu, n_source, n_target):
    """Delta-method s.e. of BBSE's q_j = p_j w_j: the target's multinomial noise Cov(mu) = (diag mu - mu mu')/m through
    p ⊙ C^{-1}, inflated by sqrt(1 + m/n) for the source confusion matrix's own noise (the same order for n ≈ m)."""
    inverse = np.diag(confusion.sum(axis=0)) @ np.linalg.inv(confusion)
    covariance = inverse @ (np.diag(mu) - np.outer(mu, mu)) @ inverse.T / n_target
    return np.sqrt(np.diag(covariance) * (1 + n_target / n_source))


def test_confusion_matrix_is_sklearns_transposed_and_normalised():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = sk_confusion_matrix(y_true, y_pred, labels=range(4)).T / 50
    np.testing.assert_allclose(confusion_matrix(y_true, y_pred, 4), expected)


def test_bbse_inverts_an_exact_confusion_matrix():
    conditional = np.array([[0.8, 0.1, 0.2], [0.1, 0.7, 0.1], [0.1, 0.2, 0.7]])  # P(ŷ = i | y = j), columns sum to 1
    confusion = conditional * SOURCE_PRIORS
    estimate = bbse(confusion, confusion @ (TARGET_PRIORS / SOURCE_PRIORS))
    np.testing.assert_allclose(estimate.target_priors, TARGET_PRIORS, atol=1e-12)
    np.testing.assert_allclose(estimate.weights, TARGET_PRIORS / SOURCE_PRIORS, atol=1e-12)


def test_bbse_clips_negative_weights_and_renormalises():
    confusion = np.diag([0.5, 0.5])
    estimate = bbse(confusion, [1.0, 0.0])
    np.testing.assert_allclose(estimate.target_priors, [1.0, 0.0])
    confusion = np.array([[0.4, 0.2], [0.1, 0.3]])  # mu outside C's image of the simplex: w_2 = -0.4 clipped
    estimate = bbse(confusion, [0.62, 0.38])
    assert (estimate.weights >= 0).all() and estimate.target_priors.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["bbse", "rlls", "em"])
def test_recovers_known_target_priors_within_sampling_error(shift, adapters, method):
    """Within 4 delta-method standard errors (4 s.e. = 0.092 / 0.076 / 0.058 here, 2000 source and 2000 target
    samples; over 20 draws the measured sd of BBSE's estimate was 0.022 / 0.019 / 0.012, so the formula holds). EM,
    the maximum-likelihood estimate, is at least as efficient (measured sd 0.019 / 0.017 / 0.009): the same bound.
    Measured errors on this draw: BBSE and RLLS 0.005 / 0.011 / 0.005, EM 0.016 / 0.004 / 0.012."""
    Xs, ys, Xt, yt = shift
    adapter = adapters[method]
    reference = adapters["bbse"]
    mu = np.bincount(reference.estimator_.predict(Xt), minlength=3) / len(Xt)
    tolerance = 4 * bbse_standard_error(reference.confusion_, mu, len(Xs), len(Xt))
    error = np.abs(adapter.target_priors_ - TARGET_PRIORS)
    assert (error < tolerance).all(), (method, error, tolerance)
    np.testing.assert_allclose(adapter.weights_, adapter.target_priors_ / adapter.source_priors_)


def test_em_is_the_maximum_likelihood_prior():
    """EM's fixed point maximises the target log-likelihood sum_k log sum_y (q_y / p_y) p(y | x_k) over the simplex."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(300, 3)) + np.array([1.0, 0.0, -0.5])
    posteriors = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p = np.array([0.5, 0.3, 0.2])
    estimate = em_priors(posteriors, p, tol=1e-12, max_iter=100000)

    def negative_log_likelihood(z):
        q = np.exp(z) / np.exp(z).sum()
        return -np.log(posteriors @ (q / p)).sum()

    result = scipy.optimize.minimize(negative_log_likelihood, np.zeros(3), method="Nelder-Mead",
                                     options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000})
    brute = np.exp(result.x) / np.exp(result.x).sum()
    np.testing.assert_allclose(estimate.target_priors, brute, atol=1e-5)
    assert estimate.n_iter > 1


def test_em_warns_at_max_iter():
    rng = np.random.default_rng(3)
    posteriors = rng.dirichlet(np.ones(3), size=100)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        estimate = em_priors(posteriors, SOURCE_PRIORS, tol=1e-12, max_iter=2)
    assert estimate.n_iter == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        em_priors(posteriors, SOURCE_PRIORS, tol=1e-6, max_iter=10000)


@pytest.mark.parametrize("method", ["bbse", "rlls", "em"])
def test_correction_beats_the_uncorrected_classifier(shift, adapters, method):
    """On the shifted target (0.6 / 0.3 / 0.1 against uniform source priors): higher accuracy and lower log-loss.
    Measured: accuracy 0.851 uncorrected, 0.884-0.885 corrected; log-loss 0.380 against 0.297-0.298."""
    _, _, Xt, yt = shift
    adapter = adapters[method]
    source_proba = adapter.estimator_.predict_proba(Xt)
    corrected = adapter.predict_proba(Xt)
    assert adapter.score(Xt, yt) > (source_proba.argmax(axis=1) == yt).mean() + 0.015
    assert log_loss(yt, corrected) < log_loss(yt, source_proba) - 0.04
    np.testing.assert_allclose(corrected.sum(axis=1), 1.0)


def test_adapter_before_adapt_is_the_source_classifier(shift):
    Xs, ys, Xt, _ = shift
    adapter = LabelShiftAdapter(method="em").fit(Xs, ys)
    np.testing.assert_allclose(adapter.predict_proba(Xt), LogisticRegression(max_iter=1000).fit(Xs, ys).predict_proba(Xt),
                               atol=1e-6)
    np.testing.assert_array_equal(adapter.weights_, np.ones(3))


def test_adapter_keeps_string_labels():
    rng = np.random.default_rng(4)
    X, y = gaussian_classes(300, SOURCE_PRIORS, rng)
    names = np.array(["cat", "dog", "owl"])
    adapter = LabelShiftAdapter(method="bbse", random_state=0).fit(X, names[y]).adapt(X)
    assert set(adapter.predict(X)) <= set(names)
    np.testing.assert_array_equal(adapter.classes_, names)


def exact_rlls(confusion, mu, rho):
    """min ||C θ - b|| + ρ ||θ|| s.t. θ >= -1 as a second-order cone programme, solved by cvxopt's interior point."""
    cvxopt = pytest.importorskip("cvxopt")
    K = len(confusion)
    b = mu - confusion.sum(axis=1)
    c = np.r_[np.zeros(K), 1.0, rho]  # x = (θ, s, t): minimise s + ρ t
    linear_G = np.hstack([-np.eye(K), np.zeros((K, 2))])  # -θ <= 1
    residual_cone = -np.vstack([np.r_[np.zeros(K), 1.0, 0.0], np.hstack([confusion, np.zeros((K, 2))])])
    norm_cone = -np.vstack([np.r_[np.zeros(K), 0.0, 1.0], np.hstack([np.eye(K), np.zeros((K, 2))])])
    matrix = cvxopt.matrix
    saved = dict(cvxopt.solvers.options)
    cvxopt.solvers.options.update({"show_progress": False, "abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10,
                                   "maxiters": 200})
    try:
        solution = cvxopt.solvers.socp(matrix(c), Gl=matrix(linear_G), hl=matrix(np.ones(K)),
                                       Gq=[matrix(residual_cone), matrix(norm_cone)],
                                       hq=[matrix(np.r_[0.0, -b]), matrix(np.zeros(K + 1))])
    finally:
        cvxopt.solvers.options.clear()
        cvxopt.solvers.options.update(saved)
    assert solution["status"] == "optimal"
    theta = np.array(solution["x"]).ravel()[:K]
    return theta, np.linalg.norm(confusion @ theta - b) + rho * np.linalg.norm(theta)


@pytest.mark.parametrize("rho", [0.002, 0.02, 0.1])
def test_rlls_matches_an_exact_socp_solve(rho):
    rng = np.random.default_rng(5)
    conditional = np.array([[0.9, 0.05, 0.05], [0.05, 0.5, 0.45], [0.05, 0.45, 0.5]])
    counts = rng.multinomial(300, (conditional * SOURCE_PRIORS).ravel()).reshape(3, 3)
    confusion = counts / counts.sum()
    mu = rng.multinomial(300, conditional @ TARGET_PRIORS) / 300
    theta, _ = exact_rlls(confusion, mu, rho)  # interior point to 1e-10; measured difference up to 1.7e-6
    estimate = rlls(confusion, mu, n_source=300, regularization=rho)
    weights = 1 + theta
    expected = weights * confusion.sum(axis=0) / (weights @ confusion.sum(axis=0))
    np.testing.assert_allclose(estimate.target_priors, expected, atol=1e-5)


def test_rlls_limits():
    conditional = np.array([[0.8, 0.1, 0.2], [0.1, 0.7, 0.1], [0.1, 0.2, 0.7]])
    confusion = conditional * SOURCE_PRIORS
    mu = confusion @ (TARGET_PRIORS / SOURCE_PRIORS)
    np.testing.assert_allclose(rlls(confusion, mu, 100, regularization=0.0).target_priors, TARGET_PRIORS, atol=1e-6)
    np.testing.assert_allclose(rlls(confusion, mu, 100, regularization=10.0).target_priors, SOURCE_PRIORS, atol=1e-6)
    log_term = np.log(2 * 3 / 0.05)
    assert rlls_regularization(3, 100) == pytest.approx(2 * log_term / 300 + np.sqrt(2 * log_term / 100))


def test_rlls_is_stable_where_bbse_is_not():
    """Classes 1 and 2 nearly indistinguishable (P(ŷ | y) columns 0.5/0.45 and 0.45/0.5): C is ill-conditioned and
    BBSE's weights swing with the sampling noise of 300 source and 300 target samples; RLLS's stay near 1 + θ.
    Measured over 200 draws: mean squared weight error 0.60 (BBSE, worst 3.78) against 0.25 (RLLS, α = 0.01,
    worst 0.87)."""
    rng = np.random.default_rng(6)
    conditional = np.array([[0.9, 0.05, 0.05], [0.05, 0.5, 0.45], [0.05, 0.45, 0.5]])
    true_weights = TARGET_PRIORS / SOURCE_PRIORS
    errors = {"bbse": [], "rlls": []}
    for _ in range(200):
        counts = rng.multinomial(300, (conditional * SOURCE_PRIORS).ravel()).reshape(3, 3)
        confusion = counts / counts.sum()
        mu = rng.multinomial(300, conditional @ TARGET_PRIORS) / 300
        errors["bbse"].append(np.mean((bbse(confusion, mu).weights - true_weights) ** 2))
        errors["rlls"].append(np.mean((rlls(confusion, mu, n_source=300).weights - true_weights) ** 2))
    assert np.isfinite(errors["rlls"]).all()
    assert np.mean(errors["rlls"]) < 0.5 * np.mean(errors["bbse"])
    assert np.max(errors["rlls"]) < np.max(errors["bbse"])


# ---------------------------------------------------------------- the bad-input contract
CONFUSION = np.diag([0.5, 0.5])


@pytest.mark.parametrize("confusion, mu, error, match", [
    (np.ones((2, 3)) / 6, [0.5, 0.5], ValueError, "confusion must be square"),
    (np.ones(4) / 4, [0.5, 0.5], ValueError, "confusion must be 2-D"),
    (np.array([[0.6, 0.0], [0.0, 0.6]]), [0.5, 0.5], ValueError, "confusion must sum to 1"),
    (np.array([[1.2, 0.0], [0.0, -0.2]]), [0.5, 0.5], ValueError, "confusion must be non-negative"),
    (np.array([[0.5, 0.0], [0.5, 0.0]]), [0.5, 0.5], ValueError, "all-zero column"),
    (CONFUSION, [0.5, 0.3, 0.2], ValueError, "target_prediction_mean must have length 2"),
    (CONFUSION, [0.6, 0.6], ValueError, "target_prediction_mean must sum to 1"),
    (CONFUSION, [1.5, -0.5], ValueError, "target_prediction_mean must be non-negative"),
    (CONFUSION, [[0.5, 0.5]], ValueError, "target_prediction_mean must be 1-D"),
    (CONFUSION, [np.nan, 0.5], ValueError, "NaN"),
])
@pytest.mark.parametrize("estimator", ["bbse", "rlls"])
def test_bbse_and_rlls_bad_input(confusion, mu, error, match, estimator):
    with pytest.raises(error, match=match):
        bbse(confusion, mu) if estimator == "bbse" else rlls(confusion, mu, n_source=100)


def test_rlls_bad_parameters():
    for kwargs, match in (({"n_source": 0}, "n_source"), ({"n_source": 10, "alpha": -1.0}, "alpha"),
                          ({"n_source": 10, "delta": 1.0}, "delta"), ({"n_source": 10, "regularization": -0.1},
                                                                      "regularization")):
        with pytest.raises(ValueError, match=match):
            rlls(CONFUSION, [0.5, 0.5], **kwargs)


@pytest.mark.parametrize("posteriors, priors, kwargs, match", [
    (np.full((4, 2), 0.5), [0.5, 0.3, 0.2], {}, "one column per class"),
    (np.full((4, 2), 0.5), [0.7, 0.7], {}, "source_priors must sum to 1"),
    (np.full((4, 2), 0.5), [1.0, 0.0], {}, "source_priors must be positive"),
    (np.array([[1.5, -0.5]] * 4), [0.5, 0.5], {}, "posteriors must be non-negative"),
    (np.full((4, 2), 0.4), [0.5, 0.5], {}, "rows must sum to 1"),
    (np.full(4, 0.5), [0.5, 0.5], {}, "posteriors must be 2-D"),
    (np.full((4, 2), 0.5), [0.5, 0.5], {"max_iter": 0}, "max_iter"),
    (np.full((4, 2), 0.5), [0.5, 0.5], {"tol": 0.0}, "tol"),
])
def test_em_bad_input(posteriors, priors, kwargs, match):
    with pytest.raises(ValueError, match=match):
        em_priors(posteriors, priors, **kwargs)


def test_confusion_matrix_bad_input():
    with pytest.raises(ValueError, match="y_pred must have length 3"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="y_true must hold integer labels in 0..1"):
        confusion_matrix([0, 2, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match="n_classes"):
        confusion_matrix([0], [0], 0)


def test_adapter_bad_input(shift):
    Xs, ys, Xt, _ = shift
    with pytest.raises(ValueError, match="method must be one of"):
        LabelShiftAdapter(method="oracle").fit(Xs, ys)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        LabelShiftAdapter(cv=1).fit(Xs, ys)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LabelShiftAdapter().fit(Xs, np.zeros(len(Xs)))
    with pytest.raises(ValueError, match="y must have length"):
        LabelShiftAdapter().fit(Xs, ys[:-1])
    with pytest.raises(TypeError, match="predict_proba"):
        LabelShiftAdapter(estimator=object()).fit(Xs, ys)
    adapter = LabelShiftAdapter(method="em").fit(Xs, ys)
    with pytest.raises(ValueError, match="X_target must have 2 features"):
        adapter.adapt(np.ones((5, 3)))
    with pytest.raises(ValueError, match="X_target must be 2-D"):
        adapter.adapt(np.ones(5))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        LabelShiftAdapter().adapt(Xt)
