"""The training loop shared by the deep subpackages: ``fit`` -> ``History`` -> ``history.plot()``.

``tl.parameter`` (fine-tuning), ``tl.relational`` (DANN), ``tl.meta`` and ``tl.text`` train through it; it is
re-exported as ``tl.parameter.fit`` / ``evaluate`` / ``make_loader`` / ``History`` for the lessons.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ._validation import check_positive_int

__all__ = ["History", "fit", "evaluate", "make_loader"]


@dataclass
class History:
    """Per-epoch records of a training run: ``history["val_acc"]`` is a list, ``history.plot()`` draws it all.

    ``records`` holds one dict per epoch with ``epoch``, ``train_loss``, ``seconds`` and, when evaluated,
    ``val_loss`` and ``val_acc`` (plus any extra keys a trainer adds, e.g. DANN's ``domain_loss``).
    Used in lessons 07-12.
    """

    records: list[dict] = field(default_factory=list)

    def append(self, record: dict) -> None:
        self.records.append(dict(record))

    def keys(self) -> list[str]:
        return list(dict.fromkeys(key for record in self.records for key in record))

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.keys():
            raise KeyError(f"{key!r} not recorded; available: {self.keys()}")
        return [record.get(key, float("nan")) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict:
        if not self.records:
            raise ValueError("history is empty")
        return self.records[-1]

    def plot(self, axes=None, title: str | None = None):
        """Losses on the left axis, accuracies on the right, against the epoch. Returns the matplotlib axes.

        ``axes``: two matplotlib axes to draw on (default: a new 1×2 figure with constrained layout, which keeps
        ``title``, the figure's suptitle, clear of the panel titles).
        """
        import matplotlib.pyplot as plt

        if not self.records:
            raise ValueError("history is empty: nothing to plot")
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
        if len(axes) != 2:
            raise ValueError(f"axes must be two matplotlib axes (loss, accuracy), got {len(axes)}")
        loss_ax, acc_ax = axes
        epochs = self["epoch"]
        for key in self.keys():
            if key in ("epoch", "seconds"):
                continue
            target = acc_ax if key.endswith("acc") else loss_ax
            target.plot(epochs, self[key], marker="o", markersize=3, label=key)
        loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
        acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        for ax in axes:
            if ax.has_data():
                ax.legend(fontsize="small")
        if title:
            loss_ax.figure.suptitle(title)
        return axes

    def __repr__(self) -> str:
        if not self.records:
            return "History(empty)"
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last.items() if k != "epoch" and isinstance(v, float))
        return f"History({len(self)} epochs; last: {last})"


def make_loader(data, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` from a loader (returned as is) or from arrays ``(X, y, ...)``; shuffling is seeded.

    Floating arrays become float32 tensors, integer labels int64. Used in lessons 07-12.
    """
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)) or len(data) < 1:
        raise TypeError("data must be a DataLoader or a tuple of arrays (X, y, ...)")
    batch_size = check_positive_int(batch_size, "batch_size")
    tensors = []
    for position, array in enumerate(data):
        tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        tensor = tensor.float() if tensor.is_floating_point() else tensor.long()
        if tensors and len(tensor) != len(tensors[0]):
            raise ValueError(f"data[{position}] has {len(tensor)} rows, data[0] has {len(tensors[0])}")
        tensors.append(tensor)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator)


def _logits(output) -> torch.Tensor:
    """Model outputs: a tensor, or a Hugging Face output with ``.logits``."""
    return output.logits if hasattr(output, "logits") else output


def _to(batch, device):
    return [item.to(device) for item in batch]


@torch.no_grad()
def evaluate(model: nn.Module, data, loss_fn: Callable | None = None, device: str | torch.device = "cpu") -> dict:
    r"""Mean loss and accuracy of ``model`` on ``data``: $\frac1n\sum_i \ell(f(x_i), y_i)$ and $\frac1n\sum_i [\arg\max f(x_i) = y_i]$.

    ``data`` is a ``DataLoader`` or ``(X, y)``; every batch is ``(*inputs, y)`` and the model is called as
    ``model(*inputs)``. Returns ``{"loss": float, "acc": float}``. Used in lessons 07-12.
    """
    loader = make_loader(data, batch_size=256, shuffle=False)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in loader:
        *inputs, targets = _to(batch, device)
        logits = _logits(model(*inputs))
        total_loss += loss_fn(logits, targets).item() * len(targets)
        if logits.ndim == 2 and not targets.is_floating_point():
            correct += (logits.argmax(dim=1) == targets).sum().item()
        count += len(targets)
    model.train(was_training)
    result = {"loss": total_loss / count}
    if logits.ndim == 2 and not targets.is_floating_point():
        result["acc"] = correct / count
    return result


def fit(
    model: nn.Module,
    train_data,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable | None = None,
    val_data=None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> History:
    r"""Train ``model`` by minibatch gradient descent on $\frac1{|B|}\sum_{i\in B}\ell(f_\theta(x_i), y_i) + \Omega(\theta)$.

    The whole loop, readable in one screen::

        for epoch in range(epochs):
            for *inputs, y in train_loader:
                loss = loss_fn(model(*inputs), y) + regularizer(model)
                optimizer.zero_grad(); loss.backward(); optimizer.step()
            history.append(evaluate(model, val_data))

    Parameters
    ----------
    model : nn.Module
        Called as ``model(*inputs)``; returns logits ``(B, C)`` (or an object with ``.logits``).
    train_data : DataLoader or tuple ``(X, y)``
        Arrays are wrapped in a seeded, shuffled loader of ``batch_size``.
    epochs : int
    lr : float
        Learning rate of the default ``Adam`` over trainable parameters (ignored if ``optimizer`` is given).
    optimizer : torch.optim.Optimizer, optional
        E.g. ``Adam(param_groups(model, lr))`` for discriminative learning rates.
    loss_fn : callable, optional
        ``loss_fn(logits, y)``; default cross-entropy.
    val_data : DataLoader or tuple, optional
        Evaluated after every epoch (``val_loss``, ``val_acc``).
    regularizer : callable, optional
        $\Omega$: ``regularizer(model) -> 0-dim tensor``, e.g. an ``L2SP``.
    seed : int
        Seeds the shuffling.
    progress : bool
        Show a tqdm progress bar.

    Returns a ``History``. Used in lessons 07-12.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    epochs = check_positive_int(epochs, "epochs")
    loader = make_loader(train_data, batch_size=batch_size, shuffle=True, seed=seed)
    model.to(device)
    if optimizer is None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("model has no trainable parameters (all frozen?)")
        optimizer = torch.optim.Adam(trainable, lr=lr)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    history = History()
    bar = tqdm(total=epochs * len(loader), desc="fit", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        start, total_loss, count = time.perf_counter(), 0.0, 0
        model.train()
        for batch in loader:
            *inputs, targets = _to(batch, device)
            loss = loss_fn(_logits(model(*inputs)), targets)
            if regularizer is not None:
                loss = loss + regularizer(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(targets)
            count += len(targets)
            bar.update()
        record = {"epoch": epoch, "train_loss": total_loss / count}
        if val_data is not None:
            record.update({f"val_{key}": value for key, value in evaluate(model, val_data, loss_fn, device).items()})
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k not in ("epoch", "seconds")})
    bar.close()
    return history
