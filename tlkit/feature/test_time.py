"""Test-time adaptation of a trained network with BatchNorm, from unlabelled target data alone (no source data).

- :class:`AdaBN` (Li et al. 2016): re-estimate every BatchNorm layer's running statistics on the target.
- :class:`TENT` (Wang et al. 2021): minimise the prediction entropy over target batches, updating only the BatchNorm
  affine parameters, with batch statistics.
- :func:`softmax_entropy`: the entropy TENT minimises.

Both wrap the model **in place** (as the papers' reference code does) and keep a copy of its state for ``reset()``;
wrap a ``copy.deepcopy(model)`` to keep the original untouched. Used in lesson 14.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_choice, check_positive, check_positive_int

__all__ = ["AdaBN", "TENT", "softmax_entropy"]

OPTIMIZERS = ("adam", "sgd")


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    r"""Entropy of the softmax prediction of each row, $H(\hat y) = -\sum_{c=1}^{K} p_c \log p_c$, $p = \operatorname{softmax}(z)$.

    ``logits`` (N, K) → (N,), differentiable (computed as $-\sum_c p_c \log\operatorname{softmax}(z)_c$, stable for
    large logits). Used in lesson 14.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D torch tensor (N, K), got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def _batchnorm_layers(model, name: str = "model") -> list[nn.modules.batchnorm._BatchNorm]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        raise ValueError(f"{name} has no BatchNorm layer (nn.BatchNorm1d/2d/3d): test-time adaptation by AdaBN or "
                         "TENT acts on BatchNorm statistics and parameters")
    return layers


def _batches(data, batch_size: int | None) -> Iterable[torch.Tensor]:
    """Input batches from a tensor (split in order into the fewest near-equal batches of at most ``batch_size`` rows,
    so no last batch of a few rows: an entropy step on 2 samples is mostly noise; ``None``: one batch) or an iterable
    of tensors or of tuples whose first element is the input (a DataLoader over ``(x, y)``)."""
    if isinstance(data, torch.Tensor):
        if data.dim() < 2 or len(data) == 0:
            raise ValueError(f"data must be a tensor of shape (N, ...) with N >= 1, got shape {tuple(data.shape)}")
        if batch_size is None:
            return [data]
        return list(data.tensor_split(math.ceil(len(data) / check_positive_int(batch_size, "batch_size"))))
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise TypeError(f"data must be a torch tensor (N, ...) or an iterable of batches (a DataLoader), got "
                        f"{type(data).__name__}")
    return (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data)


def _to_model(x, model: nn.Module) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"each batch must be a torch tensor, got {type(x).__name__}")
    reference = next(iter(model.parameters()), None)
    return x if reference is None else x.to(device=reference.device, dtype=reference.dtype)


class AdaBN(nn.Module):
    r"""Adaptive batch normalisation (Li, Wang, Shi, Hou & Liu 2016): target statistics in every BatchNorm layer.

    A BatchNorm layer computes $y = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta$ per channel; at test
    time $\mu, \sigma^2$ are the running statistics of the *source*. AdaBN replaces them by the target's,

    $$\mu_t = \frac{1}{m}\sum_{j=1}^{m} x_j^t, \qquad \sigma_t^2 = \frac{1}{m - 1}\sum_{j=1}^{m} (x_j^t - \mu_t)^2,$$

    the layer's inputs over the target sample (channels of every pixel for 2-D BatchNorm), each layer seeing the
    outputs of the layers before it already normalised with target statistics. No weight changes and no source data.

    ``adapt(data)``: ``data`` a tensor (N, ...) — one batch by default, so the statistics are exact — or an iterable
    of batches, whose statistics are averaged (PyTorch's cumulative ``momentum=None``: the mean of the batch means and
    of the batch variances). Only the BatchNorm layers run in train mode during ``adapt`` (dropout stays off); the
    model is left in eval mode. ``forward(x)`` is the adapted model in eval mode; ``reset()`` restores the original
    running statistics. Wraps ``model`` in place. Used in lesson 14.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layers = _batchnorm_layers(model)
        if not all(layer.track_running_stats for layer in self.layers):
            raise ValueError("model has BatchNorm layers with track_running_stats=False: AdaBN re-estimates running "
                             "statistics, which those layers do not keep")
        self.model = model
        self._original = copy.deepcopy(model.state_dict())

    @torch.no_grad()
    def adapt(self, data, batch_size: int | None = None) -> "AdaBN":
        """Re-estimate every BatchNorm layer's running mean and variance on the target ``data``; returns ``self``."""
        momenta = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the batches
        self.model.eval()
        for layer in self.layers:
            layer.train()
        count = 0
        try:
            for x in _batches(data, batch_size):
                self.model(_to_model(x, self.model))
                count += 1
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
            self.model.eval()
        if count == 0:
            self.reset()
            raise ValueError("data must hold at least one batch, got an empty iterable")
        return self

    def reset(self) -> "AdaBN":
        """Restore the model's original (source) state; returns ``self``."""
        self.model.load_state_dict(self._original)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class TENT(nn.Module):
    r"""Test entropy minimisation (Wang, Shelhamer, Liu, Olshausen & Darrell 2021): adapt on each target batch, then predict.

    For a target batch $x_1, \dots, x_B$ with predictions $p_j = \operatorname{softmax}(f_\theta(x_j))$, each step
    minimises the mean prediction entropy

    $$\mathcal L(\gamma, \beta) = \frac{1}{B}\sum_{j=1}^{B} H(p_j), \qquad H(p) = -\sum_{c=1}^{K} p_c \log p_c,$$

    over the BatchNorm affine parameters $(\gamma, \beta)$ **only**; every other parameter is frozen, and the BatchNorm
    layers normalise with the *batch* statistics of the target batch (running statistics are neither used nor updated).
    ``steps`` gradient steps per batch with Adam (``lr``, betas (0.9, 0.999), as the paper's default) or SGD
    (``momentum``); the paper uses ``steps=1``, Adam at lr 1e-3 on CIFAR, SGD at 2.5e-4 with momentum 0.9 on ImageNet.

    ``forward(x)`` (N, ...) → logits (N, K): adapts on ``x`` (``steps`` updates) and returns the logits computed
    before the last update, as the reference code does (online: each batch is predicted once). ``adapt(data)`` runs
    ``forward`` over the batches of ``data`` (a tensor split in order into ``batch_size`` rows, or an iterable of
    batches) and returns ``self``. To score without updating, call ``tent.model(x)`` under ``torch.no_grad()``
    (still with batch statistics). ``reset()`` restores the model's parameters and the optimizer's state (the paper's
    episodic reset). ``episodic=True`` resets before every batch.

    The model is configured in place: BatchNorm layers in train mode with ``track_running_stats=False`` (the rest in
    eval mode, so dropout stays off; identical to the paper's ``model.train()`` for BatchNorm-only networks), and
    ``requires_grad`` True only for BatchNorm weights and biases. A model without affine BatchNorm is an error.
    Used in lesson 14.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, steps: int = 1, optimizer: str = "adam",
                 momentum: float = 0.9, episodic: bool = False):
        super().__init__()
        self.layers = _batchnorm_layers(model)
        if not any(layer.affine for layer in self.layers):
            raise ValueError("model has no BatchNorm layer with affine=True: TENT updates the BatchNorm weights and "
                             "biases")
        self.lr = check_positive(lr, "lr")
        self.steps = check_positive_int(steps, "steps")
        self.optimizer_name = check_choice(optimizer, "optimizer", OPTIMIZERS)
        self.momentum = check_positive(momentum, "momentum", allow_zero=True)
        if not isinstance(episodic, bool):
            raise TypeError(f"episodic must be a bool, got {type(episodic).__name__}")
        self.episodic = episodic
        self.model = model
        self._original = copy.deepcopy(model.state_dict())
        model.requires_grad_(False)
        params = []
        for layer in self.layers:
            layer.track_running_stats = False  # normalise with batch statistics, never touch the running ones
            if layer.affine:
                layer.weight.requires_grad_(True)
                layer.bias.requires_grad_(True)
                params += [layer.weight, layer.bias]
        self._configure_modes()
        if self.optimizer_name == "adam":
            self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        self._optimizer_state = copy.deepcopy(self.optimizer.state_dict())

    def _configure_modes(self) -> None:
        self.model.eval()
        for layer in self.layers:
            layer.train()

    def train(self, mode: bool = True) -> "TENT":
        """TENT's modes are fixed (BatchNorm in train mode, the rest in eval mode); ``train``/``eval`` keep them."""
        self.training = mode
        self._configure_modes()
        return self

    def reset(self) -> "TENT":
        """Restore the original parameters and the optimizer's initial state; returns ``self``."""
        self.model.load_state_dict(self._original)
        self.optimizer.load_state_dict(self._optimizer_state)
        return self

    @torch.enable_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.episodic:
            self.reset()
        x = _to_model(x, self.model)
        for _ in range(self.steps):
            logits = self.model(x)
            loss = softmax_entropy(logits).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return logits.detach()

    def adapt(self, data, batch_size: int | None = 128, progress: bool = False) -> "TENT":
        """Run ``forward`` (adapt, then predict) over the target batches of ``data``; returns ``self``."""
        batches = _batches(data, batch_size)
        count = 0
        for x in tqdm(batches, desc="TENT", disable=not progress, leave=False):
            self(x)
            count += 1
        if count == 0:
            raise ValueError("data must hold at least one batch, got an empty iterable")
        return self
