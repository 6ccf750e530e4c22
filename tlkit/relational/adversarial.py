"""Adversarial domain adaptation: gradient reversal, DANN (Ganin et al. 2016) and CDAN (Long et al. 2018)."""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_2d, check_1d, check_same_dim, check_same_length, to_tensor
from ..training import History, evaluate


class _GradientReversalFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.lambda_ * grad_output, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    r"""Gradient reversal $R_\lambda$: identity forward, gradient times $-\lambda$ backward.

    $$R_\lambda(x) = x, \qquad \frac{\partial R_\lambda}{\partial x} = -\lambda I$$

    Any shape in, the same shape out. Used in lesson 11.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)):
        raise TypeError(f"lambda_ must be a number, got {type(lambda_).__name__}")
    return _GradientReversalFunction.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    r"""Layer form of :func:`grad_reverse`: $R_\lambda(x) = x$ forward, $-\lambda\,\partial L/\partial x$ backward.

    Placed between the feature extractor and the domain discriminator, it lets one backward pass train the
    discriminator to tell domains apart while pushing the features to make that impossible. ``lambda_`` can be
    changed during training (DANN's schedule). Used in lesson 11.
    """

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class DomainDiscriminator(nn.Module):
    r"""MLP $D(z)$ giving the logit of "$z$ comes from the source domain", ``(N, in_features) -> (N,)``.

    Trained with the binary cross-entropy $-\frac1n\sum_i [d_i \log\sigma(D(z_i)) + (1-d_i)\log(1-\sigma(D(z_i)))]$,
    $d_i = 1$ for source, 0 for target. Used in lesson 11.
    """

    def __init__(self, in_features: int, hidden: int = 64, layers: int = 1):
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        blocks, width = [], in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    r"""DANN's adaptation-factor schedule $\lambda_p = \frac{2}{1 + e^{-\gamma p}} - 1$, $p \in [0, 1]$ the training progress.

    Starts at 0 (the discriminator is noise early on) and rises smoothly to ~1. Used in lesson 11.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in [0, 1], got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DANN(nn.Module):
    r"""Domain-adversarial neural network (Ganin et al. 2016): $G_f$ features, $G_y$ label head, $G_d$ domain head.

    $$\min_{G_f, G_y}\max_{G_d}\; \frac{1}{n_s}\sum_{i} \ell(G_y(G_f(x^s_i)), y^s_i)
      - \lambda\,\Big[\frac{1}{n_s+n_t}\sum_{z} \ell_{\text{BCE}}(G_d(G_f(z)), d_z)\Big]$$

    realised as one minimisation through a gradient-reversal layer between $G_f$ and $G_d$, with
    $\lambda_p = 2/(1+e^{-10p}) - 1$. ``forward(x)`` returns class logits ``(N, C)``; ``loss(...)`` returns the
    training objective and its parts. Used in lesson 11.
    """

    def __init__(self, feature_extractor: nn.Module, classifier: nn.Module, discriminator: nn.Module,
                 gamma: float = 10.0):
        super().__init__()
        for name, module in (("feature_extractor", feature_extractor), ("classifier", classifier),
                             ("discriminator", discriminator)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        self.feature_extractor, self.classifier, self.discriminator = feature_extractor, classifier, discriminator
        self.reversal = GradientReversal(0.0)
        self.gamma = float(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x))

    def loss(self, x_source: torch.Tensor, y_source: torch.Tensor, x_target: torch.Tensor,
             progress: float) -> tuple[torch.Tensor, dict]:
        """Class loss on the source plus the domain loss through the reversal layer at $\\lambda_p$."""
        self.reversal.lambda_ = dann_lambda(progress, self.gamma)
        features = self.feature_extractor(torch.cat([x_source, x_target]))
        n_source = len(x_source)
        class_loss = nn.functional.cross_entropy(self.classifier(features[:n_source]), y_source)
        domain_labels = torch.cat([torch.ones(n_source), torch.zeros(len(x_target))]).to(features.device)
        domain_logits = self.discriminator(self.reversal(features))
        domain_loss = nn.functional.binary_cross_entropy_with_logits(domain_logits, domain_labels)
        domain_acc = ((domain_logits > 0).float() == domain_labels).float().mean().item()
        return class_loss + domain_loss, {"class_loss": class_loss.item(), "domain_loss": domain_loss.item(),
                                          "domain_acc": domain_acc, "lambda": self.reversal.lambda_}

    def fit(self, x_source, y_source, x_target, *, epochs: int = 100, batch_size: int = 64, lr: float = 5e-3,
            seed: int = 0, val_data=None, progress: bool = True) -> History:
        r"""Train on labelled source ``(x_source (n_s, ...), y_source (n_s,))`` and unlabelled ``x_target (n_t, ...)``.

        Each step draws a source and a target minibatch of ``batch_size``; an epoch is
        $\lceil n_s / B\rceil$ steps. Adam with ``lr``. ``val_data=(X, y)``, e.g. labelled target data kept
        for evaluation only, is scored after every epoch. Returns a ``History`` (``class_loss``,
        ``domain_loss``, ``domain_acc``, ``lambda``, ``val_acc``).
        """
        x_source = to_tensor(x_source, "x_source", dtype=torch.float32)
        y_source = to_tensor(y_source, "y_source", dtype=torch.long)
        x_target = to_tensor(x_target, "x_target", dtype=torch.float32)
        check_1d(y_source, "y_source")
        check_same_length(x_source, y_source, ("x_source", "y_source"))
        if x_source.ndim == 2:
            check_2d(x_target, "x_target")
            check_same_dim(x_source, x_target, ("x_source", "x_target"))
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(x_source) / batch_size)
        total_steps = epochs * steps_per_epoch
        history = History()
        bar = tqdm(total=total_steps, desc=type(self).__name__, disable=not progress, leave=False)
        step = 0
        for epoch in range(1, epochs + 1):
            start, sums = time.perf_counter(), {}
            self.train()
            source_order = torch.randperm(len(x_source), generator=generator)
            for batch in range(steps_per_epoch):
                source_index = source_order[batch * batch_size:(batch + 1) * batch_size]
                target_index = torch.randint(len(x_target), (len(source_index),), generator=generator)
                loss, parts = self.loss(x_source[source_index], y_source[source_index], x_target[target_index],
                                        progress=step / max(total_steps - 1, 1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                step += 1
                bar.update()
            record = {"epoch": epoch, **{key: value / steps_per_epoch for key, value in sums.items()}}
            if val_data is not None:
                record.update({f"val_{key}": value for key, value in evaluate(self, val_data).items()})
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k.startswith(("val_", "domain_acc"))})
        bar.close()
        return history


class CDAN(DANN):
    r"""Conditional domain-adversarial network (Long et al. 2018): DANN whose discriminator sees the features
    *conditioned on the predictions*, through the multilinear map $T(f, g) = f \otimes g$, with entropy weights (CDAN+E).

    $$\min_{G_f, G_y}\max_{D}\; \frac{1}{n_s}\sum_i \ell(G_y(f^s_i), y^s_i)
      - \lambda\Big[\tfrac12\sum_{i \in s} \tilde w_i\, \ell_{\text{BCE}}(D(T(f_i, g_i)), 1)
      + \tfrac12\sum_{j \in t} \tilde w_j\, \ell_{\text{BCE}}(D(T(f_j, g_j)), 0)\Big]$$

    with $f = G_f(x) \in \mathbb{R}^{d}$, $g = \operatorname{softmax}(G_y(f)) \in \mathbb{R}^{C}$ (not
    differentiated through, as in the paper's code), $T(f, g) = \operatorname{vec}(f g^\top) \in \mathbb{R}^{dC}$,
    and entropy weights $w = 1 + e^{-H(g)}$, $H(g) = -\sum_c g_c \log g_c$, normalised within each domain
    ($\tilde w_i = w_i / \sum_{k \in \text{same domain}} w_k$): confident predictions count more.
    With ``randomized_dim=r`` the map is the randomised multilinear
    $T(f, g) = \frac{1}{\sqrt r}(R_f f) \odot (R_g g)$ with fixed Gaussian $R_f \in \mathbb{R}^{r\times d}$,
    $R_g \in \mathbb{R}^{r\times C}$ (for large $dC$). The discriminator must take ``d * C`` (or ``r``) inputs;
    ``entropy_conditioning=False`` gives plain CDAN. Same training loop, schedule and ``fit`` as :class:`DANN`.
    Used in lesson 15.
    """

    def __init__(self, feature_extractor: nn.Module, classifier: nn.Module, discriminator: nn.Module,
                 gamma: float = 10.0, entropy_conditioning: bool = True, randomized_dim: int | None = None):
        super().__init__(feature_extractor, classifier, discriminator, gamma=gamma)
        if randomized_dim is not None and (isinstance(randomized_dim, bool) or not isinstance(randomized_dim, int)
                                           or randomized_dim < 1):
            raise ValueError(f"randomized_dim must be None or a positive int, got {randomized_dim!r}")
        self.entropy_conditioning = bool(entropy_conditioning)
        self.randomized_dim = randomized_dim

    def conditioning(self, features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """$T(f, g)$: ``(N, d)``, ``(N, C)`` → ``(N, d*C)``, or ``(N, randomized_dim)`` with the randomised map."""
        if self.randomized_dim is None:
            return torch.einsum("nd,nc->ndc", features, probabilities).reshape(len(features), -1)
        if not hasattr(self, "random_features"):  # drawn once, on first use, when d and C are known
            generator = torch.Generator().manual_seed(0)
            for name, width in (("random_features", features.shape[1]), ("random_classes", probabilities.shape[1])):
                self.register_buffer(name, torch.randn(width, self.randomized_dim, generator=generator).to(features))
        return (features @ self.random_features) * (probabilities @ self.random_classes) / math.sqrt(self.randomized_dim)

    def loss(self, x_source: torch.Tensor, y_source: torch.Tensor, x_target: torch.Tensor,
             progress: float) -> tuple[torch.Tensor, dict]:
        """Class loss on the source plus the entropy-weighted conditional domain loss through the reversal layer."""
        self.reversal.lambda_ = dann_lambda(progress, self.gamma)
        features = self.feature_extractor(torch.cat([x_source, x_target]))
        logits = self.classifier(features)
        n_source = len(x_source)
        class_loss = nn.functional.cross_entropy(logits[:n_source], y_source)
        probabilities = logits.detach().softmax(dim=1)
        conditioned = self.conditioning(self.reversal(features), probabilities)
        first_linear = next((m for m in self.discriminator.modules() if isinstance(m, nn.Linear)), None)
        if first_linear is not None and first_linear.in_features != conditioned.shape[1]:
            raise ValueError(f"discriminator must take {conditioned.shape[1]} inputs (features {features.shape[1]} × "
                             f"classes {logits.shape[1]}, or randomized_dim), got {first_linear.in_features}")
        domain_labels = torch.cat([torch.ones(n_source), torch.zeros(len(x_target))]).to(features.device)
        domain_logits = self.discriminator(conditioned)
        is_source = domain_labels.bool()
        if self.entropy_conditioning:
            entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
            weights = 1.0 + torch.exp(-entropy)
        else:
            weights = torch.ones_like(domain_labels)
        weights = torch.where(is_source, weights / weights[is_source].sum(), weights / weights[~is_source].sum()) / 2
        domain_loss = (weights * nn.functional.binary_cross_entropy_with_logits(
            domain_logits, domain_labels, reduction="none")).sum()
        domain_acc = ((domain_logits > 0).float() == domain_labels).float().mean().item()
        return class_loss + domain_loss, {"class_loss": class_loss.item(), "domain_loss": domain_loss.item(),
                                          "domain_acc": domain_acc, "lambda": self.reversal.lambda_}
