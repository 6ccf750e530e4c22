"""tlkit.relational.CDAN: the multilinear conditioning, the entropy-weighted loss, and adaptation on rotated moons."""
import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn

from tlkit.parameter import evaluate, fit
from tlkit.relational import CDAN, DomainDiscriminator
from test_relational import rotate  # the DANN test's rotation (tests/ is on sys.path under pytest)


def networks(seed, features=16, classes=2, randomized_dim=None):
    torch.manual_seed(seed)
    extractor = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, features), nn.ReLU())
    return extractor, nn.Linear(features, classes), DomainDiscriminator(randomized_dim or features * classes)


def test_the_multilinear_map_is_the_flattened_outer_product():
    cdan = CDAN(*networks(0))
    f, g = torch.randn(5, 16, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    expected = torch.stack([torch.outer(f[i], g[i]).flatten() for i in range(5)])
    assert torch.equal(cdan.conditioning(f, g), expected)


def test_the_randomised_map_preserves_inner_products_in_expectation():
    """Long et al. 2018: E[<T(f,g), T(f',g')>] = <f,f'><g,g'> for Gaussian R_f, R_g. One draw at r = 20,000: the
    squared norm's relative sd is sqrt(8/r) = 2 %, an inner product's sd at most |f||f'||g||g'|·sqrt(8/r); both
    asserted within 5 sd (10 %)."""
    cdan = CDAN(*networks(0, randomized_dim=20_000), randomized_dim=20_000)
    generator = torch.Generator().manual_seed(1)
    f, g = torch.randn(2, 16, generator=generator), torch.rand(2, 2, generator=generator)
    mapped = cdan.conditioning(f, g)
    assert mapped.shape == (2, 20_000)
    for i, j in ((0, 0), (1, 1), (0, 1)):
        exact = (f[i] @ f[j]) * (g[i] @ g[j])
        scale = f[i].norm() * f[j].norm() * g[i].norm() * g[j].norm()
        assert float(abs(mapped[i] @ mapped[j] - exact) / scale) < 0.10
    assert torch.equal(cdan.conditioning(f, g), mapped)  # the random matrices are drawn once and kept


def test_the_loss_is_the_entropy_weighted_domain_loss():
    cdan = CDAN(*networks(0))
    generator = torch.Generator().manual_seed(0)
    xs, xt = torch.randn(6, 2, generator=generator), torch.randn(4, 2, generator=generator)
    ys = torch.tensor([0, 1, 0, 1, 1, 0])
    total, parts = cdan.loss(xs, ys, xt, progress=0.5)
    features = cdan.feature_extractor(torch.cat([xs, xt]))
    logits = cdan.classifier(features)
    g = logits.softmax(1)
    entropy = -(g * g.log()).sum(1)
    w = 1 + torch.exp(-entropy)
    d = cdan.discriminator(torch.einsum("nd,nc->ndc", features, g).reshape(10, -1))
    labels = torch.tensor([1.0] * 6 + [0.0] * 4)
    bce = nn.functional.binary_cross_entropy_with_logits(d, labels, reduction="none")
    expected_domain = 0.5 * (w[:6] * bce[:6]).sum() / w[:6].sum() + 0.5 * (w[6:] * bce[6:]).sum() / w[6:].sum()
    expected = nn.functional.cross_entropy(logits[:6], ys) + expected_domain
    assert parts["domain_loss"] == pytest.approx(expected_domain.item(), rel=1e-5)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_the_classifier_only_through_the_class_loss():
    """g = softmax(G_y(f)) enters the discriminator without a gradient (as in the paper's code): with the source
    labels' loss removed, the classifier head gets no gradient at all, while the features get the reversed one."""
    cdan = CDAN(*networks(0))
    xs, xt = torch.randn(8, 2), torch.randn(8, 2)
    cdan.loss(xs, torch.zeros(8, dtype=torch.long), xt, progress=1.0)[0].backward()
    with_class = cdan.classifier.weight.grad.clone()
    cdan.zero_grad()
    _, parts = cdan.loss(xs, torch.zeros(8, dtype=torch.long), xt, progress=1.0)
    domain_only = CDAN.loss(cdan, xs, torch.zeros(8, dtype=torch.long), xt, 1.0)[0] - \
        nn.functional.cross_entropy(cdan(xs), torch.zeros(8, dtype=torch.long))
    domain_only.backward()
    assert torch.allclose(cdan.classifier.weight.grad, torch.zeros_like(with_class), atol=1e-7)
    assert cdan.feature_extractor[0].weight.grad.abs().sum() > 0


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="discriminator must take 32 inputs"):
        extractor, head, _ = networks(0)
        CDAN(extractor, head, DomainDiscriminator(16)).loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long),
                                                          torch.randn(4, 2), progress=0.0)
    with pytest.raises(ValueError, match="randomized_dim"):
        CDAN(*networks(0), randomized_dim=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.usefixtures("one_thread")
def test_cdan_raises_target_accuracy_on_rotated_moons(seed):
    """Two moons, target rotated by 25°: CDAN+E beats source-only training of the same network. Measured over seeds
    0-4: gains 0.077-0.194 (DANN 0.060-0.227); at 35° and 45° CDAN's gain on this two-class toy is not reliable
    (from -0.05 to +0.21), which is why the claim is made at 25° and with a margin of 0.03."""
    x_source, y_source = make_moons(300, noise=0.1, random_state=seed)
    x_target, y_target = make_moons(300, noise=0.1, random_state=seed + 100)
    x_source, x_target = x_source.astype(np.float32), rotate(x_target, 25)
    extractor, head, _ = networks(seed, features=32)
    source_only = nn.Sequential(extractor, head)
    fit(source_only, (x_source, y_source), epochs=100, lr=5e-3, seed=seed, progress=False)
    cdan = CDAN(*networks(seed, features=32))
    history = cdan.fit(x_source, y_source, x_target, epochs=100, lr=5e-3, seed=seed, progress=False,
                       val_data=(x_target, y_target))
    assert evaluate(cdan, (x_source, y_source))["acc"] > 0.95
    assert history.last["val_acc"] >= evaluate(source_only, (x_target, y_target))["acc"] + 0.03
