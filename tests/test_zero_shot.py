"""tlkit.text.ZeroShotClassifier: decisions against a hand-computed argmax with a stub encoder, few-shot prototypes
and their mix with descriptions, real MiniLM on obvious sentences, and the bad-input contract."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tlkit.text import ZeroShotClassifier

VECTORS = {  # a deterministic stub encoder: each text has a fixed 3-d vector
    "good": [1.0, 0.2, 0.0], "great": [2.0, 0.0, 0.5], "bad": [0.0, 1.0, 0.1], "awful": [0.3, 3.0, 0.0],
    "fine film": [0.9, 0.5, 0.3], "poor film": [0.4, 0.9, 0.0], "odd film": [0.5, 0.5, 1.0],
}


def stub(texts):
    return np.array([VECTORS[t] for t in texts])


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


DESCRIPTIONS = {"pos": ["good", "great"], "neg": "bad"}
QUERIES = ["fine film", "poor film", "odd film"]


def test_zero_shot_decisions_equal_the_hand_computed_argmax():
    model = ZeroShotClassifier(DESCRIPTIONS, encoder=stub)
    t_pos = unit(unit(VECTORS["good"]) + unit(VECTORS["great"]))  # prompts averaged as unit vectors
    t_neg = unit(VECTORS["bad"])
    scores = unit(stub(QUERIES)) @ np.stack([t_pos, t_neg]).T
    np.testing.assert_allclose(model.decision_function(QUERIES), scores, atol=1e-12)
    np.testing.assert_array_equal(model.predict(QUERIES), np.array(["pos", "neg", "pos"]))
    assert list(model.classes_) == ["pos", "neg"]
    np.testing.assert_array_equal(model.predict(stub(QUERIES)), model.predict(QUERIES))  # embeddings accepted
    probabilities = model.predict_proba(QUERIES)
    expected = np.exp(scores / 0.05) / np.exp(scores / 0.05).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-10)
    tensor_scores = model.decision_function(torch.as_tensor(stub(QUERIES)))
    assert isinstance(tensor_scores, torch.Tensor) and tensor_scores.shape == (3, 2)


def test_prototypes_and_their_mix_with_descriptions():
    train, y = ["good", "great", "bad", "awful"], ["pos", "pos", "neg", "neg"]
    mu = np.stack([unit(unit(VECTORS["good"]) + unit(VECTORS["great"])),
                   unit(unit(VECTORS["bad"]) + unit(VECTORS["awful"]))])
    prototypes = ZeroShotClassifier(encoder=stub).fit(train, y)  # no descriptions: classes sorted from y
    assert list(prototypes.classes_) == ["neg", "pos"]
    np.testing.assert_allclose(prototypes.prototypes_, mu[::-1], atol=1e-12)
    np.testing.assert_array_equal(prototypes.predict(QUERIES),
                                  prototypes.classes_[(unit(stub(QUERIES)) @ mu[::-1].T).argmax(1)])
    lam = 0.3
    mixed = ZeroShotClassifier(DESCRIPTIONS, description_weight=lam, encoder=stub).fit(train, y)
    t = ZeroShotClassifier(DESCRIPTIONS, encoder=stub)
    t.predict(QUERIES)
    np.testing.assert_allclose(mixed.prototypes_, unit((1 - lam) * mu + lam * t.description_embeddings_),
                               atol=1e-12)
    pure = ZeroShotClassifier(DESCRIPTIONS, description_weight=1.0, encoder=stub).fit(train[:2], y[:2])
    np.testing.assert_allclose(pure.prototypes_, t.description_embeddings_, atol=1e-12)  # lambda = 1: zero-shot
    assert clone(mixed).get_params()["description_weight"] == lam


def test_real_minilm_zero_shot_on_obvious_sentences(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    model = ZeroShotClassifier({
        "sport": ["a sentence about sports", "a football match"],
        "food": ["a sentence about food", "cooking a meal"],
        "weather": ["a sentence about the weather", "rain and wind"],
    })
    sentences = ["the striker scored twice in the second half", "bake the bread for forty minutes",
                 "heavy rain and strong winds are expected tomorrow", "the goalkeeper saved a penalty",
                 "add salt and pepper to the soup"]
    assert model.predict(sentences).tolist() == ["sport", "food", "weather", "sport", "food"]


def test_bad_input():
    with pytest.raises(NotFittedError, match="label_descriptions"):
        ZeroShotClassifier(encoder=stub).predict(QUERIES)
    with pytest.raises(ValueError, match="at least two labels"):
        ZeroShotClassifier({"pos": "good"}, encoder=stub).predict(QUERIES)
    with pytest.raises(ValueError, match=r"label_descriptions\['neg'\]"):
        ZeroShotClassifier({"pos": "good", "neg": []}, encoder=stub).predict(QUERIES)
    model = ZeroShotClassifier(DESCRIPTIONS, encoder=stub)
    with pytest.raises(TypeError, match="got a str"):
        model.predict("fine film")
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="4 features, the prototypes 3"):
        model.predict(np.ones((2, 4)))
    with pytest.raises(TypeError, match="mixes"):
        model.predict(["fine film", 3])
    with pytest.raises(ValueError, match="length zero"):
        model.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="y must be 1-D"):
        model.fit(["good", "bad"], ["pos"])
    with pytest.raises(ValueError, match="same labels"):
        model.fit(["good", "bad"], ["pos", "other"])
    with pytest.raises(ValueError, match="description_weight"):
        ZeroShotClassifier(DESCRIPTIONS, description_weight=1.5, encoder=stub).fit(["good", "bad"], ["pos", "neg"])
    with pytest.raises(ValueError, match="temperature"):
        ZeroShotClassifier(DESCRIPTIONS, temperature=0.0, encoder=stub).predict_proba(QUERIES)
    with pytest.raises(ValueError, match="two classes"):
        ZeroShotClassifier(encoder=stub).fit(["good", "great"], ["pos", "pos"])
    with pytest.raises(ValueError, match="encoder must return"):
        ZeroShotClassifier(DESCRIPTIONS, encoder=lambda texts: np.ones(3)).predict(QUERIES)
    with pytest.raises(TypeError, match="encoder must be callable"):
        ZeroShotClassifier(DESCRIPTIONS, encoder="minilm").predict(QUERIES)
