"""Transfer with pretrained models on a budget: LP-FT, layer-wise learning-rate decay, LoRA (through ``peft``)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._validation import check_in_range, check_positive, check_positive_int
from .freezing import _check_module


def count_parameters(model: nn.Module) -> tuple[int, int]:
    r"""``(trainable, total)``: $\sum_{p:\ \text{requires\_grad}} |p|$ and $\sum_p |p|$ over ``model.parameters()``.

    Shared tensors are counted once. For a ``peft`` model the total includes the adapter weights and the
    trainable copy of the head that ``modules_to_save`` keeps beside the frozen original. Used in lesson 16.
    """
    model = _check_module(model)
    trainable = total = 0
    for param in model.parameters():  # parameters() yields each shared tensor once
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def _submodule(model: nn.Module, name: str, argument: str, what: str) -> nn.Module:
    """The submodule a dotted-name argument names; errors name the argument."""
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be the dotted name of {what}, got {type(name).__name__}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{argument}={name!r} is not a submodule of the model") from None


def _layer_stack(model: nn.Module, layers: str | None, head: str) -> tuple[str, nn.ModuleList]:
    if layers is not None:
        stack = _submodule(model, layers, "layers", "an nn.ModuleList")
        if not isinstance(stack, nn.ModuleList) or len(stack) == 0:
            raise ValueError(f"layers={layers!r} must name a non-empty nn.ModuleList, got {type(stack).__name__}")
        return layers, stack
    candidates = [(sum(p.numel() for p in module.parameters()), name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) > 0 and not _inside(name, head)]
    if not candidates:
        raise ValueError("model has no nn.ModuleList of layers; pass layers='dotted.name' of the layer stack")
    _, name, stack = max(candidates, key=lambda c: c[0])
    return name, stack


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layerwise_lr_groups(model: nn.Module, lr: float, decay: float = 0.8, head: str = "head",
                        layers: str | None = None) -> list[dict]:
    r"""Layer-wise learning-rate decay: parameter groups with $\eta_l = \eta\,\xi^{\,L+1-l}$.

    Depths: $l = 0$ for everything below the layer stack (the embeddings), $l = 1, \dots, L$ for the $L$
    transformer layers, $l = L + 1$ for the head (which learns at $\eta$); parameters after the stack but
    outside the head (e.g. BERT's pooler) share the top layer's depth $L$. Lower layers hold more general
    features and move less (Howard & Ruder 2018; Clark et al. 2020, ELECTRA, $\xi \approx 0.8$). With
    $\xi = 1$ every group has rate $\eta$; :func:`tlkit.parameter.param_groups` is the two-level case (one
    multiplier $m$ for the whole backbone), which cannot express a per-layer ladder.

    Parameters
    ----------
    model : nn.Module
        E.g. a :class:`tlkit.text.MeanPoolingClassifier` (head ``"head"``, layers ``encoder.encoder.layer``).
    lr : float
        $\eta$, the head's rate.
    decay : float
        $\xi \in (0, 1]$.
    head : str
        Dotted name of the head module.
    layers : str, optional
        Dotted name of the ``nn.ModuleList`` of layers; default: the ``ModuleList`` with most parameters.

    Returns ``[{"params", "lr", "name", "depth"}, ...]`` ordered by depth, trainable parameters only
    (pass to any ``torch.optim`` optimiser). Used in lesson 16.
    """
    model = _check_module(model)
    lr = check_positive(lr, "lr")
    decay = check_in_range(decay, "decay", 0, 1, low_inclusive=False)
    _submodule(model, head, "head", "the head module")
    stack_name, stack = _layer_stack(model, layers, head)
    n_layers = len(stack)
    depth_of, seen_stack = {}, False
    for name, _ in model.named_parameters():
        if _inside(name, head):
            depth_of[name] = n_layers + 1
        elif _inside(name, stack_name):
            seen_stack = True
            depth_of[name] = int(name[len(stack_name) + 1:].split(".", 1)[0]) + 1
        else:
            depth_of[name] = n_layers if seen_stack else 0
    groups = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(depth_of[name], []).append(param)
    labels = {0: "embeddings", n_layers + 1: "head"}
    return [{"params": groups[d], "lr": lr * decay ** (n_layers + 1 - d), "name": labels.get(d, f"layer {d}"),
             "depth": d} for d in sorted(groups)]


def _linear_head(model: nn.Module, head: str) -> nn.Linear:
    module = _submodule(model, head, "head", "the head module")
    if not isinstance(module, nn.Linear):
        raise TypeError(f"the head {head!r} must be an nn.Linear, got {type(module).__name__}")
    return module


@torch.no_grad()
def head_inputs(model: nn.Module, data, head: str = "head") -> tuple[torch.Tensor, torch.Tensor]:
    r"""The features $z_i = \phi_{\theta_0}(x_i)$ that enter the head, and the labels: ``(n, d)``, ``(n,)``.

    A forward hook on ``head`` records its input while ``model(*inputs)`` runs in eval mode without gradients,
    so it works for any (encoder, head) pair. ``data``: a ``DataLoader`` or a tuple ``(*inputs, y)`` whose
    batches are ``(*inputs, y)``, as for :func:`tlkit.parameter.fit`. Used in lesson 16.
    """
    from ..training import make_loader

    model = _check_module(model)
    module = _linear_head(model, head)
    loader = make_loader(data, batch_size=64, shuffle=False)
    features, labels = [], []
    hook = module.register_forward_hook(lambda _module, args, _output: features.append(args[0].detach()))
    was_training = model.training
    model.eval()
    try:
        for *inputs, y in loader:
            model(*inputs)
            labels.append(y)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(features), torch.cat(labels)


def set_head_from_probe(model: nn.Module, probe, head: str = "head") -> nn.Linear:
    r"""Copy a fitted linear probe into the ``nn.Linear`` head, so that the head computes the probe's decision.

    A multinomial probe ($C \ge 3$) gives $W = \hat W$, $c = \hat c$. A binary logistic regression
    $p(y{=}1 \mid z) = \sigma(\hat w^\top z + \hat b)$ becomes the two-row head
    $W = \tfrac12[-\hat w, \hat w]^\top$, $c = \tfrac12[-\hat b, \hat b]$, whose softmax equals the sigmoid.
    ``probe``: a fitted scikit-learn linear classifier (``coef_`` ``(1 or C, d)``, ``intercept_``,
    ``classes_`` $= 0, \dots, C-1$); the head must be ``nn.Linear(d, C)``. Returns the head. Used in lesson 16.
    """
    model = _check_module(model)
    module = _linear_head(model, head)
    if not all(hasattr(probe, attribute) for attribute in ("coef_", "intercept_", "classes_")):
        raise TypeError(f"probe must be a fitted scikit-learn linear classifier (coef_, intercept_, classes_), "
                        f"got {type(probe).__name__}")
    coef, intercept = np.asarray(probe.coef_, dtype=np.float64), np.asarray(probe.intercept_, dtype=np.float64)
    classes = np.asarray(probe.classes_)
    if classes.dtype.kind not in "iu" or not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"probe.classes_ must be 0, ..., C-1 (the head's output indices), got {classes.tolist()}")
    if len(classes) == 2 and coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    if coef.shape != (module.out_features, module.in_features):
        raise ValueError(f"probe gives a {coef.shape[0]} x {coef.shape[1]} head, but {head!r} is "
                         f"nn.Linear({module.in_features}, {module.out_features})")
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(coef, dtype=module.weight.dtype))
        if module.bias is not None:
            module.bias.copy_(torch.as_tensor(intercept, dtype=module.bias.dtype))
        elif np.any(intercept != 0):
            raise ValueError(f"the head {head!r} has no bias, but the probe has an intercept")
    return module


def lp_ft(model: nn.Module, train_data, *, probe=None, features=None, C: float = 1.0, head: str = "head",
          epochs: int = 2, lr: float = 1e-5, optimizer: torch.optim.Optimizer | None = None, val_data=None,
          seed: int = 0, progress: bool = True, **fit_kwargs):
    r"""LP-FT (Kumar et al. 2022): fit a linear probe on frozen features, start the head there, then fine-tune all.

    Phase 1, linear probing (encoder frozen at $\theta_0$, $z_i = \phi_{\theta_0}(x_i)$):
    $$(\hat W, \hat c) = \arg\min_{W, c}\; \sum_i \ell\big(W z_i + c,\ y_i\big) + \tfrac{1}{2C}\lVert W\rVert^2 .$$
    Phase 2, fine-tuning every parameter from $(\theta_0, \hat W, \hat c)$, usually at a small rate:
    $$\min_{\theta, W, c}\; \frac{1}{|B|}\sum_{i \in B} \ell\big(W \phi_\theta(x_i) + c,\ y_i\big).$$
    Why (Kumar et al.'s argument): with a random head, the large early gradients change the encoder in the
    directions the training inputs span, while the features of inputs outside that span barely move; the head
    is then fitted to the changed features and no longer matches the unchanged ones — the pretrained features
    are distorted, and out-of-distribution accuracy suffers (proved for two-layer linear networks, measured on
    CLIP and ImageNet models). Started at the probe's optimum, the loss gradient is small and the encoder
    moves less.

    Parameters
    ----------
    model : nn.Module
        An (encoder, head) model such as :class:`tlkit.text.MeanPoolingClassifier`; ``head`` names its
        ``nn.Linear`` head.
    train_data : DataLoader or tuple ``(*inputs, y)``
        The training set, as for :func:`tlkit.parameter.fit`.
    probe : fitted scikit-learn linear classifier, optional
        Phase 1 already done (e.g. a ``LogisticRegressionCV`` on cached embeddings); copied into the head.
    features : pair ``(Z, y)``, optional
        Frozen features ``(n, d)`` and labels ``(n,)`` for phase 1, which fits ``LogisticRegression(C)`` on
        them (e.g. cached sentence embeddings); default: ``head_inputs(model, train_data)``.
    C : float
        Inverse regularisation strength of the phase-1 logistic regression (ignored when ``probe`` is given).
    epochs, lr, optimizer, val_data, seed, progress, **fit_kwargs
        Phase 2, passed to :func:`tlkit.parameter.fit` (default optimiser: Adam at ``lr`` on every trainable
        parameter).

    Returns ``(probe, history)``: the phase-1 probe and the phase-2 ``History``. ``model`` is trained in place.
    Used in lesson 16.
    """
    from sklearn.linear_model import LogisticRegression

    from ..training import fit

    model = _check_module(model)
    _linear_head(model, head)
    epochs = check_positive_int(epochs, "epochs")
    if probe is None:
        if features is None:
            features, labels = head_inputs(model, train_data, head)
        else:
            if not isinstance(features, (tuple, list)) or len(features) != 2:
                raise TypeError("features must be a pair (Z, y): frozen features (n, d) and their labels (n,)")
            features, labels = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
                                for a in features)
            if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
                raise ValueError(f"features must be (Z, y) with Z (n, d) and y (n,), got shapes "
                                 f"{tuple(features.shape)} and {tuple(labels.shape)}")
        C = check_positive(C, "C")
        probe = LogisticRegression(C=C, max_iter=5000).fit(features.double().numpy(), labels.numpy())
    set_head_from_probe(model, probe, head)
    history = fit(model, train_data, epochs=epochs, lr=lr, optimizer=optimizer, val_data=val_data, seed=seed,
                  progress=progress, **fit_kwargs)
    return probe, history


def _check_target_modules(model: nn.Module, target_modules) -> list[str]:
    if isinstance(target_modules, str) or not isinstance(target_modules, Sequence) or not target_modules:
        raise TypeError(f"target_modules must be a non-empty sequence of module names, got {target_modules!r}")
    names = [name for name, _ in model.named_modules()]
    for target in target_modules:
        if not isinstance(target, str) or not any(n == target or n.endswith("." + target) for n in names):
            raise ValueError(f"target_modules: no module of the model is named {target!r} (or ends in '.{target}')")
    return list(target_modules)


def lora(model: nn.Module, r: int = 8, alpha: float = 16, target_modules: Sequence[str] = ("query", "value"),
         dropout: float = 0.0, head: str | None = "head"):
    r"""LoRA (Hu et al. 2021) through Hugging Face ``peft``: each targeted weight becomes $W_0 + \frac{\alpha}{r} B A$.

    $$h = W_0 x + \frac{\alpha}{r}\, B A\, x, \qquad W_0 \in \mathbb R^{d_\text{out} \times d_\text{in}}
    \text{ frozen},\quad A \in \mathbb R^{r \times d_\text{in}},\ B \in \mathbb R^{d_\text{out} \times r}
    \text{ trained},$$
    $A$ random (Kaiming-uniform) and $B = 0$ at the start, so the wrapped model first computes exactly what the
    base model does. An adapted matrix adds $r\,(d_\text{in} + d_\text{out})$ trainable parameters
    ($2 r d$ for MiniLM's $384 \times 384$ query and value), against $d_\text{in} d_\text{out}$ frozen.
    After training, ``model.merge_and_unload()`` folds $\frac{\alpha}{r} B A$ into $W_0$: no extra inference cost.

    Parameters
    ----------
    model : nn.Module
        Wrapped in place (deep-copy it first to keep the original), e.g. a ``MeanPoolingClassifier``.
    r : int
        Rank $r \ge 1$.
    alpha : float
        Scale $\alpha > 0$; the update is multiplied by $\alpha / r$.
    target_modules : sequence of str
        Names (or name endings) of the ``nn.Linear`` layers to adapt: MiniLM's attention projections are
        ``"query"``, ``"key"``, ``"value"``.
    dropout : float
        Dropout on the LoRA branch's input, in $[0, 1)$.
    head : str or None
        The new head, trained in full (``peft``'s ``modules_to_save``); ``None`` trains LoRA weights only.

    Returns the ``peft.PeftModel``: only the LoRA matrices and the head are trainable; it is called like
    ``model``. Other ``peft`` methods (IA³, prefix tuning, LoHa, ...) take the same route through a different
    ``peft`` config; ``peft`` has no Houlsby bottleneck adapter. Used in lesson 16.
    """
    from peft import LoraConfig, get_peft_model

    model = _check_module(model)
    r = check_positive_int(r, "r")
    alpha = check_positive(alpha, "alpha")
    dropout = check_in_range(dropout, "dropout", 0, 1, high_inclusive=False)
    target_modules = _check_target_modules(model, target_modules)
    if head is not None:
        _linear_head(model, head)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=dropout,
                        modules_to_save=None if head is None else [head], bias="none")
    return get_peft_model(model, config)
