"""CPU timings of tlkit's fused C++ kernels against naive, chunked and (if installed) KeOps PyTorch code.

    python benchmarks/bench_kernels.py [--quick] [--dims 2 64 512] [--sizes 1000 4000 16000 64000]
                                       [--threads 2] [--no-scale] [--json results.json]

Rows: MMD² forward, MMD² forward + backward (gradients w.r.t. x and y) and nearest neighbour, for n = m points of
dimension d (float32, Gaussian kernel, sigma = sqrt(2 d), the median heuristic for these clouds), plus a scale run:
MMD² forward + backward at n = m = 200,000, d = 16.  Columns: tlkit (backend="cpp"); naive torch (cdist -> exp ->
mean with the n x m matrices in memory, autograd for the backward); chunked torch (row blocks of at most 2^22 kernel
entries: squared distances by cdist below d = 25, else by the norm expansion with y's norms computed once; exp; a
hand-written blockwise gradient accumulated in place; never more than one block of the kernel matrix in memory);
pykeops on the CPU when importable (`make bench` installs requirements/bench.txt; it compiles its kernels with the system C++
compiler on first use; if that fails the column is skipped with the error).  Time: median wall time of up to --repeats runs after a warm-up (a single run
once a call takes > 3 s; a call over 10 s is timed on the warm-up call itself).
Memory: peak resident-set growth during the warm-up call (freed heap first returned to the OS with malloc_trim),
sampled every millisecond from /proc/self/statm by a thread: a measurement, not an analytical count; peaks shorter
than the sampling period can be missed, and the extension's own load is excluded by a tiny call first.  Naive torch is
skipped, with the bytes it would need, where its matrices (12 n² bytes forward, 36 n² with autograd) exceed 16 GiB;
pykeops where its projected time (its previous size's, times the ratio of pairs) exceeds 60 s.

Issue-16 sections (also alone with --only-new):
  * physical floors measured here: fp32 GEMM rate (torch.mm, 2048^2, the set threads) and vectorised exp rate
    (the faster of torch.exp and tlkit's own exp2, benchmarks/exp_rate.cpp, on one thread over a cached 2^16-float
    block, times the threads); every row gets floor = pairs * (exps/pair / exp rate + flops/pair / GEMM rate) and the
    ratio time/floor.  Pairs: MMD² 2n² (one symmetric pass over z = [x; y], upper tiles: N²/2), kernel sum / nearest
    n·m; flops/pair 2d (distance) forward, 6d with the gradient (distance plus row and column contractions).
  * multi-bandwidth: tl.mmd2 with 5 bandwidths on DAN's ladder sigma_0 2^k (k = -2..2), and 5 off-ladder bandwidths,
    against 1 bandwidth in the same run (the ratio is the figure; absolute times move with the machine's load);
  * Gaussian kernel sum (tl.kernel_sum) against pykeops and chunked torch;
  * the aggregated MMD test (tl.metrics.mmd_agg_test, 7 bandwidths, B1 = B2 = 500) against a dense torch
    reference that forms the 7 kernel matrices.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import tlkit as tl

NAIVE_LIMIT_BYTES = 16 * 2**30
# pykeops rows whose projected time (the previous size's, times the pair ratio) exceeds this are skipped: on the CPU
# pykeops runs 25-95x slower than tlkit, and fwd+bwd at n = 4000, d = 512 already takes ~50 s.
KEOPS_LIMIT_SECONDS = 60.0
LONG_CALL_SECONDS = 10.0  # time such a call once, with no separate warm-up
# Entries of one kernel-matrix block in chunked torch: 16 MiB in float32 (64 MiB blocks ran 3.6x slower at d = 2).
CHUNK_ELEMENTS = 2**22


# --------------------------------------------------------------------------------------------------- baselines
def naive_mmd2(x, y, sigma):
    def mean_k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2)).mean()

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def squared_distances(block, b, b_sqnorm):
    """||block_i - b_j||^2: cdist's direct form below d = 25 (where torch.cdist itself switches), above it the norm
    expansion with b's norms computed once (cdist would recompute them for every block)."""
    if b_sqnorm is None:
        return torch.cdist(block, b).pow_(2)
    return torch.addmm(block.square().sum(1, keepdim=True) + b_sqnorm, block, b.T, alpha=-2).clamp_min_(0)


def column_norms(b):
    return b.square().sum(1) if b.shape[1] >= 25 else None


def chunked_term(a, b, sigma, with_grad):
    """sum_ij k(a_i, b_j) and, if with_grad, its gradients w.r.t. a and b, in row blocks of a."""
    rows = max(1, CHUNK_ELEMENTS // len(b))
    b_sqnorm = column_norms(b)
    total = a.new_zeros((), dtype=torch.float64)
    if with_grad:
        ga, column_sums, kernel_t_a = torch.empty_like(a), b.new_zeros(len(b)), torch.zeros_like(b)
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        k = torch.exp(squared_distances(block, b, b_sqnorm).mul_(-0.5 / sigma**2))
        total += k.sum(dtype=torch.float64)
        if with_grad:  # d k(a, b) / d a = -k (a - b) / sigma^2; b's side accumulated in place, combined once
            ga[start:start + rows] = -(block * k.sum(1, keepdim=True) - k @ b) / sigma**2
            column_sums += k.sum(0)
            kernel_t_a.addmm_(k.T, block)
    if not with_grad:
        return total, None, None
    return total, ga, -(b * column_sums[:, None] - kernel_t_a) / sigma**2


def chunked_mmd2(x, y, sigma, with_grad=False):
    """Biased MMD² and (if with_grad) its gradients, never holding more than one kernel block."""
    n, m = len(x), len(y)
    txx, gxx_a, gxx_b = chunked_term(x, x, sigma, with_grad)
    tyy, gyy_a, gyy_b = chunked_term(y, y, sigma, with_grad)
    txy, gxy_a, gxy_b = chunked_term(x, y, sigma, with_grad)
    value = txx / n**2 + tyy / m**2 - 2 * txy / (n * m)
    if not with_grad:
        return value, None, None
    gx = (gxx_a + gxx_b) / n**2 - 2 * gxy_a / (n * m)
    gy = (gyy_a + gyy_b) / m**2 - 2 * gxy_b / (n * m)
    return value, gx, gy


def chunked_nearest(x, y):
    # Results go into preallocated outputs: small tensors kept per block would be carved out of the freed blocks,
    # and glibc's heap then grows by a block per block (24 GB and an OOM kill at n = 64k after the naive run).
    rows = max(1, CHUNK_ELEMENTS // len(y))
    y_sqnorm = column_norms(y)
    distance, index = x.new_empty(len(x)), torch.empty(len(x), dtype=torch.long)
    for start in range(0, len(x), rows):
        block = squared_distances(x[start:start + rows], y, y_sqnorm)
        torch.min(block, dim=1, out=(distance[start:start + rows], index[start:start + rows]))
    return distance.sqrt_(), index


def keops_module():
    try:
        from pykeops.torch import LazyTensor
    except ImportError:
        return None
    return LazyTensor


def keops_mmd2(LazyTensor, x, y, sigma):
    def mean_k(a, b):
        d2 = ((LazyTensor(a[:, None, :]) - LazyTensor(b[None, :, :])) ** 2).sum(-1)
        return (-d2 / (2 * sigma**2)).exp().sum(1).sum() / (len(a) * len(b))

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def keops_kernel_sum(LazyTensor, x, y, sigma):
    d2 = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)
    return (-d2 / (2 * sigma**2)).exp().sum(1)


def chunked_kernel_sum(x, y, sigma):
    rows = max(1, CHUNK_ELEMENTS // len(y))
    y_sqnorm = column_norms(y)
    out = x.new_empty(len(x))
    for start in range(0, len(x), rows):
        out[start:start + rows] = torch.exp(squared_distances(x[start:start + rows], y, y_sqnorm)
                                            .mul_(-0.5 / sigma**2)).sum(1)
    return out


def keops_nearest(LazyTensor, x, y):
    d2 = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)
    return d2.min(1).sqrt(), d2.argmin(1)


# ------------------------------------------------------------------------------------------------- measuring
class PeakRSS:
    """Peak growth of the resident set during a `with` block, sampled every millisecond."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.base


def release_freed_memory():
    """Return freed heap pages to the OS so that the next call's RSS growth is visible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: growth may then be under-reported
        pass


def measure(fn, repeats):
    """(median seconds, peak RSS growth in bytes of the first call) of fn().

    The first call is a warm-up; a call that takes over LONG_CALL_SECONDS is timed on that call alone, where
    warm-up effects are lost in the noise.
    """
    release_freed_memory()
    with PeakRSS() as mem:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    if first > LONG_CALL_SECONDS:
        return first, mem.delta
    times = []
    for _ in range(repeats if first < 3.0 else 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), mem.delta


def task_functions(task, sigma, LazyTensor):
    """name -> (function(x, y), bytes it needs or None) for one task."""
    def with_backward(loss_fn):
        def run(x, y):
            xg, yg = x.detach().requires_grad_(), y.detach().requires_grad_()
            loss_fn(xg, yg).backward()
            return xg.grad, yg.grad
        return run

    if task == "nearest":
        fns = {"tlkit": lambda x, y: tl.nearest(x, y, backend="cpp"),
               # backend="auto": scikit-learn's KD-tree where tl.kernels.backend_info()["nearest"] says so
               "tl-auto": lambda x, y: tl.nearest(x, y),
               "naive": lambda x, y: torch.cdist(x, y).min(dim=1),
               "chunked": chunked_nearest}
        if LazyTensor is not None:
            fns["keops"] = lambda x, y: keops_nearest(LazyTensor, x, y)
        return fns
    tlkit_loss = lambda x, y: tl.mmd2(x, y, sigma=sigma, backend="cpp")  # noqa: E731
    naive_loss = lambda x, y: naive_mmd2(x, y, sigma)  # noqa: E731
    backward = task == "fwd+bwd"
    fns = {"tlkit": with_backward(tlkit_loss) if backward else tlkit_loss,
           "naive": with_backward(naive_loss) if backward else naive_loss,
           "chunked": lambda x, y: chunked_mmd2(x, y, sigma, with_grad=backward)}
    if LazyTensor is not None:
        keops_loss = lambda x, y: keops_mmd2(LazyTensor, x, y, sigma)  # noqa: E731
        fns["keops"] = with_backward(keops_loss) if backward else keops_loss
    return fns


# ------------------------------------------------------------------------------------------ physical floors
def measure_floors(threads):
    """Physical floors measured on this machine (best of 5 each): fp32 GEMM flop/s and the exp rates.

    GEMM: torch.mm of 2048 x 2048 fp32 matrices with `threads` threads.  exp: one thread over a 2^16-float block
    (cache-resident), 256 times per measurement, times `threads` (perfect scaling: a floor, not a forecast), for two
    exps: torch.exp (MKL's vector math where torch uses it) and tlkit's own exp2 (csrc/exp2.h, compiled here with the
    extension's flags and summed as the kernels sum it).  The floor takes the faster: a kernel row cannot beat the
    exp it runs.  A 2^24-float array would measure memory bandwidth; small blocks on 2 threads of a shared machine
    measure the thread pool's wake-ups.  Returns {"gemm_flops", "exp_per_s", "torch_exp_per_s", "tlkit_exp_per_s",
    "exp_source", "tlkit_exp_error"}."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    out = torch.empty(2048, 2048)
    gemm = min(measure_once(lambda: torch.mm(a, b, out=out)) for _ in range(5))
    torch.set_num_threads(1)
    block, repeats = 1 << 16, 256
    v = torch.rand(block) * -20
    w = torch.empty_like(v)

    def torch_exps():
        for _ in range(repeats):
            torch.exp(v, out=w)

    torch_rate = threads * block * repeats / min(measure_once(torch_exps) for _ in range(5))
    torch.set_num_threads(threads)
    floors = {"gemm_flops": 2 * 2048**3 / gemm, "torch_exp_per_s": torch_rate, "tlkit_exp_per_s": None,
              "tlkit_exp_error": None}
    try:
        sums = tlkit_exp_sums()
        t = (v / 20).numpy()  # in [-1, 0]: 2^(rate t) with rate = 20 log2(e) is exp(v), torch.exp's block
        pointer = t.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rate = ctypes.c_float(20 / np.log(2))
        seconds = min(measure_once(lambda: sums(pointer, block, rate, repeats)) for _ in range(5))
        floors["tlkit_exp_per_s"] = threads * block * repeats / seconds
    except (OSError, subprocess.CalledProcessError) as exc:
        floors["tlkit_exp_error"] = f"{type(exc).__name__}: {exc}"[:300]
    fastest = max(("torch", torch_rate), ("tlkit", floors["tlkit_exp_per_s"] or 0.0), key=lambda item: item[1])
    floors["exp_source"], floors["exp_per_s"] = fastest
    return floors


def tlkit_exp_sums():
    """tlkit's exp2 summed over a block (benchmarks/exp_rate.cpp), compiled with the extension's C++ flags."""
    from tlkit.kernels import _build

    compiler = os.environ.get("CXX", "c++")
    flags = [f for f in _build.FLAGS["cpp"]["extra_cflags"] if f != "-fopenmp"] + ["-fopenmp-simd"]
    with tempfile.TemporaryDirectory(prefix="tlkit-exp-rate-") as folder:  # a loaded library outlives its file
        library = Path(folder) / "exp_rate.so"
        subprocess.run([compiler, "-std=c++20", *flags, "-shared", "-fPIC", f"-I{_build.CSRC}",
                        str(Path(__file__).with_name("exp_rate.cpp")), "-o", str(library)],
                       check=True, capture_output=True, text=True)
        sums = ctypes.CDLL(str(library)).tlkit_exp2_sums
    sums.restype = ctypes.c_double
    sums.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_long, ctypes.c_float, ctypes.c_int]
    return sums


def measure_once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def floor_seconds(floors, pairs, exps, flops):
    return pairs * (exps / floors["exp_per_s"] + flops / floors["gemm_flops"])


def row_floor(task, n, d, floors):
    if task == "nearest":
        return floor_seconds(floors, n * n, 0, 2 * d)
    pairs = 2 * n * n  # N = 2n points, N^2 / 2 pairs in the symmetric pass
    return floor_seconds(floors, pairs, 1, 2 * d if task == "fwd" else 6 * d)


def keops_works(LazyTensor):
    """None if a tiny pykeops reduction runs here, else the error (first line)."""
    try:
        keops_kernel_sum(LazyTensor, torch.randn(10, 2), torch.randn(10, 2), 1.0)
        return None
    except Exception as exc:  # compilation failures surface as many exception types
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def dense_agg_statistics(pooled, n, m, splits, sigmas):
    """The dense reference of the aggregated test's statistics: the S kernel matrices formed in memory."""
    r2 = torch.cdist(pooled, pooled).pow(2)
    a = splits.to(pooled.dtype)
    out = []
    for s in sigmas:
        K = torch.exp(-r2 / (2 * s * s))
        K.fill_diagonal_(0)
        b = 1 - a
        out.append(((a * (K @ a)).sum(0) / (n * (n - 1)) + (b * (K @ b)).sum(0) / (m * (m - 1))
                    - 2 * (a * (K @ b)).sum(0) / (n * m)))
    return torch.stack(out)


def new_sections(args, floors, LazyTensor, keops_error):
    """Multi-bandwidth, kernel sum (with pykeops) and aggregated-test rows; returns their JSON rows."""
    rows = []
    generator = torch.Generator().manual_seed(1)
    n = args.multi_size
    print(f"\nmulti-bandwidth MMD², n = m = {n:,}, {args.repeats} interleaved rounds (ratios against 1 bandwidth "
          "in the same round; on a shared machine absolute times move with its load, the ratios much less)")
    for d in args.multi_dims:
        x = torch.randn(n, d, generator=generator)
        y = torch.randn(n, d, generator=generator) + 0.5
        s0 = (2.0 * d) ** 0.5
        cases = {"1 bandwidth": [s0], "5 ladder 2^k": [s0 * 2.0**k for k in (-2, -1, 0, 1, 2)],
                 "5 off-ladder": [s0 * f for f in (0.3, 0.7, 1.1, 1.9, 3.7)]}
        for task in ("fwd", "fwd+bwd"):
            # interleaved rounds: each round times every case once, the ratio is the median over rounds of
            # time(case) / time(1 bandwidth) in the same round (robust to the load drifting between rounds)
            fns = {label: task_functions(task, sig, None)["tlkit"] for label, sig in cases.items()}
            for fn in fns.values():
                fn(x, y)  # warm-up
            times = {label: [] for label in cases}
            for _ in range(args.repeats):
                for label, fn in fns.items():
                    times[label].append(measure_once(lambda: fn(x, y)))
            for label in cases:
                seconds = statistics.median(times[label])
                ratio = statistics.median(t / one for t, one in zip(times[label], times["1 bandwidth"]))
                exps = {"1 bandwidth": 1, "5 ladder 2^k": 2, "5 off-ladder": 5}[label]
                floor = floor_seconds(floors, 2 * n * n, exps, 2 * d if task == "fwd" else 6 * d)
                rows.append({"section": "multi", "task": task, "d": d, "n": n, "bandwidths": label,
                             "seconds": seconds, "ratio_to_one": ratio, "round_seconds": times[label],
                             "floor_seconds": floor})
                print(f"  {task:8} d={d:<4} {label:14} {seconds:8.4f} s  {ratio:5.2f}x one bandwidth  "
                      f"floor {floor:.4f} s ({exps} exp/pair in fp32), {seconds / floor:5.1f}x floor", flush=True)

    print(f"\nGaussian kernel sum, n = m = {n:,}" + ("" if LazyTensor else "  (pykeops: skipped)")
          + (f"  (pykeops failed here: {keops_error})" if keops_error else ""))
    for d in args.multi_dims:
        x = torch.randn(n, d, generator=generator)
        y = torch.randn(n, d, generator=generator)
        sigma = (2.0 * d) ** 0.5
        fns = {"tlkit": lambda: tl.kernel_sum(x, y, sigma, backend="cpp"),
               "chunked": lambda: chunked_kernel_sum(x, y, sigma)}
        if LazyTensor is not None and keops_error is None:
            keops_kernel_sum(LazyTensor, x[:16], y[:16], sigma)  # compiles this d's formula outside the timing
            fns["keops"] = lambda: keops_kernel_sum(LazyTensor, x, y, sigma)
        floor = floor_seconds(floors, n * n, 1, 2 * d)
        row = {"section": "kernel_sum", "d": d, "n": n, "floor_seconds": floor}
        for name, fn in fns.items():
            seconds, _ = measure(fn, args.repeats)
            row[name] = seconds
            print(f"  d={d:<4} {name:8} {seconds:8.4f} s  {seconds / row['tlkit']:6.2f}x tlkit  "
                  f"{seconds / floor:5.1f}x floor ({floor:.4f} s)", flush=True)
        rows.append(row)

    na, B = args.agg_size, 500
    print(f"\naggregated MMD test (MMDAgg), n = m = {na}, d = 2, 7 bandwidths, B1 = B2 = {B}")
    x = torch.randn(na, 2, generator=generator)
    y = torch.randn(na, 2, generator=generator) + 0.2
    fused, _ = measure(lambda: tl.metrics.mmd_agg_test(x, y, n_permutations=B, n_level_permutations=B,
                                                       random_state=0, backend="cpp"), args.repeats)
    from tlkit.metrics import shift
    rng = np.random.default_rng(0)
    splits = torch.from_numpy(shift._split_indicators(rng, na, na, 2 * B + 1))
    base = tl.median_bandwidth(x, y)
    sigmas = [base * 2.0**k for k in range(-4, 3)]
    pooled = torch.cat([x, y])
    dense, peak = measure(lambda: dense_agg_statistics(pooled, na, na, splits, sigmas), args.repeats)
    pairs = (2 * na) ** 2
    floor = floor_seconds(floors, pairs, 3, 2 * (2 * B + 2) * len(sigmas))  # K_s V: 2 flops per column per pair
    rows.append({"section": "mmd_agg", "n": na, "B": B, "tlkit_seconds": fused, "dense_seconds": dense,
                 "dense_peak_rss_bytes": peak, "floor_seconds": floor})
    print(f"  tlkit (fused, no kernel matrix) {fused:8.4f} s   dense torch (7 matrices) {dense:8.4f} s "
          f"({dense / fused:.2f}x tlkit), floor {floor:.4f} s, tlkit {fused / floor:.1f}x floor", flush=True)
    return rows


def naive_bytes(task, n):
    return {"fwd": 12, "fwd+bwd": 36, "nearest": 4}[task] * n * n


def gib(nbytes):
    return nbytes / 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 1000 and 4000 only, no scale run (< ~1 min)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-scale", action="store_true", help="skip the 200k x 16 scale run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only-new", action="store_true", help="only the floors, multi-bandwidth, kernel-sum and "
                        "aggregated-test sections")
    parser.add_argument("--multi-size", type=int, default=16000, help="n = m of the multi-bandwidth/kernel-sum rows")
    parser.add_argument("--multi-dims", type=int, nargs="+", default=[2, 64])
    parser.add_argument("--agg-size", type=int, default=500, help="n = m of the aggregated-test row")
    args = parser.parse_args()
    if args.quick:
        args.multi_size, args.agg_size = min(args.multi_size, 4000), min(args.agg_size, 200)
    sizes = [s for s in args.sizes if s <= 4000] if args.quick else args.sizes
    torch.set_num_threads(args.threads)
    LazyTensor = keops_module()
    keops_error = keops_works(LazyTensor) if LazyTensor is not None else None
    if keops_error:
        print(f"pykeops is installed but does not run here, skipped: {keops_error}")
        LazyTensor = None
    print(f"threads={args.threads}  pykeops={'yes' if LazyTensor else 'not available (skipped)'}  "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    tiny = torch.zeros(2, 1)
    tl.mmd2(tiny, tiny, sigma=1.0, backend="cpp")  # builds/loads the extension outside the measurements
    floors = measure_floors(args.threads)
    tlkit_exp = (f"{floors['tlkit_exp_per_s'] / 1e9:.2f} G/s" if floors["tlkit_exp_per_s"]
                 else f"not measured ({floors['tlkit_exp_error']})")
    print(f"physical floors measured here: fp32 GEMM {floors['gemm_flops'] / 1e9:.1f} GFLOP/s (torch.mm 2048^2); "
          f"vectorised exp, 1 thread x threads: torch.exp {floors['torch_exp_per_s'] / 1e9:.2f} G/s, tlkit's exp2 "
          f"{tlkit_exp}; the floors use {floors['exp_source']}'s")
    new_rows = new_sections(args, floors, LazyTensor, keops_error)
    torch.set_num_threads(args.threads)
    if args.only_new:
        sizes, args.no_scale = [], True
    results = []
    header = (f"{'task':8} {'d':>4} {'n':>6} | {'method':8} {'time s':>9} {'peak MiB':>9} | {'vs tlkit':>8} "
              f"| to floor")
    print(header + "\n" + "-" * len(header))
    generator = torch.Generator().manual_seed(0)
    for d in args.dims:
        sigma = (2.0 * d) ** 0.5
        keops_last = {}  # task -> (n, seconds) of its last timed pykeops row
        for n in sizes:
            x = torch.randn(n, d, generator=generator)
            y = torch.randn(n, d, generator=generator) + 0.5
            for task in ("fwd", "fwd+bwd", "nearest"):
                row = {"task": task, "d": d, "n": n}
                for name, fn in task_functions(task, sigma, LazyTensor).items():
                    need = naive_bytes(task, n)
                    if name == "naive" and need > NAIVE_LIMIT_BYTES:
                        row[name] = {"skipped": "OOM", "needs_bytes": need}
                        print(f"{task:8} {d:>4} {n:>6} | {name:8} OOM-skipped (needs {gib(need):.1f} GiB)")
                        continue
                    if name == "keops" and task in keops_last:
                        projected = keops_last[task][1] * (n / keops_last[task][0]) ** 2
                        if projected > KEOPS_LIMIT_SECONDS:
                            row[name] = {"skipped": "slow", "projected_seconds": projected}
                            print(f"{task:8} {d:>4} {n:>6} | {name:8} skipped (projected {projected:.0f} s "
                                  f"> {KEOPS_LIMIT_SECONDS:.0f} s)")
                            continue
                    if name == "keops":
                        fn(x[:16], y[:16])  # KeOps compiles each formula (per d) on first use: not timed
                    seconds, peak = measure(lambda: fn(x, y), args.repeats)
                    row[name] = {"seconds": seconds, "peak_rss_bytes": peak}
                    if name == "keops":
                        keops_last[task] = (n, seconds)
                    floor = row_floor(task, n, d, floors)
                    row["floor_seconds"] = floor
                    ratio = "" if name == "tlkit" else f"{seconds / row['tlkit']['seconds']:.2f}x"
                    print(f"{task:8} {d:>4} {n:>6} | {name:8} {seconds:9.4f} {peak / 2**20:9.1f} | {ratio:>8} "
                          f"| {seconds / floor:6.1f}x floor", flush=True)
                results.append(row)

    scale = None
    if not (args.quick or args.no_scale):
        n, d = 200_000, 16
        x = torch.randn(n, d, generator=generator)
        y = torch.randn(n, d, generator=generator) + 0.5
        sigma = (2.0 * d) ** 0.5
        fn = task_functions("fwd+bwd", sigma, None)["tlkit"]
        release_freed_memory()
        with PeakRSS() as mem:
            start = time.perf_counter()
            fn(x, y)
            seconds = time.perf_counter() - start
        scale = {"task": "fwd+bwd", "n": n, "d": d, "seconds": seconds, "peak_rss_bytes": mem.delta}
        print(f"\nscale run: MMD² fwd+bwd, n = m = {n:,}, d = {d}: {seconds:.1f} s, "
              f"peak extra memory {mem.delta / 2**20:.0f} MiB ({'<' if mem.delta < 2**30 else '>='} 1 GiB)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": results, "scale": scale, "issue16_rows": new_rows,
                       "floors": floors,
                       "load_average": os.getloadavg()[0],
                       "memory": "peak RSS growth sampled every 1 ms"}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
