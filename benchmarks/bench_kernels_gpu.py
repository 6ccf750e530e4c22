"""GPU timings of tlkit's fused CUDA kernels against naive and chunked PyTorch on the same card.

    python benchmarks/bench_kernels_gpu.py [--dims 2 64 512] [--sizes 1000 4000 16000 64000] [--no-million]
                                           [--repeats 5] [--json results.json]

Rows: MMD² forward, MMD² forward + backward (gradients w.r.t. x and y) and nearest neighbour, for n = m points of
dimension d (float32, Gaussian kernel, sigma = sqrt(2 d)), plus MMD² forward at n = m = 1,000,000, d = 64.
Columns: tlkit (backend="cuda"), naive torch (cdist -> exp -> mean, the n x m matrices in memory) and chunked
torch (tlkit's backend="torch": row blocks), median wall time over --repeats runs measured with CUDA events after a
warm-up, and the speed-ups of tlkit over each. "OOM" marks a method that ran out of GPU memory.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch

import tlkit as tl


def naive_mmd2(x, y, sigma):
    def mean_k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2)).mean()

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def naive_nearest(x, y):
    return torch.cdist(x, y).min(dim=1)


def methods(task, sigma):
    """name -> function(x, y) running one timed call of `task` ("fwd", "fwd+bwd", "nearest")."""
    def mmd_with(fn):
        if task == "fwd":
            return lambda x, y: fn(x, y)

        def forward_backward(x, y):
            xg, yg = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
            return torch.autograd.grad(fn(xg, yg), (xg, yg))
        return forward_backward

    if task == "nearest":
        return {"tlkit cuda": lambda x, y: tl.nearest(x, y, backend="cuda"),
                "naive torch": naive_nearest,
                "chunked torch": lambda x, y: tl.nearest(x, y, backend="torch")}
    return {"tlkit cuda": mmd_with(lambda x, y: tl.mmd2(x, y, sigma, backend="cuda")),
            "naive torch": mmd_with(lambda x, y: naive_mmd2(x, y, sigma)),
            "chunked torch": mmd_with(lambda x, y: tl.mmd2(x, y, sigma, backend="torch"))}


def time_call(fn, x, y, repeats):
    """Median seconds of fn(x, y) over `repeats` runs after one warm-up, or None when it runs out of memory."""
    try:
        fn(x, y)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x, y)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        torch.cuda.empty_cache()


def run(args):
    device = torch.device("cuda")
    rows = []
    cases = [(task, d, n) for d in args.dims for n in args.sizes for task in ("fwd", "fwd+bwd", "nearest")]
    if not args.no_million:
        cases.append(("fwd", 64, 1_000_000))
    for task, d, n in cases:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(n, d, device=device, generator=g)
        y = torch.randn(n, d, device=device, generator=g) + 0.1
        sigma = math.sqrt(2 * d)
        big = n >= 1_000_000
        row = {"task": task, "d": d, "n": n, "m": n, "seconds": {}}
        for name, fn in methods(task, sigma).items():
            if big and name != "tlkit cuda" and not args.million_baselines:
                continue  # naive torch cannot hold 1e12-entry matrices; chunked torch takes minutes (--million-baselines)
            row["seconds"][name] = time_call(fn, x, y, 1 if big else args.repeats)
        ours = row["seconds"].get("tlkit cuda")
        row["speedup"] = {name: (t / ours if t and ours else None) for name, t in row["seconds"].items()
                          if name != "tlkit cuda"}
        rows.append(row)
        print(format_row(row), flush=True)
        del x, y
    return rows


def format_time(t):
    return "OOM" if t is None else (f"{t * 1e3:9.2f} ms" if t < 1 else f"{t:9.3f} s ")


def format_row(row):
    times = "  ".join(f"{name}: {format_time(t)}" for name, t in row["seconds"].items())
    ratios = "  ".join(f"x{r:.1f} vs {name}" if r else f"- vs {name}" for name, r in row["speedup"].items())
    return f"{row['task']:8s} d={row['d']:<4d} n=m={row['n']:<8d} {times}  {ratios}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 512])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 4_000, 16_000, 64_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-million", action="store_true", help="skip the n = m = 1,000,000, d = 64 MMD² row")
    parser.add_argument("--million-baselines", action="store_true", help="also time the torch baselines at 1M")
    parser.add_argument("--json", metavar="PATH", help="write the rows and the device name as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels_gpu: no CUDA device visible to torch; nothing to measure.")
        return 0
    info = tl.kernels.backend_info("cuda")
    if not info["cuda"]["available"]:
        print(f"bench_kernels_gpu: the tlkit CUDA kernels are unavailable: {info['cuda']['reason']}")
        return 1
    device_name = torch.cuda.get_device_name()
    print(f"device: {device_name}; torch {torch.__version__}; float32, gaussian kernel, median of {args.repeats}")
    rows = run(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device_name, "torch": torch.__version__, "rows": rows}, handle, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
