"""tlkit.feature (deep): MMD / MK-MMD / CORAL losses against their formulas, and the feature extractor."""
import numpy as np
import pytest
import torch

from tlkit.feature import CORALLoss, FeatureExtractor, MKMMDLoss, MMDLoss
from tlkit.feature.deep import SOURCE_CHECKPOINT, imagenet_cache_file, load_source_checkpoint


def gaussian_gram(a, b, sigma):
    return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2))


def biased_mmd2(x, y, sigmas):
    k = lambda a, b: sum(gaussian_gram(a, b, s) for s in sigmas) / len(sigmas)  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


@pytest.fixture
def samples():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    target = 0.5 + 1.5 * torch.randn(27, 5, generator=generator, dtype=torch.float64)  # n_s != n_t
    return source, target


def test_mmd_loss_equals_formula_and_backpropagates(samples):
    source, target = (t.clone().requires_grad_(True) for t in samples)
    loss = MMDLoss(sigma=1.3)(source, target)
    reference_inputs = [t.detach().clone().requires_grad_(True) for t in samples]
    reference = biased_mmd2(*reference_inputs, [1.3])
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-9)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(source.grad, reference_inputs[0].grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(target.grad, reference_inputs[1].grad, rtol=1e-5, atol=1e-9)


def test_mk_mmd_is_the_mean_kernel_over_a_bandwidth_ladder(samples):
    loss = MKMMDLoss(num_kernels=5, multiplier=2.0, sigma=1.0)
    assert loss.bandwidths(*samples) == [0.25, 0.5, 1.0, 2.0, 4.0]
    torch.testing.assert_close(loss(*samples), biased_mmd2(*samples, [0.25, 0.5, 1.0, 2.0, 4.0]), rtol=1e-6, atol=1e-9)
    # Same distribution: small; shifted: larger.
    source, _ = samples
    assert MKMMDLoss()(source[:20], source[20:]) < MKMMDLoss()(source, source + 2.0)


def test_coral_loss_equals_formula_and_backpropagates(samples):
    source, target = (t.clone().requires_grad_(True) for t in samples)
    loss = CORALLoss()(source, target)
    d = source.shape[1]
    cs = np.cov(samples[0].numpy(), rowvar=False)
    ct = np.cov(samples[1].numpy(), rowvar=False)
    assert loss.item() == pytest.approx(((cs - ct) ** 2).sum() / (4 * d * d), rel=1e-10)
    loss.backward()
    # d/dXs ||Cs - Ct||^2/(4d^2) = (Xs - mean) (Cs - Ct) * 4 / (4 d^2 (n-1)) (Cs symmetric)
    centred = samples[0] - samples[0].mean(0)
    expected = centred @ torch.from_numpy(cs - ct) / (d * d * (len(centred) - 1))
    torch.testing.assert_close(source.grad, expected)
    assert CORALLoss()(samples[0], samples[0]).item() == pytest.approx(0.0, abs=1e-12)


def test_losses_reject_bad_input(samples):
    with pytest.raises(ValueError, match="source and target"):
        MMDLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="source"):
        CORALLoss()(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="estimator"):
        MMDLoss(estimator="nope")
    with pytest.raises(ValueError, match="num_kernels"):
        MKMMDLoss(num_kernels=0)


def test_feature_extractor_uses_cached_imagenet_or_the_shipped_checkpoint(capsys):
    assert SOURCE_CHECKPOINT.is_file() and SOURCE_CHECKPOINT.stat().st_size < 5e6
    extractor = FeatureExtractor("resnet18", layer="avgpool")
    if imagenet_cache_file("resnet18").is_file():
        assert extractor.weights_source == "imagenet" and extractor.out_features == 512
    else:
        assert extractor.weights_source == "source-checkpoint" and extractor.out_features == 128
    assert extractor.message in capsys.readouterr().out
    assert not any(p.requires_grad for p in extractor.parameters())


def test_source_checkpoint_features_transfer_and_batch_of_one_keeps_its_shape():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    extractor = FeatureExtractor("resnet18", weights="source", verbose=False)
    model, meta = load_source_checkpoint()
    assert meta["held_out_accuracy"] > 0.95
    digits = load_digits()
    images = extractor.prepare(digits.images, pixel_max=16)
    assert images.shape == (1797, 1, 8, 8)
    torch.testing.assert_close(extractor.prepare(digits.images / 16), images)  # tlkit.data's [0, 1] is the default
    with pytest.raises(ValueError, match=r"pixel_max.*\[0, 16\]"):
        extractor.prepare(digits.images)  # raw 0..16 pixels with the [0, 1] default: refused, not mis-scaled
    with torch.no_grad():
        features = extractor(images)
        single = extractor(images[:1])
    assert features.shape == (1797, 128) and single.shape == (1, 128)  # the article's .squeeze() gives (128,)
    torch.testing.assert_close(single, features[:1], rtol=1e-4, atol=1e-5)
    # A linear probe with 100 labels on phi(x) beats one on raw pixels, on the 797 images the source CNN never
    # saw (scripts/make_source_checkpoint.py trains on the first 1000 of a permutation seeded with meta["seed"]).
    held_out = np.random.default_rng(meta["seed"]).permutation(1797)[meta["n_train"]:]
    train, test = held_out[:100], held_out[100:]
    probe = lambda z: LogisticRegression(max_iter=2000).fit(z[train], digits.target[train]).score(z[test], digits.target[test])  # noqa: E731
    assert probe(features.numpy()) > probe(digits.images.reshape(1797, -1)) + 0.02


def test_feature_extractor_validates_arguments():
    with pytest.raises(ValueError, match="weights"):
        FeatureExtractor("resnet18", weights="hub")
    with pytest.raises(ValueError, match="layer"):
        FeatureExtractor("resnet18", weights="source", layer="layer9", verbose=False)
    with pytest.raises(TypeError, match="backbone"):
        FeatureExtractor(3)
    extractor = FeatureExtractor("resnet18", weights="source", verbose=False)
    with pytest.raises(ValueError, match="x must be a 4-D"):
        extractor(torch.zeros(3, 64))
