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


def test_mean_pooling_classifier_is_the_probe_features_plus_a_head(cache):
    """Its head sees exactly encode()'s embedding; dropping all-padding positions changes nothing."""
    sentences = ["a wonderful, moving film", "dull ."]
    tokenizer, model = text.load_minilm("mean_pooling", num_labels=3, seed=1)
    assert type(model).__name__ == "MeanPoolingClassifier" and model.head.out_features == 3
    short = tokenizer(sentences, padding=True, return_tensors="pt")
    long = tokenizer(sentences, padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():
        logits = model(short["input_ids"], short["attention_mask"])
        torch.testing.assert_close(model(long["input_ids"], long["attention_mask"]), logits, rtol=1e-4, atol=1e-5)
        expected = model.head(text.encode(sentences, cache=False))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    _, same_seed = text.load_minilm("mean_pooling", num_labels=3, seed=1)
    assert torch.equal(same_seed.head.weight, model.head.weight)
    with pytest.raises(ValueError, match="attention_mask"):
        model(short["input_ids"], short["attention_mask"][:, :-1])


def test_length_grouped_sampler_covers_every_index_with_similar_lengths():
    lengths = torch.randint(3, 60, (103,), generator=torch.Generator().manual_seed(0))
    sampler = text.LengthGroupedSampler(lengths, batch_size=8, seed=0)
    epochs = [list(sampler), list(sampler)]
    for batches in epochs:
        assert len(batches) == len(sampler) == 13
        assert sorted(i for batch in batches for i in batch) == list(range(103))
    assert epochs[0] != epochs[1]                                    # a new order each epoch
    spread = sum(lengths[b].max() - lengths[b].min() for b in epochs[0][:-1]) / 12
    random_spread = sum(lengths[torch.arange(i, i + 8)].max() - lengths[torch.arange(i, i + 8)].min()
                        for i in range(0, 96, 8)) / 12
    assert spread < random_spread / 2, (spread, random_spread)      # grouped batches are much more uniform
    assert list(text.LengthGroupedSampler(lengths, 8, seed=0)) == epochs[0]   # seeded
    with pytest.raises(ValueError, match="batch_size"):
        text.LengthGroupedSampler(lengths, 0)
    with pytest.raises(ValueError, match="lengths"):
        text.LengthGroupedSampler(torch.rand(5), 2)
