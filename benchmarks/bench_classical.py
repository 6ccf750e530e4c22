"""Benchmark: the batched MMD permutation test against a dense implementation (KMM: benchmarks/bench_kmm.py).

Each case runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own. The dense baselines
form the n×n kernel matrix explicitly and run the same algorithm on it; they are skipped where that matrix would not
fit in memory. Usage::

    python benchmarks/bench_classical.py [--quick] [--json PATH] [--device cpu|cuda]

Cases: ``mmd_test`` at n = m = 1k and 10k with 1000 permutations and 100k with 100. ``--quick`` runs 1k only.
KMM's rows moved to bench_kmm.py (issue 16): its solver now multiplies over the weights' support, so a dense
matrix formed once no longer stands in for its products, and what matters is time to convergence, not per iteration.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import child_process  # benchmarks/child_process.py, beside this script

DENSE_LIMIT_BYTES = 0.4 * (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
MMD_CASES = ((1_000, 1000), (10_000, 1000), (100_000, 100))


def make_data(n: int, device: str):
    import torch

    generator = torch.Generator().manual_seed(n)
    xs = torch.randn(n, 2, generator=generator) * 0.5 + 0.5
    xt = torch.randn(n, 2, generator=generator) * 0.3
    return xs.to(device), xt.to(device)


def dense_gaussian(a, b, sigma):
    """The Gaussian kernel matrix, averaged over the bandwidths when ``sigma`` is a list (as tlkit's kernels do)."""
    import torch

    r2 = torch.cdist(a, b).square()
    sigmas = sigma if isinstance(sigma, (list, tuple)) else [sigma]
    return sum(torch.exp(-r2 / (2 * s**2)) for s in sigmas) / len(sigmas)


def run_mmd(n: int, permutations: int, dense: bool, device: str) -> dict:
    import torch

    import tlkit.metrics.shift as shift_module
    from tlkit.metrics import mmd_test

    xs, xt = make_data(n, device)  # two different clouds: every p-value is the smallest possible, 1/(B+1)
    if dense:
        matrices = {}

        def dense_matmul(x, y, v, sigma, kernel="gaussian", backend="auto"):
            key = (x.data_ptr(), y.data_ptr(), x.shape[0])
            if key not in matrices:
                matrices[key] = dense_gaussian(x, y, sigma)
            return matrices[key] @ v

        shift_module.kernel_matmul_unchecked = dense_matmul  # what the permutation batches call
    start = time.perf_counter()
    statistic, p_value = mmd_test(xs, xt, n_permutations=permutations, random_state=0)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "statistic": statistic, "p_value": p_value}


def dense_fits(n_points: int) -> bool:
    return 2 * 4 * n_points**2 <= DENSE_LIMIT_BYTES  # the float32 matrix plus one temporary of its size


def run_case(case: dict) -> dict:
    """Run one case in a child process; return its result with wall time and peak RSS."""
    return child_process.run_case(__file__, case)


def warm_up(device: str) -> None:
    """Load the extension and touch the kernels once, so one-time loading is not timed."""
    import tlkit

    points = make_data(64, device)
    tlkit.kernel_matmul(*points, points[0][:, :1], sigma=1.0)
    tlkit.kernel_sum(*points, sigma=1.0)


def child(case: dict) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    warm_up(case["device"])
    result = run_mmd(case["n"], case["permutations"], case["impl"] == "dense", case["device"])
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1k only")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(json.loads(args.case))
        return

    cases = []
    for n, permutations in MMD_CASES[:1] if args.quick else MMD_CASES:
        for impl in ("fused", "dense"):
            if impl == "fused" or dense_fits(2 * n):
                cases.append({"task": "mmd_test", "n": n, "impl": impl, "permutations": permutations,
                              "device": args.device})

    results = []
    print(f"{'task':<9} {'n_s=n_t':>8} {'impl':<6} {'detail':<14} {'seconds':>9} {'peak RSS MiB':>13}")
    for case in cases:
        result = run_case(case)
        results.append(result)
        detail = f"B={case['permutations']}"
        if "error" in result:
            print(f"{case['task']:<9} {case['n']:>8} {case['impl']:<6} {detail:<14} failed: {result['error']}")
        else:
            print(f"{case['task']:<9} {case['n']:>8} {case['impl']:<6} {detail:<14} {result['seconds']:>9.2f} "
                  f"{result['peak_rss_mib']:>13.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
