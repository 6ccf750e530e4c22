"""What changes when the floating-point path changes: run the same seeded computations under several settings.

Each setting runs in a fresh process (thread counts and MKL/ATen code paths are fixed at start-up) and computes:
the fused MMD² kernel (tlkit's C++ backend), a torch float32 matrix product (MKL), a numpy float64 product (OpenBLAS),
a scikit-learn logistic regression (lbfgs), and 300 seeded SGD steps of a small network. The table says, per
computation, whether each setting reproduces the default bit for bit, and otherwise the largest relative change.
The README's troubleshooting section quotes this table.

    python scripts/float_paths.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

SETTINGS = {
    "default (2 threads)": {},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
}

PROBE = r"""
import json, numpy as np, torch, tlkit as tl
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
g = torch.Generator().manual_seed(0)
x, y = torch.randn(3000, 32, generator=g), torch.randn(2000, 32, generator=g) + 0.1
a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
rng = np.random.default_rng(0)
digits = load_digits()
out = {
    "tl.mmd2 (C++ kernel, float32)": [float(tl.mmd2(x, y, sigma=[1.0, 4.0], backend="cpp"))],
    "torch matmul (float32)": (a @ b)[:4, :4].flatten().tolist(),
    "numpy matmul (float64)": (rng.normal(size=(300, 300)) @ rng.normal(size=(300, 300)))[:4, :4].flatten().tolist(),
    "LogisticRegression (lbfgs)": LogisticRegression(max_iter=200).fit(digits.data / 16, digits.target).coef_[0, :8].tolist(),
}
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
X, Y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
for step in range(300):
    batch = torch.randint(0, len(X), (64,))
    loss = torch.nn.functional.cross_entropy(net(X[batch]), Y[batch])
    opt.zero_grad(); loss.backward(); opt.step()
out["300 SGD steps (final weights)"] = net[2].weight[0, :8].tolist()
out["300 SGD steps (train accuracy)"] = [float((net(X).argmax(1) == Y).float().mean())]
print(json.dumps(out))
"""


def run(extra_env: dict) -> dict:
    env = {**os.environ, **extra_env}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def relative_change(new: list[float], reference: list[float]) -> float:
    return max(abs(n - r) / max(abs(r), 1e-30) for n, r in zip(new, reference))


def main() -> int:
    results = {name: run(env) for name, env in SETTINGS.items()}
    reference = results["default (2 threads)"]
    names = list(SETTINGS)[1:]
    print(f"{'computation':<34}" + "".join(f"{n:>28}" for n in names))
    for key, values in reference.items():
        cells = []
        for name in names:
            change = relative_change(results[name][key], values)
            cells.append("bit-identical" if change == 0 else f"differs: {change:.1e} rel.")
        print(f"{key:<34}" + "".join(f"{c:>28}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
