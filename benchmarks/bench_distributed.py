"""MMD² forward + backward across processes: one process with 2 threads against 2 gloo processes with 1 thread each.

    python benchmarks/bench_distributed.py [--n 16000] [--d 64] [--repeats 3] [--quick] [--json results.json]

n = m points of dimension d (float32, Gaussian kernel, sigma = sqrt(2 d)). Rows: ``tl.kernels.mmd2`` in one process
(the fused op, 2 threads); ``tlkit.distributed.mmd2`` on W = 2 processes of 1 thread each on 127.0.0.1 (each rank
holds n/W and m/W rows). Time: median wall time of ``--repeats`` steps after a warm-up (rank 0's clock, the ranks
in lockstep). Bytes per step: what each rank receives — the forward all-gather of the features,
(W-1)/W·(n+m)·d·4, and the backward ring all-reduce of the gathered gradient, 2·(W-1)/W·(n+m)·d·4 (the three
all-reduced sums are negligible). Peak memory: ``ru_maxrss`` of each process (includes torch itself, ~0.3 GB).
Kernel rate: kernel pairs evaluated per second per thread, forward + backward, from the one-process row.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

import torch


def data(n, d, rank=0, world_size=1):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=generator)
    y = torch.randn(n, d, generator=generator) + 0.1
    rows = slice(rank * n // world_size, (rank + 1) * n // world_size)
    return x[rows].clone().requires_grad_(), y[rows].clone().requires_grad_()


def timed_steps(step, repeats):
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def single(n, d, repeats):
    import tlkit as tl
    torch.set_num_threads(2)
    x, y = data(n, d)
    sigma = (2 * d) ** 0.5

    def step():
        x.grad = y.grad = None
        tl.kernels.mmd2(x, y, sigma=sigma, backend="cpp").backward()

    return {"seconds": timed_steps(step, repeats), "peak_gib": [peak_gib()]}


def rank_main(rank, world_size, port, n, d, repeats):
    import torch.distributed as dist
    import tlkit.distributed as td
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    x, y = data(n, d, rank, world_size)
    sigma = (2 * d) ** 0.5

    def step():
        x.grad = y.grad = None
        td.mmd2(x, y, sigma=sigma, backend="cpp").backward()
        dist.barrier()

    seconds = timed_steps(step, repeats)
    peaks = [None] * world_size
    dist.all_gather_object(peaks, peak_gib())
    if rank == 0:
        print(json.dumps({"seconds": seconds, "peak_gib": peaks}), flush=True)
    dist.destroy_process_group()


def sharded(n, d, repeats, world_size=2):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, __file__, "--rank", str(rank), "--world-size", str(world_size),
                                   "--port", str(port), "--n", str(n), "--d", str(d), "--repeats", str(repeats)],
                                  env=env, stdout=subprocess.PIPE, text=True) for rank in range(world_size)]
    outputs = [process.communicate(timeout=1800)[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a rank failed: {outputs}")
    result = json.loads(outputs[0].strip().splitlines()[-1])
    result["bytes_per_rank"] = 3 * (world_size - 1) / world_size * (2 * n) * d * 4
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16000, help="n = m (the issue's 64000 takes minutes when loaded)")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n = 4000, one repeat")
    parser.add_argument("--json")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--port", type=int)
    args, _ = parser.parse_known_args()
    if args.rank is not None:
        return rank_main(args.rank, args.world_size, args.port, args.n, args.d, args.repeats)
    n, repeats = (4000, 1) if args.quick else (args.n, args.repeats)
    load = os.getloadavg()
    one = single(n, args.d, repeats)
    two = sharded(n, args.d, repeats)
    pairs = 2 * (2 * n) ** 2  # forward + backward over the pooled (2n)² pairs, counted once each
    rows = [("1 process x 2 threads (tl.kernels.mmd2)", one, 0.0),
            ("2 processes x 1 thread (tlkit.distributed.mmd2)", two, two["bytes_per_rank"])]
    print(f"MMD² fwd+bwd, n = m = {n}, d = {args.d}, float32; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'configuration':52s} {'time s':>8s} {'MB/step/rank':>13s} {'peak GiB/rank':>14s}")
    for name, result, sent in rows:
        print(f"{name:52s} {result['seconds']:8.2f} {sent / 1e6:13.1f} "
              f"{' / '.join(f'{p:.2f}' for p in result['peak_gib']):>14s}")
    rate = pairs / one["seconds"] / 2
    print(f"kernel rate (fwd+bwd pairs per second per thread): {rate:.3g}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"n": n, "d": args.d, "load_average": load, "single": one, "two_processes": two,
                       "pairs_per_second_per_thread": rate}, handle, indent=1)


if __name__ == "__main__":
    main()
