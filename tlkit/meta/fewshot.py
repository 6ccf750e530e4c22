"""Few-shot tasks, MAML (Finn et al. 2017) and prototypical networks (Snell et al. 2017)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .._validation import check_1d, check_2d, check_random_state, check_same_length, to_tensor
from ..kernels import nearest


@dataclass
class Task:
    """One N-way K-shot episode: ``support_x`` (N*K, d), ``support_y`` (N*K,), ``query_x`` (N*Q, d), ``query_y``.

    Labels are relabelled 0..N-1; ``classes`` holds the original class of each new label.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: tuple


def split_classes(x, y, held_out: Sequence[int]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split ``(x, y)`` by class: ``(meta_train, meta_test)``, the latter holding only the ``held_out`` classes.

    Meta-testing on classes never seen in meta-training is what makes it few-shot *transfer*. Used in lesson 12.
    """
    y = np.asarray(y)
    test_mask = np.isin(y, np.asarray(list(held_out)))
    if not test_mask.any() or test_mask.all():
        raise ValueError(f"held_out={list(held_out)} must name some, but not all, classes of y")
    x = np.asarray(x)
    return (x[~test_mask], y[~test_mask]), (x[test_mask], y[test_mask])


class TaskSampler:
    r"""Draws N-way K-shot episodes from offline data: N classes, K support and Q query examples each.

    $\mathcal T = (S, Q)$, $S = \{(x_i, y_i)\}_{i=1}^{NK}$, $Q = \{(x_j, y_j)\}_{j=1}^{NQ}$, classes drawn
    uniformly without replacement, examples without replacement within a class. Seeded: the same ``seed`` gives
    the same episodes. Iterate (``for task in sampler.sample(100)``) or call ``sampler.task()``.
    Used in lesson 12.
    """

    def __init__(self, x, y, n_way: int = 5, k_shot: int = 1, n_query: int = 15, seed: int = 0):
        self.x = check_2d(to_tensor(x, "x", dtype=torch.float32), "x")
        labels = np.asarray(y)
        check_1d(labels, "y")
        check_same_length(self.x, labels, ("x", "y"))
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.classes = np.unique(labels)
        if n_way > len(self.classes):
            raise ValueError(f"n_way={n_way} exceeds the {len(self.classes)} classes in y")
        self.indices = {c: np.flatnonzero(labels == c) for c in self.classes}
        smallest = min(len(index) for index in self.indices.values())
        if k_shot + n_query > smallest:
            raise ValueError(f"k_shot + n_query = {k_shot + n_query} exceeds the {smallest} examples of the "
                             "smallest class")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.rng = check_random_state(seed)

    def task(self) -> Task:
        chosen = self.rng.choice(self.classes, size=self.n_way, replace=False)
        support, query = [], []
        for c in chosen:
            picked = self.rng.choice(self.indices[c], size=self.k_shot + self.n_query, replace=False)
            support.append(picked[: self.k_shot])
            query.append(picked[self.k_shot:])
        support_index = torch.from_numpy(np.concatenate(support))
        query_index = torch.from_numpy(np.concatenate(query))
        return Task(self.x[support_index], torch.arange(self.n_way).repeat_interleave(self.k_shot),
                    self.x[query_index], torch.arange(self.n_way).repeat_interleave(self.n_query),
                    tuple(int(c) for c in chosen))

    def sample(self, n_tasks: int) -> list[Task]:
        return [self.task() for _ in range(n_tasks)]


def nearest_neighbour_accuracy(task: Task) -> float:
    r"""Baseline: label each query by its nearest support example, $\hat y_j = y_{\arg\min_i \|x_j - x_i\|}$."""
    index = nearest(task.query_x, task.support_x)[1]
    return float((task.support_y[index] == task.query_y).float().mean())


class ConvEncoder(nn.Module):
    r"""Two 3×3 conv blocks and a 2×2 max-pool on square one-channel images: ``(n, side*side) -> (n, 32 (side/2)^2)``.

    The convolutional bias (local, translation-equivariant features) is what lets an embedding learned on the
    meta-training classes carry over to unseen classes; an MLP on pixels overfits the training classes.
    Used in lesson 12.
    """

    def __init__(self, side: int = 8, channels: int = 32):
        super().__init__()
        self.side = side
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, self.side, self.side))


class MAML:
    r"""Model-agnostic meta-learning (Finn et al. 2017), second-order or first-order.

    Inner loop (per task, $s$ steps on the support set): $\theta' = \theta - \alpha\nabla_\theta\mathcal L_S(\theta)$.
    Outer loop (over a batch of tasks): $\theta \leftarrow \theta - \beta\,\nabla_\theta\sum_{\mathcal T}\mathcal L_Q(\theta'_{\mathcal T})$,
    whose gradient through one inner step is $(I - \alpha\nabla^2_\theta\mathcal L_S(\theta))\,\nabla\mathcal L_Q(\theta')$.
    ``first_order=True`` (FOMAML) drops the Hessian term: the meta-gradient is $\nabla\mathcal L_Q(\theta')$.

    Parameters
    ----------
    model : nn.Module
        Maps ``(n, d)`` inputs to predictions; its parameters are $\theta$.
    inner_lr : float
        $\alpha$.
    inner_steps : int
        $s$.
    first_order : bool
    loss_fn : callable
        ``loss_fn(predictions, targets)``; default cross-entropy.

    The model runs in whatever train/eval mode it is in. BatchNorm layers (e.g. in :class:`ConvEncoder`) then
    normalise each support and query set by its own batch statistics in train mode — as in Finn et al.'s code —
    but by running averages pooled over all meta-training tasks in eval mode; keep such a model in train mode for
    :meth:`accuracy` as well.

    Used in lesson 12.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1, first_order: bool = False,
                 loss_fn: Callable | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(inner_lr, (int, float)) or inner_lr <= 0:
            raise ValueError(f"inner_lr must be a positive number, got {inner_lr!r}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be a positive int, got {inner_steps!r}")
        self.model, self.inner_lr, self.inner_steps = model, float(inner_lr), inner_steps
        self.first_order = bool(first_order)
        self.loss_fn = nn.functional.cross_entropy if loss_fn is None else loss_fn

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, create_graph: bool | None = None) -> dict:
        """The adapted parameters $\\theta'$ (a name → tensor dict) after the inner steps on the support set."""
        create_graph = (not self.first_order) if create_graph is None else create_graph
        params = dict(self.model.named_parameters())
        for _ in range(self.inner_steps):
            loss = self.loss_fn(functional_call(self.model, params, (support_x,)), support_y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {name: value - self.inner_lr * (grad if create_graph else grad.detach())
                      for (name, value), grad in zip(params.items(), grads)}
        return params

    def query_loss(self, task: Task) -> torch.Tensor:
        r"""$\mathcal L_Q(\theta')$ for one task; differentiable w.r.t. $\theta$ (to first or second order)."""
        params = self.adapt(task.support_x, task.support_y)
        return self.loss_fn(functional_call(self.model, params, (task.query_x,)), task.query_y)

    def meta_step(self, tasks: Iterable[Task], optimizer: torch.optim.Optimizer) -> float:
        """One outer update on the mean query loss of ``tasks``; returns that loss."""
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks is empty")
        optimizer.zero_grad()
        loss = torch.stack([self.query_loss(task) for task in tasks]).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    def fit(self, sampler: TaskSampler, steps: int = 300, meta_batch: int = 4, meta_lr: float = 1e-3,
            progress: bool = True) -> list[float]:
        """Meta-train for ``steps`` outer updates (Adam, ``meta_lr``) on batches of ``meta_batch`` tasks."""
        from tqdm.auto import tqdm

        optimizer = torch.optim.Adam(self.model.parameters(), lr=meta_lr)
        losses = []
        for _ in tqdm(range(steps), desc="MAML", disable=not progress, leave=False):
            losses.append(self.meta_step(sampler.sample(meta_batch), optimizer))
        return losses

    def accuracy(self, task: Task) -> float:
        """Query accuracy after adapting to the support set (no meta-update)."""
        params = self.adapt(task.support_x, task.support_y, create_graph=False)
        with torch.no_grad():
            predictions = functional_call(self.model, params, (task.query_x,)).argmax(dim=1)
        return float((predictions == task.query_y).float().mean())


class ProtoNet(nn.Module):
    r"""Prototypical network (Snell et al. 2017): classify queries by distance to class means of embeddings.

    $$c_k = \frac{1}{|S_k|}\sum_{(x_i, y_i) \in S_k} f_\phi(x_i), \qquad
      p(y = k \mid x) = \frac{\exp(-\|f_\phi(x) - c_k\|^2)}{\sum_{k'}\exp(-\|f_\phi(x) - c_{k'}\|^2)}$$

    ``forward(support_x, support_y, query_x)`` returns logits $-\|f_\phi(x) - c_k\|^2$, shape (n_query, N).
    Used in lesson 12.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n_way = int(support_y.max()) + 1
        support, query = self.encoder(support_x), self.encoder(query_x)
        one_hot = nn.functional.one_hot(support_y, n_way).to(support.dtype)
        prototypes = (one_hot.T @ support) / one_hot.sum(dim=0)[:, None]
        return -torch.cdist(query, prototypes).pow(2)

    def fit(self, sampler: TaskSampler, steps: int = 300, lr: float = 1e-3, progress: bool = True) -> list[float]:
        """Episodic training: one task per step, cross-entropy of the query logits, Adam."""
        from tqdm.auto import tqdm

        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        self.train()
        for _ in tqdm(range(steps), desc="ProtoNet", disable=not progress, leave=False):
            task = sampler.task()
            loss = nn.functional.cross_entropy(self(task.support_x, task.support_y, task.query_x), task.query_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    @torch.no_grad()
    def accuracy(self, task: Task) -> float:
        was_training = self.training
        self.eval()
        predictions = self(task.support_x, task.support_y, task.query_x).argmax(dim=1)
        self.train(was_training)
        return float((predictions == task.query_y).float().mean())
