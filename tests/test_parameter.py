"""tlkit.parameter: freezing, discriminative learning rates, the L2-SP penalty and its gradient, the training loop
(tlkit.training, re-exported)."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch
from torch import nn

from tlkit.parameter import L2SP, History, evaluate, fit, freeze, param_groups, unfreeze


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def test_freeze_up_to_and_unfreeze_from():
    net = small_net()
    frozen = freeze(net, up_to="2")
    assert frozen == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [p.requires_grad for p in net.parameters()] == [False, False, False, False, True, True]
    unfreeze(net, start_at="2")
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True, True, True]
    freeze(net)
    assert not any(p.requires_grad for p in net.parameters())
    unfreeze(net)
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="up_to"):
        freeze(net, up_to="nope")
    unfreeze(net)
    assert freeze(net, up_to=np.int64(1)) == ["0.weight", "0.bias"]  # a count of blocks, any integer type
    with pytest.raises(ValueError, match=r"up_to must be an integer in \[0, 3\], got 5"):
        freeze(net, up_to=5)
    with pytest.raises(TypeError, match="model"):
        freeze("not a model")


def test_param_groups_scale_backbone_learning_rate():
    net = small_net()
    groups = param_groups(net, lr=1e-2, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-2)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net[4].parameters()}
    assert len(groups[0]["params"]) == 4
    freeze(net, up_to="0")
    assert len(param_groups(net, lr=1e-2)[0]["params"]) == 2  # frozen parameters are left out
    with pytest.raises(ValueError, match="lr"):
        param_groups(net, lr=-1)


def test_l2sp_value_and_gradient_match_the_formula():
    source = small_net(seed=0)
    target = small_net(seed=1)
    target[4] = nn.Linear(8, 5)  # a new head: not in the source state (shape differs)
    alpha, beta = 0.3, 0.05
    penalty = L2SP(source.state_dict(), alpha=alpha, beta=beta)
    shared, new = penalty.split(target)
    assert new == ["4.weight", "4.bias"] and len(shared) == 4
    value = penalty(target)
    reference = sum(0.5 * alpha * (dict(target.named_parameters())[n] - source.state_dict()[n]).pow(2).sum()
                    for n in shared) + sum(0.5 * beta * dict(target.named_parameters())[n].pow(2).sum() for n in new)
    torch.testing.assert_close(value, reference)
    value.backward()
    for name, param in target.named_parameters():
        expected = alpha * (param - source.state_dict()[name]) if name in shared else beta * param
        torch.testing.assert_close(param.grad, expected.detach())
    # At the source weights the shared part vanishes.
    assert L2SP(source, alpha=1.0, beta=0.0)(source).item() == 0.0
    with pytest.raises(ValueError, match="alpha"):
        L2SP(source.state_dict(), alpha=-1)


def test_fit_learns_and_records_history():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = x[:, :3].argmax(axis=1)  # three linearly separable classes
    net = small_net()
    before = evaluate(net, (x, y))["acc"]
    history = fit(net, (x[:200], y[:200]), epochs=15, lr=1e-2, val_data=(x[200:], y[200:]), progress=False)
    assert isinstance(history, History) and len(history) == 15
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_acc"][-1] > max(before, 0.75)  # chance is 1/3
    axes = history.plot(title="run 1")
    assert len(axes) == 2 and axes[1].has_data()
    figure = axes[0].figure
    assert figure.get_suptitle() == "run 1" and [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    figure.canvas.draw()  # constrained layout keeps the suptitle above the panel titles
    renderer = figure.canvas.get_renderer()
    suptitle_bottom = figure._suptitle.get_window_extent(renderer).y0
    assert all(suptitle_bottom >= ax.title.get_window_extent(renderer).y1 for ax in axes)
    with pytest.raises(ValueError, match="axes must be two"):
        history.plot(axes=axes[:1])
    with pytest.raises(ValueError, match="epochs"):
        fit(net, (x, y), epochs=0)


def test_the_training_loop_is_shared_and_re_exported():
    import tlkit.parameter
    import tlkit.relational.adversarial
    import tlkit.training

    assert tlkit.parameter.fit is tlkit.training.fit and tlkit.parameter.History is tlkit.training.History
    assert tlkit.relational.adversarial.evaluate is tlkit.training.evaluate
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        fit(small_net(), (np.zeros((4, 4)), np.zeros(4, dtype=int)), epochs=0, progress=False)
    history = fit(small_net(), (np.zeros((4, 4), dtype=np.float32), np.zeros(4, dtype=int)), epochs=np.int64(1),
                  batch_size=np.int64(2), progress=False)
    assert len(history) == 1


def test_fit_is_seeded():
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    losses = [fit(small_net(), (x, y), epochs=2, seed=3, progress=False)["train_loss"] for _ in range(2)]
    assert losses[0] == losses[1]


def test_fit_with_l2sp_stays_closer_to_the_source():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=100)
    source = small_net()
    distances = []
    for regularizer in (None, L2SP(source.state_dict(), alpha=1.0, beta=0.0)):
        net = small_net()
        fit(net, (x, y), epochs=10, lr=1e-2, regularizer=regularizer, progress=False)
        distances.append(sum((p - q).pow(2).sum().item() for p, q in zip(net.parameters(), source.parameters())))
    assert distances[1] < distances[0]
