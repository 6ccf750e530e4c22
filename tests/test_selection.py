"""tl.selection: IWCV (function and scikit-learn scorer), DEV, SND, prediction entropy and information maximisation."""
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score

import tlkit as tl
from tlkit.selection import (deep_embedded_validation, dev_risk, importance_weighted_scorer, information_maximization,
                             iwcv_score, prediction_entropy, snd_score)


@pytest.fixture
def classification():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int)
    weights = np.exp(X[:, 1])                      # any non-negative weights
    return X, y, weights


# ---------------------------------------------------------------- IWCV
def test_iwcv_score_is_the_hand_computed_weighted_mean():
    y = np.array([0, 1, 1, 0, 1])
    pred = np.array([0, 0, 1, 1, 1])               # errors on samples 1 and 3
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    assert iwcv_score(y, pred, w) == pytest.approx((2.0 + 4.0) / 10.5)
    folds = [np.array([0, 1]), np.array([2, 3, 4])]
    assert iwcv_score(y, pred, w, folds=folds) == pytest.approx(0.5 * (2.0 / 3.0 + 4.0 / 7.5))
    assert iwcv_score(y, pred, np.ones(5), folds=folds) == pytest.approx(0.5 * (1 / 2 + 1 / 3))   # plain CV
    values = np.array([1.0, 2.0, 0.0, -1.0, 3.0])
    assert iwcv_score(values, np.zeros(5), w, loss="squared_error") == pytest.approx(
        (1 + 8 + 0 + 4 + 4.5) / 10.5)
    assert iwcv_score(values, np.zeros(5), w, loss=lambda t, p: np.abs(t - p)) == pytest.approx(
        (1 + 4 + 0 + 4 + 1.5) / 10.5)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
    assert iwcv_score(y, proba, w, loss="log_loss") == pytest.approx(log_loss(y, proba, sample_weight=w))
    assert iwcv_score(np.array(["a", "b"]), proba[:2], [1, 1], loss="log_loss", labels=["a", "b"]) == pytest.approx(
        log_loss([0, 1], proba[:2]))


def test_scorer_inside_grid_search_reproduces_iwcv_score_on_each_fold(classification):
    X, y, weights = classification
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    grid = [0.01, 1.0]
    search = GridSearchCV(LogisticRegression(), {"C": grid}, cv=folds,
                          scoring=importance_weighted_scorer("accuracy", X, weights)).fit(X, y)
    for c, C in enumerate(grid):
        for k, (train, valid) in enumerate(folds):
            model = LogisticRegression(C=C).fit(X[train], y[train])
            expected = 1 - iwcv_score(y[valid], model.predict(X[valid]), weights[valid])
            assert search.cv_results_[f"split{k}_test_score"][c] == pytest.approx(expected, abs=1e-12)
            assert expected == pytest.approx(accuracy_score(y[valid], model.predict(X[valid]),
                                                            sample_weight=weights[valid]))
    # the mean over folds is the IWCV formula (with out-of-fold predictions)
    out_of_fold = np.empty(len(y), dtype=int)
    for train, valid in folds:
        out_of_fold[valid] = LogisticRegression(C=grid[0]).fit(X[train], y[train]).predict(X[valid])
    assert search.cv_results_["mean_test_score"][0] == pytest.approx(
        1 - iwcv_score(y, out_of_fold, weights, folds=[valid for _, valid in folds]))


def test_scorer_log_loss_mse_and_fit_weights_left_alone(classification):
    X, y, weights = classification
    folds = list(KFold(3, shuffle=True, random_state=1).split(X))
    scores = cross_val_score(LogisticRegression(), X, y, cv=folds,
                             scoring=importance_weighted_scorer("neg_log_loss", X, weights))
    for score, (train, valid) in zip(scores, folds):
        model = LogisticRegression().fit(X[train], y[train])
        assert score == pytest.approx(-log_loss(y[valid], model.predict_proba(X[valid]), sample_weight=weights[valid]))
    # the estimator is trained with other weights (params go to fit), the scorer keeps the importance weights
    target = X @ np.array([1.0, -1.0, 0.5])
    fit_weights = weights ** 0.5
    scores = cross_val_score(LinearRegression(), X, target + X[:, 0] ** 2, cv=folds,
                             scoring=importance_weighted_scorer("neg_mean_squared_error", X, weights),
                             params={"sample_weight": fit_weights})
    for score, (train, valid) in zip(scores, folds):
        line = LinearRegression().fit(X[train], (target + X[:, 0] ** 2)[train], sample_weight=fit_weights[train])
        error = (line.predict(X[valid]) - (target + X[:, 0] ** 2)[valid]) ** 2
        assert score == pytest.approx(-np.sum(weights[valid] * error) / np.sum(weights[valid]))


def test_iwcv_bad_input(classification):
    X, y, weights = classification
    with pytest.raises(ValueError, match="weights must have length"):
        iwcv_score(y, y, weights[:-1])
    with pytest.raises(ValueError, match="weights must be non-negative"):
        iwcv_score(y, y, -weights)
    with pytest.raises(ValueError, match="y_true and y_pred must have the same number"):
        iwcv_score(y, y[:-1], weights)
    with pytest.raises(ValueError, match="loss must be one of"):
        iwcv_score(y, y, weights, loss="hinge")
    with pytest.raises(ValueError, match="sum to 1"):
        iwcv_score(y[:2], np.array([[0.5, 0.6], [0.5, 0.5]]), [1, 1], loss="log_loss")
    with pytest.raises(ValueError, match="not among labels"):
        iwcv_score(np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), [1, 1], loss="log_loss")
    with pytest.raises(ValueError, match="sum to 0"):
        iwcv_score(y[:2], y[:2], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"folds\[1\] must be"):
        iwcv_score(y[:3], y[:3], [1, 1, 1], folds=[np.array([0, 1]), np.array([3])])
    with pytest.raises(ValueError, match="one loss per sample"):
        iwcv_score(y, y, weights, loss=lambda t, p: np.zeros(3))
    with pytest.raises(ValueError, match="scoring must be one of"):
        importance_weighted_scorer("f1", X, weights)
    with pytest.raises(ValueError, match="weights must have length"):
        importance_weighted_scorer("accuracy", X, weights[:5])
    with pytest.raises(ValueError, match="identical but have different weights"):
        importance_weighted_scorer("accuracy", np.vstack([X[:2], X[:1]]), [1.0, 2.0, 3.0])
    scorer = importance_weighted_scorer("accuracy", X, weights)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="is not a row of the X"):
        scorer(model, X[:5] + 1.0, y[:5])
    with pytest.raises(ValueError, match="must have 3 features"):
        scorer(model, X[:5, :2], y[:5])


# ---------------------------------------------------------------- DEV
def test_dev_risk_equals_the_formula_on_a_hand_example():
    losses, w = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])
    wl = np.array([0.5, 2.0, 6.0])                                      # mean 17/6
    cov = ((0.5 - 17 / 6) * (0.5 - 7 / 6) + (2 - 17 / 6) * (1 - 7 / 6) + (6 - 17 / 6) * (2 - 7 / 6)) / 2
    var = ((0.5 - 7 / 6) ** 2 + (1 - 7 / 6) ** 2 + (2 - 7 / 6) ** 2) / 2
    eta = -cov / var
    assert dev_risk(losses, w) == pytest.approx(wl.mean() + eta * (7 / 6 - 1))
    assert dev_risk(torch.tensor(losses), torch.tensor(w)) == pytest.approx(dev_risk(losses, w))
    # weights with mean exactly 1: the control variate term vanishes, DEV is the plain IW mean
    assert dev_risk(losses, np.array([0.5, 1.0, 1.5])) == pytest.approx(np.mean([0.5, 2.0, 4.5]))


def test_dev_control_variate_reduces_variance_in_a_simulation():
    # Source N(0, 1), target N(1, 1): true ratio w(x) = exp(x - 1/2), E_s[w] = 1; 0-1 losses with error rate
    # 0.2 for x < 0 and 0.4 for x > 0, so the target risk is 0.2 + 0.2 P_t(x > 0).
    rng = np.random.default_rng(0)
    plain, dev = [], []
    for _ in range(400):
        x = rng.normal(size=100)
        w, loss = np.exp(x - 0.5), (rng.random(100) < 0.2 + 0.2 * (x > 0)).astype(float)
        plain.append(np.mean(w * loss))
        dev.append(dev_risk(loss, w))
    target_risk = 0.2 + 0.2 * 0.5 * math.erfc(-1 / math.sqrt(2))
    ratio = np.var(dev) / np.var(plain)
    # Measured over 400 draws of n = 100, seeds 0-4: variance ratio 0.61-0.70 (0.68 for seed 0), |bias| of both
    # estimators under 0.005 against a sd of 0.08-0.10; asserted with margins.
    assert ratio < 0.8, ratio
    assert abs(np.mean(dev) - target_risk) < 0.02 and abs(np.mean(plain) - target_risk) < 0.02


def test_deep_embedded_validation_with_a_domain_classifier():
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + np.array([1.0, 0.0])
    losses = (zs[:, 0] - 1.0) ** 2                      # small where the target is: the target risk is lower
    risk = deep_embedded_validation(zs, losses, zt)
    assert risk < 0.8 * losses.mean()
    assert risk == pytest.approx(1.0 + 0.0, abs=0.3)    # E_t[(z - 1)^2] = 1
    ratio = tl.instance.ClassifierDensityRatio(random_state=0).fit(zs, zt)
    assert risk == pytest.approx(dev_risk(losses, ratio.weights_))
    assert deep_embedded_validation(torch.tensor(zs), torch.tensor(losses), torch.tensor(zt)) == pytest.approx(risk)


def test_dev_bad_input():
    with pytest.raises(ValueError, match="weights must have length 3"):
        dev_risk([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="weights must be non-negative"):
        dev_risk([1.0, 2.0, 3.0], [1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="constant"):
        dev_risk([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        dev_risk([1.0], [1.0])
    with pytest.raises(ValueError, match="source_features and source_losses"):
        deep_embedded_validation(np.zeros((4, 2)), np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same number of features"):
        deep_embedded_validation(np.zeros((4, 2)), np.zeros(4), np.zeros((4, 3)))


# ---------------------------------------------------------------- scores of target predictions
def snd_by_the_paper(p, tau=0.05):
    """Saito et al. (2021), written out with loops: cosine similarity, softmax over j != i, mean entropy."""
    n = len(p)
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        logits = np.array([unit[i] @ unit[j] / tau for j in others])
        soft = np.exp(logits - logits.max())
        soft /= soft.sum()
        total += -np.sum(soft * np.log(soft))
    return total / n


def test_snd_against_a_direct_numpy_implementation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert snd_score(p) == pytest.approx(snd_by_the_paper(p), rel=1e-10)
    assert snd_score(p, temperature=0.5) == pytest.approx(snd_by_the_paper(p, 0.5), rel=1e-10)
    assert snd_score(torch.tensor(p, dtype=torch.float32)) == pytest.approx(snd_by_the_paper(p), rel=1e-4)
    # identical predictions everywhere: every neighbour equally similar, SND = log(n - 1), its maximum
    assert snd_score(np.tile(p[:1], (10, 1))) == pytest.approx(math.log(9))


def test_entropy_and_information_maximization_extremes():
    one_hot, uniform = np.eye(4)[[0, 1, 2, 3, 1]], np.full((5, 4), 0.25)
    assert prediction_entropy(one_hot) == 0.0
    assert prediction_entropy(uniform) == pytest.approx(math.log(4))
    assert prediction_entropy(torch.tensor(uniform)) == pytest.approx(math.log(4))
    assert information_maximization(uniform) == pytest.approx(0.0, abs=1e-12)
    assert information_maximization(np.eye(4)) == pytest.approx(math.log(4))       # confident and balanced
    assert information_maximization(np.eye(4)[[2, 2, 2]]) == pytest.approx(0.0)    # collapsed onto one class
    p = np.array([[0.7, 0.3], [0.2, 0.8]])
    entropies = -(p * np.log(p)).sum(axis=1)
    mean = p.mean(axis=0)
    assert prediction_entropy(p) == pytest.approx(entropies.mean())
    assert information_maximization(p) == pytest.approx(-(mean * np.log(mean)).sum() - entropies.mean())


@pytest.mark.parametrize("score", [prediction_entropy, information_maximization, snd_score])
def test_prediction_scores_bad_input(score):
    with pytest.raises(ValueError, match="sum to 1"):
        score(np.array([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="sum to 1"):
        score(np.array([[2.0, 1.0], [0.5, 3.0]]))                     # logits, not probabilities
    with pytest.raises(ValueError, match="non-negative"):
        score(np.array([[1.5, -0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="2-D"):
        score(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        score(np.ones((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        score(np.array([[np.nan, 0.5], [0.5, 0.5]]))


def test_snd_bad_input():
    with pytest.raises(ValueError, match="temperature must be"):
        snd_score(np.full((3, 2), 0.5), temperature=0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        snd_score(np.full((1, 2), 0.5))
