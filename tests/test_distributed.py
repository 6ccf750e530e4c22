"""tlkit.distributed across real processes: gloo on 127.0.0.1, 2 and 3 ranks, each group spawned once per module.

Run as a script this file is the worker: ``python test_distributed.py RANK WORLD PORT OUTDIR``. Every rank computes
the losses, their gradients w.r.t. its own rows, a sharded ``mmd_test``, one DDP step of DAN (2 ranks) and the
bad-input errors, and pickles them; the tests compare them with the single-process values on the concatenated data.
"""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Global samples and their shards: equal and unequal (one rank with a single row) for 2 and 3 ranks.
N, M, D = 12, 12, 5
SPLITS = {2: {"equal": ([6, 6], [6, 6]), "unequal": ([1, 11], [8, 4])},
          3: {"equal": ([4, 4, 4], [4, 4, 4]), "unequal": ([2, 1, 9], [1, 6, 5])}}
LAYER_DIMS = (5, 3)
DDP_BATCH, DDP_LR, DDP_WEIGHT = 8, 0.5, 1.0


def global_data(dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    y = 0.8 * torch.randn(M, D, generator=generator, dtype=torch.float64) + 0.7
    extra_x = torch.randn(N, LAYER_DIMS[1], generator=generator, dtype=torch.float64)
    extra_y = torch.randn(M, LAYER_DIMS[1], generator=generator, dtype=torch.float64) - 0.5
    return [t.to(dtype) for t in (x, y, extra_x, extra_y)]


def losses():
    """name → f(x, y, x2, y2, group): each takes row blocks (or global samples with group=None)."""
    import tlkit.distributed as td
    return {
        "mmd2_biased": lambda x, y, x2, y2, g: td.mmd2(x, y, sigma=1.5, group=g),
        "mmd2_unbiased_median": lambda x, y, x2, y2, g: td.mmd2(x, y, estimator="unbiased", group=g),
        "mmd2_laplacian_multi": lambda x, y, x2, y2, g: td.mmd2(x, y, sigma=[1.0, 3.0], kernel="laplacian",
                                                                group=g),
        "mk_mmd2": lambda x, y, x2, y2, g: td.mk_mmd2(x, y, group=g),
        "joint_mmd2": lambda x, y, x2, y2, g: td.joint_mmd2([x, x2], [y, y2], group=g),
        "coral_loss": lambda x, y, x2, y2, g: td.coral_loss(x, y, group=g),
    }


def single_process(name, dtype):
    """Value and gradients (w.r.t. x, y, x2, y2) on the concatenated data, with the single-process tl ops."""
    import tlkit as tl
    x, y, x2, y2 = [t.requires_grad_() for t in global_data(dtype)]
    reference = {
        "mmd2_biased": lambda: tl.kernels.mmd2(x, y, sigma=1.5),
        "mmd2_unbiased_median": lambda: tl.kernels.mmd2(x, y, estimator="unbiased"),
        "mmd2_laplacian_multi": lambda: tl.kernels.mmd2(x, y, sigma=[1.0, 3.0], kernel="laplacian"),
        "mk_mmd2": lambda: tl.feature.MKMMDLoss()(x, y),
        "joint_mmd2": lambda: _joint_reference(x, y, x2, y2),
        "coral_loss": lambda: tl.feature.CORALLoss()(x, y),
    }[name]()
    grads = torch.autograd.grad(reference, [x, y, x2, y2], allow_unused=True)
    return float(reference.detach()), [None if g is None else g.double() for g in grads]


def _joint_reference(x, y, x2, y2):
    """JMMD² by brute force: the product of the two layers' Gaussian kernel matrices, median bandwidths."""
    import tlkit as tl
    kernel = 1.0
    for a, b in ((x, y), (x2, y2)):
        sigma = tl.kernels.median_bandwidth(a, b)
        z = torch.cat([a, b]).double()
        kernel = kernel * torch.exp(-torch.cdist(z, z) ** 2 / (2 * sigma ** 2))
    n = x.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def shard(tensor, counts, rank):
    start = sum(counts[:rank])
    return tensor[start:start + counts[rank]]


def relative_error(value, reference):
    return abs(value - reference) / max(abs(reference), 1e-300)


def gradients_match(rank_slices, reference, counts, tolerance):
    """Σ over ranks of each rank's gradient slice, placed in its rows, against the single-process gradient."""
    total = torch.zeros_like(reference)
    for rank, part in enumerate(rank_slices):
        start = sum(counts[:rank])
        total[start:start + counts[rank]] += part
    scale = reference.abs().max()
    return bool(((total - reference).abs().max() <= tolerance * scale).item())


# ------------------------------------------------------------------------------------------------ the worker
class TinyDAN(torch.nn.Module):
    """Features φ and a linear head; forward returns (features, logits) so DDP sees one forward per step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        features = self.features(x)
        return features, self.head(features)


def _dan_batch():
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(2 * DDP_BATCH, D, generator=generator)
    labels = torch.randint(0, 3, (2 * DDP_BATCH,), generator=generator)
    target = torch.randn(2 * DDP_BATCH, D, generator=generator) + 0.5
    return source, labels, target


def dan_step(model, source, labels, target, mmd_loss):
    """One SGD step of DAN: cross-entropy on the source + MK-MMD between the hidden features."""
    optimiser = torch.optim.SGD(model.parameters(), lr=DDP_LR)
    features, logits = model(torch.cat([source, target]))
    n = source.shape[0]
    loss = (torch.nn.functional.cross_entropy(logits[:n], labels)
            + DDP_WEIGHT * mmd_loss(features[:n], features[n:]))
    loss.backward()
    optimiser.step()
    return loss.detach()


def _worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    import tlkit as tl
    import tlkit.distributed as td

    results = {"values": {}, "grads": {}}
    for dtype in (torch.float64, torch.float32):
        for split, (counts_x, counts_y) in SPLITS[world_size].items():
            data = global_data(dtype)
            for name, loss in losses().items():
                parts = [shard(t, counts_x if i % 2 == 0 else counts_y, rank).clone().requires_grad_()
                         for i, t in enumerate(data)]
                value = loss(*parts, None)
                grads = torch.autograd.grad(value, parts, allow_unused=True)
                key = (str(dtype), split, name)
                results["values"][key] = float(value)
                results["grads"][key] = [None if g is None else g.double() for g in grads]

    # The SimCLR-style gather whose backward returns only this rank's slice of its own gradient (not reduced).
    original = td._GatherRows.backward

    def unreduced_backward(ctx, grad):
        start = sum(ctx.counts[:ctx.rank])
        return grad[start:start + ctx.counts[ctx.rank]], None, None

    td._GatherRows.backward = staticmethod(unreduced_backward)
    counts_x, counts_y = SPLITS[world_size]["equal"]
    x, y = [shard(t, c, rank).clone().requires_grad_()
            for t, c in zip(global_data(torch.float64)[:2], (counts_x, counts_y))]
    results["wrong_gather_grads"] = [g.double() for g in
                                     torch.autograd.grad(td.mmd2(x, y, sigma=1.5), [x, y])]
    td._GatherRows.backward = original

    for split, (counts_x, counts_y) in SPLITS[world_size].items():
        x, y = global_data(torch.float64)[:2]
        results[("mmd_test", split)] = td.mmd_test(shard(x, counts_x, rank), shard(y, counts_y, rank),
                                                   n_permutations=300, batch_size=128, random_state=7)

    if world_size == 2:
        model = torch.nn.parallel.DistributedDataParallel(TinyDAN())
        source, labels, target = _dan_batch()
        rows = slice(rank * DDP_BATCH, (rank + 1) * DDP_BATCH)
        results["ddp_loss"] = float(dan_step(model, source[rows], labels[rows],
                                             target[rows], tl.feature.MKMMDLoss(distributed=True)))
        results["ddp_params"] = [p.detach().clone() for p in model.module.parameters()]

    x, y = global_data(torch.float64)[:2]
    bad_inputs = {
        "feature_dims": (x[:4, :(4 if rank == 1 else 5)], y[:4], "mmd2"),
        "zero_rows": (x[:(0 if rank == 1 else 3)], y[:1], "unbiased"),
        "mixed_devices": (x[:4], y[:4].to("meta") if rank == 1 else y[:4], "mmd2"),
        "coral_total_rows": (x[:1] if rank == 0 else x[:0], y[:3], "coral"),
    }
    results["errors"] = {}
    for case, (a, b, which) in bad_inputs.items():
        started = time.perf_counter()
        try:
            if which == "mmd2":
                td.mmd2(a, b, sigma=1.0)
            elif which == "unbiased":
                td.mmd2(a, b, sigma=1.0, estimator="unbiased")
            else:
                td.coral_loss(a, b)
            outcome = "no error"
        except ValueError as error:
            outcome = f"ValueError: {error}"
        results["errors"][case] = (outcome, time.perf_counter() - started)
    dist.barrier()
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as handle:
        pickle.dump(results, handle)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the tests
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(world_size, out_dir, timeout=240):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, __file__, str(rank), str(world_size), str(port), str(out_dir)],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank in range(world_size)]
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(output)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"rank {rank} of {world_size} failed:\n{output[-3000:]}"
    return [pickle.loads((Path(out_dir) / f"rank{rank}.pkl").read_bytes()) for rank in range(world_size)]


@pytest.fixture(scope="module", params=[2, 3], ids=["2 ranks", "3 ranks"])
def ranks(request, tmp_path_factory):
    return request.param, spawn(request.param, tmp_path_factory.mktemp(f"world{request.param}"))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("split", ["equal", "unequal"])
@pytest.mark.parametrize("name", list(losses()))
def test_loss_and_gradients_equal_the_global_batch(ranks, name, split, dtype, tolerance):
    world_size, results = ranks
    value, reference_grads = single_process(name, dtype)
    key = (str(dtype), split, name)
    for rank in range(world_size):
        assert relative_error(results[rank]["values"][key], value) <= tolerance, (rank, results[rank]["values"][key],
                                                                                   value)
    counts_x, counts_y = SPLITS[world_size][split]
    for index, reference in enumerate(reference_grads):
        if reference is None:
            continue
        counts = counts_x if index % 2 == 0 else counts_y
        slices = [results[rank]["grads"][key][index] for rank in range(world_size)]
        assert gradients_match(slices, reference, counts, 10 * tolerance), (name, index)


def test_an_unreduced_gather_fails_the_gradient_check(ranks):
    world_size, results = ranks
    _, (grad_x, grad_y, _, _) = single_process("mmd2_biased", torch.float64)
    counts_x, counts_y = SPLITS[world_size]["equal"]
    correct = [results[rank]["grads"][(str(torch.float64), "equal", "mmd2_biased")][0] for rank in range(world_size)]
    wrong = [results[rank]["wrong_gather_grads"][0] for rank in range(world_size)]
    assert gradients_match(correct, grad_x, counts_x, 1e-11)
    assert not gradients_match(wrong, grad_x, counts_x, 1e-3)


@pytest.mark.parametrize("split", ["equal", "unequal"])
def test_sharded_mmd_test_equals_the_single_process_test(ranks, split):
    import tlkit as tl
    world_size, results = ranks
    x, y = global_data(torch.float64)[:2]
    statistic, p_value = tl.metrics.mmd_test(x, y, n_permutations=300, batch_size=128, random_state=7)
    for rank in range(world_size):
        sharded_statistic, sharded_p = results[rank][("mmd_test", split)]
        assert relative_error(sharded_statistic, statistic) <= 1e-12
        assert sharded_p == p_value


def test_one_ddp_step_of_dan_equals_the_single_process_step(ranks):
    import tlkit as tl
    world_size, results = ranks
    if world_size != 2:
        pytest.skip("the DDP step runs with 2 ranks")
    model = TinyDAN()
    loss = dan_step(model, *_dan_batch(), tl.feature.MKMMDLoss())
    for rank in range(world_size):
        for updated, reference in zip(results[rank]["ddp_params"], model.parameters()):
            assert torch.allclose(updated, reference.detach(), rtol=0, atol=1e-6)
    assert float(loss) > 0


@pytest.mark.parametrize("case, message", [("feature_dims", "same number of features"),
                                           ("zero_rows", "at least one row"),
                                           ("mixed_devices", "one CPU or CUDA device"),
                                           ("coral_total_rows", "at least one row")])
def test_bad_inputs_raise_on_every_rank_quickly(ranks, case, message):
    world_size, results = ranks
    for rank in range(world_size):
        outcome, seconds = results[rank]["errors"][case]
        assert outcome.startswith("ValueError") and message in outcome, (rank, outcome)
        assert seconds < 5.0


def test_ddp_example_trains_with_two_processes_and_resumes(tmp_path):
    checkpoint = tmp_path / "dan.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(steps):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1",
                   "--master_port", str(free_port()), str(ROOT / "examples" / "ddp_dan.py"), "--steps", str(steps),
                   "--batch-size", "32", "--checkpoint", str(checkpoint)]
        run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return run.stdout

    assert "world size 2, step 2," in torchrun(2)
    resumed = torchrun(3)
    assert "resumed from" in resumed and "at step 2" in resumed and "world size 2, step 3," in resumed
    assert torch.load(checkpoint)["step"] == 3


def test_without_a_process_group_it_is_the_single_process_op():
    import tlkit as tl
    import tlkit.distributed as td
    x, y = global_data(torch.float64)[:2]
    assert td.world() == (0, 1)
    assert relative_error(float(td.mmd2(x, y)), float(tl.kernels.mmd2(x, y))) <= 1e-12
    assert td.mmd_test(x, y, n_permutations=100, random_state=3) == tl.metrics.mmd_test(x, y, n_permutations=100,
                                                                                        random_state=3)
    with pytest.raises(ValueError, match="estimator"):
        td.mmd2(x, y, estimator="linear")


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
