"""tlkit.text: MiniLM loads offline, mean pooling, the on-disk embedding cache, the §5.2 fine-tuning recipe."""
import pytest
import torch

from tlkit import text


def pang_lee(n_per_class):
    from gensim.test.utils import datapath

    with open(datapath("pang_lee_polarity.cor"), encoding="cp1252", errors="replace") as handle:
        rows = [line.split(" ", 1) for line in handle if line.strip()]
    negative = [t.strip() for label, t in rows if label == "__label__neg"][:n_per_class]
    positive = [t.strip() for label, t in rows if label == "__label__pos"][:n_per_class]
    return negative + positive, [0] * len(negative) + [1] * len(positive)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    return tmp_path / "embeddings"


def test_minilm_loads_offline_as_a_bert():
    tokenizer, model = text.load_minilm("classification", num_labels=2)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == text.EMBEDDING_DIM
    with pytest.raises(ValueError, match="task"):
        text.load_minilm("generation")


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(text.mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_encode_is_cached_and_semantic(cache):
    sentences = ["a wonderful, moving film", "a delightful and touching movie", "the tax rate rose in march"]
    embeddings = text.encode(sentences)
    assert embeddings.shape == (3, text.EMBEDDING_DIM)
    assert len(list(cache.glob("*.pt"))) == 1
    torch.testing.assert_close(text.encode(sentences), embeddings)  # read back from the cache
    torch.testing.assert_close(text.encode(sentences, cache=False)[:1], embeddings[:1], rtol=1e-4, atol=1e-5)
    unit = text.encode(sentences, normalize=True)
    similarity = unit @ unit.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # two film reviews are closer than a review and tax news
    with pytest.raises(TypeError, match="texts"):
        text.encode("one string")


def test_fine_tune_recipe_runs_and_learns(cache):
    """The article's BERT recipe (Adam, lr = 2e-5) on MiniLM: a second epoch over 32 pang_lee sentences has a
    lower training loss than the first (the full 200-sentence demo is timed in the lesson)."""
    texts, labels = pang_lee(16)
    tokenizer, model, history = text.fine_tune(texts, labels, epochs=2, batch_size=16, max_length=24,
                                               val_texts=texts[::4], val_labels=labels[::4], progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert set(history.keys()) >= {"train_loss", "val_loss", "val_acc"}
    with pytest.raises(ValueError, match="labels"):
        text.fine_tune(texts, labels[:-1], progress=False)


def test_fine_tune_discriminative_rates_reach_the_right_layers(cache):
    """backbone_lr_mult = 0: the new head moves and the pretrained encoder stays exactly as loaded."""
    texts, labels = pang_lee(4)
    _, pretrained = text.load_minilm("classification", num_labels=2, seed=0)
    _, model, _ = text.fine_tune(texts, labels, epochs=1, lr=1e-3, backbone_lr_mult=0.0, batch_size=8,
                                 max_length=16, progress=False)
    for name, before in pretrained.bert.state_dict().items():
        torch.testing.assert_close(model.bert.state_dict()[name], before, rtol=0, atol=0, msg=name)
    assert not torch.equal(model.classifier.weight, pretrained.classifier.weight)
    with pytest.raises(ValueError, match="backbone_lr_mult"):
        text.fine_tune(texts, labels, backbone_lr_mult=-1.0, progress=False)
