"""Regenerate tlkit/data/files/digits_source_cnn.pt: the source-pretrained digits CNN of FeatureExtractor("digits_cnn").

The source domain is the full USPS set (tlkit.data.load_usps), pooled to scikit-learn's 8x8 digit format in
[0, 1], so the network never sees an image that tlkit.data.digits_shift can draw as a target (those are all
scikit-learn digits). A SmallResNet (torchvision BasicBlocks, widths 32/64/128, ~0.3 M parameters) trains on
the 7291 ESL training images with one-pixel shifts as augmentation; the 2007 ESL test images are its validation
set, whose accuracy the checkpoint's metadata records. Deterministic: same seed, same weights up to
floating-point summation order. A few minutes on 2 CPU cores.

    .venv/bin/python scripts/make_source_checkpoint.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tlkit.data import load_usps
from tlkit.feature.deep import SOURCE_CHECKPOINT, SmallResNet
from tlkit.parameter import evaluate, fit

SEED = 0
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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", type=Path, default=SOURCE_CHECKPOINT)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    train, validation = load_usps("train", image_size=8), load_usps("test", image_size=8)
    x_train = shifted_copies(train.X.reshape(-1, 8, 8))[:, None]
    y_train = np.tile(train.y, 5)
    x_val, y_val = validation.X.reshape(-1, 1, 8, 8), validation.y

    model = SmallResNet(in_channels=1, num_classes=10, width=WIDTH)
    history = fit(model, (x_train, y_train), epochs=args.epochs, lr=2e-3, batch_size=128, seed=SEED,
                  val_data=(x_val, y_val))
    accuracy = evaluate(model, (x_val, y_val))["acc"]
    print(history)
    meta = {
        "source": "USPS (ESL zip.train, 7291 images) pooled to 8x8 in [0, 1]; no scikit-learn digit",
        "validation": "USPS ESL zip.test (2007 images), never a tlkit.data target",
        "in_channels": 1, "num_classes": 10, "width": WIDTH, "input": "(N, 1, 8, 8), pixels in [0, 1]",
        "seed": SEED, "epochs": args.epochs, "n_train": len(train.y), "augmentation": "one-pixel shifts (5x)",
        "validation_accuracy": round(accuracy, 4),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB), validation accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
