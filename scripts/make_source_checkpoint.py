"""Regenerate tlkit/data/files/digits_source_cnn.pt: the source-pretrained CNN that tlkit.feature.FeatureExtractor falls back to.

The source domain is scikit-learn's clean, upright 8x8 digits. A seeded 1000-image split trains a SmallResNet
(torchvision BasicBlocks, widths 32/64/128, ~0.3 M parameters) with one-pixel shifts as augmentation; the other
797 images give the held-out accuracy stored in the checkpoint's metadata. Deterministic: same seed, same file
contents up to floating-point summation order. A few minutes on 2 CPU cores (15 epochs).

    .venv/bin/python scripts/make_source_checkpoint.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from tlkit.feature.deep import SOURCE_CHECKPOINT, SmallResNet
from tlkit.parameter import evaluate, fit

SEED = 0
N_TRAIN = 1000
WIDTH = 32


def shifted_copies(images: np.ndarray) -> np.ndarray:
    """The images and their one-pixel shifts up, down, left and right (zero-filled): 5x the data."""
    copies = [images]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(images, step, axis=axis)
        index = [slice(None)] * 3
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0
        copies.append(moved)
    return np.concatenate(copies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--output", type=Path, default=SOURCE_CHECKPOINT)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    order = np.random.default_rng(SEED).permutation(len(images))
    train, held_out = order[:N_TRAIN], order[N_TRAIN:]
    x_train = shifted_copies(images[train])[:, None]
    y_train = np.tile(digits.target[train], 5)
    x_test, y_test = images[held_out][:, None], digits.target[held_out]

    model = SmallResNet(in_channels=1, num_classes=10, width=WIDTH)
    history = fit(model, (x_train, y_train), epochs=args.epochs, lr=2e-3, batch_size=128, seed=SEED,
                  val_data=(x_test, y_test))
    accuracy = evaluate(model, (x_test, y_test))["acc"]
    print(history)
    meta = {
        "source": "scikit-learn digits (clean, upright), 1000-image seeded split",
        "in_channels": 1, "num_classes": 10, "width": WIDTH, "input": "(N, 1, 8, 8), pixels / 16",
        "seed": SEED, "epochs": args.epochs, "train_indices_seed": SEED, "n_train": N_TRAIN,
        "held_out_accuracy": round(accuracy, 4),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB), held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
