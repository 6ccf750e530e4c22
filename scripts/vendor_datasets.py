"""Regenerate the vendored benchmarks in tlkit/data/files/ from the raw public copies in ../shared/datasets.

Checks every raw file against ../shared/datasets/SHA256SUMS first, then writes one compressed ``.npz`` per
dataset in an exactly lossless integer or sparse form (each array's original float64 values are recovered bit
for bit; see tlkit/data/files/README.md), and ``MANIFEST.sha256`` with the SHA-256 of every vendored file.

    .venv/bin/python scripts/vendor_datasets.py [--raw ../shared/datasets]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np
import scipy.io
from sklearn.datasets import load_svmlight_file

from tlkit.data._files import DATA_DIR
from tlkit.data.benchmarks import AMAZON_DOMAINS, MANIFEST, QUANTA

AMAZON_400_FILES = {"books": "books_400.mat", "dvd": "dvd_400.mat", "electronics": "elec_400.mat",
                    "kitchen": "kitchen_400.mat"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_raw(raw: Path) -> None:
    for line in (raw / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if sha256(raw / name) != digest:
            raise SystemExit(f"{raw / name} does not match SHA256SUMS: refusing to vendor it")


def exact_integers(values: np.ndarray, quantum: int, dtype) -> np.ndarray:
    """``values * quantum`` as integers, after checking that dividing them back gives ``values`` bit for bit."""
    codes = np.round(values * quantum)
    if not np.array_equal(codes / quantum, values):
        raise SystemExit(f"values are not exact multiples of 1/{quantum}: not vendoring them as integers")
    if codes.min() < np.iinfo(dtype).min or codes.max() > np.iinfo(dtype).max:
        raise SystemExit(f"codes exceed {np.dtype(dtype).name}")
    return codes.astype(dtype)


def mat_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    mat = scipy.io.loadmat(path)
    return np.asarray(mat["fts"], dtype=np.float64), np.asarray(mat["labels"]).ravel().astype(np.int64)


def esl_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle)
    return table[:, 1:], table[:, 0].astype(np.int64)


def sparse_arrays(matrix, prefix: str) -> dict[str, np.ndarray]:
    matrix = matrix.tocsr()
    matrix.sort_indices()
    if matrix.shape[1] > np.iinfo(np.uint16).max + 1:
        raise SystemExit(f"{prefix}: {matrix.shape[1]} columns do not fit uint16 indices")
    return {f"{prefix}_data": matrix.data, f"{prefix}_indices": matrix.indices.astype(np.uint16),
            f"{prefix}_indptr": matrix.indptr.astype(np.int32), f"{prefix}_shape": np.array(matrix.shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    args = parser.parse_args()
    raw = args.raw
    verify_raw(raw)
    out: dict[str, dict[str, np.ndarray]] = {}

    images = {}
    x, y = mat_features(raw / "jda_digits" / "MNIST.mat")
    images["mnist_codes"] = exact_integers(x, QUANTA["jda_mnist"], np.uint8)
    images["mnist_labels"] = (y - 1).astype(np.uint8)
    x, y = mat_features(raw / "jda_digits" / "USPS.mat")  # resampled values on no exact grid: kept as float64
    images["usps_values"], images["usps_labels"] = x, (y - 1).astype(np.uint8)
    out["jda_mnist_usps.npz"] = images

    usps = {}
    for split in ("train", "test"):
        x, y = esl_usps(raw / "usps_esl" / f"zip.{split}.gz")
        usps[f"{split}_codes"] = exact_integers(x, QUANTA["usps_esl"], np.int16)
        usps[f"{split}_labels"] = y.astype(np.uint8)
    out["usps_esl.npz"] = usps

    coil = {}
    for name in ("COIL1", "COIL2"):
        x, y = mat_features(raw / "coil20" / f"{name}.mat")
        coil[f"{name.lower()}_codes"] = exact_integers(x, QUANTA["coil20"], np.uint16)
        coil[f"{name.lower()}_labels"] = (y - 1).astype(np.uint8)
    out["coil20.npz"] = coil

    amazon_400 = {}
    for domain in AMAZON_DOMAINS:
        x, y = mat_features(raw / "amazon_400" / AMAZON_400_FILES[domain])
        amazon_400.update(sparse_arrays(scipy.sparse.csr_matrix(x), domain))
        amazon_400[f"{domain}_labels"] = y.astype(np.uint8)
    out["amazon_400.npz"] = amazon_400

    amazon_5000 = {}
    for domain in AMAZON_DOMAINS:
        for split in ("train", "test"):
            x, y = load_svmlight_file(str(raw / "amazon_dann_5000" / f"{domain}_{split}.svmlight"), n_features=5000)
            arrays = sparse_arrays(x, f"{domain}_{split}")
            arrays[f"{domain}_{split}_data"] = exact_integers(arrays[f"{domain}_{split}_data"], 1, np.uint16)
            amazon_5000.update(arrays)
            amazon_5000[f"{domain}_{split}_labels"] = (y > 0).astype(np.uint8)
    out["amazon_5000.npz"] = amazon_5000

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, arrays in out.items():
        path = DATA_DIR / name
        np.savez_compressed(path, **arrays)
        lines.append(f"{sha256(path)}  {name}")
        print(f"{name}: {path.stat().st_size} bytes")
    (DATA_DIR / MANIFEST).write_text("\n".join(lines) + "\n")
    print(f"total {sum((DATA_DIR / n).stat().st_size for n in out)} bytes")


if __name__ == "__main__":
    main()
