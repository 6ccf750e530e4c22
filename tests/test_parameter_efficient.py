"""tlkit.parameter.efficient: LoRA through peft (frozen base, B = 0 start, merge, hand counts), layer-wise
learning-rate decay against its formula, LP-FT's phase 1 against the probe, and the bad-input contract."""
import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from transformers import BertConfig, BertModel

from tlkit.parameter import count_parameters, head_inputs, layerwise_lr_groups, lora, lp_ft, set_head_from_probe
from tlkit.text import MeanPoolingClassifier

HIDDEN, LAYERS, VOCAB = 32, 3, 50


def tiny_classifier(num_labels=2, seed=0):
    """A 3-layer, 32-d BERT (random weights) under MeanPoolingClassifier's head: MiniLM's structure, small."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return MeanPoolingClassifier(BertModel(config, add_pooling_layer=False), num_labels=num_labels, seed=seed)


def batch(n=12, length=7, num_labels=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=generator)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[: n // 2, length - 2:] = 0  # some padding
    return ids, mask, torch.arange(n) % num_labels


def train_steps(model, data, steps, lr=1e-2):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids, mask, y = data
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(ids, mask), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# ---------------------------------------------------------------- LoRA
def test_lora_starts_at_the_base_model_and_trains_only_adapters_and_head():
    base = tiny_classifier()
    ids, mask, y = data = batch()
    with torch.no_grad():
        expected = base(ids, mask)
    frozen_before = {n: p.detach().clone() for n, p in base.named_parameters() if not n.startswith("head")}
    model = lora(copy.deepcopy(base), r=4, alpha=8)
    with torch.no_grad():  # B = 0 at the start: the wrapped model computes the base model's function
        torch.testing.assert_close(model(ids, mask), expected, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    train_steps(model, data, steps=2)
    for name, param in model.named_parameters():
        if "lora_" in name:  # step 1 moves B (A's gradient is B^T(...) = 0); step 2 moves A too
            assert not torch.equal(param, lora_before[name]), name
    # Every pretrained weight is bitwise unchanged (base_layer holds W_0 of each adapted matrix).
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name or "modules_to_save" in name or name.startswith("head"):
            continue
        original = name.replace(".base_layer", "")
        assert not param.requires_grad and torch.equal(param, frozen_before[original]), name


def test_lora_merge_equals_the_unmerged_forward_and_the_update_formula():
    ids, mask, y = data = batch()
    model = train_steps(lora(tiny_classifier(), r=4, alpha=8, target_modules=("query", "value")), data, steps=3)
    query = model.get_base_model().encoder.encoder.layer[0].attention.self.query
    A, B = query.lora_A["default"].weight, query.lora_B["default"].weight
    expected_weight = query.base_layer.weight + (8 / 4) * B @ A  # W0 + (alpha / r) B A
    with torch.no_grad():
        unmerged = model(ids, mask)
        merged_model = model.merge_and_unload()
        torch.testing.assert_close(merged_model(ids, mask), unmerged, rtol=0, atol=1e-5)
    merged_query = merged_model.encoder.encoder.layer[0].attention.self.query
    assert isinstance(merged_query, nn.Linear)
    torch.testing.assert_close(merged_query.weight, expected_weight.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("r, targets", [(4, ("query", "value")), (2, ("query", "key", "value"))])
def test_lora_trainable_count_equals_the_hand_count(r, targets):
    model = lora(tiny_classifier(), r=r, alpha=16, target_modules=targets)
    head = HIDDEN * 2 + 2
    trainable, total = count_parameters(model)
    assert trainable == LAYERS * len(targets) * 2 * r * HIDDEN + head  # 2 r d per adapted d x d matrix
    base_total = count_parameters(tiny_classifier())[1]
    assert total == base_total + trainable  # adapters + the trainable copy of the head beside the frozen original
    assert count_parameters(lora(tiny_classifier(), r=r, target_modules=targets, head=None))[0] == trainable - head


def test_count_parameters_counts_shared_and_frozen_tensors_once():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.Linear(3, 2), shared)
    net[1].weight.requires_grad_(False)
    assert count_parameters(net) == (12 + 2, 12 + 8)
    with pytest.raises(TypeError, match="model"):
        count_parameters("model")


def test_lora_bad_input():
    with pytest.raises(ValueError, match="r must be"):
        lora(tiny_classifier(), r=0)
    with pytest.raises(TypeError, match="r must be"):
        lora(tiny_classifier(), r=2.5)
    with pytest.raises(ValueError, match="alpha"):
        lora(tiny_classifier(), alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        lora(tiny_classifier(), dropout=1.0)
    with pytest.raises(TypeError, match="target_modules"):
        lora(tiny_classifier(), target_modules="query")
    with pytest.raises(ValueError, match="'nope'"):
        lora(tiny_classifier(), target_modules=("query", "nope"))
    with pytest.raises(ValueError, match="head='classifier'"):
        lora(tiny_classifier(), head="classifier")
    with pytest.raises(TypeError, match="nn.Linear"):
        lora(tiny_classifier(), head="encoder")


# ---------------------------------------------------------------- layer-wise learning-rate decay
def test_layerwise_groups_follow_the_formula():
    model = tiny_classifier()
    lr, decay = 1e-3, 0.5
    groups = layerwise_lr_groups(model, lr=lr, decay=decay)
    assert [g["name"] for g in groups] == ["embeddings", "layer 1", "layer 2", "layer 3", "head"]
    for group in groups:  # eta_l = eta * decay^(L + 1 - l)
        assert group["lr"] == pytest.approx(lr * decay ** (LAYERS + 1 - group["depth"]))
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(groups[0]["params"]) == ids(model.encoder.embeddings.parameters())
    for layer in range(LAYERS):
        assert ids(groups[layer + 1]["params"]) == ids(model.encoder.encoder.layer[layer].parameters())
    assert ids(groups[-1]["params"]) == ids(model.head.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups)  # a valid optimiser argument
    assert {g["lr"] for g in layerwise_lr_groups(model, lr=lr, decay=1.0)} == {lr}
    model.encoder.embeddings.requires_grad_(False)  # frozen parameters are left out
    assert layerwise_lr_groups(model, lr=lr)[0]["name"] == "layer 1"


def test_layerwise_groups_on_the_huggingface_classifier_put_the_pooler_at_the_top_layer():
    from transformers import BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    model = BertForSequenceClassification(config)
    groups = {g["name"]: g for g in layerwise_lr_groups(model, lr=1.0, decay=0.5, head="classifier")}
    pooler = {id(p) for p in model.bert.pooler.parameters()}
    assert pooler <= {id(p) for p in groups["layer 2"]["params"]} and groups["head"]["lr"] == 1.0
    assert groups["embeddings"]["lr"] == pytest.approx(0.5 ** 3)


def test_layerwise_groups_bad_input():
    model = tiny_classifier()
    for decay in (0.0, 1.5):
        with pytest.raises(ValueError, match="decay"):
            layerwise_lr_groups(model, lr=1e-3, decay=decay)
    with pytest.raises(ValueError, match="lr"):
        layerwise_lr_groups(model, lr=0.0)
    with pytest.raises(ValueError, match="head='nope'"):
        layerwise_lr_groups(model, lr=1e-3, head="nope")
    with pytest.raises(ValueError, match="ModuleList"):
        layerwise_lr_groups(model, lr=1e-3, layers="head")
    with pytest.raises(ValueError, match="ModuleList"):
        layerwise_lr_groups(nn.Sequential(nn.Linear(2, 2)), lr=1e-3, head="0")
    with pytest.raises(TypeError, match="model"):
        layerwise_lr_groups(None, lr=1e-3)


# ---------------------------------------------------------------- LP-FT
def test_head_inputs_are_the_mean_pooled_states():
    model = tiny_classifier()
    ids, mask, y = data = batch()
    features, labels = head_inputs(model, data)
    with torch.no_grad():
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, y) and model.training  # the model's mode is restored


@pytest.mark.parametrize("num_labels", [2, 3])
def test_head_from_probe_computes_the_probe(num_labels):
    model = tiny_classifier(num_labels=num_labels)
    data = batch(n=30, num_labels=num_labels)
    features, labels = head_inputs(model, data)
    probe = LogisticRegression(C=10.0, max_iter=5000).fit(features.double().numpy(), labels.numpy())
    set_head_from_probe(model, probe)
    with torch.no_grad():
        logits = model.head(features).double()
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probe.predict_proba(features.double().numpy()),
                               atol=1e-5)
    if num_labels == 2:
        np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).numpy(),
                                   probe.decision_function(features.double().numpy()), atol=1e-4)


def test_lp_ft_phase_one_is_the_probe_and_phase_two_trains_everything():
    data = batch(n=24)
    model = tiny_classifier()
    features, labels = head_inputs(model, data)
    zero_rate = torch.optim.SGD(model.parameters(), lr=0.0)  # phase 2 that moves nothing: the head is the probe
    probe, history = lp_ft(model, data, C=2.0, epochs=1, optimizer=zero_rate, progress=False)
    reference = LogisticRegression(C=2.0, max_iter=5000).fit(features.double().numpy(), labels.numpy())
    np.testing.assert_allclose(probe.coef_, reference.coef_, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(model.head.weight[1] - model.head.weight[0],
                               torch.as_tensor(reference.coef_[0], dtype=torch.float32), rtol=1e-5, atol=1e-6)
    assert len(history) == 1
    before = copy.deepcopy(model.state_dict())
    probe_again, _ = lp_ft(model, data, probe=probe, epochs=2, lr=1e-2, progress=False)  # a given probe is reused
    assert probe_again is probe
    moved = [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])]
    assert any(n.startswith("encoder.") for n in moved) and "head.weight" in moved
    cached = lp_ft(tiny_classifier(), data, features=(features, labels), C=2.0, epochs=1, lr=0.0,
                   progress=False)[0]  # cached features give the same probe
    np.testing.assert_allclose(cached.coef_, reference.coef_, rtol=1e-6, atol=1e-8)


def test_lp_ft_bad_input():
    data = batch()
    model = tiny_classifier()
    with pytest.raises(TypeError, match="probe must be a fitted"):
        lp_ft(model, data, probe=LogisticRegression(), progress=False)
    with pytest.raises(TypeError, match="features must be a pair"):
        lp_ft(model, data, features=np.zeros((12, HIDDEN)), progress=False)
    with pytest.raises(ValueError, match="features must be"):
        lp_ft(model, data, features=(np.zeros((12, HIDDEN)), np.zeros(5)), progress=False)
    with pytest.raises(ValueError, match="C must be"):
        lp_ft(model, data, C=-1.0, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        lp_ft(model, data, epochs=0, progress=False)
    with pytest.raises(TypeError, match="nn.Linear"):
        lp_ft(model, data, head="encoder", progress=False)
    three_class = LogisticRegression().fit(np.random.default_rng(0).normal(size=(9, HIDDEN)), np.arange(9) % 3)
    with pytest.raises(ValueError, match="nn.Linear"):
        set_head_from_probe(model, three_class)
    shifted = LogisticRegression().fit(np.random.default_rng(0).normal(size=(8, HIDDEN)), np.arange(8) % 2 + 1)
    with pytest.raises(ValueError, match="classes_"):
        set_head_from_probe(model, shifted)
